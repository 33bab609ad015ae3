"""A trained model with what it was trained as: :class:`Run`, and the run folder it is saved in.

A run folder holds

* ``config.json``        -- the RunConfig, with ``format`` and ``format_version``;
* ``model.safetensors``  -- the model's weights (metadata: format, version, epoch);
* ``metrics.jsonl``      -- one JSON line per epoch (the history);
* ``state.safetensors``  -- what ``--resume`` needs (:mod:`aekit.training.resume` writes and reads it);
* ``metrics.json``, ``figures/``, ``report.html`` -- written by evaluate and report.

Tensors go in safetensors, everything else in JSON: nothing is ever pickled. Every file is written atomically
(:mod:`aekit.files`); loading checks the format stamp, the config, and every tensor's name, shape and dtype.
The model itself stays a plain ``nn.Module``: what a run knows about itself lives here, on the Run.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as st_save

from ._version import __version__
from .core.config import RunConfig
from .core.model import Autoencoder, parameter_count
from .data.machine import check_memory
from .errors import AekitError
from .files import (
    append_jsonl,
    atomic_write_bytes,
    atomic_write_json,
    make_folder,
    read_json,
    read_jsonl,
    read_safetensors,
)

FORMAT = "aekit-run"
FORMAT_VERSION = 1
CONFIG = "config.json"
MODEL = "model.safetensors"
STATE = "state.safetensors"
METRICS = "metrics.jsonl"
RUN_FILES = (CONFIG, MODEL, STATE, METRICS)
HALF_DTYPES = (torch.float16, torch.bfloat16)


@dataclasses.dataclass
class Run:
    """A model, the configuration it was trained with, and where it came from.

    Attributes
    ----------
    model : Autoencoder
        The network (a plain ``nn.Module``), on the CPU in eval mode when loaded or returned by training.
    config : RunConfig
        Everything the run was trained with (``config.json``).
    path : pathlib.Path or None
        The run folder; None for a run held only in memory (the scikit-learn estimator's).
    epoch : int
        Epochs trained.
    history : list of dict
        One row per epoch: the training and test loss terms, timings (``metrics.jsonl``).
    card : dict or None
        A shipped model's card (:mod:`aekit.pretrained`): how it was made and what it measured.
    name : str or None
        A shipped model's name, e.g. ``"mnist-vae"``.

    Examples
    --------
    >>> run = aekit.load("runs/vae-mlp-mnist-5k-1")                  # doctest: +SKIP
    >>> run.model.sample(16).shape, run.config.family, run.epoch     # doctest: +SKIP
    (torch.Size([16, 1, 28, 28]), 'vae', 10)
    """

    model: Autoencoder
    config: RunConfig
    path: Path | None = None
    epoch: int = 0
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    card: dict[str, Any] | None = None
    name: str | None = None

    @property
    def label(self) -> str:
        """What to call the run: a shipped model's name, else its folder's name."""
        return self.name or (self.path.name if self.path is not None else self.config.family)

    def describe(self) -> str:
        """A short human-readable summary of the run (``aekit info``)."""
        model, config = self.model, self.config
        m, o, t = config.model, config.objective, config.train
        n_params = sum(p.numel() for p in model.parameters())
        lines = [
            f"family      {config.family} ({'variational' if model.is_variational else 'deterministic'} latent)",
            f"backbone    {m.arch} {','.join(map(str, m.hidden))}, activation {m.activation}",
            f"images      {m.channels}x{m.height}x{m.width} from {config.data.data}",
            (f"latent      {'x'.join(map(str, m.latent_shape()))} {m.latent} map (any image size)" if m.spatial
             else f"latent      {m.latent_dim}-d {m.latent}")
            + (", sigmoid codes" if m.code_activation == "sigmoid" else ""),
            f"objective   {o.likelihood} likelihood"
            + (f", beta {o.beta:g}" if model.is_variational else "")
            + (f", IWAE bound with {o.importance_samples} samples" if o.importance_samples > 1 else "")
            + (f", noise std {o.noise_std:g}" if o.noise_std and o.noise_std_min is None else "")
            + (f", noise std {o.noise_std_min:g} to {o.noise_std:g}" if o.noise_std and o.noise_std_min is not None else "")
            + (f", mask {o.mask_prob:g}" if o.mask_prob else "")
            + (f", salt-and-pepper {o.salt_pepper:g}" if o.salt_pepper else "")
            + (f", sparsity {o.sparsity} (weight {o.sparsity_weight:g}, target {o.sparsity_target:g})" if o.sparsity != "none" else ""),
            f"training    epoch {self.epoch}/{t.epochs}, batch {t.batch_size}, lr {t.lr:g}"
            + (f" ({t.lr_schedule} schedule)" if t.lr_schedule != "constant" else "") + f", seed {t.seed}"
            + (f", fine-tuned from {t.init_from}" if t.init_from else ""),
            f"parameters  {n_params:,}",
        ]
        if self.history:
            last = self.history[-1]
            test = f", test loss {last['test_loss']:.3f}" if "test_loss" in last else ""
            lines.append(f"last epoch  train loss {last['train_loss']:.3f}{test}, {last['epoch_seconds']:.1f}s")
        return "\n".join(lines)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Run:
        """The run saved in folder ``path`` (see :func:`load`)."""
        path = Path(path)
        if not path.is_dir():
            raise AekitError(f"{path} is not a folder: pass a run folder written by 'aekit train'")
        config = load_config(path)
        if not (path / MODEL).exists():
            raise AekitError(f"{path} has not finished an epoch yet (no {MODEL}): wait for its first epoch, or "
                             f"continue a stopped run with aekit train --resume --out {path}")
        check_memory(f"the model of {path}", 4 * parameter_count(config.model))  # before allocating it
        model = Autoencoder(config.model)
        epoch = load_weights(model, path / MODEL)
        return cls(model.eval(), config, path, epoch, read_jsonl(path / METRICS))

    def save(self, path: str | os.PathLike, *, dtype: torch.dtype | None = None) -> Run:
        """Write config, weights and history to folder ``path`` (created if missing); returns the saved Run.

        ``dtype=torch.float16`` stores the weights in half precision (half the bytes, for weights kept in a
        repository); loading casts them back to float32.
        """
        path = make_folder(path)
        save_config(path, self.config)
        save_weights(path, self.model, self.epoch, dtype=dtype)
        atomic_write_bytes(path / METRICS, b"".join(_jsonl_line(row) for row in self.history))
        return dataclasses.replace(self, path=path)


def load(run_dir: str | os.PathLike) -> Run:
    """Load the run saved in a folder written by ``aekit train`` (or :func:`aekit.train`).

    Parameters
    ----------
    run_dir : path
        The run folder.

    Returns
    -------
    Run
        ``run.model`` in eval mode, ``run.config`` the whole RunConfig, ``run.epoch``, ``run.history``.

    Examples
    --------
    >>> run = aekit.load("runs/vae-mlp-mnist-5k-1")      # doctest: +SKIP
    >>> run.model.sample(16).shape                         # doctest: +SKIP
    torch.Size([16, 1, 28, 28])
    """
    return Run.load(run_dir)


def _jsonl_line(row: dict) -> bytes:
    return (json.dumps(row) + "\n").encode()


def append_history(run_dir: Path, row: dict[str, Any]) -> None:
    append_jsonl(Path(run_dir) / METRICS, row)


def check_stamp(meta: dict, path: Path) -> None:
    """Refuse a file that is not aekit's or is of another format version."""
    if meta.get("format") != FORMAT:
        raise AekitError(f"{path} is not an aekit file (format {meta.get('format')!r})")
    version = meta.get("format_version")
    if str(version) != str(FORMAT_VERSION):
        raise AekitError(
            f"{path} has format version {version!r}; this aekit reads version {FORMAT_VERSION}: upgrade aekit"
        )


def stamp(**extra: str) -> dict[str, str]:
    """The metadata of a safetensors file aekit writes."""
    return {"format": FORMAT, "format_version": str(FORMAT_VERSION), **extra}


# ----- config -----


def save_config(run_dir: Path, config: RunConfig) -> None:
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "aekit_version": __version__, **config.to_dict()}
    atomic_write_json(Path(run_dir) / CONFIG, payload)


