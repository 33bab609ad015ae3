"""The hand-written MLP step computes what autograd computes, and the trainer takes it only where it applies."""

from __future__ import annotations

import copy
import dataclasses
import json
import math

import pytest
import torch

import aekit
from aekit.core.config import preset
from aekit.core.likelihoods import register_likelihood, unregister_likelihood
from aekit.core.model import Autoencoder
from aekit.core.objectives import TERMS, draw_noise, loss_with_noise
from aekit.training.distributed import World
from aekit.training.fastmlp import MLPStep, supports
from aekit.training.steps import make_optimizer, make_step


def step_for(model, config, *, n_train: int = 100, optimizer=None):
    """The step the trainer would take for ``model`` on ``n_train`` images (one CPU process)."""
    return make_step(model, optimizer or make_optimizer(model, config), config, n_train, world=World(), log=print)


def _small(config):
    """The config for 1x10x10 images."""
    config.model = dataclasses.replace(config.model, channels=1, height=10, width=10)
    return config


# (family, overrides): every branch of the step: latents, code squashing, both sparsities, both
# likelihoods, the three activations, corruption of each kind, depth, beta.
CASES = {
    "vae": ("vae", {}),
    "vae-beta-deep-tanh": ("vae", {"beta": 4.0, "hidden": (24, 16, 12), "activation": "tanh"}),
    "vae-gaussian-leaky": ("vae", {"likelihood": "gaussian", "gaussian_std": 0.2, "activation": "leaky_relu"}),
    "vae-denoising": ("vae", {"noise_std": 0.3, "mask_prob": 0.2, "salt_pepper": 0.1}),
    "ae": ("ae", {}),
    "ae-gaussian-one-layer": ("ae", {"likelihood": "gaussian", "hidden": (20,)}),
    "dae": ("dae", {}),
    "dae-blind": ("dae", {"noise_std_min": 0.1}),
    "sae-kl": ("sae", {}),
    "sae-l1": ("sae", {"sparsity": "l1", "sparsity_weight": 0.5}),
    "ae-l1-unsquashed": ("ae", {"sparsity": "l1", "sparsity_weight": 0.1}),
    "vae-scaled-code": ("vae", {"code_scale": 3.0}),
}


def _setup(family: str, seed: int = 0, batch: int = 16, **overrides):
    overrides.setdefault("hidden", (24, 12))
    config = _small(preset(family, latent_dim=6, **overrides))
    torch.manual_seed(seed)
    model = Autoencoder(config.model)
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 1, 10, 10, generator=generator)
    if config.objective.likelihood == "bernoulli":
        x = (x > 0.6).float() * 0.9 + 0.05  # mostly near 0 or 1, as images are
    noise = draw_noise(x, config.objective, config.model.latent_dim, model.is_variational, generator)
    return config, model, x, noise


def _autograd(model, config, x, noise):
    model.zero_grad(set_to_none=True)
    terms = loss_with_noise(model, x, noise, config.objective)
    terms["loss"].backward()
    return {k: v.detach() for k, v in terms.items()}, {n: p.grad.clone() for n, p in model.named_parameters()}


def _fast(model, config, x, noise):
    step = MLPStep(model, make_optimizer(model, config), config.objective)
    terms = step.gradients(x, noise)
    return terms, {n: p.grad.clone() for n, p in model.named_parameters()}


