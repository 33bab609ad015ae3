"""The transforms of learned image compression (``--arch gdn``): Ballé et al.'s analysis and synthesis transforms,
stride-2 5x5 convolutions with generalized divisive normalization (GDN) between them, and the way back with its
inverse (IGDN) (Ballé et al. 2016, 2017, 2018; CompressAI's ``bmshj2018`` models).

GDN divides each channel by a learned norm of all channels at the same position,
``y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)``; IGDN multiplies by it. It is the normalization that Gaussianizes
the responses of natural images, and the one the field's factorized and hyperprior codecs use; the residual
backbone (``--arch resnet``) is the alternative aekit measures it against.

The way up uses sub-pixel convolutions (a 3x3 convolution to 4x the channels, then ``PixelShuffle(2)``, started as
a resize-convolution, Aitken et al. 2017) where the papers use transposed convolutions, so no checkerboard at the
start of training. GDN is pointwise in space: an output depends on its receptive field only, and a large photo goes
through in tiles like the whole photo. ``hidden`` lists the widths after each stride-2 convolution; the backbone
shrinks H and W by f = 2^len(hidden).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig

BETA_MIN = 1e-6  # beta's floor: the norm never reaches 0


class GDN(nn.Module):
    """(B, C, H, W) -> the same shape: ``x / sqrt(beta + gamma @ x^2)`` per position (``inverse``: ``x * sqrt(...)``).

    beta and gamma are kept non-negative by storing their square roots (Ballé et al. 2016 reparameterize them
    too); gamma starts at 0.1 I and beta at 1, as in the papers' code, so GDN starts close to a fixed scaling."""

    def __init__(self, channels: int, inverse: bool = False) -> None:
        super().__init__()
        self.inverse = inverse
        self.beta_root = nn.Parameter(torch.ones(channels))
        self.gamma_root = nn.Parameter(torch.eye(channels).mul_(0.1).sqrt_())

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        beta = self.beta_root.square() + BETA_MIN
        gamma = self.gamma_root.square().view(c, c, 1, 1)
        return F.conv2d(x.square(), gamma, beta)  # (B, C, H, W): beta_i + sum_j gamma_ij x_j^2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.norm(x)
        return x * n.sqrt() if self.inverse else x * n.rsqrt()


class GDNEncoder(nn.Module):
    """(B, C, H, W), H and W multiples of f -> features (B, hidden[-1], H/f, W/f): a stride-2 5x5 convolution per
    width, GDN after all but the last (the latent head's 1x1 convolution follows it)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        widths = (config.channels, *config.hidden)
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Conv2d(a, b, 5, stride=2, padding=2))
            if i < len(config.hidden) - 1:
                layers.append(GDN(b))
        self.net = nn.Sequential(*layers)
        self.feature_dim = config.hidden[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SubPixelUp(nn.Module):
    """(B, C, h, w) -> (B, C', 2h, 2w): a 3x3 convolution to 4 C' channels, then PixelShuffle(2); initialised so
    that the four sub-pixels of a channel start equal (ICNR), a nearest-neighbour resize-convolution."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, 4 * c_out, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(self.conv.weight[::4].repeat_interleave(4, dim=0))
            self.conv.bias.copy_(self.conv.bias[::4].repeat_interleave(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.conv(x), 2)


class GDNDecoder(nn.Module):
    """codes (B, latent_channels, h, w) -> (B, C x outputs, h f, w f): the encoder's widths in reverse, each step up
    a sub-pixel convolution, IGDN after all but the last."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        widths = (config.latent_channels, *reversed(config.hidden[:-1]), config.channels * config.outputs)
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(SubPixelUp(a, b))
            if i < len(widths) - 2:
                layers.append(GDN(b, inverse=True))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)

    @torch.no_grad()
    def init_output_bias(self, logits: torch.Tensor) -> None:
        """Start the output near a given image's logits: (C, H, W) -> the mean channels' bias (their spatial mean;
        PixelShuffle takes output channel c from the 4 consecutive channels 4c ... 4c + 3)."""
        means = logits.mean((1, 2)).repeat_interleave(4)
        self.net[-1].conv.bias[: len(means)].copy_(means)


def receptive_radius(config: ModelConfig) -> int:
    """How far, in pixels, an output pixel can see: a 5x5 stride-2 convolution reading a grid of s pixels per cell
    adds 2 s; a 3x3 sub-pixel convolution on a grid of s adds s; plus one cell of the code's grid for alignment."""
    scales = [2**i for i in range(len(config.hidden))]  # 1, 2, 4, ...: the grids the encoder's convolutions read
    return sum(2 * s for s in scales) + sum(2 * s for s in scales) + config.factor
