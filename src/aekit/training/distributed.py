"""Several processes, one run: torchrun's environment, the process group, sharding, rank 0's decisions.

Started by ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address), aekit joins
a process group -- ``nccl`` when it trains on GPUs, ``gloo`` on CPUs -- and training wraps its loss in
``DistributedDataParallel``. Without those variables, or with ``WORLD_SIZE=1``, :func:`process_group` gives the
one-process :class:`World`, whose methods do nothing but call through: the one-process run takes the same path.

Sharding follows ``torch.utils.data.DistributedSampler`` with ``set_epoch``: every rank draws the same epoch
permutation from the shared seeded generator, pads it by wrapping around to a multiple of the number of processes
(as ``DistributedSampler(drop_last=False)`` does) and takes every ``size``-th index from its rank on. So each rank's
``k``-th batch of ``B / size`` images and the other ranks' ``k``-th batches together are exactly the one-process
run's ``k``-th batch of ``B``.

Only rank 0 reads and writes run folders: :meth:`World.on_main` runs a function there and hands its result, or its
error, to every rank, so a failure on rank 0 ends every rank with the same message instead of a hang.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from ..errors import AekitError, ReportedElsewhere

T = TypeVar("T")
DEVICES = ("auto", "cpu", "cuda")


def env_world() -> tuple[int, int, int]:
    """``(rank, world size, local rank)`` from torchrun's variables; ``(0, 1, 0)`` without them."""
    try:
        return (int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
                int(os.environ.get("LOCAL_RANK", "0")))
    except ValueError:
        raise AekitError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (they are set by torchrun)") from None


def pick_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: this process's GPU (``cuda:LOCAL_RANK``) when PyTorch sees one, else the CPU."""
    if device not in DEVICES:
        raise AekitError(f"device must be one of {', '.join(DEVICES)} (got {device!r})")
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise AekitError("--device cuda: this PyTorch sees no GPU (a CPU build, or no driver)")
    if local_rank >= torch.cuda.device_count():
        raise AekitError(f"local rank {local_rank} has no GPU: this machine has {torch.cuda.device_count()}; "
                         "start at most that many processes per node")
    return torch.device("cuda", local_rank)


