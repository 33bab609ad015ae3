"""``aekit.train``: :func:`~aekit.training.loop.fit` kept in a run folder, checkpointed every epoch.

The run folder's life: a new run claims a folder that holds no run (``force`` replaces one), only once its data
has loaded; a resumed run restores the folder's training state and goes on where it stopped (only ``epochs``
may change). Every epoch commits a checkpoint in an order that survives a crash at any moment: the user-facing
weights, then the resume state (one atomic rename), then the metrics line (re-derived on resume if a crash lost
it). A stop asked for by SIGINT/SIGTERM inside an epoch saves a mid-epoch state to resume from.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .core.config import RunConfig, preset
from .cpu import tune_cpu
from .data import Splits, load_dataset
from .data.stream import chunks, default_workers
from .errors import AekitError, Interrupted
from .files import RunLock, atomic_write_bytes, check_writable, make_folder, read_jsonl, read_safetensors
from .run import (
    CONFIG,
    METRICS,
    MODEL,
    RUN_FILES,
    STATE,
    Run,
    append_history,
    check_init_from,
    load_config,
    load_init_from,
    save_config,
    save_weights,
)
from .training.augment import center_crop_splits
from .training.distributed import process_group
from .training.loop import Callback, fit, new_state
from .training.resume import TrainState, epochs_done, load_state, save_state


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def train(
    family: str | RunConfig | None = None,
    *,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    splits: Splits | None = None,
    log: Callable[[str], None] | None | str = "auto",
    stream: bool | None = None,
    workers: int | None = None,
    device: str = "auto",
    callbacks: Sequence[Callback] = (),
    **options: Any,
) -> Run:
    """Train an autoencoder and keep it in a run folder.

    Parameters
    ----------
    family : {"ae", "dae", "sae", "vae"} or RunConfig, optional
        The preset (default "vae"), or a full configuration.
    out : path, optional
        The run folder. Default: a new ``runs/<family>-<arch>-<data>-<n>``.
    resume : bool
        Continue the run in ``out`` from its last checkpoint (only ``epochs`` may change).
    force : bool
        Replace a run already in ``out``.
    progress : bool
        Show a progress bar per epoch (on a terminal) and a line per epoch.
    log : callable or None, optional
        Where the per-epoch lines go; default: stderr when ``progress``, else nowhere.
    splits : Splits, optional
        Data to train on instead of loading ``data`` (it is still recorded in the config).
    stream : bool or None
        Read a ``.npy`` file or an image folder batch by batch instead of holding it in memory: True always,
        None (default) when it would take more than half of the available memory. Same seed, same run.
    workers : int, optional
        Processes decoding a streamed image folder ahead of training (default: the cores, 1 to 4).
    device : {"auto", "cpu", "cuda"}
        Where to train; ``auto`` takes this process's GPU when PyTorch sees one. The returned model is on the CPU.
    callbacks : sequence of Callback
        More hooks into the loop (see :class:`aekit.training.loop.Callback`), after the one that checkpoints.
    **options
        Any field of ModelConfig, ObjectiveConfig, DataConfig or TrainConfig,
        e.g. ``arch="conv", latent_dim=16, noise_std=0.3, epochs=5``.

    Returns
    -------
    Run
        The trained model (``run.model``), its config, folder (``run.path``), epoch and history. Under torchrun
        every process returns it.

    Notes
    -----
    Sets this process's CPU settings for speed (:func:`aekit.cpu.tune_cpu`), as the ``aekit`` command does.

    Examples
    --------
    >>> run = aekit.train("vae", data="mnist-5k", epochs=1)   # doctest: +SKIP
    >>> run.path                                                # doctest: +SKIP
    PosixPath('runs/vae-mlp-mnist-5k-1')
    """
    tune_cpu()
    if log == "auto":
        log = _stderr if progress else None
    claim = _Claim()  # rank 0's hold on the run folder: its lock, and whether this run created the folder
    with process_group(device) as world:
        if not world.is_main:  # rank 0 alone prints, draws progress bars and writes the run folder
            progress, log = False, None
        log = log or (lambda message: None)
        try:
            config, run_dir, existing, done = world.on_main(
                lambda: _plan(family, out, resume=resume, force=force, options=options, processes=world.size,
                              workers=workers, log=log, claim=claim)
            )
            if done:  # --resume on a finished run: nothing to do
                return world.on_main(lambda: Run.load(run_dir))
            splits = world.main_first(lambda: _load_splits(config, splits, stream=stream, progress=progress))
            config = world.on_main(lambda: _conform_to_data(config, splits, run_dir, resume=resume, existing=existing))

            state = new_state(config, world.device)
            world.on_main(lambda: check_writable(run_dir, folder=True, nbytes=_checkpoint_bytes(state.model)))
            workers = default_workers() if workers is None else workers
            position = world.on_main(
                lambda: _start(state, config, splits, run_dir, resume=resume, workers=workers, log=log)
            )
            state.epoch, state.step, state.partial = position
            world.sync(state.model, state.optimizer, state.generator)  # every rank starts from rank 0's state
            try:
                fit(state, config, splits.train, splits.test, world=world,
                    callbacks=[_Checkpoints(run_dir), *callbacks], progress=progress, log=log, workers=workers)
            except Interrupted as stopped:
                raise Interrupted(f"{stopped}; saved: continue with --resume --out {run_dir}") from None
            history = world.on_main(lambda: read_jsonl(run_dir / METRICS))
        except Exception as err:
            if world.is_main and not isinstance(err, Interrupted):
                claim.abandon()  # a new run that never finished an epoch leaves nothing behind
            raise
        finally:
            claim.release()
    return Run(state.kept.cpu().eval(), config, run_dir, config.train.epochs, history)


def _checkpoint_bytes(model) -> int:
    """What a checkpoint writes: the weights, and the resume state (weights again and Adam's two moments)."""
    return 4 * 4 * sum(p.numel() for p in model.parameters())


class _Claim:
    """Rank 0's hold on the run folder of one ``aekit.train`` call: the folder's lock (one writer at a time), and
    what to undo if a new run fails before its first epoch: the files it wrote, the folder if it made it."""

    def __init__(self) -> None:
        self.lock: RunLock | None = None
        self.folder: Path | None = None
        self.created = False  # this run made the folder
        self.new = False  # a new run (not --resume)

    def make_new(self, run_dir: Path) -> Path:
        """Make ``runs/<stem>-<n>`` with the first free ``n`` from ``run_dir``'s on, atomically (mkdir)."""
        stem, _, n = run_dir.name.rpartition("-")
        number = int(n)
        make_folder(run_dir.parent)
        while True:
            candidate = run_dir.parent / f"{stem}-{number}"
            try:
                candidate.mkdir()
            except FileExistsError:
                number += 1
                continue
            except OSError as err:
                raise AekitError(f"cannot create {candidate}: {err.strerror or err}") from None
            self.created = True
            return candidate

    def take(self, run_dir: Path, *, new: bool) -> None:
        self.folder, self.new = run_dir, new
        if new and not run_dir.exists():  # (a folder make_new made is this run's too)
            make_folder(run_dir)
            self.created = True
        if not run_dir.is_dir():
            raise AekitError(f"{run_dir} is not a folder: pass a run folder written by 'aekit train'")
        self.lock = RunLock(run_dir, "aekit train").acquire()

    def abandon(self) -> None:
        """Undo a new run that has not finished an epoch (its folder holds only what this run wrote)."""
        if not self.new or self.folder is None or self.lock is None or (self.folder / MODEL).exists() \
                or (self.folder / STATE).exists():
            return
        (self.folder / CONFIG).unlink(missing_ok=True)
        self.release()
        if self.created:
            with contextlib.suppress(OSError):
                self.folder.rmdir()  # only if empty

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        if self.created and self.folder is not None and self.folder.is_dir() and not any(self.folder.iterdir()):
            with contextlib.suppress(OSError):
                self.folder.rmdir()  # refused before anything was written: leave no empty folder


class _Checkpoints(Callback):
    """Rank 0 keeps the run folder: a checkpoint after every epoch, and one where a stop was asked for."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def on_epoch_end(self, state: TrainState, row: dict[str, Any]) -> None:
        # Order matters for crash safety: the user-facing weights, then the resume state (one atomic
        # rename commits the epoch), then the metrics line (re-derived on resume if a crash lost it).
        save_weights(self.run_dir, state.kept, row["epoch"])
        save_state(self.run_dir, dataclasses.replace(state, partial={"row": row}))
        append_history(self.run_dir, row)

    def on_stop(self, state: TrainState) -> None:
        save_state(self.run_dir, state)


def _plan(family, out, *, resume: bool, force: bool, options: dict[str, Any], processes: int,
          workers: int | None = None, log, claim: _Claim | None = None) -> tuple:
    """``(config, run_dir, existing run files, done)``, checked before any data loads. With ``claim``, the run
    folder is locked first (made if missing, for the lock file), so that what it holds cannot change under us."""
    if workers is not None and workers < 0:
        raise AekitError(f"--workers must be >= 0 (got {workers})")
    existing: list[str] = []
    if resume:
        if out is None:
            raise AekitError("--resume needs the run folder (--out RUN_DIR)")
        run_dir = Path(out)
        if claim is not None:
            claim.take(run_dir, new=False)
        config = _resume_config(run_dir, family, options)
        if epochs_done(run_dir) == config.train.epochs:  # nothing to do: rerunning --resume is harmless
            log(f"{run_dir} has already trained all {config.train.epochs} epochs (pass a larger --epochs to continue)")
            return config, run_dir, existing, True
    else:
        config = family if isinstance(family, RunConfig) else preset(family or "vae", **options)
        if isinstance(family, RunConfig) and options:
            raise AekitError("pass either a RunConfig or keyword options, not both")
        run_dir = Path(out) if out is not None else _new_run_dir(config)
        check_writable(run_dir, folder=True)
        if claim is not None:
            if out is None:  # another process may pick the same new name: the first to make the folder has it
                run_dir = claim.make_new(run_dir)
            claim.take(run_dir, new=True)
        existing = _check_run_dir(run_dir, force)  # nothing is deleted before the data loads
    if config.train.batch_size % processes:
        raise AekitError(f"--batch-size {config.train.batch_size} is the batch of all {processes} processes "
                         f"together, so it must be a multiple of {processes} (each process takes an equal share)")
    return config, run_dir, existing, False


def _load_splits(config: RunConfig, splits: Splits | None, *, stream: bool | None, progress: bool) -> Splits:
    if splits is None:
        d = config.data
        splits = load_dataset(
            d.data, data_dir=d.data_dir, channels=d.channels, image_size=d.image_size,
            test_split=d.test_split, seed=config.train.seed, progress=progress, stream=stream,
        )
    splits = center_crop_splits(splits, config.data.crop, train=False) if config.data.crop else splits  # test: centres
    return splits.binarized(config.data.binarize)  # idempotent: binary images stay as they are


def _conform_to_data(config: RunConfig, splits: Splits, run_dir: Path, *, resume: bool, existing: list[str]) -> RunConfig:
    """The config with the data's image shape; claims the run folder of a new run (the data has loaded)."""
    c, h, w = splits.test.shape  # with --crop, the crop's size
    if resume and (c, h, w) != config.model.image_shape:
        raise AekitError(f"the data now has images of {c}x{h}x{w}; the run was trained on {config.model.image_shape}")
    config.model = dataclasses.replace(config.model, channels=c, height=h, width=w)
    if not resume:
        check_init_from(config, run_dir)
        _claim_run_dir(run_dir, existing)
    return config


def _start(state: TrainState, config: RunConfig, splits: Splits, run_dir: Path, *, resume: bool, workers: int,
           log) -> tuple[int, int, dict]:
    """The starting state (rank 0): a fresh model, or the run's checkpoint; ``(epoch, step, mid-epoch progress)``."""
    if resume and (run_dir / STATE).exists():
        load_state(run_dir, state)
        where = f"epoch {state.epoch + 1} of {config.train.epochs}"
        if state.partial:
            where = f"batch {state.partial['batch'] + 1} of {where}"
        log(f"resuming {run_dir} at {where}")
        _drop_metrics_after(run_dir, state.epoch)
    else:
        if resume:  # killed before the first checkpoint: the seed fully determines the start
            log(f"{run_dir} has no checkpoint yet: starting it from the beginning")
        if config.train.init_from is not None:
            log(load_init_from(state.model, Path(config.train.init_from),
                               lambda: next(splits.train.batches([slice(0, 32)]))))
        else:
            images = splits.train.images
            batches = images if splits.train.in_memory else splits.train.batches(chunks(len(images), 1024), workers)
            state.model.init_output_bias(batches)
    save_config(run_dir, config)  # on resume, records a raised epoch count
    return state.epoch, state.step, state.partial


def _drop_metrics_after(run_dir: Path, epoch: int) -> None:
    """Make metrics.jsonl agree with the checkpoint: drop lines past it, restore the committed epoch's line."""
    path = run_dir / METRICS
    rows = [r for r in read_jsonl(path) if r.get("epoch", 0) <= epoch]
    if epoch and not any(r.get("epoch") == epoch for r in rows):
        _, meta = read_safetensors(run_dir / STATE)
        row = json.loads(meta.get("progress", "{}")).get("row")
        if row:
            rows.append(row)
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in rows).encode())


