"""Figures of a trained run: PNGs under ``RUN/figures/``, each with a title and a one-line caption.

Drawn with matplotlib's object-oriented API on the Agg canvas (no pyplot, so the backend of
the caller's process is left alone). :func:`make_figures` draws every figure that applies and
writes ``figures/index.json`` (file, title, caption per figure) for the report.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import run as ckpt
from ..cpu import tune_cpu
from ..data import Splits
from ..errors import AekitError
from ..imaging import grid
from ..core.model import Autoencoder

FIGURES_DIR = "figures"
INDEX = "index.json"
DPI = 100
WIDTH = 9.5  # inches: every figure is about 950 px wide
TSNE_MAX = 2000  # points embedded by t-SNE
SCATTER_MAX = 5000  # points in the PCA / 2-D latent scatter
STYLE = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "xtick.labelsize": 9,
    "ytick.labelsize": 10,
    "legend.fontsize": 9,
    "figure.titlesize": 13,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
    "figure.facecolor": "white",
    "axes.facecolor": "white",
    "savefig.facecolor": "white",
}
TRAIN_COLOR, TEST_COLOR, ACCENT = "#1f77b4", "#ff7f0e", "#d62728"


# ----- drawing helpers -----


def _figure(width: float, height: float):
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(STYLE):
        return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    with _style():  # tick labels are made at draw time
        fig.savefig(buffer, format="png", dpi=DPI, facecolor="white", bbox_inches="tight", pad_inches=0.1)
    return buffer.getvalue()


def _rows_image(rows: list[torch.Tensor], pad: int = 2) -> np.ndarray:
    """Equal-length sets of (n, C, H, W) images as the rows of one (H', W'[, 3]) array in [0, 1]."""
    n = max(len(r) for r in rows)
    shape = rows[0].shape[1:]
    filled = [torch.cat([r, torch.ones(n - len(r), *shape)]) if len(r) < n else r for r in rows]
    tiled = grid(torch.cat(filled).float().clamp(0, 1), ncol=n, pad=pad)  # (C, H', W')
    array = tiled.permute(1, 2, 0).numpy()
    return array[:, :, 0] if array.shape[2] == 1 else array[:, :, :3]


def _show(ax, array: np.ndarray, *, extent=None) -> None:
    kwargs = {"cmap": "gray", "vmin": 0, "vmax": 1} if array.ndim == 2 else {}
    ax.imshow(array, interpolation="nearest", extent=extent, **kwargs)


def _image_rows_figure(
    rows: list[torch.Tensor], labels: list[str], title: str, pad: int = 1, tile_inches: float = 0.62,
):
    """A figure of image rows with a label left of each row; each image about ``tile_inches`` wide."""
    longest = max((len(line) for label in labels for line in label.split("\n")), default=0)
    label_space = 0.2 + 0.095 * longest  # inches for 10 pt tick labels
    array = _rows_image(rows, pad)
    h_px, w_px = array.shape[:2]
    image_width = tile_inches * w_px / (rows[0].shape[3] + pad)
    height = image_width * h_px / w_px + 0.5
    fig = _figure(min(WIDTH, image_width + label_space), height)
    with _style():
        ax = fig.add_subplot()
        _show(ax, array)
        h = rows[0].shape[2]
        ax.set_yticks([pad + i * (h + pad) + h / 2 for i in range(len(rows))], labels)
        ax.set_xticks([])
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_title(title)
    return fig


def _style():
    import matplotlib

    return matplotlib.rc_context(STYLE)


def _label_colors(labels: np.ndarray):
    import matplotlib

    n = int(labels.max()) + 1 if len(labels) else 1
    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20" if n <= 20 else "viridis"]
    return [cmap(i % cmap.N if n <= 20 else i / max(n - 1, 1)) for i in range(n)]


def _scatter(ax, points: np.ndarray, labels: np.ndarray | None, classes: list[str] | None, legend: bool) -> None:
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=6, alpha=0.6, color=TRAIN_COLOR, linewidths=0)
        return
    colors = _label_colors(labels)
    for c in np.unique(labels):
        mask = labels == c
        name = classes[c] if classes and c < len(classes) else str(c)
        ax.scatter(points[mask, 0], points[mask, 1], s=6, alpha=0.7, color=colors[c], linewidths=0, label=name)
    if legend and len(np.unique(labels)) <= 20:
        ax.legend(markerscale=2.5, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5), title="label")


def _span(values: torch.Tensor, low: float, high: float, steps: int) -> torch.Tensor:
    """``steps`` values from the ``low`` to the ``high`` quantile of ``values`` (widened if they coincide)."""
    a, b = float(torch.quantile(values, low)), float(torch.quantile(values, high))
    if b - a < 1e-6:
        a, b = a - 1.0, b + 1.0
    return torch.linspace(a, b, steps)


def _codes(model: Autoencoder, images: torch.Tensor) -> torch.Tensor:
    return model.embed(images)  # (N, D); posterior means for a VAE


# ----- the figures: each returns (title, caption) or None when it does not apply -----

Drawn = tuple[bytes, str, str]  # (png, title, caption)


def reconstructions_figure(model: Autoencoder, splits: Splits, n: int = 10, pairs: int = 3) -> Drawn:
    images = splits.test.images[: n * pairs]
    clean = model.prepare(images)
    recon = model.reconstruct(images)
    rows, labels = [], []
    for p in range(math.ceil(len(clean) / n)):
        rows += [clean[p * n : (p + 1) * n], recon[p * n : (p + 1) * n]]
        labels += ["input", "reconstruction"]
    code = "the posterior mean" if model.is_variational else "the code"
    fig = _image_rows_figure(rows, labels, "Test images and their reconstructions")
    return _png(fig), "Reconstructions", f"Test images (odd rows) and the decoder's mean image of {code} (even rows)."


def samples_figure(model: Autoencoder, n: int = 60, seed: int = 0) -> Drawn:
    samples = model.sample(n, seed=seed)
    rows = [samples[i : i + 12] for i in range(0, n, 12)]
    if model.is_variational:
        title, source = "Samples: decoded draws from the prior N(0, I)", "z ~ N(0, I), the VAE's prior"
    else:
        title = "Samples: decoded draws from a Gaussian fitted to the training codes"
        source = "a Gaussian fitted to the training codes (a plain autoencoder has no prior, so this is a stand-in)"
    fig = _image_rows_figure(rows, [""] * len(rows), title, tile_inches=0.58)
    return _png(fig), "Samples", f"{n} decoded draws from {source}; mean images, seed {seed}."


def denoising_figure(model: Autoencoder, splits: Splits, metrics: dict | None, n: int = 10, seed: int = 0) -> Drawn:
    from ..evaluate import psnr_per_image

    trained = model.run_config.objective.noise_std if hasattr(model, "run_config") else 0.0
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
    fig = _image_rows_figure(rows, labels, f"Denoising Gaussian noise ({trained_text})")
    table = ""
    if metrics and metrics.get("denoising"):
        table = " Over the test set: " + ", ".join(
            f"σ={r['noise_std']:g} {r['psnr_noisy_db']:.1f}→{r['psnr_denoised_db']:.1f} dB"
            for r in metrics["denoising"]["levels"]
        ) + "."
    return (
        _png(fig),
        "Denoising",
        (
            f"Clean test images, noisy copies (Gaussian noise, clipped to [0, 1]) and the model's reconstructions "
            f"of them; PSNR of the row against the clean row.{table}"
        ),
    )


def latent_figure(model: Autoencoder, splits: Splits, seed: int = 0) -> Drawn | None:
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    from ..evaluate import single_threaded

    test = splits.test
    n = min(len(test), SCATTER_MAX)
    codes = _codes(model, test.images[:n]).double().numpy()
    labels = test.labels[:n].numpy() if test.labels is not None else None
    what = "posterior means" if model.is_variational else "codes"
    d = codes.shape[1]
    if n < 5:
        return None  # too few points for PCA / t-SNE to mean anything
    coloured = "coloured by label" if labels is not None else "(unlabelled data)"
    if d <= 2:
        fig = _figure(WIDTH * 0.7, WIDTH * 0.55)
        with _style():
            ax = fig.add_subplot()
            points = codes if d == 2 else np.column_stack([codes[:, 0], np.zeros(len(codes))])
            _scatter(ax, points, labels, test.classes, legend=True)
            ax.set_xlabel("z0")
            ax.set_ylabel("z1" if d == 2 else "")
            ax.set_title(f"The {d}-D latent space: {what} of {n} test images")
        caption = (
            f"{what.capitalize()} of {n} test images, {coloured}; the latent is {d}-D, so this is the space itself."
        )
        return _png(fig), "Latent space", caption
    m = min(n, TSNE_MAX)
    with single_threaded():
        pca_points = PCA(2, random_state=seed).fit(codes).transform(codes)
        tsne_points = TSNE(2, init="pca", learning_rate="auto", perplexity=min(30.0, max(2.0, (m - 1) / 3.5)),
                           max_iter=500, random_state=seed).fit_transform(codes[:m])
    fig = _figure(WIDTH, WIDTH * 0.45)
    with _style():
        left, right = fig.subplots(1, 2)
        _scatter(left, pca_points, labels, test.classes, legend=False)
        left.set_title(f"PCA of the {d}-D {what} ({n} images)")
        left.set_xlabel("PC 1")
        left.set_ylabel("PC 2")
        _scatter(right, tsne_points, None if labels is None else labels[:m], test.classes, legend=True)
        right.set_title(f"t-SNE ({m} images)")
        right.set_xticks([])
        right.set_yticks([])
    caption = (
        f"The {d}-D {what} of test images {coloured}: a linear view (PCA) and a nonlinear one (t-SNE, which keeps "
        "neighbourhoods but not distances)."
    )
    return _png(fig), "Latent space", caption


def manifold_figure(model: Autoencoder, splits: Splits, steps: int = 16) -> Drawn | None:
    """For a 2-D latent: decode a grid of codes (Gaussian quantiles for a VAE, the codes' range otherwise)."""
    if model.config.latent_dim != 2:
        return None
    if model.is_variational:
        q = torch.linspace(0.03, 0.97, steps)
        axes_values = [torch.distributions.Normal(0.0, 1.0).icdf(q)] * 2
        how = "quantiles 3%…97% of the prior N(0, 1) in each dimension"
    else:
        codes = _codes(model, splits.test.images[:SCATTER_MAX])
        axes_values = [_span(codes[:, j], 0.02, 0.98, steps) for j in range(2)]
        how = "from the 2nd to the 98th percentile of the test codes in each dimension"
    z0, z1 = axes_values
    zz = torch.stack(torch.meshgrid(z0, z1.flip(0), indexing="xy"), -1).reshape(-1, 2)  # rows: z1 from top down
    images = model.decode_images(zz)
    array = grid(images, ncol=steps, pad=0).permute(1, 2, 0).numpy()
    array = array[:, :, 0] if array.shape[2] == 1 else array[:, :, :3]
    fig = _figure(WIDTH * 0.75, WIDTH * 0.75)
    with _style():
        ax = fig.add_subplot()
        dz0 = (z0[-1] - z0[0]) / max(steps - 1, 1) / 2
        dz1 = (z1[-1] - z1[0]) / max(steps - 1, 1) / 2
        _show(ax, array, extent=(float(z0[0] - dz0), float(z0[-1] + dz0), float(z1[0] - dz1), float(z1[-1] + dz1)))
        ax.set_aspect("auto")
        ax.set_xlabel("z0")
        ax.set_ylabel("z1")
        ax.set_title("The decoded 2-D latent space")
    return _png(fig), "Decoded manifold", f"Mean images decoded from a {steps}×{steps} grid of codes, {how}."


def traversals_figure(
    model: Autoencoder, splits: Splits, metrics: dict | None, rows: int = 8, steps: int = 11
) -> Drawn:
    """Vary one latent dimension at a time around the code of a test image."""
    test = splits.test.images
    codes = _codes(model, test[:SCATTER_MAX])
    base = codes[0]
    variational = model.is_variational
    if variational:
        kl = (metrics or {}).get("variational", {}).get("kl_per_dim_nats")
        if kl is None:
            with torch.inference_mode():
                kl = model.encode(model.prepare(test[:1000])).kl_per_dim().mean(0).tolist()
        score, score_name = torch.tensor(kl), "KL"
    else:
        score, score_name = codes.var(0, unbiased=False), "var"
    dims = [int(j) for j in score.argsort(descending=True)[:rows]]
    sigmoid = model.config.code_activation == "sigmoid"
    images_rows, labels = [], []
    for j in dims:
        if variational:
            values = torch.linspace(-3, 3, steps)
        elif sigmoid:
            values = torch.linspace(0, 1, steps)  # a sparse unit from off to fully on
        else:
            values = _span(codes[:, j], 0.01, 0.99, steps)
        z = base.repeat(steps, 1)
        z[:, j] = values
        images_rows.append(model.decode_images(z))
        labels.append(f"z{j} ({score_name} {float(score[j]):.2g})")
    if variational:
        title = "Latent traversals: one dimension from −3 to +3, the top dimensions by KL"
        how = "set to −3…+3 (prior standard deviations)"
        order = "highest mean KL first"
    elif sigmoid:
        title = "Latent traversals: one sigmoid unit from 0 (off) to 1 (fully on)"
        how = "swept from 0 to 1"
        order = "highest variance over the test codes first"
    else:
        title = "Latent traversals: one dimension from its 1st to 99th percentile"
        how = "swept from its 1st to its 99th percentile over the test codes"
        order = "highest variance first"
    fig = _image_rows_figure(images_rows, labels, title)
    return (
        _png(fig),
        "Latent traversals",
        f"Each row starts from the code of the first test image and changes one dimension, {how}; {order}.",
    )


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
        za, zb = _codes(model, ends)
        t = torch.linspace(0, 1, steps)[:, None]
        decoded = model.decode_images((1 - t) * za + t * zb)
        clean = model.prepare(ends)
        rows.append(torch.cat([clean[:1], decoded, clean[1:]]))
    fig = _image_rows_figure(rows, [""] * len(rows), "Interpolating between two test images in latent space")
    return (
        _png(fig),
        "Interpolations",
        (
            f"Each row: a test image, {steps} images decoded along the straight line between the two codes, the "
            "other test image. A smooth, plausible path means a well-organised latent space."
        ),
    )


def losses_figure(run_dir: Path | None) -> Drawn | None:
    rows = ckpt.read_jsonl(Path(run_dir) / ckpt.METRICS) if run_dir else []
    if not rows:
        return None
    terms = [t for t in ("loss", "recon", "kl", "sparsity") if any(r.get(f"train_{t}") for r in rows)]
    names = {
        "loss": "total loss", "recon": "reconstruction NLL", "kl": "KL(q(z|x) ‖ p(z))", "sparsity": "sparsity penalty",
    }
    epochs = [r["epoch"] for r in rows]
    fig = _figure(WIDTH, 3.0)
    with _style():
        axes = fig.subplots(1, len(terms), squeeze=False)[0]
        for ax, term in zip(axes, terms):
            ax.plot(epochs, [r.get(f"train_{term}") for r in rows], "o-", color=TRAIN_COLOR, ms=4, label="train")
            ax.plot(epochs, [r.get(f"test_{term}") for r in rows], "s--", color=TEST_COLOR, ms=4, label="test")
            ax.set_title(names[term])
            ax.set_xlabel("epoch")
            if len(epochs) <= 12:
                ax.set_xticks(epochs)
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("nats per image")
        axes[0].legend(frameon=False)
    return (
        _png(fig),
        "Training curves",
        (
            "Loss terms per epoch, nats per image: train (mean over the epoch's steps) and test (at the epoch's end, "
            "fixed noise)."
        ),
    )


def activations_figure(model: Autoencoder, splits: Splits, metrics: dict | None) -> Drawn | None:
    if model.config.code_activation != "sigmoid":
        return None
    from ..evaluate import DEAD_ACTIVATION

    codes = _codes(model, splits.test.images[:SCATTER_MAX]).double().numpy()
    objective = model.run_config.objective if hasattr(model, "run_config") else None
    target = objective.sparsity_target if objective and objective.sparsity == "kl" else None
    per_unit = codes.mean(0)
    dead = codes.max(0) <= DEAD_ACTIVATION
    order = np.argsort(-per_unit)
    fig = _figure(WIDTH, 3.4)
    with _style():
        left, right = fig.subplots(1, 2, width_ratios=[1, 1.4])
        left.hist(codes.ravel(), bins=50, range=(0, 1), color=TRAIN_COLOR, log=True)
        left.set_xlabel("activation")
        left.set_ylabel("count (log scale)")
        left.set_title(f"All activations ({codes.shape[0]} images × {codes.shape[1]} units)")
        colors = [ACCENT if dead[j] else TRAIN_COLOR for j in order]
        right.bar(np.arange(len(order)), per_unit[order], color=colors, width=0.8)
        right.set_xlabel("unit (sorted by mean activation)")
        right.set_ylabel("mean activation")
        right.set_title("Mean activation per unit" + (" (red: dead)" if dead.any() else ""))
        if target is not None:
            for ax in (left, right):
                line = ax.axvline if ax is left else ax.axhline
                line(target, color=ACCENT, ls="--", lw=1.2, label=f"target ρ = {target:g}")
            right.legend(frameon=False)
    caption = (
        "Sigmoid code activations on the test set: their distribution (a sparse code piles up near 0) and each "
        f"unit's mean; a unit is dead if it never exceeds {DEAD_ACTIVATION} on the test set."
    )
    return _png(fig), "Code activations", caption


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
    array = _rows_image(rows, pad=1)
    fig = _figure(WIDTH * 0.75, WIDTH * 0.75 * array.shape[0] / array.shape[1] + 0.5)
    with _style():
        ax = fig.add_subplot()
        _show(ax, array)
        ax.set_axis_off()
        ax.set_title(f"First-layer encoder weights: the {len(tiles)} with the largest norm")
    return (
        _png(fig),
        "Encoder filters",
        (
            f"The {what}; each scaled on its own (grey = 0). Stroke- and edge-like filters are the classic sign of a "
            "sparse or denoising autoencoder at work."
        ),
    )


def kl_figure(metrics: dict | None) -> Drawn | None:
    v = (metrics or {}).get("variational")
    if not v:
        return None
    kl = np.array(v["kl_per_dim_nats"])
    variance = np.array(v["posterior_mean_variance"])
    active = variance > v["active_unit_threshold"]
    order = np.argsort(-kl)
    fig = _figure(WIDTH, 3.0)
    with _style():
        ax = fig.add_subplot()
        colors = [TRAIN_COLOR if active[j] else "#bbbbbb" for j in order]
        ax.bar(np.arange(len(kl)), kl[order], color=colors, width=0.85)
        ax.set_xticks(np.arange(len(kl)), [f"z{j}" for j in order], rotation=90 if len(kl) > 16 else 0)
        ax.set_ylabel("mean KL (nats)")
        ax.axhline(0.1, color=ACCENT, ls="--", lw=1, label="0.1 nats")
        ax.legend(frameon=False)
        ax.set_title(
            f"KL per latent dimension: {v['active_units']} of {len(kl)} active by Cov_x(E_q[z_j]) > "
            f"{v['active_unit_threshold']:g} (grey: inactive)"
        )
    return (
        _png(fig),
        "KL per dimension",
        (
            "Mean KL(q(z_j|x) ‖ N(0, 1)) per latent dimension on the test set, sorted; grey bars are inactive units "
            f"(Cov_x(E_q[z_j]) ≤ {v['active_unit_threshold']}, Burda et al. 2015); the dashed line at 0.1 nats is a "
            "stricter view: dimensions below it carry almost no information about the image."
        ),
    )


# ----- all of them -----

FIGURE_FILES = (
    "losses", "reconstructions", "samples", "denoising", "latent", "manifold", "traversals",
    "interpolations", "kl_per_dim", "activations", "filters",
)


def make_figures(
    model: Autoencoder,
    splits: Splits,
    out_dir: str | os.PathLike | None = None,
    *,
    metrics: dict | None = None,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, str]]:
    """Draw every figure that applies to ``model`` into ``out_dir`` (default ``RUN/figures``).

    Returns
    -------
    list of dict
        ``{"file", "title", "caption"}`` per figure, in reading order; also written to ``index.json``.
    """
    tune_cpu()
    if out_dir is None:
        run_dir = getattr(model, "run_dir", None)
        if run_dir is None:
            raise AekitError("the model has no run folder: pass out_dir")
        out_dir = Path(run_dir) / FIGURES_DIR
    out_dir = ckpt.make_folder(Path(out_dir))
    log = log or (lambda message: None)
    if len(splits.test) == 0:
        raise AekitError("the test split holds no images")
    run_dir = getattr(model, "run_dir", None)
    makers: dict[str, Callable[[], Drawn | None]] = {
        "losses": lambda: losses_figure(run_dir),
        "reconstructions": lambda: reconstructions_figure(model, splits),
        "samples": lambda: samples_figure(model, seed=seed),
        "denoising": lambda: denoising_figure(model, splits, metrics, seed=seed),
        "latent": lambda: latent_figure(model, splits, seed=seed),
        "manifold": lambda: manifold_figure(model, splits),
        "traversals": lambda: traversals_figure(model, splits, metrics),
        "interpolations": lambda: interpolation_figure(model, splits),
        "kl_per_dim": lambda: kl_figure(metrics),
        "activations": lambda: activations_figure(model, splits, metrics),
        "filters": lambda: filters_figure(model),
    }
    index = []
    for name in FIGURE_FILES:
        log(f"drawing {name} ...")
        drawn = makers[name]()
        stale = out_dir / f"{name}.png"
        if drawn is None:
            stale.unlink(missing_ok=True)  # from an earlier, different model in this folder
            continue
        png, title, caption = drawn
        ckpt.atomic_write_bytes(out_dir / f"{name}.png", png)
        index.append({"file": f"{name}.png", "title": title, "caption": caption})
    ckpt.atomic_write_json(out_dir / INDEX, index)
    return index


def read_index(figures_dir: str | os.PathLike) -> list[dict[str, Any]] | None:
    """The figure index if present and readable, else None."""
    path = Path(figures_dir) / INDEX
    if not path.is_file():
        return None
    try:
        index = ckpt.read_json(path, "figure index")
    except AekitError:
        return None
    keys = {"file", "title", "caption"}
    if not isinstance(index, list) or not all(isinstance(e, dict) and keys <= set(e) for e in index):
        return None
    return index
