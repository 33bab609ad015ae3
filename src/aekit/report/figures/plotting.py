"""Drawing helpers shared by the report's figures: matplotlib's object-oriented API on the Agg canvas (no
pyplot, so the backend of the caller's process is left alone), one style, image rows, scatters."""

from __future__ import annotations

import io

import numpy as np
import torch

from ...core.model import Autoencoder
from ...imaging import grid

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


def figure(width: float, height: float):
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(STYLE):
        return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def png(fig) -> bytes:
    buffer = io.BytesIO()
    with style():  # tick labels are made at draw time
        fig.savefig(buffer, format="png", dpi=DPI, facecolor="white", bbox_inches="tight", pad_inches=0.1)
    return buffer.getvalue()


def rows_image(rows: list[torch.Tensor], pad: int = 2) -> np.ndarray:
    """Equal-length sets of (n, C, H, W) images as the rows of one (H', W'[, 3]) array in [0, 1]."""
    n = max(len(r) for r in rows)
    shape = rows[0].shape[1:]
    filled = [torch.cat([r, torch.ones(n - len(r), *shape)]) if len(r) < n else r for r in rows]
    tiled = grid(torch.cat(filled).float().clamp(0, 1), ncol=n, pad=pad)  # (C, H', W')
    array = tiled.permute(1, 2, 0).numpy()
    return array[:, :, 0] if array.shape[2] == 1 else array[:, :, :3]


def show(ax, array: np.ndarray, *, extent=None) -> None:
    kwargs = {"cmap": "gray", "vmin": 0, "vmax": 1} if array.ndim == 2 else {}
    ax.imshow(array, interpolation="nearest", extent=extent, **kwargs)


def image_rows_figure(
    rows: list[torch.Tensor], labels: list[str], title: str, pad: int = 1, tile_inches: float = 0.62,
):
    """A figure of image rows with a label left of each row; each image about ``tile_inches`` wide."""
    longest = max((len(line) for label in labels for line in label.split("\n")), default=0)
    label_space = 0.2 + 0.095 * longest  # inches for 10 pt tick labels
    array = rows_image(rows, pad)
    h_px, w_px = array.shape[:2]
    image_width = tile_inches * w_px / (rows[0].shape[3] + pad)
    height = image_width * h_px / w_px + 0.5
    fig = figure(min(WIDTH, image_width + label_space), height)
    with style():
        ax = fig.add_subplot()
        show(ax, array)
        h = rows[0].shape[2]
        ax.set_yticks([pad + i * (h + pad) + h / 2 for i in range(len(rows))], labels)
        ax.set_xticks([])
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_title(title)
    return fig


def style():
    import matplotlib

    return matplotlib.rc_context(STYLE)


def label_colors(labels: np.ndarray):
    import matplotlib

    n = int(labels.max()) + 1 if len(labels) else 1
    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20" if n <= 20 else "viridis"]
    return [cmap(i % cmap.N if n <= 20 else i / max(n - 1, 1)) for i in range(n)]


def scatter(ax, points: np.ndarray, labels: np.ndarray | None, classes: list[str] | None, legend: bool) -> None:
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=6, alpha=0.6, color=TRAIN_COLOR, linewidths=0)
        return
    colors = label_colors(labels)
    for c in np.unique(labels):
        mask = labels == c
        name = classes[c] if classes and c < len(classes) else str(c)
        ax.scatter(points[mask, 0], points[mask, 1], s=6, alpha=0.7, color=colors[c], linewidths=0, label=name)
    if legend and len(np.unique(labels)) <= 20:
        ax.legend(markerscale=2.5, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5), title="label")


def span(values: torch.Tensor, low: float, high: float, steps: int) -> torch.Tensor:
    """``steps`` values from the ``low`` to the ``high`` quantile of ``values`` (widened if they coincide)."""
    a, b = float(torch.quantile(values, low)), float(torch.quantile(values, high))
    if b - a < 1e-6:
        a, b = a - 1.0, b + 1.0
    return torch.linspace(a, b, steps)


def codes_of(model: Autoencoder, images: torch.Tensor) -> torch.Tensor:
    """Codes as vectors: (N, D), a spatial latent's (N, C, h, w) flattened; posterior means for a VAE."""
    return model.embed(images).flatten(1)


Drawn = tuple[bytes, str, str]  # (png, title, caption)
