"""Encoder and decoder backbones for C x H x W images.

An encoder maps images to a feature vector; a latent head (``latent.py``) turns the
features into a code distribution; a decoder maps a code back to per-pixel logits.

* MLP: ``hidden=(400,)`` with ``latent_dim=20`` is exactly pytorch/examples' VAE
  (784-400-20, ReLU): encoder 784->400, heads 400->20 (+20), decoder 20->400->784.
* Conv: stride-2 3x3 convolutions, one per channel width; each halves H and W
  (rounding up), so any size works; transposed convolutions with per-layer
  ``output_padding`` restore the exact input size.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import ModelConfig
from .gdn import GDNDecoder, GDNEncoder
from .resnet import ResNetDecoder, ResNetEncoder
from .unet import UNetEncoder

LEAKY_SLOPE = 0.2

ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(LEAKY_SLOPE),
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
}


def build_backbones(config: ModelConfig) -> tuple[nn.Module, nn.Module, int]:
    """Return ``(encoder, decoder, feature_dim)`` for the config's arch."""
    if config.arch == "mlp":
        encoder = MLPEncoder(config)
        return encoder, MLPDecoder(config), encoder.feature_dim
    if config.arch == "resnet":
        encoder = ResNetEncoder(config)
        return encoder, ResNetDecoder(config), encoder.feature_dim
    if config.arch == "gdn":
        encoder = GDNEncoder(config)
        return encoder, GDNDecoder(config), encoder.feature_dim
    if config.arch == "unet":  # the U is the encoder; its full-resolution code is decoded by one resnet stage
        encoder = UNetEncoder(config)
        return encoder, ResNetDecoder(config, widths=config.hidden[:1]), encoder.feature_dim
    encoder = ConvEncoder(config)
    return encoder, ConvDecoder(config), encoder.feature_dim


def _mlp(widths: list[int], activation: str) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for n_in, n_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(n_in, n_out), ACTIVATIONS[activation]()]
    return layers


class MLPEncoder(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        n_pixels = math.prod(config.image_shape)
        self.net = nn.Sequential(nn.Flatten(), *_mlp([n_pixels, *config.hidden], config.activation))
        self.feature_dim = config.hidden[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, C, H, W) -> (B, hidden[-1])


def output_shape(config: ModelConfig) -> tuple[int, int, int]:
    """What a decoder makes: (C x outputs, H, W), the likelihood's parameters for every pixel."""
    return (config.channels * config.outputs, config.height, config.width)


class MLPDecoder(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        widths = [config.latent_dim, *reversed(config.hidden)]
        self.net = nn.Sequential(
            *_mlp(widths, config.activation),
            nn.Linear(widths[-1], math.prod(output_shape(config))),
            nn.Unflatten(1, output_shape(config)),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)  # (B, D) -> (B, C x outputs, H, W) logits

    @torch.no_grad()
    def init_output_bias(self, logits: torch.Tensor) -> None:
        """Start the output at a given image's logits: (C, H, W) -> the mean channels' part of the last bias."""
        self.net[-2].bias[: logits.numel()].copy_(logits.flatten())


def conv_sizes(height: int, width: int, n_layers: int) -> list[tuple[int, int]]:
    """Spatial sizes after each stride-2 conv (k=3, p=1): ceil(n / 2) per layer."""
    sizes = [(height, width)]
    for _ in range(n_layers):
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


class ConvEncoder(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        channels = [config.channels, *config.hidden]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), ACTIVATIONS[config.activation]()]
        self.net = nn.Sequential(*layers, nn.Flatten())
        h, w = conv_sizes(config.height, config.width, len(config.hidden))[-1]
        self.feature_dim = config.hidden[-1] * h * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, C, H, W) -> (B, c_last * h * w)


class ConvDecoder(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        sizes = conv_sizes(config.height, config.width, len(config.hidden))
        h, w = sizes[-1]
        channels = [config.channels * config.outputs, *config.hidden]
        act = ACTIVATIONS[config.activation]
        layers: list[nn.Module] = [
            nn.Linear(config.latent_dim, channels[-1] * h * w),
            act(),
            nn.Unflatten(1, (channels[-1], h, w)),
        ]
        # Walk the encoder backwards: layer i maps sizes[i+1] -> sizes[i].
        for i in reversed(range(len(config.hidden))):
            (h_out, w_out), (h_in, w_in) = sizes[i], sizes[i + 1]
            pad = (h_out - (2 * h_in - 1), w_out - (2 * w_in - 1))  # 0 or 1 per axis
            layers.append(nn.ConvTranspose2d(channels[i + 1], channels[i], 3, stride=2, padding=1, output_padding=pad))
            if i > 0:
                layers.append(act())
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)  # (B, D) -> (B, C, H, W) logits

    @torch.no_grad()
    def init_output_bias(self, logits: torch.Tensor) -> None:
        """Start the output near a given image's logits: (C, H, W) -> per-channel bias (its spatial mean)."""
        self.net[-1].bias[: len(logits)].copy_(logits.mean((1, 2)))
