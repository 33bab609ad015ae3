"""Files on disk: the one atomic-write helper, and readers that turn any damage into one AekitError line.

Every file aekit writes (run folders, figures, reports, downloads, caches) goes through :func:`atomic_write`:
a temporary ``.<name>.<random>.part`` file in the destination's folder, fsync, rename over the destination,
fsync of the folder. A reader therefore sees the old file or the new one, never a mix, and a crash leaves at
most a ``.part`` file behind, never a damaged file under the final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load

from .errors import AekitError

MAX_JSON_BYTES = 16 * 1024 * 1024


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file that replaces ``path`` when the block ends normally, and vanishes if it raises.

    Errors creating, writing or renaming the file propagate as :class:`OSError`; the temporary file is
    removed in every case. The file gets the usual permissions (0666 less the umask), not mkstemp's 0600.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically; a failure is one AekitError naming the file and the OS reason."""
    path = Path(path)
    try:
        with atomic_write(path) as f:
            f.write(data)
    except OSError as err:
        raise AekitError(f"cannot write {path}: {err.strerror or err}") from None


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def make_folder(path: str | os.PathLike) -> Path:
    """Create ``path`` (and its parents) or raise a one-line AekitError naming it and the OS reason."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise AekitError(f"cannot create {path}: {err.strerror or err}") from None
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def append_jsonl(path: str | os.PathLike, obj: Any) -> None:
    """Append one line; lines are small, so a crash leaves at worst one partial last line (skipped on read)."""
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(obj) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise AekitError(f"cannot write {path}: {err.strerror or err}") from None


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The JSON objects of a JSON-lines file, skipping a line cut short by a crash; [] if there is no file."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def read_json(path: str | os.PathLike, what: str) -> Any:
    """The JSON value in ``path``; a missing, unreadable, oversized or malformed file is one AekitError."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise AekitError(f"{path} is too large to be an aekit {what}")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AekitError(f"{path} not found: is this an aekit run folder?") from None
    except (OSError, UnicodeDecodeError) as err:
        raise AekitError(f"cannot read {path}: {err}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise AekitError(f"{path} is not valid JSON ({err.msg} at line {err.lineno}): corrupt {what}?") from None
    except RecursionError:
        raise AekitError(f"{path} is nested too deeply to be an aekit {what}") from None


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file; anything else -> AekitError. Never unpickles."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise AekitError(f"{path} not found: is this an aekit run folder?") from None
    except OSError as err:
        raise AekitError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        header_len = int.from_bytes(data[:8], "little")
        if len(data) < 8 or data[8:9] != b"{" or 8 + header_len > len(data):
            raise ValueError("no safetensors header")
        header = json.loads(data[8 : 8 + header_len])
        tensors = st_load(data)
    except (SafetensorError, ValueError, OverflowError, UnicodeDecodeError, RecursionError) as err:
        if data[:1] == b"\x80" or data[:4] == b"PK\x03\x04":  # pickle protocol 2+ / torch.save's zip
            raise AekitError(f"{path} looks like a pickle or torch.save file; aekit loads only safetensors") from None
        raise AekitError(f"{path} is not a valid safetensors file (truncated or corrupt?): {err}") from None
    if not isinstance(header, dict):
        raise AekitError(f"{path} is not a valid safetensors file (bad header)")
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict):
        raise AekitError(f"{path} is not a valid safetensors file (bad metadata)")
    return tensors, metadata
