"""Residual encoder and decoder for photos: stages of residual blocks with (local) GroupNorm and SiLU; between stages a
stride-2 convolution down and a nearest-neighbour resize + convolution up (no transposed convolutions: no
checkerboard); a space-to-depth stem and a sub-pixel head around them.

The shape of diffusers' ``Encoder``/``Decoder`` (``autoencoders/vae.py``), sized for a CPU, where the cost is the
convolutions at full resolution: the stem folds each ``patch`` x ``patch`` block of pixels into channels
(``PixelUnshuffle``) and the head unfolds them (``PixelShuffle``, Shi et al. 2016), so no layer runs at full
resolution; the down and up convolutions change the width, so every residual block keeps its stage's width and
the widest stage runs at the lowest resolution. ``hidden`` gives the stage widths; the backbone shrinks H and W by
f = patch x 2^(stages - 1). With a spatial latent (``latent_channels`` > 0) the network is fully convolutional and
takes any image size (the model pads to a multiple of f and crops back); with a vector latent it ends in a linear
layer for the training size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import gdn
from .config import ModelConfig

VECTOR_CHANNELS = 16  # channels of the feature map a vector code is read from and written to


class LocalGroupNorm(nn.Module):
    """GroupNorm whose statistics are taken at each position, over the group's channels (Wu & He 2018 take them
    over the whole image too): an output then depends only on its receptive field, never on the rest of the
    image, so a photo processed in tiles gives what the whole photo gives away from the tiles' borders, and a
    crop used in training behaves as the same region of a larger image."""

    def __init__(self, groups: int, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.groups, self.eps = groups, eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        g = x.permute(0, 2, 3, 1).reshape(b, h, w, self.groups, c // self.groups)  # channels last: a free view
        g = F.layer_norm(g, (c // self.groups,), eps=self.eps).reshape(b, h, w, c)  # one fused kernel each way
        return torch.addcmul(self.bias, g, self.weight).permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)


def group_norm(channels: int) -> LocalGroupNorm:
    """Groups of at least 16 channels. Statistics at one position over 4 channels (what 32 groups of a 128-wide
    layer would give) leave too little: a 128-d face autoencoder then decoded the mean face whatever its code
    (13.2 dB after 100 steps, and 13.6 after an epoch of 13,496 faces with an earlier, wider vector head; 18.8 dB
    after 150 steps with groups of 16; bench/norm_ablation.py)."""
    groups = max(1, channels // 16)
    while channels % groups:
        groups -= 1
    return LocalGroupNorm(groups, channels)


class ResidualBlock(nn.Module):
    """x + conv(SiLU(GN(conv(SiLU(GN(x)))))) at one width (He et al. 2016, pre-activation)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = group_norm(channels), nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2, self.conv2 = group_norm(channels), nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity: deep stacks train from the first step
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))  # (B, C, H, W) -> (B, C, H, W)


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 convolution to the next width: (B, C, H, W) -> (B, C', 2H, 2W)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def latent_size(config: ModelConfig, height: int, width: int) -> tuple[int, int]:
    """The latent's spatial size for an image of ``height`` x ``width`` (padded to a multiple of the factor)."""
    f = config.factor
    return math.ceil(height / f), math.ceil(width / f)


def receptive_radius(config: ModelConfig) -> int:
    """How far, in pixels, an output pixel of the whole autoencoder can see: a 3x3 convolution at a scale of s pixels
    per cell adds s; plus one cell of the latent grid for the nearest-neighbour upsampling and the alignment."""
    if config.arch == "gdn":
        return gdn.receptive_radius(config)
    p, blocks = config.patch, config.blocks
    scales = [p * 2**i for i in range(len(config.hidden))]
    convs = sum(2 * blocks * s for s in scales) + sum(scales[:-1])  # the blocks, and the down (or up) convolutions
    if config.arch == "unet":  # the U's way down and up, then one resnet stage at the code's scale to decode
        return 2 * convs + (2 * blocks + 4) * p + config.grid
    return 2 * convs + 2 * p + scales[-1] + config.factor  # encoder and decoder, stem and head, the latent's conv


class ResNetEncoder(nn.Module):
    """(B, C, H, W) -> features: (B, hidden[-1], H/f, W/f), flattened for a vector latent."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        widths, p = config.hidden, config.patch
        layers: list[nn.Module] = [nn.PixelUnshuffle(p)] if p > 1 else []  # (B, C, H, W) -> (B, C p^2, H/p, W/p)
        layers.append(nn.Conv2d(config.channels * p * p, widths[0], 3, padding=1))
        for i, width in enumerate(widths):
            if i > 0:  # halve H and W, widen: (B, w[i-1], h, w) -> (B, w[i], h/2, w/2)
                layers.append(nn.Conv2d(widths[i - 1], width, 3, stride=2, padding=1))
            layers += [ResidualBlock(width) for _ in range(config.blocks)]
        layers += [group_norm(widths[-1]), nn.SiLU()]
        if not config.spatial:  # a vector code is read from few channels: a Linear of smaller fan-in, fewer weights
            layers.append(nn.Conv2d(widths[-1], VECTOR_CHANNELS, 1))
        self.net = nn.Sequential(*layers)
        self.spatial = config.spatial
        h, w = latent_size(config, config.height, config.width)
        self.feature_dim = widths[-1] if self.spatial else VECTOR_CHANNELS * h * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.net(x)
        return h if self.spatial else h.flatten(1)


class ResNetDecoder(nn.Module):
    """codes -> (B, C x outputs, H, W): the encoder's stages in reverse, upsampling and narrowing between them."""

    def __init__(self, config: ModelConfig, widths: tuple[int, ...] | None = None) -> None:
        super().__init__()
        widths, p = tuple(reversed(widths or config.hidden)), config.patch
        h, w = latent_size(config, config.height, config.width)
        if config.spatial:
            layers: list[nn.Module] = [nn.Conv2d(config.latent_channels, widths[0], 3, padding=1)]
        else:  # (B, D) -> (B, VECTOR_CHANNELS, h, w) -> (B, widths[0], h, w)
            layers = [nn.Linear(config.latent_dim, VECTOR_CHANNELS * h * w), nn.Unflatten(1, (VECTOR_CHANNELS, h, w)),
                      nn.Conv2d(VECTOR_CHANNELS, widths[0], 3, padding=1)]
        for i, width in enumerate(widths):
            layers += [ResidualBlock(width) for _ in range(config.blocks)]
            if i < len(widths) - 1:
                layers.append(Upsample(width, widths[i + 1]))
        layers += [group_norm(widths[-1]), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.conv_out = nn.Conv2d(widths[-1], config.channels * config.outputs * p * p, 3, padding=1)
        self.shuffle = nn.PixelShuffle(p) if p > 1 else nn.Identity()  # (B, C' p^2, h, w) -> (B, C', h p, w p)
        self.channels, self.patch = config.channels, p
        with torch.no_grad():  # ICNR (Aitken et al. 2017): the p^2 sub-pixels of a channel start as copies, so the
            weight = self.conv_out.weight  # head starts as a resize-convolution, free of a checkerboard
            weight.copy_(weight[:: p * p].repeat_interleave(p * p, dim=0))
            self.conv_out.bias.copy_(self.conv_out.bias[:: p * p].repeat_interleave(p * p))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.conv_out(self.body(z)))

    @torch.no_grad()
    def init_output_bias(self, logits: torch.Tensor) -> None:
        """Start the output near a given image's logits: (C, H, W) -> the mean channels' bias (their spatial mean;
        PixelShuffle takes output channel c from the p^2 consecutive channels c p^2 ... c p^2 + p^2 - 1)."""
        means = logits.mean((1, 2)).repeat_interleave(self.patch * self.patch)
        self.conv_out.bias[: len(means)].copy_(means)