@dataclasses.dataclass(frozen=True)
class World:
    """This process's place among the processes of a run; ``World()`` is the single process."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    control: Any = None  # a gloo group for CPU-side messages (objects, votes, sums), whatever the device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ----- sharding -----

    def shard(self, order: torch.Tensor) -> torch.Tensor:
        """This rank's part of an epoch's permutation: padded by wrapping to a multiple of ``size``, every
        ``size``-th index from ``rank`` on (``DistributedSampler`` semantics). One process: ``order`` itself."""
        if self.size == 1:
            return order
        padding = -len(order) % self.size
        if padding:
            order = torch.cat([order, order.repeat(padding // len(order) + 1)[:padding]])
        return order[self.rank :: self.size]

    def global_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        """The shape of the batch all ranks take together, of which ``x`` is this rank's part."""
        return (len(x) * self.size, *x.shape[1:])

    def rows(self, whole: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a tensor drawn for the global batch (row ``rank + size * j`` is local row ``j``)."""
        return whole[self.rank :: self.size] if self.size > 1 else whole

    # ----- collectives -----

    def on_main(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 only and return its result on every rank; if it raises, every rank raises."""
        if self.size == 1:
            return fn()
        result, error = _attempt(fn) if self.is_main else (None, None)
        box = [(result, _message(error))]
        dist.broadcast_object_list(box, src=0, group=self.control)
        if error is not None:
            raise error
        result, message = box[0]
        if message is not None:
            raise ReportedElsewhere(message)
        return result

    def main_first(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on every rank, rank 0 first (so downloads and caches happen once); if any rank
        fails, every rank raises, and only the failed ranks report the error."""
        if self.size == 1:
            return fn()
        result, error = _attempt(fn) if self.is_main else (None, None)
        self.agree(error)
        if not self.is_main:
            result, error = _attempt(fn)
        self.agree(error)
        return result  # type: ignore[return-value]

    def agree(self, error: BaseException | None) -> None:
        """Every rank says whether it failed; a rank that failed raises its error, the others a quiet one."""
        if self.size == 1:
            if error is not None:
                raise error
            return
        messages: list[str | None] = [None] * self.size
        dist.all_gather_object(messages, _message(error), group=self.control)
        if error is not None:
            raise error
        failed = [(rank, m) for rank, m in enumerate(messages) if m is not None]
        if failed:
            raise ReportedElsewhere(f"rank {failed[0][0]} failed: {failed[0][1]}")

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum a CPU tensor over the ranks, in place; returns it."""
        if self.size > 1:
            dist.all_reduce(values, group=self.control)
        return values

    def mean_over_ranks(self, values: torch.Tensor) -> torch.Tensor:
        """The mean over the ranks of a (detached) tensor on this rank's device: for batch-level statistics."""
        total = values.detach().clone()
        dist.all_reduce(total)
        return total / self.size

    def sync(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
             generator: torch.Generator | None = None) -> None:
        """Give every rank rank 0's weights, optimizer state and generator state."""
        if self.size == 1:
            return
        state = None
        if self.is_main:
            state = {
                "module": {k: v.detach().cpu() for k, v in module.state_dict().items()},
                "optimizer": _to_cpu(optimizer.state_dict()) if optimizer is not None else None,
                "generator": generator.get_state() if generator is not None else None,
            }
        box = [state]
        dist.broadcast_object_list(box, src=0, group=self.control)
        if not self.is_main:
            state = box[0]
            module.load_state_dict(state["module"])
            if optimizer is not None:
                optimizer.load_state_dict(state["optimizer"])
            if generator is not None:
                generator.set_state(state["generator"])

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` in DistributedDataParallel: its forward's gradients are averaged over the ranks."""
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        # the forward pass uses no buffers (the fitted code Gaussian only serves sampling): sync them at the
        # start only, not before every step
        quiet = "forward_sync_buffers" if "forward_sync_buffers" in _parameters(DistributedDataParallel) else "broadcast_buffers"
        return DistributedDataParallel(module, device_ids=ids, **{quiet: False})

    def stop_vote(self) -> StopVote:
        return StopVote(self.control)

    def map_batches(self, fn: Callable[[int, int], Sequence[np.ndarray]], n: int, batch_size: int, *,
                    skip: Callable[[int, int], None] | None = None) -> list[np.ndarray]:
        """``fn(start, stop)`` -> per-item arrays for each batch ``[start, stop)`` of ``n`` items, the batches
        shared round-robin over the ranks and gathered on every rank in order: the same concatenated arrays
        as one process gets. ``skip(start, stop)`` runs for the other ranks' batches (e.g. to keep a generator
        in step)."""
        parts: list[tuple[int, Sequence[np.ndarray]]] = []
        for b, start in enumerate(range(0, n, batch_size)):
            stop = min(start + batch_size, n)
            if b % self.size == self.rank:
                parts.append((b, fn(start, stop)))
            elif skip is not None:
                skip(start, stop)
        if self.size > 1:
            gathered: list[Any] = [None] * self.size
            dist.all_gather_object(gathered, parts, group=self.control)
            parts = sorted((p for rank_parts in gathered for p in rank_parts), key=lambda p: p[0])
        if not parts:
            return []
        return [np.concatenate([arrays[i] for _, arrays in parts]) for i in range(len(parts[0][1]))]


class StopVote:
    """Agree across ranks, without waiting a step for it, on whether any rank was asked to stop.

    Each step every rank casts its vote (an asynchronous all-reduce) and reads the outcome of the previous
    step's vote: the ranks learn of a signal one step late, but all at the same step.
    """

    def __init__(self, group: Any) -> None:
        self.group = group
        self.flag = torch.zeros(1, dtype=torch.int32)
        self.work = None

    def __call__(self, requested: bool) -> bool:
        agreed = self.settle()
        self.flag = torch.tensor([int(requested)], dtype=torch.int32)
        self.work = dist.all_reduce(self.flag, op=dist.ReduceOp.MAX, group=self.group, async_op=True)
        return agreed

    def settle(self) -> bool:
        """The outcome of the last vote cast (False if none is pending)."""
        if self.work is None:
            return False
        self.work.wait()
        self.work = None
        return bool(self.flag.item())


def _parameters(fn) -> set[str]:
    import inspect

    return set(inspect.signature(fn).parameters)


def _attempt(fn: Callable[[], T]) -> tuple[T | None, BaseException | None]:
    try:
        return fn(), None
    except BaseException as err:  # noqa: BLE001 - handed to the other ranks, then raised again here
        return None, err


def _message(error: BaseException | None) -> str | None:
    if error is None:
        return None
    if isinstance(error, AekitError):
        return str(error)
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj


@contextlib.contextmanager
def process_group(device: str = "auto") -> Iterator[World]:
    """Join the run's process group for the duration of the block (torchrun's environment decides).

    ``gloo`` on the CPU, ``nccl`` on GPUs (each process takes ``cuda:LOCAL_RANK``), plus a gloo group for
    CPU-side messages. A group the caller already started is used and left running; one started here is
    destroyed on leaving. Without torchrun's variables (or with one process) this yields the single process.
    """
    rank, size, local_rank = env_world()
    if size > 1 and not dist.is_available():
        raise AekitError("this PyTorch build has no torch.distributed: run a single process")
    target = pick_device(device, local_rank)
    if size == 1:
        world, started = World(device=target), False
    else:
        started = not dist.is_initialized()
        if started:
            if target.type == "cuda":
                torch.cuda.set_device(target)
            try:
                dist.init_process_group("nccl" if target.type == "cuda" else "gloo")
            except (RuntimeError, ValueError) as err:
                raise AekitError(f"cannot join the process group: {str(err).splitlines()[0]}") from None
        elif target.type == "cuda" and dist.get_backend() != "nccl":
            target = torch.device("cpu")  # a caller's gloo group: stay on the CPU
        rank, size = dist.get_rank(), dist.get_world_size()
        control = dist.new_group(backend="gloo")  # keeps control messages off the gradients' group
        world = World(rank=rank, size=size, local_rank=local_rank, device=target, control=control)
    try:
        yield world
    finally:
        if started and dist.is_initialized():
            dist.destroy_process_group()
