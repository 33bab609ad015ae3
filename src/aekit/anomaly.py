"""Anomaly scores: one number per image, higher = less like the training images (PyOD's convention), and a
threshold calibrated on normal images at a chosen false-positive rate.

Scores (``--score``):

=============  ===============================================================================================
``mse``        mean squared error of the reconstruction, per pixel (the default of the ae, dae and sae families)
``nll``        -log p(x | z) under the run's likelihood at the code (nats per image)
``elbo``       a VAE's negative ELBO, its KL in closed form and its reconstruction term at the posterior mean (no
               sampling: an image scores the same in any batch, in any order; the vae family's default)
``iwae``       -log p(x) of a VAE by importance weighting (K samples, seeded; tighter, K times the cost)
``latent``     -log density of the code under the Gaussian fitted to the training codes, up to a constant (ae,
               dae, sae; a VAE's posterior means under its prior rank digits it never saw as more normal, so a
               VAE scores with elbo or iwae)
=============  ===============================================================================================

A calibration (:func:`calibrate`) is ``calibration.json`` in the run folder: the score, the threshold (the
(1 - fpr) quantile of the normal images' scores, the higher of the two neighbours), a summary of their
distribution, and the SHA-256 of the weights it was measured with, so that a retrained model does not keep a
stale threshold.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import torch

from .core.model import Autoencoder
from .core.objectives import reconstruction_nll
from .data import ImageSet, load_images
from .data.machine import check_memory
from .errors import AekitError
from .files import atomic_write_bytes, check_writable, make_folder
from .imaging import save_npy
from .run import MODEL, Run

SCORES = ("mse", "nll", "elbo", "iwae", "latent")
CALIBRATION = "calibration.json"
CALIBRATION_FORMAT = "aekit-calibration"
IWAE_SAMPLES = 64
SEED = 0


def default_score(model: Autoencoder) -> str:
    """``elbo`` for a VAE, ``mse`` for every other family."""
    return "elbo" if model.is_variational else "mse"


@torch.inference_mode()
def score(run: Run, images: torch.Tensor, kind: str | None = None, *, batch_size: int = 256) -> np.ndarray:
    """Anomaly scores of uint8 images (N, C, H, W): float64 (N,), higher = more anomalous.

    Examples
    --------
    >>> import torch, aekit
    >>> from aekit.anomaly import score
    >>> run = aekit.pretrained("mnist-vae")
    >>> score(run, torch.zeros(3, 1, 28, 28, dtype=torch.uint8), "mse").shape
    (3,)
    """
    model = run.model.eval()
    return score_tensor(model, run.config.objective, model.prepare(images), kind, batch_size=batch_size)


@torch.inference_mode()
def score_tensor(model: Autoencoder, objective, x_all: torch.Tensor, kind: str | None = None, *,
                 batch_size: int = 256) -> np.ndarray:
    """:func:`score` of images already as floats in [0, 1], (N, C, H, W), for a model and its objective."""
    model.eval()
    kind = kind or default_score(model)
    if kind not in SCORES:
        raise AekitError(f"unknown score {kind!r}: choose from {', '.join(SCORES)}")
    if kind in ("elbo", "iwae") and not model.is_variational:
        raise AekitError(f"the {kind} score needs a VAE (this model's code is not variational): use mse, nll or "
                         "latent")
    if kind == "latent" and not model.can_sample:
        raise AekitError("the latent score needs a bottleneck code (an --arch unet code is a denoiser's features): "
                         "use mse or nll")
    if kind == "latent" and model.is_variational:
        raise AekitError("the latent score is a deterministic code's (its Gaussian is fitted to the training codes): "
                         "score a VAE with elbo, iwae, nll or mse")
    if kind == "iwae":
        from .metrics.likelihood import importance_weighted_log_likelihood, iw_decoding, log_likelihood_fn

        decode, chunk = iw_decoding(model)
        log_px, _ = importance_weighted_log_likelihood(model.encode, decode, log_likelihood_fn(objective),
                                                       x_all, IWAE_SAMPLES, chunk_size=chunk, seed=SEED)
        return _finite(-log_px.numpy(), kind)
    out = []
    for x in x_all.split(batch_size):
        posterior = model.encode(x)
        if kind == "latent":
            out.append(_latent_score(model, posterior.mode()))
            continue
        logits = model.decode(posterior.mode(), size=x.shape[-2:])
        if kind == "mse":
            out.append((model.mean(logits) - x).pow(2).flatten(1).mean(1))
        else:
            nll = reconstruction_nll(logits, x, objective)
            out.append(nll + posterior.kl() if kind == "elbo" else nll)
    return _finite(torch.cat(out).double().numpy() if out else np.zeros(0), kind)


@torch.inference_mode()
def pixel_map(model: Autoencoder, x: torch.Tensor) -> torch.Tensor:
    """Where an image is anomalous: the squared error of its reconstruction per pixel, averaged over the channels:
    floats in [0, 1] (N, C, H, W) -> (N, H, W)."""
    model.eval()
    return (model.reconstruct(x) - x).pow(2).mean(1)


def heatmap(errors: torch.Tensor, top: float) -> torch.Tensor:
    """(H, W) errors -> an RGB image (3, H, W) in [0, 1]: matplotlib's inferno over [0, top]."""
    from matplotlib import colormaps

    colors = colormaps["inferno"]((errors / max(top, 1e-12)).clamp(0, 1).numpy())[..., :3]  # (H, W, 3)
    return torch.from_numpy(colors).permute(2, 0, 1).float()


