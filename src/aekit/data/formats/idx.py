"""The IDX format of MNIST and Fashion-MNIST: a big-endian header of dimensions, then uint8 values."""

from __future__ import annotations

import gzip
import io
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from aekit.errors import AekitError

_IDX_MAGIC = {3: 2051, 1: 2049}  # ndim -> magic number of uint8 IDX files
_IDX_MAX_BYTES = 2**31


def _open_binary(path: Path) -> io.BufferedIOBase:
    try:
        return gzip.GzipFile(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    except OSError as exc:
        raise AekitError(f"cannot open {path}: {exc.strerror or exc}") from None


def _read_exact(f: io.BufferedIOBase, n: int, path: Path, what: str) -> np.ndarray:
    buf = np.empty(n, dtype=np.uint8)
    view, got = buf.data, 0
    while got < n:
        k = f.readinto(view[got:])
        if not k:
            raise AekitError(f"{path} is truncated: its {what} has {got} of {n} bytes")
        got += k
    return buf


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read a uint8 IDX file (``.gz`` or uncompressed) with ``ndim`` dimensions.

    Parameters
    ----------
    path : pathlib.Path
        The file; a ``.gz`` suffix means gzip-compressed.
    ndim : int
        3 for images (magic 2051), 1 for labels (magic 2049).

    Returns
    -------
    numpy.ndarray
        Writable ``uint8`` array of the shape in the header.

    Raises
    ------
    AekitError
        For a bad magic number, a non-uint8 type, a truncated header or payload,
        trailing bytes, zero or absurd dimensions, or a corrupt gzip stream.
    """
    magic = _IDX_MAGIC[ndim]
    try:
        with _open_binary(path) as f:
            head = f.read(4)
            if len(head) < 4:
                raise AekitError(f"{path} is truncated: {len(head)} bytes, too short for an IDX header")
            if head[:2] != b"\0\0" or head[3] != ndim or head[2] != 0x08:
                found = struct.unpack(">I", head)[0]
                kind = "images" if ndim == 3 else "labels"
                raise AekitError(
                    f"{path} is not a uint8 IDX {kind} file: magic number {found} (0x{found:08x}), "
                    f"expected {magic} (0x{magic:08x})"
                )
            raw = f.read(4 * ndim)
            if len(raw) < 4 * ndim:
                raise AekitError(f"{path} is truncated: its IDX header ends after {4 + len(raw)} bytes")
            dims = struct.unpack(f">{ndim}I", raw)
            total = math.prod(dims)  # Python ints: no overflow
            if total == 0 or total > _IDX_MAX_BYTES:
                raise AekitError(f"{path} has an impossible IDX header: dimensions {dims}")
            data = _read_exact(f, total, path, "data")
            if f.read(1):
                raise AekitError(
                    f"{path} has bytes after the {'x'.join(map(str, dims))} data its header announces"
                )
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise AekitError(f"{path} is not a valid gzip file or is truncated ({exc})") from None
    except OSError as exc:
        raise AekitError(f"cannot read {path}: {exc.strerror or exc}") from None
    return data.reshape(dims)


def find_idx_file(folder: Path, filename: str) -> Path | None:
    """The ``.gz`` file, else an uncompressed one (``x-idx3-ubyte`` or ``x.idx3-ubyte``); None if neither is there."""
    plain = filename.removesuffix(".gz")
    for candidate in (filename, plain, plain.replace("-idx", ".idx")):
        if (folder / candidate).is_file():
            return folder / candidate
    return None