def load_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / CONFIG
    raw = read_json(path, "config")
    if not isinstance(raw, dict):
        raise AekitError(f"{path} must hold a JSON object")
    check_stamp(raw, path)
    body = {k: v for k, v in raw.items() if k not in ("format", "format_version", "aekit_version")}
    try:
        return RunConfig.from_dict(body)
    except AekitError as err:
        raise AekitError(f"{path}: {err}") from None


# ----- weights -----


def save_weights(run_dir: Path, model: Autoencoder, epoch: int, *, dtype: torch.dtype | None = None) -> None:
    """The user-facing weights, ``model.safetensors``; optionally in half precision (see :meth:`Run.save`)."""
    if dtype is not None and dtype not in HALF_DTYPES:
        raise AekitError(f"weights can be stored as float16 or bfloat16, not {dtype}")
    model.update_tables()  # a quantized code's integer tables, frozen from its density as it is now
    state = {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in model.state_dict().items()
    }
    atomic_write_bytes(Path(run_dir) / MODEL, st_save(state, metadata=stamp(epoch=str(epoch))))


def load_weights(model: Autoencoder, path: Path) -> int:
    """Load weights into ``model`` after checking every name, shape and dtype; returns the epoch."""
    tensors, meta = read_safetensors(path)
    check_stamp(meta, path)
    load_checked(model, tensors, path, half_ok=True)
    try:
        return int(meta.get("epoch", 0))
    except ValueError:
        raise AekitError(f"{path}: bad epoch stamp {meta.get('epoch')!r}") from None


