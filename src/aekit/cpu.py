"""Process-wide CPU settings that make training and evaluation fast: one call, idempotent."""

from __future__ import annotations

import ctypes
import platform

import torch

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Tensors of a few MB (a batch of decoded images, an IW chunk) are allocated and freed at every
# step. By default glibc hands such blocks back to the kernel with munmap or a heap trim, and the
# next step pays a page fault per 4 KiB to get them again: about 30% of the IW-NLL evaluation's
# time here. Serving blocks below 32 MiB from the heap, and keeping up to 256 MiB of it, stops that.
_MMAP_THRESHOLD = 32 << 20
_TRIM_THRESHOLD = 256 << 20

_done = False


def tune_cpu() -> None:
    """Flush denormals (they can slow CPU training 10x) and keep freed memory for reuse (glibc only)."""
    global _done
    torch.set_flush_denormal(True)
    if _done:
        return
    _done = True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    except (OSError, AttributeError):  # an unusual libc: run with its defaults
        pass
