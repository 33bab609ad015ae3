"""The training loop: one path, seeded, resumable, checkpointing every epoch.

Images stay uint8 in memory; each step gathers a batch by index and converts it to
floats. All training randomness (shuffling, corruption, reparameterisation) comes from
one ``torch.Generator`` whose state is saved with every checkpoint, so a resumed run
ends with exactly the weights of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from . import checkpoint as ckpt
from .config import RunConfig, preset
from .data import Splits, load_dataset
from .errors import AekitError
from .model import Autoencoder
from .objectives import loss_terms

TERMS = ("loss", "recon", "kl", "sparsity")
RUN_FILES = (ckpt.CONFIG, ckpt.MODEL, ckpt.STATE, ckpt.STATE_JSON, ckpt.METRICS)
EVAL_SEED = 1234  # fixed corruption/sampling noise for test losses, independent of training


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
    log: Callable[[str], None] | None = _stderr,
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
        Show a progress bar per epoch.
    splits : Splits, optional
        Data to train on instead of loading ``data`` (it is still recorded in the config).
    **options
        Any field of ModelConfig, ObjectiveConfig, DataConfig or TrainConfig,
        e.g. ``arch="conv", latent_dim=16, noise_std=0.3, epochs=5``.

    Returns
    -------
    Autoencoder
        The trained model; ``model.run_dir`` is its folder.

    Examples
    --------
    >>> model = aekit.train("vae", data="mnist-5k", epochs=1)   # doctest: +SKIP
    >>> model.run_dir                                              # doctest: +SKIP
    PosixPath('runs/vae-mlp-mnist-5k-1')
    """
    torch.set_flush_denormal(True)  # denormals can slow CPU training 10x
    log = log or (lambda message: None)
    if resume:
        if out is None:
            raise AekitError("--resume needs the run folder (--out RUN_DIR)")
        run_dir = Path(out)
        config = _resume_config(run_dir, family, options)
    else:
        config = family if isinstance(family, RunConfig) else preset(family or "vae", **options)
        if isinstance(family, RunConfig) and options:
            raise AekitError("pass either a RunConfig or keyword options, not both")
        run_dir = Path(out) if out is not None else _new_run_dir(config)
        _claim_run_dir(run_dir, force)

    if splits is None:
        d = config.data
        splits = load_dataset(
            d.data, data_dir=d.data_dir, channels=d.channels, image_size=d.image_size,
            test_split=d.test_split, seed=config.train.seed, progress=progress,
        )
    c, h, w = splits.train.shape
    if resume and (c, h, w) != config.model.image_shape:
        raise AekitError(f"the data now has images of {c}x{h}x{w}; the run was trained on {config.model.image_shape}")
    config.model = dataclasses.replace(config.model, channels=c, height=h, width=w)

    torch.manual_seed(config.train.seed)
    model = Autoencoder(config.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay)
    generator = torch.Generator().manual_seed(config.train.seed)
    start_epoch, step = 0, 0
    if resume:
        weights_epoch = ckpt.load_weights(model, run_dir / ckpt.MODEL)
        start_epoch, step = ckpt.load_state(run_dir, optimizer, generator)
        if weights_epoch != start_epoch:
            raise AekitError(f"{run_dir}: weights are from epoch {weights_epoch}, training state from {start_epoch}")
        log(f"resuming {run_dir} at epoch {start_epoch + 1}/{config.train.epochs}")
    else:
        ckpt.save_config(run_dir, config)
    if resume:
        ckpt.save_config(run_dir, config)  # records a raised epoch count

    n_train = len(splits.train)
    for epoch in range(start_epoch, config.train.epochs):
        t0 = time.perf_counter()
        model.train()
        sums = dict.fromkeys(TERMS, 0.0)
        order = torch.randperm(n_train, generator=generator)
        batches = order.split(config.train.batch_size)
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{config.train.epochs}", unit="batch",
                   disable=None if progress else True,  # None: shown only on a terminal
                   leave=False, file=sys.stderr, dynamic_ncols=True)
        for index in bar:
            x = splits.train.images[index].float().div_(255)  # uint8 (B, C, H, W) -> [0, 1]
            terms = loss_terms(model, x, config.objective, generator)
            _check_finite(terms, step)
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimizer.step()
            step += 1
            for name in TERMS:
                sums[name] += terms[name].item() * len(index)
            bar.set_postfix(loss=f"{terms['loss'].item():.2f}")
        train_seconds = time.perf_counter() - t0

        test = evaluate_losses(model, splits.test.images, config)
        if not model.is_variational:
            model.fit_code_distribution(splits.train.images)
        epoch_seconds = time.perf_counter() - t0
        row = {
            "epoch": epoch + 1,
            "step": step,
            **{f"train_{k}": v / n_train for k, v in sums.items()},
            **{f"test_{k}": v for k, v in test.items()},
            "epoch_seconds": round(epoch_seconds, 4),
            "train_images_per_second": round(n_train / train_seconds, 1),
        }
        ckpt.save_model(run_dir, model, epoch + 1)
        ckpt.save_state(run_dir, epoch=epoch + 1, step=step, optimizer=optimizer, generator=generator)
        ckpt.append_jsonl(run_dir / ckpt.METRICS, row)
        log(_summary(row, config.train.epochs))

    model.eval()
    model.run_dir = run_dir
    model.run_config = config
    model.epoch = config.train.epochs
    return model


