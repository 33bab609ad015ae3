"""Figures of the latent space and of training: the code map, the 2-D manifold, traversals, KL per dimension,
sparse activations, the training curves."""

from __future__ import annotations

import numpy as np
import torch

from ...core.model import Autoencoder
from ...cpu import single_threaded
from ...data import Splits
from ...imaging import grid
from ...metrics.sparsity import DEAD_ACTIVATION
from .plotting import (
    ACCENT,
    SCATTER_MAX,
    TEST_COLOR,
    TRAIN_COLOR,
    TSNE_MAX,
    WIDTH,
    Drawn,
    codes_of,
    figure,
    image_rows_figure,
    png,
    scatter,
    show,
    span,
    style,
)


def latent_figure(model: Autoencoder, splits: Splits, seed: int = 0) -> Drawn | None:
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE


    test = splits.test
    n = min(len(test), SCATTER_MAX)
    codes = codes_of(model, test.images[:n]).double().numpy()
    labels = test.labels[:n].numpy() if test.labels is not None else None
    what = "posterior means" if model.is_variational else "codes"
    d = codes.shape[1]
    if n < 5:
        return None  # too few points for PCA / t-SNE to mean anything
    coloured = "coloured by label" if labels is not None else "(unlabelled data)"
    if d <= 2:
        fig = figure(WIDTH * 0.7, WIDTH * 0.55)
        with style():
            ax = fig.add_subplot()
            points = codes if d == 2 else np.column_stack([codes[:, 0], np.zeros(len(codes))])
            scatter(ax, points, labels, test.classes, legend=True)
            ax.set_xlabel("z0")
            ax.set_ylabel("z1" if d == 2 else "")
            ax.set_title(f"The {d}-D latent space: {what} of {n} test images")
        caption = (
            f"{what.capitalize()} of {n} test images, {coloured}; the latent is {d}-D, so this is the space itself."
        )
        return png(fig), "Latent space", caption
    m = min(n, TSNE_MAX)
    with single_threaded():
        pca_points = PCA(2, random_state=seed).fit(codes).transform(codes)
        tsne_points = TSNE(2, init="pca", learning_rate="auto", perplexity=min(30.0, max(2.0, (m - 1) / 3.5)),
                           max_iter=500, random_state=seed).fit_transform(codes[:m])
    fig = figure(WIDTH, WIDTH * 0.45)
    with style():
        left, right = fig.subplots(1, 2)
        scatter(left, pca_points, labels, test.classes, legend=False)
        left.set_title(f"PCA of the {d}-D {what} ({n} images)")
        left.set_xlabel("PC 1")
        left.set_ylabel("PC 2")
        scatter(right, tsne_points, None if labels is None else labels[:m], test.classes, legend=True)
        right.set_title(f"t-SNE ({m} images)")
        right.set_xticks([])
        right.set_yticks([])
    caption = (
        f"The {d}-D {what} of test images {coloured}: a linear view (PCA) and a nonlinear one (t-SNE, which keeps "
        "neighbourhoods but not distances)."
    )
    return png(fig), "Latent space", caption


def manifold_figure(model: Autoencoder, splits: Splits, steps: int = 16) -> Drawn | None:
    """For a 2-D latent: decode a grid of codes (Gaussian quantiles for a VAE, the codes' range otherwise)."""
    if model.config.latent_dim != 2:
        return None
    if model.is_variational:
        q = torch.linspace(0.03, 0.97, steps)
        axes_values = [torch.distributions.Normal(0.0, 1.0).icdf(q)] * 2
        how = "quantiles 3%…97% of the prior N(0, 1) in each dimension"
    else:
        codes = codes_of(model, splits.test.images[:SCATTER_MAX])
        axes_values = [span(codes[:, j], 0.02, 0.98, steps) for j in range(2)]
        how = "from the 2nd to the 98th percentile of the test codes in each dimension"
    z0, z1 = axes_values
    zz = torch.stack(torch.meshgrid(z0, z1.flip(0), indexing="xy"), -1).reshape(-1, 2)  # rows: z1 from top down
    images = model.decode_images(zz)
    array = grid(images, ncol=steps, pad=0).permute(1, 2, 0).numpy()
    array = array[:, :, 0] if array.shape[2] == 1 else array[:, :, :3]
    fig = figure(WIDTH * 0.75, WIDTH * 0.75)
    with style():
        ax = fig.add_subplot()
        dz0 = (z0[-1] - z0[0]) / max(steps - 1, 1) / 2
        dz1 = (z1[-1] - z1[0]) / max(steps - 1, 1) / 2
        show(ax, array, extent=(float(z0[0] - dz0), float(z0[-1] + dz0), float(z1[0] - dz1), float(z1[-1] + dz1)))
        ax.set_aspect("auto")
        ax.set_xlabel("z0")
        ax.set_ylabel("z1")
        ax.set_title("The decoded 2-D latent space")
    return png(fig), "Decoded manifold", f"Mean images decoded from a {steps}×{steps} grid of codes, {how}."


