import json
import typing

import pytest

from aekit.core.config import ModelConfig, RunConfig, preset
from aekit.errors import AekitError


def test_presets_are_compositions_of_parts():
    assert preset("ae").model.latent == "point" and preset("ae").objective.noise_std == 0
    assert preset("dae").objective.noise_std == 0.5
    sae = preset("sae")
    assert sae.model.code_activation == "sigmoid" and sae.objective.sparsity == "kl"
    assert sae.objective.sparsity_target == 0.05
    vae = preset("vae")
    assert vae.model.latent == "gaussian" and vae.objective.beta == 1.0


def test_parts_combine_across_families():
    dvae = preset("vae", noise_std=0.3)
    assert dvae.model.latent == "gaussian" and dvae.objective.noise_std == 0.3
    sdae = preset("sae", noise_std=0.3, sparsity="l1", sparsity_weight=0.01)
    assert sdae.model.code_activation == "sigmoid" and sdae.objective.sparsity == "l1"


def test_hidden_defaults_follow_the_backbone():
    assert preset("ae").model.hidden == (512, 256)
    assert preset("ae", arch="conv").model.hidden == (32, 64, 128)
    assert preset("vae", hidden=[400], latent_dim=20).model.hidden == (400,)


def test_json_round_trip_is_exact():
    cfg = preset("vae", arch="conv", latent_dim=7, noise_std=0.2, image_size=(32, 32), epochs=3)
    again = RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"model": {"latent_dimm": 3}}, "unknown key"),
        ({"model": {"latent_dim": "32"}}, "wrong type"),
        ({"model": {"latent_dim": True}}, "wrong type"),
        ({"model": {"arch": "transformer"}}, "arch must be one of"),
        ({"model": {"hidden": [0]}}, "between 1 and 65536"),
        ({"objective": {"sparsity_target": 1.5}}, "sparsity_target"),
        ({"objective": {"noise_std": 0.5, "noise_std_min": 0.6}}, r"noise_std_min must be in \[0, noise_std\]"),
        ({"objective": {"noise_std": 0.5, "noise_std_min": -0.1}}, "noise_std_min must be in"),
        ({"train": {"lr": -1}}, "lr must be > 0"),
        ({"family": "gan"}, "family must be one of"),
        ({"surprise": 1}, "unknown key"),
        ([], "JSON object"),
    ],
)
def test_bad_configs_raise_clear_errors(raw, message):
    with pytest.raises(AekitError, match=message):
        RunConfig.from_dict(raw)


def test_kl_sparsity_needs_sigmoid_codes():
    with pytest.raises(AekitError, match="sparsity kl needs codes in"):
        preset("vae", sparsity="kl")
    with pytest.raises(AekitError, match="unknown option"):
        preset("ae", colour="blue")


def test_oversized_images_are_refused():
    with pytest.raises(AekitError, match="too large"):
        ModelConfig(channels=3, height=4096, width=4096)


def test_the_sae_decoder_reads_codes_divided_by_the_target_rate():
    assert preset("sae").model.code_scale == pytest.approx(20.0)
    assert preset("sae", sparsity_target=0.1).model.code_scale == pytest.approx(10.0)
    assert preset("sae", code_scale=1.0).model.code_scale == 1.0  # asked for explicitly
    assert preset("sae", sparsity="l1").model.code_scale == 1.0  # no target rate to scale by
    assert preset("ae").model.code_scale == preset("vae").model.code_scale == 1.0


def test_configs_saved_before_code_scale_load_with_no_scaling():
    raw = preset("sae").to_dict()
    del raw["model"]["code_scale"]
    assert RunConfig.from_dict(raw).model.code_scale == 1.0


