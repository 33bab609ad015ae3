"""What the photo benchmarks share (faces, photos, compression, codec_transforms, denoise, anomaly): their command
line, resumable training of their runs with the half-precision weights kept under ``bench/weights/``, and the
sections they write into the docs.

A benchmark's run is a spec with a ``name``, an ``epochs`` and a ``command(data, out)`` giving its ``aekit train``
line. It trains in a scratch folder under ``bench/results/tmp/`` (ignored by git, resumed when the script is run
again) and, once finished, its weights, config and curve are kept in the benchmark's weights folder (committed);
evaluation reads only those.

A run kept part way (``--keep-progress``) continues in a later session, on another clone, even when the scratch
folder is gone: :func:`restart_from_kept` rebuilds a checkpoint from the kept weights at the kept epoch and step
(the learning-rate schedule goes on where it was). That restart is close to, not exactly, the uninterrupted run:
the kept weights are half precision, Adam's moments start again from zero and the shuffling generator is reseeded
(a resume from the scratch folder, on the same machine, is exact). Only the weights are committed, not the
optimizer's state, which would triple the bytes of every kept run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
INIT_FROM = "init_from.json"  # a fine-tune's source run and the epoch its weights were kept at, kept beside them
REPO = HERE.parent
RESULTS_MD = REPO / "docs" / "results.md"


def parser(doc: str, *, only: str | None = None, train: bool = True,
           progress: bool = False) -> argparse.ArgumentParser:
    """The options every benchmark takes: ``--data-dir``, ``--evaluate-only``, ``--no-write``; ``--train-only``
    unless ``train`` is off; ``--only`` with its help when ``only`` is given; ``--keep-progress`` (for
    :func:`keep_progress`) when ``progress`` is on."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--evaluate-only", action="store_true", help="no training: re-check from the committed weights")
    if train:
        p.add_argument("--train-only", action="store_true",
                       help="train (or resume) and keep the weights; no evaluation")
    if progress:
        p.add_argument("--keep-progress", action="store_true",
                       help="keep the unfinished runs' weights as they are now (part way; training resumes from "
                            "the scratch folder), then stop: to evaluate or commit progress")
    if only is not None:
        p.add_argument("--only", default=None, help=only)
    p.add_argument("--no-write", action="store_true", help="print the results, write no JSON and no docs")
    return p


def start() -> Callable[[str], None]:
    """aekit from this checkout, the CPU tuned as training tunes it; returns the benchmark's log function."""
    sys.path.insert(0, str(REPO / "src"))
    from aekit.cpu import tune_cpu

    tune_cpu()
    return lambda message: print(message, flush=True)


def train(spec, data: Path, log, scratch: Path, weights: Path) -> None:
    """Run (or resume) the spec's command in its scratch folder, then keep its half-precision weights."""
    out = scratch / spec.name
    cmd = spec.command(str(data), str(out))
    if not (out / "config.json").exists() and (weights / spec.name / "model.safetensors").exists():
        restart_from_kept(weights / spec.name, out, str(data), log)
    source = getattr(spec, "init_from", None)
    if source and not (out / "config.json").exists():  # a fine-tune: which epoch of its source it starts from
        out.mkdir(parents=True, exist_ok=True)
        epoch = len((weights / source / "metrics.jsonl").read_text().splitlines())
        (out / INIT_FROM).write_text(json.dumps({"run": source, "epoch": epoch}) + "\n")
    if (out / "config.json").exists():
        cmd.append("--resume")
    log(f"training {spec.name}: {' '.join(cmd)}")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, "-m", "aekit", *cmd[1:], "--quiet"], env=env, cwd=REPO)
    if done.returncode == 130:  # stopped by Ctrl-C (or SIGINT): the run saved where it was
        raise SystemExit(f"{spec.name}: stopped; rerun the same command to resume it from {out}")
    if done.returncode:
        raise SystemExit(f"{spec.name}: aekit train failed (exit {done.returncode}); its folder is {out}")
    keep(out, weights / spec.name)


def restart_from_kept(kept: Path, out: Path, data: str, log) -> None:
    """A scratch run folder in ``out`` that ``aekit train --resume`` continues from a run kept part way in ``kept``:
    its config (the data path as the benchmark passes it now), its curve, and a checkpoint holding the kept weights
    at the kept epoch and step, with a fresh optimizer and the generator reseeded by the epoch (see the module's
    docstring for what this loses against an uninterrupted run)."""
    from aekit.run import load_config, load_weights, save_config
    from aekit.training.loop import new_state
    from aekit.training.resume import save_state

    rows = [json.loads(line) for line in (kept / "metrics.jsonl").read_text().splitlines() if line.strip()]
    if not rows:
        return
    config = load_config(kept)
    config.data = dataclasses.replace(config.data, data=data)
    state = new_state(config)
    load_weights(state.model, kept / "model.safetensors")
    if config.train.ema:
        state.start_ema()  # the kept weights are the moving average: the model and its average start from them
    state.epoch, state.step = rows[-1]["epoch"], rows[-1]["step"]
    state.generator.manual_seed(config.train.seed + 1_000_003 * state.epoch)
    out.mkdir(parents=True, exist_ok=True)
    save_config(out, config)
    shutil.copy2(kept / "model.safetensors", out / "model.safetensors")
    save_state(out, state)
    shutil.copy2(kept / "metrics.jsonl", out / "metrics.jsonl")  # after the weights, as training writes them
    if (kept / INIT_FROM).exists():
        shutil.copy2(kept / INIT_FROM, out / INIT_FROM)
    log(f"no scratch run in {out}: restarting it from the weights kept at epoch {state.epoch} in {kept} "
        f"(step {state.step:,}; the optimizer's moments start again)")


