"""The learned codec: the entropy latent (noise in training, rounding at test, a learned density per channel),
its integer tables, ``.aek`` files that decode bit-exactly in another process, and hostile files."""

from __future__ import annotations

import dataclasses
import math
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import aekit
from aekit import codec
from aekit.cli import main
from aekit.core.config import preset
from aekit.core.entropy import SCALE_MIN, SCALES, FactorizedDensity, HyperCode, HyperpriorHead, integer_frequencies
from aekit.core.model import Autoencoder
from aekit.core.objectives import loss_with_noise
from aekit.errors import AekitError

QUIET = {"progress": False, "log": None}


def smooth_photos(n: int, size: int, seed: int = 0) -> np.ndarray:
    """uint8 (n, 3, size, size) images of 8x8 blocks with a gradient: structure a tiny model can learn."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(40, 215, (n, 3, -(-size // 8), -(-size // 8))).repeat(8, 2).repeat(8, 3)[..., :size, :size]
    ramp = np.linspace(-30, 30, size)[None, None, None, :]
    return np.clip(blocks + ramp, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    path = tmp_path_factory.mktemp("codec") / "photos.npy"
    np.save(path, smooth_photos(48, 32))
    return path


def train_codec(out, photos, lmbda=0.01, epochs=20, latent="entropy", **options):
    settings = {"latent_channels": 4, "lr": 1e-2, **options}
    return aekit.train("ae", out=out, arch="resnet", hidden=(8, 16), latent=latent, likelihood="gaussian",
                       lmbda=lmbda, data=str(photos), batch_size=8, epochs=epochs, **settings, **QUIET)


@pytest.fixture(scope="module")
def run(photos, tmp_path_factory):
    return train_codec(tmp_path_factory.mktemp("run") / "codec", photos)


@pytest.fixture(scope="module")
def hyper_run(photos, tmp_path_factory):
    return train_codec(tmp_path_factory.mktemp("run") / "hyper", photos, latent="hyperprior")


@pytest.fixture(params=["entropy", "hyperprior"])
def any_run(request):
    return request.getfixturevalue("run" if request.param == "entropy" else "hyper_run")


def test_the_density_is_a_distribution_over_the_integers():
    density = FactorizedDensity(3)
    with torch.no_grad():
        density.biases[0].add_(torch.tensor([0.0, 2.0, -3.0])[:, None, None])  # three different densities
    grid = torch.arange(-2000, 2001, dtype=torch.float32)[None, None, :, None].expand(1, 3, -1, 1)
    mass = density.log_likelihood(grid).exp().sum(2).flatten()  # (3,)
    torch.testing.assert_close(mass, torch.ones(3), atol=1e-4, rtol=0)
    density.update_tables()
    assert torch.equal(density.table.sum(1), torch.full((3,), 1 << 16, dtype=torch.int64))
    for c in range(3):  # the table follows the density: its most frequent integer is the most probable one
        n, offset = int(density.table_length[c]), int(density.table_offset[c])
        probable = int(grid[0, c, density.log_likelihood(grid)[0, c, :, 0].argmax(), 0])
        assert int(density.table[c, :n].argmax()) + offset == probable


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1, allow_subnormal=False), min_size=1, max_size=300))  # aekit flushes denormals
def test_integer_frequencies_are_positive_and_sum_to_two_to_the_sixteen(pmf):
    freq = integer_frequencies(torch.tensor(pmf, dtype=torch.float64))
    assert int(freq.sum()) == 1 << 16 and int(freq.min()) >= 1 and len(freq) == len(pmf)


def test_training_trades_rate_for_distortion(photos, tmp_path, run):
    """A larger lambda buys a sharper image with more bits; the test loss is measured on rounded codes."""
    cheap = train_codec(tmp_path / "cheap", photos, lmbda=0.0005)
    image = torch.from_numpy(smooth_photos(1, 32, seed=7)[0])
    rates, quality = [], []
    for r in (cheap, run):
        data, decoded = codec.compress(r.model, image, decoded=True)
        rates.append(codec.bits_per_pixel(data))
        quality.append(float(-(decoded.float() - image.float()).pow(2).mean()))
    assert rates[0] < rates[1] and quality[0] < quality[1]
    assert run.history[-1]["test_loss"] < run.history[0]["test_loss"]


def test_lmbda_is_the_compressai_loss():
    """lambda 255^2 MSE + bits per pixel, times pixels x ln 2: the recon term is lambda 255^2 ln2 SSE / C."""
    cfg = preset("ae", arch="resnet", hidden=(8, 16), latent_channels=4, latent="entropy", likelihood="gaussian",
                 lmbda=0.01)
    cfg.model = dataclasses.replace(cfg.model, channels=3, height=16, width=16)
    model = Autoencoder(cfg.model).eval()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    terms = loss_with_noise(model, x, {}, cfg.objective)  # no uniform noise: the rounded code, as reconstruct
    mse = (model.reconstruct(x) - x).pow(2).mean((1, 2, 3))
    expected = 0.01 * 255**2 * mse * 16 * 16 * np.log(2)
    torch.testing.assert_close(terms["recon"], expected.mean(), rtol=1e-4, atol=1e-3)
    with pytest.raises(AekitError, match="needs --likelihood gaussian"):
        preset("ae", latent="entropy", latent_channels=4, arch="resnet", likelihood="bernoulli", lmbda=0.01)
    with pytest.raises(AekitError, match="spatial code"):
        preset("ae", latent="entropy", latent_dim=8)


def test_the_ms_ssim_distortion_is_lambda_times_one_minus_ms_ssim_per_pixel_and_trains():
    """--distortion ms-ssim: lambda (1 - MS-SSIM) + bits per pixel (CompressAI's MS-SSIM loss), in nats per image;
    its gradient is finite where a term of MS-SSIM is clamped (the floor), and a step lowers it."""
    from aekit.metrics.rd import ms_ssim

    cfg = preset("ae", arch="gdn", hidden=(4, 8), latent_channels=4, latent="entropy", likelihood="gaussian",
                 lmbda=2.0, distortion="ms-ssim")
    cfg.model = dataclasses.replace(cfg.model, channels=3, height=176, width=176)
    torch.manual_seed(0)
    model = Autoencoder(cfg.model).eval()
    x = torch.rand(2, 3, 176, 176, generator=torch.Generator().manual_seed(0))
    terms = loss_with_noise(model, x, {}, cfg.objective)
    expected = 2.0 * 176 * 176 * np.log(2) * (1 - ms_ssim(model.reconstruct(x), x))
    torch.testing.assert_close(terms["recon"], expected.float().mean(), rtol=1e-4, atol=1e-2)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = loss_with_noise(model, x, {}, cfg.objective)["recon"]
    before.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    optimizer.step()
    assert loss_with_noise(model, x, {}, cfg.objective)["recon"] < before
    with pytest.raises(AekitError, match="needs --lmbda"):
        preset("ae", arch="gdn", latent_channels=4, latent="entropy", likelihood="gaussian", distortion="ms-ssim")
    small = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, height=64, width=64))
    with pytest.raises(AekitError, match="at least 161 pixels"):
        loss_with_noise(Autoencoder(small.model), x[..., :64, :64], {}, cfg.objective)


def test_compress_and_decompress_on_the_cli(any_run, tmp_path, capsys):
    run = any_run
    photo = smooth_photos(1, 40, seed=3)[0]
    Image.fromarray(photo[:, 3:, :].transpose(1, 2, 0)).save(tmp_path / "odd.png")  # 37 x 40: not a multiple of f
    assert main(["compress", str(run.path), str(tmp_path / "odd.png"), "-o", str(tmp_path / "odd.aek")]) == 0
    summary = dict(line.split(maxsplit=1) for line in capsys.readouterr().out.splitlines())
    data = (tmp_path / "odd.aek").read_bytes()
    assert int(summary["bytes"]) == len(data)
    assert float(summary["bits_per_pixel"]) == pytest.approx(8 * len(data) / (37 * 40), rel=1e-3)
    assert main(["decompress", str(run.path), str(tmp_path / "odd.aek"), "-o", str(tmp_path / "back.png")]) == 0
    back = np.asarray(Image.open(tmp_path / "back.png"))
    _, decoded = codec.compress(aekit.load(run.path).model, torch.from_numpy(photo[:, 3:, :].copy()), decoded=True)
    assert back.shape == (37, 40, 3) and np.array_equal(back, decoded.permute(1, 2, 0).numpy())
    psnr = 10 * np.log10(255**2 / np.mean((back.astype(float) - photo[:, 3:, :].transpose(1, 2, 0)) ** 2))
    assert float(summary["psnr_db"]) == pytest.approx(psnr, rel=1e-3)


ENCODE = """
import sys, torch, numpy as np
torch.set_num_threads(2)
import aekit
from aekit import codec
for run, path in zip(sys.argv[1::2], sys.argv[2::2]):
    model = aekit.load(run).model
    data, decoded = codec.compress(model, torch.from_numpy(np.load(path + ".src.npy")), decoded=True)
    open(path, "wb").write(data)
    np.save(path + ".promised.npy", decoded.numpy())
"""
DECODE = """
import sys, torch, numpy as np
torch.set_num_threads(1)
import aekit
from aekit import codec
for run, path in zip(sys.argv[1::2], sys.argv[2::2]):
    np.save(path + ".npy", codec.decompress(aekit.load(run).model, open(path, "rb").read()).numpy())
"""


def test_a_file_decodes_bit_exactly_in_other_processes_with_other_thread_counts(run, hyper_run, tmp_path):
    """Written by a process with 2 threads, decoded by one with 1 and by this one: the same pixels, those the
    encoder promised (both latents: the hyperprior's scales come from a network)."""
    image = smooth_photos(1, 96, seed=11)[0]
    jobs = []
    for r in (run, hyper_run):
        path = tmp_path / f"{r.config.model.latent}.aek"
        np.save(str(path) + ".src.npy", image)
        jobs += [str(r.path), str(path)]
    subprocess.run([sys.executable, "-c", ENCODE, *jobs], check=True)
    subprocess.run([sys.executable, "-c", DECODE, *jobs], check=True)
    for r, path in zip((run, hyper_run), jobs[1::2]):
        promised = np.load(path + ".promised.npy")
        assert np.array_equal(np.load(path + ".npy"), promised)
        assert np.array_equal(codec.decompress(aekit.load(r.path).model, Path(path).read_bytes()).numpy(), promised)


def _with_header(data: bytes, **fields) -> bytes:
    """``data`` with header fields replaced, the checksum recomputed (so only the field is wrong)."""
    names = ("magic", "version", "model_id", "channels", "height", "width", "words", "checksum")
    values = dict(zip(names, codec.HEADER.unpack_from(data)))
    values.update(fields)
    payload = data[codec.HEADER.size:]
    values["checksum"] = zlib.crc32(payload)
    return codec.HEADER.pack(*values.values()) + payload


@pytest.mark.parametrize("name, damage, message", [
    ("truncated", lambda d: d[: len(d) - 5], "truncated"),
    ("header only", lambda d: d[:10], "shorter than"),
    ("flipped bit", lambda d: d[:-3] + bytes([d[-3] ^ 4]) + d[-2:], "checksum"),
    ("not aek", lambda d: b"PNG" + d[3:], "signature"),
    ("future version", lambda d: _with_header(d, version=9), "version 9"),
    ("huge image", lambda d: _with_header(d, height=60000, width=60000), "decoding a 60000x60000 image"),
    ("zero size", lambda d: _with_header(d, height=0), "declares"),
    ("other model", lambda d: _with_header(d, model_id=b"12345678"), "another model"),
    ("grey", lambda d: _with_header(d, channels=1), "1-channel"),
])
def test_hostile_files_are_one_line_and_exit_2_and_never_overwrite(run, tmp_path, capsys, name, damage, message):
    image = torch.from_numpy(smooth_photos(1, 32, seed=5)[0])
    bad = tmp_path / "bad.aek"
    bad.write_bytes(damage(codec.compress(run.model, image)))
    out = tmp_path / "out.png"
    out.write_bytes(b"kept")
    assert main(["decompress", str(run.path), str(bad), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and err.startswith("aekit: error:")
    assert out.read_bytes() == b"kept"


def test_the_hyperprior_codes_each_element_with_its_scale(hyper_run):
    """The side code gives each element of y a scale; the integer synthesis picks the table the float one would
    (all but elements on a threshold), and the rate it codes with is close to the rate trained on."""
    model = hyper_run.model.eval()
    image = torch.from_numpy(smooth_photos(1, 64, seed=9)[0])
    with torch.no_grad():
        posterior = model.encode(model.prepare(image[None]))
        y, side, rate = posterior.mode(), posterior.side, float(posterior.kl()[0]) / np.log(2)
        scales = model.head.log_scales(side, y.shape[-2:]).exp().clamp_min(SCALE_MIN)
    expected = torch.searchsorted(SCALES.float(), scales.contiguous()).clamp_max(len(SCALES) - 1)
    indexes = model.head.scale_indexes(side, y.shape[-2:])
    assert (indexes == expected).float().mean() > 0.95 and indexes.unique().numel() > 1
    data = codec.compress(model, image)
    coded_bits = 8 * (len(data) - codec.HEADER.size)
    assert abs(coded_bits - rate) < 0.15 * coded_bits + 64


def test_a_model_without_a_quantized_code_refuses_in_one_line(tmp_path, photos, capsys):
    plain = aekit.train("ae", out=tmp_path / "plain", arch="resnet", hidden=(8, 16), latent_channels=4,
                        likelihood="gaussian", data=str(photos), epochs=1, batch_size=8, **QUIET)
    assert main(["compress", str(plain.path), str(photos), "-o", str(tmp_path / "c")]) == 2
    assert "--latent entropy or hyperprior" in capsys.readouterr().err
    header = struct.pack("<3sB", b"AEK", 1)
    with pytest.raises(AekitError, match="shorter than"):
        codec.read_header(header)

def test_a_factorized_codec_starts_a_hyperprior_one_whose_side_networks_start_fresh(run, photos, tmp_path):
    """``init_from`` a factorized run into a hyperprior one: the transforms come across unchanged (a vanishing
    learning rate keeps them), the side networks are a fresh run's but for the scales' start, and the first epoch
    already reconstructs as the source does; any other change of settings is refused."""
    still = {"lr": 1e-12, "epochs": 1}
    tuned = train_codec(tmp_path / "tuned", photos, latent="hyperprior", init_from=run.path, **still)
    fresh = train_codec(tmp_path / "fresh", photos, latent="hyperprior", **still)
    source, tuned_state, fresh_state = (r.model.state_dict() for r in (run, tuned, fresh))
    side = [k for k in tuned_state if k.startswith(("head.analysis.", "head.synthesis."))]
    assert side and all(k not in source for k in side)
    started = "head.synthesis.2.bias"  # the scales' start, from the codes of training images; the rest as fresh
    for name in side:
        if name != started:
            torch.testing.assert_close(tuned_state[name], fresh_state[name], rtol=0, atol=1e-6, msg=name)
    assert not torch.allclose(tuned_state[started], fresh_state[started])
    for name, value in source.items():
        if not name.startswith("head.density."):
            torch.testing.assert_close(tuned_state[name], value.float(), rtol=0, atol=1e-3, msg=name)
    recon = {r: aekit.load(r).history[0]["test_recon"] for r in (tmp_path / "tuned", tmp_path / "fresh")}
    assert recon[tmp_path / "tuned"] == pytest.approx(run.history[-1]["test_recon"], rel=0.05)
    assert recon[tmp_path / "tuned"] < 0.5 * recon[tmp_path / "fresh"]
    with pytest.raises(AekitError, match=r"same model settings: latent \(this run: 'entropy'"):
        train_codec(tmp_path / "back", photos, init_from=tmp_path / "tuned", **still)
    with pytest.raises(AekitError, match=r"latent_channels \(this run: 8"):
        train_codec(tmp_path / "wider", photos, latent="hyperprior", latent_channels=8, init_from=run.path, **still)


def test_fresh_side_networks_start_at_the_rate_of_a_gaussian_per_channel():
    """On codes whose channels have very different spreads (some unused, as in a trained codec), the started head
    codes y at about the rate of a zero-mean Gaussian per channel of that channel's RMS, and z nearly free; the
    default start (scales near 1, z's density over +-10) costs several times more."""
    torch.manual_seed(0)
    stds = torch.tensor([0.0, 0.05, 0.3, 2.0, 8.0, 20.0])
    y = torch.randn(8, len(stds), 16, 16) * stds[:, None, None]
    head = HyperpriorHead(feature_dim=4, channels=len(stds), side=4)

    @torch.no_grad()
    def bits(head) -> float:
        return float(HyperCode(y, head).kl().sum()) / math.log(2)

    before = bits(head)
    head.start_from_codes(y)
    after = bits(head)
    rms = torch.round(y).pow(2).mean((0, 2, 3)).sqrt().clamp_min(SCALE_MIN)
    n = torch.arange(-200, 201, dtype=torch.float64)
    pmf = torch.special.ndtr((n + 0.5) / rms[:, None].double()) - torch.special.ndtr((n - 0.5) / rms[:, None].double())
    entropy = float(-(pmf * pmf.clamp_min(1e-300).log2()).sum()) * y[:, 0].numel()
    assert 0.95 * entropy < after < 1.1 * entropy + 0.02 * y.numel()
    assert before > 2 * after


def _file_loss(data: bytes, decoded: torch.Tensor, image: torch.Tensor, lmbda: float) -> float:
    """What the codec trades: bits per pixel of the file plus lambda x the squared error (pixels in 0..255)."""
    return 8 * len(data) / image[0].numel() + lmbda * float((decoded.float() - image.float()).pow(2).mean())


def test_refining_the_code_lowers_the_files_loss_and_the_file_decodes_as_any_other(any_run):
    """``refine`` optimizes one image's code (the decoder and tables fixed): the file's own bits plus lambda x MSE
    fall below the encoder's code's, the file decodes to the promised pixels, and the model is left as it was."""
    from aekit.core.refine import refine_code

    model, objective = any_run.model, any_run.config.objective
    image = torch.from_numpy(smooth_photos(1, 48, seed=5)[0])
    ident, flags = codec.model_id(model), [p.requires_grad for p in model.parameters()]
    plain, plain_decoded = codec.compress(model, image, decoded=True)
    refined, promised = codec.compress(model, image, decoded=True, refine=40, objective=objective)
    lmbda = objective.lmbda
    assert _file_loss(refined, promised, image, lmbda) < 0.97 * _file_loss(plain, plain_decoded, image, lmbda)
    assert torch.equal(codec.decompress(model, refined), promised)
    assert codec.model_id(model) == ident and [p.requires_grad for p in model.parameters()] == flags
    y, _, info = refine_code(model, model.prepare(image[None]), objective, 0)  # no step: the encoder's own code
    assert torch.equal(torch.round(y), model.encode(model.prepare(image[None])).mode())
    assert info["step"] == 0 and info["loss"] == info["loss_start"]


def test_compress_refine_on_the_cli_and_its_bad_values(run, tmp_path, capsys):
    photo = smooth_photos(1, 40, seed=4)[0]
    Image.fromarray(photo.transpose(1, 2, 0)).save(tmp_path / "p.png")
    results = {}
    for steps in ("0", "30"):
        assert main(["compress", str(run.path), str(tmp_path / "p.png"), "-o", str(tmp_path / f"{steps}.aek"),
                     "--refine", steps]) == 0
        results[steps] = dict(line.split(maxsplit=1) for line in capsys.readouterr().out.splitlines())
    loss = {k: float(v["bits_per_pixel"]) + run.config.objective.lmbda * 255**2 * 10 ** (-float(v["psnr_db"]) / 10)
            for k, v in results.items()}
    assert loss["30"] < loss["0"]
    assert main(["decompress", str(run.path), str(tmp_path / "30.aek"), "-o", str(tmp_path / "back.png")]) == 0
    capsys.readouterr()
    for bad in ("-1", "x", "1e9"):
        assert main(["compress", str(run.path), str(tmp_path / "p.png"), "-o", str(tmp_path / "b.aek"),
                     "--refine", bad]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "b.aek").exists()


def test_soft_rounding_lies_between_floor_and_ceiling_and_hardens_into_rounding():
    from aekit.core.refine import soft_round

    v = torch.randn(2000, generator=torch.Generator().manual_seed(0)) * 3
    warm = soft_round(v, 0.5, torch.Generator().manual_seed(1))
    assert bool(((warm >= v.floor()) & (warm <= v.floor() + 1)).all())
    assert 0.05 < float((warm - torch.round(warm)).abs().mean()) < 0.45  # soft: between the integers
    cold = soft_round(v, 1e-4, torch.Generator().manual_seed(1))
    assert float((cold - torch.round(v)).abs().lt(1e-3).float().mean()) > 0.99  # hard: the nearest integer
    v.requires_grad_()
    soft_round(v, 0.5, torch.Generator().manual_seed(1)).sum().backward()
    assert v.grad is not None and bool(v.grad.abs().gt(0).any())
