"""How good a model's samples are: Fréchet distances in a feature classifier's space (:mod:`.frechet`)."""

from __future__ import annotations

from typing import Any

import torch

from ..core.model import Autoencoder
from ..data import Splits
from ..errors import AekitError
from .baselines import subsample
from .frechet import frechet_distance

GENERATED_MAX = 10_000  # samples for the Fréchet distance (at most the test-set size)


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

    test = splits.test.images
    n = min(n_samples, len(test))
    if n < 2:
        raise AekitError("need at least 2 test images for a Fréchet distance")
    generator = torch.Generator().manual_seed(seed)
    test_feats = classifier.embed(test[:n])
    train_codes = model.embed(subsample(splits.train.images, max(n, 2), seed))  # (n, D) or (n, C, h, w)
    eps = torch.randn(n, *train_codes.shape[1:], generator=generator)
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
        "frechet_train_images": distance(subsample(splits.train.images, n, seed)),
        "images": n,
        "sample_source": (
            "the prior N(0, I)" if model.is_variational else "a Gaussian fitted to the training codes"
        ),
    }
