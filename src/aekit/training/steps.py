"""One optimisation step, and the one place that decides how it is computed.

:func:`make_step` picks, from the configuration alone (never from timings, so a resumed run takes the
numerical path the uninterrupted one took):

* the hand-written MLP step of :mod:`aekit.training.fastmlp`, when :func:`~aekit.training.fastmlp.supports`
  says it implements the model, objective and optimizer (one CPU process; ``--fast-step off`` turns it off);
* otherwise autograd: the loss in DistributedDataParallel under several processes, ``torch.compile``-d when
  asked or when the run is long enough to repay it (full batches only), else eager.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch

from ..core.config import RunConfig, TrainConfig
from ..core.model import Autoencoder
from ..core.objectives import TERMS, draw_noise, loss_with_noise
from ..errors import AekitError
from . import fastmlp
from .augment import random_crops_and_flips
from .distributed import World

AUTO_COMPILE_IMAGES = 3_000_000  # images per run above which compiling pays back its one-off cost (docs/performance.md)


def should_compile(config: RunConfig, n_train: int) -> bool:
    """Decided from the configured workload alone (never from timings), so a resumed run compiles iff
    the uninterrupted one did and both take the same numerical path."""
    if config.train.compile != "auto":
        return config.train.compile == "on"
    return config.train.epochs * n_train >= AUTO_COMPILE_IMAGES


class TrainStep:
    """One optimisation step: draw the step's noise, loss, backward, (fused) Adam update.

    ``fast``: the hand-written MLP step (:mod:`aekit.training.fastmlp`) to take instead of autograd. With
    ``use_compile`` the loss is ``torch.compile``-d for full batches (the last, smaller batch of an epoch runs
    eagerly, so it never triggers a recompile). If compilation fails (no C++ compiler, unsupported platform)
    training goes on eagerly with a warning.

    With several processes (``world``) the loss runs in DistributedDataParallel, which averages the
    gradients over the processes, and every process draws the noise of the whole global batch (keeping
    its generator in step with the others) and keeps its own rows: the noise of a one-process run.
    """

    def __init__(self, model: Autoencoder, optimizer: torch.optim.Optimizer, config: RunConfig,
                 *, fast: fastmlp.MLPStep | None, use_compile: bool, log: Callable[[str], None],
                 world: World | None = None) -> None:
        self.model, self.optimizer, self.config, self.log = model, optimizer, config, log
        self.world = world or World()
        self.fast = fast
        if self.world.size > 1:
            self.eager = self.world.wrap(_Loss(model, config.objective, batch_mean=self.world.mean_over_ranks))
        else:
            self.eager = functools.partial(loss_with_noise, model, config=config.objective)
        self.full_batch = config.train.batch_size // self.world.size
        self.compiled_fn = torch.compile(self.eager) if use_compile else None
        self.compiled = use_compile

    def draw_noise(self, x: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        objective, latent_dim, latent = self.config.objective, self.model.latent_shape(x), self.model.config.latent
        if self.world.size == 1:
            return draw_noise(x, objective, latent_dim, latent, generator)
        whole = draw_noise(torch.empty(self.world.global_shape(x)), objective, latent_dim, latent, generator)
        return {name: self.world.rows(value) for name, value in whole.items()}

    def augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Random crops and flips of a batch (``--crop``, ``--flip``), drawn like the noise."""
        d = self.config.data
        return random_crops_and_flips(x, d.crop, d.flip, generator, global_batch=len(x) * self.world.size,
                                      rows=self.world.rows)

    def binarize(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A Bernoulli sample of ``x`` (dynamic binarization), drawn like the noise."""
        if self.world.size == 1:
            return torch.bernoulli(x, generator=generator)
        u = torch.rand(self.world.global_shape(x), generator=generator)  # bernoulli(p) is rand() < p, draw for draw
        return (self.world.rows(u) < x).to(x.dtype)

    def __call__(self, x: torch.Tensor, generator: torch.Generator, step: int) -> torch.Tensor:
        noise = self.draw_noise(x, generator)
        warmup = self.config.objective.kl_warmup
        if warmup and self.model.is_variational:  # a tensor, so a compiled loss is not recompiled for each value
            noise["kl_weight"] = torch.tensor(min(1.0, (step + 1) / warmup))
        if self.fast is not None:  # the loss and its gradients in one pass; the weights untouched yet
            values = self.fast.gradients(x, noise)
            self._check_finite([values[name] for name in TERMS], step)
            self.fast.update()
            return torch.tensor([values[name] for name in TERMS], dtype=torch.float64)
        if self.world.device.type != "cpu":
            x, noise = on_device(self.world.device, x, noise)
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


def make_step(model: Autoencoder, optimizer: torch.optim.Optimizer, config: RunConfig, n_train: int, *,
              world: World, log: Callable[[str], None]) -> TrainStep:
    """How this run's steps are computed (see the module docstring): decided from the configuration alone."""
    fast = None
    if config.train.fast_step == "auto" and config.train.compile != "on" and world.size == 1 \
            and world.device.type == "cpu" and fastmlp.supports(model, config.objective, optimizer) is None:
        fast = fastmlp.MLPStep(model, optimizer, config.objective, grad_clip=config.train.grad_clip)
    use_compile = fast is None and should_compile(config, n_train)
    return TrainStep(model, optimizer, config, fast=fast, use_compile=use_compile, log=log, world=world)


class _Loss(torch.nn.Module):
    """The loss as a module: DistributedDataParallel averages the gradients of what a module's forward computed."""

    def __init__(self, model: Autoencoder, objective, *, batch_mean: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.model, self.objective, self.batch_mean = model, objective, batch_mean

    def forward(self, x: torch.Tensor, noise: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return loss_with_noise(self.model, x, noise, self.objective, batch_mean=self.batch_mean)


def on_device(device: torch.device, x: torch.Tensor, noise: dict[str, torch.Tensor]):
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


