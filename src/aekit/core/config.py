"""Flat, typed configs: what to build (ModelConfig), what to optimise (ObjectiveConfig),
how to train (TrainConfig). Each round-trips through JSON; unknown keys, wrong types and
out-of-range values raise :class:`AekitError`.

The four families are presets over these orthogonal parts (see :func:`preset`):

=======  ============  ==================  ===========  ==========
family   latent        code activation     noise_std    sparsity
=======  ============  ==================  ===========  ==========
ae       point         none                0            none
dae      point         none                0.5          none
sae      point         sigmoid             0            kl (rho=0.05, weight 10)
vae      gaussian      none                0            none
=======  ============  ==================  ===========  ==========

Any field can be overridden, so ``vae`` + ``noise_std=0.3`` is a denoising VAE and
``sae`` + ``noise_std=0.3`` a sparse denoising AE.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from ..errors import AekitError

FAMILIES = ("ae", "dae", "sae", "vae")
ARCHS = ("mlp", "conv")
DEFAULT_HIDDEN = {"mlp": (512, 256), "conv": (32, 64, 128)}
MAX_PIXELS = 4 * 1024 * 1024  # C*H*W cap: beyond this an MLP's first layer alone is many GB


@dataclass
class ModelConfig:
    """The network: backbone, image shape, latent. Everything needed to rebuild the weights."""

    arch: str = "mlp"
    channels: int = 1
    height: int = 28
    width: int = 28
    latent_dim: int = 32
    hidden: tuple[int, ...] = ()  # MLP layer widths or conv channel widths; () = the arch's default
    latent: str = "point"  # "point" (deterministic code) | "gaussian" (diagonal-Gaussian q(z|x))
    code_activation: str = "none"  # "none" | "sigmoid" (codes in (0, 1), for sparsity)
    activation: str = "relu"  # hidden-layer nonlinearity: relu | leaky_relu | elu | gelu | tanh
    code_scale: float = 1.0  # the decoder reads code * code_scale; the SAE preset: 1 / rho (see preset())

    def __post_init__(self) -> None:
        _check_types(self)
        self.hidden = tuple(self.hidden) or DEFAULT_HIDDEN.get(self.arch, ())
        _choice("arch", self.arch, ARCHS)
        _choice("latent", self.latent, ("point", "gaussian"))
        _choice("code_activation", self.code_activation, ("none", "sigmoid"))
        _choice("activation", self.activation, ("relu", "leaky_relu", "elu", "gelu", "tanh"))
        if self.latent == "gaussian" and self.code_activation != "none":
            raise AekitError("a gaussian latent cannot have a sigmoid code activation")
        _positive("channels", self.channels)
        _positive("height", self.height)
        _positive("width", self.width)
        _positive("latent_dim", self.latent_dim)
        if not (math.isfinite(self.code_scale) and self.code_scale > 0):
            raise AekitError(f"code_scale must be a positive number (got {self.code_scale})")
        if self.channels > 4:
            raise AekitError(f"channels must be 1 to 4 (got {self.channels})")
        if self.channels * self.height * self.width > MAX_PIXELS:
            raise AekitError(
                f"images of {self.channels}x{self.height}x{self.width} are too large "
                f"(at most {MAX_PIXELS} values per image); pass a smaller --image-size"
            )
        if not self.hidden:
            raise AekitError("hidden must list at least one width, e.g. 512,256")
        for width in self.hidden:
            if not 0 < width <= 65536:
                raise AekitError(f"hidden widths must be between 1 and 65536 (got {width})")
        if self.arch == "conv" and len(self.hidden) > 8:
            raise AekitError("a conv backbone takes at most 8 channel widths")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)


@dataclass
class ObjectiveConfig:
    """The training objective: likelihood, corruption, sparsity, KL weight."""

    likelihood: str = "bernoulli"  # decoder p(x|z): "bernoulli" (logits) | "gaussian" (fixed std)
    gaussian_std: float = 0.1  # std of the Gaussian likelihood
    beta: float = 1.0  # weight of KL(q(z|x) || N(0, I)); Higgins et al. 2017
    importance_samples: int = 1  # K > 1: train a VAE on the IWAE bound with K samples (Burda et al. 2015)
    noise_std: float = 0.0  # additive Gaussian corruption (denoising); Vincent et al. 2008
    noise_std_min: float | None = None  # set: each image's std is uniform in [noise_std_min, noise_std] (blind)
    mask_prob: float = 0.0  # masking corruption: fraction of pixels set to 0
    salt_pepper: float = 0.0  # salt-and-pepper corruption: fraction of pixels set to 0 or 1
    sparsity: str = "none"  # "none" | "l1" | "kl"
    sparsity_weight: float = 1.0  # lambda for the sparsity penalty (per image)
    sparsity_target: float = 0.05  # target mean activation rho for "kl"

    def __post_init__(self) -> None:
        _check_types(self)
        _choice("likelihood", self.likelihood, ("bernoulli", "gaussian"))
        _choice("sparsity", self.sparsity, ("none", "l1", "kl"))
        if not self.gaussian_std > 0:
            raise AekitError(f"gaussian_std must be > 0 (got {self.gaussian_std})")
        for name in ("beta", "noise_std", "sparsity_weight"):
            if not getattr(self, name) >= 0:
                raise AekitError(f"{name} must be >= 0 (got {getattr(self, name)})")
        if self.noise_std_min is not None and not 0 <= self.noise_std_min <= self.noise_std:
            raise AekitError(
                f"noise_std_min must be in [0, noise_std] = [0, {self.noise_std:g}] (got {self.noise_std_min})"
            )
        for name in ("mask_prob", "salt_pepper"):
            if not 0 <= getattr(self, name) < 1:
                raise AekitError(f"{name} must be in [0, 1) (got {getattr(self, name)})")
        if not 1 <= self.importance_samples <= 4096:
            raise AekitError(f"importance_samples must be between 1 and 4096 (got {self.importance_samples})")
        if not 0 < self.sparsity_target < 1:
            raise AekitError(f"sparsity_target must be in (0, 1) (got {self.sparsity_target})")

    @property
    def corrupts(self) -> bool:
        return self.noise_std > 0 or self.mask_prob > 0 or self.salt_pepper > 0


@dataclass
class DataConfig:
    """Where the training images come from and how they are pre-processed."""

    data: str = "mnist-5k"  # dataset name, image folder or .npy/.npz file
    data_dir: str | None = None  # root of named datasets; None = $AEKIT_DATA or the user cache
    channels: int | None = None  # convert images to this many channels; None = as stored
    image_size: tuple[int, int] | None = None  # resize to (H, W); None = as stored
    test_split: float = 0.1  # held-out fraction for sources without a test split
    binarize: str = "none"  # "dynamic": a fresh Bernoulli sample of each training batch, a fixed one of the test set

    def __post_init__(self) -> None:
        _check_types(self)
        _choice("binarize", self.binarize, ("none", "static", "dynamic"))
        if self.image_size is not None:
            self.image_size = tuple(self.image_size)
            if len(self.image_size) != 2 or min(self.image_size) < 1:
                raise AekitError(f"image_size must be two positive integers (got {self.image_size})")
        if self.channels is not None and self.channels not in (1, 3):
            raise AekitError(f"channels must be 1 or 3 (got {self.channels})")
        if self.image_size is not None and (self.channels or 3) * self.image_size[0] * self.image_size[1] > MAX_PIXELS:
            raise AekitError(
                f"image size {self.image_size[0]}x{self.image_size[1]} is too large "
                f"(at most {MAX_PIXELS} values per image)"
            )
        if not 0 < self.test_split < 1:
            raise AekitError(f"test_split must be in (0, 1) (got {self.test_split})")


@dataclass
class TrainConfig:
    """The optimisation loop."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    grad_clip: float = 0.0  # clip the gradient's global norm to this (0 = off)
    compile: str = "auto"  # torch.compile the loss: "auto" (when the run is long enough to pay it back) | "on" | "off"
    fast_step: str = "auto"  # "auto": MLPs train by a hand-written forward/backward (aekit.fastmlp) | "off": autograd
    lr_schedule: str = "constant"  # "constant" | "cosine": lr * (1 + cos(pi * step / steps)) / 2 over the run's steps
    init_from: str | None = None  # start from this run folder's weights (fine-tuning) instead of a fresh initialisation

    def __post_init__(self) -> None:
        if isinstance(self.init_from, os.PathLike):
            self.init_from = os.fspath(self.init_from)
        _check_types(self)
        _choice("compile", self.compile, ("auto", "on", "off"))
        _choice("fast_step", self.fast_step, ("auto", "off"))
        _choice("lr_schedule", self.lr_schedule, ("constant", "cosine"))
        _positive("epochs", self.epochs)
        _positive("batch_size", self.batch_size)
        if not self.lr > 0:
            raise AekitError(f"lr must be > 0 (got {self.lr})")
        if not self.weight_decay >= 0:
            raise AekitError(f"weight_decay must be >= 0 (got {self.weight_decay})")
        if not self.grad_clip >= 0:
            raise AekitError(f"grad_clip must be >= 0 (got {self.grad_clip})")


