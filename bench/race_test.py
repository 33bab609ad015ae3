"""Concurrent writers: rounds of two ``aekit train`` processes racing into one run folder.

    python bench/race_test.py               # 20 rounds (about 3 minutes on 2 cores)
    python bench/race_test.py --rounds 5

Each round starts ``aekit train --model ae`` and, 0.3 s later (the issue's reproduction), ``aekit train --model
vae`` on the same ``--out``, and checks that exactly one wins (exit 0) while the other is refused in one line
(exit 2) naming the winner's process or the run it finished; that the folder holds the winner's config, loads,
and that its ``metrics.jsonl`` has each epoch once; and that no lock file is left behind. The order of the two
starts alternates between rounds. Writes ``bench/results/race_test.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TRAIN = ["--hidden", "16", "--latent-dim", "4", "--batch-size", "16", "--quiet"]
RUN_FILES = ["config.json", "metrics.jsonl", "model.safetensors", "state.safetensors"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}


def one_round(out: Path, first: str, second: str, epochs: int, gap: float = 0.3) -> dict:
    """Race ``first`` and ``second`` (families) into ``out``; returns what happened and whether it was right."""
    procs = {}
    for family in (first, second):
        cmd = [sys.executable, "-m", "aekit", "train", "--model", family, *TRAIN, "--epochs", str(epochs),
               "--out", str(out)]
        procs[family] = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(gap)
    outcome = {family: (p, *p.communicate(timeout=600)) for family, p in procs.items()}
    codes = {family: p.returncode for family, (p, _, _) in outcome.items()}
    winners = [f for f, code in codes.items() if code == 0]
    result = {"first": first, "codes": codes, "winner": winners[0] if len(winners) == 1 else None}
    problems = []
    if len(winners) != 1:
        problems.append(f"{len(winners)} winners")
    else:
        winner, loser = winners[0], next(f for f in codes if f != winners[0])
        err = outcome[loser][2]
        result["refusal"] = err.strip().replace(str(out), "RUN")  # no paths of this machine in the results
        if codes[loser] != 2 or err.count("\n") != 1 or "Traceback" in err:
            problems.append(f"the loser exited {codes[loser]} with {err!r}")
        elif f"process {procs[winner].pid}" not in err and "already holds a run" not in err:
            problems.append(f"the refusal does not name the winner: {err.strip()}")
        try:
            config = json.loads((out / "config.json").read_text())
            rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
            epochs_seen = [r["epoch"] for r in rows]
            if config["family"] != winner:
                problems.append(f"config.json says {config['family']}, the winner was {winner}")
            if epochs_seen != list(range(1, epochs + 1)):
                problems.append(f"metrics.jsonl epochs {epochs_seen}")
            sys.path.insert(0, str(REPO / "src"))
            import aekit

            if aekit.load(out).epoch != epochs:
                problems.append("the folder does not load at the last epoch")
            if sorted(p.name for p in out.iterdir()) != RUN_FILES:
                problems.append(f"files {sorted(p.name for p in out.iterdir())}")
        except Exception as err:  # noqa: BLE001 - any failure to read the folder is what this test looks for
            problems.append(f"the folder does not load: {type(err).__name__}: {err}")
    result["problems"] = problems
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default=str(HERE / "results" / "race_test.json"))
    args = parser.parse_args()
    rounds = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="aekit-race-") as tmp:
        for i in range(args.rounds):
            first, second = ("ae", "vae") if i % 2 == 0 else ("vae", "ae")
            r = one_round(Path(tmp) / f"round{i}", first, second, args.epochs)
            rounds.append(r)
            print(f"round {i + 1:2d}: {first} started first, {r['winner']} won"
                  + (f"; PROBLEMS: {r['problems']}" if r["problems"] else ""), flush=True)
    failed = sum(bool(r["problems"]) for r in rounds)
    summary = {"date": time.strftime("%Y-%m-%d"), "rounds": len(rounds), "failed": failed,
               "first_started_won": sum(r["winner"] == r["first"] for r in rounds),
               "seconds": round(time.perf_counter() - t0, 1), "machine": f"{os.cpu_count()} cores",
               "details": rounds}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{len(rounds)} rounds, {failed} with problems -> {'PASS' if failed == 0 else 'FAIL'}")
    sys.exit(0 if failed == 0 else 1)


if __name__ == "__main__":
    main()
