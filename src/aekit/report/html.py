"""``RUN/report.html``: one self-contained page per run.

The page holds the verdict in plain words (does the model beat PCA? how good are its samples?),
the metrics tables, every figure as a base64 PNG data URI with a one-line caption, and the
configuration. Inline CSS only: no scripts, no fonts or images from the network, so the file
can be mailed or archived as is. Everything taken from the config or paths is HTML-escaped.
"""

from __future__ import annotations

import base64
import datetime
import os
from collections.abc import Callable
from pathlib import Path

import torch

from .._version import __version__
from ..data import Splits
from ..errors import AekitError
from ..evaluation import ensure_metrics, evaluate_run, load_run_splits
from ..files import RunLock, atomic_write_bytes, check_writable, make_folder
from ..metrics.likelihood import IW_SAMPLES
from ..metrics.store import METRICS_FILE
from ..run import Run
from .figures import FIGURES_DIR, make_figures
from .tables import escape_html as _e
from .tables import number as _num
from .verdict import verdict

REPORT_FILE = "report.html"
REPORT_BYTES = 8 << 20  # the page and its figures: a few MB
FAMILY_NAMES = {
    "ae": "Autoencoder",
    "dae": "Denoising autoencoder",
    "sae": "Sparse autoencoder",
    "vae": "Variational autoencoder",
}

CSS = """
:root { color-scheme: light; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: #1d2330; background: #f5f6f8; margin: 0; }
main { max-width: 1000px; margin: 0 auto; padding: 24px 28px 48px; background: #fff; min-height: 100vh;
       box-shadow: 0 0 0 1px #e3e6eb; }
h1 { font-size: 26px; margin: 8px 0 2px; }
h2 { font-size: 20px; margin: 36px 0 10px; padding-bottom: 4px; border-bottom: 2px solid #e3e6eb; }
h3 { font-size: 16px; margin: 22px 0 6px; }
p.sub { color: #5b6475; margin: 0 0 16px; }
.verdict { background: #f0f5ff; border-left: 4px solid #1f77b4; padding: 10px 16px; margin: 14px 0; }
.verdict p { margin: 6px 0; }
.good { color: #1a7f37; font-weight: 600; }
.bad { color: #b42318; font-weight: 600; }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 14px; }
th, td { padding: 4px 12px; border-bottom: 1px solid #e8eaee; text-align: left; vertical-align: top; }
th { background: #f7f8fa; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.note { color: #5b6475; font-size: 13px; }
.grid2 { display: grid; grid-template-columns: 1fr 1fr; gap: 0 28px; }
.grid4 { display: grid; grid-template-columns: repeat(auto-fit, minmax(210px, 1fr)); gap: 0 18px; }
@media (max-width: 800px) { .grid2 { grid-template-columns: 1fr; } }
figure { margin: 18px 0 26px; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid #eceef2; }
figcaption { color: #4a5263; font-size: 14px; margin-top: 6px; }
figcaption b { color: #1d2330; }
code { font: 13px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: #f3f4f6;
       padding: 1px 4px; border-radius: 3px; }
footer { color: #8a93a3; font-size: 12px; margin-top: 40px; }
"""


