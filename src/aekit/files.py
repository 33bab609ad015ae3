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
import shutil
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


def output_stem(name: str, index: int, taken: set[str]) -> str:
    """A file stem for input ``name`` (a relative path: its folders joined by '_'), unique among ``taken`` (the
    input's ``index`` appended on a clash); added to ``taken``."""
    stem = Path(name).with_suffix("").as_posix().replace("/", "_")
    stem = stem if stem not in taken else f"{stem}-{index}"
    taken.add(stem)
    return stem


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


# ----- one writer per run folder -----

LOCK_FILE = ".aekit-lock"


class RunLock:
    """One writer per run folder: an advisory lock (``fcntl.flock``) on ``FOLDER/.aekit-lock``, held while a process
    writes the folder (training, evaluating, drawing a report).

    The kernel drops the lock when its process ends in any way, so a crash or SIGKILL leaves no stale lock (a
    leftover file is simply taken over). The file holds the holder's PID and what it does, for the one-line
    message a second writer gets; it is removed on release. Readers take no lock: every file is replaced
    atomically, so they see the old version or the new one. Where ``fcntl`` does not exist (Windows) the lock
    does nothing.

    Examples
    --------
    >>> with RunLock(run_dir, "aekit evaluate"):     # doctest: +SKIP
    ...     write_metrics(run_dir, metrics)
    """

    def __init__(self, folder: str | os.PathLike, what: str) -> None:
        self.folder, self.what = Path(folder), what
        self.path = self.folder / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # no advisory locks on this platform
            return self
        for _ in range(100):  # a holder may remove the file between our open and our lock: then try again
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
            except OSError as err:
                raise AekitError(f"cannot lock {self.folder} for writing: {err.strerror or err}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "?"
                os.close(fd)
                pid, _, what = holder.partition(" ")
                raise AekitError(f"{self.folder} is being written by process {pid}{f' ({what})' if what else ''}; "
                                 "wait for it to finish, or write elsewhere") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()} {self.what}\n".encode(), 0)
                self.fd = fd
                return self
            os.close(fd)
        raise AekitError(f"cannot lock {self.folder} for writing: the lock file keeps changing")

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # while still holding it: a process waiting on this file will see it is gone
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# ----- checking outputs before the work -----

DISK_MARGIN = 16 << 20  # free space left over after what a verb knows it will write


def check_writable(path: str | os.PathLike, *, folder: bool = False, nbytes: int = 0, create: bool = True) -> None:
    """Refuse, in one line, an output that cannot be written, before any work: ``path`` is a file to write (its
    folder must exist) or, with ``folder``, a folder to write in (made if missing when ``create``). A probe file
    is created and removed (permissions alone do not tell: root ignores them, a read-only mount does not), and
    the disk must have ``nbytes`` free beside a small margin."""
    path = Path(path)
    if folder:
        if path.exists() and not path.is_dir():
            raise AekitError(f"{path} exists and is not a folder")
        existing = path
        while not existing.exists():
            if not create or existing.parent == existing:
                raise AekitError(f"folder {path} does not exist")
            existing = existing.parent
        if not existing.is_dir():
            raise AekitError(f"cannot create {path}: {existing} is not a folder")
    else:
        if path.is_dir():
            raise AekitError(f"cannot write {path}: it is a folder")
        existing = path.parent
        if not existing.is_dir():
            raise AekitError(f"cannot write {path}: folder {existing} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=".aekit-probe.", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise AekitError(f"cannot write {path}: {err.strerror or err}") from None
    free = shutil.disk_usage(existing).free
    if nbytes and free < nbytes + DISK_MARGIN:
        raise AekitError(f"not enough free disk for {path}: it needs about {human_bytes(nbytes)}, "
                         f"{human_bytes(free)} is free")


def human_bytes(n: float) -> str:
    """``1.5 GiB``, ``320.0 KiB``, ``12 B``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
