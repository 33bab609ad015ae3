"""Crash test: train, SIGKILL at random moments spread over the run, resume each time, and check
that the final weights equal an uninterrupted run's.

    python bench/kill_test.py                 # 20 kills (about 3 minutes on 2 cores)
    python bench/kill_test.py --kills 5

Writes ``bench/results/kill_test.json``. A kill that lands before the run folder holds a config
(the first second or so) is followed by the original command again, as a user would; every other
kill is followed by ``aekit train --resume``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TRAIN = ["--model", "dae", "--hidden", "64", "--latent-dim", "8", "--batch-size", "64", "--quiet"]


def _env() -> dict[str, str]:
    # the same thread count in every process, so that all runs take the same numerical path
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}


def aekit(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aekit", *args], env=_env(), capture_output=True, text=True,
                          timeout=timeout)


def train_command(out: Path, epochs: int, resume: bool) -> list[str]:
    cmd = [sys.executable, "-m", "aekit", "train", *TRAIN, "--epochs", str(epochs), "--out", str(out)]
    return cmd + (["--resume"] if resume else [])


def weights(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(run_dir / "model.safetensors")


def run_with_kills(out: Path, *, epochs: int, kills: int, seed: int = 0, log=print) -> dict:
    """Train into ``out`` with ``kills`` SIGKILLs at random moments; returns counts and timings."""
    rng = random.Random(seed)
    # how long an uninterrupted run takes, to spread the kill times over it
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ref = subprocess.run(train_command(Path(tmp) / "ref", epochs, False), env=_env(), capture_output=True, text=True)
        duration = time.perf_counter() - t0
        if ref.returncode != 0:
            raise RuntimeError(ref.stderr)
    resumes = restarts = resume_failures = 0
    killed = 0
    while killed < kills:
        resume = (out / "config.json").exists()
        proc = subprocess.Popen(train_command(out, epochs, resume), env=_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        delay = rng.uniform(0.05, duration)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed += 1
            log(f"  kill {killed}/{kills} after {delay:.2f}s ({'resume' if resume else 'fresh start'})")
        else:
            if proc.returncode != 0:
                resume_failures += 1
                log(f"  run failed: {proc.stderr.read().strip()[-300:]}")
                break
            # finished before the kill: start over on a fresh folder to keep killing
            log(f"  run finished before its kill at {delay:.2f}s; starting a new run")
            subprocess.run(["rm", "-rf", str(out)])
        if resume:
            resumes += 1
        else:
            restarts += 1
    final = subprocess.run(train_command(out, epochs, (out / "config.json").exists()), env=_env(),
                           capture_output=True, text=True)
    if final.returncode != 0:
        resume_failures += 1
        log(f"  final resume failed: {final.stderr.strip()[-300:]}")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(train_command(Path(tmp) / "ref", epochs, False), env=_env(), check=True, capture_output=True)
        expected = weights(Path(tmp) / "ref")
    got = weights(out) if (out / "model.safetensors").exists() else {}
    import torch

    equal = bool(got) and got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in expected)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()] if equal else []
    return {
        "kills": killed,
        "runs_started_as_resume": resumes,
        "runs_started_fresh": restarts,
        "resume_failures": resume_failures,
        "final_weights_equal_uninterrupted": equal,
        "metrics_epochs": [r["epoch"] for r in rows],
        "uninterrupted_seconds": duration,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(HERE / "results" / "kill_test.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = run_with_kills(Path(tmp) / "run", epochs=args.epochs, kills=args.kills, seed=args.seed)
    result["date"] = time.strftime("%Y-%m-%d")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    ok = result["resume_failures"] == 0 and result["final_weights_equal_uninterrupted"]
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
