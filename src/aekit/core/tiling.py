"""Large photos in tiles: a fully convolutional model applied to overlapping tiles, each tile's centre kept.

With a spatial latent and position-local normalisation (:class:`aekit.core.resnet.LocalGroupNorm`) a pixel's
output depends only on the image within its receptive field, so tiles whose margins cover that field give, in
their centres, what the whole image gives: the stitched result has no seams (``tests/test_photos.py`` checks
it). Peak memory is then that of one tile, whatever the photo's size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

TILE = 256  # the side of a tile's centre, in pixels (a multiple of the model's factor)
MARGIN = 128  # context around it on every side (the model passes its own receptive field)
TILE_ABOVE = 512 * 512  # images with more pixels than this are processed in tiles


def tiled(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, factor: int, tile: int = TILE,
          margin: int = MARGIN) -> torch.Tensor:
    """``fn`` (an image-to-image map of the same size) applied to ``x`` (B, C, H, W) in tiles of ``tile`` pixels
    with ``margin`` pixels of context on each side; tile corners stay on the model's grid (multiples of
    ``factor``), so every tile is encoded as the whole image would be."""
    tile, margin = -(-tile // factor) * factor, -(-margin // factor) * factor
    h, w = x.shape[-2:]
    out: torch.Tensor | None = None
    for top in range(0, h, tile):
        for left in range(0, w, tile):
            y0, x0 = max(0, top - margin), max(0, left - margin)
            y1, x1 = min(h, top + tile + margin), min(w, left + tile + margin)
            piece = fn(x[..., y0:y1, x0:x1])  # (B, C', y1 - y0, x1 - x0)
            if out is None:
                out = piece.new_empty((*piece.shape[:-2], h, w))
            bottom, right = min(h, top + tile), min(w, left + tile)
            out[..., top:bottom, left:right] = piece[..., top - y0 : bottom - y0, left - x0 : right - x0]
    assert out is not None
    return out
