"""NumPy array files: a ``.npy`` of images, or an ``.npz`` of images, labels, class names and splits."""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from aekit.data.imageset import ImageSet, to_uint8_images
from aekit.errors import AekitError

#: Array file extensions (compared case-insensitively).
ARRAY_EXTENSIONS = (".npy", ".npz")


def _labels(array: np.ndarray, n: int, path: Path, key: str) -> torch.Tensor:
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]  # (N, 1) -> (N,)
    if array.shape != (n,):
        raise AekitError(f"{path}: labels {key!r} have shape {array.shape}, expected ({n},) for {n} images")
    if array.dtype.kind == "f" and np.isfinite(array).all() and (array == np.round(array)).all():
        array = array.astype(np.int64)
    if array.dtype.kind not in "iub":
        raise AekitError(f"{path}: labels {key!r} must be integers, not {array.dtype}")
    return torch.from_numpy(array.astype(np.int64))


NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"


def check_npy_header(f: BinaryIO, data_bytes: int, what: str) -> None:
    """Read the ``.npy`` header at ``f``'s position and refuse, before anything is allocated, an array whose header
    announces more data than the ``data_bytes`` that follow it (a damaged or hostile file), or Python objects."""
    start = f.tell()
    try:
        version = np.lib.format.read_magic(f)
        reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if reader is None:
            raise AekitError(f"{what}: .npy format version {version[0]}.{version[1]} is not supported")
        shape, _, dtype = reader(f)
    except AekitError:
        raise
    except Exception as exc:  # noqa: BLE001 - numpy raises many kinds on damaged headers
        raise AekitError(f"{what}: not a valid NumPy file ({type(exc).__name__}: {exc})") from None
    if dtype.hasobject:
        raise AekitError(f"{what}: holds Python objects (an object array or pickle), which aekit does not load; "
                         "save plain numeric arrays")
    announced = math.prod(shape) * dtype.itemsize
    available = data_bytes - (f.tell() - start)
    if announced > available:
        raise AekitError(f"{what}: its header announces a {'x'.join(map(str, shape)) or 'scalar'} {dtype} array of "
                         f"{announced:,} bytes, but only {max(available, 0):,} bytes follow: truncated or damaged")


def _check_headers(f: BinaryIO, path: Path) -> None:
    """Check the header(s) of an array file before loading it: .npy, or each .npy inside an .npz."""
    magic = f.read(len(ZIP_MAGIC))
    f.seek(0)
    if magic == NPY_MAGIC[: len(magic)] and f.read(len(NPY_MAGIC)) == NPY_MAGIC:
        f.seek(0)
        check_npy_header(f, os.fstat(f.fileno()).st_size, str(path))
    elif magic == ZIP_MAGIC:
        try:
            with zipfile.ZipFile(f) as archive:
                for info in archive.infolist():
                    if info.filename.endswith(".npy"):
                        with archive.open(info) as member:
                            check_npy_header(member, info.file_size, f"{path}[{info.filename[:-4]}]")
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, NotImplementedError) as exc:
            raise AekitError(f"{path}: not a valid .npz file ({type(exc).__name__}: {exc})") from None
    else:
        raise AekitError(f"{path}: not a NumPy file (it starts with neither the .npy nor the .npz signature: "
                         f"a text file, or another format, named {path.suffix}?)")
    f.seek(0)


def _np_load(path: Path) -> np.ndarray | dict[str, np.ndarray]:
    """``np.load`` without pickles: an array (.npy) or a dict of arrays (.npz), headers checked first."""
    try:
        with open(path, "rb") as f:  # our handle: np.load leaks its own when a zip is corrupt
            _check_headers(f, path)
            loaded = np.load(f, allow_pickle=False)
            if isinstance(loaded, np.lib.npyio.NpzFile):
                with loaded:
                    return {key: loaded[key] for key in loaded.files}
            return loaded
    except AekitError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise AekitError(
                f"{path}: holds Python objects (an object array or pickle), which aekit does not "
                f"load; save plain numeric arrays"
            ) from None
        raise AekitError(f"{path}: not a valid NumPy file ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - numpy raises many kinds on damaged files
        raise AekitError(f"{path}: cannot read NumPy file ({type(exc).__name__}: {exc})") from None


def read_array_file(path: Path) -> list[ImageSet]:
    """Read a ``.npy`` (images only) or ``.npz`` file into one set, or two (train, test), in memory.

    An ``.npz`` is searched for ``x_train``/``x_test`` (with ``y_train``/``y_test``),
    else ``images``, ``x`` or ``X`` (with ``labels`` or ``y``); an optional
    ``classes`` string array names the labels.
    """
    arrays = _np_load(path)
    if isinstance(arrays, np.ndarray):
        return [ImageSet(to_uint8_images(arrays, source=str(path)), None, path.name)]
    classes = None
    if "classes" in arrays:
        if arrays["classes"].dtype.kind not in "US" or arrays["classes"].ndim != 1:
            raise AekitError(f"{path}: 'classes' must be a 1-D array of strings")
        classes = [str(c) for c in arrays["classes"]]
    if "x_train" in arrays:
        groups = [("x_train", "y_train", "/train"), ("x_test", "y_test", "/test")]
    else:
        key = next((k for k in ("images", "x", "X") if k in arrays), None)
        if key is None:
            raise AekitError(
                f"{path}: no image array found (keys: {', '.join(arrays) or 'none'}); expected "
                f"x_train (and x_test), images, x or X"
            )
        groups = [(key, next((k for k in ("labels", "y") if k in arrays), ""), "")]
    sets = []
    for x_key, y_key, part in groups:
        if x_key in arrays:
            images = to_uint8_images(arrays[x_key], source=f"{path}[{x_key}]")
            labels = _labels(arrays[y_key], len(images), path, y_key) if y_key in arrays else None
            sets.append(ImageSet(images, labels, path.name + part, classes))
    if len(sets) == 2 and sets[0].shape != sets[1].shape:
        raise AekitError(
            f"{path}: x_train images are {sets[0].shape} but x_test images are {sets[1].shape}; "
            f"they must have the same (C, H, W)"
        )
    return sets
