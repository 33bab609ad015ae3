"""Stopping and resuming: the training state a checkpoint holds, the mid-epoch replay, the stop signals.

A resumed run ends with exactly the weights of an uninterrupted one. That takes everything a step depends on:
the weights, the optimizer's state, the training generator (all shuffling and noise comes from it), the step
count (the learning-rate schedule) and, for a run stopped inside an epoch, the generator's state at the
epoch's start (to redraw the epoch's order) and the running loss sums. :class:`TrainState` holds them;
``state.safetensors`` stores them in one file, so one atomic rename commits a checkpoint.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import signal
import threading
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as st_save

from ..errors import AekitError
from ..files import atomic_write_bytes, read_safetensors
from ..run import STATE, check_stamp, load_checked, stamp


@dataclasses.dataclass
class TrainState:
    """Everything a step depends on, saved with every checkpoint.

    ``epoch`` counts completed epochs, ``step`` optimisation steps. ``partial`` describes a partly done epoch
    (after SIGINT/SIGTERM): ``{"batch": next batch, "sums": running loss sums, "epoch_rng": the generator's
    state at the epoch's start}``; empty otherwise.
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    epoch: int = 0
    step: int = 0
    partial: dict[str, Any] = dataclasses.field(default_factory=dict)
    ema: torch.nn.Module | None = None  # the weights' moving average (``--ema``), a copy of the model

    @property
    def kept(self) -> torch.nn.Module:
        """The model a checkpoint saves and each epoch evaluates: the moving average when there is one."""
        return self.model if self.ema is None else self.ema

    def start_ema(self) -> None:
        """The moving average, starting from the model's weights as they are now (after its initialisation)."""
        self.ema = copy.deepcopy(self.model).requires_grad_(False)

    @torch.no_grad()
    def update_ema(self, decay: float) -> None:
        """After a step: average <- d average + (1 - d) weights, d = min(decay, (1 + step) / (10 + step)) (the
        step counted before this update), so that the first steps do not keep the initial weights for long."""
        d = min(decay, (1 + self.step) / (10 + self.step))
        averaged, current = list(self.ema.parameters()), list(self.model.parameters())
        torch._foreach_lerp_(averaged, current, 1.0 - d)


def save_state(run_dir: Path, state: TrainState) -> None:
    """``state.safetensors``: weights, optimizer and RNG states, epoch, step and mid-epoch progress."""
    opt = state.optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {
        f"model.{k}": v.detach().cpu().contiguous() for k, v in state.model.state_dict().items()
    }
    if state.ema is not None:
        tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in state.ema.state_dict().items()})
    tensors["rng.generator"] = state.generator.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    for index, slots in opt["state"].items():
        for key, value in slots.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value).detach().cpu().clone().contiguous()
    progress = dict(state.partial)
    if "epoch_rng" in progress:
        tensors["rng.epoch_start"] = progress.pop("epoch_rng")
    meta = stamp(epoch=str(state.epoch), step=str(state.step), param_groups=json.dumps(opt["param_groups"]),
                 progress=json.dumps(progress))
    atomic_write_bytes(Path(run_dir) / STATE, st_save(tensors, metadata=meta))


def load_state(run_dir: Path, state: TrainState) -> dict[str, Any]:
    """Restore ``state`` (weights, optimizer, generators, epoch, step, partial) from ``state.safetensors``;
    returns the saved progress record (it holds the last epoch's metrics row)."""
    path = Path(run_dir) / STATE
    tensors, meta = read_safetensors(path)
    check_stamp(meta, path)
    try:
        epoch, step = int(meta["epoch"]), int(meta["step"])
        groups = json.loads(meta["param_groups"])
        progress = json.loads(meta.get("progress", "{}"))
    except (KeyError, ValueError) as err:
        raise AekitError(f"{path} has a damaged header ({err})") from None
    if not isinstance(groups, list) or not isinstance(progress, dict):
        raise AekitError(f"{path} has a damaged header")
    weights = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    load_checked(state.model, weights, path)
    averaged = {k[len("ema.") :]: v for k, v in tensors.items() if k.startswith("ema.")}
    if averaged:
        state.start_ema()
        load_checked(state.ema, averaged, path)
    slots: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        parts = name.split(".")
        if parts[0] == "optim" and len(parts) == 3 and parts[1].isdigit():
            slots.setdefault(int(parts[1]), {})[parts[2]] = value
    try:
        state.optimizer.load_state_dict({"state": slots, "param_groups": groups})
        state.generator.set_state(tensors["rng.generator"])
        torch.set_rng_state(tensors["rng.torch"])
    except (KeyError, ValueError, RuntimeError, TypeError) as err:
        raise AekitError(f"{path}: training state does not fit this model/optimizer: {err}") from None
    state.epoch, state.step, state.partial = epoch, step, {}
    if "batch" in progress:  # a mid-epoch checkpoint (SIGINT/SIGTERM)
        state.partial = {"batch": progress["batch"], "sums": progress["sums"], "epoch_rng": tensors["rng.epoch_start"]}
    return progress


def epochs_done(run_dir: Path) -> int:
    """The completed epochs recorded in a run folder's ``state.safetensors`` (0 without one)."""
    path = Path(run_dir) / STATE
    if not path.exists():
        return 0
    _, meta = read_safetensors(path)
    try:
        return int(meta.get("epoch", 0))
    except ValueError:
        raise AekitError(f"{path} has a damaged header") from None


def epoch_order(state: TrainState, n: int) -> tuple[torch.Tensor, torch.Tensor, int, list[float] | None]:
    """The epoch's shuffle: ``(generator state at the epoch's start, order of the n images, first batch,
    running sums or None)``. Inside a partly done epoch, the order is redrawn from the saved start state and
    the generator left where the checkpoint left it, so the rest of the epoch is the uninterrupted run's."""
    generator = state.generator
    if state.partial:
        resume_at = generator.get_state()
        generator.set_state(state.partial["epoch_rng"])
        epoch_rng = generator.get_state()
        order = torch.randperm(n, generator=generator)
        generator.set_state(resume_at)
        first, sums = state.partial["batch"], state.partial["sums"]
        state.partial = {}
        return epoch_rng, order, first, sums
    epoch_rng = generator.get_state()
    return epoch_rng, torch.randperm(n, generator=generator), 0, None


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
