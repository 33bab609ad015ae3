"""The training loop, in memory: :func:`fit` trains a model and returns its history; it writes no files.

Images stay uint8 (in memory, or on disk for a streamed set: :mod:`aekit.data.stream`); each step gathers a
batch by index and converts it to floats. All training randomness (shuffling, corruption, reparameterisation,
dynamic binarization) comes from one ``torch.Generator`` in the :class:`~aekit.training.resume.TrainState`,
so a run resumed from a saved state ends with exactly the weights of an uninterrupted one.

Under torchrun (:mod:`aekit.training.distributed`) every process runs this same loop: all draw the same
permutation and the same noise from their generators, which stay in step, and each trains on its shard of
every batch with the loss in DistributedDataParallel. ``batch_size`` is the global batch. Rank 0 alone
evaluates the test loss, prints and calls the callbacks' epoch and stop events; every rank calls ``on_batch``.

Writing checkpoints is a callback's job: :func:`aekit.api.train` passes one that keeps a run folder.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from tqdm import tqdm

from ..core.config import RunConfig
from ..core.model import Autoencoder, parameter_count
from ..core.objectives import TERMS, draw_noise, loss_with_noise
from ..data import ImageSet, to_unit
from ..data.machine import check_memory
from ..data.stream import chunks
from ..errors import Interrupted
from .augment import center_crop_set
from .distributed import World
from .resume import StopSignals, TrainState, epoch_order
from .steps import learning_rate_schedule, make_optimizer, make_step, on_device

EVAL_SEED = 1234  # fixed corruption/sampling noise for test losses, independent of training
CODE_FIT_MAX = 65_536  # training images (a seeded subsample beyond this) a deterministic AE's code Gaussian is fitted to

History = list[dict[str, Any]]


class Callback:
    """Hooks into :func:`fit`; override what you need.

    ``on_epoch_end`` and ``on_stop`` run on rank 0 only (the process that writes), ``on_batch`` on every rank.
    """

    def on_batch(self, epoch: int, index: torch.Tensor) -> None:
        """After each step: the epoch (from 1) and this process's positions in the training set."""

    def on_epoch_end(self, state: TrainState, row: dict[str, Any]) -> None:
        """After each epoch, with its metrics row (the model's code Gaussian is fitted, the test loss in)."""

    def on_stop(self, state: TrainState) -> None:
        """A stop was asked for inside an epoch: ``state.partial`` says where (see TrainState)."""


def new_state(config: RunConfig, device: torch.device | str = "cpu") -> TrainState:
    """A fresh model (seeded by ``config.train.seed``), its optimizer and the training generator; a model whose
    weights, gradients and Adam's two moments would not fit the memory budget is refused before allocation."""
    weights = parameter_count(config.model)
    check_memory(f"training a model of {weights:,} weights (with gradients and Adam's state)", 16 * weights)
    torch.manual_seed(config.train.seed)
    model = Autoencoder(config.model).to(device)
    return TrainState(model, make_optimizer(model, config), torch.Generator().manual_seed(config.train.seed))


