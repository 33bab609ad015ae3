import json

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
