"""Latent heads and the code distributions they return.

``encode()`` always returns a distribution with ``sample()``, ``mode()``, ``kl()``:
a deterministic autoencoder returns a :class:`PointPosterior` (sample = mode, KL = 0),
a VAE a :class:`DiagonalGaussian`. So all families share one skeleton.
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

    def kl(self) -> torch.Tensor:
        # KL(q || N(0, I)) = -1/2 sum(1 + logvar - mu^2 - sigma^2); Kingma & Welling 2013, App. B
        return -0.5 * torch.sum(1 + self.logvar - self.mean.pow(2) - self.logvar.exp(), dim=1)  # (B,)

    def kl_per_dim(self) -> torch.Tensor:
        return -0.5 * (1 + self.logvar - self.mean.pow(2) - self.logvar.exp())  # (B, D)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        # z: (..., B, D) -> (..., B)
        return -0.5 * torch.sum(LOG_2PI + self.logvar + (z - self.mean).pow(2) / self.logvar.exp(), dim=-1)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * torch.sum(LOG_2PI + z.pow(2), dim=-1)  # (..., D) -> (...)


class PointHead(nn.Module):
    """features -> code, optionally squashed into (0, 1) by a sigmoid (sparse AE)."""

    def __init__(self, feature_dim: int, latent_dim: int, code_activation: str = "none") -> None:
        super().__init__()
        self.linear = nn.Linear(feature_dim, latent_dim)
        self.squash = code_activation == "sigmoid"

    def forward(self, h: torch.Tensor) -> PointPosterior:
        z = self.linear(h)  # (B, F) -> (B, D)
        return PointPosterior(torch.sigmoid(z) if self.squash else z)


class GaussianHead(nn.Module):
    """features -> (mean, log-variance) of a diagonal Gaussian."""

    def __init__(self, feature_dim: int, latent_dim: int) -> None:
        super().__init__()
        self.mean = nn.Linear(feature_dim, latent_dim)
        self.logvar = nn.Linear(feature_dim, latent_dim)

    def forward(self, h: torch.Tensor) -> DiagonalGaussian:
        return DiagonalGaussian(self.mean(h), self.logvar(h))  # (B, F) -> 2 x (B, D)