def save_maps(model: Autoencoder, x: torch.Tensor, folder: Path) -> float:
    """For each image, ``<index>.png``: the image, its reconstruction and its error map, one above the other, the
    maps on one scale for all (0 to the largest pixel error among them, returned), so maps compare across images."""
    from .imaging import rows, save_png

    errors = pixel_map(model, x)
    top = float(errors.max()) if errors.numel() else 1.0
    recon = model.reconstruct(x)
    for i in range(len(x)):
        grey = lambda t: t.expand(3, -1, -1) if t.shape[0] == 1 else t  # noqa: E731
        save_png(rows(grey(x[i])[None], grey(recon[i])[None], heatmap(errors[i], top)[None]), folder / f"{i:05d}.png",
                 scale=max(1, 96 // x.shape[-1]))
    return top


def _latent_score(model: Autoencoder, codes: torch.Tensor) -> torch.Tensor:
    """-log N(code; mean, L L^T) + const: (B,)."""
    flat = codes.flatten(1)
    if model.config.spatial:  # the fitted Gaussian is over the channels, shared by every position
        flat = codes.movedim(1, -1).reshape(-1, codes.shape[1])
    white = torch.linalg.solve_triangular(model.code_scale_tril, (flat - model.code_mean).T, upper=False).T
    per = 0.5 * white.pow(2).sum(1)
    return per.reshape(len(codes), -1).sum(1) if model.config.spatial else per


def _finite(scores: np.ndarray, kind: str) -> np.ndarray:
    bad = ~np.isfinite(scores)
    if bad.any():
        raise AekitError(f"{int(bad.sum())} of {len(scores)} {kind} scores are not finite (NaN or infinite): the model "
                         "has diverged or its weights are damaged")
    return scores


def weights_digest(run: Run) -> str:
    """SHA-256 of the run's weights file (what a calibration was measured with)."""
    if run.path is None or not (Path(run.path) / MODEL).exists():
        raise AekitError("calibration needs a saved run folder (its weights file names what was calibrated)")
    return hashlib.sha256((Path(run.path) / MODEL).read_bytes()).hexdigest()


def calibrate(run: Run, images: torch.Tensor, fpr: float = 0.05, kind: str | None = None) -> dict:
    """Score normal images and store, in the run folder, the threshold that flags a fraction ``fpr`` of them."""
    if not 0 < fpr < 1 or not math.isfinite(fpr):
        raise AekitError(f"--fpr must be in (0, 1) (got {fpr})")
    kind = kind or default_score(run.model)
    scores = score(run, images, kind)
    if len(scores) < math.ceil(1 / fpr):
        raise AekitError(f"a threshold at {fpr:g} false positives needs at least {math.ceil(1 / fpr)} normal images "
                         f"(got {len(scores)})")
    threshold = float(np.quantile(scores, 1 - fpr, method="higher"))
    quantiles = {f"q{q:g}": float(np.quantile(scores, q / 100)) for q in (1, 5, 25, 50, 75, 95, 99)}
    record = {"format": CALIBRATION_FORMAT, "format_version": 1, "score": kind, "fpr": fpr, "threshold": threshold,
              "images": len(scores), "flagged": int((scores > threshold).sum()),
              "summary": {"mean": float(scores.mean()), "std": float(scores.std()), "min": float(scores.min()),
                          "max": float(scores.max()), **quantiles},
              "weights_sha256": weights_digest(run)}
    atomic_write_bytes(Path(run.path) / CALIBRATION, (json.dumps(record, indent=2) + "\n").encode())
    return record


def load_calibration(run: Run) -> dict | None:
    """The run's calibration, or None when it has none; a stale or damaged one is a one-line error."""
    path = Path(run.path) / CALIBRATION if run.path is not None else None
    if path is None or not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise AekitError(f"{path} cannot be read ({error}): run aekit calibrate again") from None
    if not isinstance(record, dict) or record.get("format") != CALIBRATION_FORMAT or \
            not isinstance(record.get("threshold"), (int, float)) or record.get("score") not in SCORES:
        raise AekitError(f"{path} is not an aekit calibration: run aekit calibrate again")
    if record.get("weights_sha256") != weights_digest(run):
        raise AekitError(f"{path} was measured with other weights (the run was retrained): run aekit calibrate again")
    return record


def decide(scores: np.ndarray, calibration: dict) -> np.ndarray:
    """1 where a score is above the calibrated threshold (an anomaly), else 0."""
    return (scores > calibration["threshold"]).astype(np.int64)


def _scored_images(run: Run, spec: str, limit: int | None, data_dir: str | None) -> ImageSet:
    """INPUT at its own size (never resized: an image of another size than the model's is an error here)."""
    c, h, w = run.model.config.image_shape
    images = load_images(spec, data_dir=data_dir or run.config.data.data_dir, channels=c, progress=False)
    if images.shape[-2:] != (h, w) and not run.model.config.spatial:
        raise AekitError(f"{spec} holds {images.shape[-1]}x{images.shape[-2]} images; this model scores {w}x{h} "
                         "images (resize them first: a score of a resized image is not the image's)")
    if limit is not None:
        images = images.subset(torch.arange(min(limit, len(images))))
    if len(images) == 0:
        raise AekitError(f"{spec} holds no images")
    check_memory(f"scoring {len(images):,} images", 4 * 4 * len(images) * math.prod(images.shape))
    return images


def score_files(run: Run, spec: str, out: str | Path, *, kind: str | None = None, need_decisions: bool = False,
                limit: int | None = None, data_dir: str | None = None, maps: str | Path | None = None) -> dict:
    """Anomaly scores of INPUT (:mod:`aekit.anomaly`) as a .csv (index, [label,] score, [anomaly]) or .npy (N,);
    with a calibration in the run folder (and the same score), a decision per image: 1 = anomaly; with ``maps``,
    a PNG per image in that folder: image | reconstruction | per-pixel error (:func:`save_maps`)."""
    out = Path(out)
    if out.suffix not in (".csv", ".npy"):
        raise AekitError(f"-o {out}: give a name ending in .csv (scores and decisions) or .npy (scores)")
    check_writable(out)
    calibration = load_calibration(run)
    kind = kind or (calibration["score"] if calibration else default_score(run.model))
    if need_decisions and calibration is None:
        raise AekitError("this run has no calibration: run aekit calibrate RUN NORMAL_IMAGES --fpr 0.05 first")
    if need_decisions and calibration["score"] != kind:
        raise AekitError(f"the run is calibrated for the {calibration['score']} score, not {kind}")
    images = _scored_images(run, spec, limit, data_dir)
    scores = score(run, images.images, kind)
    decisions = decide(scores, calibration) if calibration and calibration["score"] == kind else None
    if out.suffix == ".npy":
        save_npy(torch.from_numpy(scores), out)
    else:
        header = ["index"] + (["label"] if images.labels is not None else []) + ["score"] + \
            (["anomaly"] if decisions is not None else [])
        lines = [",".join(header)]
        for i, value in enumerate(scores):
            row = [str(i)] + ([str(int(images.labels[i]))] if images.labels is not None else []) + [repr(float(value))]
            lines.append(",".join(row + ([str(int(decisions[i]))] if decisions is not None else [])))
        atomic_write_bytes(out, ("\n".join(lines) + "\n").encode())
    result = {"images": len(scores), "score": kind, "mean": float(scores.mean()), "max": float(scores.max())}
    if decisions is not None:
        result |= {"threshold": calibration["threshold"], "anomalies": int(decisions.sum())}
    if maps is not None:
        result["maps"] = str(maps)
        result["map_scale_top"] = save_maps(run.model, run.model.prepare(images.images), make_folder(maps))
    return {**result, "output": str(out)}


def calibrate_files(run: Run, spec: str, *, fpr: float, kind: str | None = None, limit: int | None = None,
              data_dir: str | None = None) -> dict:
    """Store the threshold flagging a fraction ``fpr`` of INPUT's (normal) images in RUN/calibration.json."""
    if not 0 < fpr < 1:
        raise AekitError(f"--fpr must be in (0, 1) (got {fpr})")
    check_writable(Path(run.path) / CALIBRATION)
    record = calibrate(run, _scored_images(run, spec, limit, data_dir).images, fpr, kind)
    return {key: record[key] for key in ("score", "fpr", "threshold", "images", "flagged")} | \
        {"output": str(Path(run.path) / CALIBRATION)}


__all__ = ["SCORES", "calibrate", "calibrate_files", "decide", "default_score", "load_calibration", "score",
           "score_files"]
