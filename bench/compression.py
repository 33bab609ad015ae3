"""Compression (issue 20): aekit's learned codec against JPEG, WebP, AVIF and block-PCA on the 24 Kodak images,
every curve measured in the same run from real files.

    python bench/compression.py                  # train what has no committed weights (resumable), evaluate, write
    python bench/compression.py --train-only     # train (or resume) and keep the weights; no evaluation
    python bench/compression.py --evaluate-only  # re-check every number from the committed weights
    python bench/compression.py --only q1        # the runs whose name ends with this
    python bench/compression.py --keep-progress  # keep the unfinished runs' weights part way (committed progress)

Data (``../shared/data/``, read from there, never committed): training on random 128x128 crops (with flips) of the
280 BSDS500 training photos of ``bench/photos.py`` (seed-0 split; its 20 others give the test loss during
training); the 24 Kodak PNGs are the test set and are used for nothing else (no model is chosen by them).

Each aekit point: every Kodak image compressed to an ``.aek`` file in memory (``aekit.codec.compress``), its bits
per pixel = 8 x the file's bytes / pixels (header included), the file decoded (``decompress``: checked equal to
what the encoder promised) and compared with the original (RGB PSNR, MS-SSIM), each averaged over the images as
CompressAI reports Kodak. The baselines come from ``bench/codec_baselines.py`` in the same run. Writes
``bench/results/compression.json``, ``docs/images/compression-rd.png`` and the results section of
``docs/compression.md``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import codec_baselines  # noqa: E402  (bench/ is not a package)
import photos  # noqa: E402
import runs  # noqa: E402

WEIGHTS = HERE / "weights" / "compression"
SCRATCH = HERE / "results" / "tmp" / "compression"
RESULTS_JSON = HERE / "results" / "compression.json"
FIGURE = REPO / "docs" / "images" / "compression-rd.png"
DOC = REPO / "docs" / "compression.md"
SECTION = "## Kodak: rate-distortion against JPEG, WebP, AVIF and block-PCA"
LARGE = (1024, 1536)  # point 5: a photo larger than the training crops (two Kodak images side by side, upscaled)
# CompressAI's released bmshj2018-factorized on Kodak (its results/kodak/compressai-bmshj2018-factorized.json):
# an anchor from other training (Vimeo-90k, about a million steps on a GPU), not a claim about the same setting.
PUBLISHED = {"name": "CompressAI bmshj2018-factorized (published)",
             "points": [{"bpp": 0.123, "psnr_db": 26.91}, {"bpp": 0.189, "psnr_db": 28.22},
                        {"bpp": 0.288, "psnr_db": 29.62}]}


@dataclasses.dataclass(frozen=True)
class Spec:
    name: str
    lmbda: float
    epochs: int
    channels: int = 128  # of the code (M)
    hidden: int = 64  # of the transforms' four stages (N): a third of 128's step time, so 3x the steps in an hour
    downsample: int = 16
    arch: str = "gdn"  # GDN learned faster than residual blocks on 2 cores (bench/codec_transforms.py)
    init_from: str | None = None  # the spec whose kept weights this one starts from (a fine-tune to another lambda)
    lr: float = 3e-4
    latent: str = "entropy"  # the factorized density (Balle et al. 2017), or "hyperprior" (Balle et al. 2018)

    def command(self, data: str, out: str) -> list[str]:
        start = ["--init-from", (WEIGHTS / self.init_from).relative_to(REPO).as_posix()] if self.init_from else []
        return ["aekit", "train", "--model", "ae", "--arch", self.arch, "--latent", self.latent, "--latent-channels",
                str(self.channels), "--hidden", ",".join([str(self.hidden)] * 4), "--downsample", str(self.downsample), "--lmbda", str(self.lmbda),
                "--likelihood", "gaussian", "--crop", "128", "--flip", "--data", data, "--epochs", str(self.epochs),
                "--batch-size", "8", "--lr", str(self.lr), "--lr-schedule", "cosine", "--seed", "0", *start,
                "--out", out]


# CompressAI's lambdas of its quality levels 1-4 (MSE), one model each. Training all four from scratch would take
# about 8 hours of a core (14,000 steps each at ~0.5 s), so one (q3) is trained from scratch and the others are fine-tuned from its weights
# at their own lambda for a quarter of its steps at a third of its learning rate (Balle et al. 2018 and CompressAI
# train every level from scratch: said with the results).
LAMBDAS = {1: 0.0018, 2: 0.0035, 3: 0.0067, 4: 0.013}
BASE = 3
# The scale hyperprior (the stronger model, measured against CompressAI's published points) adds side
# networks to the same transforms: its q3 starts from the finished factorized q3's transforms (``--init-from``; the
# side networks start fresh) for half that model's steps, and its other levels are fine-tuned from it as above.
NAMES = {"entropy": "codec-gdn-f16n64m128-q{}", "hyperprior": "codec-hyper-gdn-f16n64m128-q{}"}
# The hyperprior also has CompressAI's fifth level, so that its curve reaches past 0.5 bpp (the range for
# JPEG). Its q4 and q5 went on (resumed runs, their cosine schedules stretched: the learning rate rises again) to
# lift the curve's top, which was behind JPEG near 0.5 bpp: q4 to 200 epochs, then both to 400 and 300.
HYPER_LAMBDAS = {**LAMBDAS, 5: 0.025}
HYPER_EPOCHS = {BASE: 200, 4: 400, 5: 300}
RUNS = tuple(Spec(NAMES["entropy"].format(q), lmbda, 400) if q == BASE else
             Spec(NAMES["entropy"].format(q), lmbda, 100, init_from=NAMES["entropy"].format(BASE), lr=1e-4)
             for q, lmbda in LAMBDAS.items()) + \
    tuple(Spec(NAMES["hyperprior"].format(q), lmbda, HYPER_EPOCHS.get(q, 100), lr=1e-4, latent="hyperprior",
               init_from=NAMES["entropy" if q == BASE else "hyperprior"].format(BASE))
          for q, lmbda in HYPER_LAMBDAS.items())
FAMILIES = {"entropy": "factorized", "hyperprior": "hyperprior"}
# The hyperprior models again, each image's code refined for that image before coding (`aekit compress --refine`,
# aekit.core.refine): the same models and decoder, a slower encoder. 50 Adam steps at the library's learning rate,
# chosen on crops of BSDS500 val photos (training photos of the codec), not on Kodak.
REFINE_STEPS = 50
REFINED = "hyperprior, refined"
CURVES = (*FAMILIES.values(), REFINED)
ANCHOR_MARGIN_DB = 0.5  # the goal: the hyperprior model within 0.5 dB of the published points


def _init_epoch(spec: Spec) -> int | None:
    """The epoch of its source's weights a fine-tune started from (recorded when it started), or None."""
    path = WEIGHTS / spec.name / runs.INIT_FROM
    return json.loads(path.read_text())["epoch"] if spec.init_from and path.exists() else None


