"""A scikit-learn transformer around aekit's autoencoders: ``transform`` = codes, ``inverse_transform`` = decode.

Follows scikit-learn's estimator contract (``decomposition/_pca.py`` is the model): ``__init__`` only
stores keyword hyperparameters, ``fit`` validates and returns ``self``, learned state ends in ``_``.
Training is aekit's own loop (:func:`aekit.training.loop.fit`), in memory: nothing is written to disk.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import numbers
import sys
import textwrap
import types
import typing
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from .core.config import FAMILIES, Option, options, preset
from .core.objectives import TERMS, loss_terms
from .cpu import tune_cpu
from .data import ImageSet, Splits
from .training.loop import EVAL_SEED, fit, new_state

SCALINGS = ("auto", "unit", "uint8", "minmax")
_BATCH = 1024
_EVAL_BATCH = 1000  # as train.evaluate_losses, so scores of uint8 images equal its test losses

# The config options that are no parameters of the estimator, and why. Every other option is one.
NOT_PARAMETERS = {
    "data": "the training images are X",
    "data_dir": "no named dataset is loaded: the training images are X",
    "channels": "X is used as it is: its layout is image_shape (or 4-D X's own), no conversion",
    "image_size": "X is used as it is: no resizing",
    "test_split": "fit holds nothing out: it trains on all of X (score evaluates any X)",
    "seed": "random_state sets it, scikit-learn's way",
    "init_from": "the model comes from X and the parameters alone (clone and refit give the same model); "
                 "fine-tuning a saved run is aekit.train(init_from=...)",
}
OPTIONS = tuple(o for o in options() if o.name not in NOT_PARAMETERS)


def _default(opt: Option) -> Any:
    """The field's default where every family's preset keeps it, else None: the family's preset decides."""
    presets = {getattr(getattr(preset(family), opt.part), opt.name) for family in FAMILIES}
    return opt.default if presets == {opt.default} else None


