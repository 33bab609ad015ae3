"""Which transform should a compressor use on a CPU (issue 20): GDN (``--arch gdn``, Ballé et al.'s) or residual
blocks (``--arch resnet``)? Both trained side by side, one thread each, on the same crops with the same objective and
schedule; compared on the rate-distortion cost of the held-out photos after each epoch, against steps and against
seconds.

    python bench/codec_transforms.py               # train both (resumable), write the JSON and the docs section
    python bench/codec_transforms.py --evaluate-only  # re-check the final costs from the committed weights

Data: the compression benchmark's (``bench/photos.py``'s seed-0 split of BSDS500: 280 photos to train on, random
128x128 crops with flips; the 20 others' centre crops give the test cost). Kodak is not used: the choice this
measurement makes must not come from the test set. The test cost is the loss per pixel in bits,
lambda 255^2 MSE + bpp on rounded codes, the number the codec pays.

Writes ``bench/results/codec_transforms.json`` and the transforms section of ``docs/compression.md``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import photos  # noqa: E402  (bench/ is not a package)
import runs  # noqa: E402

SCRATCH = HERE / "results" / "tmp" / "codec-transforms"
WEIGHTS = HERE / "weights" / "codec-transforms"
RESULTS_JSON = HERE / "results" / "codec_transforms.json"
DOC = REPO / "docs" / "compression.md"
SECTION = "## Transforms: GDN against residual blocks on 2 cores"
LMBDA, CROP, EPOCHS = 0.0067, 128, 30
ARMS = {"resnet": ("--arch", "resnet", "--downsample", "16", "--latent-channels", "128"),
        "gdn": ("--arch", "gdn", "--downsample", "16", "--latent-channels", "128")}


def command(arm: str, data: str, out: str) -> list[str]:
    return [sys.executable, "-m", "aekit", "train", "--model", "ae", *ARMS[arm], "--latent", "entropy", "--lmbda",
            str(LMBDA), "--likelihood", "gaussian", "--crop", str(CROP), "--flip", "--data", data, "--epochs",
            str(EPOCHS), "--batch-size", "8", "--lr", "3e-4", "--lr-schedule", "cosine", "--seed", "0", "--out", out,
            "--quiet"]


def train_side_by_side(data: Path, log) -> None:
    """Both arms at once, one thread each (the two cores shared evenly), each resumable."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    running = []
    for arm in ARMS:
        out = SCRATCH / arm
        cmd = command(arm, str(data), str(out)) + (["--resume"] if (out / "config.json").exists() else [])
        log(f"training {arm}: {' '.join(cmd[1:])}")
        running.append(subprocess.Popen(cmd, env=env, cwd=REPO))
    codes = [p.wait() for p in running]
    if any(codes):
        raise SystemExit(f"training stopped (exit codes {codes}); run again to resume")
    for arm in ARMS:
        runs.keep(SCRATCH / arm, WEIGHTS / arm)


