"""Evaluation of a run: :func:`evaluate` composes the metric groups of :mod:`aekit.metrics` that apply.

Groups (each a JSON-ready dict; what does not apply is listed under ``skipped`` with the reason):

* ``reconstruction``   MSE per pixel, BCE per image (nats), PSNR and SSIM on the test split;
* ``variational``      negative ELBO, an importance-weighted NLL (Burda et al. 2015), KL per latent
                       dimension and the active units (VAE only);
* ``sparsity``         mean activation vs the target, near-zero fraction, dead units (sigmoid codes);
* ``denoising``        PSNR of noisy and denoised images at several noise levels;
* ``pca``              PCA with as many components as the latent: the linear baseline to beat;
* ``representation``   linear probe and 5-NN accuracy of the codes vs PCA codes vs raw pixels (labels);
* ``generation``       Fréchet distance of samples to the test set in a small classifier's features.

:func:`evaluate_run` evaluates a run folder and keeps the result in ``RUN/metrics.json`` (:mod:`aekit.metrics.store`).

Under torchrun (``torchrun --nproc-per-node N -m aekit evaluate RUN``) the two expensive groups,
``reconstruction`` (SSIM) and the importance-weighted NLL of ``variational``, share the test images out
over the processes and gather the per-image values, which are those of one process: the same numbers.
Rank 0 computes the other groups alone and hands them to every rank; it alone writes ``metrics.json``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .data import Splits, load_dataset
from .data.datasets import DATASETS
from .errors import AekitError
from .files import RunLock, check_writable
from .metrics import baselines, likelihood, reconstruction, sparsity
from .metrics.likelihood import IW_SAMPLES
from .metrics.pixels import PSNR_CAP_DB
from .metrics.store import (
    METRICS_FORMAT,
    METRICS_VERSION,
    metrics_path,
    read_metrics,
    weights_fingerprint,
    write_metrics,
)
from .run import Run
from .training.augment import center_crop_splits
from .training.distributed import World, process_group


def evaluate(
    run: Run,
    splits: Splits,
    *,
    iw_samples: int = IW_SAMPLES,
    chunk_size: int | None = None,
    limit: int | None = None,
    seed: int = 0,
    probe_train_max: int = baselines.PROBE_TRAIN_MAX,
    data_name: str | None = None,
    classifier_dir: str | Path | None = None,
    frechet: bool = True,
    log: Callable[[str], None] | None = None,
    world: World | None = None,
) -> dict[str, Any]:
    """Every metric that applies to ``run``'s model, on ``splits.test`` (the first ``limit`` images).

    Parameters
    ----------
    run : Run
        A trained model and its config (e.g. from :func:`aekit.load`).
    splits : Splits
        Its data: the training split feeds PCA, the probes and the feature classifier.
    iw_samples : int
        Importance samples K per test image for the IW-NLL of a VAE.
    chunk_size : int, optional
        (sample, image) pairs per forward pass of the IW estimate (memory bound); default: what suits the
        model (see :func:`aekit.metrics.likelihood.iw_decoding`).
    limit : int, optional
        Use only the first ``limit`` test images.
    seed : int
        Seed of every random choice (noise, samples, subsamples).
    probe_train_max : int
        Training points for the linear probe and k-NN (seeded subsample).
    data_name : str, optional
        The dataset's name, keying the cached feature classifier (default: the run's ``data``).
    classifier_dir : path, optional
        Root of the feature-classifier cache (default :func:`aekit.data.default_data_dir`).
    frechet : bool
        Compute the Fréchet classifier distance (trains the classifier once per dataset).
    world : World, optional
        The processes of a torchrun job to share the expensive groups out over (default: this one).

    Returns
    -------
    dict
        One entry per metric group, ``skipped`` (group -> reason) and ``seconds`` (group -> time).

    Examples
    --------
    >>> run = aekit.load("runs/vae-mlp-mnist-5k-1")                               # doctest: +SKIP
    >>> m = aekit.evaluate(run, aekit.load_dataset("mnist-5k"), iw_samples=100)    # doctest: +SKIP
    >>> m["reconstruction"]["psnr_db"], m["variational"]["iw_nll_nats"]            # doctest: +SKIP
    """
    log = log or (lambda message: None)
    world = world or World()
    model, objective = run.model, run.config.objective
    full_test = splits.test  # the feature classifier's accuracy is measured on all of it
    world.on_main(lambda: _check_test_split(run, splits, limit))
    if limit is not None:
        splits = Splits(splits.train, splits.test.subset(torch.arange(min(limit, len(splits.test)))))
    data_name = data_name or run.config.data.data
    test = splits.test.images
    out: dict[str, Any] = {
        "format": METRICS_FORMAT,
        "format_version": METRICS_VERSION,
        "run": _run_summary(run),
        "settings": {
            "data": data_name, "test_images": len(test), "train_images": len(splits.train),
            "iw_samples": iw_samples if model.is_variational else None, "seed": seed, "limit": limit,
            "probe_train_max": probe_train_max, "psnr_cap_db": PSNR_CAP_DB,
        },
        "skipped": {},
        "seconds": {},
    }

    def group(name: str, fn: Callable[[], dict], *, sharded: bool = False) -> None:
        log(f"evaluating {name} ...")
        t0 = time.perf_counter()
        out[name] = fn() if sharded else world.on_main(fn)  # unsharded groups: rank 0's, for every rank
        out["seconds"][name] = round(time.perf_counter() - t0, 3)

    group("reconstruction", lambda: reconstruction.reconstruction_metrics(model, test, world=world), sharded=True)
    if model.is_variational:
        group("variational", lambda: likelihood.variational_metrics(
            model, objective, test, iw_samples=iw_samples, chunk_size=chunk_size, seed=seed, world=world
        ), sharded=True)
    else:
        out["skipped"]["variational"] = "deterministic latent: no ELBO or likelihood"
    if model.config.code_activation == "sigmoid":
        target = objective.sparsity_target if objective.sparsity == "kl" else None
        group("sparsity", lambda: sparsity.sparsity_metrics(model.embed(test).flatten(1), target))
    else:
        out["skipped"]["sparsity"] = "codes are not sigmoid activations"
    group("denoising", lambda: reconstruction.denoising_metrics(
        model, test, trained_noise_std=objective.noise_std, seed=seed))
    pca = world.on_main(lambda: baselines.fit_pca(splits.train.images, model.config.code_size, seed=seed))
    group("pca", lambda: baselines.pca_metrics(pca, test, out["reconstruction"]["mse_per_pixel"]))
    labelled = splits.train.labels is not None and splits.test.labels is not None
    if labelled and len(torch.unique(splits.train.labels)) > 1:
        group("representation", lambda: _representation(model, splits, pca, probe_train_max, seed))
    else:
        out["skipped"]["representation"] = "the data has no labels (or one class)"
    if not frechet:
        out["skipped"]["generation"] = "not asked for"
    elif not model.can_sample:
        out["skipped"]["generation"] = "the model has no bottleneck to sample from (--arch unet)"
    elif labelled and len(torch.unique(splits.train.labels)) > 1 and len(test) >= 2:
        group("generation", lambda: _generation(model, splits, full_test, data_name, classifier_dir, seed, log))
    elif len(test) < 2:
        out["skipped"]["generation"] = "a Fréchet distance needs at least 2 test images"
    else:
        out["skipped"]["generation"] = "the feature classifier needs labelled data"
    out["seconds"]["total"] = round(sum(out["seconds"].values()), 3)
    return out


def _representation(model, splits: Splits, pca, probe_train_max: int, seed: int) -> dict:
    train_x = baselines.subsample(splits.train.images, probe_train_max, seed)
    train_y = baselines.subsample(splits.train.labels, probe_train_max, seed)
    test = splits.test.images
    features = {
        "codes": (model.embed(train_x).flatten(1).numpy(), model.embed(test).flatten(1).numpy()),
        "pca": baselines.pca_codes(pca, train_x, test),
        "pixels": (baselines.flat(train_x), baselines.flat(test)),
    }
    return baselines.representation_metrics(features, train_y.numpy(), splits.test.labels.numpy(),
                                            max_train=probe_train_max, seed=seed)


def _generation(model, splits: Splits, full_test, data_name: str, classifier_dir, seed: int, log) -> dict:
    from .metrics.frechet import dataset_key, load_or_train_classifier
    from .metrics.generation import generation_metrics

    classifier, info = load_or_train_classifier(data_name, splits.train, full_test, data_dir=classifier_dir, seed=0,
                                                log=log)
    result = generation_metrics(model, splits, classifier, seed=seed)
    result["classifier"] = {
        "key": dataset_key(data_name, splits.train.shape),
        "test_accuracy": info.get("test_accuracy"),
        "feature_dim": info.get("feature_dim"),
    }
    return result


def _check_test_split(run: Run, splits: Splits, limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise AekitError(f"--limit must be >= 1 (got {limit})")
    if len(splits.test) == 0:
        raise AekitError("the test split holds no images")
    if splits.test.shape != run.model.config.image_shape:
        raise AekitError(f"the data has images of {splits.test.shape}; this model takes {run.model.config.image_shape}")


def _run_summary(run: Run) -> dict[str, Any]:
    m = run.model.config
    return {
        "family": run.config.family,
        "arch": m.arch,
        "latent": m.latent,
        "latent_dim": m.code_size,
        "latent_shape": list(m.latent_shape()),
        "code_activation": m.code_activation,
        "image_shape": list(m.image_shape),
        "epoch": run.epoch,
        "likelihood": run.config.objective.likelihood,
    }


# ----- run folders -----


def load_run_splits(run: Run, *, data: str | None = None, data_dir: str | None = None, progress: bool = True) -> Splits:
    """The run's train/test splits (or ``data``'s), conformed to the model's channels and image size."""
    d, t = run.config.data, run.config.train
    c, h, w = run.model.config.image_shape
    crop = d.crop and data is None  # a model trained on crops is evaluated on the centre crops of its data
    if data is None and d.data not in DATASETS and not Path(d.data).expanduser().exists():
        raise AekitError(f"this run's data, {d.data}, is not here (moved, or the run was made elsewhere); give "
                         "--data: a dataset name, a folder of images or an array file")
    splits = load_dataset(
        data or d.data, data_dir=data_dir or d.data_dir, channels=c, image_size=d.image_size if crop else (h, w),
        test_split=d.test_split, seed=t.seed, progress=progress, binarize=d.binarize,
    )
    return center_crop_splits(splits, d.crop) if crop else splits


