"""evaluate, report and compare end to end on tiny mnist-5k runs of all four families; the report is valid,
self-contained HTML whose figures are real PNGs; everything from paths and configs is escaped."""

import base64
import io
import json
from html.parser import HTMLParser

import pytest
import torch
from PIL import Image

import aekit
from aekit.cli import main
from aekit.report.figures import make_figures
from aekit.report.html import report

TINY = ["--epochs", "1", "--batch-size", "128", "--quiet"]
FAMILIES = {  # family -> options: every latent kind, a conv backbone, a 2-D latent
    "ae": ["--hidden", "64", "--latent-dim", "8"],
    "dae": ["--arch", "conv", "--hidden", "8,16", "--latent-dim", "8"],
    "sae": ["--hidden", "64", "--latent-dim", "16"],
    "vae": ["--hidden", "64", "--latent-dim", "2"],
}
FAST = ["--iw-samples", "20", "--limit", "300", "--quiet"]



@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    out = {}
    for family, options in FAMILIES.items():
        out[family] = root / family
        report = ["--report"] if family == "ae" else []  # train --report: evaluated and reported at the end
        assert main(["train", "--model", family, *TINY, *options, *report, "--out", str(out[family])]) == 0
    assert (out["ae"] / "report.html").is_file() and (out["ae"] / "metrics.json").is_file()
    assert not (out["vae"] / "report.html").exists()
    return out


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


class _Page(HTMLParser):
    VOID = frozenset({"meta", "img", "br", "hr", "link", "input", "col", "source", "wbr"})

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.images, self.tags, self.errors, self.text = [], [], set(), [], []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        for name in ("href", "src", "action"):
            if name in attrs and not str(attrs[name]).startswith("data:"):
                self.errors.append(f"external {name}: {attrs[name][:80]}")
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unbalanced </{tag}> (open: {self.stack[-3:]})")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def check_report(path):
    """Parse the report; return the parser. Fails on anything a self-contained valid page must not have."""
    html = path.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    page = _Page()
    page.feed(html)
    page.close()
    assert not page.errors, page.errors
    assert not page.stack, page.stack
    assert {"html", "head", "body", "title", "style", "table", "figure"} <= page.tags
    assert not {"script", "link", "iframe", "object"} & page.tags
    assert "http://" not in html and "https://" not in html and "url(" not in html
    index = json.loads((path.parent / "figures" / "index.json").read_text())
    assert len(page.images) == len(index) >= 8
    for img in page.images:
        assert img["src"].startswith("data:image/png;base64,")
        data = base64.b64decode(img["src"].split(",", 1)[1], validate=True)
        assert len(data) > 1000
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == "PNG" and im.width > 200 and im.height > 100
            im.verify()
        assert img.get("alt")
    return page


def test_evaluate_report_and_compare_every_family(runs, capsys, tmp_path):
    for family, run_dir in runs.items():
        code, out, err = run(capsys, "evaluate", run_dir, *FAST)
        assert code == 0, err
        assert "PSNR" in out and "beats PCA" in out
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["settings"]["test_images"] == 300
        for group in ("reconstruction", "pca", "denoising", "representation", "generation"):
            assert group in metrics, (family, group)
        assert isinstance(metrics["pca"]["beats_pca"], bool)
        assert 0 < metrics["reconstruction"]["ssim"] <= 1
        assert metrics["representation"]["pixels"]["dim"] == 784
        assert metrics["generation"]["frechet_train_images"] < metrics["generation"]["frechet_classifier_distance"]
        assert ("variational" in metrics) == (family == "vae")
        assert ("sparsity" in metrics) == (family == "sae")
        levels = [lv["noise_std"] for lv in metrics["denoising"]["levels"]]
        assert levels == [0.1, 0.3, 0.5, 0.7]
        if family == "dae":
            assert [lv["trained_level"] for lv in metrics["denoising"]["levels"]] == [False, False, True, False]
        if family == "vae":
            v = metrics["variational"]
            assert v["iw_samples"] == 20 and v["iw_nll_nats"] < v["neg_elbo_nats"]
            assert "likelihood_note" in v

        stamp = (run_dir / "metrics.json").stat().st_mtime_ns
        code, out, err = run(capsys, "report", run_dir, "--quiet")
        assert code == 0, err
        assert (run_dir / "metrics.json").stat().st_mtime_ns == stamp  # fresh metrics are reused
        page = check_report(run_dir / "report.html")
        text = " ".join(page.text)
        assert "PCA" in text and ("beats PCA" in text or "does not beat PCA" in text)
        files = {e["file"] for e in json.loads((run_dir / "figures" / "index.json").read_text())}
        assert ("manifold.png" in files) == (family == "vae")  # the only 2-D latent
        assert ("activations.png" in files) == (family == "sae")
        assert ("kl_per_dim.png" in files) == (family == "vae")
        assert {"losses.png", "reconstructions.png", "samples.png", "denoising.png", "anomalies.png", "latent.png",
                "traversals.png", "interpolations.png", "filters.png"} <= files

    table = tmp_path / "table.md"
    code, out, err = run(capsys, "compare", *runs.values(), "-o", table, "--quiet")
    assert code == 0, err
    assert out.startswith("| metric | ae | dae | sae | vae |")
    assert table.read_text().startswith("| metric |")
    data = json.loads(table.with_suffix(".json").read_text())
    assert data["runs"] == ["ae", "dae", "sae", "vae"]
    rows = {r["metric"]: r["values"] for r in data["rows"]}
    assert rows["family"] == ["ae", "dae", "sae", "vae"]
    assert rows["IW-NLL (nats)"][:3] == [None, None, None] and rows["IW-NLL (nats)"][3] > 0


