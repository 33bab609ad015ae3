"""ONNX export: ONNX Runtime reproduces PyTorch, preprocessing.json is right, and `aekit export` end to end."""

import dataclasses
import json
import os

import numpy as np
import pytest
import torch

import aekit
from aekit.cli import main
from aekit.data import Splits
from aekit.export import export_onnx

onnx = pytest.importorskip("onnx", reason="ONNX export needs the onnx package: pip install 'aekit[onnx]'")
ort = pytest.importorskip("onnxruntime", reason="checking exported graphs needs onnxruntime: pip install 'aekit[onnx]'")



def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def assert_one_line_error(code, err, pattern):
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("aekit") and pattern in lines[0], lines[0]


@pytest.mark.parametrize("family", ["vae", "ae", "sae"])
@pytest.mark.parametrize("arch, hidden, shape", [("mlp", (32, 16), (1, 28, 28)), ("conv", (4, 8), (3, 13, 10))])
def test_onnx_runtime_matches_pytorch(tmp_path, family, arch, hidden, shape):
    torch.manual_seed(0)
    config = aekit.preset(family, arch=arch, hidden=hidden, latent_dim=6)
    c, h, w = shape
    config.model = dataclasses.replace(config.model, channels=c, height=h, width=w)
    model = aekit.Autoencoder(config.model)
    for p in model.parameters():  # larger weights than the init, so a mismatch would show
        p.data.mul_(2.0)
    export_onnx(aekit.Run(model.eval(), config), tmp_path)
    encoder, decoder = session(tmp_path / "encoder.onnx"), session(tmp_path / "decoder.onnx")
    rng = np.random.default_rng(0)
    for n in (1, 37):
        images = rng.random((n, *shape), dtype=np.float32)
        codes = rng.normal(size=(n, 6)).astype(np.float32)
        with torch.no_grad():
            want_codes = model.encode(torch.from_numpy(images)).mode().numpy()
            want_images = torch.sigmoid(model.decode(torch.from_numpy(codes))).numpy()
        (got_codes,) = encoder.run(None, {"images": images})
        (got_images,) = decoder.run(None, {"codes": codes})
        assert got_codes.shape == (n, 6) and got_images.shape == (n, *shape)
        np.testing.assert_allclose(got_codes, want_codes, atol=1e-4, rtol=0)
        np.testing.assert_allclose(got_images, want_images, atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny VAE trained one epoch on 256 mnist-5k digits."""
    splits = aekit.load_dataset("mnist-5k", progress=False)
    small = Splits(splits.train.subset(torch.arange(256)), splits.test.subset(torch.arange(64)))
    out = tmp_path_factory.mktemp("export") / "vae"
    aekit.train("vae", out=out, splits=small, hidden=(32,), latent_dim=5, epochs=1, progress=False, log=None)
    return out


def test_preprocessing_json_describes_the_graphs(run_dir, tmp_path):
    export_onnx(aekit.load(run_dir), tmp_path)
    info = json.loads((tmp_path / "preprocessing.json").read_text())
    assert info["format"] == "aekit-onnx" and info["format_version"] == 1
    assert info["family"] == "vae" and info["arch"] == "mlp" and info["trained_on"] == "mnist-5k"
    assert info["encoder"]["input"] == {"name": "images", "shape": ["batch", 1, 28, 28], "dtype": "float32",
                                        "layout": "NCHW", "range": [0.0, 1.0]}
    encoder, decoder = info["encoder"], info["decoder"]
    assert encoder["output"]["shape"] == ["batch", 5] and "posterior mean" in encoder["output"]["meaning"]
    assert decoder["input"]["shape"] == ["batch", 5] and decoder["output"]["shape"] == ["batch", 1, 28, 28]
    assert info["input_image"]["channels"] == 1 and info["input_image"]["height"] == 28
    assert "/ 255" in info["input_image"]["scaling"]
    assert info["latent"] == {"dim": 5, "kind": "gaussian", "code_activation": "none", "prior": "N(0, I)"}
    # the graphs agree with the JSON: valid ONNX, named inputs/outputs, a symbolic batch axis
    for name, (inp, out) in {"encoder.onnx": ("images", "codes"), "decoder.onnx": ("codes", "images")}.items():
        graph = onnx.load(str(tmp_path / name))
        onnx.checker.check_model(graph)
        assert [i.name for i in graph.graph.input] == [inp] and [o.name for o in graph.graph.output] == [out]
        assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_aekit_export_end_to_end(run_dir, tmp_path, capsys):
    out = tmp_path / "deep" / "onnx"
    assert main(["export", str(run_dir), "--onnx", str(out)]) == 0
    assert f"output            {out}" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["decoder.onnx", "encoder.onnx", "preprocessing.json"]
    # following preprocessing.json by hand (uint8 / 255) gives aekit's own codes and reconstructions
    model = aekit.load(run_dir).model
    images = aekit.load_dataset("mnist-5k", progress=False).test.images[:37]
    x = images.numpy().astype(np.float32) / 255
    (codes,) = session(out / "encoder.onnx").run(None, {"images": x})
    np.testing.assert_allclose(codes, model.embed(images).numpy(), atol=1e-4)
    (recon,) = session(out / "decoder.onnx").run(None, {"codes": codes})
    np.testing.assert_allclose(recon, model.reconstruct(images).numpy(), atol=1e-4)
    # exporting again replaces the files
    assert main(["export", str(run_dir), "--onnx", str(out)]) == 0


def test_export_bad_input_is_one_line_exit_2(run_dir, tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    cases = [
        (["export", "--onnx", str(tmp_path / "o")], "needs a run folder (RUN) or --pretrained NAME"),
        (["export", str(tmp_path / "missing"), "--onnx", str(tmp_path / "o")], "not a folder"),
        (["export", str(run_dir)], "--onnx"),
        (["export", str(run_dir), "--onnx", str(tmp_path / "file")], "exists and is not a folder"),
        (["export", str(run_dir), "--onnx", str(tmp_path / "file" / "sub")], "cannot create"),
    ]
    for argv, pattern in cases:
        code = main(argv)
        assert_one_line_error(code, capsys.readouterr().err, pattern)
    if os.geteuid() != 0:  # root writes anywhere: a read-only folder only stops other users
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        code = main(["export", str(run_dir), "--onnx", str(locked)])
        assert_one_line_error(code, capsys.readouterr().err, "cannot write")
    monkeypatch.setattr("aekit.export.importlib.util.find_spec", lambda name: None)
    code = main(["export", str(run_dir), "--onnx", str(tmp_path / "o")])
    assert_one_line_error(code, capsys.readouterr().err, "pip install 'aekit[onnx]'")
    assert not (tmp_path / "o").exists()


def test_a_calibrated_threshold_travels_with_the_export(tmp_path):
    """The threshold is in preprocessing.json and both graphs' metadata, and ONNX Runtime's reconstructions
    with it flag the images aekit flags."""
    from aekit import anomaly

    splits = aekit.load_dataset("mnist-5k", progress=False)
    ones = splits.train.images[splits.train.labels == 1]
    np.save(tmp_path / "ones.npy", ones[:300].numpy())
    run = aekit.train("ae", out=tmp_path / "run", data=str(tmp_path / "ones.npy"), hidden=(64,), latent_dim=8,
                      likelihood="gaussian", epochs=3, progress=False, log=None)
    record = anomaly.calibrate(run, ones[300:], fpr=0.1)
    export_onnx(aekit.load(run.path), tmp_path / "onnx")
    described = json.loads((tmp_path / "onnx" / "preprocessing.json").read_text())["anomaly"]
    assert described["score"] == "mse" and described["threshold"] == record["threshold"]
    for name in ("encoder.onnx", "decoder.onnx"):
        props = {p.key: p.value for p in onnx.load(str(tmp_path / "onnx" / name)).metadata_props}
        assert float(props["aekit.anomaly.threshold"]) == record["threshold"] and props["aekit.anomaly.fpr"] == "0.1"
    x = splits.test.images[:200].numpy().astype(np.float32) / 255
    codes = session(tmp_path / "onnx" / "encoder.onnx").run(None, {"images": x})[0]
    recon = session(tmp_path / "onnx" / "decoder.onnx").run(None, {"codes": codes})[0]
    onnx_flags = ((recon - x) ** 2).reshape(len(x), -1).mean(1) > described["threshold"]
    ours = anomaly.decide(anomaly.score(run, splits.test.images[:200]), record).astype(bool)
    assert (onnx_flags == ours).mean() >= 0.99 and ours.any() and not ours.all()
    assert json.loads(json.dumps(export_onnx(aekit.load(run.path), tmp_path / "again")))  # re-exporting works


def test_a_spatial_code_model_is_refused_in_one_line(tmp_path, capsys):
    """Its graphs would need symbolic sizes (and the padding to the backbone's grid traced with them): refused,
    with the reason, before anything is written (it crashed in the exporter before)."""
    images = torch.randint(0, 256, (24, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    splits = Splits(aekit.ImageSet(images[:16], None, "a"), aekit.ImageSet(images[16:], None, "b"))
    run = aekit.train("ae", arch="resnet", hidden=(8, 16), latent_channels=4, epochs=1, batch_size=8, splits=splits,
                      out=tmp_path / "run", progress=False, log=None)
    code = main(["export", str(run.path), "--onnx", str(tmp_path / "o")])
    assert_one_line_error(code, capsys.readouterr().err, "a spatial code (--latent-channels 4)")
    assert not (tmp_path / "o").exists()
