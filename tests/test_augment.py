"""Training aids for photos: random crops and flips (--crop, --flip), KL warm-up and free bits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import aekit
from aekit.cli.main import main
from aekit.core.config import preset
from aekit.core.latent import DiagonalGaussian
from aekit.core.objectives import beta_kl
from aekit.evaluation import load_run_splits
from aekit.training.augment import random_crops_and_flips

QUIET = {"progress": False, "log": None}


def _windows(x: torch.Tensor, crop: int) -> dict[bytes, tuple[int, int, bool]]:
    """Every crop x crop window of a (C, H, W) image and of its mirror image, by content."""
    _, h, w = x.shape
    out = {}
    for flipped, image in ((False, x), (True, x.flip(-1))):
        for top in range(h - crop + 1):
            for left in range(w - crop + 1):
                out[image[:, top:top + crop, left:left + crop].numpy().tobytes()] = (top, left, flipped)
    return out


def test_random_crops_are_windows_of_their_image_and_flips_mirror_them():
    x = torch.arange(4 * 2 * 7 * 9, dtype=torch.int32).reshape(4, 2, 7, 9)  # every value distinct
    generator = torch.Generator().manual_seed(0)
    seen = []
    for _ in range(60):
        patches = random_crops_and_flips(x, 4, True, generator)
        assert patches.shape == (4, 2, 4, 4)
        for image, patch in zip(x, patches):
            seen.append(_windows(image, 4)[patch.numpy().tobytes()])  # KeyError: not a window
    tops, lefts, flips = zip(*seen)
    assert set(tops) == set(range(4)) and set(lefts) == set(range(6))  # every position can be drawn
    assert 0.35 < np.mean(flips) < 0.65
    unflipped = random_crops_and_flips(x, 4, False, torch.Generator().manual_seed(1))
    assert not any(_windows(i, 4)[p.numpy().tobytes()][2] for i, p in zip(x, unflipped))
    mirrored = random_crops_and_flips(x, 0, True, torch.Generator().manual_seed(1))  # whole images, some mirrored
    assert all(torch.equal(m, i) or torch.equal(m, i.flip(-1)) for m, i in zip(mirrored, x))


def test_processes_keep_their_rows_of_the_global_draw():
    x = torch.randint(0, 255, (8, 1, 10, 10), dtype=torch.uint8)
    whole = random_crops_and_flips(x, 5, True, torch.Generator().manual_seed(3))
    for rank in range(2):
        part = random_crops_and_flips(x[rank::2], 5, True, torch.Generator().manual_seed(3), global_batch=8,
                                      rows=lambda t, r=rank: t[r::2])
        assert torch.equal(part, whole[rank::2])


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    path = tmp_path_factory.mktemp("photos") / "photos.npy"
    rng = np.random.default_rng(0)
    smooth = rng.integers(0, 255, (48, 3, 6, 6)).repeat(4, 2).repeat(4, 3)  # 24 x 24 images of 4 x 4 blocks
    np.save(path, smooth.astype(np.uint8))
    return path


def test_a_crop_training_resumes_exactly_and_is_evaluated_on_centre_crops(photos, tmp_path):
    options = dict(arch="resnet", hidden=(8, 16), latent_dim=6, data=str(photos), crop=16, flip=True,
                   batch_size=8, likelihood="gaussian", **QUIET)
    whole = aekit.train("ae", out=tmp_path / "whole", epochs=2, **options)
    one_epoch = aekit.train("ae", out=tmp_path / "part", epochs=1, **options)
    flipless = aekit.train("ae", out=tmp_path / "flipless", epochs=1, **{**options, "flip": False})
    assert any(not torch.equal(a, b) for a, b in zip(one_epoch.model.parameters(), flipless.model.parameters()))
    resumed = aekit.train(out=tmp_path / "part", resume=True, epochs=2, **QUIET)
    assert whole.config.model.image_shape == (3, 16, 16)
    for (name, a), (_, b) in zip(whole.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    splits = load_run_splits(whole, progress=False)
    full = np.load(photos)
    assert splits.test.shape == (3, 16, 16)
    centres = {im[:, 4:20, 4:20].tobytes() for im in full}
    assert all(im.numpy().tobytes() in centres for im in splits.test.images)
    metrics = aekit.evaluate(whole, splits, iw_samples=1)
    assert np.isfinite(metrics["reconstruction"]["psnr_db"])


def test_a_crop_larger_than_the_images_is_one_clear_error(photos, tmp_path):
    with pytest.raises(aekit.AekitError, match="--crop 30 is larger than the 24x24 images"):
        aekit.train("ae", arch="resnet", hidden=(8, 16), data=str(photos), crop=30, epochs=1,
                    out=tmp_path / "r", **QUIET)
    assert not (tmp_path / "r" / "config.json").exists()


def test_flip_switches_on_the_command_line(photos, tmp_path, capsys):
    for flag, expected in (("--flip", True), ("--no-flip", False)):
        out = tmp_path / flag
        code = main(["train", "--model", "ae", "--arch", "resnet", "--hidden", "8,16", "--data", str(photos),
                     "--epochs", "1", "--crop", "16", flag, "--quiet", "--out", str(out)])
        assert code in (0, None)
        assert aekit.load(out).config.data.flip is expected


def _posterior(mean, logvar):
    return DiagonalGaussian(mean, logvar)


def test_kl_warm_up_scales_the_kl_term_and_free_bits_floor_each_unit():
    config = preset("vae", beta=2.0).objective
    mean = torch.tensor([[0.1, 2.0], [0.3, -2.0]], requires_grad=True)
    posterior = _posterior(mean, torch.zeros(2, 2))
    kl = posterior.kl().mean()
    assert torch.allclose(beta_kl(posterior, {}, config), 2.0 * kl)
    assert torch.allclose(beta_kl(posterior, {"kl_weight": torch.tensor(0.25)}, config), 0.5 * kl)
    assert beta_kl(posterior, {"kl_weight": torch.tensor(0.0)}, config) == 0

    free = preset("vae", free_bits=0.5).objective
    per_unit = posterior.kl_per_dim().mean(0)  # unit 0 ~0.025 nats (under the floor), unit 1 2.0 nats (over)
    assert per_unit[0] < 0.5 < per_unit[1]
    cost = beta_kl(posterior, {}, free)
    assert torch.allclose(cost, 0.5 + per_unit[1])
    cost.backward()
    assert torch.all(mean.grad[:, 0] == 0) and torch.all(mean.grad[:, 1] != 0)  # a unit under its floor is free


def test_kl_warm_up_changes_a_training_and_free_bits_exclude_the_iw_bound(photos, tmp_path):
    options = dict(arch="resnet", hidden=(8, 16), latent_dim=4, data=str(photos), batch_size=8, epochs=1, **QUIET)
    plain = aekit.train("vae", out=tmp_path / "plain", **options)
    warm = aekit.train("vae", out=tmp_path / "warm", kl_warmup=100, **options)
    assert warm.history[0]["train_loss"] < plain.history[0]["train_loss"]  # the KL costs little at first
    with pytest.raises(aekit.AekitError, match="free_bits shapes the ELBO"):
        preset("vae", free_bits=0.1, importance_samples=5)
