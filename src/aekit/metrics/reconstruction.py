"""How images come back through the code: reconstruction error of clean images, and of noisy ones (denoising)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..core.likelihoods import bernoulli_nll
from ..core.model import Autoencoder
from ..training.distributed import World
from .pixels import psnr_per_image, ssim_per_image

DENOISE_LEVELS = (0.1, 0.3, 0.5, 0.7)


@torch.inference_mode()
def reconstruction_metrics(
    model: Autoencoder, images: torch.Tensor, batch_size: int = 500, *, world: World | None = None
) -> dict[str, Any]:
    """How well the test images come back through the code (posterior mean for a VAE).

    ``bce_per_image_nats`` is the Bernoulli NLL of the mean reconstruction, summed over pixels,
    whatever likelihood the run was trained with, so runs can be compared. With a ``world`` of
    several processes each scores its share of the batches and all gather every image's scores.
    """
    model.eval()

    def scores(start: int, stop: int) -> tuple[np.ndarray, ...]:
        x = model.prepare(images[start:stop])
        outputs = model.decode(model.encode(x).mode(), size=x.shape[-2:])  # (B, C x params, H, W)
        logits = outputs[:, : x.shape[1]]  # the mean's logits
        recon = torch.sigmoid(logits)
        return (
            (recon - x).pow(2).flatten(1).mean(1).double().numpy(),
            bernoulli_nll(logits, x).sum((1, 2, 3)).double().numpy(),
            psnr_per_image(recon, x),
            ssim_per_image(recon, x),
        )

    mse, bce, psnr, ssim = (world or World()).map_batches(scores, len(images), batch_size)
    return {
        "mse_per_pixel": float(mse.mean()),
        "bce_per_image_nats": float(bce.mean()),
        "psnr_db": float(psnr.mean()),
        "ssim": nan_to_none(float(ssim.mean())),
    }


def denoising_metrics(
    model: Autoencoder, images: torch.Tensor, *, trained_noise_std: float = 0.0,
    levels: tuple[float, ...] = DENOISE_LEVELS, seed: int = 0,
) -> dict[str, Any]:
    """PSNR of noisy and denoised test images against the clean ones, per Gaussian noise level (fixed seed)."""
    clean = model.prepare(images)
    rows = []
    for sigma in sorted({*levels, *([trained_noise_std] if trained_noise_std > 0 else [])}):
        noisy, denoised = model.denoise(images, noise_std=sigma, seed=seed)
        noisy_db, denoised_db = psnr_per_image(noisy, clean).mean(), psnr_per_image(denoised, clean).mean()
        rows.append({
            "noise_std": sigma,
            "psnr_noisy_db": float(noisy_db),
            "psnr_denoised_db": float(denoised_db),
            "gain_db": float(denoised_db - noisy_db),
            "trained_level": sigma == trained_noise_std,
        })
    return {"trained_noise_std": trained_noise_std, "seed": seed, "levels": rows}


def nan_to_none(value: float) -> float | None:
    """JSON has no NaN: an undefined metric (SSIM of tiny images) is null."""
    return None if math.isnan(value) else value