def curve(arm: str) -> list[dict]:
    """Per epoch: the test cost in bits per pixel, its rate and PSNR parts, the step and the cumulative seconds."""
    rows, seconds = [], 0.0
    pixels = CROP * CROP
    for line in (WEIGHTS / arm / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        seconds += r["epoch_seconds"]
        mse = r["test_recon"] / (LMBDA * 255**2 * math.log(2) * pixels)  # recon = lambda 255^2 ln2 MSE x pixels
        rows.append({"epoch": r["epoch"], "step": r["step"], "seconds": round(seconds, 1),
                     "test_cost_bits_per_pixel": r["test_loss"] / (pixels * math.log(2)),
                     "test_bpp": r["test_kl"] / (pixels * math.log(2)), "test_psnr_db": -10 * math.log10(mse)})
    return rows


def recheck(run, data: Path) -> float:
    """The final test cost recomputed from the kept (half-precision) weights, in bits per pixel."""
    import numpy as np
    import torch

    import aekit
    from aekit.training.augment import center_crop_set
    from aekit.training.loop import evaluate_losses

    test = center_crop_set(aekit.ImageSet(torch.from_numpy(np.load(data)["x_test"]), None, "test"), CROP)
    return evaluate_losses(run.model.float(), test, run.config)["loss"] / (CROP * CROP * math.log(2))


def markdown(result: dict) -> str:
    arms = result["arms"]
    lines = [SECTION, "", f"Both transforms trained side by side, one thread each ({result['date']}, "
             f"{result['machine']}), on the compression benchmark's crops with lambda = {LMBDA} (CompressAI's "
             f"quality 3) and one schedule ({EPOCHS} epochs of 35 steps of 8 crops, Adam 3e-4, cosine); the test "
             "cost is lambda 255^2 MSE + bits per pixel on the 20 held-out photos' centre crops, rounded codes "
             "(Kodak is not used). `python bench/codec_transforms.py --evaluate-only` recomputes the final costs "
             "from the weights in `bench/weights/codec-transforms/` (half precision: "
             + ", ".join(f"{arm} {e['final_cost_rechecked']:.4f}" for arm, e in arms.items()) + ").", "",
             "| transform | weights | epoch | step | seconds | test cost (bits/px) | test bpp | test PSNR dB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for arm, entry in arms.items():
        for row in entry["curve"]:
            if row["epoch"] % 5 == 0 or row is entry["curve"][-1]:
                lines.append(f"| {arm} | {entry['parameters']:,} | {row['epoch']} | {row['step']:,} | "
                             f"{row['seconds']:.0f} | {row['test_cost_bits_per_pixel']:.4f} | {row['test_bpp']:.4f} | "
                             f"{row['test_psnr_db']:.2f} |")
    c = result["comparison"]
    lines += ["", f"After the same {c['steps']:,} steps the test cost is {c['cost_at_steps']['gdn']:.4f} (GDN) against "
              f"{c['cost_at_steps']['resnet']:.4f} (residual); GDN took {c['seconds']['gdn']:.0f} s and the residual "
              f"backbone {c['seconds']['resnet']:.0f} s for them. Better per CPU second here: **{c['better']}**.",
              "", "Both are early in training (about a thousand steps; CompressAI's models train for about a million): "
              "this measures how fast each learns on 2 cores, which is what the benchmark's budget buys, not where "
              "either would converge. The compression benchmark trains the better one.", ""]
    return "\n".join(lines) + "\n"


def compare(arms: dict) -> dict:
    steps = min(entry["curve"][-1]["step"] for entry in arms.values())
    at = {arm: next(r for r in entry["curve"] if r["step"] >= steps) for arm, entry in arms.items()}
    cost = {arm: row["test_cost_bits_per_pixel"] for arm, row in at.items()}
    seconds = {arm: row["seconds"] for arm, row in at.items()}
    # per CPU second: the cost each reached by the time the faster one finished its steps
    deadline = min(seconds.values())
    by_time = {arm: min(r["test_cost_bits_per_pixel"] for r in entry["curve"] if r["seconds"] <= deadline * 1.0001)
               for arm, entry in arms.items()}
    return {"steps": steps, "cost_at_steps": cost, "seconds": seconds, "cost_by_time": by_time,
            "better": min(by_time, key=by_time.get)}


def main() -> None:
    args = runs.parser(__doc__, train=False).parse_args()
    log = runs.start()
    import torch

    import aekit

    data = photos.photo_cache(Path(args.data_dir))
    if not args.evaluate_only:
        train_side_by_side(data, log)
    arms = {}
    for arm in ARMS:
        run = aekit.load(WEIGHTS / arm)
        arms[arm] = {"parameters": sum(p.numel() for p in run.model.parameters()), "curve": curve(arm),
                     "final_cost_rechecked": recheck(run, data),
                     "command": " ".join(command(arm, "BSDS500.npz", f"runs/{arm}")[3:-1])}
        log(f"{arm}: logged {arms[arm]['curve'][-1]['test_cost_bits_per_pixel']:.4f}, recomputed "
            f"{arms[arm]['final_cost_rechecked']:.4f} bits/px")
    result = {"date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} cores, {platform.processor() or 'cpu'}",
              "torch": torch.__version__, "arms": arms}
    result["comparison"] = compare(arms)
    print(markdown(result))
    if not args.no_write:
        RESULTS_JSON.write_text(json.dumps(result, indent=2) + "\n")
        runs.write_section(markdown(result), SECTION, DOC)


if __name__ == "__main__":
    main()