@torch.inference_mode()
def evaluate_losses(model: Autoencoder, images: torch.Tensor, config: RunConfig, batch_size: int = 1000) -> dict[str, float]:
    """Mean loss terms over uint8 ``images`` with fixed-seed noise, so the numbers are comparable across epochs."""
    model.eval()
    generator = torch.Generator().manual_seed(EVAL_SEED)
    sums = dict.fromkeys(TERMS, 0.0)
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].float().div_(255)
        terms = loss_terms(model, x, config.objective, generator)
        for name in TERMS:
            sums[name] += terms[name].item() * len(x)
    return {k: v / max(len(images), 1) for k, v in sums.items()}


def _check_finite(terms: dict[str, torch.Tensor], step: int) -> None:
    for name in TERMS:
        if not math.isfinite(terms[name].item()):
            raise AekitError(
                f"training diverged at step {step + 1}: the {name} term is {terms[name].item()} "
                "(try a lower --lr); the last checkpoint is kept"
            )


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


def _claim_run_dir(run_dir: Path, force: bool) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise AekitError(f"--out {run_dir} exists and is not a folder")
    existing = [name for name in RUN_FILES if (run_dir / name).exists()]
    if existing and not force:
        raise AekitError(f"{run_dir} already holds a run: pass --resume to continue it or --force to replace it")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise AekitError(f"cannot create {run_dir}: {err.strerror or err}") from None
    if not os.access(run_dir, os.W_OK):
        raise AekitError(f"cannot write in {run_dir}: permission denied")
    for name in existing:
        (run_dir / name).unlink()


def _resume_config(run_dir: Path, family: Any, options: dict[str, Any]) -> RunConfig:
    config = ckpt.load_config(run_dir)
    if not (run_dir / ckpt.STATE_JSON).exists():
        raise AekitError(f"{run_dir} has no training state to resume from")
    changed = {k: v for k, v in options.items() if v is not None and k != "epochs"}
    if changed:
        raise AekitError(f"cannot change {', '.join(sorted(changed))} when resuming; only --epochs")
    if isinstance(family, RunConfig):
        raise AekitError("resume takes the run's saved config; pass only epochs")
    if family is not None and family != config.family:
        raise AekitError(f"{run_dir} holds a {config.family} run, not {family}")
    if options.get("epochs") is not None:
        config.train = dataclasses.replace(config.train, epochs=options["epochs"])
    return config
