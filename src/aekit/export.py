"""Export a trained model to ONNX: an encoder, a decoder and the pre-processing they expect.

``export_onnx(model, out_dir)`` writes

* ``encoder.onnx``       -- images (N, C, H, W) float32 in [0, 1] -> codes (N, D) (posterior mean for a VAE);
* ``decoder.onnx``       -- codes (N, D) float32 -> mean images (N, C, H, W) in [0, 1];
* ``preprocessing.json`` -- layout, dtype, scaling, channels, size, latent and family, for any runtime.

Both graphs have a dynamic batch axis. They come from PyTorch's TorchScript-based exporter
(``dynamo=False``): it needs only the ``onnx`` package and handles ``dynamic_axes`` directly, where
the ``torch.export``-based one also needs ``onnxscript``.
"""

from __future__ import annotations

import importlib.util
import io
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._version import __version__
from .core.model import Autoencoder
from .errors import AekitError
from .files import atomic_write_bytes, atomic_write_json, check_writable, make_folder
from .run import Run

FORMAT = "aekit-onnx"
FORMAT_VERSION = 1
OPSET = 17
ENCODER, DECODER, PREPROCESSING = "encoder.onnx", "decoder.onnx", "preprocessing.json"


class _Encoder(nn.Module):
    def __init__(self, model: Autoencoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode(images).mode()  # (N, C, H, W) in [0, 1] -> (N, D)


class _Decoder(nn.Module):
    def __init__(self, model: Autoencoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.model.mean(self.model.decode(codes))  # (N, D) -> (N, C, H, W) in [0, 1]


def export_onnx(run: Run, out_dir: str | Path, *, opset: int = OPSET) -> dict[str, Any]:
    """Write ``encoder.onnx``, ``decoder.onnx`` and ``preprocessing.json`` into ``out_dir``.

    Parameters
    ----------
    run : Run
        A trained model, e.g. from :func:`aekit.load` or :func:`aekit.pretrained`.
    out_dir : path
        Created if missing; files already there with these names are replaced (atomically).
    opset : int
        The ONNX opset.

    Returns
    -------
    dict
        A summary: the folder, latent size and image shape.

    Examples
    --------
    >>> aekit.export.export_onnx(aekit.pretrained("mnist-vae"), "onnx/")           # doctest: +SKIP
    >>> import onnxruntime, numpy as np                                               # doctest: +SKIP
    >>> enc = onnxruntime.InferenceSession("onnx/encoder.onnx")                       # doctest: +SKIP
    >>> enc.run(None, {"images": np.zeros((2, 1, 28, 28), np.float32)})[0].shape     # doctest: +SKIP
    (2, 32)
    """
    if run.model.config.spatial:  # their graphs would need symbolic sizes and the padding traced with them
        raise AekitError("ONNX export takes models with a vector code (--latent-dim); this one has a spatial code "
                         f"(--latent-channels {run.model.config.latent_channels}): use it from Python or the aekit verbs")
    if importlib.util.find_spec("onnx") is None:
        raise AekitError("ONNX export needs the onnx package: pip install 'aekit[onnx]'")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise AekitError(f"--onnx {out} exists and is not a folder")
    check_writable(out, folder=True, nbytes=3 * 4 * sum(p.numel() for p in run.model.parameters()))
    make_folder(out)

    model = run.model.eval()
    c, h, w = model.config.image_shape
    d = model.config.latent_dim
    # Example batches of 2: a batch of 1 could let the exporter specialise the batch axis.
    encoder = _export(_Encoder(model), torch.full((2, c, h, w), 0.5), "images", "codes", opset)
    decoder = _export(_Decoder(model), torch.zeros(2, d), "codes", "images", opset)
    description = preprocessing(run, opset)
    if description["anomaly"] is not None:  # the calibrated threshold travels in both graphs' metadata too
        props = {f"aekit.anomaly.{k}": str(v) for k, v in description["anomaly"].items() if k != "how"}
        encoder, decoder = _with_metadata(encoder, props), _with_metadata(decoder, props)
    atomic_write_bytes(out / ENCODER, encoder)
    atomic_write_bytes(out / DECODER, decoder)
    atomic_write_json(out / PREPROCESSING, description)
    return {"encoder": str(out / ENCODER), "decoder": str(out / DECODER), "latent_dim": d,
            "image_shape": f"{c}x{h}x{w}", "output": str(out)}


def preprocessing(run: Run, opset: int = OPSET) -> dict[str, Any]:
    """What ``preprocessing.json`` says: how to turn an image into the encoder's input, and back."""
    config, m = run.config, run.model.config
    c, h, w = m.image_shape
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "aekit_version": __version__,
        "family": config.family,
        "arch": m.arch,
        "pretrained": run.name,
        "encoder": {
            "file": ENCODER,
            "input": {"name": "images", "shape": ["batch", c, h, w], "dtype": "float32", "layout": "NCHW",
                      "range": [0.0, 1.0]},
            "output": {"name": "codes", "shape": ["batch", m.latent_dim], "dtype": "float32",
                       "meaning": "posterior mean of q(z|x)" if m.latent == "gaussian" else "code"},
        },
        "decoder": {
            "file": DECODER,
            "input": {"name": "codes", "shape": ["batch", m.latent_dim], "dtype": "float32"},
            "output": {"name": "images", "shape": ["batch", c, h, w], "dtype": "float32", "layout": "NCHW",
                       "range": [0.0, 1.0], "meaning": "mean image: sigmoid of the decoder's logits"},
        },
        "input_image": {
            "channels": c,
            "color": {1: "grayscale", 3: "RGB"}.get(c, f"{c} channels"),
            "height": h,
            "width": w,
            "scaling": "uint8 pixels / 255 -> float32 in [0, 1]",
            "to_grayscale": "ITU-R 601-2 luma, as Pillow's convert('L')" if c == 1 else None,
            "resize": f"bilinear to {h}x{w}, as Pillow's resize (aekit's --image-size)",
        },
        "latent": {"dim": m.latent_dim, "kind": m.latent, "code_activation": m.code_activation,
                   "prior": "N(0, I)" if m.latent == "gaussian" else None},
        "trained_on": config.data.data,
        "anomaly": _anomaly(run),
        "opset": opset,
        "exporter": f"torch.onnx TorchScript (dynamo=False), torch {torch.__version__}",
    }


def _anomaly(run: Run) -> dict[str, Any] | None:
    """The run's calibrated anomaly threshold (aekit calibrate), or None."""
    from .anomaly import load_calibration

    record = load_calibration(run) if run.path is not None else None
    if record is None:
        return None
    how = {"mse": "mean over the pixels of (decoder(encoder(x)) - x)^2, x in [0, 1]: anomalous when above"}
    return {"score": record["score"], "threshold": record["threshold"], "fpr": record["fpr"],
            "how": how.get(record["score"], f"aekit.anomaly's {record['score']} score: anomalous when above")}


def _with_metadata(graph: bytes, props: dict[str, str]) -> bytes:
    """An ONNX model's bytes with ``props`` added to its metadata_props."""
    import onnx

    model = onnx.load_from_string(graph)
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model.SerializeToString()


def _export(module: nn.Module, example: torch.Tensor, input_name: str, output_name: str, opset: int) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its own deprecation
        torch.onnx.export(
            module, (example,), buffer, dynamo=False, opset_version=opset,
            input_names=[input_name], output_names=[output_name],
            dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
        )
    return buffer.getvalue()
