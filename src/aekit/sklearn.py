"""A scikit-learn transformer around aekit's autoencoders: ``transform`` = codes, ``inverse_transform`` = decode.

Follows scikit-learn's estimator contract (``decomposition/_pca.py`` is the model): ``__init__`` only
stores keyword hyperparameters, ``fit`` validates and returns ``self``, learned state ends in ``_``.
Training is :func:`aekit.train` itself, run in a temporary folder that is deleted afterwards, so
nothing is written to the working directory.
"""

from __future__ import annotations

import copy
import math
import numbers
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from .run import read_jsonl
from .data import ImageSet, Splits
from .core.objectives import loss_terms, mean_image
from .training.loop import EVAL_SEED, TERMS, train

SCALINGS = ("auto", "unit", "uint8", "minmax")
_BATCH = 1024
_EVAL_BATCH = 1000  # as train.evaluate_losses, so scores of uint8 images equal its test losses
_MONITOR = 256  # train() evaluates a "test" split every epoch: a few training images are enough here


class AutoencoderTransformer(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Non-linear dimensionality reduction with an image autoencoder (AE, DAE, SAE or VAE).

    ``fit`` trains an aekit model on the rows of ``X``; ``transform`` returns their codes (the
    posterior mean for a VAE), ``inverse_transform`` decodes codes back to mean images, and
    ``score`` is the mean negative training loss (for a VAE, the ELBO in nats per image).

    Parameters
    ----------
    family : {"ae", "dae", "sae", "vae"}, default="vae"
        The autoencoder family; its preset fills every option left at None.
    arch : {"mlp", "conv"}, default="mlp"
        The backbone. The MLP works on any image shape; the conv backbone wants real images.
    latent_dim : int, default=32
        Size of the code, i.e. the number of output features.
    hidden : tuple of int, default=None
        MLP layer widths or conv channel widths; None is the arch's default ((512, 256) or (32, 64, 128)).
    activation : {"relu", "leaky_relu", "elu", "gelu", "tanh"}, default="relu"
    likelihood : {"bernoulli", "gaussian"}, default="bernoulli"
    gaussian_std : float, default=0.1
        Standard deviation of the gaussian likelihood.
    beta : float, default=1.0
        KL weight of a VAE.
    noise_std, mask_prob, salt_pepper : float, default=None
        Input corruption while training (None: the family's preset, 0.5 noise for "dae").
    noise_std_min : float, default=None
        Blind denoising: each image's noise std is drawn uniformly from [noise_std_min, noise_std].
    sparsity : {"none", "l1", "kl"}, default=None
    sparsity_weight, sparsity_target : float, default=None
        The sparsity penalty (None: the family's preset; "sae" is kl, 10, 0.05).
    epochs : int, default=10
    batch_size : int, default=128
    lr : float, default=1e-3
        Adam's learning rate.
    weight_decay : float, default=0.0
    image_shape : tuple (C, H, W), default=None
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
    ``score`` use the unquantized values. Codes are float32 for float32 or uint8 input, float64
    otherwise, and are computed in that precision. ``fit`` reseeds torch's global RNG (as
    :func:`aekit.train` does). Bad hyperparameters raise :class:`aekit.AekitError` from ``fit``;
    bad data raises ``ValueError``, as scikit-learn expects.

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

    def __init__(
        self,
        family="vae",
        *,
        arch="mlp",
        latent_dim=32,
        hidden=None,
        activation="relu",
        likelihood="bernoulli",
        gaussian_std=0.1,
        beta=1.0,
        noise_std=None,
        noise_std_min=None,
        mask_prob=None,
        salt_pepper=None,
        sparsity=None,
        sparsity_weight=None,
        sparsity_target=None,
        epochs=10,
        batch_size=128,
        lr=1e-3,
        weight_decay=0.0,
        image_shape=None,
        scaling="auto",
        random_state=None,
        verbose=False,
    ):
        self.family = family
        self.arch = arch
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.activation = activation
        self.likelihood = likelihood
        self.gaussian_std = gaussian_std
        self.beta = beta
        self.noise_std = noise_std
        self.noise_std_min = noise_std_min
        self.mask_prob = mask_prob
        self.salt_pepper = salt_pepper
        self.sparsity = sparsity
        self.sparsity_weight = sparsity_weight
        self.sparsity_target = sparsity_target
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.image_shape = image_shape
        self.scaling = scaling
        self.random_state = random_state
        self.verbose = verbose

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
        splits = Splits(
            ImageSet(train_images, None, "fit"),
            ImageSet(train_images[:_MONITOR], None, "fit-monitor"),
        )
        options = {
            "arch": self.arch, "latent_dim": self.latent_dim, "hidden": self.hidden, "activation": self.activation,
            "likelihood": self.likelihood, "gaussian_std": self.gaussian_std, "beta": self.beta,
            "noise_std": self.noise_std, "noise_std_min": self.noise_std_min, "mask_prob": self.mask_prob, "salt_pepper": self.salt_pepper,
            "sparsity": self.sparsity, "sparsity_weight": self.sparsity_weight,
            "sparsity_target": self.sparsity_target, "epochs": self.epochs, "batch_size": self.batch_size,
            "lr": self.lr, "weight_decay": self.weight_decay, "seed": self._seed(), "data": "sklearn-input",
        }
        log = (lambda line: print(line, file=sys.stderr, flush=True)) if self.verbose else None
        with tempfile.TemporaryDirectory(prefix="aekit-sklearn-") as tmp:
            model = train(self.family, out=Path(tmp) / "run", splits=splits, progress=False, log=log, **options)
            rows = read_jsonl(Path(tmp) / "run" / "metrics.jsonl")
        self.run_config_ = model.run_config
        for name in ("run_dir", "run_config"):  # the folder is gone; the config lives on run_config_
            delattr(model, name)
        self.model_ = model.eval()
        self.loss_curve_ = [row["train_loss"] for row in rows]
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
            images = [mean_image(net.decode(chunk)).flatten(1) for chunk in z.split(_BATCH)]
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
