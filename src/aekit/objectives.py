"""Objectives as small pure functions: corruption, reconstruction likelihood, sparsity, the loss.

All per-image quantities are in nats (summed over pixels), shape ``(B,)``; the training loss
is their batch mean. Images are floats in [0, 1], shape ``(B, C, H, W)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .config import ObjectiveConfig


def corrupt(
    x: torch.Tensor,
    *,
    noise_std: float = 0.0,
    mask_prob: float = 0.0,
    salt_pepper: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Corrupt clean images for denoising (Vincent et al. 2008); the result is clipped to [0, 1]."""
    out = x
    if noise_std > 0:
        out = out + noise_std * torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    if mask_prob > 0:
        keep = torch.rand(x.shape, generator=generator, device=x.device) >= mask_prob
        out = out * keep
    if salt_pepper > 0:
        u = torch.rand(x.shape, generator=generator, device=x.device)
        out = torch.where(u < salt_pepper / 2, torch.zeros_like(out), out)
        out = torch.where((u >= salt_pepper / 2) & (u < salt_pepper), torch.ones_like(out), out)
    return out.clamp(0.0, 1.0) if out is not x else x


def reconstruction_nll(logits: torch.Tensor, target: torch.Tensor, likelihood: str, gaussian_std: float) -> torch.Tensor:
    """-log p(x | z) per image, in nats: (B, C, H, W) x 2 -> (B,)."""
    if likelihood == "bernoulli":
        nll = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    else:
        # Gaussian with mean sigmoid(logits) and fixed std: 0.5 * ((x - mu) / s)^2 + log(s) + 0.5 log(2 pi)
        mean = torch.sigmoid(logits)
        nll = 0.5 * ((target - mean) / gaussian_std).pow(2) + math.log(gaussian_std) + 0.5 * math.log(2 * math.pi)
    return nll.flatten(1).sum(1)


def mean_image(logits: torch.Tensor) -> torch.Tensor:
    """The decoder's mean image in [0, 1]: sigmoid of the logits, for either likelihood."""
    return torch.sigmoid(logits)


def l1_sparsity(codes: torch.Tensor) -> torch.Tensor:
    """L1 penalty on latent activations, per image: (B, D) -> (B,)."""
    return codes.abs().sum(1)


def kl_sparsity(codes: torch.Tensor, target: float, eps: float = 1e-6) -> torch.Tensor:
    """sum_j KL(rho || rho_hat_j), rho_hat_j = batch mean of unit j (Ng 2011, "Sparse autoencoder").

    Returns a scalar: it is a property of the batch, not of one image.
    """
    rho_hat = codes.mean(0).clamp(eps, 1 - eps)  # (B, D) -> (D,)
    rho = target
    return torch.sum(rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat)))


def loss_terms(
    model: torch.nn.Module,
    x: torch.Tensor,
    config: ObjectiveConfig,
    generator: torch.Generator | None = None,
    *,
    sample: bool = True,
) -> dict[str, torch.Tensor]:
    """The loss of a batch of clean images and its terms (batch means, nats per image).

    The encoder sees the corrupted image, the likelihood scores the clean one.
    Returns ``{"loss", "recon", "kl", "sparsity"}`` scalars.
    """
    inputs = corrupt(
        x,
        noise_std=config.noise_std,
        mask_prob=config.mask_prob,
        salt_pepper=config.salt_pepper,
        generator=generator,
    )
    posterior = model.encode(inputs)
    z = posterior.sample(generator) if sample else posterior.mode()
    logits = model.decode(z)
    recon = reconstruction_nll(logits, x, config.likelihood, config.gaussian_std).mean()
    kl = posterior.kl().mean()
    if config.sparsity == "l1":
        sparsity = l1_sparsity(posterior.mode()).mean()
    elif config.sparsity == "kl":
        sparsity = kl_sparsity(posterior.mode(), config.sparsity_target)
    else:
        sparsity = x.new_zeros(())
    loss = recon + config.beta * kl + config.sparsity_weight * sparsity
    return {"loss": loss, "recon": recon, "kl": kl, "sparsity": sparsity}
