"""Flat, typed configs: what to build (ModelConfig), what to optimise (ObjectiveConfig),
where the images come from (DataConfig), how to train (TrainConfig). Each round-trips through JSON;
unknown keys, wrong types and out-of-range values raise :class:`AekitError`.

Every field a user sets is declared once, here, with :func:`option`: its help text, its choices and its
numeric range are the field's metadata. Validation reads them (:meth:`Option.check`), and so do the
``aekit train`` flags (:mod:`aekit.cli`) and the scikit-learn estimator's parameters (:mod:`aekit.sklearn`);
:func:`options` lists them all.

The four families are presets over these orthogonal parts (:data:`FAMILY_DEFAULTS`, see :func:`preset`):

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
import functools
import math
import os
from dataclasses import dataclass, field
from typing import Any

from ..data.imageset import CHANNELS
from ..errors import AekitError
from .likelihoods import LIKELIHOODS
from .model_rules import QUANTIZED, check_latent, check_spatial
from .options import Interval, Option, check_choice, check_types, declared, from_dict, no_unknown_keys, one_of, option

__all__ = ["ARCHS", "FAMILIES", "FAMILY_DEFAULTS", "PARTS", "DataConfig", "Interval", "ModelConfig",
           "ObjectiveConfig", "Option", "RunConfig", "TrainConfig", "from_dict", "option", "options", "preset"]

FAMILIES = ("ae", "dae", "sae", "vae")
ARCHS = ("mlp", "conv", "resnet", "unet", "gdn")
DEFAULT_HIDDEN = {"mlp": (512, 256), "conv": (32, 64, 128), "resnet": (48, 96, 192), "unet": (32, 64, 128, 256),
                  "gdn": (128, 128, 128, 128)}
RESNET_WIDTHS = (48, 96, 192, 192, 256, 256, 256)  # stage widths by depth, for a --downsample f without --hidden
MAX_INPUT_VALUES = 4 * 1024 * 1024  # C*H*W a model takes: beyond this an MLP's first layer alone is many GB
# What each family changes from the dataclass defaults: preset() applies it, help texts quote it.
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "ae": {},
    "dae": {"noise_std": 0.5},
    "sae": {"code_activation": "sigmoid", "sparsity": "kl", "sparsity_weight": 10.0},
    "vae": {"latent": "gaussian"},
}


@dataclass
class ModelConfig:
    """The network: backbone, image shape, latent. Everything needed to rebuild the weights."""

    arch: str = option("mlp", "backbone: mlp; conv (stride-2 convolutions); resnet (residual stages with GroupNorm "
                       "and SiLU, resize-conv upsampling: for photos); unet (the resnet's stages in a U with skips "
                       "and a full-resolution code: a photo denoiser, --latent-channels C); gdn (Balle et al.'s "
                       "compression transforms: stride-2 5x5 convolutions with GDN, sub-pixel convolutions with "
                       "inverse GDN back; --latent-channels C)", choices=ARCHS)
    # The image shape is the data's (aekit.train sets it), not an option.
    channels: int = 1
    height: int = 28
    width: int = 28
    outputs: int = 1  # decoder outputs per image channel: the likelihood's parameters (preset() sets it), not an option
    latent_dim: int = option(32, "size of the code", bounds="[1, 65536]")
    hidden: tuple[int, ...] = option(
        (), "layer widths of the MLP, or channel widths of the conv backbone (default "
        + "; ".join(f"{arch}: {','.join(map(str, widths))}" for arch, widths in DEFAULT_HIDDEN.items()) + ")",
        bounds="[1, 65536]", metavar="W1,W2",
    )
    latent: str = option("point", "the code: point (deterministic), gaussian (q(z|x) diagonal-Gaussian: a VAE); "
                         "compressors' integer codes with a rate: entropy (a density per channel, Balle et al. 2017), "
                         "hyperprior (a scale per element from a side code)", choices=("point", "gaussian", *QUANTIZED))
    code_activation: str = option("none", "sigmoid: codes in (0, 1), as kl sparsity needs", choices=("none", "sigmoid"))
    activation: str = option("relu", "hidden-layer nonlinearity", choices=("relu", "leaky_relu", "elu", "gelu", "tanh"))
    code_scale: float = option(
        1.0, "the decoder reads code x code_scale; left unset with kl sparsity on sigmoid codes (the sae preset): "
        "1 / sparsity_target, so that the decoder's input is O(1)", bounds="(0, inf)",
    )
    blocks: int = option(1, "residual blocks per stage of the resnet backbone", bounds="[1, 8]")
    patch: int = option(
        2, "the resnet's space-to-depth stem and sub-pixel head: p x p pixels folded into channels, so no layer runs "
        "at full resolution (much cheaper on a CPU)", choices=(1, 2, 4, 8),
    )
    latent_channels: int = option(
        0, "a spatial latent of C x H/f x W/f (resnet, unet, gdn): the model is fully convolutional and takes any "
        "image size; 0: a vector latent of --latent-dim", bounds="[0, 1024]", metavar="C",
    )
    downsample: int = option(
        0, "the backbone's factor f (a power of 2). resnet: at least --patch, stages = log2(f / patch) + 1, widths "
        f"by default {','.join(map(str, RESNET_WIDTHS))} cut to that many; gdn: log2(f) convolutions of 128 "
        "channels; 0: from --hidden", bounds="[0, 256]", metavar="F",
    )
    pca_path: bool = option(False, "a frozen PCA beside the network (vector codes): code and reconstruction are "
                            "PCA's plus learned corrections that start at 0, so training starts as good as PCA")
    noise_level_input: bool = option(False, "FFDNet-style (--arch unet, a --noise-std objective): the noise std as an "
                                     "extra input plane, so the model is told the level (aekit denoise --noise-level, "
                                     "else the estimated one)")

    def __post_init__(self) -> None:
        check_types(self)
        if self.downsample and self.arch == "resnet" and not self.hidden and self.downsample >= self.patch:
            self.hidden = RESNET_WIDTHS[: (self.downsample // self.patch).bit_length()]
        if self.downsample > 1 and self.arch == "gdn" and not self.hidden:  # one stride-2 convolution per halving
            self.hidden = DEFAULT_HIDDEN["gdn"][:1] * (self.downsample.bit_length() - 1)
        self.hidden = tuple(self.hidden) or DEFAULT_HIDDEN.get(self.arch, ())
        _check_options(self)
        check_spatial(self)
        check_latent(self)
        for name in ("channels", "height", "width"):
            _positive(name, getattr(self, name))
        if not 1 <= self.outputs <= 32:
            raise AekitError(f"outputs must be between 1 and 32 (got {self.outputs})")
        if self.channels not in CHANNELS:
            raise AekitError(f"channels must be {one_of(CHANNELS)} (got {self.channels})")
        if self.channels * self.height * self.width > MAX_INPUT_VALUES:
            raise AekitError(
                f"images of {self.channels}x{self.height}x{self.width} are too large "
                f"(at most {MAX_INPUT_VALUES} values per image); pass a smaller --image-size"
            )
        if not self.hidden:
            raise AekitError("hidden must list at least one width, e.g. 512,256")
        if self.arch == "conv" and len(self.hidden) > 8:
            raise AekitError("a conv backbone takes at most 8 channel widths")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    @property
    def input_channels(self) -> int:
        """The planes the encoder reads: the image's, and the noise level's with ``noise_level_input``."""
        return self.channels + int(self.noise_level_input)

    @property
    def spatial(self) -> bool:
        """Whether the latent is a C x h x w map (``latent_channels`` > 0) rather than a vector."""
        return self.latent_channels > 0

    @property
    def factor(self) -> int:
        """How much the backbone shrinks H and W (1 for the MLP, whose code is always a vector; the unet's patch;
        2 per width for gdn)."""
        return {"resnet": self.patch * 2 ** (len(self.hidden) - 1), "unet": self.patch,
                "gdn": 2 ** len(self.hidden)}.get(self.arch, 1)

    @property
    def grid(self) -> int:
        """The pixel grid the network's strides sit on: tiles of a large photo start on it (the unet's U is deeper
        than its code)."""
        return self.patch * 2 ** (len(self.hidden) - 1) if self.arch == "unet" else self.factor

    def latent_shape(self, height: int | None = None, width: int | None = None) -> tuple[int, ...]:
        """The code's shape for an image of ``height`` x ``width`` (default the training size): ``(latent_dim,)``,
        or ``(C, ceil(H / f), ceil(W / f))`` for a spatial latent (the model pads the image to a multiple of f)."""
        if not self.spatial:
            return (self.latent_dim,)
        f, h, w = self.factor, height or self.height, width or self.width
        return (self.latent_channels, -(-h // f), -(-w // f))

    @property
    def code_size(self) -> int:
        """Numbers in one image's code at the training size (for a spatial latent C x h x w)."""
        return math.prod(self.latent_shape())


