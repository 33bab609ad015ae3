"""Image sets and the conversions every image source goes through.

An :class:`ImageSet` holds ``uint8`` images shaped ``(N, C, H, W)``, in memory or
read from disk as they are asked for (see its contract); :func:`to_uint8_images`
turns a user's array into that layout, :func:`conform` makes images match a
model's channel count and image size, and :func:`to_unit` gives a model's
``[0, 1]`` floats.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from aekit.errors import AekitError, AekitWarning

#: Channel counts an image may have (gray, RGB, RGBA): the one definition, for data and configs alike.
CHANNELS = (1, 3, 4)
#: Largest image, in pixels (H * W), that is decoded from a file or resized to (as Pillow's ``MAX_IMAGE_PIXELS``).
MAX_IMAGE_PIXELS = 64 * 2**20

# ITU-R 601-2 luma in 16-bit fixed point, exactly as Pillow's convert("L").
_LUMA = (19595, 38470, 7471)


@dataclass(repr=False)
class ImageSet:
    """A set of ``uint8`` images ``(N, C, H, W)`` with optional integer labels.

    The images are held in memory (``in_memory`` is True and ``images`` is a tensor), or
    they stay on disk until they are read: a :class:`~aekit.data.stream.StreamedSet`, whose
    ``images`` read the rows they are indexed with. Either way ``images[index]`` and
    ``images[a:b]`` give ``uint8 (B, C, H, W)`` tensors and ``images.shape`` describes the
    whole set; :meth:`subset` selects images without reading them and :meth:`batches` reads
    a sequence of batches the fastest way for the kind of set. Code that needs every image
    at once as one tensor checks ``in_memory`` first, never the type of the set.

    Attributes
    ----------
    images : torch.Tensor
        ``uint8 (N, C, H, W)``: a contiguous tensor (a streamed set holds
        :class:`~aekit.data.stream.StreamedImages` instead).
    labels : torch.Tensor or None
        ``int64`` tensor of shape ``(N,)`` (other integer dtypes are cast).
    name : str
        Where the set came from, e.g. ``"mnist-5k/train"``.
    classes : list of str or None
        Label names, where known; label ``i`` is ``classes[i]``.

    Examples
    --------
    >>> s = ImageSet(torch.zeros(10, 1, 28, 28, dtype=torch.uint8), None, "zeros")
    >>> s.shape, len(s), s.in_memory
    ((1, 28, 28), 10, True)
    >>> [tuple(b.shape) for b in s.batches([slice(0, 8), torch.tensor([8, 9])])]
    [(8, 1, 28, 28), (2, 1, 28, 28)]
    """

    #: True: ``images`` is a tensor in memory; False: they are read from disk when indexed (a streamed set).
    in_memory = True

    images: torch.Tensor
    labels: torch.Tensor | None
    name: str
    classes: list[str] | None = None

    def __post_init__(self) -> None:
        images = self.images
        if not isinstance(images, torch.Tensor):
            raise AekitError(f"{self.name}: images must be a torch.Tensor, not {type(images).__name__}")
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise AekitError(
                f"{self.name}: images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        self.images = images.contiguous()
        self._check_labels(int(images.shape[0]))

    def _check_labels(self, n: int) -> None:
        if self.labels is not None:
            labels = self.labels
            if not isinstance(labels, torch.Tensor) or labels.dtype.is_floating_point or labels.is_complex():
                raise AekitError(f"{self.name}: labels must be an integer tensor")
            if labels.ndim != 1 or labels.shape[0] != n:
                raise AekitError(f"{self.name}: {tuple(labels.shape)} labels do not match {n} images")
            self.labels = labels.to(torch.int64).contiguous()
            if self.classes is not None and len(self.labels) > 0:
                low, high = int(self.labels.min()), int(self.labels.max())
                if low < 0 or high >= len(self.classes):
                    raise AekitError(
                        f"{self.name}: labels range {low}..{high} but there are {len(self.classes)} classes"
                    )

    @property
    def shape(self) -> tuple[int, int, int]:
        """The shape ``(C, H, W)`` of one image."""
        c, h, w = self.images.shape[1:]
        return (int(c), int(h), int(w))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index: torch.Tensor) -> ImageSet:
        """Return the images (and labels) selected by an index or boolean mask tensor."""
        labels = None if self.labels is None else self.labels[index]
        return ImageSet(self.images[index], labels, self.name, self.classes)

    def batches(self, index_batches: Sequence, workers: int = 0) -> Iterator[torch.Tensor]:
        """uint8 ``(B, C, H, W)`` images for each index tensor (or slice) of ``index_batches``, in order.

        ``workers``: processes decoding a streamed image folder ahead (see :mod:`aekit.data.stream`);
        images in memory need none."""
        images = self.images  # index_select: much faster than images[b] for a batch of rows
        return (torch.index_select(images, 0, b) if isinstance(b, torch.Tensor) else images[b] for b in index_batches)

    def __repr__(self) -> str:
        labelled = "labelled" if self.labels is not None else "unlabelled"
        return f"{type(self).__name__}({self.name!r}, {len(self)} x {self.shape}, {labelled})"


@dataclass
class Splits:
    """A train and a test :class:`ImageSet` of the same image shape."""

    train: ImageSet
    test: ImageSet

    def binarized(self, mode: str) -> Splits:
        """These splits for ``--binarize mode`` (see :func:`binarize_splits`)."""
        return binarize_splits(self, mode)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """Images as floats in [0, 1]: uint8 ``(N, C, H, W)`` -> float32 / 255; floating tensors as they are."""
    if images.dtype == torch.uint8:
        return images.float().div_(255)
    return images if images.is_floating_point() else images.float()


def check_channels(channels: int | None) -> None:
    """Raise :class:`AekitError` unless ``channels`` is None, 1, 3 or 4."""
    if channels is not None and channels not in CHANNELS:
        raise AekitError(f"channels must be 1, 3 or 4, not {channels!r}")


def check_image_size(image_size: Sequence[int] | None) -> tuple[int, int] | None:
    """Validate ``image_size`` as a pair of positive ints ``(H, W)``; None passes through."""
    if image_size is None:
        return None
    try:
        h, w = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise AekitError(f"image_size must be two positive integers (H, W), not {image_size!r}") from None
    if h < 1 or w < 1 or h * w > MAX_IMAGE_PIXELS:
        raise AekitError(
            f"image_size must be two positive integers (H, W) of at most {MAX_IMAGE_PIXELS >> 20} megapixels, "
            f"not {image_size!r}"
        )
    return (h, w)


def _as_numpy(array: np.ndarray | torch.Tensor, source: str) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        tensor = array.detach().cpu()
        if tensor.dtype in (torch.bfloat16, torch.float16):
            tensor = tensor.float()
        return tensor.numpy()
    if not isinstance(array, np.ndarray):
        raise AekitError(f"{source}: expected an array, got {type(array).__name__}")
    return array


def _to_uint8_values(array: np.ndarray, source: str, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """Map pixel values to uint8: bool -> 0/255, [0, 1] -> x*255, [0, 255] as is.

    ``value_range``: the (checked, finite) minimum and maximum of the whole set ``array`` is part of,
    so that every batch of a streamed set is scaled alike."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * np.uint8(255)
    kind = array.dtype.kind
    if kind not in "iuf":
        raise AekitError(f"{source}: cannot use an array of dtype {array.dtype} as images (need numbers)")
    if array.size == 0:
        return array.astype(np.uint8)
    if value_range is not None:
        low, high = value_range
    else:
        if kind == "f" and not np.isfinite(array).all():
            raise AekitError(f"{source}: the images contain NaN or infinite values")
        low, high = array.min(), array.max()
    if low < 0 or high > 255:
        raise AekitError(
            f"{source}: pixel values range {low:g}..{high:g}; expected 0..1 or 0..255"
        )
    if high <= 1:  # values in [0, 1]
        return np.rint(array.astype(np.float64) * 255).astype(np.uint8)
    if kind == "f":
        warnings.warn(
            f"{source}: float pixel values range {low:g}..{high:g}, read as 8-bit values 0..255 "
            "(store floats in [0, 1] or uint8 to silence this)",
            AekitWarning,
            stacklevel=2,
        )
        return np.rint(array).astype(np.uint8)
    return array.astype(np.uint8)