def traversals_figure(
    model: Autoencoder, splits: Splits, metrics: dict | None, rows: int = 8, steps: int = 11
) -> Drawn | None:
    """Vary one latent dimension at a time around the code of a test image (a vector latent's)."""
    if model.config.spatial:
        return None  # a map's units are positions x channels: one at a time shows a blob, not a factor
    test = splits.test.images
    codes = codes_of(model, test[:SCATTER_MAX])
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
            values = span(codes[:, j], 0.01, 0.99, steps)
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
    fig = image_rows_figure(images_rows, labels, title)
    return (
        png(fig),
        "Latent traversals",
        f"Each row starts from the code of the first test image and changes one dimension, {how}; {order}.",
    )


def kl_figure(metrics: dict | None) -> Drawn | None:
    v = (metrics or {}).get("variational")
    if not v:
        return None
    kl = np.array(v["kl_per_dim_nats"])
    variance = np.array(v["posterior_mean_variance"])
    active = variance > v["active_unit_threshold"]
    order = np.argsort(-kl)
    fig = figure(WIDTH, 3.0)
    with style():
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
        png(fig),
        "KL per dimension",
        (
            "Mean KL(q(z_j|x) ‖ N(0, 1)) per latent dimension on the test set, sorted; grey bars are inactive units "
            f"(Cov_x(E_q[z_j]) ≤ {v['active_unit_threshold']}, Burda et al. 2015); the dashed line at 0.1 nats is a "
            "stricter view: dimensions below it carry almost no information about the image."
        ),
    )


def activations_figure(model: Autoencoder, splits: Splits, *, target: float | None = None) -> Drawn | None:
    """``target``: the mean activation a KL sparsity penalty asked for, if any."""
    if model.config.code_activation != "sigmoid":
        return None
    codes = codes_of(model, splits.test.images[:SCATTER_MAX]).double().numpy()
    per_unit = codes.mean(0)
    dead = codes.max(0) <= DEAD_ACTIVATION
    order = np.argsort(-per_unit)
    fig = figure(WIDTH, 3.4)
    with style():
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
    return png(fig), "Code activations", caption


def losses_figure(rows: list[dict]) -> Drawn | None:
    """The training curves of a run's history (its metrics.jsonl rows)."""
    if not rows:
        return None
    terms = [t for t in ("loss", "recon", "kl", "sparsity") if any(r.get(f"train_{t}") for r in rows)]
    names = {
        "loss": "total loss", "recon": "reconstruction NLL", "kl": "KL(q(z|x) ‖ p(z))", "sparsity": "sparsity penalty",
    }
    epochs = [r["epoch"] for r in rows]
    fig = figure(WIDTH, 3.0)
    with style():
        axes = fig.subplots(1, len(terms), squeeze=False)[0]
        for ax, term in zip(axes, terms):
            ax.plot(epochs, [r.get(f"train_{term}") for r in rows], "o-", color=TRAIN_COLOR, ms=4, label="train")
            if any(f"test_{term}" in r for r in rows):
                ax.plot(epochs, [r.get(f"test_{term}") for r in rows], "s--", color=TEST_COLOR, ms=4, label="test")
            ax.set_title(names[term])
            ax.set_xlabel("epoch")
            if len(epochs) <= 12:
                ax.set_xticks(epochs)
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("nats per image")
        axes[0].legend(frameon=False)
    return (
        png(fig),
        "Training curves",
        (
            "Loss terms per epoch, nats per image: train (mean over the epoch's steps) and test (at the epoch's end, "
            "fixed noise)."
        ),
    )
