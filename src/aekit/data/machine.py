"""What this machine offers a run's processes: the memory still available, how many processes share it, and the
memory budget that every size a user can ask for is checked against before anything is allocated.

The budget makes a request too large for the machine one line instead of a swap storm or an allocator's
traceback: ``$AEKIT_MEMORY_BUDGET`` (``8G``, ``512M``, ``1.5G`` or bytes) when set, else half of the memory
available now (``MemAvailable``), else 4 GiB where that is unknown.
"""

from __future__ import annotations

import os
import re

from aekit.errors import AekitError
from aekit.files import human_bytes


def available_memory() -> int | None:
    """Bytes of memory available to new allocations: ``MemAvailable`` of /proc/meminfo, else the free physical
    pages (``os.sysconf``); None where neither is known."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def local_processes() -> int:
    """How many processes of this job share this machine (torchrun's ``LOCAL_WORLD_SIZE``; 1 without torchrun)."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


BUDGET_ENV = "AEKIT_MEMORY_BUDGET"
AVAILABLE_FRACTION = 0.5
UNKNOWN_BUDGET = 4 << 30
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """``"8G"`` -> 8 GiB in bytes (K, M, G, T are powers of 1024; an optional ``iB``/``B`` is allowed)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, flags=re.IGNORECASE)
    if match is None:
        raise AekitError(f"{BUDGET_ENV}={text!r} is not a size: write it as e.g. 8G, 512M or a number of bytes")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def memory_budget() -> int:
    """Bytes one request may allocate (see the module docstring)."""
    text = os.environ.get(BUDGET_ENV)
    if text:
        return parse_size(text)
    available = available_memory()
    return int(AVAILABLE_FRACTION * available) if available else UNKNOWN_BUDGET


def check_memory(what: str, nbytes: int) -> None:
    """Refuse ``what`` in one line if it needs more than the budget, saying the limit and how to raise it."""
    budget = memory_budget()
    if nbytes > budget:
        source = f"{BUDGET_ENV}" if os.environ.get(BUDGET_ENV) else "half the available memory"
        raise AekitError(f"{what} needs about {human_bytes(nbytes)}, more than the memory budget of "
                         f"{human_bytes(budget)} ({source}); ask for less, or set {BUDGET_ENV} (e.g. "
                         f"{BUDGET_ENV}=16G) if the machine has the memory")
