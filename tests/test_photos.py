"""The natural-image half: the residual backbone, spatial latents on any image size, and the discretized
likelihoods of 8-bit images."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

import aekit
from aekit.core.config import preset
from aekit.core.likelihoods import LIKELIHOODS
from aekit.core.model import Autoencoder, parameter_count
from aekit.core.objectives import draw_noise, loss_with_noise
from aekit.errors import AekitError

FAMILIES = ("ae", "dae", "sae", "vae")


def config(family="ae", *, c=3, h=32, w=32, **options):
    options.setdefault("hidden", (8, 16, 16))
    cfg = preset(family, arch="resnet", latent_dim=12, **options)
    cfg.model = dataclasses.replace(cfg.model, channels=c, height=h, width=w)
    return cfg


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("spatial", [False, True])
def test_every_family_trains_with_a_vector_or_a_spatial_latent(family, spatial):
    cfg = config(family, latent_channels=4 if spatial else 0)
    torch.manual_seed(0)
    model = Autoencoder(cfg.model)
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    noise = draw_noise(x, cfg.objective, model.latent_shape(x), model.is_variational, torch.Generator().manual_seed(2))
    terms = loss_with_noise(model, x, noise, cfg.objective)
    terms["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    code = model.embed(x)
    assert code.shape == ((6, 4, 4, 4) if spatial else (6, 12))  # f = patch 2 x 2^(3 - 1) = 8
    assert model.decode_images(code).shape == x.shape


def test_a_spatial_model_takes_any_size_and_gives_the_same_size_back():
    model = Autoencoder(config(latent_channels=4).model).eval()
    for h, w in ((32, 32), (37, 45), (8, 8), (3, 70)):
        x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(h * w))
        assert model.reconstruct(x).shape == (2, 3, h, w)
        assert model.embed(x).shape == (2, 4, math.ceil(h / 8), math.ceil(w / 8))
    assert model.sample(3, size=(24, 40)).shape == (3, 3, 24, 40)


def test_padding_to_the_factor_changes_nothing_inside_the_image():
    """An image already a multiple of f, and the same image cut one pixel short: the codes agree where the
    cut image's padding cannot reach (the padding is a reflection, seen only near the border)."""
    model = Autoencoder(config(latent_channels=4).model).eval()
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    whole, cut = model.embed(x), model.embed(x[..., :63, :63])
    assert whole.shape == cut.shape
    torch.testing.assert_close(whole[..., :5, :5], cut[..., :5, :5])


def test_a_vector_model_refuses_another_size():
    model = Autoencoder(config().model)
    with pytest.raises(AekitError, match=r"takes \(N, 3, 32, 32\)"):
        model.embed(torch.rand(2, 3, 40, 40))


def test_the_decoder_upsamples_without_a_checkerboard():
    """A constant code decodes to an image whose 2x2 phases agree, whatever the body's weights: resize-convolutions
    have no stride pattern, and the sub-pixel head starts with its p^2 phases equal (ICNR)."""
    model = Autoencoder(config(latent_channels=4).model).eval()
    with torch.no_grad():
        for name, p in model.decoder.named_parameters():
            if not name.startswith("conv_out"):
                p.normal_(0, 0.1)
        out = model.decoder(torch.ones(1, 4, 4, 4))[0, 0]  # (32, 32)
    inner = out[8:-8, 8:-8]
    phases = torch.stack([inner[i::2, j::2] for i in range(2) for j in range(2)])  # (4, 8, 8)
    assert (phases - phases.mean(0)).abs().max() < 0.05 * inner.std()


def test_resnet_options_are_checked():
    with pytest.raises(AekitError, match="latent_channels needs --arch resnet"):
        preset("ae", latent_channels=4)
    with pytest.raises(AekitError, match="power of 2"):
        preset("ae", arch="resnet", downsample=6)
    assert preset("ae", arch="resnet", downsample=16).model.factor == 16
    assert preset("ae", arch="resnet", downsample=16, patch=4).model.hidden == (48, 96, 192)
    with pytest.raises(AekitError, match="needs 3 stage widths"):
        preset("ae", arch="resnet", downsample=8, hidden=(8, 16))
    cfg = config(latent_channels=4)
    assert parameter_count(cfg.model) == sum(p.numel() for p in Autoencoder(cfg.model).parameters())


# ----- discretized likelihoods -----

LEVELS = torch.arange(256, dtype=torch.float64) / 255


