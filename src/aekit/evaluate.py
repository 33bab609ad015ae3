"""Evaluation metrics for a trained autoencoder: one function per group, composed by :func:`evaluate`.

Groups (each returns a JSON-ready dict; :func:`evaluate` skips what does not apply and says why):

* ``reconstruction``   MSE per pixel, BCE per image (nats), PSNR and SSIM on the test split;
* ``variational``      negative ELBO, an importance-weighted NLL (Burda et al. 2015), KL per latent
                       dimension and the active units (VAE only);
* ``sparsity``         mean activation vs the target, near-zero fraction, dead units (sigmoid codes);
* ``denoising``        PSNR of noisy and denoised images at several noise levels;
* ``pca``              PCA with as many components as the latent: the linear baseline to beat;
* ``representation``   linear probe and 5-NN accuracy of the codes vs PCA codes vs raw pixels (labels);
* ``generation``       Fréchet distance of samples to the test set in a small classifier's features.

``evaluate_run`` loads a run's data and writes ``RUN/metrics.json`` atomically.

Under torchrun (``torchrun --nproc-per-node N -m aekit evaluate RUN``) the two expensive groups,
``reconstruction`` (SSIM) and the importance-weighted NLL of ``variational``, share the test images out
over the processes and gather the per-image values, which are those of one process: the same numbers.
Rank 0 computes the other groups alone and hands them to every rank; it alone writes ``metrics.json``.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import run as ckpt
from .cpu import tune_cpu
from .data import Splits, load_dataset
from .training.distributed import World, current, process_group
from .errors import AekitError
from .core.latent import standard_normal_log_prob
from .core.model import Autoencoder
from .core.objectives import reconstruction_nll

METRICS_FILE = "metrics.json"
METRICS_FORMAT = "aekit-metrics"
METRICS_VERSION = 1
PSNR_CAP_DB = 100.0  # PSNR of identical images: MSE is floored at 1e-10
DENOISE_LEVELS = (0.1, 0.3, 0.5, 0.7)
ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. 2015, Sec. 5.2: A_u = Cov_x(E_q[u]) > 0.01
LOW_ACTIVATION = 0.05  # "near zero" for the sparsity fraction
DEAD_ACTIVATION = 0.1  # a unit is dead if its activation never exceeds this on the test set
PROBE_TRAIN_MAX = 10_000  # training codes used by the linear probe and k-NN (seeded subsample)
PCA_TRAIN_MAX = 20_000  # training images PCA is fitted on (seeded subsample)
GENERATED_MAX = 10_000  # samples for the Fréchet distance (at most the test-set size)
IW_SAMPLES = 1000
IW_CHUNK = 2048  # (sample, image) pairs decoded per pass: small enough for the outputs to stay in cache
IW_CHUNK_CONV = 512  # a conv decoder's passes on the CPU: its activations are larger, so a smaller pass stays in cache
KNN_K = 5


# ----- pixel metrics -----


def psnr_per_image(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """PSNR in dB between (N, C, H, W) images in [0, 1]; identical images give ``PSNR_CAP_DB`` (100 dB)."""
    mse = (a.float() - b.float()).pow(2).flatten(1).mean(1).clamp_min(10 ** (-PSNR_CAP_DB / 10))
    return (10 * torch.log10(1.0 / mse)).double().numpy()


def ssim_per_image(a: torch.Tensor, b: torch.Tensor, batch_size: int = 1000) -> np.ndarray:
    """SSIM (Wang et al. 2004) between (N, C, H, W) images in [0, 1], as scikit-image's
    ``structural_similarity(data_range=1, win_size=7)`` computes it, in float64 for a batch at a time.

    scikit-image averages the SSIM map over the pixels whose 7x7 window lies inside the image (it crops the
    border the filter padded), which are the windows of an unpadded 7x7 average pool; the variances are the
    sample ones (N - 1). RGB images average over channels, as with ``channel_axis``; images under 7 pixels a
    side use the largest odd window that fits, and under 3 pixels SSIM is undefined (NaN). About 7x faster
    than calling scikit-image per image (the tests compare the two).
    """
    n, _, h, w = a.shape
    win = min(7, h, w)
    win -= 1 - win % 2  # odd
    if win < 3:
        return np.full(n, np.nan)
    cov_norm = win * win / (win * win - 1)
    c1, c2 = 0.01**2, 0.03**2

    def pool(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(t, win, stride=1)

    out = []
    for start in range(0, n, batch_size):
        x, y = a[start : start + batch_size].double(), b[start : start + batch_size].double()
        ux, uy = pool(x), pool(y)
        vx = cov_norm * (pool(x * x) - ux * ux)
        vy = cov_norm * (pool(y * y) - uy * uy)
        vxy = cov_norm * (pool(x * y) - ux * uy)
        ssim = (2 * ux * uy + c1) * (2 * vxy + c2) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
        out.append(ssim.flatten(1).mean(1))
    return torch.cat(out).numpy() if out else np.empty(0)


def _unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1]; floating tensors keep their dtype."""
    if x.dtype == torch.uint8:
        return x.float().div(255)
    return x if x.is_floating_point() else x.float()


