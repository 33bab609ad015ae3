"""Figures of a trained run: PNGs under ``RUN/figures/``, each with a title and a one-line caption.

:func:`make_figures` draws every figure that applies and writes ``figures/index.json`` (file, title, caption
per figure) for the report. Each figure is a function that returns ``(png, title, caption)``, or None when it
does not apply to the model: ``images.py`` draws images, ``latent.py`` the latent space and training curves.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ...data import Splits
from ...errors import AekitError
from ...files import atomic_write_bytes, atomic_write_json, make_folder
from ...run import Run
from .images import (
    anomaly_figure,
    denoising_figure,
    filters_figure,
    interpolation_figure,
    reconstructions_figure,
    samples_figure,
)
from .latent import activations_figure, kl_figure, latent_figure, losses_figure, manifold_figure, traversals_figure
from .plotting import Drawn

FIGURES_DIR = "figures"
INDEX = "index.json"
FIGURE_FILES = (
    "losses", "reconstructions", "samples", "denoising", "anomalies", "latent", "manifold", "traversals",
    "interpolations", "kl_per_dim", "activations", "filters",
)


def make_figures(
    run: Run,
    splits: Splits,
    out_dir: str | os.PathLike | None = None,
    *,
    metrics: dict | None = None,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, str]]:
    """Draw every figure that applies to ``run`` into ``out_dir`` (default ``RUN/figures``).

    Returns
    -------
    list of dict
        ``{"file", "title", "caption"}`` per figure, in reading order; also written to ``index.json``.
    """
    if out_dir is None:
        if run.path is None:
            raise AekitError("the run has no folder: pass out_dir")
        out_dir = run.path / FIGURES_DIR
    out_dir = make_folder(Path(out_dir))
    log = log or (lambda message: None)
    if len(splits.test) == 0:
        raise AekitError("the test split holds no images")
    model, objective = run.model, run.config.objective
    target = objective.sparsity_target if objective.sparsity == "kl" else None
    makers: dict[str, Callable[[], Drawn | None]] = {
        "losses": lambda: losses_figure(run.history),
        "reconstructions": lambda: reconstructions_figure(model, splits),
        "samples": lambda: samples_figure(model, seed=seed),
        "denoising": lambda: denoising_figure(model, splits, metrics, trained=objective.noise_std, seed=seed),
        "anomalies": lambda: anomaly_figure(model, splits, objective),
        "latent": lambda: latent_figure(model, splits, seed=seed),
        "manifold": lambda: manifold_figure(model, splits),
        "traversals": lambda: traversals_figure(model, splits, metrics),
        "interpolations": lambda: interpolation_figure(model, splits),
        "kl_per_dim": lambda: kl_figure(metrics),
        "activations": lambda: activations_figure(model, splits, target=target),
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
        atomic_write_bytes(out_dir / f"{name}.png", png)
        index.append({"file": f"{name}.png", "title": title, "caption": caption})
    atomic_write_json(out_dir / INDEX, index)
    return index
