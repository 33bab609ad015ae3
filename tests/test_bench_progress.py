"""The photo benchmarks' helpers: keeping a run part way (bench/runs.py) and the denoising baselines' memo
(bench/denoise.py)."""

import dataclasses
import importlib.util
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _bench(name: str):
    sys.path.insert(0, str(REPO / "bench"))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@dataclasses.dataclass(frozen=True)
class _Spec:
    name: str
    epochs: int


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A scratch folder with a run trained 2 epochs of the 5 its spec plans."""
    import aekit

    root = tmp_path_factory.mktemp("scratch")
    images = torch.randint(0, 256, (40, 1, 8, 8), dtype=torch.uint8)
    splits = aekit.Splits(aekit.ImageSet(images[:32], None, "train"), aekit.ImageSet(images[32:], None, "test"))
    aekit.train("ae", out=root / "tiny", epochs=2, batch_size=8, latent_dim=2, hidden=(8,), splits=splits,
                progress=False, log=None)
    return root


def test_keep_progress_keeps_a_run_part_way_and_leaves_finished_ones(scratch, tmp_path):
    runs = _bench("runs")
    import aekit

    lines = []
    runs.keep_progress([_Spec("tiny", 5)], lines.append, scratch, tmp_path)
    kept = tmp_path / "tiny"
    assert len((kept / "metrics.jsonl").read_text().splitlines()) == 2
    assert aekit.load(kept).epoch == 2 and "epoch 2 of 5" in lines[0]
    assert runs.unfinished(_Spec("tiny", 5), tmp_path)  # still to train: a later run resumes it
    assert not runs.unfinished(_Spec("tiny", 2), tmp_path)
    (kept / "model.safetensors").write_bytes(b"the finished run's weights")
    runs.keep_progress([_Spec("tiny", 2)], lines.append, scratch, tmp_path)  # finished: not touched
    assert (kept / "model.safetensors").read_bytes() == b"the finished run's weights"


def test_keep_progress_waits_for_a_checkpoint_whose_curve_line_is_written(scratch, tmp_path):
    runs = _bench("runs")
    run = tmp_path / "scratch"
    import shutil

    shutil.copytree(scratch / "tiny", run / "tiny")
    now = time.time()
    os.utime(run / "tiny" / "metrics.jsonl", (now - 10, now - 10))
    os.utime(run / "tiny" / "model.safetensors", (now, now))  # weights written, their line not yet
    weights = tmp_path / "weights"

    def line_written():
        time.sleep(1.5)
        os.utime(run / "tiny" / "metrics.jsonl", (now + 1, now + 1))

    writer = threading.Thread(target=line_written)
    writer.start()
    t0 = time.perf_counter()
    runs.keep_progress([_Spec("tiny", 5)], lambda _: None, run, weights)
    writer.join()
    assert time.perf_counter() - t0 >= 1.0 and (weights / "tiny" / "model.safetensors").exists()


def test_a_run_kept_part_way_continues_without_its_scratch_folder(scratch, tmp_path):
    """A later session on a new clone has the kept weights but no scratch folder: the run restarts from them at
    the kept epoch and step (the schedule goes on) and ends with the planned number of epochs."""
    runs = _bench("runs")
    import json

    import aekit

    weights, lost = tmp_path / "weights", tmp_path / "new-clone-scratch"
    import shutil

    shutil.copytree(scratch, tmp_path / "scratch")
    scratch = tmp_path / "scratch"
    (scratch / "tiny" / runs.INIT_FROM).write_text('{"run": "base", "epoch": 7}')  # as a fine-tune records it
    runs.keep_progress([_Spec("tiny", 5)], lambda _: None, scratch, weights)
    assert json.loads((weights / "tiny" / runs.INIT_FROM).read_text()) == {"run": "base", "epoch": 7}
    kept = aekit.load(weights / "tiny")
    lines = []
    runs.restart_from_kept(weights / "tiny", lost / "tiny", "the-data.npz", lines.append)
    assert "epoch 2" in lines[0] and aekit.load(lost / "tiny").config.data.data == "the-data.npz"
    assert (lost / "tiny" / runs.INIT_FROM).read_text() == (weights / "tiny" / runs.INIT_FROM).read_text()
    images = torch.randint(0, 256, (40, 1, 8, 8), dtype=torch.uint8)
    splits = aekit.Splits(aekit.ImageSet(images[:32], None, "train"), aekit.ImageSet(images[32:], None, "test"))
    aekit.train(out=lost / "tiny", resume=True, epochs=5, splits=splits, progress=False, log=None)
    rows = [json.loads(line) for line in (lost / "tiny" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]
    assert [r["step"] for r in rows] == [4, 8, 12, 16, 20]  # 32 images in batches of 8: the steps go on from 8
    done = aekit.load(lost / "tiny")
    assert done.epoch == 5
    start = {k: v.float() for k, v in kept.model.state_dict().items()}
    assert any(not torch.equal(v, start[k]) for k, v in done.model.state_dict().items())  # it trained on
    assert not runs.unfinished(_Spec("tiny", 2), weights)


def test_denoise_baselines_are_memoised_by_noisy_image_and_method(tmp_path):
    denoise = _bench("denoise")
    clean = np.random.default_rng(0).random((16, 16))
    noisy = denoise.noisy_image(clean, 25, 0)
    calls = []

    def blur(x, _sigma):
        calls.append(1)
        return (x + np.roll(x, 1, 0)) / 2

    first, out = denoise.scored("bm3d", blur, noisy, clean, 25, tmp_path)
    again, out_again = denoise.scored("bm3d", blur, noisy, clean, 25, tmp_path)
    assert len(calls) == 1 and first == again and np.allclose(out, out_again, atol=1e-6)
    denoise.scored("nlm", blur, noisy, clean, 25, tmp_path)  # another method: its own entry
    denoise.scored("bm3d", blur, denoise.noisy_image(clean, 25, 1), clean, 25, tmp_path)  # another noisy image
    denoise.scored("aekit", blur, noisy, clean, 25, tmp_path)
    denoise.scored("aekit", blur, noisy, clean, 25, tmp_path)  # the model under test is never memoised
    assert len(calls) == 5 and len(list(tmp_path.glob("*.npz"))) == 3
    assert 0 < first["ssim"] <= 1 and first["psnr"] > 0


def _curve(offset_db: float, rates=(0.1, 0.2, 0.35, 0.6, 1.0)) -> list[dict]:
    """A rate-distortion curve: PSNR = 26.91 + 1.9 log2(bpp / 0.123) + offset (near the published points)."""
    import math

    return [{"bpp": r, "psnr_db": 26.91 + 1.9 * math.log2(r / 0.123) + offset_db, "ms_ssim": 0.9} for r in rates]


@pytest.mark.parametrize("hyper_offset, met", [(-0.3, True), (-0.8, False)])
def test_compression_judges_each_family_against_the_baselines_and_the_anchor(hyper_offset, met):
    compression = _bench("compression")
    factorized = [{**p, "family": "factorized", "run": f"f{i}", "lmbda": 0.01} for i, p in
                  enumerate(_curve(1.0, (0.12, 0.25, 0.45, 0.8)))]
    hyper = [{"bpp": p["bpp"], "psnr_db": p["psnr_db"] + hyper_offset, "ms_ssim": 0.9, "family": "hyperprior",
              "run": f"h{i}", "lmbda": 0.01} for i, p in enumerate(compression.PUBLISHED["points"])]
    baselines = {"jpeg": {"points": [{**p, "quality": 10} for p in _curve(-2.0)]},
                 "webp": {"points": [{**p, "quality": 10} for p in _curve(2.0)]}}
    refined = [{**p, "psnr_db": p["psnr_db"] + 0.5, "family": compression.REFINED, "refine_steps": 50} for p in hyper]
    result = {"aekit": factorized + hyper + refined, "baselines": baselines}
    c = compression.compare(result)
    assert set(c) == {"factorized", "hyperprior", compression.REFINED, "hyperprior_over_factorized"}
    f = c["factorized"]
    assert f["beats_jpeg_up_to_half_bpp"] and f["worst_margin_over_jpeg_db"] == pytest.approx(3.0, abs=0.05)
    assert [m["bpp"] for m in f["margins_over_jpeg_db"]] == [0.12, 0.25, 0.45]  # its points up to 0.5 bpp
    assert [m["margin_db"] for m in f["margins_over_jpeg_db"]] == pytest.approx([3.0] * 3, abs=0.05)
    assert f["bd_rate_vs_jpeg_percent"] < 0 < f["bd_rate_vs_webp_percent"]  # fewer bits than JPEG, more than WebP
    anchor = c["hyperprior"]["anchor"]
    assert anchor["margins_db"] == pytest.approx([hyper_offset] * 3, abs=0.02)
    assert anchor["within_goal"] is met
    assert c[compression.REFINED]["anchor"]["margins_db"] == pytest.approx([hyper_offset + 0.5] * 3, abs=0.02)
    assert c[compression.REFINED]["anchor"]["within_goal"]  # -0.3 and -0.8 dB, refined: +0.2 and -0.3 dB
    for point in factorized + hyper + refined:  # what a trained run adds beside its rate and quality
        point.update(command="aekit train", epochs=1, steps=35, train_seconds=60.0, encode_megapixels_per_second=1.0,
                     decode_megapixels_per_second=1.0)
    result.update(comparison=c, kodak_images=24, date="d", machine="m")
    text = compression.markdown(result)
    assert f"({'met' if met else 'not met'})" in text and "aekit hyperprior | h0" in text
    assert "- h0, each code refined in 50 steps (`aekit compress --refine 50`)" in text
    assert f"aekit {compression.REFINED} against the published points" in text
    only_one = compression.compare({"aekit": factorized + hyper[:1], "baselines": baselines})
    assert set(only_one) == {"factorized", "hyperprior_over_factorized"}  # one point is no curve: not judged as one
    over = only_one["hyperprior_over_factorized"]  # but set against the factorized curve at its rate
    assert [m["bpp"] for m in over] == [0.123] and over[0]["margin_db"] == pytest.approx(hyper_offset - 1.0, abs=0.05)
    result.update(comparison=only_one)
    assert f"{hyper_offset - 1.0:+.2f} dB at 0.123 bpp" in compression.markdown(result)


def test_compression_trains_every_run_after_the_one_it_starts_from():
    compression = _bench("compression")
    order = [spec.name for spec in compression.training_order(reversed(compression.RUNS))]
    assert sorted(order) == sorted(spec.name for spec in compression.RUNS)
    for spec in compression.RUNS:
        if spec.init_from:
            assert order.index(spec.init_from) < order.index(spec.name), spec.name
    hyper = [spec for spec in compression.RUNS if spec.latent == "hyperprior"]
    assert {spec.init_from for spec in hyper} == {compression.NAMES["entropy"].format(compression.BASE),
                                                 compression.NAMES["hyperprior"].format(compression.BASE)}