def training_order(specs) -> list:
    """The factorized models first, then the hyperprior ones; each after the run it starts from."""
    named = {spec.name: spec for spec in RUNS}

    def depth(spec) -> int:
        return 0 if spec.init_from is None else 1 + depth(named[spec.init_from])

    return sorted(specs, key=lambda spec: (spec.latent != "entropy", depth(spec)))


def evaluate_run(spec: Spec, images: list, refine: int = 0) -> dict:
    """Compress every image to a real file (its code refined in ``refine`` steps), decode it, measure it; time both
    directions."""
    import aekit
    from aekit import codec

    run = aekit.load(WEIGHTS / spec.name)
    measured, encode_s, decode_s = [], 0.0, 0.0
    for image in images:
        t0 = time.perf_counter()
        data, promised = codec.compress(run.model, image, decoded=True, refine=refine, objective=run.config.objective)
        t1 = time.perf_counter()
        decoded = codec.decompress(run.model, data)
        decode_s += time.perf_counter() - t1
        encode_s += t1 - t0
        assert bool((decoded == promised).all()), "a file decoded to other pixels than the encoder promised"
        measured.append(codec_baselines.measure(image, decoded, 8 * len(data)))
    megapixels = sum(x.shape[-1] * x.shape[-2] for x in images) / 1e6
    curve = [json.loads(line) for line in (WEIGHTS / spec.name / "metrics.jsonl").read_text().splitlines()]
    family = REFINED if refine else FAMILIES[spec.latent]
    return {**codec_baselines.mean_point(measured, run=spec.name, lmbda=spec.lmbda, family=family),
            **({"refine_steps": refine} if refine else {}),
            "encode_megapixels_per_second": megapixels / encode_s, "decode_megapixels_per_second": megapixels / decode_s,
            "epochs": len(curve), "planned_epochs": spec.epochs, "steps": curve[-1]["step"] if curve else 0,
            "train_seconds": round(sum(r["epoch_seconds"] for r in curve), 1),
            "parameters": sum(p.numel() for p in run.model.parameters()),
            "command": " ".join(spec.command("BSDS500.npz", f"runs/{spec.name}")), "init_from": spec.init_from,
            "init_from_epoch": _init_epoch(spec),
            "weights": f"bench/weights/compression/{spec.name}"}