def evaluate_run(
    source: str | os.PathLike | Run,
    *,
    output: str | os.PathLike | None = None,
    data: str | None = None,
    data_dir: str | None = None,
    splits: Splits | None = None,
    iw_samples: int = IW_SAMPLES,
    chunk_size: int | None = None,
    limit: int | None = None,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    show: Callable[[dict[str, Any]], None] | None = None,
    lock: bool = True,
) -> dict[str, Any]:
    """Evaluate a run and keep its metrics; returns them.

    Parameters
    ----------
    source : path or Run
        A run folder (its metrics go to ``RUN/metrics.json``), or a Run such as ``aekit.pretrained(name)``.
    output : path, optional
        Write the metrics here instead (the only place a Run without a folder is written to).
    show : callable, optional
        Called with the metrics before they are written (the CLI prints its table there: a write that fails
        then loses nothing the user waited for).
    lock : bool
        Hold the run folder's lock while measuring and writing it (False: the caller holds it).
    data, data_dir, splits, iw_samples, chunk_size, limit, seed, progress, log
        As for :func:`evaluate`; ``splits`` replaces loading the run's data.

    Before any measuring, the output is checked to be writable and the run folder is locked (one writer at a
    time, :class:`aekit.files.RunLock`). Under torchrun the processes share the expensive groups out (see the
    module docstring); rank 0 reads, locks and writes, and every process returns the metrics.
    """
    held: list[RunLock] = []

    def prepare() -> tuple[Run, str | None, Path | None]:
        if iw_samples < 1:
            raise AekitError(f"--iw-samples must be >= 1 (got {iw_samples})")
        folder = None if isinstance(source, Run) else Path(source)
        fingerprint = weights_fingerprint(folder) if folder is not None else None  # before loading: these weights
        run = source if isinstance(source, Run) else Run.load(source)
        target = Path(output) if output is not None else metrics_path(run.path) if run.path is not None else None
        if target is not None:
            check_writable(target)
            if lock and run.path is not None and target.parent.resolve() == run.path.resolve():
                held.append(RunLock(run.path, "aekit evaluate").acquire())
        return run, fingerprint, target

    with process_group("cpu") as world:
        if not world.is_main:
            progress, log = False, None
        try:
            run, fingerprint, target = world.on_main(prepare)
            if splits is None:
                splits = world.main_first(lambda: load_run_splits(run, data=data, data_dir=data_dir,
                                                                  progress=progress))
            metrics = evaluate(run, splits, iw_samples=iw_samples, chunk_size=chunk_size, limit=limit, seed=seed,
                               data_name=data or run.config.data.data, log=log, world=world)
            if show is not None and world.is_main:
                show(metrics)
            if target is not None:
                metrics = world.on_main(lambda: write_metrics(target, metrics, fingerprint))
        finally:
            for held_lock in held:
                held_lock.release()
    return metrics


def ensure_metrics(
    run_dir: str | os.PathLike,
    *,
    data: str | None = None,
    data_dir: str | None = None,
    splits: Splits | None = None,
    iw_samples: int | None = None,
    limit: int | None = None,
    seed: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    lock: bool = True,
) -> dict[str, Any]:
    """The run's ``metrics.json`` if it measured the weights now in the folder and matches every option given
    here; otherwise evaluate (on ``splits`` if given; options not given take their defaults) and write it."""
    metrics = read_metrics(run_dir)
    if metrics is not None:
        settings = metrics.get("settings", {})
        wanted = {"data": data, "iw_samples": iw_samples, "limit": limit, "seed": seed}
        if all(v is None or settings.get(k) in (v, None if k == "iw_samples" else v) for k, v in wanted.items()):
            return metrics
    return evaluate_run(
        run_dir, data=data, data_dir=data_dir, splits=splits, iw_samples=iw_samples or IW_SAMPLES,
        limit=limit, seed=seed or 0, progress=progress, log=log, lock=lock,
    )
