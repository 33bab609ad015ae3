"""Photo denoising (issue 21): aekit's blind denoiser against BM3D, non-local means and wavelet shrinkage on CBSD68
(colour) and Set12 (grey) at sigma = 15, 25, 50, every method run in the same run on the same noisy images.

    python bench/denoise.py                    # train what is unfinished (resumable), evaluate, write
    python bench/denoise.py --train-only       # train (or resume) and keep the weights; no evaluation
    python bench/denoise.py --evaluate-only    # re-check every number from the committed weights
    python bench/denoise.py --evaluate-only --images 4 --no-write   # a quick look: 4 images per set
    python bench/denoise.py --baselines-only   # only BM3D, non-local means and wavelet, into the memo folder
    python bench/denoise.py --keep-progress    # keep the runs' weights part way (evaluate with --evaluate-only)

Training data: random 96x96 crops (with flips) of the BSDS500 train and val photos **minus the 68 of CBSD68**
(``../shared/data/cbsd68/`` names them: they are BSDS500 val images), 232 photos, of which a seeded 8 give the
test loss during training; the grey model trains on the same photos as luminance. CBSD68 and Set12 are used for
nothing but the table (no model or setting is chosen by them).

Noise convention, the same for every method: additive white Gaussian noise of std sigma / 255 on the clean image
in [0, 1], seeded per set, sigma and image (``numpy.random.default_rng((0, sigma, i))``), **not clipped** (as in
the DnCNN and FFDNet papers' tables); each output is clipped to [0, 1] before PSNR (RGB, per image, averaged) and
SSIM (scikit-image's, ``aekit.metrics.pixels.ssim_per_image``). aekit's model is blind (one model for every sigma
in [0, 55], never told sigma), alone and self-ensembled (``aekit denoise --self-ensemble``: the mean of its outputs
for the 8 rotations and mirror images of the noisy image, 8 times the work); BM3D (``bm3d``: CBM3D for colour),
non-local means and wavelet shrinkage (scikit-image) are each given the true sigma, as their authors' benchmarks do.

The baselines are deterministic functions of the noisy image, so their outputs are memoised in
``bench/results/tmp/denoise-baselines/`` under a hash of the noisy image's bytes, the method, its settings and the
package versions (CBM3D takes 2-3 minutes per megapixel here: the full table is ~1.5 h of BM3D); a memoised score
is the one a recomputation gives, and ``--no-memo`` recomputes them all. Speed is never memoised: every method is
timed in the run, one after another on the same first images of each set.

Writes ``bench/results/denoise.json``, ``docs/images/denoise.png`` and the denoising section of
``docs/results.md``.
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
import runs  # noqa: E402  (bench/ is not a package): the command line, training and docs helpers

WEIGHTS = HERE / "weights" / "photo-denoise"
SCRATCH = HERE / "results" / "tmp" / "denoise"
MEMO = HERE / "results" / "tmp" / "denoise-baselines"  # the baselines' outputs, by noisy image (see memo_key)
RESULTS_JSON = HERE / "results" / "denoise.json"
FIGURE = REPO / "docs" / "images" / "denoise.png"
SECTION = "## Photo denoising: CBSD68 and Set12 against BM3D"
SIGMAS = (15, 25, 50)
HELD_OUT, SEED = 8, 0
METHODS = ("aekit", "aekit-x8", "bm3d", "nlm", "wavelet")  # aekit-x8: the same model, self-ensembled
BASELINES = METHODS[2:]
# Zhang et al. 2017 (DnCNN): CBSD68 with CDnCNN-B, one blind colour model (Table 5); Set12 with DnCNN-S, a model
# trained for each sigma (Table 3; the blind DnCNN-B is within 0.2 dB of it). Its BSD68 grey figures and BM3D's
# are also in the authors' README (cszn/DnCNN), which agrees with the paper.
PUBLISHED = {"cbsd68": {"name": "CDnCNN-B (Zhang et al. 2017, Table 5)", "psnr_db": {15: 33.89, 25: 31.23, 50: 27.92}},
             "set12": {"name": "DnCNN-S (Zhang et al. 2017, Table 3)", "psnr_db": {15: 32.86, 25: 30.44, 50: 27.18}}}


@dataclasses.dataclass(frozen=True)
class Spec:
    name: str
    channels: int
    epochs: int
    hidden: str = "32,64,128,256"
    latent_channels: int = 32

    def command(self, data: str, out: str) -> list[str]:
        return ["aekit", "train", "--model", "dae", "--arch", "unet", "--hidden", self.hidden, "--latent-channels",
                str(self.latent_channels), "--noise-std", f"{55 / 255:.6f}", "--noise-std-min", "0",
                "--no-noise-clip", "--likelihood", "gaussian", "--channels", str(self.channels), "--crop", "96",
                "--flip", "--data", data, "--epochs", str(self.epochs), "--batch-size", "16", "--lr", "5e-4",
                "--lr-schedule", "cosine", "--seed", "0", "--out", out]


RUNS = (Spec("denoise-rgb", 3, 900), Spec("denoise-grey", 1, 900))
# How a run was trained where its command alone does not say it (said with the table and on the shipped card).
_WARM_RESTART = ("600 epochs on a cosine schedule over 600, then from those weights (`bench/runs.py`'s restart from "
                 "kept weights) 300 more with the schedule stretched to 900: a warm restart at a quarter of the peak "
                 "learning rate, with fresh Adam moments")
HISTORY = {"denoise-rgb": _WARM_RESTART, "denoise-grey": _WARM_RESTART}
TEST_SETS = {"cbsd68": ("denoise-rgb", 3), "set12": ("denoise-grey", 1)}


def training_files(data_dir: Path) -> list:
    """The BSDS500 train and val photos that are not among CBSD68's 68 (the colour test set), sorted."""
    excluded = {p.stem for p in (data_dir / "cbsd68").glob("*.png")}
    if len(excluded) != 68:
        raise SystemExit(f"expected the 68 CBSD68 images in {data_dir / 'cbsd68'}, found {len(excluded)}")
    return [f for split in ("train", "val") for f in sorted((data_dir / "bsds500" / split).glob("*.jpg"))
            if f.stem not in excluded]


