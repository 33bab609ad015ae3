"""``--ema``: a moving average of the weights, updated after every step, is what each epoch evaluates and saves,
and a resumed run continues it exactly."""

from __future__ import annotations

import pytest
import torch

import aekit
from aekit.errors import AekitError
from aekit.files import read_safetensors
from aekit.training.loop import Callback

FAST = dict(hidden=(32,), latent_dim=4, batch_size=100, progress=False, log=None)


@pytest.fixture(scope="module")
def digits():
    data = aekit.load_dataset("mnist-5k")
    return aekit.Splits(data.train.subset(torch.arange(1000)), data.test.subset(torch.arange(200)))


class _Trajectory(Callback):
    """The weights after every step."""

    def __init__(self, model):
        self.model, self.seen = model, []

    def on_batch(self, epoch, batch):
        self.seen.append([p.detach().clone() for p in self.model.parameters()])


def test_the_average_follows_its_recurrence_and_is_what_is_saved(digits, tmp_path):
    from aekit.training.loop import fit, new_state

    config = aekit.preset("ae", hidden=(32,), latent_dim=4, ema=0.9, epochs=2, batch_size=100)
    config.model.height = config.model.width = 28
    state = new_state(config)
    start = [p.detach().clone() for p in state.model.parameters()]
    trace = _Trajectory(state.model)
    fit(state, config, digits.train, digits.test, callbacks=[trace])
    assert len(trace.seen) == 20 and not torch.equal(trace.seen[0][0], trace.seen[-1][0])  # the weights moved
    expected = start
    for step, weights in enumerate(trace.seen):
        d = min(0.9, (1 + step) / (10 + step))
        expected = [d * a + (1 - d) * w for a, w in zip(expected, weights)]
    for a, b in zip(state.ema.parameters(), expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert any(not torch.equal(a, b) for a, b in zip(state.ema.parameters(), state.model.parameters()))
    assert state.kept is state.ema

    run = aekit.train("ae", out=tmp_path / "run", epochs=2, ema=0.9, splits=digits, **FAST)
    saved, _ = read_safetensors(tmp_path / "run" / "model.safetensors")
    resume, _ = read_safetensors(tmp_path / "run" / "state.safetensors")
    for name, value in saved.items():
        assert torch.equal(value, resume[f"ema.{name}"]) and torch.equal(value, run.model.state_dict()[name])
    assert any(not torch.equal(saved[n], resume[f"model.{n}"]) for n in saved if saved[n].is_floating_point())


def test_the_test_loss_is_the_average_s(digits, tmp_path):
    from aekit.training.loop import evaluate_losses

    run = aekit.train("ae", out=tmp_path / "run", epochs=1, ema=0.99, splits=digits, **FAST)
    assert run.history[-1]["test_loss"] == pytest.approx(evaluate_losses(run.model, digits.test, run.config)["loss"],
                                                         rel=1e-6)


def test_a_resumed_run_continues_the_average_exactly(digits, tmp_path):
    full = aekit.train("dae", out=tmp_path / "full", epochs=3, ema=0.95, splits=digits, **FAST)
    aekit.train("dae", out=tmp_path / "part", epochs=1, ema=0.95, splits=digits, **FAST)
    resumed = aekit.train(out=tmp_path / "part", resume=True, epochs=3, progress=False, log=None, splits=digits)
    for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_the_decay_is_checked():
    for bad in (1.0, -0.1):
        with pytest.raises(AekitError, match="ema"):
            aekit.preset("ae", ema=bad)
