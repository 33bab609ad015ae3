"""Every CLI verb end to end on mnist-5k, and every kind of bad input: one line, exit 2."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from aekit.cli import main

TINY = ["--hidden", "64", "--latent-dim", "8", "--epochs", "1", "--batch-size", "256", "--quiet"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, pattern=None):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("aekit") and "error" in lines[0] and "Traceback" not in err
    if pattern:
        assert pattern in lines[0], lines[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One tiny trained run per family."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for family in ("ae", "dae", "sae", "vae"):
        arch = "conv" if family == "dae" else "mlp"
        extra = ["--hidden", "8,16", "--batch-size", "64"] if arch == "conv" else []
        code = main(["train", "--model", family, "--arch", arch, *TINY, *extra, "--out", str(root / family)])
        assert code == 0
        out[family] = root / family
    return out


def test_train_prints_its_run_folder_and_writes_a_run(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "train", "--model", "vae", *TINY)
    assert code == 0
    assert out.strip() == "run folder: runs/vae-mlp-mnist-5k-1"
    run_dir = tmp_path / "runs" / "vae-mlp-mnist-5k-1"
    assert {p.name for p in run_dir.iterdir()} >= {"config.json", "model.safetensors", "state.safetensors", "metrics.jsonl"}
    config = json.loads((run_dir / "config.json").read_text())
    assert config["format"] == "aekit-run" and config["format_version"] == 1
    assert config["model"]["latent_dim"] == 8 and config["model"]["latent"] == "gaussian"
    # a second default run gets a new folder instead of overwriting
    code, out, _ = run(capsys, "train", "--model", "vae", *TINY)
    assert code == 0 and out.strip().endswith("vae-mlp-mnist-5k-2")


def test_train_resume_extends_a_run(capsys, tmp_path):
    assert run(capsys, "train", "--model", "ae", *TINY, "--out", tmp_path / "r")[0] == 0
    code, out, err = run(capsys, "train", "--resume", "--epochs", "2", "--out", tmp_path / "r")
    assert code == 0
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]


def test_info(capsys, runs):
    code, out, _ = run(capsys, "info", runs["sae"])
    assert code == 0
    assert "sae" in out and "sigmoid codes" in out and "sparsity kl" in out and "epoch 1/1" in out


def test_encode_npy_and_npz(capsys, runs, tmp_path):
    code, out, _ = run(capsys, "encode", runs["vae"], "mnist-5k", "-o", tmp_path / "codes.npy")
    assert code == 0
    codes = np.load(tmp_path / "codes.npy")
    assert codes.shape == (1000, 8) and codes.dtype == np.float32
    assert run(capsys, "encode", runs["vae"], "mnist-5k", "--limit", 10, "-o", tmp_path / "c.npz")[0] == 0
    with np.load(tmp_path / "c.npz") as z:
        assert z["codes"].shape == (10, 8) and z["labels"].shape == (10,)
        np.testing.assert_allclose(z["codes"], codes[:10], rtol=1e-5, atol=1e-6)


def test_reconstruct_to_pngs_and_to_npy(capsys, runs, tmp_path):
    code, out, _ = run(capsys, "reconstruct", runs["ae"], "mnist-5k", "--limit", 12, "-o", tmp_path / "rec")
    assert code == 0 and "psnr_db" in out
    files = sorted(p.name for p in (tmp_path / "rec").iterdir())
    assert files == [f"{i:05d}.png" for i in range(12)] + ["grid.png"]
    assert Image.open(tmp_path / "rec" / "00000.png").size == (28, 28)
    assert run(capsys, "reconstruct", runs["ae"], "mnist-5k", "--limit", 12, "-o", tmp_path / "rec.npy")[0] == 0
    array = np.load(tmp_path / "rec.npy")
    assert array.shape == (12, 1, 28, 28) and 0 <= array.min() and array.max() <= 1
    png = np.asarray(Image.open(tmp_path / "rec" / "00003.png"), dtype=np.float32) / 255
    np.testing.assert_allclose(png, array[3, 0], atol=1 / 255 + 1e-6)  # same images, input order


def test_reconstruct_a_single_image_file_and_a_folder(capsys, runs, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):  # RGB 40x40 inputs are converted to the model's 1x28x28
        Image.fromarray(np.full((40, 40, 3), 60 * i, np.uint8)).save(folder / f"{i}.png")
    assert run(capsys, "reconstruct", runs["vae"], folder / "1.png", "-o", tmp_path / "one.npy")[0] == 0
    assert np.load(tmp_path / "one.npy").shape == (1, 1, 28, 28)
    assert run(capsys, "reconstruct", runs["vae"], folder, "-o", tmp_path / "three.npy")[0] == 0
    assert np.load(tmp_path / "three.npy").shape == (3, 1, 28, 28)


def test_denoise_writes_clean_noisy_denoised_side_by_side(capsys, runs, tmp_path):
    code, out, _ = run(capsys, "denoise", runs["dae"], "mnist-5k", "--noise-std", "0.5", "--limit", 5, "-o", tmp_path / "dn")
    assert code == 0
    values = dict(line.split(None, 1) for line in out.strip().splitlines())
    assert float(values["noise_std"]) == 0.5
    assert float(values["psnr_denoised_db"]) > float(values["psnr_noisy_db"])  # even one epoch of DAE denoises
    assert Image.open(tmp_path / "dn" / "00000.png").size == (3 * 28 + 4, 28 + 2)
    assert (tmp_path / "dn" / "grid.png").exists()
    # Without --noise-std the images are taken as noisy already: denoised as they are, their noise estimated.
    code, out, _ = run(capsys, "denoise", runs["dae"], "mnist-5k", "--limit", 5, "-o", tmp_path / "dn.npy")
    assert code == 0 and "estimated_noise_std" in out and "psnr_noisy_db" not in out
    assert run(capsys, "reconstruct", runs["dae"], "mnist-5k", "--limit", 5, "-o", tmp_path / "rc.npy")[0] == 0
    np.testing.assert_array_equal(np.load(tmp_path / "dn.npy"), np.load(tmp_path / "rc.npy"))


def test_sample_from_the_prior_and_from_fitted_codes(capsys, runs, tmp_path):
    code, out, _ = run(capsys, "sample", runs["vae"], "-n", 16, "-o", tmp_path / "s.png")
    assert code == 0 and "prior N(0, I)" in out
    assert Image.open(tmp_path / "s.png").size == (2 * (4 * 30 + 2),) * 2
    code, out, _ = run(capsys, "sample", runs["ae"], "-n", 7, "-o", tmp_path / "s.npy")
    assert code == 0 and "fitted to the training codes" in out
    assert np.load(tmp_path / "s.npy").shape == (7, 1, 28, 28)
    # a VAE's samples from a Gaussian fitted to its posterior means on its run's training images: other images
    code, out, _ = run(capsys, "sample", runs["vae"], "-n", 7, "--source", "codes", "-o", tmp_path / "c.npy")
    assert code == 0 and "fitted to the posterior means of 4,000 training images" in out
    assert run(capsys, "sample", runs["vae"], "-n", 7, "-o", tmp_path / "p.npy")[0] == 0
    codes, prior = np.load(tmp_path / "c.npy"), np.load(tmp_path / "p.npy")
    assert codes.shape == prior.shape == (7, 1, 28, 28) and np.abs(codes - prior).max() > 0.05
    code, _, err = run(capsys, "sample", runs["ae"], "-n", 7, "--source", "prior", "-o", tmp_path / "x.npy")
    assert_one_line_error(code, err, "no prior")
    assert not (tmp_path / "x.npy").exists()


def test_sample_from_a_mixture_fitted_to_the_training_codes(capsys, runs, tmp_path):
    code, out, _ = run(capsys, "sample", runs["ae"], "-n", 7, "--components", 3, "-o", tmp_path / "m.npy")
    assert code == 0 and "a mixture of 3 Gaussians fitted to the codes of 4,000 training images" in out
    mixed = np.load(tmp_path / "m.npy")
    assert mixed.shape == (7, 1, 28, 28) and mixed.min() >= 0 and mixed.max() <= 1
    assert run(capsys, "sample", runs["ae"], "-n", 7, "--components", 3, "-o", tmp_path / "again.npy")[0] == 0
    np.testing.assert_array_equal(np.load(tmp_path / "again.npy"), mixed)  # the fit and the draws are seeded
    assert run(capsys, "sample", runs["ae"], "-n", 7, "-o", tmp_path / "one.npy")[0] == 0
    assert np.abs(np.load(tmp_path / "one.npy") - mixed).max() > 0.05  # not the one Gaussian's draws
    code, out, _ = run(capsys, "sample", runs["vae"], "-n", 4, "--components", 2, "-o", tmp_path / "v.npy")
    assert code == 0 and "mixture of 2 Gaussians fitted to the posterior means of 4,000" in out
    code, _, err = run(capsys, "sample", runs["vae"], "--source", "prior", "--components", 2, "-o", tmp_path / "p.npy")
    assert_one_line_error(code, err, "goes with --source codes")
    code, _, err = run(capsys, "sample", runs["ae"], "--components", 0, "-o", tmp_path / "z.npy")
    assert code == 2 and "--components" in err and "Traceback" not in err
    code, _, err = run(capsys, "sample", runs["ae"], "--components", 5000, "-o", tmp_path / "big.npy")
    assert_one_line_error(code, err, "needs at least 10000 codes")
    assert not any((tmp_path / name).exists() for name in ("p.npy", "z.npy", "big.npy"))


def test_python_dash_m_and_the_console_script_work(tmp_path, runs):
    result = subprocess.run([sys.executable, "-m", "aekit", "info", str(runs["ae"])], capture_output=True, text=True)
    assert result.returncode == 0 and "family      ae" in result.stdout
    result = subprocess.run([sys.executable, "-m", "aekit", "info", str(tmp_path / "nope")], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "argv, pattern",
    [
        (["train", "--model", "gan"], "invalid choice"),
        (["train", "--sparsity", "kl", "--model", "vae"], "sparsity kl needs"),
        (["train", "--data", "no/such/folder"], "no/such/folder"),
        (["train", "--epochs", "0"], "epochs must be >= 1"),
        (["train", "--hidden", "a,b"], "comma-separated integers"),
        (["train", "--noise-std", "-1"], "noise_std must be >= 0"),
        (["train", "--noise-std", "5"], "noise_std must be >= 0 and <= 2 (got 5.0)"),
        (["train", "--lr", "inf"], "lr must be > 0 and <= 10 (got inf)"),
        (["train", "--channels", "2"], "channels must be 1, 3 or 4"),
        (["train", "--likelihood", "laplace"], "invalid choice"),
        (["train", "--model", "dae", "--noise-std-min", "0.8"], "noise_std_min must be in [0, noise_std]"),
        (["train", "--resume"], "--resume needs the run folder"),
        (["train", "--lr-schedule", "step"], "invalid choice"),
        (["train", *TINY, "--init-from", "no/such/run"], "--init-from no/such/run is not a folder"),
        (["train", "--model", "vae", *TINY, "--latent-dim", "4", "--init-from", "RUN"], "same model settings"),
        (["info", "no/such/run"], "not a folder"),
        (["sample", "RUN", "-o", "x.jpg"], ".png"),
        (["sample", "RUN", "-n", "0", "-o", "x.png"], "-n must be >= 1"),
        (["encode", "RUN", "mnist-5k", "-o", "codes.txt"], ".npy"),
        (["reconstruct", "RUN", "missing.png", "-o", "out"], "missing.png"),
        (["denoise", "RUN", "mnist-5k", "--noise-std", "-2", "-o", "x.npy"], "--noise-std must be >= 0 and <= 2"),
        (["bogus"], "invalid choice"),
    ],
)
def test_bad_input_gets_one_line_and_exit_2(capsys, runs, tmp_path, monkeypatch, argv, pattern):
    monkeypatch.chdir(tmp_path)
    argv = [str(runs["ae"]) if a == "RUN" else a for a in argv]
    code, out, err = run(capsys, *argv)
    assert_one_line_error(code, err, pattern)


def test_help_exits_0(capsys):
    code, out, _ = run(capsys, "train", "--help")
    assert code == 0 and "--noise-std" in out and "--sparsity-target" in out
    # the option flags, generated from the config's declarations, come in a group per part
    body = out[out.index("\noptions:"):]  # past the usage lines
    groups = ["data options:", "model options:", "objective options:", "training options:"]
    assert [body.index(g) for g in groups] == sorted(body.index(g) for g in groups)
    assert body.index("--out") < body.index("data options:") < body.index("--image-size") < body.index("model options:")
    flat = " ".join(out.split())
    assert "in [0, 2] (default 0; dae: 0.5)" in flat and "Adam learning rate; in (0, 10] (default 0.001)" in flat


def test_an_existing_run_is_refused_and_left_intact(capsys, runs):
    before = {p.name: p.read_bytes() for p in runs["sae"].iterdir()}
    code, _, err = run(capsys, "train", "--model", "vae", *TINY, "--out", runs["sae"])
    assert_one_line_error(code, err, "already holds a run")
    assert {p.name: p.read_bytes() for p in runs["sae"].iterdir()} == before


def test_wrong_shape_array_input_is_refused(capsys, runs, tmp_path):
    np.save(tmp_path / "bad.npy", np.zeros((2, 3, 4, 5, 6), np.uint8))
    code, _, err = run(capsys, "encode", runs["ae"], tmp_path / "bad.npy", "-o", tmp_path / "c.npy")
    assert_one_line_error(code, err)
    assert not (tmp_path / "c.npy").exists()


def test_truncated_image_is_refused(capsys, runs, tmp_path):
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    code, _, err = run(capsys, "reconstruct", runs["ae"], tmp_path / "cut.png", "-o", tmp_path / "r.npy")
    assert_one_line_error(code, err, "cut.png")


def test_float_0_255_arrays_are_rescaled_with_a_one_line_warning(capsys, runs, tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28)).astype(np.float32)  # 0..255 floats
    np.save(tmp_path / "f.npy", images)
    code, _, err = run(capsys, "reconstruct", runs["ae"], tmp_path / "f.npy", "-o", tmp_path / "r.npy")
    assert code == 0
    assert err.strip().startswith("aekit: warning: ") and "0..255" in err and err.strip().count("\n") == 0
    np.save(tmp_path / "u.npy", images.astype(np.uint8))
    assert run(capsys, "reconstruct", runs["ae"], tmp_path / "u.npy", "-o", tmp_path / "u_r.npy")[0] == 0
    np.testing.assert_array_equal(np.load(tmp_path / "r.npy"), np.load(tmp_path / "u_r.npy"))  # same images


# ----- regressions from the new-user audit -----


def test_channels_option_converts_the_training_data(capsys, tmp_path):
    code, _, _ = run(capsys, "train", "--model", "ae", *TINY, "--channels", "3", "--out", tmp_path / "rgb")
    assert code == 0
    config = json.loads((tmp_path / "rgb" / "config.json").read_text())
    assert config["model"]["channels"] == 3 and config["data"]["channels"] == 3
    code, _, err = run(capsys, "train", "--model", "ae", *TINY, "--channels", "2", "--out", tmp_path / "two")
    assert_one_line_error(code, err, "channels must be 1, 3 or 4")
    assert not (tmp_path / "two").exists()


def test_force_with_bad_data_keeps_the_old_run_and_failed_runs_leave_no_folder(capsys, runs, tmp_path):
    before = {p.name: p.read_bytes() for p in runs["ae"].iterdir()}
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(capsys, "train", "--model", "ae", *TINY, "--data", empty, "--out", runs["ae"], "--force")
    assert_one_line_error(code, err)
    assert {p.name: p.read_bytes() for p in runs["ae"].iterdir()} == before
    code, _, err = run(capsys, "train", *TINY, "--data", empty, "--out", tmp_path / "new")
    assert_one_line_error(code, err)
    assert not (tmp_path / "new").exists()


def test_oversized_image_size_is_refused_before_loading(capsys, tmp_path):
    code, _, err = run(capsys, "train", *TINY, "--image-size", "4000", "--out", tmp_path / "big")
    assert_one_line_error(code, err, "too large")


def test_resume_of_a_finished_run_is_a_no_op_and_fewer_epochs_are_refused(capsys, runs, tmp_path):
    assert run(capsys, "train", "--model", "ae", *TINY, "--epochs", "2", "--out", tmp_path / "r")[0] == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir()}
    code, out, err = run(capsys, "train", "--resume", "--out", tmp_path / "r")
    assert code == 0 and "already trained all 2 epochs" in err and out.strip().endswith(str(tmp_path / "r"))
    code, _, err = run(capsys, "train", "--resume", "--epochs", "1", "--out", tmp_path / "r")
    assert_one_line_error(code, err, "already trained 2 epochs: --epochs 1 would undo them")
    assert {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir()} == before


def test_output_names_that_look_like_files_are_refused(capsys, runs, tmp_path):
    code, _, err = run(capsys, "reconstruct", runs["ae"], "mnist-5k", "--limit", 2, "-o", tmp_path / "out.png")
    assert_one_line_error(code, err, "give a folder")
    assert not (tmp_path / "out.png").exists()


def test_written_files_get_the_usual_permissions(runs):
    import os
    import stat

    mask = os.umask(0)
    os.umask(mask)
    for name in ("config.json", "model.safetensors", "state.safetensors"):
        mode = stat.S_IMODE((runs["vae"] / name).stat().st_mode)
        assert mode == 0o666 & ~mask, (name, oct(mode))


def test_verbs_take_a_data_dir(capsys, runs, tmp_path, shared_data):
    code, out, _ = run(capsys, "encode", runs["ae"], "mnist", "--data-dir", shared_data, "--limit", 5,
                       "-o", tmp_path / "c.npy")
    assert code == 0 and np.load(tmp_path / "c.npy").shape == (5, 8)
