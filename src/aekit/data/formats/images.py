"""Image files and folders of them: list, probe (mode and size from the header alone), decode to uint8."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from aekit.data.imageset import MAX_IMAGE_PIXELS, convert_channels, resize_images, to_uint8_images
from aekit.errors import AekitError

#: Image file extensions read from folders (compared case-insensitively).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

_GRAY_MODES = {"1", "L", "LA", "I", "F"}


def is_image_file(path: Path) -> bool:
    """Whether ``path`` has one of :data:`IMAGE_EXTENSIONS`."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def find_images(folder: Path) -> tuple[list[Path], torch.Tensor | None, list[str] | None]:
    """Every image under ``folder`` (recursively, sorted paths, hidden files skipped), with labels and classes.

    When every image lies in a first-level sub-folder, the sorted sub-folder names are the classes and
    give the labels; otherwise both are None.
    """
    try:
        paths = sorted(
            p for p in folder.rglob("*")
            if is_image_file(p) and p.is_file()
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
    return paths, labels, classes


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
    if h * w > MAX_IMAGE_PIXELS:
        raise AekitError(
            f"{path}: image of {w}x{h} pixels is larger than the {MAX_IMAGE_PIXELS >> 20} megapixel limit"
        )
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
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # MAX_IMAGE_PIXELS applies
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
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # MAX_IMAGE_PIXELS applies
        out = np.empty((len(paths), channels, *image_size), dtype=np.uint8)
        for i, path in enumerate(paths):
            out[i] = _decode(path, channels, image_size)
    return torch.from_numpy(out)