@dataclass
class ObjectiveConfig:
    """The training objective: likelihood, corruption, sparsity, KL weight."""

    likelihood: str = option("bernoulli", "decoder likelihood p(x|z): bernoulli (BCE on logits), gaussian (fixed std) "
                             "or one registered with aekit.core.likelihoods.register_likelihood",
                             choices=lambda: tuple(LIKELIHOODS))
    # Below 1e-3 the loss's gradient scale 1 / std^2 overflows float32 in the hand-written MLP step.
    gaussian_std: float = option(0.1, "std of the gaussian likelihood", bounds="[0.001, 1000]")
    beta: float = option(1.0, "weight of a VAE's KL term (Higgins et al. 2017)", bounds="[0, 1000]")
    lmbda: float | None = option(None, "rate-distortion trade-off: the loss per pixel is lambda x 255^2 x MSE + bits "
                                 "(CompressAI's; for --latent entropy), instead of --gaussian-std", bounds="(0, 1000]",
                                 metavar="LAMBDA")
    distortion: str = option("mse", "the distortion D of a compressor's loss lambda x D + bits per pixel (with "
                             "--lmbda): mse (D = 255^2 x MSE, CompressAI's) or ms-ssim (D = 1 - MS-SSIM; the images, "
                             "or --crop, at least 161 pixels a side)", choices=("mse", "ms-ssim"))
    importance_samples: int = option(
        1, "train a VAE on the importance-weighted (IWAE) bound with K samples per image (Burda et al. 2015); "
        "1 is the ELBO: more are tighter and give better likelihoods, at about K times the decoder's cost",
        bounds="[1, 4096]", metavar="K",
    )
    kl_warmup: int = option(0, "a VAE's KL weight rises linearly from 0 to beta over this many steps, against "
                            "posterior collapse (Bowman et al. 2016; 0: off)", bounds="[0, 100000000]", metavar="STEPS")
    free_bits: float = option(0.0, "free bits (Kingma et al. 2016): each latent unit's KL (per channel for a map), "
                              "averaged over the batch, costs at least this many nats (0: off)", bounds="[0, 100]",
                              metavar="NATS")
    # Pixels are in [0, 1]; bench/results.py reports a probe of a DAE trained at 1.5.
    noise_std: float = option(0.0, "std of the Gaussian input corruption (denoising; Vincent et al. 2008)",
                              bounds="[0, 2]")
    noise_clip: bool = option(True, "clip the noisy input to [0, 1], as an 8-bit photo is; off: unclipped Gaussian "
                              "noise, the convention of denoising benchmarks (DnCNN, FFDNet)")
    noise_std_min: float | None = option(
        None, "blind denoising: each image's noise std is uniform in [noise_std_min, noise_std] instead of fixed; "
        "in [0, noise_std]", metavar="STD",
    )
    mask_prob: float = option(0.0, "masking corruption: the fraction of pixels set to 0", bounds="[0, 1)")
    salt_pepper: float = option(0.0, "salt-and-pepper corruption: the fraction of pixels set to 0 or 1",
                                bounds="[0, 1)")
    sparsity: str = option("none", "sparsity penalty on the codes: l1, or kl (needs sigmoid codes)",
                           choices=("none", "l1", "kl"))
    sparsity_weight: float = option(1.0, "weight lambda of the sparsity penalty (per image)", bounds="[0, 1000]")
    sparsity_target: float = option(0.05, "target mean activation rho of kl sparsity", bounds="(0, 1)")

    def __post_init__(self) -> None:
        check_types(self)
        _check_options(self)
        if self.distortion != "mse" and self.lmbda is None:
            raise AekitError(f"--distortion {self.distortion} is a compressor's: it needs --lmbda")
        if self.lmbda is not None and self.likelihood != "gaussian":
            raise AekitError(f"lmbda weighs a squared error: it needs --likelihood gaussian (got {self.likelihood})")
        if self.free_bits > 0 and self.importance_samples > 1:
            raise AekitError("free_bits shapes the ELBO's KL term; the importance-weighted bound (importance_samples "
                             f"{self.importance_samples}) has none: pass one or the other")
        if self.noise_std_min is not None and not 0 <= self.noise_std_min <= self.noise_std:  # its range: checked here
            raise AekitError(f"noise_std_min must be in [0, noise_std] = [0, {self.noise_std:g}] (got {self.noise_std_min})")


