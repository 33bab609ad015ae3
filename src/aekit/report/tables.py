"""Metrics as text: the headline numbers of a ``metrics.json`` as a two-column table."""

from __future__ import annotations

from html import escape
from typing import Any


def summary_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) pairs for the headline numbers of a metrics dict."""
    rows: list[tuple[str, str]] = []
    r = metrics.get("reconstruction", {})
    if r:
        rows += [
            ("MSE per pixel", f"{r['mse_per_pixel']:.5f}"),
            ("PSNR (dB)", f"{r['psnr_db']:.2f}"),
            ("SSIM", number(r.get("ssim"), ".4f")),
            ("BCE per image (nats)", f"{r['bce_per_image_nats']:.2f}"),
        ]
    p = metrics.get("pca", {})
    if p:
        rows += [
            (f"PCA-{p['n_components']} MSE / PSNR", f"{p['mse_per_pixel']:.5f} / {p['psnr_db']:.2f} dB"),
            ("beats PCA", "yes" if p.get("beats_pca") else "no"),
        ]
    v = metrics.get("variational", {})
    if v:
        rows += [
            ("negative ELBO (nats)", f"{v['neg_elbo_nats']:.2f}"),
            (f"IW-NLL, K={v['iw_samples']} (nats)", f"{v['iw_nll_nats']:.2f}"),
            ("IW-NLL (bits/dim)", f"{v['iw_nll_bits_per_dim']:.4f}"),
            ("active units", f"{v['active_units']} / {v['latent_dim']}"),
            ("dims with KL > 0.1 nats", f"{v.get('dims_kl_above_0.1')} / {v['latent_dim']}"),
        ]
    s = metrics.get("sparsity", {})
    if s:
        target = s.get("target_activation")
        rows += [
            ("mean activation",
             f"{s['mean_activation']:.4f}" + (f" (target {target:g})" if target is not None else "")),
            ("activations < 0.05", f"{100 * s['fraction_below_0.05']:.1f}%"),
            ("dead units", f"{s['dead_units']} / {s['latent_dim']}"),
        ]
    d = metrics.get("denoising", {})
    for level in d.get("levels", []):
        rows.append((f"denoise σ={level['noise_std']:g} (dB)",
                     f"{level['psnr_noisy_db']:.2f} -> {level['psnr_denoised_db']:.2f}"))
    rep = metrics.get("representation", {})
    for name in ("codes", "pca", "pixels"):
        if name in rep:
            rows.append((f"probe / 5-NN, {name} ({rep[name]['dim']}-d)",
                         f"{rep[name]['linear_probe_accuracy']:.3f} / {rep[name]['knn_accuracy']:.3f}"))
    g = metrics.get("generation", {})
    if g:
        rows += [
            ("Fréchet classifier dist., samples", f"{g['frechet_classifier_distance']:.2f}"),
            ("  ... diagonal Gaussian / midpoints",
             f"{g['frechet_diagonal_gaussian']:.2f} / {g['frechet_midpoints']:.2f}"),
            ("  ... reconstructions / real", f"{g['frechet_reconstructions']:.2f} / {g['frechet_train_images']:.2f}"),
        ]
    return rows


def format_table(metrics: dict[str, Any]) -> str:
    rows = summary_rows(metrics)
    width = max((len(label) for label, _ in rows), default=0) + 2
    lines = [f"{label:{width}s}{value}" for label, value in rows]
    for name, reason in metrics.get("skipped", {}).items():
        lines.append(f"{'(' + name + ')':{width}s}skipped: {reason}")
    lines.append(f"{'seconds':{width}s}{metrics.get('seconds', {}).get('total', 0):.1f}")
    return "\n".join(lines)


def number(value: Any, spec: str = ".4g") -> str:
    """A metric as text: ``n/a`` for a missing one, yes/no for a flag, numbers in ``spec``; anything else
    HTML-escaped (the report shows it)."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return format(value, spec)
    return escape_html(value)


def escape_html(value: Any) -> str:
    return escape(str(value), quote=True)