@pytest.mark.parametrize("name", ["logistic", "normal"])
@pytest.mark.parametrize("mean, log_scale", [(0.5, -2.0), (1e-4, -6.0), (0.9999, -8.0), (0.3, 1.5), (0.62, -15.0)])
def test_a_discretized_likelihood_sums_to_one_over_the_256_levels(name, mean, log_scale):
    outputs = torch.tensor([math.log(mean / (1 - mean)), log_scale], dtype=torch.float64).view(1, 2, 1, 1)
    nll = LIKELIHOODS[name].nll(outputs.expand(256, 2, 1, 1), LEVELS.view(256, 1, 1, 1), 0.0)
    assert torch.isfinite(nll).all()
    assert float(torch.exp(-nll).sum()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("name", ["logistic", "normal", "logistic-rgb", "logistic-mixture"])
def test_discretized_likelihoods_have_finite_gradients_everywhere(name):
    g = torch.Generator().manual_seed(0)
    k = 3 * LIKELIHOODS[name].params
    outputs = (torch.randn(64, k, 4, 4, generator=g) * torch.tensor([8.0] * 3 + [6.0] * (k - 3)).view(1, k, 1, 1))
    outputs.requires_grad_(True)
    target = torch.randint(0, 256, (64, 3, 4, 4), generator=g).float() / 255
    LIKELIHOODS[name].nll(outputs, target, 0.0).sum().backward()
    assert torch.isfinite(outputs.grad).all()


def test_coupled_channels_are_an_exact_likelihood_one_channel_at_a_time():
    """logistic-rgb: each channel's factor sums to one over its 256 levels whatever the earlier channels hold, it
    does not look at later channels (so the product is a distribution over the pixel), and it moves with the
    earlier channels' residuals; coefficients of 0 give the plain logistic."""
    g = torch.Generator().manual_seed(0)
    outputs = torch.randn(1, 9, 1, 1, generator=g, dtype=torch.float64) * torch.tensor(
        [2.0] * 3 + [0.5] * 3 + [3.0] * 3, dtype=torch.float64).view(1, 9, 1, 1) - torch.tensor(
        [0.0] * 3 + [2.5] * 3 + [0.0] * 3, dtype=torch.float64).view(1, 9, 1, 1)
    nll = LIKELIHOODS["logistic-rgb"].nll
    for earlier in ((17, 200), (255, 0), (128, 128)):
        for c in range(3):
            target = torch.tensor([earlier[0], earlier[1], 90], dtype=torch.float64).repeat(256, 1)
            target[:, c] = torch.arange(256)
            later = target.clone()
            later[:, c + 1:] = 255 - later[:, c + 1:]  # other values in the later channels: no change
            x, y = target.view(256, 3, 1, 1) / 255, later.view(256, 3, 1, 1) / 255
            per_channel = nll(outputs.expand(256, -1, -1, -1), x, 0.0)[:, c, 0, 0]
            assert float(torch.exp(-per_channel).sum()) == pytest.approx(1.0, abs=1e-6)
            torch.testing.assert_close(nll(outputs.expand(256, -1, -1, -1), y, 0.0)[:, c], per_channel[:, None, None])
    a, b = torch.tensor([[10.0, 40, 40]]) / 255, torch.tensor([[200.0, 40, 40]]) / 255  # red differs only
    green = [float(nll(outputs.float(), v.view(1, 3, 1, 1), 0.0)[0, 1]) for v in (a, b)]
    assert abs(green[0] - green[1]) > 0.1
    uncoupled = outputs.clone()
    uncoupled[:, 6:] = 0
    x = torch.randint(0, 256, (8, 3, 1, 1), generator=g, dtype=torch.float64) / 255
    torch.testing.assert_close(nll(uncoupled.expand(8, -1, -1, -1), x, 0.0),
                               LIKELIHOODS["logistic"].nll(uncoupled[:, :6].expand(8, -1, -1, -1), x, 0.0))


def test_coupled_channels_spend_fewer_bits_when_the_channels_err_together():
    """Pixels whose colour channels share most of their noise (as a blurred reconstruction's errors do): the
    best coupled logistic spends at least 0.5 nats a dimension less than the best independent one."""
    g = torch.Generator().manual_seed(1)
    shared = 12 * torch.randn(4000, 1, generator=g)
    levels = (128 + shared + 3 * torch.randn(4000, 3, generator=g)).round().clamp(0, 255) / 255
    target = levels.view(4000, 3, 1, 1)
    best = {}
    for name, params in (("logistic", 2), ("logistic-rgb", 3)):
        theta = torch.zeros(1, 3 * params, 1, 1, requires_grad=True)
        optimizer = torch.optim.Adam([theta], lr=0.05)
        for _ in range(400):
            optimizer.zero_grad()
            loss = LIKELIHOODS[name].nll(theta, target, 0.0).mean()
            loss.backward()
            optimizer.step()
        best[name] = float(loss.detach())
    assert best["logistic-rgb"] < best["logistic"] - 0.5


def test_a_model_with_a_learned_scale_makes_twice_the_outputs_and_trains(tmp_path):
    digits = aekit.load_dataset("mnist-5k")
    splits = aekit.Splits(digits.train.subset(torch.arange(600)), digits.test.subset(torch.arange(100)))
    run = aekit.train("vae", arch="resnet", hidden=(8, 16), likelihood="logistic", latent_dim=8, epochs=2,
                      batch_size=50, splits=splits, out=tmp_path / "run", progress=False, log=None)
    assert run.config.model.outputs == 2 and run.model.decode(torch.zeros(1, 8)).shape == (1, 2, 28, 28)
    assert run.model.reconstruct(splits.test.images[:4]).shape == (4, 1, 28, 28)
    losses = [row["test_loss"] for row in run.history]
    assert losses[1] < losses[0]
    metrics = aekit.evaluate(run, splits, iw_samples=4, frechet=False)
    v = metrics["variational"]
    assert "8-bit" in v["likelihood_note"] and 0 < v["iw_nll_bits_per_dim"] < 8  # fewer bits than the raw bytes
    with pytest.raises(AekitError, match="takes 2 decoder output"):
        aekit.RunConfig(model=dataclasses.replace(run.config.model, outputs=1), objective=run.config.objective)


def test_a_colour_model_with_coupled_channels_makes_three_outputs_a_channel_and_trains(tmp_path, capsys):
    from aekit.cli import main

    g = torch.Generator().manual_seed(0)
    base = torch.randint(40, 216, (1, 3, 16, 16), generator=g)
    images = (base + torch.randint(-30, 31, (120, 1, 16, 16), generator=g)).clamp(0, 255).to(torch.uint8)
    splits = aekit.Splits(aekit.ImageSet(images[:100], None, "a"), aekit.ImageSet(images[100:], None, "b"))
    run = aekit.train("vae", arch="resnet", hidden=(8, 16), likelihood="logistic-rgb", latent_channels=2, epochs=2,
                      batch_size=20, splits=splits, out=tmp_path / "run", progress=False, log=None)
    assert run.config.model.outputs == 3 and run.model.decode(torch.zeros(1, 2, 4, 4)).shape == (1, 9, 16, 16)
    assert run.model.reconstruct(images[:2]).shape == (2, 3, 16, 16)
    v = aekit.evaluate(run, splits, iw_samples=2, frechet=False)["variational"]
    losses = [row["test_loss"] for row in run.history]
    assert losses[1] < losses[0]
    assert "coupled" in v["likelihood_note"] and 0 < v["iw_nll_bits_per_dim"] < 16  # finite, of the 8-bit images
    capsys.readouterr()
    assert main(["train", "--model", "vae", "--likelihood", "logistic-rgbx", "--data", "mnist-5k",
                 "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "logistic-rgb" in err


def test_evaluate_and_report_a_spatial_rgb_model(tmp_path):
    """Metrics and every figure that applies for RGB images and a spatial latent (the codes flattened where a
    metric wants vectors: PCA with as many numbers as the code, probes, Fréchet draws)."""
    g = torch.Generator().manual_seed(0)
    base = torch.randint(0, 256, (2, 3, 16, 16), generator=g, dtype=torch.uint8)
    labels = torch.arange(240) % 2
    images = (base[labels].int() + torch.randint(-20, 21, (240, 3, 16, 16), generator=g)).clamp(0, 255).to(torch.uint8)
    splits = aekit.Splits(aekit.ImageSet(images[:200], labels[:200], "a", ["x", "y"]),
                          aekit.ImageSet(images[200:], labels[200:], "b", ["x", "y"]))
    run = aekit.train("vae", arch="resnet", hidden=(8, 16), latent_channels=2, epochs=1, batch_size=50, splits=splits,
                      out=tmp_path / "run", progress=False, log=None)
    metrics = aekit.evaluate(run, splits, iw_samples=3, frechet=False)
    assert metrics["pca"]["n_components"] == 2 * 4 * 4 == metrics["run"]["latent_dim"]
    assert metrics["run"]["latent_shape"] == [2, 4, 4]
    assert metrics["representation"]["codes"]["dim"] == 32
    assert len(metrics["variational"]["kl_per_dim_nats"]) == 2  # per channel
    from aekit.report.figures import make_figures

    index = make_figures(run, splits, tmp_path / "figs", metrics=metrics)
    files = {e["file"] for e in index}
    assert {"reconstructions.png", "samples.png", "latent.png", "interpolations.png"} <= files
    assert "traversals.png" not in files


def test_a_large_photo_in_tiles_equals_the_whole_photo_at_once():
    from aekit.core.resnet import receptive_radius
    from aekit.core.tiling import tiled

    cfg = config(latent_channels=4, hidden=(8, 16, 16))
    model = Autoencoder(cfg.model).eval()
    margin = receptive_radius(cfg.model)
    assert margin == 88  # p = 2, scales 2, 4, 8, one block: see receptive_radius
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
        x = torch.rand(1, 3, 150, 230, generator=torch.Generator().manual_seed(4))
        whole = model(x)
        pieces = tiled(model, x, factor=8, tile=64, margin=margin)
    assert pieces.shape == whole.shape == x.shape
    torch.testing.assert_close(pieces, whole, atol=1e-5, rtol=0)  # margins beyond the receptive field: exact
    with torch.no_grad():
        too_thin = tiled(model, x, factor=8, tile=64, margin=16)  # a margin inside the receptive field shows seams
    assert (too_thin - whole).abs().max() > 1e-3


@pytest.fixture(scope="module")
def spatial_run(tmp_path_factory):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (120, 3, 16, 16), generator=g, dtype=torch.uint8)
    splits = aekit.Splits(aekit.ImageSet(images[:100], None, "a"), aekit.ImageSet(images[100:], None, "b"))
    return aekit.train("ae", arch="resnet", hidden=(8, 16), latent_channels=3, epochs=1, batch_size=50, splits=splits,
                       out=tmp_path_factory.mktemp("spatial") / "run", progress=False, log=None)


def test_reconstruct_and_denoise_photos_of_any_size_from_the_cli(spatial_run, tmp_path, capsys):
    from PIL import Image

    from aekit.cli import main

    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    rng = torch.Generator().manual_seed(1)
    for name, (w, h) in {"wide.png": (300, 200), "sub/tall.jpg": (121, 257)}.items():
        pixels = torch.randint(0, 256, (h, w, 3), generator=rng, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(photos / name)
    assert main(["reconstruct", str(spatial_run.path), str(photos), "-o", str(tmp_path / "out")]) == 0
    assert Image.open(tmp_path / "out" / "wide.png").size == (300, 200)
    assert Image.open(tmp_path / "out" / "sub_tall.png").size == (121, 257)
    assert "psnr_db" in capsys.readouterr().out
    assert main(["denoise", str(spatial_run.path), str(photos / "wide.png"), "--noise-std", "0.1",
                 "-o", str(tmp_path / "dn")]) == 0
    assert {p.name for p in (tmp_path / "dn").iterdir()} == {"wide.png", "wide-noisy.png"}
    assert main(["reconstruct", str(spatial_run.path), str(photos), "-o", str(tmp_path / "x.npy")]) == 2
    assert "differ in size" in capsys.readouterr().err


def _photo(mode: str, size=(40, 30)):
    from PIL import Image

    rng = torch.Generator().manual_seed(len(mode))
    rgb = Image.fromarray(torch.randint(0, 256, (size[1], size[0], 3), generator=rng, dtype=torch.uint8).numpy())
    if mode == "I;16":
        return Image.fromarray((torch.randint(0, 65536, (size[1], size[0]), generator=rng).numpy()).astype("uint16"))
    return rgb.convert(mode) if mode != "P" else rgb.convert("P", palette=Image.Palette.ADAPTIVE)


def test_a_folder_of_every_image_mode_reconstructs_as_rgb(spatial_run, tmp_path, capsys):
    """Grey, RGBA, palette, 16-bit and CMYK photos in one folder: each converted to the model's RGB, same size out."""
    from PIL import Image

    from aekit.cli import main

    folder = tmp_path / "modes"
    folder.mkdir()
    names = {"L": "grey.png", "RGBA": "alpha.png", "P": "palette.png", "I;16": "deep.png", "CMYK": "print.jpg",
             "RGB": "plain.jpg"}
    for mode, name in names.items():
        _photo(mode).save(folder / name)
    assert main(["reconstruct", str(spatial_run.path), str(folder), "-o", str(tmp_path / "out")]) == 0
    for name in names.values():
        out = Image.open(tmp_path / "out" / (name.rsplit(".", 1)[0] + ".png"))
        assert out.size == (40, 30) and out.mode == "RGB", name
    capsys.readouterr()


def test_photos_beyond_what_the_model_or_the_memory_can_take_are_one_line(spatial_run, tmp_path, capsys, monkeypatch):
    from aekit.cli import main

    folder = tmp_path / "big"
    folder.mkdir()
    _photo("RGB", (2000, 1500)).save(folder / "big.png")
    monkeypatch.setenv("AEKIT_MEMORY_BUDGET", "20M")  # a tile fits, the whole photo's arrays do not
    assert main(["reconstruct", str(spatial_run.path), str(folder / "big.png"), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "memory budget" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()

    monkeypatch.delenv("AEKIT_MEMORY_BUDGET")
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (60, 3, 16, 16), generator=g, dtype=torch.uint8)
    vector = aekit.train("ae", arch="resnet", hidden=(8, 16), latent_dim=5, epochs=1, batch_size=30,
                         splits=aekit.Splits(aekit.ImageSet(images[:50], None, "a"), aekit.ImageSet(images[50:], None, "b")),
                         out=tmp_path / "vector", progress=False, log=None)
    assert main(["sample", str(vector.path), "-n", "4", "--size", "40,30", "-o", str(tmp_path / "v.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "makes 16x16 images only" in err
    assert main(["sample", str(spatial_run.path), "-n", "4", "--size", "40,30", "-o", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (4, 3, 40, 30)
    assert main(["sample", str(spatial_run.path), "-n", "4", "--size", "0,30", "-o", str(tmp_path / "z.npy")]) == 2
    assert main(["sample", str(spatial_run.path), "-n", "4", "--size", "40,30", "--components", "2",
                 "-o", str(tmp_path / "m.npy")]) == 2
    assert "draws whole codes of the training images' size (16x16)" in capsys.readouterr().err
    assert not any((tmp_path / name).exists() for name in ("v.png", "z.npy", "m.npy"))


def test_a_mixture_over_whole_code_maps_samples_the_training_size(spatial_run):
    from aekit.core.code_mixture import CodeMixture

    g = torch.Generator().manual_seed(2)
    model = spatial_run.model
    codes = model.embed(torch.randint(0, 256, (40, 3, 16, 16), generator=g, dtype=torch.uint8))
    mixture = CodeMixture.fit(codes, 2, seed=0)
    assert mixture.shape == tuple(codes.shape[1:]) == (3, 4, 4)  # the map at the training size, flattened for EM
    with torch.inference_mode():
        images = model.decode_images(mixture.sample(5, seed=0))
    assert images.shape == (5, 3, 16, 16) and 0 <= images.min() and images.max() <= 1


def test_encode_photos_of_several_sizes(spatial_run, tmp_path, capsys):
    from PIL import Image

    from aekit.cli import main

    folder = tmp_path / "p"
    folder.mkdir()
    _photo("RGB", (40, 30)).save(folder / "a.png")
    _photo("RGB", (24, 64)).save(folder / "b.png")
    assert main(["encode", str(spatial_run.path), str(folder), "-o", str(tmp_path / "codes.npy")]) == 2
    assert "give a name ending in .npz" in capsys.readouterr().err
    assert main(["encode", str(spatial_run.path), str(folder), "-o", str(tmp_path / "codes.npz")]) == 0
    codes = np.load(tmp_path / "codes.npz")
    assert codes["a.png"].shape == (3, 8, 10) and codes["b.png"].shape == (3, 16, 6)  # f = 4, padded up: ceil
    one = aekit.load(spatial_run.path).model.embed(torch.from_numpy(np.asarray(Image.open(folder / "a.png")))
                                                   .permute(2, 0, 1)[None])
    np.testing.assert_allclose(codes["a.png"], one[0].numpy(), rtol=0, atol=1e-6)
    assert main(["encode", str(spatial_run.path), str(folder / "a.png"), "-o", str(tmp_path / "a.npy")]) == 0
    assert np.load(tmp_path / "a.npy").shape == (1, 3, 8, 10)