def to_uint8_images(
    array: np.ndarray | torch.Tensor, *, source: str, single: bool = False,
    value_range: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Convert a user's image array to a ``uint8`` tensor ``(N, C, H, W)``.

    Parameters
    ----------
    array : numpy.ndarray or torch.Tensor
        ``(N, H, W)`` (gray), ``(N, H, W, C)`` or ``(N, C, H, W)`` with C in
        {1, 3, 4}. Channels-last is assumed when the last dimension is in
        {1, 3, 4} and dimension 1 is not. With ``single=True`` the array is
        one image instead: ``(H, W)``, ``(H, W, C)`` or ``(C, H, W)``.
    source : str
        Where the array came from, used in error messages (e.g. a file name).
    single : bool
        Interpret ``array`` as a single image (gives N = 1).
    value_range : (float, float), optional
        The minimum and maximum of the whole set ``array`` is a batch of (a streamed
        array file): the scaling is decided from them instead of from ``array``.

    Returns
    -------
    torch.Tensor
        Contiguous ``uint8`` tensor ``(N, C, H, W)``.

    Raises
    ------
    AekitError
        For another number of dimensions or channels, no images, non-numeric
        data, NaN/inf, or values outside 0..255.

    Notes
    -----
    ``uint8`` is kept as is, ``bool`` becomes 0/255, numbers whose maximum is
    at most 1 are taken as 0..1 and scaled by 255 (rounded), other numbers in
    0..255 are rounded and cast.
    """
    array = _as_numpy(array, source)
    original = tuple(array.shape)
    if single and array.ndim in (2, 3):
        array = array[None]  # (H, W[, C]) -> (1, H, W[, C]); (C, H, W) -> (1, C, H, W)
    accepted = "(H, W), (H, W, C) or (C, H, W)" if single else "(N, H, W), (N, H, W, C) or (N, C, H, W)"
    if array.ndim == 3:
        array = array[:, None]  # (N, H, W) -> (N, 1, H, W)
    elif array.ndim == 4:
        if array.shape[-1] in CHANNELS and array.shape[1] not in CHANNELS:
            array = array.transpose(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
    else:
        raise AekitError(f"{source}: cannot use an array of shape {original} as images; expected {accepted}")
    n, c, h, w = array.shape
    if c not in CHANNELS:
        raise AekitError(
            f"{source}: images of shape {tuple(array.shape)} have {c} channels; expected 1, 3 or 4 "
            f"in layout {accepted}"
        )
    if n == 0 or h == 0 or w == 0:
        raise AekitError(f"{source}: the array of shape {tuple(array.shape)} holds no pixels")
    values = np.ascontiguousarray(_to_uint8_values(array, source, value_range))
    if not values.flags.writeable:  # e.g. a memory-mapped or buffer-backed array
        values = values.copy()
    return torch.from_numpy(values)


def convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Convert ``uint8 (N, C, H, W)`` to ``channels`` channels.

    RGB -> gray uses Pillow's ITU-R 601-2 luma (bit-exact with ``convert("L")``),
    gray -> RGB repeats the plane, RGBA drops alpha, and an alpha plane of 255 is
    added when 4 channels are asked for.
    """
    check_channels(channels)
    c = images.shape[1]
    if c not in CHANNELS:
        raise AekitError(f"cannot convert images with {c} channels; expected 1, 3 or 4")
    if c == channels:
        return images
    if c == 4:  # drop alpha: (N, 4, H, W) -> (N, 3, H, W)
        images, c = images[:, :3], 3
    if c == 3 and channels == 1:
        rgb = images.to(torch.int32)
        luma = (rgb[:, 0] * _LUMA[0] + rgb[:, 1] * _LUMA[1] + rgb[:, 2] * _LUMA[2] + 0x8000) >> 16
        return luma.to(torch.uint8)[:, None].contiguous()  # (N, H, W) -> (N, 1, H, W)
    if c == 1 and channels in (3, 4):
        images = images.expand(-1, 3, -1, -1)  # (N, 1, H, W) -> (N, 3, H, W)
    if channels == 4:
        alpha = torch.full_like(images[:, :1], 255)
        images = torch.cat([images, alpha], dim=1)  # (N, 3, H, W) -> (N, 4, H, W)
    return images.contiguous()


def resize_images(images: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Resize ``uint8 (N, C, H, W)`` to ``image_size = (H', W')`` with Pillow's bilinear filter.

    Each channel plane is resized as a Pillow "L" image, which is what Pillow does
    per band for RGB images; downscaling is antialiased (Pillow widens the filter).
    """
    size = check_image_size(image_size)
    assert size is not None
    h, w = size
    n, c = images.shape[:2]
    if tuple(images.shape[2:]) == size:
        return images
    planes = images.reshape(n * c, *images.shape[2:]).numpy()
    out = np.empty((n * c, h, w), dtype=np.uint8)
    for i, plane in enumerate(planes):
        out[i] = np.asarray(Image.fromarray(plane).resize((w, h), Image.Resampling.BILINEAR))
    return torch.from_numpy(out).reshape(n, c, h, w)


def conform(
    images: torch.Tensor, *, channels: int | None, image_size: Sequence[int] | None
) -> torch.Tensor:
    """Make ``uint8 (N, C, H, W)`` images match a channel count and size.

    Parameters
    ----------
    images : torch.Tensor
        ``uint8`` tensor ``(N, C, H, W)`` with C in {1, 3, 4}.
    channels : int or None
        Wanted channel count (1, 3 or 4); None keeps the current one.
        See :func:`convert_channels`.
    image_size : (int, int) or None
        Wanted ``(H, W)``; None keeps the current size. Resized with Pillow's
        bilinear filter (antialiased when shrinking), see :func:`resize_images`.

    Returns
    -------
    torch.Tensor
        Contiguous ``uint8`` tensor ``(N, channels, H', W')``; the input itself
        when nothing changes.
    """
    check_channels(channels)
    size = check_image_size(image_size)
    if channels is not None and channels > images.shape[1] and size is not None:
        images = resize_images(images, size)  # fewer planes to resize; same result
    if channels is not None:
        images = convert_channels(images, channels)
    if size is not None:
        images = resize_images(images, size)
    return images.contiguous()


BINARIZE = ("none", "static", "dynamic")
# Seeds of the fixed binarizations: the same test set for every run, whatever its training seed,
# so that likelihoods of different runs are comparable.
BINARIZE_TEST_SEED = 0
BINARIZE_TRAIN_SEED = 1


def check_binarize(mode: str) -> None:
    """Raise :class:`AekitError` unless ``mode`` is one of :data:`BINARIZE`."""
    if mode not in BINARIZE:
        raise AekitError(f"binarize must be one of {', '.join(BINARIZE)} (got {mode!r})")


def binarize(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A Bernoulli sample of uint8 images: pixel on (255) with probability intensity / 255."""
    return (torch.bernoulli(images.float().div_(255), generator=generator) * 255).to(torch.uint8)


def binarize_splits(splits: Splits, mode: str) -> Splits:
    """Splits for ``mode``: ``"none"`` leaves them; ``"static"`` draws one fixed binarization of each
    set; ``"dynamic"`` fixes the test set only (training draws a fresh sample of each batch; see
    :func:`aekit.training.loop.fit`). The literature's convention for MNIST likelihoods is "dynamic"."""
    check_binarize(mode)
    if mode == "none":
        return splits
    if not (splits.train.in_memory and splits.test.in_memory):
        raise AekitError(f"--binarize {mode} needs the images in memory: it does not work with a streamed dataset "
                         "(--stream, or data larger than memory)")
    test = dataclasses.replace(
        splits.test, images=binarize(splits.test.images, torch.Generator().manual_seed(BINARIZE_TEST_SEED))
    )
    train = splits.train
    if mode == "static":
        train = dataclasses.replace(
            train, images=binarize(train.images, torch.Generator().manual_seed(BINARIZE_TRAIN_SEED))
        )
    return Splits(train, test)

