"""The training loop: one path, seeded, resumable, checkpointing every epoch -- for one process or many.

Images stay uint8 in memory (or on disk, streamed: :mod:`aekit.data.stream`); each step gathers a batch
by index and converts it to floats. All training randomness (shuffling, corruption, reparameterisation)
comes from one ``torch.Generator`` whose state is saved with every checkpoint, so a resumed run ends
with exactly the weights of an uninterrupted one.

Under torchrun (:mod:`aekit.distributed`) every process runs this same loop: all draw the same
permutation and the same noise from their generators, which stay in step, and each trains on its
shard of every batch with the loss in DistributedDataParallel. ``--batch-size`` is the global batch.
Rank 0 alone prints, evaluates the test loss and writes the run folder.

Test hook: with ``$AEKIT_TRACE_INDICES`` set to a folder, each process appends to
``rank<R>.jsonl`` there one line per epoch with the training-set positions it trained on.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from .. import run as ckpt
from ..core.config import RunConfig, TrainConfig, preset
from ..cpu import tune_cpu
from ..data import Splits, load_dataset
from ..data.imageset import binarize_splits
from ..data.stream import chunks, default_workers, iter_batches
from .distributed import World, process_group
from ..errors import AekitError, Interrupted
from .fastmlp import MLPStep
from .fastmlp import unsupported as fastmlp_unsupported
from ..core.model import Autoencoder
from ..core.objectives import draw_noise, loss_with_noise

TERMS = ("loss", "recon", "kl", "sparsity")
RUN_FILES = (ckpt.CONFIG, ckpt.MODEL, ckpt.STATE, ckpt.METRICS)
EVAL_SEED = 1234  # fixed corruption/sampling noise for test losses, independent of training
CODE_FIT_MAX = 65_536  # training images (a seeded subsample beyond this) a deterministic AE's code Gaussian is fitted to
TRACE_ENV = "AEKIT_TRACE_INDICES"  # test hook, see the module docstring


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
    **options: Any,
) -> Autoencoder:
    """Train an autoencoder and save it to a run folder.

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
    **options
        Any field of ModelConfig, ObjectiveConfig, DataConfig or TrainConfig,
        e.g. ``arch="conv", latent_dim=16, noise_std=0.3, epochs=5``.

    Returns
    -------
    Autoencoder
        The trained model; ``model.run_dir`` is its folder. Under torchrun every process returns it.

    Examples
    --------
    >>> model = aekit.train("vae", data="mnist-5k", epochs=1)   # doctest: +SKIP
    >>> model.run_dir                                              # doctest: +SKIP
    PosixPath('runs/vae-mlp-mnist-5k-1')
    """
    tune_cpu()
    if log == "auto":
        log = _stderr if progress else None
    with process_group(device) as world:
        if not world.is_main:  # rank 0 alone prints, draws progress bars and writes the run folder
            progress, log = False, None
        log = log or (lambda message: None)
        config, run_dir, existing, done = world.on_main(
            lambda: _plan(family, out, resume=resume, force=force, options=options, processes=world.size,
                          workers=workers, log=log)
        )
        if done:  # --resume on a finished run: nothing to do
            return world.on_main(lambda: ckpt.load(run_dir))
        splits = world.main_first(lambda: _load_splits(config, splits, stream=stream, progress=progress))
        config = world.on_main(lambda: _conform_to_data(config, splits, run_dir, resume=resume, existing=existing))

        torch.manual_seed(config.train.seed)
        model = Autoencoder(config.model).to(world.device)
        optimizer = make_optimizer(model, config)
        generator = torch.Generator().manual_seed(config.train.seed)
        workers = default_workers() if workers is None else workers
        start_epoch, step, partial = world.on_main(
            lambda: _start(model, optimizer, generator, config, splits, run_dir, resume=resume, workers=workers, log=log)
        )
        world.sync(model, optimizer, generator)  # every rank starts from rank 0's state

        with StopSignals(escalate=world.size == 1) as stop:
            _fit(model, optimizer, generator, config, splits, run_dir, world, start_epoch=start_epoch, step=step,
                 partial=partial, progress=progress, log=log, stop=stop, workers=workers)
        world.sync(model)  # rank 0's code Gaussian, fitted at the end of each epoch, for every rank

    model.cpu().eval()
    model.run_dir = run_dir
    model.run_config = config
    model.epoch = config.train.epochs
    return model


def _plan(family, out, *, resume: bool, force: bool, options: dict[str, Any], processes: int,
          workers: int | None = None, log) -> tuple:
    """``(config, run_dir, existing run files, done)``, checked before any data loads; creates nothing."""
    if workers is not None and workers < 0:
        raise AekitError(f"--workers must be >= 0 (got {workers})")
    existing: list[str] = []
    if resume:
        if out is None:
            raise AekitError("--resume needs the run folder (--out RUN_DIR)")
        run_dir = Path(out)
        config = _resume_config(run_dir, family, options)
        if _epochs_done(run_dir) == config.train.epochs:  # nothing to do: rerunning --resume is harmless
            log(f"{run_dir} has already trained all {config.train.epochs} epochs (pass a larger --epochs to continue)")
            return config, run_dir, existing, True
    else:
        config = family if isinstance(family, RunConfig) else preset(family or "vae", **options)
        if isinstance(family, RunConfig) and options:
            raise AekitError("pass either a RunConfig or keyword options, not both")
        run_dir = Path(out) if out is not None else _new_run_dir(config)
        existing = _check_run_dir(run_dir, force)  # nothing is created or deleted before the data loads
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
    return binarize_splits(splits, config.data.binarize)  # idempotent: binary images stay as they are


def _conform_to_data(config: RunConfig, splits: Splits, run_dir: Path, *, resume: bool, existing: list[str]) -> RunConfig:
    """The config with the data's image shape; claims the run folder of a new run (the data has loaded)."""
    c, h, w = splits.train.shape
    if resume and (c, h, w) != config.model.image_shape:
        raise AekitError(f"the data now has images of {c}x{h}x{w}; the run was trained on {config.model.image_shape}")
    config.model = dataclasses.replace(config.model, channels=c, height=h, width=w)
    if not resume:
        _check_init_from(config, run_dir)
        _claim_run_dir(run_dir, existing)
    return config