def _signature() -> inspect.Signature:
    """``(self, family="vae", *, <every option>, image_shape=None, scaling="auto", random_state=None,
    verbose=False)``: what scikit-learn reads the parameters from."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    return inspect.Signature([
        inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter("family", inspect.Parameter.POSITIONAL_OR_KEYWORD, default="vae"),
        *(inspect.Parameter(o.name, keyword, default=_default(o)) for o in OPTIONS),
        *(inspect.Parameter(name, keyword, default=default)
          for name, default in (("image_shape", None), ("scaling", "auto"), ("random_state", None), ("verbose", False))),
    ])


_SIGNATURE = _signature()


def _parameters_doc() -> str:
    """The numpydoc entries of the options, from their declarations (aekit.core.config)."""
    entries = []
    for opt in OPTIONS:
        default = _SIGNATURE.parameters[opt.name].default
        allowed = opt.allowed()
        kind = _type_name(opt.type) if allowed is None else "{" + ", ".join(f'"{v}"' for v in allowed) + "}"
        text = opt.describe(defaults=False)
        if default is None and opt.default_text():
            text += f". None: the family's preset ({opt.default_text()})"
        shown = f'"{default}"' if isinstance(default, str) else repr(default)
        entries.append(f"    {opt.name} : {kind}, default={shown}\n"
                       + textwrap.fill(text[0].upper() + text[1:] + ".", 112, initial_indent=" " * 8,
                                       subsequent_indent=" " * 8))
    return "\n".join(entries) + "\n"


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(h) for h in typing.get_args(hint) if h is not type(None))
    if typing.get_origin(hint) is tuple:
        return "tuple of int"
    return hint.__name__


_DOCSTRING = """Non-linear dimensionality reduction with an image autoencoder (AE, DAE, SAE or VAE).

    ``fit`` trains an aekit model on the rows of ``X``; ``transform`` returns their codes (the
    posterior mean for a VAE), ``inverse_transform`` decodes codes back to mean images, and
    ``score`` is the mean negative training loss (for a VAE, the ELBO in nats per image).

    Every option of :func:`aekit.train` is a parameter (they are generated from the config's
    declarations, :func:`aekit.core.config.options`) but those of :data:`NOT_PARAMETERS`,
    which make no sense for in-memory arrays.

    Parameters
    ----------
    family : {"ae", "dae", "sae", "vae"}, default="vae"
        The autoencoder family; its preset fills every option left at None.
{options}    image_shape : tuple (C, H, W), default=None
        How a row of a 2-D ``X`` is laid out. None: a square single-channel image when the number
        of features is a perfect square (784 -> 1x28x28), else a 1x1xN "image" (fine for the MLP).
        4-D input ``(N, C, H, W)`` carries its own shape.
    scaling : {"auto", "unit", "uint8", "minmax"}, default="auto"
        How features become pixel values in [0, 1] for the Bernoulli likelihood:
        "unit" uses them as they are (values must lie in [0, 1]), "uint8" divides by 255,
        "minmax" maps each feature's training range to [0, 1] (constant features to 0), like
        ``MinMaxScaler``. "auto" is "uint8" for uint8 ``X``, "unit" when every training value
        lies in [0, 1], else "minmax". New data is scaled the same way and clipped to [0, 1].
    random_state : int, RandomState instance or None, default=None
        Seeds initialisation, shuffling and noise. An int is aekit's ``seed`` itself, so the model
        equals ``aekit.train(..., seed=random_state)`` on the same images.
    verbose : bool, default=False
        Print one line per epoch to stderr.

    Attributes
    ----------
    model_ : Autoencoder
        The trained network (eval mode, float32, on the CPU).
    run_config_ : RunConfig
        Everything the model was trained with.
    image_shape_ : tuple (C, H, W)
        The image layout of a row.
    scaling_ : str
        The scaling "auto" resolved to.
    data_min_, data_max_ : ndarray of shape (n_features_in_,)
        The affine map of the scaling: ``(X - data_min_) / (data_max_ - data_min_)``
        (a zero range counts as 1).
    loss_curve_ : list of float
        Mean training loss per epoch.
    n_features_in_ : int
        Number of features (pixels) seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Defined only when ``X`` has string feature names (a DataFrame).

    Notes
    -----
    aekit trains on uint8 images, so the scaled training data is quantized to 256 levels (exact for
    uint8 images and for uint8 images divided by 255); ``transform``, ``inverse_transform`` and
    ``score`` use the unquantized values. ``binarize`` draws the training images' samples as
    :func:`aekit.train` does; ``transform`` and ``score`` take ``X`` as it is. Codes are float32 for
    float32 or uint8 input, float64 otherwise, and are computed in that precision. ``fit`` reseeds
    torch's global RNG (as :func:`aekit.train` does). Bad hyperparameters raise
    :class:`aekit.AekitError` from ``fit``; bad data raises ``ValueError``, as scikit-learn expects.

    Examples
    --------
    >>> import numpy as np, aekit
    >>> from aekit.sklearn import AutoencoderTransformer
    >>> X = aekit.load_dataset("mnist-5k").train.images[:500].reshape(500, -1).numpy()  # uint8 (500, 784)
    >>> ae = AutoencoderTransformer(latent_dim=8, hidden=(64,), epochs=2, random_state=0)
    >>> ae.fit_transform(X).shape
    (500, 8)
    >>> ae.inverse_transform(ae.transform(X[:3])).shape       # back in X's units (0..255 here)
    (3, 784)
    """


class AutoencoderTransformer(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    __doc__ = _DOCSTRING.replace("{options}", _parameters_doc())

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Stores the parameters of the class's signature (_SIGNATURE here; a subclass's own), a TypeError for
        # others, as a written-out __init__ would give.
        bound = inspect.signature(type(self).__init__).bind(self, *args, **kwargs)
        bound.apply_defaults()
        for name, value in bound.arguments.items():
            if name != "self":
                setattr(self, name, value)

    __init__.__signature__ = _SIGNATURE  # type: ignore[attr-defined]

    # ----- fitting -----

    def fit(self, X, y=None):
        """Train the autoencoder on ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
            Images (uint8, or floats) or any real-valued features; see ``scaling``.
        y : None
            Ignored.

        Returns
        -------
        self : AutoencoderTransformer
        """
        X, shape = self._flat(X, reset=True)
        self._fit_ndim = 2 if shape is None else 4
        X = validate_data(self, X, dtype=[np.float64, np.float32, np.uint8])
        self.image_shape_ = self._resolve_shape(shape, X.shape[1])
        self._fit_scaling(X)
        train_images = self._quantized(X)
        options = {opt.name: getattr(self, opt.name) for opt in OPTIONS}
        config = preset(self.family, **options, seed=self._seed(), data="sklearn-input")
        c, h, w = self.image_shape_
        config.model = dataclasses.replace(config.model, channels=c, height=h, width=w)
        log = (lambda line: print(line, file=sys.stderr, flush=True)) if self.verbose else None
        tune_cpu()  # flush-to-zero and the allocator's thresholds: training as aekit.train does it
        train = ImageSet(train_images, None, "fit")
        # --binarize as aekit.train applies it: "static" samples the training images once (the loop draws "dynamic")
        train = Splits(train, train.subset(torch.arange(0))).binarized(config.data.binarize).train
        state = new_state(config)
        state.model.init_output_bias(train.images)
        history = fit(state, config, train, log=log)
        self.run_config_ = config
        self.model_ = state.kept.eval()  # the moving average of the weights with ema
        self.loss_curve_ = [row["train_loss"] for row in history]
        return self

    def _seed(self) -> int:
        if isinstance(self.random_state, numbers.Integral) and not isinstance(self.random_state, bool):
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    def _fit_scaling(self, X: np.ndarray) -> None:
        if self.scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {', '.join(SCALINGS)} (got {self.scaling!r})")
        scaling = self.scaling
        if scaling == "auto":
            scaling = "uint8" if X.dtype == np.uint8 else "unit" if X.min() >= 0 and X.max() <= 1 else "minmax"
        n = X.shape[1]
        if scaling == "unit":
            if not (X.min() >= 0 and X.max() <= 1):
                raise ValueError("scaling='unit' needs every value of X in [0, 1]; use scaling='minmax'")
            low, high = np.zeros(n), np.ones(n)
        elif scaling == "uint8":
            low, high = np.zeros(n), np.full(n, 255.0)
        else:
            low, high = X.min(0).astype(np.float64), X.max(0).astype(np.float64)
        self.scaling_ = scaling
        self.data_min_, self.data_max_ = low, high

    def _quantized(self, X: np.ndarray) -> torch.Tensor:
        """Training images: uint8 (N, C, H, W), exactly ``X`` when it already is uint8 pixels."""
        if self.scaling_ == "uint8" and X.dtype == np.uint8:
            pixels = np.array(X, dtype=np.uint8)  # a copy: X may be a read-only memmap
        else:
            pixels = np.rint(self._scaled_numpy(X) * 255).astype(np.uint8)
        return torch.from_numpy(pixels).reshape(len(X), *self.image_shape_)

    # ----- using the model -----

    def transform(self, X):
        """Codes of ``X``: posterior means for a VAE.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)

        Returns
        -------
        ndarray of shape (n_samples, latent_dim)
        """
        check_is_fitted(self)
        X = self._validated(X)
        net, dtype = self._network(X)
        x = self._scaled(X, dtype)
        with torch.inference_mode():
            codes = [net.encode(chunk).mode() for chunk in x.split(_BATCH)]
        return _numpy(codes, (0, self.model_.config.latent_dim), dtype)

    def inverse_transform(self, X):
        """Decode codes to mean images, in the units of the data ``fit`` saw.

        Parameters
        ----------
        X : array-like of shape (n_samples, latent_dim)
            Codes, e.g. from ``transform``.

        Returns
        -------
        ndarray of shape (n_samples, n_features), or (n_samples, C, H, W) when fitted on 4-D input
            Mean images mapped back through the scaling (0..255 for "uint8", [0, 1] for "unit").
        """
        check_is_fitted(self)
        Z = check_array(X, dtype=[np.float64, np.float32])
        if Z.shape[1] != self.model_.config.latent_dim:
            latent_dim = self.model_.config.latent_dim
            raise ValueError(f"X has {Z.shape[1]} features, but the codes of this model have {latent_dim}")
        net, dtype = self._network(Z)
        z = torch.from_numpy(np.ascontiguousarray(Z, dtype=dtype))
        with torch.inference_mode():
            images = [net.mean(net.decode(chunk)).flatten(1) for chunk in z.split(_BATCH)]
        unit = _numpy(images, (0, self.n_features_in_), dtype)
        out = unit * (self.data_max_ - self.data_min_).astype(dtype) + self.data_min_.astype(dtype)
        return out if self._fit_ndim == 2 else out.reshape(len(out), *self.image_shape_)

    def score(self, X, y=None):
        """Mean negative loss per image (nats; for a VAE, the ELBO), with fixed-seed noise as in aekit's test losses.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
        y : None
            Ignored.

        Returns
        -------
        float
            Higher is better.
        """
        return -self.score_terms(X)["loss"]

    def score_terms(self, X) -> dict[str, float]:
        """The mean loss terms of ``X`` (``loss``, ``recon``, ``kl``, ``sparsity``), as aekit's test losses."""
        check_is_fitted(self)
        X = self._validated(X)
        x = self._scaled(X, np.float32)
        self.model_.eval()
        generator = torch.Generator().manual_seed(EVAL_SEED)
        sums = dict.fromkeys(TERMS, 0.0)
        with torch.inference_mode():
            for chunk in x.split(_EVAL_BATCH):
                terms = loss_terms(self.model_, chunk, self.run_config_.objective, generator)
                for name in TERMS:
                    sums[name] += terms[name].item() * len(chunk)
        return {k: v / len(x) for k, v in sums.items()}

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    @property
    def _n_features_out(self) -> int:
        return self.model_.config.latent_dim  # for get_feature_names_out: autoencodertransformer0, ...

    # ----- helpers -----

    def _flat(self, X, *, reset: bool):
        """4-D images (N, C, H, W) -> (N, C*H*W) and their shape; anything else passes through."""
        ndim = getattr(X, "ndim", None)
        if ndim != 4:
            return X, None
        X = np.asarray(X)
        shape = tuple(int(v) for v in X.shape[1:])
        if not reset and self.image_shape_ != shape:
            raise ValueError(f"X has images of shape {shape}, but this model takes {self.image_shape_}")
        return X.reshape(len(X), -1), shape

    def _validated(self, X) -> np.ndarray:
        X, _ = self._flat(X, reset=False)
        return validate_data(self, X, dtype=[np.float64, np.float32, np.uint8], reset=False)

    def _resolve_shape(self, shape_4d, n_features: int) -> tuple[int, int, int]:
        if self.image_shape is not None:
            try:
                shape = tuple(int(v) for v in self.image_shape)
            except (TypeError, ValueError):
                raise ValueError(f"image_shape must be (C, H, W) (got {self.image_shape!r})") from None
            if len(shape) != 3 or min(shape) < 1 or math.prod(shape) != n_features:
                raise ValueError(f"image_shape {self.image_shape!r} does not hold {n_features} features per row")
            if shape_4d is not None and shape != shape_4d:
                raise ValueError(f"image_shape {shape} does not match the images' shape {shape_4d}")
            return shape
        if shape_4d is not None:
            return shape_4d
        side = math.isqrt(n_features)
        return (1, side, side) if side * side == n_features else (1, 1, n_features)

    def _scaled_numpy(self, X: np.ndarray, dtype=np.float64) -> np.ndarray:
        low = self.data_min_.astype(dtype)
        span = self.data_max_ - self.data_min_
        span = np.where(span == 0, 1.0, span).astype(dtype)
        return np.clip((X.astype(dtype) - low) / span, 0, 1)

    def _scaled(self, X: np.ndarray, dtype) -> torch.Tensor:
        """(N, n_features) -> (N, C, H, W) tensor of ``dtype`` in [0, 1]."""
        return torch.from_numpy(self._scaled_numpy(X, dtype)).reshape(len(X), *self.image_shape_)

    def _network(self, X: np.ndarray):
        """The model and dtype to compute in: float64 (an exact copy of the weights) for float64 data."""
        if X.dtype == np.float64:
            return copy.deepcopy(self.model_).double().eval(), np.float64
        return self.model_.eval(), np.float32


def _numpy(chunks: list[torch.Tensor], empty_shape: tuple[int, int], dtype) -> np.ndarray:
    out = torch.cat(chunks).numpy() if chunks else np.empty(empty_shape)
    return out.astype(dtype, copy=False)