def large_photo(spec: Spec, images: list) -> dict:
    """Point 5: ``aekit compress`` and ``aekit decompress`` on a photo larger than any training crop, each command in
    its own process: its time and its peak resident memory (ru_maxrss), the file's bpp and the decoded PSNR."""
    import tempfile

    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image

    pair = torch.cat([images[0], images[1]], dim=-1)[..., :512, :]  # (3, 512, 1536): two images side by side
    big = F.interpolate(pair[None].float(), size=LARGE, mode="bicubic", align_corners=False)[0]
    big = big.round().clamp(0, 255).to(torch.uint8)
    steps = {}
    with tempfile.TemporaryDirectory() as tmp:
        png, aek, out = Path(tmp) / "big.png", Path(tmp) / "big.aek", Path(tmp) / "decoded.png"
        Image.fromarray(big.permute(1, 2, 0).numpy()).save(png)
        for verb, src, dst in (("compress", png, aek), ("decompress", aek, out)):
            done = runs.cli_in_own_process([verb, WEIGHTS / spec.name, src, "-o", dst])
            steps[verb] = {"seconds": done["seconds"], "peak_rss_mib": done["peak_mib"]}
        decoded = torch.from_numpy(np.asarray(Image.open(out).convert("RGB"))).permute(2, 0, 1)
        point = codec_baselines.measure(big, decoded, 8 * aek.stat().st_size)
        refined = Path(tmp) / "refined.aek"  # the same photo with its code refined (the slow, better encoder)
        done = runs.cli_in_own_process(["compress", WEIGHTS / spec.name, png, "-o", refined, "--refine",
                                        str(REFINE_STEPS)])
        steps["compress_refined"] = {"seconds": done["seconds"], "peak_rss_mib": done["peak_mib"],
                                     "bpp": 8 * refined.stat().st_size / (LARGE[0] * LARGE[1]),
                                     "psnr_db": float(done["psnr_db"])}
    return {"size": f"{LARGE[1]}x{LARGE[0]}", "run": spec.name, **point,
            "seconds": steps["compress"]["seconds"] + steps["decompress"]["seconds"], "commands": steps,
            "peak_rss_mib": max(v["peak_rss_mib"] for k, v in steps.items() if k != "compress_refined")}


def compare(result: dict) -> dict:
    """Per aekit family with at least two points: BD-rates against each baseline and whether it beats JPEG at
    every rate up to 0.5 bpp; for the hyperprior, its margins at the published anchor's rates."""
    out = {}
    for family in CURVES:
        ours = [p for p in result["aekit"] if p["family"] == family]
        if len(ours) >= 2:
            out[family] = compare_family(ours, result["baselines"])
            if family != "factorized":
                out[family]["anchor"] = anchor_margins(ours)
    hyper = [p for p in result["aekit"] if p["family"] == "hyperprior"]
    factorized = [p for p in result["aekit"] if p["family"] == "factorized"]
    if hyper and len(factorized) >= 2:  # what the side code buys: at each hyperprior point, over the factorized curve
        from aekit.metrics.rd import interpolate_psnr_at

        out["hyperprior_over_factorized"] = [
            {"bpp": p["bpp"], "margin_db": p["psnr_db"] - at} for p in hyper
            if (at := interpolate_psnr_at([q["bpp"] for q in factorized], [q["psnr_db"] for q in factorized],
                                          p["bpp"])) is not None]
    return out