def _check_init_from(config: RunConfig, run_dir: Path) -> None:
    """``--init-from``: a run folder (not the one being written) whose model is this run's model."""
    source = config.train.init_from
    if source is None:
        return
    if not Path(source).is_dir():
        raise AekitError(f"--init-from {source} is not a folder: pass a run folder written by 'aekit train'")
    if Path(source).resolve() == run_dir.resolve():
        raise AekitError(f"--init-from {source} is the run folder being written: pass another --out")
    if not (Path(source) / ckpt.MODEL).is_file():
        raise AekitError(f"--init-from {source} has no {ckpt.MODEL}: it has not finished an epoch")
    theirs = ckpt.load_config(Path(source)).model
    if theirs != config.model:
        mine, other = dataclasses.asdict(config.model), dataclasses.asdict(theirs)
        differ = ", ".join(f"{k} (this run: {mine[k]!r}, {source}: {other[k]!r})" for k in mine if mine[k] != other[k])
        raise AekitError(f"--init-from needs the same model settings: {differ}")


def _start(model, optimizer, generator, config: RunConfig, splits: Splits, run_dir: Path, *, resume: bool,
           workers: int, log) -> tuple[int, int, dict]:
    """The starting state (rank 0): a fresh model, or the run's checkpoint; ``(epoch, step, mid-epoch progress)``."""
    start_epoch, step, partial = 0, 0, {}
    if resume and (run_dir / ckpt.STATE).exists():
        start_epoch, step, saved = ckpt.load_state(run_dir, model, optimizer, generator)
        partial = saved if "batch" in saved else {}  # a mid-epoch checkpoint (SIGINT/SIGTERM)
        where = f"epoch {start_epoch + 1}" + (f", batch {partial['batch'] + 1}" if partial else "")
        log(f"resuming {run_dir} at {where} of {config.train.epochs}")
        _drop_metrics_after(run_dir, start_epoch)
    else:
        if resume:  # killed before the first checkpoint: the seed fully determines the start
            log(f"{run_dir} has no checkpoint yet: starting it from the beginning")
        if config.train.init_from is not None:
            ckpt.load_weights(model, Path(config.train.init_from) / ckpt.MODEL)
            log(f"starting from the weights of {config.train.init_from}")
        else:
            model.init_output_bias(_all_batches(splits.train.images, workers))
    ckpt.save_config(run_dir, config)  # on resume, records a raised epoch count
    return start_epoch, step, partial


def _all_batches(images, workers: int):
    """``images`` whole when in memory, else an iterator of uint8 batches of them (a streamed set)."""
    if isinstance(images, torch.Tensor):
        return images
    return iter_batches(images, chunks(len(images), 1024), workers)


