"""Photo denoising: the unet backbone (symmetric skips, a full-resolution code), unclipped training noise, the
noise-level estimate, and ``aekit denoise`` on photos that are already noisy."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import aekit
from aekit.core.config import preset
from aekit.core.model import Autoencoder
from aekit.core.objectives import apply_corruption, draw_noise, loss_with_noise
from aekit.core.resnet import receptive_radius
from aekit.core.tiling import tiled
from aekit.errors import AekitError
from aekit.metrics.pixels import estimate_noise_std


def unet(c=3, **options):
    cfg = preset("dae", arch="unet", hidden=(8, 16, 16), latent_channels=6, noise_std=0.2, **options)
    cfg.model = dataclasses.replace(cfg.model, channels=c, height=32, width=32)
    return cfg


def tiny_photo_run(out, c=3, n=24, batch_size=8):
    """A unet photo denoiser trained for one epoch on ``n`` random 16x16 images of ``c`` channels."""
    images = torch.randint(0, 256, (n, c, 16, 16), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    k = n - n // 3
    splits = aekit.Splits(aekit.ImageSet(images[:k], None, "a"), aekit.ImageSet(images[k:], None, "b"))
    return aekit.train("dae", arch="unet", hidden=(8, 16), latent_channels=4, noise_std=0.1, epochs=1,
                       batch_size=batch_size, splits=splits, out=out, progress=False, log=None)


def perturbed(model):
    """Random weights everywhere (the zero-initialised last convolutions of the residual blocks too)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    return model.eval()


