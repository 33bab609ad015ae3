"""What ``--crop`` and ``--flip`` do: random crops and flips of training batches, drawn from the training
generator, and the centre crops that the test loss and evaluation see.

Drawing from the run's one generator keeps a resumed run exact (see :mod:`aekit.training.resume`); under
torchrun every process draws for the whole global batch and keeps its own rows, as the noise does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from ..data import ImageSet, Splits
from ..errors import AekitError


def random_crops_and_flips(x: torch.Tensor, crop: int, flip: bool, generator: torch.Generator, *,
                           global_batch: int | None = None,
                           rows: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """``x`` (B, C, H, W) -> (B, C, crop, crop) patches at uniform random positions (``crop`` 0: whole images),
    each flipped left-right with probability 1/2 when ``flip``. Several processes draw for the ``global_batch``
    and keep their ``rows`` of it."""
    b, _, h, w = x.shape
    n, rows = global_batch or b, rows or (lambda t: t)
    if crop:
        tops = rows(torch.randint(0, h - crop + 1, (n,), generator=generator))
        lefts = rows(torch.randint(0, w - crop + 1, (n,), generator=generator))
        ys = tops[:, None] + torch.arange(crop)  # (B, crop) rows and columns of each patch
        xs = lefts[:, None] + torch.arange(crop)
        batch = torch.arange(b)[:, None, None, None]
        channel = torch.arange(x.shape[1])[None, :, None, None]
        x = x[batch, channel, ys[:, None, :, None], xs[:, None, None, :]]
    if flip:
        flips = rows(torch.rand(n, generator=generator) < 0.5)
        x = torch.where(flips[:, None, None, None], x.flip(-1), x)
    return x


def center_crop_splits(splits: Splits, size: int, *, train: bool = True) -> Splits:
    """The splits with their images' centre ``size`` x ``size`` (``train=False``: the test split only, for a
    training that crops its own at random)."""
    return Splits(center_crop_set(splits.train, size) if train else splits.train, center_crop_set(splits.test, size))


def center_crop_set(images: ImageSet, size: int) -> ImageSet:
    """``images`` cropped to their centre ``size`` x ``size``; images smaller than that are refused."""
    _, h, w = images.shape
    if size > min(h, w):
        raise AekitError(f"--crop {size} is larger than the {h}x{w} images of {images.name}: crop at most "
                         f"{min(h, w)}, or enlarge them with --image-size")
    if (h, w) == (size, size):
        return images
    if not images.in_memory:
        raise AekitError(f"--crop needs the images of {images.name} in memory; this set is streamed from disk "
                         "(resize it with --image-size instead, or free memory)")
    top, left = (h - size) // 2, (w - size) // 2
    return dataclasses.replace(images, images=images.images[:, :, top:top + size, left:left + size])