def training_cache(data_dir: Path) -> Path:
    """BSDS500 train + val minus CBSD68's 68 as one uint8 (N, 3, 321, 481) array (portraits turned): a seeded
    HELD_OUT of them as the test split (the test loss during training), the rest to train on."""
    import numpy as np
    from PIL import Image

    path = HERE / "results" / "tmp" / "bsds500-minus-cbsd68.npz"
    if path.exists():
        return path
    photos = []
    for f in training_files(data_dir):
        image = np.asarray(Image.open(f).convert("RGB"))
        photos.append(image if image.shape[0] <= image.shape[1] else np.rot90(image))
    images = np.stack(photos).transpose(0, 3, 1, 2).copy()
    perm = np.random.default_rng(SEED).permutation(len(images))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x_train=images[np.sort(perm[HELD_OUT:])], x_test=images[np.sort(perm[:HELD_OUT])])
    return path


def test_images(data_dir: Path, name: str, limit: int | None) -> list:
    """The test set as float64 arrays in [0, 1], (H, W, 3) for CBSD68 and (H, W) for Set12, sorted by name."""
    import numpy as np
    from PIL import Image

    mode = "RGB" if name == "cbsd68" else "L"
    files = sorted((data_dir / name).glob("*.png"))[:limit]
    return [(f.stem, np.asarray(Image.open(f).convert(mode)).astype(np.float64) / 255) for f in files]


def noisy_image(clean, sigma: int, i: int):
    import numpy as np

    return clean + sigma / 255 * np.random.default_rng((SEED, sigma, i)).standard_normal(clean.shape)