def _fit(model, optimizer, generator, config: RunConfig, splits: Splits, run_dir: Path, world: World, *,
         start_epoch: int, step: int, partial: dict, progress: bool, log, stop: StopSignals, workers: int) -> None:
    """The epoch loop. A checkpoint after every epoch; on SIGINT/SIGTERM one mid-epoch checkpoint, then stop."""
    n_train = len(splits.train)
    dynamic = config.data.binarize == "dynamic"
    step_fn = TrainStep(model, optimizer, config, use_compile=_should_compile(config, n_train), log=log, world=world)
    vote = world.stop_vote() if world.size > 1 else None  # the processes agree on the step at which to stop
    trace = os.environ.get(TRACE_ENV)
    for epoch in range(start_epoch, config.train.epochs):
        t0 = time.perf_counter()
        model.train()
        if partial:  # resume inside this epoch: redraw its shuffle from the epoch's starting RNG state
            resume_state = generator.get_state()
            generator.set_state(partial["epoch_rng"])
            epoch_rng = generator.get_state()
            order = torch.randperm(n_train, generator=generator)
            generator.set_state(resume_state)
            first, sums = partial["batch"], torch.tensor(partial["sums"], dtype=torch.float64)
            if not world.is_main:  # the saved sums are all processes' together: counted once
                sums.zero_()
            partial = {}
        else:
            epoch_rng = generator.get_state()
            order = torch.randperm(n_train, generator=generator)
            first, sums = 0, torch.zeros(len(TERMS), dtype=torch.float64)
        shard = world.shard(order)  # this process's images of the epoch, in order
        n_seen = len(shard) * world.size
        batches = shard.split(config.train.batch_size // world.size)
        schedule = learning_rate_schedule(config.train, len(batches))
        seen = []
        bar = tqdm(total=len(batches), initial=first, desc=f"epoch {epoch + 1}/{config.train.epochs}", unit="batch",
                   disable=None if progress else True,  # None: shown only on a terminal
                   leave=False, file=sys.stderr, dynamic_ncols=True)
        for i, images in enumerate(iter_batches(splits.train.images, batches[first:], workers), start=first):
            index = batches[i]
            x = images.float().div_(255)  # uint8 (B, C, H, W) -> [0, 1]
            if dynamic:  # a fresh binarization of each image each time it is seen
                x = step_fn.binarize(x, generator)
            if schedule is not None:
                for group in optimizer.param_groups:
                    group["lr"] = schedule(step)
            terms = step_fn(x, generator, step)  # (4,) detached: loss, recon, kl, sparsity
            sums += terms * len(index)
            step += 1
            bar.update()
            if trace:
                seen.append(index)
            if i % 20 == 0:
                bar.set_postfix(loss=f"{terms[0].item():.2f}")
            stopping = stop.requested if vote is None else vote(stop.requested is not None)
            if stopping and i + 1 < len(batches):
                bar.close()
                if vote is not None:
                    vote.settle()
                world.sum(sums)
                progress_state = {"batch": i + 1, "sums": sums.tolist(), "epoch_rng": epoch_rng}
                world.on_main(functools.partial(ckpt.save_state, run_dir, model=model, optimizer=optimizer,
                                                generator=generator, epoch=epoch, step=step, progress=progress_state))
                raise Interrupted(
                    f"stopped by {stop.requested or 'a signal to another process'} at epoch {epoch + 1}, "
                    f"batch {i + 1}/{len(batches)}; saved: continue with --resume --out {run_dir}"
                )
        bar.close()
        stopping = stop.requested if vote is None else vote.settle()
        train_seconds = time.perf_counter() - t0
        world.sum(sums)
        if trace:
            _trace(Path(trace), world.rank, epoch + 1, seen)

        trained = {"epoch": epoch + 1, "step": step, **{f"train_{k}": v / n_seen for k, v in zip(TERMS, sums.tolist())}}
        speed = {"train_images_per_second": round(n_seen / train_seconds, 1), "compiled": step_fn.compiled,
                 "fast_step": step_fn.fast is not None,
                 "processes": world.size}
        world.on_main(functools.partial(_end_epoch, model, optimizer, generator, config, splits, run_dir,
                                        trained=trained, speed=speed, t0=t0, workers=workers, log=log))
        if stopping and epoch + 1 < config.train.epochs:
            raise Interrupted(f"stopped by {stop.requested or 'a signal to another process'} after epoch "
                              f"{epoch + 1}; saved: continue with --resume --out {run_dir}")


def _end_epoch(model, optimizer, generator, config: RunConfig, splits: Splits, run_dir: Path, *, trained: dict,
               speed: dict, t0: float, workers: int, log) -> None:
    """Rank 0, after each epoch: the test loss, the code Gaussian, the checkpoint, the metrics line."""
    test = evaluate_losses(model, splits.test.images, config, workers=workers)
    if not model.is_variational:
        _fit_code_distribution(model, splits.train.images, seed=config.train.seed, workers=workers)
    row = {**trained, **{f"test_{k}": v for k, v in test.items()},
           "epoch_seconds": round(time.perf_counter() - t0, 4), **speed}
    # Order matters for crash safety: the user-facing weights, then the resume state (one atomic
    # rename commits the epoch), then the metrics line (re-derived on resume if a crash lost it).
    ckpt.save_model(run_dir, model, row["epoch"])
    ckpt.save_state(run_dir, model=model, optimizer=optimizer, generator=generator,
                    epoch=row["epoch"], step=row["step"], progress={"row": row})
    ckpt.append_jsonl(run_dir / ckpt.METRICS, row)
    log(_summary(row, config.train.epochs))


def _trace(folder: Path, rank: int, epoch: int, seen: list[torch.Tensor]) -> None:
    indices = torch.cat(seen).tolist() if seen else []
    with open(folder / f"rank{rank}.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"epoch": epoch, "indices": indices}) + "\n")


@torch.inference_mode()
def _fit_code_distribution(model: Autoencoder, images, *, seed: int, workers: int = 0) -> None:
    """Fit a deterministic AE's sampling Gaussian to the codes of the training images (of a seeded subsample
    of ``CODE_FIT_MAX`` of them beyond that), in batches: memory and time stay bounded however many there are."""
    n = len(images)
    if n <= CODE_FIT_MAX:
        index = torch.arange(n)
    else:
        index = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:CODE_FIT_MAX].sort().values
    model.eval()
    device = next(model.parameters()).device
    codes = [model.encode(x.to(device).float().div_(255)).mode().float().cpu()  # uint8 (B, C, H, W) -> (B, D)
             for x in iter_batches(images, index.split(1024), workers)]
    model.set_code_distribution(torch.cat(codes))


class StopSignals:
    """While training, SIGINT and SIGTERM ask for a clean stop (checkpoint, then exit); a second SIGINT
    interrupts at once. Only in the main thread; elsewhere this does nothing."""

    def __init__(self, escalate: bool = True) -> None:
        self.requested: str | None = None
        self.escalate = escalate  # False under torchrun, which passes a Ctrl-C on to its processes a second time
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT and self.escalate:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _drop_metrics_after(run_dir: Path, epoch: int) -> None:
    """Make metrics.jsonl agree with the checkpoint: drop lines past it, restore the committed epoch's line."""
    path = run_dir / ckpt.METRICS
    rows = [r for r in ckpt.read_jsonl(path) if isinstance(r, dict) and r.get("epoch", 0) <= epoch]
    if epoch and not any(r.get("epoch") == epoch for r in rows):
        _, meta = ckpt.read_safetensors(run_dir / ckpt.STATE)
        row = json.loads(meta.get("progress", "{}")).get("row")
        if row:
            rows.append(row)
    ckpt.atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in rows).encode())


