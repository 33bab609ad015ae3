"""Loading what a user names: a dataset, a folder of images, an array file or one image.

:func:`load_dataset` gives train/test :class:`~aekit.data.imageset.Splits` for
training; :func:`load_images` gives one :class:`~aekit.data.imageset.ImageSet`
of inputs to encode or reconstruct. Both resolve the spec, read it with the
reader of its format (:mod:`aekit.data.formats`), in memory or streamed
(:mod:`aekit.data.stream`), and convert the images the same way.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from aekit.data.datasets import DATASETS, load_named
from aekit.data.formats.arrays import ARRAY_EXTENSIONS, read_array_file
from aekit.data.formats.images import IMAGE_EXTENSIONS, decode_images, find_images, image_format, read_image_files
from aekit.data.imageset import (
    ImageSet,
    Splits,
    binarize_splits,
    check_binarize,
    check_channels,
    check_image_size,
    conform,
)
from aekit.data.stream import ArrayImages, FolderImages, StreamedSet, should_stream
from aekit.errors import AekitError


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


def load_folder(
    folder: Path, *, channels: int | None, image_size: tuple[int, int] | None, stream: bool | None = False
) -> ImageSet:
    """Every image under ``folder`` (see :func:`~aekit.data.formats.images.find_images`), labelled by
    sub-folder where they all lie in one. ``stream`` (None: decide from the size, see
    :func:`~aekit.data.stream.should_stream`) gives a :class:`~aekit.data.stream.StreamedSet` that
    decodes images when read."""
    paths, labels, classes = find_images(folder)
    name = folder.name or str(folder)
    channels, image_size = image_format(paths, channels=channels, image_size=image_size, source=str(folder))
    if should_stream(len(paths) * channels * image_size[0] * image_size[1], stream):
        return StreamedSet(FolderImages(paths, channels, image_size), labels, name, classes)
    return ImageSet(decode_images(paths, channels, image_size), labels, name, classes)


def load_array_file(
    path: Path, *, stream: bool | None = False, channels: int | None = None, image_size: tuple[int, int] | None = None
) -> list[ImageSet]:
    """A ``.npy`` or ``.npz`` file as one set, or two (train, test): see
    :func:`~aekit.data.formats.arrays.read_array_file`. ``stream`` (None: decide from the size)
    reads a ``.npy`` batch by batch instead (a :class:`~aekit.data.stream.StreamedSet` of
    images converted to ``channels`` and ``image_size`` as they are read)."""
    if stream is not False and path.suffix.lower() == ".npy":
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
    return read_array_file(path)


def input_kind(spec: str | os.PathLike[str]) -> str:
    """What an INPUT names: "dataset", "folder", "array" or "image" (an error for anything else)."""
    return _resolve(spec)[0]


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
    if (channels is None and image_size is None) or not s.in_memory:
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
        A dataset name (see :data:`~aekit.data.DATASETS`), a folder of images (sub-folder
        names become labels), or a ``.npy``/``.npz`` array file. Names win over
        paths: write ``./mnist`` for a folder called ``mnist``.
    data_dir : str or pathlib.Path, optional
        Where named datasets live (``<data_dir>/<name>/``); default
        :func:`~aekit.data.default_data_dir`.
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

    Examples
    --------
    >>> splits = load_dataset("mnist-5k")  # doctest: +SKIP
    >>> len(splits.train), len(splits.test), splits.train.shape  # doctest: +SKIP
    (4000, 1000, (1, 28, 28))
    """
    check_channels(channels)
    size = check_image_size(image_size)
    check_binarize(binarize)
    kind, path = _resolve(spec)
    if stream and kind == "dataset":
        raise AekitError(f"{spec} is always held in memory; --stream applies to .npy files and image folders")
    if kind == "dataset":
        splits = load_named(path.name, data_dir, download=download, mirrors=mirrors, progress=progress)
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
        ``uint8 (N, C, H, W)`` images with optional labels, in memory.

    Raises
    ------
    AekitError
        As for :func:`load_dataset`.
    """
    check_channels(channels)
    size = check_image_size(image_size)
    kind, path = _resolve(spec)
    if kind == "dataset":
        result = load_named(path.name, data_dir, download=download, mirrors=mirrors, progress=progress).test
    elif kind == "folder":
        result = load_folder(path, channels=channels, image_size=size)
    elif kind == "image":
        images = read_image_files([path], channels=channels, image_size=size, source=str(path))
        result = ImageSet(images, None, path.name)
    else:
        sets = read_array_file(path)
        if len(sets) == 2:
            labels = None
            if sets[0].labels is not None and sets[1].labels is not None:
                labels = torch.cat([sets[0].labels, sets[1].labels])
            result = ImageSet(torch.cat([sets[0].images, sets[1].images]), labels, path.name, sets[0].classes)
        else:
            result = sets[0]
    return _conform_set(result, channels, size)


def iter_photos(
    spec: str, *, channels: int, data_dir: str | Path | None = None, progress: bool = True, own_mode: bool = False,
) -> Iterator[tuple[str, torch.Tensor]]:
    """Images at their own sizes, one at a time, for a fully convolutional model: ``(name, uint8 (1, C, H, W))``.

    An image file or a folder (every image, sorted paths; sizes may differ) is read as it is, converted to
    ``channels`` (with ``own_mode``: each image keeps its own, 1 for a grey image and 3 for any other), each image
    decoded when its turn comes (and its header checked first: a photo over the pixel limit is refused before
    decoding); a dataset name or an array file gives its images named by their index, in ``channels``.
    """
    check_channels(channels)
    kind, path = _resolve(spec)
    if kind in ("image", "folder"):
        paths = [path] if kind == "image" else find_images(path)[0]
        for p in paths:
            c, size = image_format([p], channels=None if own_mode else channels, image_size=None, source=str(p))
            yield (p.relative_to(path).as_posix() if kind == "folder" else p.name), decode_images([p], c, size)
        return
    images = load_images(spec, data_dir=data_dir, channels=channels, progress=progress).images
    for i in range(len(images)):
        yield f"{i:05d}", images[i : i + 1]