def _new_run_dir(config: RunConfig) -> Path:
    name = Path(config.data.data).name or "data"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(name).stem if Path(name).suffix in (".npy", ".npz") else name)
    stem = f"{config.family}-{config.model.arch}-{name}"
    root, n = Path("runs"), 1
    while (root / f"{stem}-{n}").exists():
        n += 1
    return root / f"{stem}-{n}"


def _check_run_dir(run_dir: Path, force: bool) -> list[str]:
    """The run files already in ``run_dir`` (refused without ``force``); creates nothing."""
    if run_dir.exists() and not run_dir.is_dir():
        raise AekitError(f"--out {run_dir} exists and is not a folder")
    existing = [name for name in RUN_FILES if (run_dir / name).exists()]
    if existing and not force:
        raise AekitError(f"{run_dir} already holds a run: pass --resume to continue it or --force to replace it")
    return existing


def _claim_run_dir(run_dir: Path, existing: list[str]) -> None:
    """Create ``run_dir`` (if no lock made it already) and remove the files of the run it replaces (``--force``)."""
    make_folder(run_dir)
    for name in existing:
        (run_dir / name).unlink(missing_ok=True)


def _resume_config(run_dir: Path, family: Any, options: dict[str, Any]) -> RunConfig:
    """The run's saved config; options may repeat its values (rerunning the same command with
    --resume works) and may raise ``epochs``, but may not change anything else."""
    config = load_config(run_dir)
    if isinstance(family, RunConfig):
        raise AekitError("resume takes the run's saved config; pass only epochs")
    if family is not None and family != config.family:
        raise AekitError(f"{run_dir} holds {_a(config.family)} run, not {_a(family)} run")
    saved = {}
    for part in (config.model, config.objective, config.data, config.train):
        saved.update(dataclasses.asdict(part))
    changed = []
    for name, value in options.items():
        if value is None or name == "epochs":
            continue
        if name not in saved:
            raise AekitError(f"unknown option: {name}")
        if (tuple(value) if isinstance(value, list) else value) != saved[name]:
            changed.append(f"{name} (run: {saved[name]!r}, given: {value!r})")
    if changed:
        raise AekitError(f"cannot change {', '.join(changed)} when resuming; only --epochs")
    if options.get("epochs") is not None:
        config.train = dataclasses.replace(config.train, epochs=options["epochs"])
    done = epochs_done(run_dir)
    if done > config.train.epochs:
        raise AekitError(f"{run_dir} has already trained {done} epochs: --epochs {config.train.epochs} would undo them")
    return config


def _a(word: str) -> str:  # "a vae", "an ae": the article as the family's name is read out (its first letter)
    return f"{'an' if word[:1] in 'aeiouAEIOU' else 'a'} {word}"
