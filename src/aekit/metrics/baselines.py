"""The baselines a model's codes must beat: PCA with as many components, and raw pixels, as reconstructions
and as features for a linear probe and k-NN."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from ..cpu import single_threaded
from ..data import to_unit
from ..errors import AekitError
from .pixels import psnr_per_image, ssim_per_image
from .reconstruction import nan_to_none

PCA_TRAIN_MAX = 20_000  # training images PCA is fitted on (seeded subsample)
PROBE_TRAIN_MAX = 10_000  # training codes used by the linear probe and k-NN (seeded subsample)
KNN_K = 5


def fit_pca(train_images: torch.Tensor, n_components: int, *, seed: int = 0, max_train: int = PCA_TRAIN_MAX):
    """scikit-learn PCA on (a seeded subsample of at most ``max_train``) flattened training images in [0, 1]."""
    from sklearn.decomposition import PCA

    x = flat(subsample(train_images, max_train, seed))
    k = max(1, min(n_components, x.shape[0], x.shape[1]))
    with single_threaded():
        return PCA(n_components=k, random_state=seed).fit(x)


def pca_metrics(pca, test_images: torch.Tensor, model_mse: float | None = None) -> dict[str, Any]:
    """Reconstruction quality of PCA on the test images (clipped to [0, 1]), and whether the model beats it."""
    x = flat(test_images)
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
        "ssim": nan_to_none(float(ssim_per_image(recon_t, x_t).mean())),
    }
    if model_mse is not None:
        out["model_mse_per_pixel"] = model_mse
        out["beats_pca"] = bool(model_mse < mse)
        out["mse_ratio_model_to_pca"] = model_mse / mse if mse > 0 else None
    return out


def pca_codes(pca, train_images: torch.Tensor, test_images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    with single_threaded():
        return pca.transform(flat(train_images)), pca.transform(flat(test_images))


def flat(images: torch.Tensor) -> np.ndarray:
    return to_unit(images).flatten(1).numpy()


def subsample(x: torch.Tensor, n: int, seed: int, labels: torch.Tensor | None = None):
    if len(x) <= n:
        return x if labels is None else (x, labels)
    index = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]
    return x[index] if labels is None else (x[index], labels[index])


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
        with single_threaded(blas_only=True):  # k-NN shares its queries out over OpenMP threads (faster)
            knn_accuracy = float(knn.score(test_x, y_test))
        out[name] = {"dim": int(train_x.shape[1]), "linear_probe_accuracy": probe_accuracy,
                     "knn_accuracy": knn_accuracy}
    return out
