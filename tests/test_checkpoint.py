"""Checkpoints: safetensors + JSON only, validated on load, written atomically."""

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

import aekit
from aekit import files
from aekit.errors import AekitError


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "run"
    splits = aekit.load_dataset("mnist-5k")
    aekit.train("vae", out=out, epochs=1, hidden=(32,), latent_dim=4, splits=splits, progress=False, log=None)
    return out


@pytest.fixture
def copy(run_dir, tmp_path):
    import shutil

    target = tmp_path / "run"
    shutil.copytree(run_dir, target)
    return target


def test_a_valid_run_loads(run_dir):
    run = aekit.load(run_dir)
    assert run.model.config.latent_dim == 4 and run.epoch == 1 and not run.model.training
    assert run.config.family == "vae" and run.path == run_dir and [r["epoch"] for r in run.history] == [1]


def test_truncated_weights_are_refused(copy):
    data = (copy / "model.safetensors").read_bytes()
    (copy / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(AekitError, match="not a valid safetensors file"):
        aekit.load(copy)


def test_garbage_weights_are_refused(copy):
    (copy / "model.safetensors").write_bytes(b"\xff" * 100)
    with pytest.raises(AekitError, match="not a valid safetensors file"):
        aekit.load(copy)


def test_a_pickle_is_refused_and_never_unpickled(copy, tmp_path):
    class Boom:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    (copy / "model.safetensors").write_bytes(pickle.dumps({"w": Boom()}))
    with pytest.raises(AekitError, match="pickle"):
        aekit.load(copy)
    torch.save({"w": torch.zeros(1)}, copy / "model.safetensors")
    with pytest.raises(AekitError, match="pickle or torch.save"):
        aekit.load(copy)
    assert not (tmp_path / "pwned").exists()


def test_a_safetensors_file_whose_first_byte_looks_like_pickle_still_loads(tmp_path):
    # the first byte is the header length's low byte: 0x80 must not be mistaken for a pickle
    from safetensors.torch import save

    for pad in range(0, 400):
        data = save({"w": torch.ones(2)}, metadata={"format": "x", "pad": "p" * pad})
        if data[0] == 0x80:
            break
    assert data[0] == 0x80
    (tmp_path / "f.safetensors").write_bytes(data)
    tensors, meta = files.read_safetensors(tmp_path / "f.safetensors")
    assert torch.equal(tensors["w"], torch.ones(2)) and meta["format"] == "x"


def test_a_wrong_shape_tensor_is_refused(copy):
    tensors, meta = files.read_safetensors(copy / "model.safetensors")
    name = next(k for k in tensors if k.endswith("weight"))
    tensors[name] = torch.zeros(3, 3)
    save_file(tensors, copy / "model.safetensors", metadata=meta)
    with pytest.raises(AekitError, match=f"tensor {name} is torch.float32 \\(3, 3\\)"):
        aekit.load(copy)


def test_half_precision_weights_load_as_float32_and_an_overflow_is_refused(copy):
    run = aekit.load(copy)
    model = run.model
    x = aekit.load_dataset("mnist-5k").test.images[:20]
    full = model.reconstruct(x).float()
    before = (copy / "model.safetensors").stat().st_size
    run.save(copy, dtype=torch.float16)
    assert (copy / "model.safetensors").stat().st_size < 0.6 * before
    half = aekit.load(copy).model
    assert all(p.dtype == torch.float32 for p in half.parameters())
    assert (half.reconstruct(x).float() - full).abs().max() <= 2  # uint8 pixels: rounding only
    for name, p in half.state_dict().items():
        assert torch.equal(p, model.state_dict()[name].half().float()), name
    tensors, meta = files.read_safetensors(copy / "model.safetensors")
    name = next(k for k in tensors if k.endswith("weight"))
    tensors[name] = torch.full_like(tensors[name], 65504.0) * 2  # inf in float16
    save_file(tensors, copy / "model.safetensors", metadata=meta)
    with pytest.raises(AekitError, match="NaN or inf"):
        aekit.load(copy)
    with pytest.raises(AekitError, match="float16 or bfloat16"):
        run.save(copy, dtype=torch.int8)


def test_missing_or_extra_tensors_and_nan_are_refused(copy):
    tensors, meta = files.read_safetensors(copy / "model.safetensors")
    save_file({**tensors, "extra": torch.zeros(1)}, copy / "model.safetensors", metadata=meta)
    with pytest.raises(AekitError, match="unexpected"):
        aekit.load(copy)
    name = next(iter(tensors))
    bad = dict(tensors)
    bad[name] = torch.full_like(tensors[name], float("nan"))
    save_file(bad, copy / "model.safetensors", metadata=meta)
    with pytest.raises(AekitError, match="NaN"):
        aekit.load(copy)


def test_foreign_safetensors_and_unknown_versions_are_refused(copy):
    tensors, meta = files.read_safetensors(copy / "model.safetensors")
    save_file(tensors, copy / "model.safetensors")  # no aekit stamp
    with pytest.raises(AekitError, match="not an aekit file"):
        aekit.load(copy)
    save_file(tensors, copy / "model.safetensors", metadata={**meta, "format_version": "99"})
    with pytest.raises(AekitError, match="format version '99'.*upgrade aekit"):
        aekit.load(copy)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: "{not json", "not valid JSON"),
        (lambda c: json.dumps({**c, "format_version": 2}), "format version 2"),
        (lambda c: json.dumps({**c, "format": "other"}), "not an aekit file"),
        (lambda c: json.dumps({**c, "model": {**c["model"], "latent_dim": -1}}), "latent_dim must be between 1 and 65536"),
        (lambda c: json.dumps({**c, "model": {**c["model"], "latent_dim": 5}}), "does not match|is torch.float32"),
        (lambda c: json.dumps({**c, "extra": 1}), "unknown key"),
    ],
)
def test_bad_configs_are_refused(copy, edit, message):
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(edit(config))
    with pytest.raises(AekitError, match=message):
        aekit.load(copy)


def test_missing_files_are_reported(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(AekitError, match="config.json not found"):
        aekit.load(tmp_path / "empty")
    with pytest.raises(AekitError, match="not a folder"):
        aekit.load(tmp_path / "nope")


def test_a_damaged_resume_state_is_refused_clearly(copy):
    data = (copy / "state.safetensors").read_bytes()
    (copy / "state.safetensors").write_bytes(data[:100])
    with pytest.raises(AekitError, match="state.safetensors is not a valid safetensors file"):
        aekit.train(out=copy, resume=True, epochs=2, progress=False, log=None)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")

    def fail(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "replace", fail)
    with pytest.raises(AekitError, match="No space left"):
        files.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]  # no temp file left behind


def test_a_read_only_folder_gives_a_clear_error(tmp_path, monkeypatch):
    # chmod does not stop root, so make the folder refuse new files the way a read-only mount does
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(files.tempfile, "mkstemp", refuse)
    with pytest.raises(AekitError, match="cannot write .*x: Permission denied"):
        files.atomic_write_bytes(tmp_path / "x", b"data")
    assert not (tmp_path / "x").exists()


def test_no_pickle_anywhere_in_a_run(run_dir):
    for path in run_dir.iterdir():
        head = path.read_bytes()[:2]
        assert head[:1] != b"\x80" and head != b"PK", path.name
    _, meta = files.read_safetensors(run_dir / "state.safetensors")
    assert meta["epoch"] == "1" and json.loads(meta["param_groups"])[0]["lr"] == 1e-3