@dataclass
class RunConfig:
    """Everything a run is: saved as ``config.json`` beside the weights."""

    family: str = "ae"
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        _choice("family", self.family, FAMILIES)
        if self.objective.sparsity == "kl" and self.model.code_activation != "sigmoid":
            raise AekitError(
                "--sparsity kl needs codes in (0, 1): use --model sae (sigmoid codes) "
                "or --sparsity l1"
            )
        if self.objective.importance_samples > 1 and self.model.latent != "gaussian":
            raise AekitError("--importance-samples needs a variational latent: use --model vae")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Any) -> RunConfig:
        if not isinstance(raw, dict):
            raise AekitError("config must be a JSON object")
        known = {"family", "model", "objective", "data", "train"}
        _no_unknown_keys("config", raw, known)
        parts = {}
        for name, part_cls in (
            ("model", ModelConfig),
            ("objective", ObjectiveConfig),
            ("data", DataConfig),
            ("train", TrainConfig),
        ):
            parts[name] = from_dict(part_cls, raw.get(name, {}), where=f"config.{name}")
        family = raw.get("family", "ae")
        if not isinstance(family, str):
            raise AekitError("config.family must be a string")
        return cls(family=family, **parts)


def preset(family: str, **overrides: Any) -> RunConfig:
    """The RunConfig of a family with any field overridden by keyword.

    Keywords name fields of DataConfig, ModelConfig, ObjectiveConfig or TrainConfig.
    ``channels`` is the data's pre-processing (the model's image shape is always taken from
    the data it trains on). ``None`` means "the preset's value".

    Examples
    --------
    >>> cfg = preset("vae", noise_std=0.3, latent_dim=16)   # a denoising VAE
    >>> cfg.model.latent, cfg.objective.noise_std, cfg.model.latent_dim
    ('gaussian', 0.3, 16)
    """
    _choice("family", family, FAMILIES)
    defaults: dict[str, dict[str, Any]] = {
        "ae": {},
        "dae": {"noise_std": 0.5},
        "sae": {"code_activation": "sigmoid", "sparsity": "kl", "sparsity_weight": 10.0},
        "vae": {"latent": "gaussian"},
    }
    values = {**defaults[family], **{k: v for k, v in overrides.items() if v is not None}}
    parts = {}
    for name, part_cls in (
        ("data", DataConfig),  # first: it owns ``channels``
        ("model", ModelConfig),
        ("objective", ObjectiveConfig),
        ("train", TrainConfig),
    ):
        names = {f.name for f in dataclasses.fields(part_cls)} - ({"channels", "height", "width"} if name == "model" else set())
        parts[name] = part_cls(**{k: values.pop(k) for k in list(values) if k in names})
    if values:
        raise AekitError(f"unknown option(s): {', '.join(sorted(values))}")
    model, objective = parts["model"], parts["objective"]
    if model.code_activation == "sigmoid" and objective.sparsity == "kl" and overrides.get("code_scale") is None:
        # Codes held near rho (0.05) reach the decoder 20x smaller than a plain AE's: its first layer's
        # weights would have to grow 20x, a step of Adam at a time. Reading code / rho puts them at O(1):
        # on MNIST (MLP, 30 epochs) the SAE's MSE went from 1.61x the AE's to 1.11x at the same rate.
        parts["model"] = dataclasses.replace(model, code_scale=1.0 / objective.sparsity_target)
    return RunConfig(family=family, **parts)


