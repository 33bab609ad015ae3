"""Writing images and grids with Pillow; every file written atomically."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .files import atomic_write_bytes


def to_pil(image: torch.Tensor) -> Image.Image:
    """(C, H, W) floats in [0, 1] -> a Pillow image (L for 1 channel, RGB for 3)."""
    array = (image.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    if array.shape[2] == 1:
        return Image.fromarray(array[:, :, 0], mode="L")
    return Image.fromarray(np.ascontiguousarray(array[:, :, :3]), mode="RGB")


def grid(images: torch.Tensor, ncol: int | None = None, pad: int = 2, pad_value: float = 1.0) -> torch.Tensor:
    """(N, C, H, W) -> one (C, H', W') image tiled row by row with ``pad`` pixels between tiles."""
    n, c, h, w = images.shape
    ncol = ncol or max(1, math.ceil(math.sqrt(n)))
    nrow = max(1, math.ceil(n / ncol))
    out = torch.full((c, nrow * (h + pad) + pad, ncol * (w + pad) + pad), pad_value)
    for i in range(n):
        r, k = divmod(i, ncol)
        out[:, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + k * (w + pad) : pad + k * (w + pad) + w] = images[i]
    return out


def rows(*sets: torch.Tensor, pad: int = 2) -> torch.Tensor:
    """Several (N, C, H, W) sets as rows of one grid: row i is sets[i]."""
    stacked = torch.cat(sets)  # (R*N, C, H, W)
    return grid(stacked, ncol=len(sets[0]), pad=pad)


def save_png(image: torch.Tensor, path: str | Path, scale: int = 1) -> None:
    """Save one (C, H, W) image as PNG, optionally upscaled by an integer factor (nearest)."""
    pil = to_pil(image)
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    atomic_write_bytes(Path(path), buffer.getvalue())


def save_npy(array: torch.Tensor, path: str | Path) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array.detach().cpu().numpy(), allow_pickle=False)
    atomic_write_bytes(Path(path), buffer.getvalue())