def test_the_unet_takes_any_size_and_its_code_is_at_half_resolution():
    model = perturbed(Autoencoder(unet().model))
    for h, w in ((32, 32), (37, 45), (5, 70)):  # the U pads to its grid of 8 inside, the code is cropped back
        x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(h * w))
        assert model.reconstruct(x).shape == (2, 3, h, w)
        assert model.embed(x).shape == (2, 6, -(-h // 2), -(-w // 2))
    assert model.config.factor == 2 and model.config.grid == 8


def test_the_skips_carry_detail_a_bottleneck_would_lose():
    """One pixel changed: the unet's output changes at that pixel at once (through the skips), before any training."""
    model = perturbed(Autoencoder(unet().model))
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = x.clone()
    y[..., 17, 9] = 1 - y[..., 17, 9]
    with torch.no_grad():
        change = (model(y) - model(x)).abs().sum(1)[0]
    assert change[17, 9] > 0
    assert change[17, 9] >= change.max() * 0.2  # the change is centred where the pixel changed


def test_a_large_photo_through_the_unet_in_tiles_equals_the_whole_photo():
    cfg = unet().model
    model = perturbed(Autoencoder(cfg))
    x = torch.rand(1, 3, 150, 230, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        whole = model(x)
        pieces = tiled(model, x, factor=cfg.grid, tile=64, margin=receptive_radius(cfg))
        off_grid = tiled(model, x, factor=2, tile=62, margin=receptive_radius(cfg))  # tiles off the U's grid
    torch.testing.assert_close(pieces, whole, atol=1e-5, rtol=0)
    assert (off_grid - whole).abs().max() > 1e-4


def test_unclipped_noise_keeps_values_outside_0_1():
    x = torch.full((4, 1, 8, 8), 0.02)
    noise = {"gauss": torch.randn(x.shape, generator=torch.Generator().manual_seed(0))}
    clipped = apply_corruption(x, noise, noise_std=0.3, mask_prob=0, salt_pepper=0)
    raw = apply_corruption(x, noise, noise_std=0.3, mask_prob=0, salt_pepper=0, clip=False)
    assert clipped.min() == 0 and raw.min() < -0.3
    torch.testing.assert_close(raw, x + 0.3 * noise["gauss"])
    model = Autoencoder(unet().model).eval()
    torch.testing.assert_close(model.restore(raw.expand(-1, 3, -1, -1)), model(raw.expand(-1, 3, -1, -1)))
    for bad in (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), torch.full((1, 3, 8, 8), float("nan")), torch.zeros(3, 8, 8)):
        with pytest.raises(AekitError, match="restore takes finite float images"):
            model.restore(bad)
    cfg = unet(noise_clip=False, noise_std_min=0.0)
    model = Autoencoder(cfg.model)
    batch = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    drawn = draw_noise(batch, cfg.objective, model.latent_shape(batch), "point", torch.Generator().manual_seed(2))
    loss_with_noise(model, batch, drawn, cfg.objective)["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_unet_options_are_checked():
    with pytest.raises(AekitError, match="unet needs --latent-channels"):
        preset("dae", arch="unet", hidden=(8, 16))
    with pytest.raises(AekitError, match="unet needs"):
        preset("dae", arch="unet", hidden=(8, 16), latent_channels=4, downsample=8)


@pytest.mark.parametrize("sigma", [5, 15, 25, 50])
def test_the_noise_estimate_reads_the_std_of_gaussian_noise(sigma):
    g = torch.Generator().manual_seed(sigma)
    smooth = torch.linspace(0.2, 0.8, 96).repeat(2, 3, 96, 1)  # a ramp: no fine texture of its own
    noisy = smooth + sigma / 255 * torch.randn(smooth.shape, generator=g)
    estimate = estimate_noise_std(noisy) * 255
    assert estimate.shape == (2,)
    np.testing.assert_allclose(estimate, sigma, rtol=0.08)
    assert estimate_noise_std(smooth).max() < 0.5 / 255


def test_denoise_a_photo_that_is_already_noisy(tmp_path, capsys):
    """No --noise-std: the photo is denoised as it is (the model's output, same size) and its noise estimated."""
    from PIL import Image

    from aekit.cli import main

    run = tiny_photo_run(tmp_path / "run", n=40, batch_size=16)
    ramp = np.linspace(60, 200, 90)[None, :, None].repeat(70, 0).repeat(3, 2)
    noisy = np.clip(ramp + 20 * np.random.default_rng(0).standard_normal(ramp.shape), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(tmp_path / "noisy.png")
    assert main(["denoise", str(run.path), str(tmp_path / "noisy.png"), "-o", str(tmp_path / "out")]) == 0
    values = dict(line.split(None, 1) for line in capsys.readouterr().out.strip().splitlines())
    assert abs(float(values["estimated_noise_std"]) * 255 - 20) < 2
    out = np.asarray(Image.open(tmp_path / "out" / "noisy.png"))
    expected = run.model.reconstruct(torch.from_numpy(noisy).permute(2, 0, 1)[None])[0]
    np.testing.assert_array_equal(out, (expected * 255).round().byte().permute(1, 2, 0).numpy())


def test_a_unet_is_not_sampled_and_trains_without_fitting_a_code_gaussian(tmp_path):
    """No bottleneck, so no samples: training skips the per-epoch code Gaussian (a denoiser's epochs over a few
    hundred photos spent a quarter of their time on it), and sample, the report's samples and the latent score
    say why they are refused."""
    from aekit.anomaly import score
    from aekit.report.figures.images import samples_figure

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 3, 16, 16), generator=g, dtype=torch.uint8)
    splits = aekit.Splits(aekit.ImageSet(images[:32], None, "a"), aekit.ImageSet(images[32:], None, "b"))
    run = aekit.train("dae", arch="unet", hidden=(8, 16), latent_channels=4, noise_std=0.1, epochs=1, batch_size=16,
                      splits=splits, out=tmp_path / "run", progress=False, log=None)
    assert not run.model.can_sample
    assert torch.equal(run.model.code_mean, torch.zeros(4)) and torch.equal(run.model.code_scale_tril, torch.eye(4))
    with pytest.raises(AekitError, match="no bottleneck to sample from"):
        run.model.sample(2)
    assert samples_figure(run.model) is None
    with pytest.raises(AekitError, match="latent score needs a bottleneck"):
        score(run, images[32:], "latent")
    assert score(run, images[32:], "mse").shape == (8,)
    resnet = aekit.train("ae", arch="resnet", hidden=(8, 16), latent_channels=4, downsample=4, epochs=1,
                         batch_size=16, splits=splits, out=tmp_path / "resnet", progress=False, log=None)
    assert resnet.model.can_sample and not torch.equal(resnet.model.code_mean, torch.zeros(4))


def test_denoise_keeps_the_photo_s_mode(tmp_path, capsys):
    """A grey photo through a colour model comes back grey (R = G = B in, the channels' mean out); a colour photo
    through a grey model comes back in colour (plane by plane): a photographer gets the mode they gave."""
    from PIL import Image

    from aekit.cli import main

    runs = {c: tiny_photo_run(tmp_path / f"run{c}", c=c) for c in (1, 3)}
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (30, 44), dtype=np.uint8)
    colour = rng.integers(0, 256, (30, 44, 3), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    Image.fromarray(colour).save(tmp_path / "colour.png")

    assert main(["denoise", str(runs[3].path), str(tmp_path / "grey.png"), "-o", str(tmp_path / "a")]) == 0
    out = Image.open(tmp_path / "a" / "grey.png")
    assert out.mode == "L" and out.size == (44, 30)
    x = torch.from_numpy(grey)[None, None].expand(1, 3, -1, -1)
    expected = runs[3].model.reconstruct(x).mean(1)[0]
    assert np.abs(np.asarray(out).astype(int) - (expected * 255).round().numpy().astype(int)).max() <= 1

    assert main(["denoise", str(runs[1].path), str(tmp_path / "colour.png"), "-o", str(tmp_path / "b")]) == 0
    out = Image.open(tmp_path / "b" / "colour.png")
    assert out.mode == "RGB" and out.size == (44, 30)
    planes = runs[1].model.reconstruct(torch.from_numpy(colour).permute(2, 0, 1)[:, None])[:, 0]
    np.testing.assert_array_equal(np.asarray(out), (planes * 255).round().byte().permute(1, 2, 0).numpy())

    assert main(["denoise", str(runs[3].path), str(tmp_path / "grey.png"), "--noise-std", "0.1",
                 "-o", str(tmp_path / "c")]) == 0
    assert {Image.open(f).mode for f in (tmp_path / "c").glob("*.png")} == {"L"}
    capsys.readouterr()


def test_self_ensemble_averages_the_eight_turned_and_mirrored_outputs(monkeypatch):
    """The self-ensemble's output turns with its input (the mean over the dihedral group is equivariant), which a
    single pass of a random network is not; it is the mean of the 8 outputs, each turned back; and it goes through
    the tiles of a large photo and a model told the noise level alike."""
    import aekit.core.model as model_module

    model = perturbed(Autoencoder(unet().model))
    x = torch.rand(1, 3, 37, 45, generator=torch.Generator().manual_seed(5))
    plain, both = model.restore(x), model.restore(x, self_ensemble=True)
    assert both.shape == x.shape
    for turn in (lambda t: torch.rot90(t, 1, (2, 3)), lambda t: t.flip(3), lambda t: t.flip(2)):
        torch.testing.assert_close(model.restore(turn(x), self_ensemble=True), turn(both), atol=1e-5, rtol=0)
        assert (model.restore(turn(x)) - turn(plain)).abs().max() > 1e-3  # one pass alone is not equivariant
    by_hand = sum(torch.rot90(model.restore(torch.rot90(x, k, (2, 3)).flip(3) if m else torch.rot90(x, k, (2, 3)))
                              .flip(3) if m else model.restore(torch.rot90(x, k, (2, 3))), -k, (2, 3))
                  for k in range(4) for m in (False, True)) / 8
    torch.testing.assert_close(both, by_hand, atol=1e-6, rtol=0)
    torch.testing.assert_close(model.reconstruct(x, self_ensemble=True), both)

    monkeypatch.setattr(model_module, "TILE_ABOVE", 20 * 20)  # every turn of this photo goes through in tiles
    big = torch.rand(1, 3, 70, 90, generator=torch.Generator().manual_seed(6))
    tiled_both = model.restore(big, self_ensemble=True)
    monkeypatch.setattr(model_module, "TILE_ABOVE", 10**9)
    torch.testing.assert_close(tiled_both, model.restore(big, self_ensemble=True), atol=1e-5, rtol=0)

    from test_noise_level import told

    told_model = perturbed(Autoencoder(told().model))
    out = told_model.restore(x, noise_level=0.1, self_ensemble=True)
    assert out.shape == x.shape
    torch.testing.assert_close(told_model.restore(x.flip(3), noise_level=0.1, self_ensemble=True), out.flip(3),
                               atol=1e-5, rtol=0)

    vector = Autoencoder(preset("ae", arch="conv", hidden=(8, 16), latent_dim=4).model)
    with pytest.raises(AekitError, match="self-ensemble needs a fully convolutional model"):
        vector.reconstruct(torch.rand(1, 1, 28, 28), self_ensemble=True)


def test_denoise_self_ensemble_from_the_cli(tmp_path, capsys):
    """``aekit denoise --self-ensemble`` writes the self-ensemble's output; a digit model refuses it in one line."""
    from PIL import Image

    from aekit.cli import main

    run = tiny_photo_run(tmp_path / "run")
    images = torch.randint(0, 256, (24, 1, 16, 16), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    photo = np.random.default_rng(1).integers(0, 256, (30, 44, 3), dtype=np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    assert main(["denoise", str(run.path), str(tmp_path / "photo.png"), "--self-ensemble",
                 "-o", str(tmp_path / "out.png")]) == 0
    out = np.asarray(Image.open(tmp_path / "out.png"))
    expected = run.model.reconstruct(torch.from_numpy(photo).permute(2, 0, 1)[None], self_ensemble=True)[0]
    np.testing.assert_array_equal(out, (expected * 255).round().byte().permute(1, 2, 0).numpy())
    plain = run.model.reconstruct(torch.from_numpy(photo).permute(2, 0, 1)[None])[0]
    assert not torch.equal((plain * 255).round().byte(), (expected * 255).round().byte())

    digits = aekit.Splits(aekit.ImageSet(images[:16], None, "a"), aekit.ImageSet(images[16:], None, "b"))
    mlp = aekit.train("dae", hidden=(8,), latent_dim=2, epochs=1, batch_size=8, splits=digits,
                      out=tmp_path / "mlp", progress=False, log=None)
    capsys.readouterr()
    assert main(["denoise", str(mlp.path), "mnist-5k", "--self-ensemble", "-o", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--self-ensemble needs a photo model" in err
    assert not (tmp_path / "d").exists()