@dataclass
class DataConfig:
    """Where the training images come from and how they are pre-processed."""

    data: str = option("mnist-5k", "the images: mnist-5k (embedded), mnist, fashion-mnist, an image folder "
                       "or a .npy/.npz file")
    data_dir: str | None = option(None, "root of named datasets (default $AEKIT_DATA or the user cache)")
    channels: int | None = option(None, "convert images to 1 (gray), 3 (RGB) or 4 (RGBA) channels (default: as "
                                  "stored; folders: gray if all gray, else RGB)", choices=CHANNELS)
    image_size: tuple[int, int] | None = option(None, "resize images to H,W (on the command line also one size, "
                                                "for a square; default: as stored)", bounds="[1, inf)",
                                                metavar="H,W")
    test_split: float = option(0.1, "held-out fraction for data without a test split", bounds="(0, 1)")
    crop: int = option(0, "train on random crop x crop patches of the (larger) images, a fresh crop each time an "
                       "image is seen; the test loss and evaluation use centre crops (0: whole images)",
                       bounds="[0, 8192]", metavar="SIZE")
    flip: bool = option(False, "flip each training image left-right with probability 1/2 (photos; not for text or "
                        "digits)")
    binarize: str = option(
        "none", "Bernoulli-sample the pixels: dynamic = afresh for each training batch and one fixed seeded sample of "
        "the test set (how MNIST likelihoods are reported); static = one fixed sample of each set",
        choices=("none", "static", "dynamic"),
    )

    def __post_init__(self) -> None:
        check_types(self)
        _check_options(self)
        if self.image_size is not None and (self.channels or 3) * self.image_size[0] * self.image_size[1] > MAX_INPUT_VALUES:
            raise AekitError(f"image size {self.image_size[0]}x{self.image_size[1]} is too large "
                             f"(at most {MAX_INPUT_VALUES} values per image)")


