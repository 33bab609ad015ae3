"""Figures of images: reconstructions, samples, denoising, interpolations, the encoder's first-layer filters."""

from __future__ import annotations

import math

import torch
from torch import nn

from ...core.model import Autoencoder
from ...data import Splits
from ...metrics.pixels import psnr_per_image
from .plotting import (
    WIDTH,
    Drawn,
    figure,
    image_rows_figure,
    png,
    rows_image,
    show,
    style,
)


def reconstructions_figure(model: Autoencoder, splits: Splits, n: int = 10, pairs: int = 3) -> Drawn:
    images = splits.test.images[: n * pairs]
    clean = model.prepare(images)
    recon = model.reconstruct(images)
    rows, labels = [], []
    for p in range(math.ceil(len(clean) / n)):
        rows += [clean[p * n : (p + 1) * n], recon[p * n : (p + 1) * n]]
        labels += ["input", "reconstruction"]
    code = "the posterior mean" if model.is_variational else "the code"
    fig = image_rows_figure(rows, labels, "Test images and their reconstructions")
    return png(fig), "Reconstructions", f"Test images (odd rows) and the decoder's mean image of {code} (even rows)."


def samples_figure(model: Autoencoder, n: int = 60, seed: int = 0) -> Drawn | None:
    if not model.can_sample:
        return None
    samples = model.sample(n, seed=seed)
    rows = [samples[i : i + 12] for i in range(0, n, 12)]
    if model.is_variational:
        title, source = "Samples: decoded draws from the prior N(0, I)", "z ~ N(0, I), the VAE's prior"
    else:
        title = "Samples: decoded draws from a Gaussian fitted to the training codes"
        source = "a Gaussian fitted to the training codes (a plain autoencoder has no prior, so this is a stand-in)"
    fig = image_rows_figure(rows, [""] * len(rows), title, tile_inches=0.58)
    return png(fig), "Samples", f"{n} decoded draws from {source}; mean images, seed {seed}."


def denoising_figure(model: Autoencoder, splits: Splits, metrics: dict | None, *, trained: float = 0.0, n: int = 10,
                     seed: int = 0) -> Drawn:
    """``trained``: the noise std the model was trained with (shown as a row of its own)."""
    levels = sorted({0.3, 0.5, *([trained] if trained > 0 else [])})
    images = splits.test.images[:n]
    clean = model.prepare(images)
    rows, labels = [clean], ["clean"]
    for sigma in levels:
        noisy, denoised = model.denoise(images, noise_std=sigma, seed=seed)
        mark = " (trained)" if sigma == trained else ""
        rows += [noisy, denoised]
        labels += [
            f"σ={sigma:g}{mark} noisy\n{psnr_per_image(noisy, clean).mean():.1f} dB",
            f"denoised\n{psnr_per_image(denoised, clean).mean():.1f} dB",
        ]
    trained_text = f"trained with noise σ={trained:g}" if trained > 0 else "trained without noise"
    fig = image_rows_figure(rows, labels, f"Denoising Gaussian noise ({trained_text})")
    table = ""
    if metrics and metrics.get("denoising"):
        table = " Over the test set: " + ", ".join(
            f"σ={r['noise_std']:g} {r['psnr_noisy_db']:.1f}→{r['psnr_denoised_db']:.1f} dB"
            for r in metrics["denoising"]["levels"]
        ) + "."
    return (
        png(fig),
        "Denoising",
        (
            f"Clean test images, noisy copies (Gaussian noise, clipped to [0, 1]) and the model's reconstructions "
            f"of them; PSNR of the row against the clean row.{table}"
        ),
    )


def anomaly_figure(model: Autoencoder, splits: Splits, objective, n: int = 10, limit: int = 2000) -> Drawn | None:
    """The test images the model scores most and least anomalous (its family's default score), each with its
    reconstruction and its per-pixel error map on one colour scale."""
    from ...anomaly import default_score, heatmap, pixel_map, score_tensor

    if model.config.spatial or len(splits.test) < 2 * n:
        return None
    x = model.prepare(splits.test.images[:limit])
    kind = default_score(model)
    order = score_tensor(model, objective, x, kind).argsort()
    rows, labels = [], []
    errors = pixel_map(model, x[order[-n:][::-1].copy()]), pixel_map(model, x[order[:n].copy()])
    top = float(max(e.max() for e in errors))
    for name, picked, err in (("most anomalous", order[-n:][::-1].copy(), errors[0]),
                              ("most typical", order[:n].copy(), errors[1])):
        images = x[picked]
        rgb = lambda t: t.expand(-1, 3, -1, -1) if t.shape[1] == 1 else t  # noqa: E731
        rows += [rgb(images), rgb(model.reconstruct(images)), torch.stack([heatmap(e, top) for e in err])]
        labels += [f"{name}\n({kind} score)", "reconstruction", "error map"]
    fig = image_rows_figure(rows, labels, f"Anomaly scores: the {n} highest and lowest of {len(x)} test images")
    return png(fig), "Anomalies", (
        f"The test images with the highest and the lowest {kind} scores (aekit score's default for this family; "
        "higher = more anomalous), their reconstructions, and the squared error per pixel (inferno, one scale for "
        "both groups: black is none). `aekit score RUN INPUT -o scores.csv --maps DIR` writes such maps.")


