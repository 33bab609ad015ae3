"""Every training option is declared once (aekit.core.config) and is the same option everywhere: a config field,
a keyword of aekit.train, an `aekit train` flag and a parameter of the scikit-learn estimator, with one range."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import itertools
import math
import types
import typing

import numpy as np
import pytest

import aekit
import aekit.api
import aekit.sklearn
from aekit.cli import build_parser, main
from aekit.core.config import FAMILIES, FAMILY_DEFAULTS, PARTS, Option, options, preset
from aekit.sklearn import AutoencoderTransformer

# Config fields that are not options, and why.
NOT_OPTIONS = {
    ("model", "channels"): "the model's image shape is the data's (data.channels is the option)",
    ("model", "height"): "the model's image shape is the data's",
    ("model", "width"): "the model's image shape is the data's",
    ("model", "outputs"): "the decoder's outputs per channel follow the likelihood (objective.likelihood is the option)",
}
# aekit.train's own keywords: how to run, not what to train.
TRAIN_KEYWORDS = {"family", "out", "resume", "force", "progress", "splits", "log", "stream", "workers", "device",
                  "callbacks"}
# Flags of `aekit train` that are not options: --model is the family, the rest are aekit.train's own keywords.
CLI_FLAGS = {"-h", "--help", "--model", "--out", "--resume", "--force", "--quiet", "--report", "--stream",
             "--workers", "--device"}
# Options that are no parameters of the estimator, and why.
NOT_PARAMETERS = {
    "data": "the training images are X",
    "data_dir": "no named dataset is loaded",
    "channels": "X is used as it is: image_shape (or 4-D X) gives its layout",
    "image_size": "X is used as it is: no resizing",
    "test_split": "fit trains on all of X and holds nothing out",
    "seed": "random_state sets it",
    "init_from": "the model depends on X and the parameters only; fine-tuning a saved run is aekit.train's",
}
# The estimator's own parameters.
ESTIMATOR_PARAMETERS = {"family", "image_shape", "scaling", "random_state", "verbose"}


def _train_parser() -> argparse.ArgumentParser:
    verbs = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return verbs.choices["train"]


def _base(hint):
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next(h for h in typing.get_args(hint) if h is not type(None))
    return hint


def _sample(opt: Option):
    """A valid value of the option other than its default."""
    allowed = opt.allowed()
    if allowed is not None:
        return next(v for v in allowed if v != opt.default)
    hint = _base(opt.type)
    if hint is bool:
        return not opt.default
    low = opt.interval.low if opt.interval is not None and opt.interval.low is not None else 0
    if typing.get_origin(hint) is tuple:
        return (low + 1, low + 2)
    if hint is int:
        return low + 1
    if hint is float:
        if opt.interval is None:
            return 0.0
        return low + 1.5 if opt.interval.high is None else low + (opt.interval.high - low) / 4
    return f"x-{opt.name}"


def _text(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def test_config_fields_flags_keywords_and_estimator_parameters_agree():
    opts = options()
    names = {o.name for o in opts}
    assert len(names) == len(opts)  # one name, one option: a keyword routes to one field
    fields = {(part, f.name) for part, cls in PARTS.items() for f in dataclasses.fields(cls)}
    assert {(o.part, o.name) for o in opts} == fields - set(NOT_OPTIONS)

    flags = {s for a in _train_parser()._actions for s in a.option_strings}
    switches = {"--no-" + o.flag[2:] for o in opts if o.type is bool}  # --flip / --no-flip
    assert flags - CLI_FLAGS == {o.flag for o in opts} | switches
    dests = {a.dest for a in _train_parser()._actions if a.option_strings[0] not in CLI_FLAGS}
    assert dests == names

    signature = inspect.signature(aekit.train).parameters
    assert {n for n, p in signature.items() if p.kind != p.VAR_KEYWORD} == TRAIN_KEYWORDS
    assert any(p.kind == p.VAR_KEYWORD for p in signature.values()) and not TRAIN_KEYWORDS & names

    params = set(inspect.signature(AutoencoderTransformer).parameters)
    assert params == (names - set(NOT_PARAMETERS)) | ESTIMATOR_PARAMETERS
    assert set(aekit.sklearn.NOT_PARAMETERS) == set(NOT_PARAMETERS) <= names
    assert set(AutoencoderTransformer().get_params()) == params


def test_each_keyword_sets_its_own_field_and_no_other_field_is_a_keyword():
    for opt in options():
        value = _sample(opt)
        # some values need a family (importance_samples a VAE, sigmoid codes no VAE), a backbone (blocks a resnet)
        # or a likelihood and a spatial code (lmbda, the entropy latent), or a rate-distortion loss (distortion), or
        # a denoising unet (noise_level_input)
        extras = ({}, {"arch": "resnet"}, {"arch": "resnet", "patch": 1},
                  {"arch": "resnet", "latent_channels": 4, "likelihood": "gaussian"},
                  {"arch": "resnet", "latent_channels": 4, "likelihood": "gaussian", "latent": "entropy", "lmbda": 0.01},
                  {"arch": "unet", "latent_channels": 4, "noise_std": 0.1})
        for family, extra in itertools.product(FAMILIES, extras):
            try:
                config = preset(family, **{**extra, opt.name: value})
            except aekit.AekitError as err:
                assert "unknown option" not in str(err)
                continue
            assert getattr(getattr(config, opt.part), opt.name) == value, opt.name
            break
        else:
            pytest.fail(f"no family takes {opt.name}={value!r}")
    for name in ("height", "width"):
        with pytest.raises(aekit.AekitError, match=f"unknown option.*{name}"):
            preset("vae", **{name: 32})
    assert preset("vae", channels=3).model.channels == 1  # the data's option; the model takes the data's shape


def test_unknown_keywords_of_aekit_train_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(aekit.AekitError, match="unknown option.*height"):
        aekit.train("vae", out=tmp_path / "run", progress=False, log=None, height=32)
    assert not (tmp_path / "run").exists()


def test_every_flag_reaches_aekit_train_unchanged(monkeypatch, capsys):
    given = {opt.name: _sample(opt) for opt in options()}
    flag = lambda o: (o.flag if given[o.name] else "--no-" + o.flag[2:]) if o.type is bool else f"{o.flag}={_text(given[o.name])}"  # noqa: E731
    argv = ["train", "--quiet"] + [flag(o) for o in options()]
    seen = {}

    def fake_train(family, **kwargs):
        seen.update(kwargs)
        return aekit.Run(None, None, path="runs/fake")

    monkeypatch.setattr(aekit.api, "train", fake_train)
    assert main(argv) == 0
    assert {name: seen[name] for name in given} == given


def test_every_parameter_reaches_the_config_of_fit(monkeypatch):
    given = {opt.name: _sample(opt) for opt in aekit.sklearn.OPTIONS}
    seen = {}

    class Stop(Exception):
        pass

    def fake_preset(family, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(aekit.sklearn, "preset", fake_preset)
    with pytest.raises(Stop):
        AutoencoderTransformer("vae", random_state=5, **given).fit(np.zeros((4, 9), np.uint8))
    assert seen == {**given, "seed": 5, "data": "sklearn-input"}


def test_estimator_defaults_are_the_presets_and_the_help_states_them():
    params = inspect.signature(AutoencoderTransformer).parameters
    for opt in aekit.sklearn.OPTIONS:
        default = params[opt.name].default
        if opt.family_defaults or opt.name in ("hidden", "code_scale"):  # set by the family, the arch, rho
            assert default is None, opt.name
        else:
            assert default == opt.default, opt.name
    before = {"arch": "mlp", "latent_dim": 32, "activation": "relu", "likelihood": "bernoulli", "gaussian_std": 0.1,
              "beta": 1.0, "epochs": 10, "batch_size": 128, "lr": 1e-3, "weight_decay": 0.0}  # what they were before they were generated
    assert {name: params[name].default for name in before} == before
    helps = {a.dest: a.help for a in _train_parser()._actions}
    for opt in options():
        assert helps[opt.name] == opt.describe()
        for family, value in FAMILY_DEFAULTS.items():
            if opt.name in value:
                assert f"{family}: " in helps[opt.name]
    assert helps["noise_std"].endswith("; in [0, 2] (default 0; dae: 0.5)")
    assert helps["lr"] == "Adam learning rate; in (0, 10] (default 0.001)"
    assert "noise_std : float, default=None" in AutoencoderTransformer.__doc__
    assert "None: the family's preset (default 0; dae: 0.5)" in " ".join(AutoencoderTransformer.__doc__.split())


def test_every_float_option_has_a_finite_documented_range():
    for opt in options():
        if _base(opt.type) is not float or opt.name == "noise_std_min":  # [0, noise_std]: checked with noise_std
            continue
        assert opt.interval is not None and opt.interval.low is not None, opt.name
        assert str(opt.interval) in opt.describe() or opt.interval.high is None, opt.name
        for bad in (math.nan, math.inf, -math.inf):
            with pytest.raises(aekit.AekitError, match=f"^{opt.name} must be"):
                opt.check(bad)


RANGE_CASES = [
    ("lr", "inf", "lr must be > 0 and <= 10 (got inf)"),
    ("lr", "nan", "lr must be > 0 and <= 10 (got nan)"),
    ("lr", "0", "lr must be > 0 and <= 10 (got 0.0)"),
    ("noise_std", "5", "noise_std must be >= 0 and <= 2 (got 5.0)"),
    ("gaussian_std", "0", "gaussian_std must be >= 0.001 and <= 1000 (got 0.0)"),
    ("mask_prob", "1", "mask_prob must be >= 0 and < 1 (got 1.0)"),
    ("sparsity_weight", "1e9", "sparsity_weight must be >= 0 and <= 1000 (got 1000000000.0)"),
    ("code_scale", "-inf", "code_scale must be a positive number (got -inf)"),
    ("importance_samples", "4097", "importance_samples must be between 1 and 4096 (got 4097)"),
    ("epochs", "0", "epochs must be >= 1 (got 0)"),
    ("hidden", "64,70000", "hidden values must be between 1 and 65536 (got 70000)"),
    ("seed", "-1", "seed must be between 0 and 18446744073709551615 (got -1)"),
    ("test_split", "1", "test_split must be > 0 and < 1 (got 1.0)"),
    ("channels", "2", "channels must be 1, 3 or 4 (got 2)"),
]


@pytest.mark.parametrize("name, text, message", RANGE_CASES)
def test_a_range_is_enforced_identically_by_the_cli_aekit_train_and_the_estimator(
        name, text, message, capsys, tmp_path):
    opt = {o.name: o for o in options()}[name]
    code = main(["train", "--model", "vae", f"{opt.flag}={text}", "--quiet", "--out", str(tmp_path / "cli")])
    err = capsys.readouterr().err
    assert code == 2 and err == f"aekit: error: {message}\n"

    value = _train_parser().parse_args([f"{opt.flag}={text}"]).__dict__[name]  # as the CLI reads it
    with pytest.raises(aekit.AekitError) as api_error:
        aekit.train("vae", out=tmp_path / "api", progress=False, log=None, **{name: value})
    assert str(api_error.value) == message
    assert not (tmp_path / "cli").exists() and not (tmp_path / "api").exists()

    if name in NOT_PARAMETERS:
        return
    with pytest.raises(aekit.AekitError) as fit_error:
        AutoencoderTransformer("vae", **{name: value}).fit(np.zeros((4, 9), np.uint8))
    assert str(fit_error.value) == message


def test_registered_likelihoods_are_choices_wherever_options_are_read():
    from aekit.core.likelihoods import register_likelihood, unregister_likelihood

    def laplace(logits, x, scale):
        return (x - logits.sigmoid()).abs() / scale

    with pytest.raises(aekit.AekitError, match="likelihood must be one of bernoulli, gaussian"):
        preset("vae", likelihood="laplace")
    register_likelihood("laplace", laplace)
    try:
        assert preset("vae", likelihood="laplace").objective.likelihood == "laplace"
        assert _train_parser().parse_args(["--likelihood", "laplace"]).likelihood == "laplace"
        est = AutoencoderTransformer("vae", likelihood="laplace", latent_dim=2, hidden=(4,), epochs=1, random_state=0)
        assert est.fit(np.zeros((8, 9), np.uint8)).run_config_.objective.likelihood == "laplace"
    finally:
        unregister_likelihood("laplace")
    with pytest.raises(aekit.AekitError, match="likelihood must be one of"):
        preset("vae", likelihood="laplace")