@dataclass
class TrainConfig:
    """The optimisation loop."""

    epochs: int = option(10, "passes over the training images", bounds="[1, inf)")
    batch_size: int = option(128, "images per optimisation step; under torchrun the global batch: each of N "
                             "processes takes batch_size / N, so it must be a multiple of N", bounds="[1, inf)")
    lr: float = option(1e-3, "Adam learning rate", bounds="(0, 10]")
    weight_decay: float = option(0.0, "Adam L2 weight decay", bounds="[0, 1]")
    seed: int = option(0, "seeds initialisation, shuffling, noise and held-out splits: same seed, same run",
                       bounds=f"[0, {2**64 - 1}]")  # what torch.manual_seed takes
    grad_clip: float = option(0.0, "clip the gradient's global norm to this (0: off)", bounds="[0, 1000000]")
    compile: str = option("auto", "torch.compile the loss: auto compiles runs long enough to repay its one-off cost "
                          "(never MLPs that take the fast step)", choices=("auto", "on", "off"))
    fast_step: str = option("auto", "auto: MLPs train by a hand-written forward and backward pass with the same "
                            "gradients as autograd, faster (docs/performance.md); off: autograd", choices=("auto", "off"))
    lr_schedule: str = option("constant", "constant, or cosine: the learning rate falls from lr to 0 over the "
                              "run's steps", choices=("constant", "cosine"))
    init_from: str | None = option(None, "start from the weights of this run folder (same model settings; or a "
                                   "--latent entropy codec's, for a --latent hyperprior one) instead of a fresh "
                                   "initialisation: fine-tuning, e.g. on another objective", metavar="RUN_DIR")
    ema: float = option(0.0, "keep an exponential moving average of the weights with this decay (e.g. 0.999; "
                        "min(decay, (1 + step) / (10 + step)) early on): the average is what each epoch evaluates "
                        "and saves; 0: off", bounds="[0, 1)")

    def __post_init__(self) -> None:
        if isinstance(self.init_from, os.PathLike):
            self.init_from = os.fspath(self.init_from)
        check_types(self)
        _check_options(self)


# The parts of a RunConfig, in the order preset() builds them (and the CLI groups their flags).
PARTS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "objective": ObjectiveConfig, "train": TrainConfig}