def check_init_from(config: RunConfig, run_dir: Path) -> None:
    """``--init-from``: a run folder (not the one being written) whose model is this run's model, or a factorized
    codec's of otherwise the same settings starting a scale-hyperprior one (the one change allowed)."""
    source = config.train.init_from
    if source is None:
        return
    if not Path(source).is_dir():
        raise AekitError(f"--init-from {source} is not a folder: pass a run folder written by 'aekit train'")
    if Path(source).resolve() == run_dir.resolve():
        raise AekitError(f"--init-from {source} is the run folder being written: pass another --out")
    if not (Path(source) / MODEL).is_file():
        raise AekitError(f"--init-from {source} has no {MODEL}: it has not finished an epoch")
    theirs = load_config(Path(source)).model
    hyperprior = (theirs.latent, config.model.latent) == ("entropy", "hyperprior")
    if theirs != config.model and not (hyperprior and dataclasses.replace(theirs, latent="hyperprior") == config.model):
        mine, other = dataclasses.asdict(config.model), dataclasses.asdict(theirs)
        differ = ", ".join(f"{k} (this run: {mine[k]!r}, {source}: {other[k]!r})" for k in mine if mine[k] != other[k])
        raise AekitError(f"--init-from needs the same model settings: {differ}")


def load_init_from(model: Autoencoder, source: Path, images) -> str:
    """The weights of run folder ``source`` (checked by :func:`check_init_from`) into ``model``; from a factorized
    codec into a hyperprior one, its transforms, and the fresh side networks started from the codes of the uint8
    images ``images()`` gives (:meth:`~aekit.core.entropy.HyperpriorHead.start_from_codes`). Returns a line to log."""
    if load_config(source).model == model.config:
        load_weights(model, source / MODEL)
        return f"starting from the weights of {source}"
    load_transforms(model, source / MODEL)
    with torch.no_grad():
        model.head.start_from_codes(model.encode(model.prepare(images()).to(next(model.parameters()).device)).mean)
    return f"starting from the transforms of {source}; the hyperprior's scales from the codes of training images"


# The side part of a scale-hyperprior model: what a factorized model of the same settings does not have, and the
# density that codes its side code z (the factorized model's density of that name codes y itself).
SIDE_PREFIXES = ("head.analysis.", "head.synthesis.", "head.density.", "head.gaussian_")


def load_transforms(model: Autoencoder, path: Path) -> None:
    """Load a factorized codec's weights into a scale-hyperprior ``model`` of otherwise the same settings: every
    tensor but the side part (:data:`SIDE_PREFIXES`), which keeps its fresh initialisation."""
    tensors, meta = read_safetensors(path)
    check_stamp(meta, path)
    fresh = {k: v for k, v in model.state_dict().items() if k.startswith(SIDE_PREFIXES)}
    load_checked(model, {**fresh, **{k: v for k, v in tensors.items() if not k.startswith(SIDE_PREFIXES)}}, path,
                 half_ok=True)


def load_checked(model: torch.nn.Module, tensors: dict[str, torch.Tensor], path: Path, *, half_ok: bool = False) -> None:
    """Load ``tensors`` into ``model`` after checking every name, shape and dtype against it.
    With ``half_ok``, float16/bfloat16 tensors are accepted for float32 ones and cast up."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise AekitError(f"{path} does not match its config: missing {missing[:3]}, unexpected {extra[:3]}")
    for name, ref in expected.items():
        got = tensors[name]
        if half_ok and got.dtype in HALF_DTYPES and ref.dtype == torch.float32:
            got = tensors[name] = got.float()
        if got.shape != ref.shape or got.dtype != ref.dtype:
            raise AekitError(
                f"{path}: tensor {name} is {got.dtype} {tuple(got.shape)}, the config needs {ref.dtype} {tuple(ref.shape)}"
            )
        if got.is_floating_point() and not torch.isfinite(got).all():
            raise AekitError(f"{path}: tensor {name} holds NaN or inf")
    model.load_state_dict(tensors)
