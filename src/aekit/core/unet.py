"""The encoder-decoder with symmetric skips of image restoration (``--arch unet``): a U of residual stages whose
every down stage's output is added back, through a skip, on the way up (Mao et al. 2016's RED-Net, Ronneberger et
al. 2015's U-Net), ending in a full-resolution code of ``latent_channels`` x H/p x W/p.

It is an autoencoder without a bottleneck: what keeps it from copying its input is the noise on that input (a
denoising autoencoder, Vincent et al. 2008), not the size of its code. The skips carry the fine detail that a
small code would have to drop, which is what a denoiser of photos needs and what a compressor must not have.

The blocks are the resnet backbone's (position-local GroupNorm, SiLU, resize-conv up, a space-to-depth stem and a
sub-pixel head, as FFDNet works at half resolution): an output pixel depends only on its receptive field, so a
large photo goes through in tiles with no seams, provided the tiles sit on the U's grid of ``patch x 2^(stages -
1)`` pixels (``ModelConfig.grid``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .resnet import ResidualBlock, Upsample, group_norm


class UNetEncoder(nn.Module):
    """(B, C, H, W), H and W multiples of ``patch`` -> features (B, hidden[0], H/p, W/p); C + 1 planes with
    ``noise_level_input`` (the last one the noise std, FFDNet's noise level map)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        widths, p, blocks = config.hidden, config.patch, config.blocks
        self.stem = nn.Sequential(nn.PixelUnshuffle(p) if p > 1 else nn.Identity(),
                                  nn.Conv2d(config.input_channels * p * p, widths[0], 3, padding=1))
        self.down = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(widths[:-1], widths[1:]))
        self.down_stages = nn.ModuleList(nn.Sequential(*[ResidualBlock(w) for _ in range(blocks)]) for w in widths)
        self.up = nn.ModuleList(Upsample(b, a) for a, b in zip(widths[:-1], widths[1:]))
        self.merge = nn.ModuleList(nn.Conv2d(2 * w, w, 1) for w in widths[:-1])  # [upsampled, skip] -> w
        self.up_stages = nn.ModuleList(nn.Sequential(*[ResidualBlock(w) for _ in range(blocks)]) for w in widths[:-1])
        self.out = nn.Sequential(group_norm(widths[0]), nn.SiLU())
        self.patch, self.grid, self.feature_dim = p, config.grid, widths[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2] // self.patch, x.shape[-1] // self.patch
        pad_h, pad_w = -x.shape[-2] % self.grid, -x.shape[-1] % self.grid
        if pad_h or pad_w:  # the U halves H and W (stages - 1) times: pad to its grid, crop the features back
            mode = "reflect" if pad_h < x.shape[-2] and pad_w < x.shape[-1] else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        feature = self.down_stages[0](self.stem(x))
        skips = [feature]
        for down, stage in zip(self.down, self.down_stages[1:]):
            feature = stage(down(feature))  # (B, w[i-1], h, w) -> (B, w[i], h/2, w/2)
            skips.append(feature)
        skips.pop()  # the deepest stage's output is where the way up starts
        for i in reversed(range(len(self.up))):  # (B, w[i+1], h, w) -> (B, w[i], 2h, 2w), joined with its skip
            feature = self.up_stages[i](self.merge[i](torch.cat([self.up[i](feature), skips.pop()], dim=1)))
        return self.out(feature)[..., :h, :w]
