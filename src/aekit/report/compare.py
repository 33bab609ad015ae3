"""Side-by-side metrics of several runs, as Markdown and JSON, from their ``metrics.json``."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import AekitError
from ..evaluation import ensure_metrics
from ..files import atomic_write_bytes, check_writable
from ..run import CONFIG

# (label, path into metrics.json, format)
ROWS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("family", ("run", "family"), "s"),
    ("arch", ("run", "arch"), "s"),
    ("latent dim", ("run", "latent_dim"), "d"),
    ("epoch", ("run", "epoch"), "d"),
    ("test images", ("settings", "test_images"), "d"),
    ("MSE per pixel", ("reconstruction", "mse_per_pixel"), ".5f"),
    ("PSNR (dB)", ("reconstruction", "psnr_db"), ".2f"),
    ("SSIM", ("reconstruction", "ssim"), ".4f"),
    ("BCE per image (nats)", ("reconstruction", "bce_per_image_nats"), ".2f"),
    ("PCA MSE per pixel", ("pca", "mse_per_pixel"), ".5f"),
    ("PCA PSNR (dB)", ("pca", "psnr_db"), ".2f"),
    ("beats PCA", ("pca", "beats_pca"), "b"),
    ("negative ELBO (nats)", ("variational", "neg_elbo_nats"), ".2f"),
    ("IW-NLL (nats)", ("variational", "iw_nll_nats"), ".2f"),
    ("IW-NLL (bits/dim)", ("variational", "iw_nll_bits_per_dim"), ".4f"),
    ("IW samples K", ("variational", "iw_samples"), "d"),
    ("active units", ("variational", "active_units"), "d"),
    ("dims with KL > 0.1 nats", ("variational", "dims_kl_above_0.1"), "d"),
    ("mean activation", ("sparsity", "mean_activation"), ".4f"),
    ("dead units", ("sparsity", "dead_units"), "d"),
    ("linear probe, codes", ("representation", "codes", "linear_probe_accuracy"), ".3f"),
    ("5-NN, codes", ("representation", "codes", "knn_accuracy"), ".3f"),
    ("linear probe, PCA", ("representation", "pca", "linear_probe_accuracy"), ".3f"),
    ("5-NN, PCA", ("representation", "pca", "knn_accuracy"), ".3f"),
    ("linear probe, pixels", ("representation", "pixels", "linear_probe_accuracy"), ".3f"),
    ("5-NN, pixels", ("representation", "pixels", "knn_accuracy"), ".3f"),
    ("Fréchet classifier dist., samples", ("generation", "frechet_classifier_distance"), ".2f"),
    ("Fréchet classifier dist., diagonal Gaussian", ("generation", "frechet_diagonal_gaussian"), ".2f"),
    ("Fréchet classifier dist., midpoints", ("generation", "frechet_midpoints"), ".2f"),
    ("Fréchet classifier dist., reconstructions", ("generation", "frechet_reconstructions"), ".2f"),
)


def _get(metrics: dict, path: tuple[str, ...]) -> Any:
    value: Any = metrics
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _denoise_rows(all_metrics: list[dict]) -> list[tuple[str, list[Any]]]:
    levels = sorted({lv["noise_std"] for m in all_metrics for lv in _get(m, ("denoising", "levels")) or []})
    rows = []
    for sigma in levels:
        values = []
        for m in all_metrics:
            match = [lv for lv in _get(m, ("denoising", "levels")) or [] if lv["noise_std"] == sigma]
            values.append(match[0]["psnr_denoised_db"] if match else None)
        rows.append((f"denoised PSNR at σ={sigma:g} (dB)", values))
    return rows


def compare(
    run_dirs: list[str | os.PathLike],
    *,
    iw_samples: int | None = None,
    limit: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The metrics of several runs side by side; runs without a fresh ``metrics.json`` are evaluated first.

    Returns
    -------
    dict
        ``{"runs": [name, ...], "paths": [...], "rows": [{"metric", "values": [...]}]}``.
    """
    if not run_dirs:
        raise AekitError("compare needs at least one run folder")
    paths = [Path(p) for p in run_dirs]
    for p in paths:
        if not (p / CONFIG).is_file():
            raise AekitError(f"{p} is not a run folder (no {CONFIG})")
    all_metrics = []
    for p in paths:
        if log:
            log(f"reading the metrics of {p}")
        all_metrics.append(ensure_metrics(p, iw_samples=iw_samples, limit=limit, progress=progress, log=log))
    names = [p.name or str(p) for p in paths]
    if len(set(names)) < len(names):
        names = [str(p) for p in paths]
    rows = []
    warnings = _differences(names, all_metrics)
    for label, path, fmt in ROWS:
        values = [_get(m, path) for m in all_metrics]
        if any(v is not None for v in values):
            rows.append({"metric": label, "format": fmt, "values": values})
    for label, values in _denoise_rows(all_metrics):
        rows.append({"metric": label, "format": ".2f", "values": values})
    return {"runs": names, "paths": [str(p) for p in paths], "rows": rows, "warnings": warnings}


