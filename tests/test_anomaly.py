"""Anomaly scores and calibrated thresholds: scores that separate other digits from the one trained on, a
threshold that keeps its false-positive rate on held-out normal images, and bad input in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import aekit
from aekit import anomaly
from aekit.cli import main
from aekit.cli.main import SCORE_CHOICES
from aekit.errors import AekitError

QUIET = {"progress": False, "log": None}


@pytest.fixture(scope="module")
def digits():
    splits = aekit.load_dataset("mnist-5k", progress=False)
    return splits.train.images, splits.train.labels, splits.test.images, splits.test.labels


def one_class(path, images, family="ae", **options):
    """Train on the ones alone (the normal class)."""
    np.save(path.parent / f"{path.name}.npy", images.numpy())
    return aekit.train(family, out=path, data=str(path.parent / f"{path.name}.npy"), hidden=(128,), latent_dim=8,
                       epochs=5, batch_size=64, **options, **QUIET)


@pytest.fixture(scope="module")
def runs(digits, tmp_path_factory):
    x, y, _, _ = digits
    ones = x[y == 1][:350]  # the rest of the training ones calibrate
    folder = tmp_path_factory.mktemp("anomaly")
    return {"ae": one_class(folder / "ae", ones, likelihood="gaussian"), "vae": one_class(folder / "vae", ones, "vae")}


@pytest.mark.parametrize("family, kind", [("ae", "mse"), ("ae", "nll"), ("ae", "latent"), ("vae", "elbo"),
                                          ("vae", "iwae"), ("vae", "mse")])
def test_scores_rank_other_digits_above_the_one_trained_on(runs, digits, family, kind):
    _, _, x_test, y_test = digits
    scores = anomaly.score(runs[family], x_test, kind)
    assert scores.shape == (len(x_test),) and np.isfinite(scores).all()
    auroc = roc_auc_score(y_test != 1, scores)  # anomaly = not a one
    assert auroc > (0.9 if kind != "latent" else 0.6), (kind, auroc)


def test_the_default_score_is_the_familys_and_the_cli_choices_are_the_scores(runs):
    assert anomaly.default_score(runs["ae"].model) == "mse" and anomaly.default_score(runs["vae"].model) == "elbo"
    assert SCORE_CHOICES == anomaly.SCORES
    with pytest.raises(AekitError, match="needs a VAE"):
        anomaly.score(runs["ae"], torch.zeros(2, 1, 28, 28, dtype=torch.uint8), "elbo")
    with pytest.raises(AekitError, match="score a VAE with"):
        anomaly.score(runs["vae"], torch.zeros(2, 1, 28, 28, dtype=torch.uint8), "latent")


def test_a_calibrated_threshold_keeps_its_false_positive_rate_on_held_out_normal_images(runs, digits, tmp_path):
    x, y, x_test, y_test = digits
    ones = x[y == 1][350:]  # normal images the model never saw
    half = len(ones) // 2
    record = anomaly.calibrate(runs["ae"], ones[:half], fpr=0.1)
    assert record["flagged"] <= 0.1 * half and record["flagged"] >= 0.1 * half - 2
    held_out = anomaly.decide(anomaly.score(runs["ae"], torch.cat([ones[half:], x_test[y_test == 1]])), record)
    assert abs(held_out.mean() - 0.1) < 0.08
    assert anomaly.decide(anomaly.score(runs["ae"], x_test[y_test != 1]), record).mean() > 0.5


def test_score_and_calibrate_on_the_cli(runs, digits, tmp_path, capsys):
    x, y, x_test, y_test = digits
    run = runs["vae"]
    (run.path / anomaly.CALIBRATION).unlink(missing_ok=True)
    np.save(tmp_path / "normal.npy", x[y == 1][350:].numpy())
    np.save(tmp_path / "test.npy", x_test[:50].numpy())
    assert main(["score", str(run.path), str(tmp_path / "test.npy"), "--decide", "-o", str(tmp_path / "s.csv")]) == 2
    assert "no calibration" in capsys.readouterr().err and not (tmp_path / "s.csv").exists()
    assert main(["calibrate", str(run.path), str(tmp_path / "normal.npy"), "--fpr", "0.05"]) == 0
    stored = json.loads((run.path / anomaly.CALIBRATION).read_text())
    assert stored["score"] == "elbo" and stored["fpr"] == 0.05
    capsys.readouterr()
    assert main(["score", str(run.path), str(tmp_path / "test.npy"), "--decide", "-o", str(tmp_path / "s.csv")]) == 0
    rows = (tmp_path / "s.csv").read_text().splitlines()
    assert rows[0] == "index,score,anomaly" and len(rows) == 51
    scores = np.array([float(r.split(",")[1]) for r in rows[1:]])
    np.testing.assert_allclose(scores, anomaly.score(run, x_test[:50]), rtol=1e-12)
    flagged = np.array([int(r.split(",")[2]) for r in rows[1:]])
    assert np.array_equal(flagged, (scores > stored["threshold"]).astype(int))
    assert main(["score", str(run.path), str(tmp_path / "test.npy"), "--score", "mse", "--decide",
                 "-o", str(tmp_path / "m.csv")]) == 2
    assert "calibrated for the elbo score" in capsys.readouterr().err


def test_bad_input_is_one_line(runs, tmp_path, capsys):
    run = runs["ae"]
    np.save(tmp_path / "big.npy", np.zeros((3, 1, 32, 32), np.uint8))
    assert main(["score", str(run.path), str(tmp_path / "big.npy"), "-o", str(tmp_path / "s.csv")]) == 2
    err = capsys.readouterr().err
    assert "32x32" in err and err.count("\n") == 1
    broken = aekit.load(run.path)
    with torch.no_grad():
        next(broken.model.decoder.parameters()).fill_(float("nan"))
    with pytest.raises(AekitError, match="3 of 3 mse scores are not finite"):  # a model diverged in memory
        anomaly.score(broken, torch.zeros(3, 1, 28, 28, dtype=torch.uint8))
    broken.save(tmp_path / "broken")  # and saved: refused on loading
    np.save(tmp_path / "ok.npy", np.zeros((3, 1, 28, 28), np.uint8))
    assert main(["score", str(tmp_path / "broken"), str(tmp_path / "ok.npy"), "-o", str(tmp_path / "s.csv")]) == 2
    assert "NaN" in capsys.readouterr().err
    anomaly.calibrate(run, torch.zeros(40, 1, 28, 28, dtype=torch.uint8), fpr=0.05)
    retrained = aekit.train(out=run.path, resume=True, epochs=6, **QUIET)
    with pytest.raises(AekitError, match="other weights"):
        anomaly.load_calibration(retrained)
    (run.path / anomaly.CALIBRATION).write_text("{not json")
    assert main(["score", str(run.path), str(tmp_path / "ok.npy"), "-o", str(tmp_path / "s.csv")]) == 2
    assert "cannot be read" in capsys.readouterr().err
    (run.path / anomaly.CALIBRATION).unlink()


def test_the_pixel_map_points_at_the_defect(runs, digits, tmp_path, capsys):
    """A one with a bright square pasted on it: the error map is largest inside the square."""
    _, _, x_test, y_test = digits
    one = x_test[y_test == 1][:1].clone()
    one[0, 0, 2:8, 2:8] = 255
    errors = anomaly.pixel_map(runs["ae"].model, one.float() / 255)[0]  # (28, 28)
    inside, outside = errors[2:8, 2:8].mean(), torch.cat([errors[10:].flatten(), errors[:, 10:].flatten()]).mean()
    assert inside > 5 * outside
    np.save(tmp_path / "defect.npy", torch.cat([one, x_test[y_test == 1][1:3]]).numpy())
    assert main(["score", str(runs["ae"].path), str(tmp_path / "defect.npy"), "-o", str(tmp_path / "s.csv"),
                 "--maps", str(tmp_path / "maps")]) == 0
    from PIL import Image

    first = np.asarray(Image.open(tmp_path / "maps" / "00000.png"))
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == ["00000.png", "00001.png", "00002.png"]
    assert first.ndim == 3 and first.shape[0] > 2.5 * first.shape[1]  # three panels, one above the other, RGB