def compare_family(ours: list[dict], baselines: dict) -> dict:
    import numpy as np

    from aekit.errors import AekitError
    from aekit.metrics.rd import bd_rate, interpolate_psnr_at

    rates, psnr = [p["bpp"] for p in ours], [p["psnr_db"] for p in ours]
    out = {}
    for name, entry in baselines.items():
        pts = entry["points"]
        try:
            out[f"bd_rate_vs_{name}_percent"] = bd_rate([p["bpp"] for p in pts], [p["psnr_db"] for p in pts],
                                                        rates, psnr)
        except AekitError as error:  # no overlap: said, not hidden
            out[f"bd_rate_vs_{name}_percent"] = None
            out[f"bd_rate_vs_{name}_note"] = str(error)
    jpeg = baselines["jpeg"]["points"]
    grid = np.geomspace(max(min(rates), min(p["bpp"] for p in jpeg)), 0.5, 25) if min(rates) < 0.5 else []
    margins = []
    for rate in grid:
        a = interpolate_psnr_at(rates, psnr, float(rate))
        b = interpolate_psnr_at([p["bpp"] for p in jpeg], [p["psnr_db"] for p in jpeg], float(rate))
        if a is not None and b is not None:
            margins.append(a - b)
    out["margins_over_jpeg_db"] = [  # at each of our points up to 0.5 bpp, against JPEG's curve at that rate
        {"bpp": r, "margin_db": a - b} for r, a in zip(rates, psnr) if r <= 0.5
        and (b := interpolate_psnr_at([p["bpp"] for p in jpeg], [p["psnr_db"] for p in jpeg], float(r))) is not None]
    margins += [m["margin_db"] for m in out["margins_over_jpeg_db"]]  # the grid, and the points themselves
    out["beats_jpeg_up_to_half_bpp"] = bool(margins) and min(margins) > 0
    out["worst_margin_over_jpeg_db"] = min(margins) if margins else None
    return out


def anchor_margins(ours: list[dict]) -> dict:
    """aekit's PSNR interpolated at each published point's rate, minus the published PSNR (None: out of range)."""
    from aekit.metrics.rd import interpolate_psnr_at

    rates, psnr = [p["bpp"] for p in ours], [p["psnr_db"] for p in ours]
    margins = []
    for point in PUBLISHED["points"]:
        at = interpolate_psnr_at(rates, psnr, point["bpp"])
        margins.append(None if at is None else at - point["psnr_db"])
    known = [m for m in margins if m is not None]
    return {"margins_db": margins, "within_goal": len(known) == len(margins) and min(known) >= -ANCHOR_MARGIN_DB}