@pytest.mark.parametrize("bad", [0.0, -2.0, float("nan"), float("inf")])
def test_code_scale_must_be_a_positive_number(bad):
    with pytest.raises(AekitError, match="code_scale must be a positive number"):
        preset("ae", code_scale=bad)


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"train": {"lr": float("inf")}}, r"lr must be > 0 and <= 10 \(got inf\)"),
        ({"train": {"lr": float("nan")}}, "lr must be > 0 and <= 10"),
        ({"train": {"lr": 10.5}}, "lr must be > 0 and <= 10"),
        ({"train": {"weight_decay": 2}}, r"weight_decay must be >= 0 and <= 1 \(got 2.0\)"),
        ({"train": {"grad_clip": -1}}, "grad_clip must be >= 0"),
        ({"train": {"seed": -1}}, "seed must be between 0 and"),
        ({"train": {"batch_size": 0}}, "batch_size must be >= 1"),
        ({"objective": {"noise_std": 2.5}}, "noise_std must be >= 0 and <= 2"),
        ({"objective": {"gaussian_std": 1e-4}}, "gaussian_std must be >= 0.001 and <= 1000"),
        ({"objective": {"beta": 1e4}}, "beta must be >= 0 and <= 1000"),
        ({"objective": {"mask_prob": 1.0}}, "mask_prob must be >= 0 and < 1"),
        ({"objective": {"salt_pepper": float("nan")}}, "salt_pepper must be"),
        ({"objective": {"importance_samples": 0}}, "importance_samples must be between 1 and 4096"),
        ({"objective": {"likelihood": "laplace"}}, "likelihood must be one of bernoulli, gaussian"),
        ({"data": {"test_split": 0}}, "test_split must be > 0 and < 1"),
        ({"data": {"image_size": [0, 4]}}, "image_size values must be >= 1"),
        ({"data": {"channels": 2}}, r"channels must be 1, 3 or 4 \(got 2\)"),
        ({"model": {"hidden": [64, 65537]}}, "between 1 and 65536"),
    ],
)
def test_ranges_and_choices_come_from_the_declarations(raw, message):
    with pytest.raises(AekitError, match=message):
        RunConfig.from_dict(raw)


def test_the_declared_ranges_are_the_checked_ones():
    from aekit.core.config import Interval, options

    lr = Interval.parse("(0, 10]")
    assert 10 in lr and 1e-9 in lr and 0 not in lr and 10.5 not in lr
    assert float("nan") not in lr and float("inf") not in Interval.parse("[0, inf)")
    assert str(lr) == "(0, 10]" and lr.describe() == "in (0, 10]" and lr.requirement(integer=False) == "> 0 and <= 10"
    assert Interval.parse("[1, inf)").describe() == ">= 1"
    for opt in options():
        if opt.interval is None or opt.interval.low is None:
            continue
        inside = opt.interval.low if opt.interval.low_closed else opt.interval.low + 1e-3
        outside = opt.interval.low - 1 if opt.interval.low_closed else opt.interval.low
        if typing.get_origin(opt.type) is tuple or opt.name == "image_size":
            inside, outside = (int(inside),), (int(outside),)
        opt.check(inside)
        with pytest.raises(AekitError, match=f"^{opt.name}"):
            opt.check(outside)


def test_the_likelihood_choices_are_read_from_the_registry_when_checked():
    from aekit.core.config import ObjectiveConfig
    from aekit.core.likelihoods import register_likelihood, unregister_likelihood

    with pytest.raises(AekitError, match="likelihood must be one of"):
        ObjectiveConfig(likelihood="laplace")
    register_likelihood("laplace", lambda logits, x, scale: (x - logits.sigmoid()).abs() / scale)
    try:
        assert ObjectiveConfig(likelihood="laplace").likelihood == "laplace"
    finally:
        unregister_likelihood("laplace")


def test_help_texts_state_the_default_and_each_familys_default_from_the_preset_table():
    from aekit.core.config import FAMILY_DEFAULTS, options

    helps = {o.name: o.describe() for o in options()}
    assert helps["noise_std"].endswith("(default 0; dae: 0.5)")
    assert helps["sparsity"].endswith("(default none; sae: kl)")
    assert helps["sparsity_weight"].endswith("(default 1; sae: 10)")
    assert helps["latent"].endswith("(default point; vae: gaussian)")
    assert helps["epochs"].endswith("; >= 1 (default 10)")
    assert "mlp: 512,256; conv: 32,64,128" in helps["hidden"]
    assert {name for values in FAMILY_DEFAULTS.values() for name in values} <= set(helps)