def denoisers(run):
    """name -> f(noisy (H, W[, 3]) float64, sigma / 255) -> the denoised image, unclipped."""
    import bm3d
    import numpy as np
    import torch
    from skimage.restoration import denoise_nl_means, denoise_wavelet

    def aekit_blind(noisy, _sigma, self_ensemble=False):  # never told sigma
        x = torch.from_numpy(noisy.astype(np.float32))
        x = x.permute(2, 0, 1)[None] if x.ndim == 3 else x[None, None]
        y = run.model.restore(x, self_ensemble=self_ensemble)[0]
        return (y.permute(1, 2, 0) if noisy.ndim == 3 else y[0]).double().numpy()

    def aekit_x8(noisy, sigma):  # the mean over the 8 rotations and mirror images (aekit denoise --self-ensemble)
        return aekit_blind(noisy, sigma, self_ensemble=True)

    def bm3d_known(noisy, sigma):
        return bm3d.bm3d_rgb(noisy, sigma) if noisy.ndim == 3 else bm3d.bm3d(noisy, sigma)

    def nlm_known(noisy, sigma):  # scikit-image's gallery settings for its fast mode
        return denoise_nl_means(noisy, h=0.6 * sigma, sigma=sigma, fast_mode=True, patch_size=5, patch_distance=6,
                                channel_axis=-1 if noisy.ndim == 3 else None)

    def wavelet_known(noisy, sigma):
        colour = noisy.ndim == 3
        return denoise_wavelet(noisy, sigma=sigma, method="BayesShrink", mode="soft", rescale_sigma=True,
                               channel_axis=-1 if colour else None, convert2ycbcr=colour)

    return {"aekit": aekit_blind, "aekit-x8": aekit_x8, "bm3d": bm3d_known, "nlm": nlm_known,
            "wavelet": wavelet_known}


BASELINE_SETTINGS = "bm3d: default profile; nlm: h 0.6 sigma, fast, patch 5, distance 6; wavelet: BayesShrink soft, YCbCr"
TIMED_IMAGES = 2  # images of each set on which aekit and BM3D are timed back to back, never from the memo


def _to_torch(a):
    """A (H, W, 3) or (H, W) array as a (1, C, H, W) tensor, for the metrics."""
    import torch

    return torch.from_numpy(a).permute(2, 0, 1)[None] if a.ndim == 3 else torch.from_numpy(a)[None, None]


def memo_key(method: str, noisy) -> str:
    """The memo's key for a baseline's output: the noisy image's bytes, the method, its settings and the versions of
    the packages that compute it (a deterministic function of these, so a memoised value is a recomputed one)."""
    import hashlib
    from importlib.metadata import PackageNotFoundError, version

    def installed(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:  # (the memo's tests run without the baselines' packages)
            return "absent"

    h = hashlib.sha256(noisy.tobytes())
    h.update(f"{noisy.shape}|{method}|{BASELINE_SETTINGS}|bm3d {installed('bm3d')}|skimage {installed('scikit-image')}"
             .encode())
    return h.hexdigest()[:32]


def scored(method: str, fn, noisy, clean, sigma: int, memo: Path | None) -> tuple[dict, object]:
    """PSNR and SSIM of ``method``'s clipped output (and the output): a baseline's are read from the memo folder
    when there, computed and stored otherwise; aekit's are always computed."""
    import numpy as np

    from aekit.metrics.pixels import psnr_per_image, ssim_per_image

    path = memo / f"{memo_key(method, noisy)}.npz" if memo is not None and method in BASELINES else None
    if path is not None and path.exists():
        with np.load(path) as f:
            return {"psnr": float(f["psnr"]), "ssim": float(f["ssim"])}, f["out"].astype(np.float64)
    out = np.clip(fn(noisy, sigma / 255), 0, 1)
    score = {"psnr": float(psnr_per_image(_to_torch(out), _to_torch(clean))[0]),
             "ssim": float(ssim_per_image(_to_torch(out), _to_torch(clean))[0])}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, out=out.astype(np.float32), **score)
        tmp.replace(path)
    return score, out