def interpolation_figure(model: Autoencoder, splits: Splits, pairs: int = 4, steps: int = 9) -> Drawn | None:
    """Linear interpolation between the codes of test images (of different labels where known)."""
    test = splits.test
    index_pairs = []
    labels = test.labels
    used = set()
    for i in range(len(test)):
        if len(index_pairs) == pairs:
            break
        for j in range(i + 1, min(len(test), i + 50)):
            if i in used or j in used:
                continue
            if labels is None or labels[i] != labels[j]:
                index_pairs.append((i, j))
                used |= {i, j}
                break
    if not index_pairs:
        return None
    rows = []
    for i, j in index_pairs:
        ends = test.images[[i, j]]
        za, zb = model.embed(ends)  # vectors or maps: the straight line between them either way
        t = torch.linspace(0, 1, steps).view(-1, *[1] * za.dim())  # (steps, 1...) against a code's dimensions
        decoded = model.decode_images((1 - t) * za + t * zb, size=tuple(ends.shape[-2:]))
        clean = model.prepare(ends)
        rows.append(torch.cat([clean[:1], decoded, clean[1:]]))
    fig = image_rows_figure(rows, [""] * len(rows), "Interpolating between two test images in latent space")
    return (
        png(fig),
        "Interpolations",
        (
            f"Each row: a test image, {steps} images decoded along the straight line between the two codes, the "
            "other test image. A smooth, plausible path means a well-organised latent space."
        ),
    )


def filters_figure(model: Autoencoder, max_filters: int = 100) -> Drawn | None:
    """First-layer encoder weights as images: the rows of the first Linear layer (MLP) or the first conv's kernels."""
    layer = next((m for m in model.encoder.modules() if isinstance(m, (nn.Linear, nn.Conv2d))), None)
    if layer is None:
        return None
    w = layer.weight.detach().double()
    c, h, wd = model.config.image_shape
    if isinstance(layer, nn.Linear):
        if w.shape[1] != c * h * wd:
            return None
        filters = w.reshape(-1, c, h, wd)
        what = f"rows of the first Linear layer ({w.shape[0]} × {w.shape[1]}) reshaped to {c}×{h}×{wd}"
    else:
        filters = w  # (out, C, k, k)
        what = f"kernels of the first convolution ({w.shape[0]} × {w.shape[1]} × {w.shape[2]} × {w.shape[3]})"
    norms = filters.flatten(1).norm(dim=1)
    keep = norms.argsort(descending=True)[:max_filters]
    filters = filters[keep]
    if filters.shape[1] != 3:  # gray (a 4-channel image shows its first plane)
        filters = filters[:, :1]
        scale = filters.flatten(1).abs().amax(1).clamp_min(1e-12)[:, None, None, None]
        tiles = 0.5 + 0.5 * filters / scale  # per filter: 0 -> mid grey, ± max -> white / black
    else:
        low = filters.flatten(1).amin(1)[:, None, None, None]
        high = filters.flatten(1).amax(1)[:, None, None, None]
        tiles = (filters - low) / (high - low).clamp_min(1e-12)
    ncol = min(10 if tiles.shape[-1] > 8 else 16, len(tiles))
    rows = [tiles[i : i + ncol].float() for i in range(0, len(tiles), ncol)]
    array = rows_image(rows, pad=1)
    fig = figure(WIDTH * 0.75, WIDTH * 0.75 * array.shape[0] / array.shape[1] + 0.5)
    with style():
        ax = fig.add_subplot()
        show(ax, array)
        ax.set_axis_off()
        ax.set_title(f"First-layer encoder weights: the {len(tiles)} with the largest norm")
    return (
        png(fig),
        "Encoder filters",
        (
            f"The {what}; each scaled on its own (grey = 0). Stroke- and edge-like filters are the classic sign of a "
            "sparse or denoising autoencoder at work."
        ),
    )