def options() -> tuple[Option, ...]:
    """Every option a user sets, part by part (data, model, objective, train), in declaration order.

    These are the keywords of :func:`preset` and :func:`aekit.train`, the flags of ``aekit train`` and
    (but for a few that make no sense for in-memory arrays) the parameters of the scikit-learn estimator.

    Examples
    --------
    >>> lr = {o.name: o for o in options()}["lr"]
    >>> lr.part, lr.flag, str(lr.interval), lr.describe()
    ('train', '--lr', '(0, 10]', 'Adam learning rate; in (0, 10] (default 0.001)')
    """
    return tuple(o for part_cls in PARTS.values() for o in _part_options(part_cls))


@functools.cache
def _part_options(part_cls: type) -> tuple[Option, ...]:
    part = next(name for name, cls in PARTS.items() if cls is part_cls)
    return declared(part_cls, part, FAMILY_DEFAULTS)


def _check_options(obj: Any) -> None:
    for opt in _part_options(type(obj)):
        opt.check(getattr(obj, opt.name))


@dataclass
class RunConfig:
    """Everything a run is: saved as ``config.json`` beside the weights."""

    family: str = "ae"
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        check_choice("family", self.family, FAMILIES)
        if self.objective.sparsity == "kl" and self.model.code_activation != "sigmoid":
            raise AekitError("--sparsity kl needs codes in (0, 1): use --model sae (sigmoid codes) or --sparsity l1")
        if self.model.noise_level_input and not self.objective.noise_std > 0:
            raise AekitError("--noise-level-input needs --noise-std (the levels the model is told and learns from)")
        if self.objective.importance_samples > 1 and self.model.latent != "gaussian":
            raise AekitError("--importance-samples needs a variational latent: use --model vae")
        params = LIKELIHOODS[self.objective.likelihood].params
        if self.model.outputs != params:
            raise AekitError(f"the {self.objective.likelihood} likelihood takes {params} decoder output(s) per channel; "
                             f"the model makes {self.model.outputs}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Any) -> RunConfig:
        if not isinstance(raw, dict):
            raise AekitError("config must be a JSON object")
        known = {"family", "model", "objective", "data", "train"}
        no_unknown_keys("config", raw, known)
        parts = {}
        for name, part_cls in PARTS.items():
            parts[name] = from_dict(part_cls, raw.get(name, {}), where=f"config.{name}")
        family = raw.get("family", "ae")
        if not isinstance(family, str):
            raise AekitError("config.family must be a string")
        return cls(family=family, **parts)


def preset(family: str, **overrides: Any) -> RunConfig:
    """The RunConfig of a family with any option overridden by keyword.

    Keywords name options (see :func:`options`): fields of DataConfig, ModelConfig, ObjectiveConfig or
    TrainConfig. ``channels`` is the data's pre-processing (the model's image shape is always taken from
    the data it trains on). ``None`` means "the preset's value" (:data:`FAMILY_DEFAULTS`, else the field's
    default).

    Examples
    --------
    >>> cfg = preset("vae", noise_std=0.3, latent_dim=16)   # a denoising VAE
    >>> cfg.model.latent, cfg.objective.noise_std, cfg.model.latent_dim
    ('gaussian', 0.3, 16)
    """
    check_choice("family", family, FAMILIES)
    values = {**FAMILY_DEFAULTS[family], **{k: v for k, v in overrides.items() if v is not None}}
    parts = {}
    for name, part_cls in PARTS.items():  # data first: it owns ``channels``
        names = {o.name for o in _part_options(part_cls)}
        parts[name] = part_cls(**{k: values.pop(k) for k in list(values) if k in names})
    if values:
        raise AekitError(f"unknown option(s): {', '.join(sorted(values))}")
    model, objective = parts["model"], parts["objective"]
    if model.code_activation == "sigmoid" and objective.sparsity == "kl" and overrides.get("code_scale") is None:
        # Codes held near rho (0.05) reach the decoder 20x smaller than a plain AE's: its first layer's
        # weights would have to grow 20x, a step of Adam at a time. Reading code / rho puts them at O(1):
        # on MNIST (MLP, 30 epochs) the SAE's MSE went from 1.61x the AE's to 1.11x at the same rate.
        parts["model"] = dataclasses.replace(model, code_scale=1.0 / objective.sparsity_target)
    parts["model"] = dataclasses.replace(parts["model"], outputs=LIKELIHOODS[objective.likelihood].params)
    return RunConfig(family=family, **parts)


def _positive(name: str, value: int) -> None:
    if value < 1:
        raise AekitError(f"{name} must be >= 1 (got {value})")