def cli_in_own_process(argv: list[str]) -> dict:
    """``aekit ARGV`` in a process of its own: its printed ``key value`` lines, plus ``seconds`` (the command, start-up
    included) and ``peak_mib`` (its peak resident memory). A failing command raises.

    The peak is the process's own VmHWM (``/proc/self/status``): ru_maxrss of a process started by exec keeps the
    peak of the process it was forked from, a benchmark holding a gigabyte, and so read the parent's peak."""
    code = ("import sys, time; from aekit.cli import main; t = time.perf_counter(); rc = main(sys.argv[1:]); "
            "print('SECONDS', time.perf_counter() - t); "
            "print('PEAK_MIB', next(int(line.split()[1]) for line in open('/proc/self/status') "
            "if line.startswith('VmHWM:')) / 1024); sys.exit(rc)")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, "-c", code, *map(str, argv)], capture_output=True, text=True, env=env,
                          check=True)
    values = dict(line.split(None, 1) for line in done.stdout.strip().splitlines() if len(line.split(None, 1)) == 2)
    return {**values, "seconds": float(values["SECONDS"]), "peak_mib": float(values["PEAK_MIB"])}


def unfinished(spec, weights: Path) -> bool:
    """Whether a spec still has training to do: no kept weights, or kept ones from fewer epochs than it asks for
    (a run kept part way, to be resumed in a later session from its scratch folder)."""
    path = weights / spec.name / "metrics.jsonl"
    return not (weights / spec.name / "model.safetensors").exists() or not path.exists() or \
        len(path.read_text().splitlines()) < spec.epochs


def train_unfinished(specs, data: Path, log, scratch: Path, weights: Path) -> None:
    """Train (or resume) every spec that still has training to do (:func:`unfinished`), one after another."""
    for spec in specs:
        if unfinished(spec, weights):
            train(spec, data, log, scratch, weights)


def keep_progress(specs, log, scratch: Path, weights: Path) -> None:
    """Keep each unfinished spec's scratch run as it is now, while its training may go on: a checkpoint is
    consistent once its line is in metrics.jsonl (written after the weights), so the copy is retried until the
    weights are no newer than the curve and neither changed while being kept."""
    import time

    for spec in specs:
        out = scratch / spec.name
        if not unfinished(spec, weights) or not (out / "metrics.jsonl").exists():
            continue
        for _ in range(600):
            stamp = [(out / f).stat().st_mtime_ns for f in ("model.safetensors", "metrics.jsonl")]
            if stamp[0] <= stamp[1]:
                keep(out, weights / spec.name)
                if stamp == [(out / f).stat().st_mtime_ns for f in ("model.safetensors", "metrics.jsonl")]:
                    break
            time.sleep(1)
        else:
            raise SystemExit(f"could not take a consistent copy of {out} in 10 minutes")
        epochs = len((weights / spec.name / "metrics.jsonl").read_text().splitlines())
        log(f"kept {spec.name} at epoch {epochs} of {spec.epochs} in {weights / spec.name}")


def keep(run_dir: Path, target: Path) -> None:
    """A finished run's weights in half precision, its config and its curve, in ``target`` (committed)."""
    import torch

    import aekit

    if target.exists():
        shutil.rmtree(target)
    run = aekit.load(run_dir)
    data = Path(run.config.data.data)  # recorded as the repository's relative path, never this machine's
    if data.is_absolute():
        relative = data.relative_to(REPO) if data.is_relative_to(REPO) else Path("bench/results/tmp") / data.name
        run.config.data = dataclasses.replace(run.config.data, data=relative.as_posix())
    run.save(target, dtype=torch.float16)
    shutil.copy2(run_dir / "metrics.jsonl", target / "metrics.jsonl")
    if (run_dir / INIT_FROM).exists():
        shutil.copy2(run_dir / INIT_FROM, target / INIT_FROM)


def write_section(text: str, section: str, path: Path = RESULTS_MD) -> None:
    """Put ``text`` (starting with its ``section`` heading) in ``path`` (docs/results.md), in place of the old one."""
    doc = path.read_text(encoding="utf-8")
    if section in doc:
        start = doc.index(section)
        end = doc.find("\n## ", start + len(section))
        doc = doc[:start] + text + (doc[end + 1:] if end != -1 else "")
    else:
        doc = doc.rstrip() + "\n\n" + text
    path.write_text(doc, encoding="utf-8")
