import json
import math

import pytest
import torch

import aekit
from aekit import run as ckpt
from aekit.errors import AekitError

FAST = dict(hidden=(64,), latent_dim=8, batch_size=200, progress=False, log=None)


@pytest.fixture(scope="module")
def mnist5k():
    return aekit.load_dataset("mnist-5k")


def test_loss_falls_over_a_few_steps_on_mnist5k(mnist5k, tmp_path):
    for family in ("ae", "dae", "sae", "vae"):
        run = aekit.train(family, out=tmp_path / family, epochs=3, **FAST, splits=mnist5k)
        rows = ckpt.read_jsonl(tmp_path / family / "metrics.jsonl")
        assert [r["epoch"] for r in rows] == [1, 2, 3]
        # 60 steps of a tiny model: every epoch lowers the test loss, and training loses > 5 nats per image
        assert rows[-1]["train_loss"] < rows[0]["train_loss"] - 5, family
        test_losses = [r["test_loss"] for r in rows]
        assert test_losses == sorted(test_losses, reverse=True) and len(set(test_losses)) == 3, family
        assert all(r["epoch_seconds"] > 0 for r in rows)
        if family == "vae":
            assert rows[-1]["test_kl"] > 0
        assert run.path == tmp_path / family and run.history == rows and run.epoch == 3


def test_save_then_load_gives_identical_outputs(mnist5k, tmp_path):
    run = aekit.train("vae", out=tmp_path / "run", epochs=1, **FAST, splits=mnist5k)
    again = aekit.load(tmp_path / "run")
    x = mnist5k.test.images[:50]
    assert torch.equal(run.model.embed(x), again.model.embed(x))
    assert torch.equal(run.model.reconstruct(x), again.model.reconstruct(x))
    assert torch.equal(run.model.sample(5, seed=1), again.model.sample(5, seed=1))
    assert again.config == run.config
    assert again.epoch == 1 and again.history == run.history


def test_resume_equals_an_uninterrupted_run(mnist5k, tmp_path):
    # dae + vae: both corruption noise and reparameterisation noise must be restored exactly
    for family in ("dae", "vae"):
        full = aekit.train(family, out=tmp_path / f"{family}-full", epochs=3, **FAST, splits=mnist5k)
        aekit.train(family, out=tmp_path / f"{family}-part", epochs=1, **FAST, splits=mnist5k)
        resumed = aekit.train(out=tmp_path / f"{family}-part", resume=True, epochs=3,
                              progress=False, log=None, splits=mnist5k)
        for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items(), strict=True):
            assert torch.equal(a, b), (family, name)
        rows = ckpt.read_jsonl(tmp_path / f"{family}-part" / "metrics.jsonl")
        assert [r["epoch"] for r in rows] == [1, 2, 3]


def test_runs_are_reproducible_from_the_seed(mnist5k, tmp_path):
    a = aekit.train("sae", out=tmp_path / "a", epochs=1, seed=7, **FAST, splits=mnist5k)
    b = aekit.train("sae", out=tmp_path / "b", epochs=1, seed=7, **FAST, splits=mnist5k)
    c = aekit.train("sae", out=tmp_path / "c", epochs=1, seed=8, **FAST, splits=mnist5k)
    x = mnist5k.test.images[:20]
    assert torch.equal(a.model.embed(x), b.model.embed(x))
    assert not torch.equal(a.model.embed(x), c.model.embed(x))


def test_an_existing_run_is_not_overwritten(mnist5k, tmp_path):
    aekit.train("ae", out=tmp_path / "run", epochs=1, **FAST, splits=mnist5k)
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    with pytest.raises(AekitError, match="already holds a run"):
        aekit.train("vae", out=tmp_path / "run", epochs=1, **FAST, splits=mnist5k)
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before
    aekit.train("vae", out=tmp_path / "run", epochs=1, force=True, **FAST, splits=mnist5k)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["family"] == "vae"


