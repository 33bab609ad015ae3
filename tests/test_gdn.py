"""``--arch gdn``: Ballé et al.'s compression transforms (GDN down, inverse GDN up), their options, their tiles, and
a codec built on them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import aekit
from aekit import codec
from aekit.core.config import preset
from aekit.core.gdn import GDN, receptive_radius
from aekit.core.model import Autoencoder
from aekit.core.tiling import tiled
from aekit.errors import AekitError


def config(**options):
    cfg = preset("ae", arch="gdn", likelihood="gaussian", **{"hidden": (8, 16), "latent_channels": 4, **options})
    cfg.model = dataclasses.replace(cfg.model, channels=3, height=32, width=32)
    return cfg


def test_gdn_divides_each_channel_by_a_learned_norm_of_all_channels_and_igdn_multiplies():
    g = torch.Generator().manual_seed(0)
    gdn, igdn = GDN(3), GDN(3, inverse=True)
    with torch.no_grad():  # roots of either sign: beta and gamma are their squares, never negative
        for layer in (gdn, igdn):
            layer.beta_root.copy_(torch.tensor([0.5, -1.0, 2.0]))
            layer.gamma_root.copy_(torch.randn(3, 3, generator=g))
    x = torch.randn(2, 3, 4, 5, generator=g)
    beta = torch.tensor([0.25, 1.0, 4.0]) + 1e-6

    def norm(layer):
        return beta[None, :, None, None] + torch.einsum("ij,bjhw->bihw", layer.gamma_root.detach().square(), x.square())

    torch.testing.assert_close(gdn(x), x / norm(gdn).sqrt())
    torch.testing.assert_close(igdn(x), x * norm(igdn).sqrt())
    assert torch.isfinite(GDN(3)(torch.zeros(1, 3, 2, 2))).all()  # beta's floor: no division by zero


def test_the_options_agree():
    assert config().model.factor == 4 and config(hidden=(8, 8, 8, 8)).model.factor == 16
    cfg = preset("ae", arch="gdn", latent_channels=8, downsample=16)
    assert cfg.model.hidden == (128, 128, 128, 128) and cfg.model.grid == 16
    with pytest.raises(AekitError, match="gdn needs --latent-channels"):
        preset("ae", arch="gdn", hidden=(8, 16))
    with pytest.raises(AekitError, match="factor of 4"):
        preset("ae", arch="gdn", hidden=(8, 16), latent_channels=4, downsample=8)
    with pytest.raises(AekitError, match="blocks needs --arch resnet"):
        preset("ae", arch="gdn", latent_channels=4, blocks=2)


def test_any_size_in_and_out_and_tiles_equal_the_whole_photo():
    cfg = config(hidden=(8, 16, 16))
    model = Autoencoder(cfg.model).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
        x = torch.rand(1, 3, 150, 230, generator=torch.Generator().manual_seed(4))
        assert model.encode(x[..., :37, :45]).mode().shape == (1, 4, 5, 6)  # padded to a multiple of 8
        assert model(x[..., :37, :45]).shape == (1, 3, 37, 45)
        whole = model(x)
        margin = receptive_radius(cfg.model)
        pieces = tiled(model, x, factor=cfg.model.grid, tile=64, margin=margin)
        too_thin = tiled(model, x, factor=cfg.model.grid, tile=64, margin=8)
    torch.testing.assert_close(pieces, whole, atol=1e-5, rtol=0)  # GDN is pointwise in space: no seams
    assert (too_thin - whole).abs().max() > 1e-3


def test_a_gdn_codec_learns_and_its_files_decode_to_what_the_encoder_promised(tmp_path):
    rng = np.random.default_rng(0)
    blocks = rng.integers(40, 215, (48, 3, 4, 4)).repeat(8, 2).repeat(8, 3)
    np.save(tmp_path / "photos.npy", blocks.astype(np.uint8))
    run = aekit.train("ae", out=tmp_path / "run", arch="gdn", hidden=(8, 16), latent_channels=4, latent="entropy",
                      likelihood="gaussian", lmbda=0.01, data=str(tmp_path / "photos.npy"), batch_size=8, epochs=8,
                      lr=1e-2, progress=False, log=None)
    assert run.history[-1]["test_loss"] < run.history[0]["test_loss"]
    image = torch.from_numpy(blocks[0].astype(np.uint8))
    data, promised = codec.compress(run.model, image, decoded=True)
    assert torch.equal(codec.decompress(aekit.load(tmp_path / "run").model, data), promised)
    assert promised.shape == image.shape
