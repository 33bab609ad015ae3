"""Training speed with 1 and 2 processes (torchrun, gloo) on this machine's CPUs.

    PYTHONPATH=src python bench/ddp_scaling.py                      # mnist-5k, and MNIST when ../shared/data has it
    PYTHONPATH=src python bench/ddp_scaling.py --data mnist-5k --epochs 3

Each configuration trains the same run (pytorch/examples' VAE, global batch 128) in fresh processes and reads the
steady-state training rate (epochs after the first) and the epoch time from the run's ``metrics.jsonl``. Writes
``bench/results/ddp_scaling.json``. Two processes on two cores compete with each other and with anything else the
machine runs; the numbers say what that costs or gains here, not on a cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TRAIN = ["--model", "vae", "--hidden", "400", "--latent-dim", "20", "--batch-size", "128", "--quiet"]
CONFIGS = (  # (name, processes, torch threads per process)
    ("1 process x 2 threads", 1, 2),
    ("1 process x 1 thread", 1, 1),
    ("2 processes x 1 thread", 2, 1),
)


def run(data: str, data_dir: Path, epochs: int, processes: int, threads: int, out: Path) -> dict:
    args = ["train", *TRAIN, "--data", data, "--data-dir", str(data_dir), "--epochs", str(epochs), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": str(threads), "GLOO_SOCKET_IFNAME": "lo"}
    if processes == 1:
        cmd = [sys.executable, "-m", "aekit", *args]
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
               "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "aekit", *args]
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steady = rows[1:] or rows
    return {
        "train_images_per_second": round(sum(r["train_images_per_second"] for r in steady) / len(steady)),
        "epoch_seconds": round(sum(r["epoch_seconds"] for r in steady) / len(steady), 3),
        "wall_seconds": round(wall, 1),
        "final_test_loss": round(rows[-1]["test_loss"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=None, help="datasets (default mnist-5k, and mnist if present)")
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--output", type=Path, default=HERE / "results" / "ddp_scaling.json")
    args = parser.parse_args()
    datasets = args.data or ["mnist-5k"] + (["mnist"] if (args.data_dir / "mnist").is_dir() else [])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for data in datasets:
            for name, processes, threads in CONFIGS:
                result = run(data, args.data_dir, args.epochs, processes, threads, Path(tmp) / f"{data}-{processes}-{threads}")
                rows.append({"data": data, "config": name, "processes": processes, "threads": threads, **result})
                print(f"{data:9s} {name:24s} {result['train_images_per_second']:>8,} images/s  "
                      f"{result['epoch_seconds']:6.2f} s/epoch  test loss {result['final_test_loss']:.3f}", flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "load_average_at_end": load,
        "command": "aekit train " + " ".join(TRAIN) + f" --epochs {args.epochs}", "rows": rows,
    }, indent=2) + "\n")
    print(f"written: {args.output}")


if __name__ == "__main__":
    main()