def test_resume_refuses_changes_other_than_epochs(mnist5k, tmp_path):
    aekit.train("ae", out=tmp_path / "run", epochs=1, **FAST, splits=mnist5k)
    with pytest.raises(AekitError, match=r"cannot change latent_dim \(run: 8, given: 4\)"):
        aekit.train(out=tmp_path / "run", resume=True, latent_dim=4, splits=mnist5k, progress=False, log=None)
    # repeating the original options is fine: rerunning the same command with --resume works
    again = aekit.train("ae", out=tmp_path / "run", resume=True, epochs=2, **FAST, splits=mnist5k)
    assert again.epoch == 2
    with pytest.raises(AekitError, match="holds an ae run, not a vae run"):
        aekit.train("vae", out=tmp_path / "run", resume=True, splits=mnist5k, progress=False, log=None)
    with pytest.raises(AekitError, match="no training state|not found|is not a folder"):
        aekit.train(out=tmp_path / "nothing", resume=True, splits=mnist5k, progress=False, log=None)


def test_divergence_stops_with_the_step_and_term_and_writes_no_bad_weights(mnist5k, tmp_path):
    config = aekit.preset("ae", epochs=2, hidden=(64,), latent_dim=8, batch_size=200)
    config.train.lr = 1e12  # past lr's range (0, 10]: the quickest way to a diverging run
    with pytest.raises(AekitError, match=r"diverged at step \d+: the \w+ term is (nan|inf)"):
        aekit.train(config, out=tmp_path / "run", splits=mnist5k, progress=False, log=None)
    assert not (tmp_path / "run").exists()  # nothing non-finite was saved, and no half-run is left behind


def test_the_readme_python_example_runs(tmp_path, monkeypatch):
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    code = readme.split("## Python", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "runs" / "readme-vae" / "model.safetensors").exists()


def test_progress_false_is_silent(mnist5k, tmp_path, capsys):
    aekit.train("ae", out=tmp_path / "quiet", epochs=1, hidden=(16,), latent_dim=4, splits=mnist5k, progress=False)
    out, err = capsys.readouterr()
    assert out == "" and err == ""


def test_dynamic_binarization_trains_on_fresh_binary_samples_and_tests_on_one_fixed_one(mnist5k, tmp_path, monkeypatch):
    from aekit.training.steps import TrainStep

    seen = []
    original = TrainStep.__call__

    def spy(self, x, generator, step):
        seen.append(x.clone())
        return original(self, x, generator, step)

    monkeypatch.setattr(TrainStep, "__call__", spy)
    options = dict(FAST, batch_size=4000, binarize="dynamic")  # one batch per epoch: the whole training set
    aekit.train("vae", out=tmp_path / "a", epochs=2, **options, splits=mnist5k)
    first, second = seen
    assert set(first.unique().tolist()) == {0.0, 1.0}
    # a fresh sample each epoch, whose mean is the grey images' mean
    assert (first != second).float().mean() > 0.05
    grey = mnist5k.train.images.float().div(255).mean()
    assert abs(float(first.mean()) - float(grey)) < 0.005

    # the test set: one fixed sample, the same whatever the training seed, and the one evaluation sees
    other = aekit.train("vae", out=tmp_path / "b", epochs=1, seed=7, **options, splits=mnist5k)
    from aekit.evaluation import load_run_splits

    test_a = load_run_splits(aekit.load(tmp_path / "a"), progress=False).test.images
    test_b = load_run_splits(other, progress=False).test.images
    assert torch.equal(test_a, test_b)
    assert set(test_a.unique().tolist()) == {0, 255}
    assert aekit.load(tmp_path / "a").config.data.binarize == "dynamic"


def test_static_binarization_fixes_both_sets_and_leaves_binary_images_alone(mnist5k):
    from aekit.data.imageset import binarize_splits

    once = binarize_splits(mnist5k, "static")
    again = binarize_splits(mnist5k, "static")
    assert torch.equal(once.train.images, again.train.images) and torch.equal(once.test.images, again.test.images)
    assert set(once.train.images.unique().tolist()) == {0, 255}
    twice = binarize_splits(once, "static")
    assert torch.equal(twice.train.images, once.train.images)
    assert binarize_splits(mnist5k, "none") is mnist5k
    with pytest.raises(AekitError, match="binarize"):
        binarize_splits(mnist5k, "sometimes")