def fit(
    state: TrainState,
    config: RunConfig,
    train: ImageSet,
    test: ImageSet | None = None,
    *,
    world: World | None = None,
    callbacks: Sequence[Callback] = (),
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    workers: int = 0,
) -> History:
    """Train ``state.model`` from ``state.epoch`` to ``config.train.epochs``; returns the rows of those epochs.

    Parameters
    ----------
    state : TrainState
        Model, optimizer, generator and position (:func:`new_state`, or one restored from a checkpoint).
    config : RunConfig
        What to optimise and how.
    train, test : ImageSet
        uint8 training images, and optional test images whose loss terms (fixed-seed noise) each row records.
    world : World, optional
        This process's place under torchrun (default: one process).
    callbacks : sequence of Callback
        Epoch, batch and stop events (see :class:`Callback`).
    progress : bool
        A progress bar per epoch on a terminal (rank 0).
    log : callable, optional
        Where a line per epoch goes (rank 0).
    workers : int
        Processes decoding a streamed image folder ahead of training.

    Raises
    ------
    Interrupted
        SIGINT or SIGTERM asked for a stop; the callbacks' ``on_stop`` (inside an epoch) or ``on_epoch_end``
        (at its end) have seen the state to save.
    """
    world = world or World()
    main = world.is_main
    log = (log if main else None) or (lambda message: None)
    model, generator = state.model, state.generator
    n_train = len(train)
    dynamic = config.data.binarize == "dynamic"
    augment = bool(config.data.crop or config.data.flip)
    step_fn = make_step(model, state.optimizer, config, n_train, world=world, log=log)
    if config.train.ema and state.ema is None:  # a new run (a resumed one has its average from the checkpoint)
        state.start_ema()
    history: History = []
    with StopSignals(escalate=world.size == 1) as stop:
        vote = world.stop_vote() if world.size > 1 else None  # the processes agree on the step at which to stop
        for epoch in range(state.epoch, config.train.epochs):
            t0 = time.perf_counter()
            model.train()
            epoch_rng, order, first, saved_sums = epoch_order(state, n_train)
            sums = torch.zeros(len(TERMS), dtype=torch.float64)
            if saved_sums is not None and main:  # the saved sums are all processes' together: counted once
                sums = torch.tensor(saved_sums, dtype=torch.float64)
            shard = world.shard(order)  # this process's images of the epoch, in order
            n_seen = len(shard) * world.size
            batches = shard.split(config.train.batch_size // world.size)
            schedule = learning_rate_schedule(config.train, len(batches))
            bar = tqdm(total=len(batches), initial=first, desc=f"epoch {epoch + 1}/{config.train.epochs}",
                       unit="batch", disable=None if progress and main else True,  # None: only on a terminal
                       leave=False, file=sys.stderr, dynamic_ncols=True)
            for i, images in enumerate(train.batches(batches[first:], workers), start=first):
                if augment:
                    images = step_fn.augment(images, generator)  # crops and flips of the uint8 images
                x = to_unit(images)  # uint8 (B, C, H, W) -> [0, 1]
                if dynamic:  # a fresh binarization of each image each time it is seen
                    x = step_fn.binarize(x, generator)
                if schedule is not None:
                    for group in state.optimizer.param_groups:
                        group["lr"] = schedule(state.step)
                terms = step_fn(x, generator, state.step)  # (4,) detached: loss, recon, kl, sparsity
                if state.ema is not None:
                    state.update_ema(config.train.ema)
                sums += terms * len(batches[i])
                state.step += 1
                bar.update()
                for callback in callbacks:
                    callback.on_batch(epoch + 1, batches[i])
                if i % 20 == 0:
                    bar.set_postfix(loss=f"{terms[0].item():.2f}")
                stopping = stop.requested if vote is None else vote(stop.requested is not None)
                if stopping and i + 1 < len(batches):
                    bar.close()
                    if vote is not None:
                        vote.settle()
                    world.sum(sums)
                    state.epoch, state.partial = epoch, {"batch": i + 1, "sums": sums.tolist(), "epoch_rng": epoch_rng}
                    world.on_main(lambda: [c.on_stop(state) for c in callbacks])
                    raise Interrupted(f"stopped by {stop.requested or 'a signal to another process'} at epoch "
                                      f"{epoch + 1}, batch {i + 1} of {len(batches)}")
            bar.close()
            stopping = stop.requested if vote is None else vote.settle()
            train_seconds = time.perf_counter() - t0
            world.sum(sums)
            state.epoch = epoch + 1
            row = {"epoch": epoch + 1, "step": state.step,
                   **{f"train_{k}": v / n_seen for k, v in zip(TERMS, sums.tolist())}}
            speed = {"train_images_per_second": round(n_seen / train_seconds, 1), "compiled": step_fn.compiled,
                     "fast_step": step_fn.fast is not None, "processes": world.size}
            row = world.on_main(functools.partial(_end_epoch, state, config, train, test, row=row, speed=speed,
                                                  t0=t0, workers=workers, callbacks=callbacks, log=log))
            history.append(row)
            if stopping and epoch + 1 < config.train.epochs:
                raise Interrupted(f"stopped by {stop.requested or 'a signal to another process'} after epoch {epoch + 1}")
    world.sync(state.kept)  # rank 0's code Gaussian, fitted at the end of each epoch, for every rank
    return history


def _end_epoch(state: TrainState, config: RunConfig, train: ImageSet, test: ImageSet | None, *, row: dict,
               speed: dict, t0: float, workers: int, callbacks: Sequence[Callback], log) -> dict:
    """Rank 0, after each epoch: the test loss, the code Gaussian, the row, the callbacks (of the moving average
    of the weights with ``--ema``: the model that is saved)."""
    model = state.kept
    if test is not None:
        row.update({f"test_{k}": v for k, v in evaluate_losses(model, test, config, workers=workers).items()})
    if not model.is_variational and model.can_sample:  # fitted to the codes of whole images (centres with --crop)
        codes_of = center_crop_set(train, config.data.crop) if config.data.crop else train
        fit_code_distribution(model, codes_of, seed=config.train.seed, workers=workers)
    row = {**row, "epoch_seconds": round(time.perf_counter() - t0, 4), **speed}
    for callback in callbacks:
        callback.on_epoch_end(state, row)
    log(summary(row, config.train.epochs))
    return row


def summary(row: dict, epochs: int) -> str:
    """The one line a training prints per epoch."""
    parts = [f"epoch {row['epoch']}/{epochs}", f"train loss {row['train_loss']:.3f}"]
    if "test_loss" in row:
        parts.append(f"test loss {row['test_loss']:.3f}")
    for term in ("recon", "kl", "sparsity"):
        if row[f"train_{term}"]:
            parts.append(f"{term} {row.get(f'test_{term}', row[f'train_{term}']):.3f}")
    parts.append(f"{row['epoch_seconds']:.1f}s")
    return "  ".join(parts)


def fit_code_distribution(model: Autoencoder, images: ImageSet, *, seed: int, workers: int = 0) -> None:
    """Fit a deterministic AE's sampling Gaussian to the codes of the training images (see :func:`training_codes`)."""
    model.set_code_distribution(training_codes(model, images, seed=seed, workers=workers))


@torch.inference_mode()
def training_codes(model: Autoencoder, images: ImageSet, *, seed: int, workers: int = 0) -> torch.Tensor:
    """The codes (a VAE's posterior means) of the training images, or of a seeded subsample of ``CODE_FIT_MAX`` of
    them beyond that, in batches: memory and time stay bounded however many there are. (N, D) or (N, C, h, w)."""
    n = len(images)
    if n <= CODE_FIT_MAX:
        index = torch.arange(n)
    else:
        index = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:CODE_FIT_MAX].sort().values
    model.eval()
    device = next(model.parameters()).device
    codes = [model.encode(to_unit(x.to(device))).mode().float().cpu()  # uint8 (B, C, H, W) -> (B, D)
             for x in images.batches(index.split(1024), workers)]
    return torch.cat(codes)


@torch.inference_mode()
def evaluate_losses(model: Autoencoder, images: ImageSet, config: RunConfig, batch_size: int = 1000, *,
                    workers: int = 0) -> dict[str, float]:
    """Mean loss terms over uint8 ``images`` with fixed-seed noise, so the numbers are comparable across epochs."""
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(EVAL_SEED)
    sums = dict.fromkeys(TERMS, 0.0)
    for batch in images.batches(chunks(len(images), batch_size), workers):
        x = to_unit(batch)
        noise = draw_noise(x, config.objective, model.latent_shape(x), model.config.latent, generator)
        for name in ("uniform", "side_uniform"):  # a quantized code's test loss is its real one: rounded, not noisy
            noise.pop(name, None)
        terms = loss_with_noise(model, *on_device(device, x, noise), config.objective)
        for name in TERMS:
            sums[name] += terms[name].item() * len(x)
    return {k: v / max(len(images), 1) for k, v in sums.items()}