def from_dict(cls: type, raw: Any, *, where: str) -> Any:
    """Build dataclass ``cls`` from a JSON object, refusing unknown keys and wrong types."""
    if not isinstance(raw, dict):
        raise AekitError(f"{where} must be a JSON object")
    names = {f.name for f in dataclasses.fields(cls)}
    _no_unknown_keys(where, raw, names)
    try:
        return cls(**raw)
    except AekitError as err:
        raise AekitError(f"{where}: {err}") from None


def _no_unknown_keys(where: str, raw: dict, known: set[str]) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        raise AekitError(f"{where} has unknown key(s): {', '.join(unknown)}")


def _check_types(obj: Any) -> None:
    """Check (and gently coerce: list -> tuple, int -> float) each field against its annotation."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        coerced = _coerce(value, hints[f.name])
        if coerced is _BAD:
            raise AekitError(
                f"{f.name} has the wrong type: {value!r} ({type(value).__name__})"
            )
        setattr(obj, f.name, coerced)


_BAD = object()


def _coerce(value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            out = _coerce(value, option)
            if out is not _BAD:
                return out
        return _BAD
    if hint is type(None):
        return None if value is None else _BAD
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return _BAD
        args = typing.get_args(hint)
        item = args[0]
        items = [_coerce(v, item) for v in value]
        if any(v is _BAD for v in items):
            return _BAD
        if len(args) == 2 and args[1] is not Ellipsis:
            item_hints = args
            if len(value) != len(item_hints):
                return _BAD
        return tuple(items)
    if hint is bool:
        return value if isinstance(value, bool) else _BAD
    if hint is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _BAD
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        return _BAD
    if hint is str:
        return value if isinstance(value, str) else _BAD
    return value


def _choice(name: str, value: Any, options: tuple[str, ...]) -> None:
    if value not in options:
        raise AekitError(f"{name} must be one of {', '.join(options)} (got {value!r})")


def _positive(name: str, value: int) -> None:
    if value < 1:
        raise AekitError(f"{name} must be >= 1 (got {value})")