@torch.inference_mode()
def evaluate_losses(model: Autoencoder, images: torch.Tensor, config: RunConfig, batch_size: int = 1000, *,
                    workers: int = 0) -> dict[str, float]:
    """Mean loss terms over uint8 ``images`` with fixed-seed noise, so the numbers are comparable across epochs."""
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(EVAL_SEED)
    sums = dict.fromkeys(TERMS, 0.0)
    for batch in iter_batches(images, chunks(len(images), batch_size), workers):
        x = batch.float().div_(255)
        noise = draw_noise(x, config.objective, model.config.latent_dim, model.is_variational, generator)
        terms = loss_with_noise(model, *_on(device, x, noise), config.objective)
        for name in TERMS:
            sums[name] += terms[name].item() * len(x)
    return {k: v / max(len(images), 1) for k, v in sums.items()}


AUTO_COMPILE_IMAGES = 3_000_000  # images per run above which compiling pays back its one-off cost here


def _should_compile(config: RunConfig, n_train: int) -> bool:
    """Decided from the configured workload alone (never from timings), so a resumed run compiles iff
    the uninterrupted one did and both take the same numerical path."""
    if config.train.compile != "auto":
        return config.train.compile == "on"
    return config.train.epochs * n_train >= AUTO_COMPILE_IMAGES