# what must agree between runs for their numbers to be comparable, and how to say it
SETTINGS = (("data", "data"), ("test_images", "test images"), ("seed", "seeds"), ("iw_samples", "importance samples"))


def _differences(names: list[str], all_metrics: list[dict]) -> list[str]:
    """One sentence per evaluation setting that differs between the runs (their numbers are then not comparable)."""
    out = []
    for key, what in SETTINGS:
        values = [_get(m, ("settings", key)) for m in all_metrics]
        if key == "iw_samples":
            values = [v for v in values if v is not None]  # only VAEs have them
        if len(set(map(str, values))) > 1:
            each = ", ".join(f"{name}: {_get(m, ('settings', key))}" for name, m in zip(names, all_metrics)
                             if _get(m, ("settings", key)) is not None)
            out.append(f"the runs were measured with different {what} ({each}): their numbers are not comparable; "
                       f"evaluate them again with the same options (e.g. aekit evaluate RUN --limit N)")
    return out


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "—"
    if fmt == "b":
        return "yes" if value else "no"
    if fmt == "s":
        return str(value).replace("|", "\\|")
    try:
        return format(value, fmt)
    except (TypeError, ValueError):
        return str(value)


def to_markdown(table: dict[str, Any]) -> str:
    """A Markdown table: one row per metric, one column per run; then the warnings, if any."""
    header = "| metric | " + " | ".join(name.replace("|", "\\|") for name in table["runs"]) + " |"
    rule = "|---|" + "---:|" * len(table["runs"])
    lines = [header, rule]
    for row in table["rows"]:
        lines.append(f"| {row['metric']} | " + " | ".join(_cell(v, row["format"]) for v in row["values"]) + " |")
    lines += [f"\n**Note:** {warning}" for warning in table.get("warnings", [])]
    return "\n".join(lines) + "\n"


def check_output(out: str | os.PathLike) -> tuple[Path, Path]:
    """The Markdown and JSON files ``-o out`` writes, checked to be writable (call it before any evaluating)."""
    out = Path(out)
    if out.suffix not in (".md", ".json"):
        raise AekitError(f"-o {out}: write the comparison as a .md (Markdown) or .json file")
    md, js = out.with_suffix(".md"), out.with_suffix(".json")
    for path in (md, js):
        check_writable(path)
    return md, js


def write_comparison(table: dict[str, Any], out: str | os.PathLike) -> list[Path]:
    """Write ``out`` as Markdown (``.md``) or JSON (``.json``) and its sibling in the other format."""
    md, js = check_output(out)
    atomic_write_bytes(md, to_markdown(table).encode("utf-8"))
    atomic_write_bytes(js, (json.dumps(table, indent=2) + "\n").encode("utf-8"))
    return [md, js] if Path(out).suffix == ".md" else [js, md]
