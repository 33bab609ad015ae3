"""Peak memory of training on an array file streamed (memory-mapped) vs held in memory, as the data grows 10x.

    PYTHONPATH=src python bench/stream_memory.py            # about 3 minutes on 2 cores; needs ~0.6 GB of disk
    PYTHONPATH=src python bench/stream_memory.py --sizes 60000 600000 --data-dir ../shared/data

Writes uint8 (N, 28, 28) .npy files of N images (MNIST's training images repeated, from ``--data-dir``/mnist when
there, else random pixels) into a temporary folder, trains one epoch of pytorch/examples' VAE on each in a fresh
``aekit train`` process (one torch thread) with ``--stream`` (and, for comparison, without it), and takes each
process's peak resident memory from the kernel (``os.wait4``'s ``ru_maxrss``). Prints a table and writes
``bench/results/stream_memory.json``.

Linux counts in a child's ``ru_maxrss`` the resident memory of the parent it was forked from, so this script keeps
its own process small: another process writes the array files, and the parent never loads numpy or torch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TRAIN = ["--model", "vae", "--hidden", "400", "--latent-dim", "20", "--batch-size", "128", "--epochs", "1", "--quiet"]


def write_array(path: Path, n: int, data_dir: Path) -> str:
    """(In its own process.) An (n, 28, 28) uint8 .npy of MNIST's 60,000 training images repeated (random
    pixels without them), written a block at a time; returns where the images came from."""
    import numpy as np

    source = data_dir / "mnist" / "train-images-idx3-ubyte.gz"
    if source.is_file():
        from aekit.data.formats.idx import read_idx

        base, what = read_idx(source, 3), "MNIST training images repeated"
    else:
        base, what = np.random.default_rng(0).integers(0, 256, (60_000, 28, 28), dtype=np.uint8), "random pixels"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (n, 28, 28)})
        f.writelines(base[: min(len(base), n - start)].tobytes() for start in range(0, n, len(base)))
    return what


def _env() -> dict[str, str]:
    # one torch thread: on a machine shared with other work OpenMP's spin-waiting threads can make a run 10x slower
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}


def measure(data: Path, out: Path, stream: bool) -> dict:
    """Train one epoch in a child process; its wall time and its own peak RSS."""
    cmd = [sys.executable, "-m", "aekit", "train", *TRAIN, "--data", str(data), "--out", str(out), "--force"]
    cmd += ["--stream"] if stream else []
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    err = proc.stderr.read() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{err}")
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    scale = 1 if platform.system() == "Darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return {
        "peak_rss_mib": round(usage.ru_maxrss * scale / 2**20, 1),
        "seconds": round(seconds, 1),
        "train_images_per_second": row["train_images_per_second"],
        "test_loss": round(row["test_loss"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[60_000, 600_000], help="images per array file")
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--no-memory", action="store_true", help="skip the in-memory runs")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "stream_memory.json")
    parser.add_argument("--write", type=Path, default=None, help=argparse.SUPPRESS)  # the writer process
    args = parser.parse_args()
    if args.write is not None:
        print(write_array(args.write, args.sizes[0], args.data_dir))
        return
    rows, source = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            data = Path(tmp) / f"images-{n}.npy"
            writer = [sys.executable, __file__, "--write", str(data), "--sizes", str(n), "--data-dir", str(args.data_dir)]
            source = subprocess.run(writer, env=_env(), check=True, capture_output=True, text=True).stdout.strip()
            for stream in (True, False) if not args.no_memory else (True,):
                result = measure(data, Path(tmp) / "run", stream)
                rows.append({"images": n, "array_mib": round(data.stat().st_size / 2**20, 1),
                             "mode": "streamed" if stream else "in memory", **result})
                print(f"{n:>9,} images  {rows[-1]['mode']:<9}  peak {result['peak_rss_mib']:7.1f} MiB  "
                      f"{result['seconds']:6.1f} s  {result['train_images_per_second']:>8,.0f} images/s", flush=True)
            data.unlink()
    streamed = [r for r in rows if r["mode"] == "streamed"]
    growth = streamed[-1]["peak_rss_mib"] / streamed[0]["peak_rss_mib"] if len(streamed) > 1 else None
    print()
    print("| images | array | mode | peak RSS | wall time | training images/s |")
    print("|---:|---:|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['images']:,} | {r['array_mib']:,.0f} MiB | {r['mode']} | {r['peak_rss_mib']:,.0f} MiB | "
              f"{r['seconds']:.1f} s | {r['train_images_per_second']:,.0f} |")
    if growth is not None:
        print(f"\nstreamed peak memory grows {growth:.2f}x while the data grows "
              f"{streamed[-1]['images'] / streamed[0]['images']:.0f}x")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}",
        "data": source,
        "command": "aekit train " + " ".join(TRAIN) + " --data IMAGES.npy [--stream]",
        "rows": rows,
        "streamed_peak_growth": round(growth, 3) if growth is not None else None,
    }
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {args.output.relative_to(REPO) if args.output.is_relative_to(REPO) else args.output}")


if __name__ == "__main__":
    main()