def _assert_close(fast_terms, fast_grads, auto_terms, auto_grads):
    for name in TERMS:
        assert fast_terms[name] == pytest.approx(auto_terms[name].item(), rel=1e-5, abs=1e-5), name
    assert fast_grads.keys() == auto_grads.keys()
    for name, grad in auto_grads.items():
        assert grad.abs().max() > 0 or name.endswith("bias"), f"{name}: a zero gradient tests nothing"
        torch.testing.assert_close(fast_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("case", list(CASES))
def test_gradients_and_terms_equal_autograds(case):
    family, overrides = CASES[case]
    config, model, x, noise = _setup(family, **overrides)
    auto_terms, auto_grads = _autograd(model, config, x, noise)
    fast_terms, fast_grads = _fast(model, config, x, noise)
    _assert_close(fast_terms, fast_grads, auto_terms, auto_grads)


def test_logvar_outside_its_clamp_gets_no_gradient_as_in_autograd():
    config, model, x, noise = _setup("vae")
    with torch.no_grad():
        model.head.logvar.bias[:3] = 40.0  # clamped at 20 for every image
    auto_terms, auto_grads = _autograd(model, config, x, noise)
    fast_terms, fast_grads = _fast(model, config, x, noise)
    assert auto_grads["head.logvar.bias"][:3].abs().max() == 0
    _assert_close(fast_terms, fast_grads, auto_terms, auto_grads)


def test_huge_logits_keep_the_exact_bernoulli_likelihood():
    """sigmoid(-l) underflows to 0 for l > 87; the step then falls back to softplus, as autograd computes."""
    config, model, x, noise = _setup("ae")
    with torch.no_grad():
        model.decoder.net[-2].bias[:5] = 120.0
    auto_terms, auto_grads = _autograd(model, config, x, noise)
    fast_terms, fast_grads = _fast(model, config, x, noise)
    assert math.isfinite(fast_terms["recon"]) and fast_terms["recon"] > 100
    _assert_close(fast_terms, fast_grads, auto_terms, auto_grads)


@pytest.mark.parametrize("grad_clip", [0.0, 0.5])
def test_steps_and_optimizer_state_equal_autograd_with_adam(grad_clip):
    """Ten updates (the first by the optimizer, the rest by the fused kernel called directly), then a smaller
    batch: same weights and the same Adam state as autograd + optimizer.step()."""
    config, model, _, _ = _setup("sae", hidden=(24, 12))
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, grad_clip=grad_clip, lr=3e-3))
    auto_model = copy.deepcopy(model)
    fast_step = step_for(model, config)
    auto_config = dataclasses.replace(config, train=dataclasses.replace(config.train, fast_step="off"))
    auto_step = step_for(auto_model, auto_config)
    assert fast_step.fast is not None and auto_step.fast is None
    data = torch.rand(11 * 16, 1, 10, 10, generator=torch.Generator().manual_seed(1))
    gen_fast, gen_auto = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    for i, x in enumerate(torch.cat([data, data[:5]]).split(16)):
        torch.testing.assert_close(fast_step(x, gen_fast, i), auto_step(x, gen_auto, i).double(), rtol=1e-5, atol=1e-5)
    for (name, p), q in zip(model.named_parameters(), auto_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=name)
    fast_state, auto_state = fast_step.optimizer.state_dict()["state"], auto_step.optimizer.state_dict()["state"]
    for key in auto_state:
        assert fast_state[key]["step"] == auto_state[key]["step"] == 12
        torch.testing.assert_close(fast_state[key]["exp_avg_sq"], auto_state[key]["exp_avg_sq"], rtol=1e-3, atol=1e-9)


def test_a_diverged_step_changes_no_weight():
    config, model, x, noise = _setup("ae")
    step = step_for(model, config)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(aekit.AekitError, match="diverged"):
        step(torch.full_like(x, float("nan")), torch.Generator(), 0)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_the_trainer_takes_the_fast_step_only_where_it_applies():
    config, model, _, _ = _setup("vae")
    opt = make_optimizer(model, config)
    assert step_for(model, config, optimizer=opt).fast is not None
    long_run = step_for(model, config, optimizer=opt, n_train=10**8)  # long enough for --compile auto to compile ...
    assert long_run.fast is not None and not long_run.compiled  # ... autograd, which the fast step replaces
    for train in ({"fast_step": "off"}, {"compile": "on"}):
        other = dataclasses.replace(config, train=dataclasses.replace(config.train, **train))
        assert step_for(model, other, optimizer=opt).fast is None
    iwae = dataclasses.replace(config, objective=dataclasses.replace(config.objective, importance_samples=3))
    assert step_for(model, iwae, optimizer=opt).fast is None  # the step knows the ELBO only
    assert supports(model, iwae.objective) == "importance_samples 3"
    conv = Autoencoder(_small(preset("vae", arch="conv", hidden=(4, 8), latent_dim=4)).model)
    assert supports(conv, config.objective) == "arch 'conv'"
    gelu = Autoencoder(_small(preset("ae", activation="gelu", hidden=(8,))).model)
    assert supports(gelu, config.objective) == "activation 'gelu'"
    double = copy.deepcopy(model).double()
    assert supports(double, config.objective) is not None
    assert World().size == 1