def test_report_refreshes_stale_metrics_and_escapes_paths(tmp_path, capsys):
    data = aekit.load_dataset("mnist-5k", progress=False)
    small = aekit.Splits(data.train, data.test.subset(torch.arange(200)))
    run_dir = tmp_path / 'run <b>&"x'
    aekit.train("ae", splits=small, hidden=(32,), latent_dim=4, epochs=1, out=run_dir, progress=False, log=None)
    path = report(run_dir, splits=small, iw_samples=5, progress=False)
    html = path.read_text(encoding="utf-8")
    assert "<b>&" not in html and "run &lt;b&gt;&amp;&quot;x" in html
    check_report(path)
    first = json.loads((run_dir / "metrics.json").read_text())
    assert first["settings"]["test_images"] == 200
    # new weights make metrics.json stale: the next report evaluates again
    aekit.train("ae", splits=small, hidden=(32,), latent_dim=4, epochs=1, seed=1, out=run_dir, force=True,
                progress=False, log=None)
    report(run_dir, splits=small, progress=False)
    second = json.loads((run_dir / "metrics.json").read_text())
    assert second["reconstruction"] != first["reconstruction"]


def test_metrics_stay_current_while_the_weights_are_the_same_whatever_the_file_times(tmp_path):
    import os
    import shutil

    from aekit.evaluation import ensure_metrics
    from aekit.metrics.store import read_metrics

    data = aekit.load_dataset("mnist-5k", progress=False)
    small = aekit.Splits(data.train, data.test.subset(torch.arange(100)))
    aekit.train("ae", splits=small, hidden=(16,), latent_dim=2, epochs=1, out=tmp_path / "run", progress=False, log=None)
    metrics = ensure_metrics(tmp_path / "run", splits=small, progress=False)
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "run", copy)  # new file times; metrics.json now older than the weights
    os.utime(copy / "metrics.json", ns=(1, 1))
    assert read_metrics(copy) == metrics  # the same weights: still current
    weights = bytearray((copy / "model.safetensors").read_bytes())
    weights[-1] ^= 1  # other weights, even with an older file time
    (copy / "model.safetensors").write_bytes(bytes(weights))
    os.utime(copy / "model.safetensors", ns=(1, 1))
    assert read_metrics(copy) is None


def test_figures_of_a_vae_without_labels(tmp_path):
    data = aekit.load_dataset("mnist-5k", progress=False)
    unlabelled = aekit.Splits(
        aekit.ImageSet(data.train.images[:500], None, "x"), aekit.ImageSet(data.test.images[:100], None, "y")
    )
    run = aekit.train("vae", splits=unlabelled, hidden=(32,), latent_dim=3, epochs=1, out=tmp_path / "run",
                      progress=False, log=None)
    metrics = aekit.evaluate(run, unlabelled, iw_samples=4)
    assert "representation" not in metrics and "generation" not in metrics
    assert "labels" in metrics["skipped"]["representation"]
    index = make_figures(run, unlabelled, tmp_path / "figs", metrics=metrics)
    assert {e["file"] for e in index} >= {"latent.png", "samples.png", "kl_per_dim.png"}
    for entry in index:
        assert (tmp_path / "figs" / entry["file"]).stat().st_size > 1000 and entry["caption"]


def test_errors_are_one_line(runs, capsys, tmp_path):
    code, _, err = run(capsys, "evaluate", tmp_path, "--quiet")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "run folder" in err
    code, _, err = run(capsys, "evaluate", runs["vae"], "--iw-samples", "0", "--quiet")
    assert code == 2 and "--iw-samples must be >= 1" in err
    code, _, err = run(capsys, "report", runs["ae"], "--limit", "0", "--quiet")
    assert code == 2 and "--limit" in err
    code, _, err = run(capsys, "compare", runs["ae"], "-o", tmp_path / "t.txt", "--quiet")
    assert code == 2 and ".md" in err
