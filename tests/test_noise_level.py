"""FFDNet-style denoising (``--noise-level-input``): the noise std as one more input plane, fed per image in
training, told at inference (``aekit denoise --noise-level``, the added noise's std, or the estimate)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from test_denoise import perturbed  # random weights everywhere, the zero-initialised last convolutions too

import aekit
from aekit.core.config import preset
from aekit.core.model import Autoencoder
from aekit.core.objectives import draw_noise, loss_with_noise, with_noise_level
from aekit.core.resnet import receptive_radius
from aekit.core.tiling import tiled
from aekit.errors import AekitError


def told(c=3, **options):
    cfg = preset("dae", arch="unet", hidden=(8, 16), latent_channels=4, noise_std=0.2, noise_level_input=True,
                 **options)
    cfg.model = dataclasses.replace(cfg.model, channels=c, height=32, width=32)
    return cfg


def test_training_tells_each_image_the_std_of_the_noise_it_was_given():
    """Blind training draws a std per image; the extra plane the encoder reads is that std, constant over the
    image, and the noisy planes are the clean image plus exactly that std times a standard normal draw."""
    cfg = told(noise_std_min=0.0)
    model = Autoencoder(cfg.model)
    seen = []
    model.encoder.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    noise = draw_noise(x, cfg.objective, model.latent_shape(x), model.config.latent, torch.Generator().manual_seed(2))
    loss_with_noise(model, x, noise, cfg.objective)
    inputs = seen[0]
    assert inputs.shape == (6, 4, 32, 32)
    level = inputs[:, 3]
    assert torch.equal(level, level[:, :1, :1].expand_as(level))  # constant over each image
    stds = level[:, 0, 0]
    assert len(set(stds.tolist())) == 6 and stds.min() >= 0 and stds.max() <= 0.2  # one std per image, in range
    g = torch.Generator().manual_seed(2)
    draws = torch.randn(x.shape, generator=g)  # draw_noise's first draw: the unscaled normal noise
    noisy = (x + stds.view(-1, 1, 1, 1) * draws).clamp(0, 1)  # clipped, as the objective clips by default
    torch.testing.assert_close(inputs[:, :3], noisy, atol=1e-6, rtol=0)


def test_a_fixed_std_objective_tells_that_std():
    cfg = told()
    model = Autoencoder(cfg.model)
    seen = []
    model.encoder.register_forward_pre_hook(lambda _m, args: seen.append(args[0][:, 3].unique()))
    x = torch.rand(2, 3, 32, 32)
    loss_with_noise(model, x, draw_noise(x, cfg.objective, model.latent_shape(x), model.config.latent, None),
                    cfg.objective)
    torch.testing.assert_close(seen[0], torch.tensor([0.2]))


def test_inference_tells_the_level_and_the_output_depends_on_it():
    model = perturbed(Autoencoder(told().model))
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        direct = model(with_noise_level(x, 0.1))
    torch.testing.assert_close(model.restore(x, noise_level=0.1), direct)
    torch.testing.assert_close(model.reconstruct(x, noise_level=0.1), direct)
    assert (model.restore(x, noise_level=0.3) - direct).abs().max() > 1e-4
    torch.testing.assert_close(model.reconstruct(x), model.restore(x, noise_level=0.0))  # default: clean images
    with pytest.raises(AekitError, match="told the noise level"):
        model.restore(x)
    noisy, denoised = model.denoise(x, noise_std=0.1)
    torch.testing.assert_close(denoised, model.restore(noisy, noise_level=0.1))


def test_a_large_photo_in_tiles_equals_the_whole_photo_with_the_level_plane():
    cfg = told().model
    model = perturbed(Autoencoder(cfg))
    x = with_noise_level(torch.rand(1, 3, 90, 140, generator=torch.Generator().manual_seed(4)), 0.15)
    with torch.no_grad():
        whole = model(x)
        pieces = tiled(model, x, factor=cfg.grid, tile=32, margin=receptive_radius(cfg))
    torch.testing.assert_close(pieces, whole, atol=1e-5, rtol=0)


@pytest.mark.parametrize("options, message", [
    ({"arch": "resnet"}, "needs --arch unet"),
    ({"noise_std": 0.0}, "needs --noise-std"),
])
def test_the_option_is_checked(options, message):
    base = {"arch": "unet", "hidden": (8, 16), "latent_channels": 4, "noise_std": 0.2, "noise_level_input": True}
    with pytest.raises(AekitError, match=message):
        preset("dae", **{**base, **options})


def test_denoise_tells_the_given_the_added_or_the_estimated_level(tmp_path, capsys):
    from PIL import Image

    from aekit.cli import main

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (24, 3, 16, 16), generator=g, dtype=torch.uint8)
    splits = aekit.Splits(aekit.ImageSet(images[:16], None, "a"), aekit.ImageSet(images[16:], None, "b"))
    common = {"arch": "unet", "hidden": (8, 16), "latent_channels": 4, "noise_std": 0.1, "epochs": 1,
              "batch_size": 8, "splits": splits, "progress": False, "log": None}
    run = aekit.train("dae", noise_level_input=True, out=tmp_path / "told", **common)
    blind = aekit.train("dae", out=tmp_path / "blind", **common)
    ramp = np.linspace(60, 200, 40)[None, :, None].repeat(30, 0).repeat(3, 2)
    noisy = np.clip(ramp + 20 * np.random.default_rng(0).standard_normal(ramp.shape), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(tmp_path / "noisy.png")
    photo = torch.from_numpy(noisy).permute(2, 0, 1)[None]

    def denoise(*extra):
        capsys.readouterr()
        code = main(["denoise", str(run.path), str(tmp_path / "noisy.png"), "-o", str(tmp_path / "out"), *extra])
        values = dict(line.split(None, 1) for line in capsys.readouterr().out.strip().splitlines())
        return code, values, np.asarray(Image.open(tmp_path / "out" / "noisy.png"))

    code, values, out = denoise("--noise-level", "0.05")
    expected = run.model.reconstruct(photo, noise_level=0.05)[0]
    assert code == 0 and float(values["noise_level"]) == 0.05
    np.testing.assert_array_equal(out, (expected * 255).round().byte().permute(1, 2, 0).numpy())
    code, values, _ = denoise()  # no level given, none added: the estimate is what the model is told
    assert code == 0 and float(values["noise_level"]) == float(values["estimated_noise_std"])
    assert abs(float(values["noise_level"]) * 255 - 20) < 2
    code, values, _ = denoise("--noise-std", "0.08")  # noise added: its std is told
    assert code == 0 and float(values["noise_level"]) == 0.08

    code = main(["denoise", str(blind.path), str(tmp_path / "noisy.png"), "--noise-level", "0.05",
                 "-o", str(tmp_path / "blind-out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "this model is blind" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "blind-out").exists()


def test_reconstruct_tells_such_a_model_the_images_are_clean(tmp_path, capsys):
    from PIL import Image

    from aekit.cli import main

    images = torch.randint(0, 256, (24, 3, 16, 16), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    splits = aekit.Splits(aekit.ImageSet(images[:16], None, "a"), aekit.ImageSet(images[16:], None, "b"))
    run = aekit.train("dae", arch="unet", hidden=(8, 16), latent_channels=4, noise_std=0.1, noise_level_input=True,
                      epochs=1, batch_size=8, splits=splits, out=tmp_path / "run", progress=False, log=None)
    photo = np.random.default_rng(1).integers(0, 256, (20, 28, 3), dtype=np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    assert main(["reconstruct", str(run.path), str(tmp_path / "photo.png"), "-o", str(tmp_path / "out")]) == 0
    assert "noise_level" not in capsys.readouterr().out
    expected = run.model.reconstruct(torch.from_numpy(photo).permute(2, 0, 1)[None], noise_level=0.0)[0]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "photo.png")),
                                  (expected * 255).round().byte().permute(1, 2, 0).numpy())