def evaluate_set(name: str, run, images: list, log, memo: Path | None, methods=METHODS) -> tuple[list, dict]:
    """Every method on every noisy image of the set at each sigma: mean PSNR and SSIM (rows) and the sigma-25
    outputs on the first image (for the figure). Baselines come from the memo folder when it has them."""
    import numpy as np

    from aekit.metrics.pixels import psnr_per_image

    rows, examples = [], {}
    fns = denoisers(run)
    for sigma in SIGMAS:
        scores = {m: {"psnr": [], "ssim": []} for m in methods}
        noisy_psnr = []
        for i, (stem, clean) in enumerate(images):
            noisy = noisy_image(clean, sigma, i)
            noisy_psnr.append(float(psnr_per_image(_to_torch(np.clip(noisy, 0, 1)), _to_torch(clean))[0]))
            for method in methods:
                score, out = scored(method, fns[method], noisy, clean, sigma, memo)
                scores[method]["psnr"].append(score["psnr"])
                scores[method]["ssim"].append(score["ssim"])
                if sigma == 25 and i == 0:
                    examples.update(noisy=np.clip(noisy, 0, 1), clean=clean)
                    examples[method] = out
        for method in methods:
            s = scores[method]
            rows.append({"set": name, "sigma": sigma, "method": method, "images": len(images),
                         "psnr_db": float(np.mean(s["psnr"])), "ssim": float(np.mean(s["ssim"])),
                         "psnr_per_image": s["psnr"], "noisy_psnr_db": float(np.mean(noisy_psnr))})
        log(f"  {name} sigma {sigma}: " + ", ".join(f"{r['method']} {r['psnr_db']:.2f}" for r in rows[-len(methods):]))
    return rows, examples


def timings(name: str, run, images: list, log) -> dict:
    """Seconds per megapixel of each method at sigma 25 on the set's first TIMED_IMAGES images, the methods one
    after another on each image in this process (never memoised), after one untimed warm-up of each."""
    fns = denoisers(run)
    images = images[:TIMED_IMAGES]
    noisy = [noisy_image(clean, 25, i) for i, (_, clean) in enumerate(images)]
    for method in METHODS:
        fns[method](noisy[0][:64, :64], 25 / 255)
    seconds = dict.fromkeys(METHODS, 0.0)
    for x in noisy:
        for method in METHODS:
            t0 = time.perf_counter()
            fns[method](x, 25 / 255)
            seconds[method] += time.perf_counter() - t0
    megapixels = sum(clean.shape[0] * clean.shape[1] for _, clean in images) / 1e6
    speed = {m: s / megapixels for m, s in seconds.items()}
    log(f"  {name} seconds per megapixel: " + ", ".join(f"{m} {v:.2f}" for m, v in speed.items()))
    return {"images": len(images), "megapixels": megapixels, "seconds_per_megapixel": speed}


def large_photos(data_dir: Path, log) -> list:
    """``aekit denoise`` end to end on a 768x512 Kodak photo (colour model) and a 512x512 grey Set12 image (grey
    model), each in its own process: the peak memory of the command (ru_maxrss) and its time."""
    import tempfile

    cases = [("denoise-rgb", data_dir / "kodak" / "kodim01.png"), ("denoise-grey", data_dir / "set12" / "08.png")]
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec, image in cases:
            values = runs.cli_in_own_process(["denoise", WEIGHTS / spec, image, "--noise-std", f"{25 / 255:.6f}",
                                              "-o", Path(tmp) / spec])
            from PIL import Image

            size = Image.open(image).size
            out.append({"model": spec, "image": image.name, "size": f"{size[0]}x{size[1]}",
                        "psnr_noisy_db": float(values["psnr_noisy_db"]),
                        "psnr_denoised_db": float(values["psnr_denoised_db"]),
                        "seconds": values["seconds"], "peak_memory_mb": values["peak_mib"]})
            log(f"  aekit denoise {image.name}: {out[-1]}")
    return out


