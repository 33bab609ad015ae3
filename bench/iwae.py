"""The IWAE bound against the ELBO as a training objective: the same VAE, epochs and seed, K = 1 and K > 1.

    python bench/iwae.py                          # K = 1 and 5, 20 epochs each; ~10 min on 2 cores
    python bench/iwae.py --ks 1 5 20 --epochs 50  # more
    python bench/iwae.py --data-dir DIR           # where mnist/ lives (default ../shared/data)

The model is the likelihood row of bench/results.py (MLP 784-500-500-50, one stochastic layer) on dynamically
binarized MNIST; each run is scored by the importance-weighted NLL on one fixed, seeded binarization of the
test set (Burda et al. 2015). Prints a table and writes ``bench/results/iwae.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def run(k: int, args: argparse.Namespace, data_dir: str) -> dict:
    import aekit
    from aekit.evaluation import load_run_splits
    from aekit.metrics.likelihood import importance_weighted_log_likelihood, log_likelihood_fn

    with tempfile.TemporaryDirectory(prefix="aekit-iwae-") as tmp:
        t0 = time.perf_counter()
        run = aekit.train("vae", out=Path(tmp) / "run", data="mnist", data_dir=data_dir, binarize="dynamic",
                            hidden=(500, 500), latent_dim=50, epochs=args.epochs, seed=args.seed,
                            importance_samples=k, progress=False)
        wall = time.perf_counter() - t0
        model, curve = run.model, run.history
        test = load_run_splits(run, progress=False).test.images
        if args.limit:
            test = test[: args.limit]
        t0 = time.perf_counter()
        log_px, elbo = importance_weighted_log_likelihood(model.encode, model.decode,
                                                          log_likelihood_fn(run.config.objective), test,
                                                          args.iw_samples, seed=args.seed)
        return {
            "importance_samples": k,
            "epochs": args.epochs,
            "train_seconds": round(wall, 1),
            "seconds_per_epoch": round(sorted(r["epoch_seconds"] for r in curve)[len(curve) // 2], 2),
            "iw_nll_nats": round(float(-log_px.mean()), 3),
            "iw_nll_stderr": round(float(log_px.std() / len(log_px) ** 0.5), 3),
            "neg_elbo_nats": round(float(-elbo.mean()), 3),
            "final_test_loss": round(curve[-1]["test_loss"], 3),
            "eval_seconds": round(time.perf_counter() - t0, 1),
            "test_images": len(test),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 5], help="importance samples while training")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iw-samples", type=int, default=1000, help="K of the IW-NLL estimate")
    parser.add_argument("--limit", type=int, default=None, help="test images scored (default: all 10,000)")
    parser.add_argument("--out", default=str(HERE / "results" / "iwae.json"))
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    import torch

    from aekit.cpu import tune_cpu

    tune_cpu()
    torch.set_num_threads(os.cpu_count() or 1)
    from aekit.errors import AekitError

    rows = []
    for k in args.ks:
        try:
            rows.append(run(k, args, os.path.abspath(args.data_dir)))
        except AekitError as err:
            print(f"iwae.py: error: {err}", file=sys.stderr)
            sys.exit(2)
        print(json.dumps(rows[-1]), flush=True)
    base = next((r for r in rows if r["importance_samples"] == 1), None)
    print(f"\n{'K':>4} {'s/epoch':>8} {'IW-NLL':>8} {'-ELBO':>8}" + ("  vs K=1" if base else ""))
    for r in rows:
        gain = f"  {r['iw_nll_nats'] - base['iw_nll_nats']:+.2f} nats" if base else ""
        print(f"{r['importance_samples']:>4} {r['seconds_per_epoch']:>8.2f} {r['iw_nll_nats']:>8.2f} "
              f"{r['neg_elbo_nats']:>8.2f}{gain}")
    meta = {"date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}",
            "python": platform.python_version(), "iw_samples": args.iw_samples, "seed": args.seed}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "runs": rows}, indent=2) + "\n")
    print(f"wrote {Path(args.out).relative_to(REPO) if Path(args.out).is_relative_to(REPO) else args.out}")


if __name__ == "__main__":
    main()