@contextlib.contextmanager
def single_threaded(blas_only: bool = False) -> Iterator[None]:
    """One BLAS/OpenMP thread for scikit-learn: numpy's and scipy's OpenBLAS pools beside torch's
    spin-wait against each other, which made a logistic regression 20x slower on two busy cores.
    ``blas_only``: one BLAS thread, OpenMP's as they are (scikit-learn's own parallel loops, e.g. k-NN's)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas" if blas_only else None):
        yield


@torch.inference_mode()
def reconstruction_metrics(
    model: Autoencoder, images: torch.Tensor, batch_size: int = 500, *, world: World | None = None
) -> dict[str, Any]:
    """How well the test images come back through the code (posterior mean for a VAE).

    ``bce_per_image_nats`` is the Bernoulli NLL of the mean reconstruction, summed over pixels,
    whatever likelihood the run was trained with, so runs can be compared. With a ``world`` of
    several processes each scores its share of the batches and all gather every image's scores.
    """
    model.eval()

    def scores(start: int, stop: int) -> tuple[np.ndarray, ...]:
        x = model.prepare(images[start:stop])
        logits = model.decode(model.encode(x).mode())  # (B, C, H, W)
        recon = torch.sigmoid(logits)
        return (
            (recon - x).pow(2).flatten(1).mean(1).double().numpy(),
            reconstruction_nll(logits, x, "bernoulli", 1.0).double().numpy(),
            psnr_per_image(recon, x),
            ssim_per_image(recon, x),
        )

    mse, bce, psnr, ssim = (world or World()).map_batches(scores, len(images), batch_size)
    return {
        "mse_per_pixel": float(mse.mean()),
        "bce_per_image_nats": float(bce.mean()),
        "psnr_db": float(psnr.mean()),
        "ssim": _nan_to_none(float(ssim.mean())),
    }


# ----- the VAE: ELBO, importance-weighted likelihood, KL, active units -----


def log_likelihood_fn(likelihood: str, gaussian_std: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """log p(x | z) per image from decoder logits, as trained: (..., C, H, W) logits and targets
    that broadcast -> (...)."""
    return lambda logits, target: -reconstruction_nll(logits, target, likelihood, gaussian_std)


@torch.inference_mode()
def importance_weighted_log_likelihood(
    encode: Callable[[torch.Tensor], Any],
    decode: Callable[[torch.Tensor], torch.Tensor],
    log_likelihood: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    k: int = IW_SAMPLES,
    *,
    chunk_size: int = IW_CHUNK,
    seed: int = 0,
    world: World | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image IW estimate of log p(x) and the ELBO, in nats (float64, shape (N,)).

    log p(x) ≈ log (1/K) Σ_k p(x|z_k) p(z_k) / q(z_k|x),  z_k ~ q(z|x)   (Burda et al. 2015, Eq. 8):
    a lower bound that rises to log p(x) as K grows; K = 1 is the ELBO in expectation.

    Parameters
    ----------
    encode : callable
        (B, ...) -> a :class:`aekit.latent.DiagonalGaussian` q(z|x) over (B, D).
    decode : callable
        (M, D) -> decoder outputs for (M, ...) targets.
    log_likelihood : callable
        (outputs (S, B, ...), targets (B, ...)) -> (S, B) log p(x|z), broadcasting the targets
        over the samples, e.g. :func:`log_likelihood_fn`.
    x : tensor
        (N, ...) inputs; uint8 images are scaled to [0, 1].
    k : int
        Importance samples per input.
    chunk_size : int
        (sample, input) pairs decoded per forward pass: bounds memory at about
        ``chunk_size`` decoded outputs whatever K and N are.
    seed : int
        Seed of the samples z_k.
    world : World, optional
        Processes to share the inputs out over: each estimates its share of the outer batches (drawing, and
        dropping, the samples of the others', so that every input gets the samples it gets in one process)
        and all gather the results.

    Returns
    -------
    (log_px, elbo) : two float64 tensors of shape (N,)
        The ELBO uses the closed-form KL and the mean of the K reconstruction terms.
    """
    if k < 1:
        raise AekitError(f"--iw-samples must be >= 1 (got {k})")
    if chunk_size < 1:
        raise AekitError(f"the IW chunk size must be >= 1 (got {chunk_size})")
    tune_cpu()
    generator = torch.Generator().manual_seed(seed)
    batch = max(1, chunk_size // k)  # inputs per outer step
    per_pass = max(1, min(k, chunk_size // batch))  # samples per forward pass

    def samples(q) -> Iterator[tuple[int, torch.Tensor]]:
        for s0 in range(0, k, per_pass):
            yield s0, torch.randn((min(per_pass, k - s0), *q.mean.shape), generator=generator, dtype=q.mean.dtype)

    def estimate(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        xb = _unit(x[start:stop])  # (B, ...)
        q = encode(xb)
        b = len(xb)
        log_w = torch.empty(k, b, dtype=torch.float64)
        recon = torch.zeros(b, dtype=torch.float64)
        for s0, eps in samples(q):
            s = len(eps)
            z = q.mean + q.std * eps  # (S, B, D)
            outputs = decode(z.reshape(s * b, -1))  # (S*B, ...)
            log_lik = log_likelihood(outputs.view(s, b, *outputs.shape[1:]), xb)  # (S, B): broadcast, no copies of xb
            # log w = log p(x|z) + log p(z) - log q(z|x)
            log_w[s0 : s0 + s] = (log_lik + standard_normal_log_prob(z) - q.log_prob(z)).double()
            recon += log_lik.double().sum(0)
        log_px = torch.logsumexp(log_w, 0) - math.log(k)  # (K, B) -> (B,)
        return log_px.numpy(), (recon / k - q.kl().double()).numpy()

    def skip(start: int, stop: int) -> None:  # another process's inputs: draw their samples all the same
        for _ in samples(encode(_unit(x[start:stop]))):
            pass

    parts = (world or World()).map_batches(estimate, len(x), batch, skip=skip)
    if not parts:
        return torch.empty(0, dtype=torch.float64), torch.empty(0, dtype=torch.float64)
    return torch.from_numpy(parts[0]), torch.from_numpy(parts[1])


def active_units(means: torch.Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD) -> tuple[int, list[float]]:
    """Burda et al. 2015: unit u is active if Cov_x(E_q[u|x]) > threshold. (N, D) posterior means ->
    (count, per-unit variance)."""
    variance = means.double().var(0, unbiased=True) if len(means) > 1 else torch.zeros(means.shape[1])
    return int((variance > threshold).sum()), [float(v) for v in variance]


def iw_decoding(model: Autoencoder) -> tuple[Callable[[torch.Tensor], torch.Tensor], int]:
    """``(decode, chunk_size)`` that an IW estimate of ``model`` runs fastest with, computing the same numbers.

    A conv decoder on the CPU decodes from a copy in channels-last memory format (oneDNN's faster layout for
    transposed convolutions) in passes of ``IW_CHUNK_CONV`` pairs: on 2 cores, K = 5000 for a 64-128-256 conv
    VAE took 0.8 s per image instead of 1.6 s. Other models: ``model.decode`` and ``IW_CHUNK``."""
    if model.config.arch != "conv" or next(model.parameters()).device.type != "cpu":
        return model.decode, IW_CHUNK
    fast = copy.deepcopy(model)
    fast.decoder.to(memory_format=torch.channels_last)
    return fast.decode, IW_CHUNK_CONV


@torch.inference_mode()
def variational_metrics(
    model: Autoencoder,
    images: torch.Tensor,
    *,
    iw_samples: int = IW_SAMPLES,
    chunk_size: int | None = None,
    seed: int = 0,
    batch_size: int = 1000,
    world: World | None = None,
) -> dict[str, Any]:
    """Negative ELBO, IW-NLL (nats per image and bits per dimension), KL per dimension, active units.

    With a ``world`` of several processes the IW estimate is shared out over them."""
    model.eval()
    objective = model.run_config.objective if hasattr(model, "run_config") else None
    likelihood = objective.likelihood if objective else "bernoulli"
    std = objective.gaussian_std if objective else 0.1
    means, kl_dims = [], []
    for start in range(0, len(images), batch_size):
        q = model.encode(model.prepare(images[start : start + batch_size]))
        means.append(q.mean)
        kl_dims.append(q.kl_per_dim().double().sum(0))
    means_all = torch.cat(means)
    kl_per_dim = (torch.stack(kl_dims).sum(0) / len(images)).tolist()
    n_active, variance = active_units(means_all)
    decode, fastest = iw_decoding(model)
    chunk_size = fastest if chunk_size is None else chunk_size
    log_px, elbo = importance_weighted_log_likelihood(
        model.encode, decode, log_likelihood_fn(likelihood, std),
        torch.as_tensor(images), iw_samples, chunk_size=chunk_size, seed=seed, world=world,
    )
    n_dims = math.prod(model.config.image_shape)
    nll = float(-log_px.mean())
    if likelihood == "bernoulli":
        note = (
            "Bernoulli likelihood of the image as given: the continuous pixel values in [0, 1] are scored by "
            "BCE, which is not a normalised density over images; compare between aekit runs on the same data, "
            "not with published NLLs on binarised MNIST"
        )
    else:
        note = (
            f"Gaussian density (std {std:g}) of the continuous pixel values in [0, 1], not discretised: a "
            "differential NLL that may be negative; bits per dimension are not comparable with discrete-data numbers"
        )
    order = sorted(range(len(kl_per_dim)), key=lambda j: -kl_per_dim[j])
    return {
        "neg_elbo_nats": float(-elbo.mean()),
        "iw_nll_nats": nll,
        "iw_nll_bits_per_dim": nll / (n_dims * math.log(2)),
        "neg_elbo_bits_per_dim": float(-elbo.mean()) / (n_dims * math.log(2)),
        "iw_samples": iw_samples,
        "likelihood": likelihood,
        "likelihood_note": note,
        "kl_nats": float(sum(kl_per_dim)),
        "kl_per_dim_nats": [round(v, 5) for v in kl_per_dim],
        "dims_by_kl": order,
        "active_units": n_active,
        "active_unit_threshold": ACTIVE_UNIT_THRESHOLD,
        "dims_kl_above_0.1": sum(v > 0.1 for v in kl_per_dim),  # a second, stricter view of posterior collapse
        "posterior_mean_variance": [round(v, 5) for v in variance],
        "latent_dim": len(kl_per_dim),
    }


# ----- sparse codes -----


def sparsity_metrics(codes: torch.Tensor, target: float | None = None) -> dict[str, Any]:
    """Activation statistics of (N, D) sigmoid codes.

    A unit is *dead* if its activation never exceeds ``DEAD_ACTIVATION`` (0.1) on any test image:
    it never turns on, so it carries no information.
    """
    codes = codes.double()
    per_unit_mean = codes.mean(0)
    per_unit_max = codes.max(0).values if len(codes) else torch.zeros(codes.shape[1])
    dead = [int(j) for j in torch.nonzero(per_unit_max <= DEAD_ACTIVATION).flatten()]
    return {
        "mean_activation": float(codes.mean()),
        "target_activation": target,
        "fraction_below_0.05": float((codes < LOW_ACTIVATION).double().mean()),
        "units_on_per_image": float((codes > 0.5).double().sum(1).mean()),
        "dead_units": len(dead),
        "dead_unit_indices": dead,
        "dead_definition": f"activation never above {DEAD_ACTIVATION} on the test set",
        "mean_activation_per_unit": [round(float(v), 5) for v in per_unit_mean],
        "latent_dim": codes.shape[1],
    }


# ----- denoising -----


def denoising_metrics(
    model: Autoencoder, images: torch.Tensor, *, trained_noise_std: float = 0.0,
    levels: tuple[float, ...] = DENOISE_LEVELS, seed: int = 0,
) -> dict[str, Any]:
    """PSNR of noisy and denoised test images against the clean ones, per Gaussian noise level (fixed seed)."""
    clean = model.prepare(images)
    rows = []
    for sigma in sorted({*levels, *([trained_noise_std] if trained_noise_std > 0 else [])}):
        noisy, denoised = model.denoise(images, noise_std=sigma, seed=seed)
        noisy_db, denoised_db = psnr_per_image(noisy, clean).mean(), psnr_per_image(denoised, clean).mean()
        rows.append({
            "noise_std": sigma,
            "psnr_noisy_db": float(noisy_db),
            "psnr_denoised_db": float(denoised_db),
            "gain_db": float(denoised_db - noisy_db),
            "trained_level": sigma == trained_noise_std,
        })
    return {"trained_noise_std": trained_noise_std, "seed": seed, "levels": rows}


# ----- the linear baseline -----


def fit_pca(train_images: torch.Tensor, n_components: int, *, seed: int = 0, max_train: int = PCA_TRAIN_MAX):
    """scikit-learn PCA on (a seeded subsample of at most ``max_train``) flattened training images in [0, 1]."""
    from sklearn.decomposition import PCA

    x = _flat(_subsample(train_images, max_train, seed))
    k = max(1, min(n_components, x.shape[0], x.shape[1]))
    with single_threaded():
        return PCA(n_components=k, random_state=seed).fit(x)


def pca_metrics(pca, test_images: torch.Tensor, model_mse: float | None = None) -> dict[str, Any]:
    """Reconstruction quality of PCA on the test images (clipped to [0, 1]), and whether the model beats it."""
    x = _flat(test_images)
    with single_threaded():
        recon = np.clip(pca.inverse_transform(pca.transform(x)), 0, 1).astype(np.float32)
    shape = tuple(test_images.shape)
    recon_t, x_t = torch.from_numpy(recon).reshape(shape), torch.from_numpy(x).reshape(shape)
    mse = float(((recon - x) ** 2).mean())
    out = {
        "n_components": int(pca.n_components_),
        "explained_variance": float(pca.explained_variance_ratio_.sum()),
        "mse_per_pixel": mse,
        "psnr_db": float(psnr_per_image(recon_t, x_t).mean()),
        "ssim": _nan_to_none(float(ssim_per_image(recon_t, x_t).mean())),
    }
    if model_mse is not None:
        out["model_mse_per_pixel"] = model_mse
        out["beats_pca"] = bool(model_mse < mse)
        out["mse_ratio_model_to_pca"] = model_mse / mse if mse > 0 else None
    return out


def _pca_codes(pca, train_images: torch.Tensor, test_images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    with single_threaded():
        return pca.transform(_flat(train_images)), pca.transform(_flat(test_images))


def _flat(images: torch.Tensor) -> np.ndarray:
    return _unit(images).flatten(1).numpy()


def _subsample(x: torch.Tensor, n: int, seed: int, labels: torch.Tensor | None = None):
    if len(x) <= n:
        return x if labels is None else (x, labels)
    index = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]
    return x[index] if labels is None else (x[index], labels[index])


# ----- representation quality -----


def representation_metrics(
    features: dict[str, tuple[np.ndarray, np.ndarray]],
    train_labels: np.ndarray,
    test_labels: np.ndarray,
    *,
    max_train: int = PROBE_TRAIN_MAX,
    seed: int = 0,
) -> dict[str, Any]:
    """Linear-probe and 5-NN test accuracy for each named (train, test) feature set.

    The probe is scikit-learn's LogisticRegression on standardised features; k-NN uses Euclidean
    distance in the unstandardised space. Both fit on at most ``max_train`` training points
    (the same seeded subsample for every feature set).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n = len(train_labels)
    index = np.arange(n)
    if n > max_train:
        index = np.sort(np.random.default_rng(seed).choice(n, max_train, replace=False))
    y_train, y_test = np.asarray(train_labels)[index], np.asarray(test_labels)
    out: dict[str, Any] = {"train_points": len(index), "test_points": len(y_test), "knn_k": KNN_K}
    if len(np.unique(y_train)) < 2:
        raise AekitError("the training labels have a single class: nothing to probe")
    for name, (train_x, test_x) in features.items():
        train_x = np.asarray(train_x, dtype=np.float32)[index]
        test_x = np.asarray(test_x, dtype=np.float32)
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=200, random_state=seed))
        with single_threaded(), warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            probe.fit(train_x, y_train)
            probe_accuracy = float(probe.score(test_x, y_test))
        knn = KNeighborsClassifier(n_neighbors=min(KNN_K, len(y_train))).fit(train_x, y_train)
        with single_threaded(blas_only=True):  # k-NN shares its queries out over OpenMP threads: 2.9 -> 1.4 s here
            knn_accuracy = float(knn.score(test_x, y_test))
        out[name] = {"dim": int(train_x.shape[1]), "linear_probe_accuracy": probe_accuracy,
                     "knn_accuracy": knn_accuracy}
    return out


# ----- generation -----


def generation_metrics(
    model: Autoencoder, splits: Splits, classifier, *, n_samples: int = GENERATED_MAX, seed: int = 0
) -> dict[str, Any]:
    """Fréchet distances, in the feature classifier's space, to the test images of

    * ``frechet_classifier_distance``: model samples (``model.sample``: the prior for a VAE, a full-covariance
      Gaussian fitted to the training codes otherwise);
    * ``frechet_diagonal_gaussian``: decoded draws from a *diagonal* Gaussian fitted to the training codes, and
    * ``frechet_midpoints``: decoded midpoints between the codes of random pairs of test images -- two probes of
      latent structure: a latent whose code distribution is close to a factorised Gaussian, with no holes
      between codes, does well on both;
    * references: the test reconstructions, and as many real training images (the finite-sample floor).
    """
    from .metrics.frechet import frechet_distance

    test = splits.test.images
    n = min(n_samples, len(test))
    if n < 2:
        raise AekitError("need at least 2 test images for a Fréchet distance")
    generator = torch.Generator().manual_seed(seed)
    test_feats = classifier.embed(test[:n])
    train_codes = model.embed(_subsample(splits.train.images, max(n, 2), seed))
    eps = torch.randn(n, train_codes.shape[1], generator=generator)
    diagonal = train_codes.mean(0) + train_codes.std(0) * eps
    if model.config.code_activation == "sigmoid":
        diagonal = diagonal.clamp(0.0, 1.0)
    test_codes = model.embed(test[:n])
    partner = torch.randperm(n, generator=generator)
    midpoints = 0.5 * (test_codes + test_codes[partner])  # (n, D)

    def distance(images: torch.Tensor) -> float:
        return frechet_distance(classifier.embed(images), test_feats)

    return {
        "frechet_classifier_distance": distance(model.sample(n, seed=seed)),
        "frechet_diagonal_gaussian": distance(model.decode_images(diagonal)),
        "frechet_midpoints": distance(model.decode_images(midpoints)),
        "frechet_reconstructions": distance(model.reconstruct(test[:n])),
        "frechet_train_images": distance(_subsample(splits.train.images, n, seed)),
        "images": n,
        "sample_source": (
            "the prior N(0, I)" if model.is_variational else "a Gaussian fitted to the training codes"
        ),
    }


# ----- all of it -----


def evaluate(
    model: Autoencoder,
    splits: Splits,
    *,
    iw_samples: int = IW_SAMPLES,
    chunk_size: int | None = None,
    limit: int | None = None,
    seed: int = 0,
    probe_train_max: int = PROBE_TRAIN_MAX,
    data_name: str | None = None,
    classifier_dir: str | Path | None = None,
    frechet: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Every metric that applies to ``model``, on ``splits.test`` (the first ``limit`` images).

    Parameters
    ----------
    model : Autoencoder
        A trained model (e.g. from :func:`aekit.load`).
    splits : Splits
        Its data: the training split feeds PCA, the probes and the feature classifier.
    iw_samples : int
        Importance samples K per test image for the IW-NLL of a VAE.
    chunk_size : int, optional
        (sample, image) pairs per forward pass of the IW estimate (memory bound); default: what suits the
        model (see :func:`iw_decoding`).
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

    Returns
    -------
    dict
        One entry per metric group, ``skipped`` (group -> reason) and ``seconds`` (group -> time).

    Examples
    --------
    >>> model = aekit.load("runs/vae-mlp-mnist-5k-1")                          # doctest: +SKIP
    >>> m = aekit.evaluate(model, aekit.load_dataset("mnist-5k"), iw_samples=100)  # doctest: +SKIP
    >>> m["reconstruction"]["psnr_db"], m["variational"]["iw_nll_nats"]          # doctest: +SKIP
    """
    tune_cpu()
    log = log or (lambda message: None)
    world = current()  # under torchrun (see evaluate_run): the expensive groups are shared out
    full_test = splits.test  # the feature classifier's accuracy is measured on all of it
    world.on_main(lambda: _check_test_split(model, splits, limit))
    if limit is not None:
        splits = Splits(splits.train, splits.test.subset(torch.arange(min(limit, len(splits.test)))))
    config = getattr(model, "run_config", None)
    objective = config.objective if config else None
    data_name = data_name or (config.data.data if config else "data")
    test = splits.test.images
    out: dict[str, Any] = {
        "format": METRICS_FORMAT,
        "format_version": METRICS_VERSION,
        "run": _run_summary(model),
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

    group("reconstruction", lambda: reconstruction_metrics(model, test, world=world), sharded=True)
    if model.is_variational:
        group("variational", lambda: variational_metrics(
            model, test, iw_samples=iw_samples, chunk_size=chunk_size, seed=seed, world=world
        ), sharded=True)
    else:
        out["skipped"]["variational"] = "deterministic latent: no ELBO or likelihood"
    if model.config.code_activation == "sigmoid":
        target = objective.sparsity_target if objective and objective.sparsity == "kl" else None
        group("sparsity", lambda: sparsity_metrics(model.embed(test), target))
    else:
        out["skipped"]["sparsity"] = "codes are not sigmoid activations"
    trained_noise = objective.noise_std if objective else 0.0
    group("denoising", lambda: denoising_metrics(model, test, trained_noise_std=trained_noise, seed=seed))

    pca_holder: dict[str, Any] = {}

    def pca_group() -> dict:
        pca_holder["pca"] = pca = fit_pca(splits.train.images, model.config.latent_dim, seed=seed)
        return pca_metrics(pca, test, out["reconstruction"]["mse_per_pixel"])

    group("pca", pca_group)
    labelled = splits.train.labels is not None and splits.test.labels is not None
    if labelled and len(torch.unique(splits.train.labels)) > 1:
        def representation_group() -> dict:
            train_x = _subsample(splits.train.images, probe_train_max, seed)
            train_y = _subsample(splits.train.labels, probe_train_max, seed)
            pca = pca_holder["pca"]
            features = {
                "codes": (model.embed(train_x).numpy(), model.embed(test).numpy()),
                "pca": _pca_codes(pca, train_x, test),
                "pixels": (_flat(train_x), _flat(test)),
            }
            return representation_metrics(features, train_y.numpy(), splits.test.labels.numpy(),
                                          max_train=probe_train_max, seed=seed)

        group("representation", representation_group)
    else:
        out["skipped"]["representation"] = "the data has no labels (or one class)"
    if not frechet:
        out["skipped"]["generation"] = "not asked for"
    elif labelled and len(torch.unique(splits.train.labels)) > 1 and len(test) >= 2:
        from .metrics.frechet import dataset_key, load_or_train_classifier

        def generation_group() -> dict:
            classifier, info = load_or_train_classifier(
                data_name, splits.train, full_test, data_dir=classifier_dir, seed=0, log=log
            )
            result = generation_metrics(model, splits, classifier, seed=seed)
            result["classifier"] = {
                "key": dataset_key(data_name, splits.train.shape),
                "test_accuracy": info.get("test_accuracy"),
                "feature_dim": info.get("feature_dim"),
            }
            return result

        group("generation", generation_group)
    elif len(test) < 2:
        out["skipped"]["generation"] = "a Fréchet distance needs at least 2 test images"
    else:
        out["skipped"]["generation"] = "the feature classifier needs labelled data"
    out["seconds"]["total"] = round(sum(out["seconds"].values()), 3)
    return out


def _check_test_split(model: Autoencoder, splits: Splits, limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise AekitError(f"--limit must be >= 1 (got {limit})")
    if len(splits.test) == 0:
        raise AekitError("the test split holds no images")
    if splits.test.shape != model.config.image_shape:
        raise AekitError(f"the data has images of {splits.test.shape}; this model takes {model.config.image_shape}")


def _run_summary(model: Autoencoder) -> dict[str, Any]:
    config = getattr(model, "run_config", None)
    m = model.config
    return {
        "family": config.family if config else None,
        "arch": m.arch,
        "latent": m.latent,
        "latent_dim": m.latent_dim,
        "code_activation": m.code_activation,
        "image_shape": list(m.image_shape),
        "epoch": getattr(model, "epoch", None),
        "likelihood": config.objective.likelihood if config else None,
    }


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else value


# ----- run folders -----


def load_run_splits(
    model: Autoencoder, *, data: str | None = None, data_dir: str | None = None, progress: bool = True
) -> Splits:
    """The run's train/test splits (or ``data``'s), conformed to the model's channels and image size."""
    d, t = model.run_config.data, model.run_config.train
    c, h, w = model.config.image_shape
    return load_dataset(
        data or d.data, data_dir=data_dir or d.data_dir, channels=c, image_size=(h, w),
        test_split=d.test_split, seed=t.seed, progress=progress, binarize=d.binarize,
    )


def metrics_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / METRICS_FILE


def read_metrics(run_dir: str | os.PathLike) -> dict | None:
    """The run's ``metrics.json`` if it exists and is newer than its weights, else None."""
    path, weights = metrics_path(run_dir), Path(run_dir) / ckpt.MODEL
    if not path.is_file():
        return None
    try:
        if weights.exists() and path.stat().st_mtime_ns < weights.stat().st_mtime_ns:
            return None
        metrics = ckpt.read_json(path, "metrics file")
    except (OSError, AekitError):
        return None
    if not isinstance(metrics, dict) or (metrics.get("format"), metrics.get("format_version")) != (
        METRICS_FORMAT, METRICS_VERSION
    ):
        return None
    return metrics


def evaluate_run(
    run_dir: str | os.PathLike,
    *,
    data: str | None = None,
    data_dir: str | None = None,
    splits: Splits | None = None,
    iw_samples: int = IW_SAMPLES,
    chunk_size: int | None = None,
    limit: int | None = None,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate a run folder and write ``RUN/metrics.json`` atomically; returns the metrics.

    ``splits`` replaces loading the run's data (e.g. data given to :func:`aekit.train` directly).
    Under torchrun the processes share the expensive groups out (see the module docstring); rank 0
    reads the run folder and writes the metrics, and every process returns them.
    """

    def load_model() -> Autoencoder:
        if iw_samples < 1:
            raise AekitError(f"--iw-samples must be >= 1 (got {iw_samples})")
        return ckpt.load(run_dir)

    with process_group("cpu") as world:
        if not world.is_main:
            progress, log = False, None
        model = world.on_main(load_model)
        if splits is None:
            splits = world.main_first(lambda: load_run_splits(model, data=data, data_dir=data_dir, progress=progress))
        data_name = data or model.run_config.data.data
        metrics = evaluate(
            model, splits, iw_samples=iw_samples, chunk_size=chunk_size, limit=limit, seed=seed,
            data_name=data_name, log=log,
        )
        world.on_main(lambda: ckpt.atomic_write_json(metrics_path(run_dir), metrics))
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
) -> dict[str, Any]:
    """The run's ``metrics.json`` if it is newer than the weights and matches every option given here;
    otherwise evaluate (on ``splits`` if given; options not given take their defaults) and write it."""
    metrics = read_metrics(run_dir)
    if metrics is not None:
        settings = metrics.get("settings", {})
        wanted = {"data": data, "iw_samples": iw_samples, "limit": limit, "seed": seed}
        if all(v is None or settings.get(k) in (v, None if k == "iw_samples" else v) for k, v in wanted.items()):
            return metrics
    return evaluate_run(
        run_dir, data=data, data_dir=data_dir, splits=splits, iw_samples=iw_samples or IW_SAMPLES,
        limit=limit, seed=seed or 0, progress=progress, log=log,
    )


# ----- printing -----


def summary_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) pairs for the headline numbers of a metrics dict."""
    rows: list[tuple[str, str]] = []
    r = metrics.get("reconstruction", {})
    if r:
        rows += [
            ("MSE per pixel", f"{r['mse_per_pixel']:.5f}"),
            ("PSNR (dB)", f"{r['psnr_db']:.2f}"),
            ("SSIM", _fmt(r.get("ssim"), ".4f")),
            ("BCE per image (nats)", f"{r['bce_per_image_nats']:.2f}"),
        ]
    p = metrics.get("pca", {})
    if p:
        rows += [
            (f"PCA-{p['n_components']} MSE / PSNR", f"{p['mse_per_pixel']:.5f} / {p['psnr_db']:.2f} dB"),
            ("beats PCA", "yes" if p.get("beats_pca") else "no"),
        ]
    v = metrics.get("variational", {})
    if v:
        rows += [
            ("negative ELBO (nats)", f"{v['neg_elbo_nats']:.2f}"),
            (f"IW-NLL, K={v['iw_samples']} (nats)", f"{v['iw_nll_nats']:.2f}"),
            ("IW-NLL (bits/dim)", f"{v['iw_nll_bits_per_dim']:.4f}"),
            ("active units", f"{v['active_units']} / {v['latent_dim']}"),
            ("dims with KL > 0.1 nats", f"{v.get('dims_kl_above_0.1')} / {v['latent_dim']}"),
        ]
    s = metrics.get("sparsity", {})
    if s:
        target = s.get("target_activation")
        rows += [
            ("mean activation",
             f"{s['mean_activation']:.4f}" + (f" (target {target:g})" if target is not None else "")),
            ("activations < 0.05", f"{100 * s['fraction_below_0.05']:.1f}%"),
            ("dead units", f"{s['dead_units']} / {s['latent_dim']}"),
        ]
    d = metrics.get("denoising", {})
    for level in d.get("levels", []):
        rows.append((f"denoise σ={level['noise_std']:g} (dB)",
                     f"{level['psnr_noisy_db']:.2f} -> {level['psnr_denoised_db']:.2f}"))
    rep = metrics.get("representation", {})
    for name in ("codes", "pca", "pixels"):
        if name in rep:
            rows.append((f"probe / 5-NN, {name} ({rep[name]['dim']}-d)",
                         f"{rep[name]['linear_probe_accuracy']:.3f} / {rep[name]['knn_accuracy']:.3f}"))
    g = metrics.get("generation", {})
    if g:
        rows += [
            ("Fréchet classifier dist., samples", f"{g['frechet_classifier_distance']:.2f}"),
            ("  ... diagonal Gaussian / midpoints",
             f"{g['frechet_diagonal_gaussian']:.2f} / {g['frechet_midpoints']:.2f}"),
            ("  ... reconstructions / real", f"{g['frechet_reconstructions']:.2f} / {g['frechet_train_images']:.2f}"),
        ]
    return rows


def format_table(metrics: dict[str, Any]) -> str:
    rows = summary_rows(metrics)
    width = max((len(label) for label, _ in rows), default=0) + 2
    lines = [f"{label:{width}s}{value}" for label, value in rows]
    for name, reason in metrics.get("skipped", {}).items():
        lines.append(f"{'(' + name + ')':{width}s}skipped: {reason}")
    lines.append(f"{'seconds':{width}s}{metrics.get('seconds', {}).get('total', 0):.1f}")
    return "\n".join(lines)


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)