def figure(examples: dict) -> None:
    """noisy | aekit | BM3D | clean: a 128x128 crop of the first image of each set at sigma 25, each crop's PSNR
    against the clean crop written on it, the set's name beside its row."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    tiles, crop, pad, scale, label, side = [], 128, 4, 2, 22, 70
    for name, ex in examples.items():
        h, w = ex["clean"].shape[:2]
        y0, x0 = (h - crop) // 2, (w - crop) // 2
        clean = ex["clean"][y0:y0 + crop, x0:x0 + crop]
        row = []
        for key in ("noisy", "aekit", "bm3d", "clean"):
            a = ex[key][y0:y0 + crop, x0:x0 + crop]
            psnr = None if key == "clean" else 10 * np.log10(1 / np.mean((a - clean) ** 2))
            a = (a * 255).round().astype(np.uint8)
            row.append((np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a, psnr))
        tiles.append((name, row))
    font = ImageFont.load_default(size=14)
    width = side + 4 * crop * scale + 5 * pad
    height = len(tiles) * (crop * scale + pad) + pad + label
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for j, title in enumerate(("noisy (sigma 25)", "aekit (blind)", "BM3D (told sigma)", "clean")):
        draw.text((side + pad + j * (crop * scale + pad) + 4, 3), title, fill="black", font=font)
    for i, (name, row) in enumerate(tiles):
        top = label + pad + i * (crop * scale + pad)
        draw.text((6, top + crop * scale // 2 - 8), {"cbsd68": "CBSD68", "set12": "Set12"}.get(name, name),
                  fill="black", font=font)
        for j, (a, psnr) in enumerate(row):
            left = side + pad + j * (crop * scale + pad)
            canvas.paste(Image.fromarray(a).resize((crop * scale, crop * scale), Image.Resampling.NEAREST), (left, top))
            if psnr is not None:
                draw.text((left + 6, top + crop * scale - 22), f"{psnr:.2f} dB", fill="white", font=font,
                          stroke_width=2, stroke_fill="black")
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(FIGURE)


def markdown(result: dict) -> str:
    lines = [SECTION, "", f"One run ({result['date']}, {result['machine']}), every method on the same noisy images "
             "(Gaussian, seeded, not clipped; outputs clipped to [0, 1]); aekit's model is blind, the others are told "
             "sigma. PSNR in dB / SSIM, means over the images. `python bench/denoise.py --evaluate-only` re-checks "
             "it from `bench/weights/photo-denoise/`.", ""]
    for name in TEST_SETS:
        rows = [r for r in result["rows"] if r["set"] == name]
        if not rows:
            continue
        spec = next(r for r in RUNS if r.name == TEST_SETS[name][0])
        done = result["trained_epochs"].get(spec.name, 0)
        progress = (f"; aekit's model {spec.name}: {HISTORY.get(spec.name, f'{done} epochs')}" if done >= spec.epochs
                    else f"; aekit's model after {done} of {spec.epochs} epochs (in progress)")
        lines += [f"**{name}** ({rows[0]['images']} images{progress})", "",
                  "| sigma | noisy | aekit (blind) | aekit, self-ensemble x8 | BM3D | non-local means | wavelet | "
                  + PUBLISHED[name]["name"] + " |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for sigma in SIGMAS:
            at = [r for r in rows if r["sigma"] == sigma]
            cell = {r["method"]: f"{r['psnr_db']:.2f} / {r['ssim']:.3f}" for r in at}
            lines.append(f"| {sigma} | {at[0]['noisy_psnr_db']:.2f} | " + " | ".join(cell[m] for m in METHODS)
                         + f" | {PUBLISHED[name]['psnr_db'][sigma]:.2f} |")
        psnr25 = {r["method"]: r["psnr_db"] for r in rows if r["sigma"] == 25}
        margin = psnr25["aekit"] - psnr25["bm3d"]
        lines += ["", f"aekit against BM3D at sigma 25: {margin:+.2f} dB, self-ensembled "
                  f"{psnr25['aekit-x8'] - psnr25['bm3d']:+.2f} dB (goal: at least BM3D's PSNR; "
                  f"{'met' if margin >= 0 else 'not met'}); against {PUBLISHED[name]['name']}: "
                  f"{psnr25['aekit'] - PUBLISHED[name]['psnr_db'][25]:+.2f} dB."]
        timed = result["timing"][name]
        speed = timed["seconds_per_megapixel"]
        lines += ["", f"Seconds per megapixel at sigma 25 ({result['threads']} threads; the methods one after another "
                  f"on the same {timed['images']} images, {timed['megapixels']:.2f} MP, in this run): aekit "
                  f"{speed['aekit']:.2f} (self-ensembled {speed['aekit-x8']:.1f}), BM3D {speed['bm3d']:.1f} "
                  f"({speed['bm3d'] / speed['aekit']:.0f}x aekit's), "
                  f"non-local means {speed['nlm']:.2f}, wavelet {speed['wavelet']:.2f}.", ""]
    for row in result.get("large", []):
        lines.append(f"- `aekit denoise` on {row['image']} ({row['size']}, {row['model']}, sigma 25): "
                     f"{row['psnr_noisy_db']:.2f} -> {row['psnr_denoised_db']:.2f} dB in {row['seconds']:.1f} s, "
                     f"peak memory {row['peak_memory_mb']:.0f} MB.")
    lines += ["", "![noisy, aekit, BM3D, clean](images/denoise.png)"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = runs.parser(__doc__, only="the runs whose name ends with this (rgb or grey)", progress=True)
    parser.add_argument("--images", type=int, default=None, help="only the first N images of each set")
    parser.add_argument("--baselines-only", action="store_true",
                        help="only compute the baselines' outputs into the memo folder (no model needed)")
    parser.add_argument("--no-memo", action="store_true", help="recompute the baselines instead of reading the memo")
    args = parser.parse_args()
    log = runs.start()
    import torch

    import aekit

    data_dir = Path(args.data_dir)
    memo = None if args.no_memo else MEMO
    if args.baselines_only:
        for name in TEST_SETS:
            evaluate_set(name, None, test_images(data_dir, name, args.images), log, memo, BASELINES)
        return
    specs = [s for s in RUNS if args.only is None or s.name.endswith(args.only)]
    if args.keep_progress:
        runs.keep_progress(specs, log, SCRATCH, WEIGHTS)
        return
    if not args.evaluate_only:
        data = training_cache(data_dir)
        runs.train_unfinished(specs, data, log, SCRATCH, WEIGHTS)
        if args.train_only:
            return
    result = {"date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} cores, {platform.processor() or 'cpu'}",
              "threads": torch.get_num_threads(), "torch": torch.__version__, "rows": [], "timing": {},
              "trained_epochs": {}}
    examples = {}
    for name, (spec_name, _) in TEST_SETS.items():
        if not (WEIGHTS / spec_name / "model.safetensors").exists() or spec_name not in {s.name for s in specs}:
            continue
        run = aekit.load(WEIGHTS / spec_name)
        result["trained_epochs"][spec_name] = run.epoch
        images = test_images(data_dir, name, args.images)
        result["timing"][name] = timings(name, run, images, log)
        rows, examples[name] = evaluate_set(name, run, images, log, memo)
        result["rows"] += rows
    if args.images is None and all((WEIGHTS / s / "model.safetensors").exists() for s, _ in TEST_SETS.values()):
        result["large"] = large_photos(data_dir, log)
    print(markdown(result))
    if not args.no_write and args.images is None:
        RESULTS_JSON.write_text(json.dumps(result, indent=2) + "\n")
        figure(examples)
        runs.write_section(markdown(result), SECTION)


if __name__ == "__main__":
    main()