@pytest.fixture
def laplace():
    """A likelihood the hand-written step does not implement, registered for one test."""
    register_likelihood("laplace", lambda logits, x, scale: (x - torch.sigmoid(logits)).abs() / scale)
    yield "laplace"
    unregister_likelihood("laplace")


def test_an_objective_the_fast_step_does_not_know_trains_by_autograd(laplace, tmp_path):
    config, model, x, noise = _setup("vae", likelihood=laplace)
    assert supports(model, config.objective) == "likelihood 'laplace'"
    step = step_for(model, config)
    assert step.fast is None  # fails closed: autograd, never the step's Gaussian branch
    noise = draw_noise(x, config.objective, 6, True, torch.Generator().manual_seed(5))
    want = loss_with_noise(copy.deepcopy(model), x, noise, config.objective)["loss"].item()  # the laplace loss
    got = step(x, torch.Generator().manual_seed(5), 0)[0].item()  # the same noise, before the update
    assert got == pytest.approx(want, rel=1e-6)
    gaussian = dataclasses.replace(config.objective, likelihood="gaussian")
    assert abs(want - loss_with_noise(copy.deepcopy(model), x, noise, gaussian)["loss"].item()) > 1.0
    digits = aekit.load_dataset("mnist-5k")
    splits = aekit.Splits(digits.train.subset(torch.arange(1000)), digits.test.subset(torch.arange(200)))
    run = aekit.train("vae", out=tmp_path / "run", splits=splits, likelihood=laplace, gaussian_std=0.1,
                      hidden=(64,), latent_dim=4, epochs=3, batch_size=50, progress=False, log=None)
    assert [row["fast_step"] for row in run.history] == [False, False, False]
    losses = [row["test_loss"] for row in run.history]
    assert losses == sorted(losses, reverse=True) and losses[-1] < 0.95 * losses[0]  # it learns


def test_re_registering_a_built_in_likelihood_also_fails_closed(tmp_path):
    config, model, _, _ = _setup("vae")
    register_likelihood("bernoulli", lambda logits, x, scale: (x - torch.sigmoid(logits)).pow(2))
    try:
        assert supports(model, config.objective) == "the bernoulli likelihood as registered now"
        assert step_for(model, config).fast is None
    finally:
        unregister_likelihood("bernoulli")
    assert supports(model, config.objective) is None


def test_an_option_the_fast_step_has_not_declared_fails_closed(monkeypatch):
    from aekit.training import fastmlp

    config, model, _, _ = _setup("ae")
    fields = dict(fastmlp.OBJECTIVE_FIELDS)
    del fields["salt_pepper"]  # as if salt_pepper had been added to the objective after the step was written
    monkeypatch.setattr(fastmlp, "OBJECTIVE_FIELDS", fields)
    assert supports(model, config.objective) == "the option salt_pepper"


def test_runs_record_which_step_trained_them(tmp_path):
    images = (torch.rand(300, 1, 10, 10) * 255).to(torch.uint8).numpy()
    path = tmp_path / "images.npy"
    import numpy as np

    np.save(path, images)
    rows = {}
    for fast_step in ("auto", "off"):
        out = tmp_path / fast_step
        aekit.train("vae", out=out, data=str(path), hidden=(16,), latent_dim=4, epochs=2, fast_step=fast_step,
                    progress=False, log=None)
        rows[fast_step] = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["fast_step"] for r in rows["auto"]] == [True, True]
    assert [r["fast_step"] for r in rows["off"]] == [False, False]
    for a, b in zip(rows["auto"], rows["off"]):  # the same training, up to float rounding
        assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-4)


def test_the_scaled_code_case_is_covered():
    """The SAE preset's decoder reads code / rho: the "sae-kl" case above runs through that scaling."""
    family, overrides = CASES["sae-kl"]
    config, _, _, _ = _setup(family, **overrides)
    assert config.model.code_scale == pytest.approx(20.0)