def report(
    source: str | os.PathLike | Run,
    *,
    output: str | os.PathLike | None = None,
    data: str | None = None,
    data_dir: str | None = None,
    splits: Splits | None = None,
    iw_samples: int | None = None,
    limit: int | None = None,
    seed: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Write ``report.html``: metrics, figures under ``figures/``, configuration, in one self-contained page.

    Parameters
    ----------
    source : path or Run
        A run folder, or a Run such as ``aekit.pretrained(name)``.
    output : path, optional
        The folder to write in (created if missing); default the run folder. A Run without a folder needs it.
    data, data_dir, splits, iw_samples, limit, seed
        As for :func:`aekit.evaluation.evaluate_run`; ``limit`` also limits the test images in the figures.

    In the run folder, its ``metrics.json`` is reused when it measured these weights with these options, else the
    run is evaluated first; elsewhere the run is evaluated and the metrics written beside the report. Every
    output is checked to be writable before any work, and a run folder is locked while the report is made.

    Returns
    -------
    pathlib.Path
        The report's path.

    Examples
    --------
    >>> aekit.report("runs/vae-mlp-mnist-5k-1")   # doctest: +SKIP
    PosixPath('runs/vae-mlp-mnist-5k-1/report.html')
    """
    run = source if isinstance(source, Run) else Run.load(source)
    if output is None and run.path is None:
        raise AekitError(f"{run.label} has no run folder to write its report in (a shipped model's is not yours): "
                         "pass -o DIR (output=...)")
    out_dir = Path(output) if output is not None else run.path
    in_run = run.path is not None and out_dir.resolve() == run.path.resolve()
    check_writable(out_dir, folder=True, nbytes=REPORT_BYTES)
    for path in (out_dir / REPORT_FILE, out_dir / METRICS_FILE):
        if path.is_dir():
            raise AekitError(f"cannot write {path}: it is a folder")
    if (out_dir / FIGURES_DIR).exists() and not (out_dir / FIGURES_DIR).is_dir():
        raise AekitError(f"cannot write {out_dir / FIGURES_DIR}: it is not a folder")
    make_folder(out_dir)
    with RunLock(out_dir, "aekit report"):
        if splits is None:
            splits = load_run_splits(run, data=data, data_dir=data_dir, progress=progress)
        options = dict(data=data, data_dir=data_dir, splits=splits, iw_samples=iw_samples, limit=limit, progress=progress,
                       log=log)
        if in_run:
            metrics = ensure_metrics(out_dir, seed=seed, lock=False, **options)
        else:
            metrics = evaluate_run(run, output=out_dir / METRICS_FILE, seed=seed or 0, lock=False,
                                   **{**options, "iw_samples": iw_samples or IW_SAMPLES})
        shown = splits
        n_test = metrics.get("settings", {}).get("test_images")
        if n_test and n_test < len(splits.test):
            shown = Splits(splits.train, splits.test.subset(torch.arange(n_test)))
        index = make_figures(run, shown, out_dir / FIGURES_DIR, metrics=metrics,
                             seed=metrics.get("settings", {}).get("seed", 0), log=log)
        page = render_html(run, metrics, index, out_dir / FIGURES_DIR)
        path = out_dir / REPORT_FILE
        atomic_write_bytes(path, page.encode("utf-8"))
    return path


# ----- HTML -----


def _table(header: list[str], rows: list[list[str]], numeric_from: int = 1) -> str:
    """Cells are already-escaped HTML."""
    head = "".join(
        f'<th class="num">{h}</th>' if i >= numeric_from else f"<th>{h}</th>" for i, h in enumerate(header)
    )
    body = "".join(
        "<tr>" + "".join(
            f'<td class="num">{c}</td>' if i >= numeric_from else f"<td>{c}</td>" for i, c in enumerate(row)
        ) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _metric_tables(metrics: dict) -> str:
    parts = []
    r, p = metrics.get("reconstruction", {}), metrics.get("pca", {})
    if r:
        rows = [
            ["MSE per pixel", _num(r["mse_per_pixel"], ".5f"), _num(p.get("mse_per_pixel"), ".5f")],
            ["PSNR (dB)", _num(r["psnr_db"], ".2f"), _num(p.get("psnr_db"), ".2f")],
            ["SSIM", _num(r.get("ssim"), ".4f"), _num(p.get("ssim"), ".4f")],
            ["BCE per image (nats)", _num(r["bce_per_image_nats"], ".2f"), "—"],
        ]
        header = ["", "model", f"PCA-{p['n_components']}" if p else "PCA"]
        parts.append("<div><h3>Reconstruction of the test images</h3>" + _table(header, rows) + "</div>")
    rep = metrics.get("representation", {})
    if rep:
        rows = []
        for name, label in (("codes", "model codes"), ("pca", "PCA"), ("pixels", "raw pixels")):
            if name in rep:
                rows.append([label, str(rep[name]["dim"]), _num(100 * rep[name]["linear_probe_accuracy"], ".1f"),
                             _num(100 * rep[name]["knn_accuracy"], ".1f")])
        parts.append(
            "<div><h3>Classifying from the features (accuracy %)</h3>"
            + _table(["features", "dims", "linear probe", "5-NN"], rows)
            + f'<p class="sub">Probe: logistic regression on standardised features; both fitted on '
            f"{rep['train_points']} training images, scored on {rep['test_points']} test images.</p></div>"
        )
    v = metrics.get("variational", {})
    if v:
        rows = [
            ["negative ELBO", _num(v["neg_elbo_nats"], ".2f"), _num(v["neg_elbo_bits_per_dim"], ".4f")],
            [f"IW-NLL, K = {v['iw_samples']}", _num(v["iw_nll_nats"], ".2f"), _num(v["iw_nll_bits_per_dim"], ".4f")],
            ["KL(q(z|x) ‖ p(z))", _num(v["kl_nats"], ".2f"), "—"],
            ["active units", f"{v['active_units']} / {v['latent_dim']}", "—"],
            ["dimensions with KL > 0.1 nats", f"{v.get('dims_kl_above_0.1', 'n/a')} / {v['latent_dim']}", "—"],
        ]
        parts.append(
            "<div><h3>Likelihood (VAE)</h3>" + _table(["", "nats / image", "bits / dim"], rows)
            + f'<p class="sub">{_e(v["likelihood_note"])}. Active: Cov<sub>x</sub>(E<sub>q</sub>[z<sub>j</sub>]) '
            f"&gt; {v['active_unit_threshold']} (Burda et al. 2015).</p></div>"
        )
    s = metrics.get("sparsity", {})
    if s:
        target = s.get("target_activation")
        rows = [
            ["mean activation", _num(s["mean_activation"], ".4f")],
            ["target ρ", _num(target, "g")],
            ["activations below 0.05", _num(100 * s["fraction_below_0.05"], ".1f") + "%"],
            ["units above 0.5 per image", _num(s["units_on_per_image"], ".2f")],
            ["dead units", f"{s['dead_units']} / {s['latent_dim']}"],
        ]
        parts.append(
            "<div><h3>Sparse code</h3>" + _table(["", "value"], rows)
            + f'<p class="sub">Dead: {_e(s["dead_definition"])}.</p></div>'
        )
    d = metrics.get("denoising", {})
    if d:
        rows = [
            [f"{level['noise_std']:g}" + (" (trained)" if level.get("trained_level") else ""),
             _num(level["psnr_noisy_db"], ".2f"), _num(level["psnr_denoised_db"], ".2f"),
             f'<span class="{"good" if level["gain_db"] > 0 else "bad"}">{level["gain_db"]:+.2f}</span>']
            for level in d["levels"]
        ]
        parts.append(
            "<div><h3>Denoising Gaussian noise (PSNR, dB)</h3>"
            + _table(["noise σ", "noisy", "denoised", "gain"], rows)
            + f'<p class="sub">Noise clipped to [0, 1], seed {d["seed"]}.</p></div>'
        )
    g = metrics.get("generation", {})
    if g:
        rows = [
            [f"samples ({_e(g['sample_source'])})", _num(g["frechet_classifier_distance"], ".2f")],
            ["diagonal Gaussian fitted to the codes", _num(g.get("frechet_diagonal_gaussian"), ".2f")],
            ["midpoints between two test codes", _num(g.get("frechet_midpoints"), ".2f")],
            ["test reconstructions", _num(g["frechet_reconstructions"], ".2f")],
            ["real training images (noise floor)", _num(g["frechet_train_images"], ".2f")],
        ]
        c = g.get("classifier", {})
        parts.append(
            "<div><h3>Fréchet classifier distance to the test images</h3>" + _table(["images", "distance"], rows)
            + f'<p class="sub">Fréchet distance between Gaussians fitted to {g["images"]} images per set in the '
            f"{c.get('feature_dim')}-D features of a small CNN trained on this dataset's training split (test "
            f"accuracy {_num(100 * (c.get('test_accuracy') or 0), '.1f')}%). Like FID, but with a different "
            "feature network: compare between aekit runs on the same data only.</p></div>"
        )
    return '<div class="grid2">' + "".join(parts) + "</div>"


def _config_tables(config) -> str:
    tables = []
    for part in ("model", "objective", "data", "train"):
        rows = []
        for key, value in getattr(config, part).__dict__.items():
            shown = ",".join(map(str, value)) if isinstance(value, tuple) else ("—" if value is None else value)
            rows.append([f"<code>{_e(key)}</code>", _e(shown)])
        tables.append("<div>" + _table([_e(part), ""], rows, numeric_from=99) + "</div>")
    return f'<p class="sub">Family preset <code>{_e(config.family)}</code>; the fields below rebuild the run.</p>' \
        + '<div class="grid4">' + "".join(tables) + "</div>"


def _training_summary(rows: list[dict]) -> str:
    if not rows:
        return ""
    last = rows[-1]
    seconds = sum(r.get("epoch_seconds", 0) for r in rows)
    return (
        f"{len(rows)} epochs in {seconds:.0f} s; last epoch: train loss {last['train_loss']:.2f}, "
        f"test loss {last['test_loss']:.2f} nats per image"
    )


def render_html(run: Run, metrics: dict, index: list[dict], figures_dir: Path) -> str:
    """The report page as a string; figures are read from ``figures_dir`` and embedded."""
    config, m = run.config, run.config.model
    name = FAMILY_NAMES.get(config.family, config.family)
    settings = metrics.get("settings", {})
    latent = f"{m.latent_dim}-D {'Gaussian' if m.latent == 'gaussian' else 'deterministic'} latent" + (
        ", sigmoid codes" if m.code_activation == "sigmoid" else ""
    )
    subtitle = " · ".join(
        [
            f"{m.arch.upper()} {','.join(map(str, m.hidden))}",
            latent,
            f"{config.objective.likelihood} likelihood",
            f"data {config.data.data} ({m.channels}×{m.height}×{m.width})",
            f"epoch {run.epoch}",
        ]
    )
    evaluated = (
        f"Evaluated on {settings.get('test_images')} test images of {settings.get('data')} (seed {settings.get('seed')}"
        + (f", K = {settings['iw_samples']} importance samples" if settings.get("iw_samples") else "")
        + f") in {metrics.get('seconds', {}).get('total', 0):.0f} s."
    )
    training = _training_summary(run.history)
    skipped = "".join(
        f"<li>{_e(group)}: {_e(reason)}</li>" for group, reason in metrics.get("skipped", {}).items()
        if reason != "not asked for"
    )
    figures = []
    for entry in index:
        path = figures_dir / entry["file"]
        try:
            data = path.read_bytes()
        except OSError:
            continue
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        figures.append(
            f'<figure><img src="{uri}" alt="{_e(entry["title"])}">'
            f'<figcaption><b>{_e(entry["title"])}.</b> {_e(entry["caption"])}</figcaption></figure>'
        )
    judgement = "".join(f"<p>{sentence}</p>" for sentence in verdict(metrics, run.history))
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(name)}: {_e(run.label)} (aekit report)</title>
<style>{CSS}</style>
</head>
<body>
<main>
<h1>{_e(name)} <span style="color:#8a93a3;font-weight:400">{_e(run.label)}</span></h1>
<p class="sub">{_e(subtitle)}</p>
<div class="verdict">{judgement}</div>
<p class="sub">{_e(evaluated)}{' Training: ' + _e(training) + '.' if training else ''}</p>
<h2>Metrics</h2>
{_metric_tables(metrics)}
{f'<p class="sub">Not measured:</p><ul class="sub">{skipped}</ul>' if skipped else ''}
<h2>Figures</h2>
{''.join(figures)}
<h2>Configuration</h2>
{_config_tables(config)}
<footer>aekit {_e(__version__)} · report written {_e(stamp)} · run folder {_e(run.path)}</footer>
</main>
</body>
</html>
"""