def test_the_cosine_schedule_falls_from_lr_to_zero_and_every_step_runs_at_its_rate(mnist5k, tmp_path, monkeypatch):
    from aekit.core.config import TrainConfig
    from aekit.training.steps import TrainStep, learning_rate_schedule

    assert learning_rate_schedule(TrainConfig(lr=0.1), 10) is None  # constant: the optimizer's own lr
    cosine = learning_rate_schedule(TrainConfig(lr=0.1, epochs=2, lr_schedule="cosine"), 10)
    assert cosine(0) == pytest.approx(0.1) and cosine(10) == pytest.approx(0.05) and cosine(20) == pytest.approx(0)
    assert all(cosine(s) > cosine(s + 1) for s in range(20))

    seen = []  # the lr each step runs at, on the hand-written MLP step (vae) and on autograd (dae)
    original = TrainStep.__call__
    monkeypatch.setattr(TrainStep, "__call__", lambda self, x, g, step: (
        seen.append((step, self.optimizer.param_groups[0]["lr"])), original(self, x, g, step))[1])
    for family in ("vae", "dae"):
        seen.clear()
        aekit.train(family, out=tmp_path / family, epochs=2, lr=0.002, lr_schedule="cosine", **FAST, splits=mnist5k)
        steps = len(seen)
        assert steps == 2 * -(-len(mnist5k.train) // FAST["batch_size"])
        assert seen == [(s, pytest.approx(0.001 * (1 + math.cos(math.pi * s / steps)))) for s in range(steps)]
        assert json.loads((tmp_path / family / "config.json").read_text())["train"]["lr_schedule"] == "cosine"


def test_init_from_starts_from_another_runs_weights(mnist5k, tmp_path):
    source = aekit.train("vae", out=tmp_path / "source", epochs=2, **FAST, splits=mnist5k)
    # a vanishing learning rate: the fine-tuned weights are the source's, not a fresh initialisation
    tuned = aekit.train("vae", out=tmp_path / "tuned", epochs=1, lr=1e-12, init_from=tmp_path / "source",
                        **FAST, splits=mnist5k)
    for (name, a), (_, b) in zip(source.model.state_dict().items(), tuned.model.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
    aekit.train("vae", out=tmp_path / "fresh", epochs=1, **FAST, splits=mnist5k)
    curves = {run: ckpt.read_jsonl(tmp_path / run / "metrics.jsonl") for run in ("source", "tuned", "fresh")}
    # the fine-tune's first epoch scores what the source's last did, well below a fresh run's first
    assert curves["tuned"][0]["test_loss"] == pytest.approx(curves["source"][-1]["test_loss"], abs=0.01)
    assert curves["tuned"][0]["test_loss"] < curves["fresh"][0]["test_loss"] - 3
    assert json.loads((tmp_path / "tuned" / "config.json").read_text())["train"]["init_from"] == str(tmp_path / "source")


def test_init_from_refuses_a_different_model_and_keeps_what_was_saved(mnist5k, tmp_path):
    aekit.train("vae", out=tmp_path / "source", epochs=1, **FAST, splits=mnist5k)
    aekit.train("ae", out=tmp_path / "kept", epochs=1, **FAST, splits=mnist5k)
    before = {p.name: p.read_bytes() for p in (tmp_path / "kept").iterdir()}
    bad = {**FAST, "latent_dim": 4}
    with pytest.raises(AekitError, match=r"same model settings: latent_dim \(this run: 4, .*source: 8\)"):
        aekit.train("vae", out=tmp_path / "kept", force=True, epochs=1, init_from=tmp_path / "source", **bad,
                    splits=mnist5k)
    with pytest.raises(AekitError, match="is not a folder"):
        aekit.train("vae", out=tmp_path / "kept", force=True, epochs=1, init_from=tmp_path / "none", **FAST,
                    splits=mnist5k)
    with pytest.raises(AekitError, match="is the run folder being written"):
        aekit.train("vae", out=tmp_path / "source", force=True, epochs=1, init_from=tmp_path / "source", **FAST,
                    splits=mnist5k)
    (tmp_path / "unfinished").mkdir()  # a run killed before its first epoch: a config, no weights
    (tmp_path / "unfinished" / "config.json").write_bytes((tmp_path / "source" / "config.json").read_bytes())
    with pytest.raises(AekitError, match="has no model.safetensors"):
        aekit.train("vae", out=tmp_path / "kept", force=True, epochs=1, init_from=tmp_path / "unfinished", **FAST,
                    splits=mnist5k)
    assert {p.name: p.read_bytes() for p in (tmp_path / "kept").iterdir()} == before  # --force replaced nothing
    assert (tmp_path / "source" / "model.safetensors").exists()