class TrainStep:
    """One optimisation step: draw the step's noise, loss, backward, (fused) Adam update.

    An MLP on one CPU process takes the hand-written step of :mod:`aekit.fastmlp` (same gradients,
    no autograd; ``--fast-step off`` turns it off). Otherwise, with ``use_compile`` the loss is
    ``torch.compile``-d for full batches (the last, smaller batch of an epoch runs eagerly, so it never
    triggers a recompile). If compilation fails (no C++ compiler, unsupported platform) training goes on
    eagerly with a warning. ``--compile on`` asks for compilation, so it also means autograd.

    With several processes (``world``) the loss runs in DistributedDataParallel, which averages the
    gradients over the processes, and every process draws the noise of the whole global batch (keeping
    its generator in step with the others) and keeps its own rows: the noise of a one-process run.
    """

    def __init__(self, model: Autoencoder, optimizer: torch.optim.Optimizer, config: RunConfig,
                 *, use_compile: bool, log: Callable[[str], None], world: World | None = None) -> None:
        self.model, self.optimizer, self.config, self.log = model, optimizer, config, log
        self.world = world or World()
        self.fast = None
        if fast_step_applies(model, optimizer, config, self.world):
            self.fast = MLPStep(model, optimizer, config.objective, grad_clip=config.train.grad_clip)
            use_compile = False
        if self.world.size > 1:
            self.eager = self.world.wrap(_Loss(model, config.objective, batch_mean=self.world.mean_over_ranks))
        else:
            self.eager = functools.partial(loss_with_noise, model, config=config.objective)
        self.full_batch = config.train.batch_size // self.world.size
        self.compiled_fn = torch.compile(self.eager) if use_compile else None
        self.compiled = use_compile

    def draw_noise(self, x: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        objective, latent_dim, variational = self.config.objective, self.config.model.latent_dim, self.model.is_variational
        if self.world.size == 1:
            return draw_noise(x, objective, latent_dim, variational, generator)
        whole = draw_noise(torch.empty(self.world.global_shape(x)), objective, latent_dim, variational, generator)
        return {name: self.world.rows(value) for name, value in whole.items()}

    def binarize(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A Bernoulli sample of ``x`` (dynamic binarization), drawn like the noise."""
        if self.world.size == 1:
            return torch.bernoulli(x, generator=generator)
        u = torch.rand(self.world.global_shape(x), generator=generator)  # bernoulli(p) is rand() < p, draw for draw
        return (self.world.rows(u) < x).to(x.dtype)

    def __call__(self, x: torch.Tensor, generator: torch.Generator, step: int) -> torch.Tensor:
        noise = self.draw_noise(x, generator)
        if self.fast is not None:  # the loss and its gradients in one pass; the weights untouched yet
            values = self.fast.gradients(x, noise)
            self._check_finite([values[name] for name in TERMS], step)
            self.fast.update()
            return torch.tensor([values[name] for name in TERMS], dtype=torch.float64)
        if self.world.device.type != "cpu":
            x, noise = _on(self.world.device, x, noise)
        fn = self.eager
        if self.compiled_fn is not None and len(x) == self.full_batch:
            fn = self.compiled_fn
        try:
            terms = fn(x, noise)
        except Exception as err:  # noqa: BLE001 - inductor raises many types when it cannot build
            if fn is self.eager:
                raise
            self.log(f"warning: torch.compile failed ({type(err).__name__}); training without it")
            self.compiled_fn, self.compiled = None, False
            terms = self.eager(x, noise)
        stacked = torch.stack([terms[name].detach() for name in TERMS])
        self._check_finite(stacked.tolist(), step)
        self.optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        if self.config.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.train.grad_clip)
        self.optimizer.step()
        return stacked.cpu()  # a no-op on the CPU

    @staticmethod
    def _check_finite(values: list[float], step: int) -> None:
        """An error, before any update, if a term of the loss is not finite."""
        for name, value in zip(TERMS, values):
            if not math.isfinite(value):
                raise AekitError(f"training diverged at step {step + 1}: the {name} term is {value} "
                                 "(try a lower --lr or --grad-clip); the last checkpoint is kept")


def fast_step_applies(model: Autoencoder, optimizer: torch.optim.Optimizer, config: RunConfig, world: World) -> bool:
    """Whether a run trains by :class:`aekit.fastmlp.MLPStep`: decided from the configuration alone, so a
    resumed run takes the numerical path the uninterrupted one took."""
    return (config.train.fast_step == "auto" and config.train.compile != "on" and world.size == 1
            and world.device.type == "cpu" and config.objective.importance_samples == 1  # the step knows the ELBO
            and fastmlp_unsupported(model, optimizer) is None)


class _Loss(torch.nn.Module):
    """The loss as a module: DistributedDataParallel averages the gradients of what a module's forward computed."""

    def __init__(self, model: Autoencoder, objective, *, batch_mean: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.model, self.objective, self.batch_mean = model, objective, batch_mean

    def forward(self, x: torch.Tensor, noise: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return loss_with_noise(self.model, x, noise, self.objective, batch_mean=self.batch_mean)


def _on(device: torch.device, x: torch.Tensor, noise: dict[str, torch.Tensor]):
    """A batch and its noise (drawn on the CPU, from the CPU generator) on the training device."""
    if device.type == "cpu":
        return x, noise
    return x.to(device, non_blocking=True), {k: v.to(device, non_blocking=True) for k, v in noise.items()}


def learning_rate_schedule(train: TrainConfig, steps_per_epoch: int) -> Callable[[int], float] | None:
    """The learning rate of each step (None: constant ``train.lr``). Cosine: from ``lr`` down to 0 at the
    run's last step (Loshchilov & Hutter 2017, without restarts); a function of the step alone, so a resumed
    run follows the same curve (raising ``epochs`` on resume stretches what is left of it)."""
    if train.lr_schedule == "constant":
        return None
    steps = max(train.epochs * steps_per_epoch, 1)
    return lambda step: train.lr * 0.5 * (1.0 + math.cos(math.pi * min(step, steps) / steps))


def make_optimizer(model: Autoencoder, config: RunConfig) -> torch.optim.Optimizer:
    """Adam; the fused kernel (one pass over all parameters) where this PyTorch has it."""
    kwargs = {"lr": config.train.lr, "weight_decay": config.train.weight_decay}
    try:
        return torch.optim.Adam(model.parameters(), fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(model.parameters(), **kwargs)


def _summary(row: dict, epochs: int) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}", f"train loss {row['train_loss']:.3f}", f"test loss {row['test_loss']:.3f}"]
    for term in ("recon", "kl", "sparsity"):
        if row[f"train_{term}"]:
            parts.append(f"{term} {row[f'test_{term}']:.3f}")
    parts.append(f"{row['epoch_seconds']:.1f}s")
    return "  ".join(parts)


def _new_run_dir(config: RunConfig) -> Path:
    name = Path(config.data.data).name or "data"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(name).stem if Path(name).suffix in (".npy", ".npz") else name)
    stem = f"{config.family}-{config.model.arch}-{name}"
    root = Path("runs")
    n = 1
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
    """Create ``run_dir`` and remove the files of the run it replaces (``--force``)."""
    ckpt.make_folder(run_dir)
    if not os.access(run_dir, os.W_OK):
        raise AekitError(f"cannot write in {run_dir}: permission denied")
    for name in existing:
        (run_dir / name).unlink(missing_ok=True)


def _resume_config(run_dir: Path, family: Any, options: dict[str, Any]) -> RunConfig:
    """The run's saved config; options may repeat its values (rerunning the same command with
    --resume works) and may raise ``epochs``, but may not change anything else."""
    config = ckpt.load_config(run_dir)
    if isinstance(family, RunConfig):
        raise AekitError("resume takes the run's saved config; pass only epochs")
    if family is not None and family != config.family:
        raise AekitError(f"{run_dir} holds a {config.family} run, not {family}")
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
    done = _epochs_done(run_dir)
    if done > config.train.epochs:
        raise AekitError(f"{run_dir} has already trained {done} epochs: --epochs {config.train.epochs} would undo them")
    return config


def _epochs_done(run_dir: Path) -> int:
    if not (run_dir / ckpt.STATE).exists():
        return 0
    _, meta = ckpt.read_safetensors(run_dir / ckpt.STATE)
    try:
        return int(meta.get("epoch", 0))
    except ValueError:
        raise AekitError(f"{run_dir / ckpt.STATE} has a damaged header") from None