def figure(result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    shape = f"{RUNS[0].arch}, N={RUNS[0].hidden}, M={RUNS[0].channels}, f={RUNS[0].downsample}"
    def label(family: str, pts: list) -> str:
        part = [p for p in pts if p["epochs"] < p.get("planned_epochs", 0)]
        return f"aekit {family} ({shape})" + (f", {len(part)} of {len(pts)} part way" if part else "")

    styles = {"factorized": "o-", "hyperprior": "s-", REFINED: "^-"}
    curves = [(label(family, pts), pts, styles[family], 2.5)
              for family in CURVES if (pts := [p for p in result["aekit"] if p["family"] == family])]
    curves += [(name, entry["points"], ".-", 1.2) for name, entry in result["baselines"].items()]
    for ax, key, label in ((axes[0], "psnr_db", "PSNR (dB, RGB)"), (axes[1], "ms_ssim", "MS-SSIM")):
        for name, pts, style, width in curves:
            pts = sorted(pts, key=lambda p: p["bpp"])
            ax.plot([p["bpp"] for p in pts], [p[key] for p in pts], style, lw=width, label=name)
        if key == "psnr_db":
            ax.plot([p["bpp"] for p in PUBLISHED["points"]], [p["psnr_db"] for p in PUBLISHED["points"]], "k--x",
                    label=PUBLISHED["name"])
        ax.set_xlim(0, 1.6)
        ax.set_xlabel("bits per pixel (real file sizes)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylim(20, 40)
    axes[1].set_ylim(0.7, 1.0)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Kodak, {result['kodak_images']} images ({result['date']}, {result['machine']})")
    fig.tight_layout()
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, dpi=110)
    plt.close(fig)


def markdown(result: dict) -> str:
    lines = [SECTION, "",
             f"{result['kodak_images']} Kodak images, each point the mean over the images of real file sizes, RGB PSNR and MS-SSIM "
             f"({result['date']}, {result['machine']}; every curve from this one run). "
             "`python bench/compression.py --evaluate-only` re-checks it from `bench/weights/compression/`.", "",
             "| codec | setting | bpp | PSNR dB | MS-SSIM |", "|---|---|---:|---:|---:|"]
    for p in result["aekit"]:
        lines.append(f"| aekit {p['family']} | {p['run']} (lambda {p['lmbda']}) | {p['bpp']:.3f} | "
                     f"{p['psnr_db']:.2f} | {p['ms_ssim']:.4f} |")
    for name, entry in result["baselines"].items():
        for p in entry["points"]:
            setting = f"quality {p['quality']}" if "quality" in p else f"step {p['step']}"
            lines.append(f"| {name} | {setting} | {p['bpp']:.3f} | {p['psnr_db']:.2f} | {p['ms_ssim']:.4f} |")
    lines.append("")
    for family, c in result["comparison"].items():
        if family not in CURVES:
            continue
        bd = ", ".join(f"{k[len('bd_rate_vs_'):-len('_percent')]} {v:+.1f}%" for k, v in c.items()
                       if k.startswith("bd_rate_vs_") and k.endswith("_percent") and v is not None)
        worst = c["worst_margin_over_jpeg_db"]
        lines += [f"aekit {family}: BD-rate (PSNR, PCHIP, over each overlapping range; negative = fewer bits): {bd}. "
                  + (f"Beats JPEG at every rate up to 0.5 bpp: {'yes' if c['beats_jpeg_up_to_half_bpp'] else 'no'} "
                     f"(worst margin {worst:+.2f} dB; at its own points: "
                     + ", ".join(f"{m['margin_db']:+.2f} dB at {m['bpp']:.3f} bpp"
                                 for m in c.get("margins_over_jpeg_db", [])) + ")." if worst is not None else
                     "Beats JPEG up to 0.5 bpp: no point at or under 0.5 bpp."), ""]
        if "anchor" in c:
            margins = ", ".join("out of range" if m is None else f"{m:+.2f} dB" for m in c["anchor"]["margins_db"])
            lines += [f"aekit {family} against the published points (goal: within {ANCHOR_MARGIN_DB} dB of each): {margins}"
                      f" ({'met' if c['anchor']['within_goal'] else 'not met'}).", ""]
    if result["comparison"].get("hyperprior_over_factorized"):
        lines += ["The hyperprior against the factorized curve at the same rate: " + ", ".join(
            f"{m['margin_db']:+.2f} dB at {m['bpp']:.3f} bpp" for m in result["comparison"]["hyperprior_over_factorized"])
            + ".", ""]
    lines += [f"Published anchor, other training: {PUBLISHED['name']}: "
              + ", ".join(f"{p['bpp']} bpp -> {p['psnr_db']} dB" for p in PUBLISHED["points"]) + ".", "",
              "![rate-distortion on Kodak](images/compression-rd.png)", ""]
    for p in result["aekit"]:
        start = " from scratch"
        if p.get("init_from"):
            at = f" at epoch {p['init_from_epoch']}" if p.get("init_from_epoch") else ""
            start = f" fine-tuned from the {p['init_from']} model's weights{at}"
        part = f" (part way: {p['planned_epochs']} planned)" if p["epochs"] < p.get("planned_epochs", 0) else ""
        if p.get("refine_steps"):
            lines.append(f"- {p['run']}, each code refined in {p['refine_steps']} steps (`aekit compress --refine "
                         f"{p['refine_steps']}`): encode {p['encode_megapixels_per_second']:.3f} MP/s, decode "
                         f"{p['decode_megapixels_per_second']:.2f} MP/s (2 cores).")
            continue
        lines.append(f"- {p['run']}: `{p['command']}`; {p['epochs']} epochs{part} ({p['steps']:,} steps){start}, "
                     f"{p['train_seconds'] / 3600:.1f} h; encode {p['encode_megapixels_per_second']:.2f} MP/s, "
                     f"decode {p['decode_megapixels_per_second']:.2f} MP/s (2 cores).")
    if "large" in result:
        g = result["large"]
        c, d = g["commands"]["compress"], g["commands"]["decompress"]
        lines.append(f"- A {g['size']} photo (two Kodak images side by side, upscaled), {g['run']}: {g['bpp']:.3f} bpp, "
                     f"{g['psnr_db']:.2f} dB; `aekit compress` {c['seconds']:.1f} s, peak {c['peak_rss_mib']:.0f} MiB; "
                     f"`aekit decompress` {d['seconds']:.1f} s, peak {d['peak_rss_mib']:.0f} MiB (each command in its "
                     "own process, start-up included)"
                     + (f"; with `--refine {REFINE_STEPS}`: {r['bpp']:.3f} bpp, {r['psnr_db']:.2f} dB in "
                        f"{r['seconds']:.1f} s, peak {r['peak_rss_mib']:.0f} MiB"
                        if (r := g["commands"].get("compress_refined")) else "") + ".")
    if result.get("not_trained"):
        lines.append(f"- Not trained yet (no committed weights): {', '.join(result['not_trained'])}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    args = runs.parser(__doc__, only="the runs whose name ends with this (e.g. q1)", progress=True).parse_args()
    log = runs.start()
    import numpy as np
    import torch

    data_dir = Path(args.data_dir)
    data = photos.photo_cache(data_dir)
    specs = [s for s in RUNS if args.only is None or s.name.endswith(args.only)]
    if args.keep_progress:
        runs.keep_progress(specs, log, SCRATCH, WEIGHTS)
        return
    if not args.evaluate_only:
        runs.train_unfinished(training_order(specs), data, log, SCRATCH, WEIGHTS)
        if args.train_only:
            return
    trained = [s for s in specs if (WEIGHTS / s.name / "model.safetensors").exists()]
    images = codec_baselines.kodak(data_dir)
    result = {"date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} cores, {platform.processor() or 'cpu'}",
              "torch": torch.__version__, **codec_baselines.versions(), "kodak_images": len(images),
              "not_trained": [s.name for s in specs if s not in trained], "aekit": [], "baselines": {}}
    for spec, refine in [(s, 0) for s in trained] + [(s, REFINE_STEPS) for s in trained if s.latent == "hyperprior"]:
        result["aekit"].append(evaluate_run(spec, images, refine))
        p = result["aekit"][-1]
        log(f"{spec.name}{' refined' if refine else ''}: {p['bpp']:.3f} bpp, {p['psnr_db']:.2f} dB, "
            f"MS-SSIM {p['ms_ssim']:.4f}")
    for name in ("jpeg", "webp", "avif"):
        result["baselines"][name] = {"points": codec_baselines.pillow_curve(images, name)}
        log(f"{name}: done")
    train = list(torch.from_numpy(np.load(data)["x_train"]))
    result["baselines"]["block_pca"] = {"points": codec_baselines.block_pca_curve(train, images)}
    if not result["aekit"]:
        log("no trained model yet: baselines only")
        print(json.dumps(result["baselines"], indent=1)[:2000])
        return
    result["comparison"] = compare(result)
    result["large"] = large_photo(trained[-1], images)
    print(markdown(result))
    if not args.no_write:
        RESULTS_JSON.write_text(json.dumps(result, indent=2) + "\n")
        figure(result)
        runs.write_section(markdown(result), SECTION, DOC)


if __name__ == "__main__":
    main()
