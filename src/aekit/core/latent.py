"""Latent heads and the code distributions they return.

``encode()`` always returns a distribution with ``sample()``, ``mode()``, ``kl()``:
a deterministic autoencoder returns a :class:`PointPosterior` (sample = mode, KL = 0),
a VAE a :class:`DiagonalGaussian`. So all families share one skeleton.

A code is a vector ``(B, D)`` or a spatial map ``(B, C, h, w)`` (``ModelConfig.latent_channels``); the
distributions sum over every non-batch dimension, and a spatial head is a 1x1 convolution.
"""

from __future__ import annotations

import math

import torch
from torch import nn

LOG_2PI = math.log(2 * math.pi)
LOGVAR_RANGE = (-30.0, 20.0)  # log-variances are clamped here: keeps exp() finite


class PointPosterior:
    """A point mass at ``z``: the code of a deterministic autoencoder."""

    def __init__(self, z: torch.Tensor) -> None:
        self.z = z  # (B, D)

    @property
    def mean(self) -> torch.Tensor:
        return self.z

    def mode(self) -> torch.Tensor:
        return self.z

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.z

    def kl(self) -> torch.Tensor:
        return self.z.new_zeros(self.z.shape[0])  # (B,)

    def kl_per_dim(self) -> torch.Tensor:
        return self.z.new_zeros(self.z.shape[:2])  # (B, D) or (B, C)


class DiagonalGaussian:
    """q(z|x) = N(mean, diag(exp(logvar))), with KL to the N(0, I) prior."""

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor) -> None:
        self.mean = mean  # (B, D)
        self.logvar = logvar.clamp(*LOGVAR_RANGE)
        self.std = torch.exp(0.5 * self.logvar)

    def mode(self) -> torch.Tensor:
        return self.mean

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        # Reparameterisation trick: z = mu + sigma * eps; Kingma & Welling 2013, Sec. 2.4
        eps = torch.randn(self.mean.shape, generator=generator, dtype=self.mean.dtype, device=self.mean.device)
        return self.mean + self.std * eps

    @property
    def event_dims(self) -> tuple[int, ...]:
        """The code's own dimensions, counted from the right: (-1,) for (B, D), (-3, -2, -1) for (B, C, h, w)."""
        return tuple(range(-(self.mean.dim() - 1), 0))

    def kl(self) -> torch.Tensor:
        # KL(q || N(0, I)) = -1/2 sum(1 + logvar - mu^2 - sigma^2); Kingma & Welling 2013, App. B
        return -0.5 * torch.sum(1 + self.logvar - self.mean.pow(2) - self.logvar.exp(), dim=self.event_dims)  # (B,)

    def kl_per_dim(self) -> torch.Tensor:
        """KL per latent unit: (B, D) for a vector code, (B, C) per channel (summed over positions) for a map."""
        kl = -0.5 * (1 + self.logvar - self.mean.pow(2) - self.logvar.exp())
        return kl if kl.dim() == 2 else kl.flatten(2).sum(2)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        # z: (..., B, *code) -> (..., B)
        return -0.5 * torch.sum(LOG_2PI + self.logvar + (z - self.mean).pow(2) / self.logvar.exp(), dim=self.event_dims)


def standard_normal_log_prob(z: torch.Tensor, event_dims: int = 1) -> torch.Tensor:
    """log N(z; 0, I) over the last ``event_dims`` dimensions: (..., *code) -> (...)."""
    return -0.5 * torch.sum(LOG_2PI + z.pow(2), dim=tuple(range(-event_dims, 0)))


def _projection(feature_dim: int, size: int, spatial: bool) -> nn.Module:
    """(B, F) -> (B, size) by a linear layer, or (B, F, h, w) -> (B, size, h, w) by a 1x1 convolution."""
    return nn.Conv2d(feature_dim, size, 1) if spatial else nn.Linear(feature_dim, size)


class PointHead(nn.Module):
    """features -> code, optionally squashed into (0, 1) by a sigmoid (sparse AE)."""

    def __init__(self, feature_dim: int, latent_dim: int, code_activation: str = "none", spatial: bool = False) -> None:
        super().__init__()
        self.linear = _projection(feature_dim, latent_dim, spatial)
        self.squash = code_activation == "sigmoid"

    def forward(self, h: torch.Tensor) -> PointPosterior:
        z = self.linear(h)  # (B, F) -> (B, D), or (B, F, h, w) -> (B, C, h, w)
        return PointPosterior(torch.sigmoid(z) if self.squash else z)


class GaussianHead(nn.Module):
    """features -> (mean, log-variance) of a diagonal Gaussian."""

    def __init__(self, feature_dim: int, latent_dim: int, spatial: bool = False) -> None:
        super().__init__()
        self.mean = _projection(feature_dim, latent_dim, spatial)
        self.logvar = _projection(feature_dim, latent_dim, spatial)

    def forward(self, h: torch.Tensor) -> DiagonalGaussian:
        return DiagonalGaussian(self.mean(h), self.logvar(h))  # (B, F[, h, w]) -> 2 x (B, D) or (B, C, h, w)
