"""A Gaussian mixture over a trained autoencoder's codes: a density fitted after training, to sample from.

A plain autoencoder has no prior, and a VAE's prior N(0, I) leaves holes where its posterior means do not
reach; a density fitted to the training codes after training follows the codes instead (Ghosh et al. 2020, "From
variational to deterministic autoencoders", who fit a Gaussian mixture to a regularized AE's codes). One Gaussian
(the ``code_mean`` / ``code_scale_tril`` every checkpoint keeps) is the special case K = 1; more components follow
codes that sit in clusters (faces of different people) where one Gaussian puts mass between them.

The mixture is over the whole code: a vector code's D numbers, or a spatial latent's C x h x w map at the training
size, flattened. The fit is scikit-learn's EM (full covariances, k-means initialisation, seeded), the draws are
torch's, so a seed gives the same samples on every machine the fit is repeated on.

>>> mixture = CodeMixture.fit(model.embed(train_images), components=10, seed=0)   # doctest: +SKIP
>>> images = model.decode_images(mixture.sample(64, seed=0))                      # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import AekitError

MAX_NUMBERS = 2048  # the most numbers a code may have for a full-covariance mixture (each component holds D x D)
RELATIVE_REGULARIZATION = 1e-4  # added to every covariance's diagonal, times the codes' mean variance


@dataclass(frozen=True)
class CodeMixture:
    """K Gaussians over codes of ``shape``: ``weights`` (K,), ``means`` (K, D), ``scale_trils`` (K, D, D) (the
    Cholesky factors of the covariances), float64."""

    weights: torch.Tensor
    means: torch.Tensor
    scale_trils: torch.Tensor
    shape: tuple[int, ...]

    @property
    def components(self) -> int:
        return len(self.weights)

    @classmethod
    def fit(cls, codes: torch.Tensor, components: int, *, seed: int = 0, max_iter: int = 200) -> CodeMixture:
        """Fit ``components`` Gaussians to (N, ...) codes by EM (full covariances; the best of one k-means start)."""
        from sklearn.mixture import GaussianMixture

        if isinstance(components, bool) or not isinstance(components, int) or components < 1:
            raise AekitError(f"the number of mixture components must be an integer >= 1 (got {components!r})")
        if codes.dim() < 2 or not len(codes):
            raise AekitError("fitting a mixture needs a batch of codes, (N, D) or (N, C, h, w)")
        shape = tuple(codes.shape[1:])
        flat = codes.detach().reshape(len(codes), -1).double().cpu()
        d = flat.shape[1]
        if d > MAX_NUMBERS:
            raise AekitError(f"a code of {d:,} numbers is too large for a full-covariance mixture (at most "
                             f"{MAX_NUMBERS:,}): sample from the one Gaussian over its channels (no --components)")
        if len(flat) < 2 * components:
            raise AekitError(f"a mixture of {components} components needs at least {2 * components} codes "
                             f"(got {len(flat)})")
        if not torch.isfinite(flat).all():
            raise AekitError("the codes hold NaN or infinite values: the model is not usable to sample from")
        scale = float(flat.var(0).mean().sqrt()) or 1.0  # EM on codes of unit spread: the regularization is relative
        fitted = GaussianMixture(components, covariance_type="full", reg_covar=RELATIVE_REGULARIZATION,
                                 max_iter=max_iter, random_state=seed).fit((flat / scale).numpy())
        covariances = torch.from_numpy(fitted.covariances_) * scale**2
        return cls(weights=torch.from_numpy(fitted.weights_).double(),
                   means=torch.from_numpy(fitted.means_) * scale,
                   scale_trils=torch.linalg.cholesky(covariances), shape=shape)

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """``n`` codes (n, *shape), float32: a component drawn by its weight, then a draw of that Gaussian."""
        if n < 1:
            raise AekitError(f"the number of samples must be >= 1 (got {n})")
        generator = torch.Generator().manual_seed(seed)
        which = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)
        z = torch.empty_like(eps)
        for k in range(self.components):
            rows = which == k
            z[rows] = self.means[k] + eps[rows] @ self.scale_trils[k].T
        return z.float().reshape(n, *self.shape)

    def log_prob(self, codes: torch.Tensor) -> torch.Tensor:
        """Each code's log-density under the mixture, in nats, (N,) float64."""
        flat = codes.detach().reshape(len(codes), -1).double().cpu()
        if flat.shape[1] != self.means.shape[1]:
            raise AekitError(f"codes of {flat.shape[1]} numbers, a mixture over {self.means.shape[1]}")
        d = flat.shape[1]
        per_component = []
        for k in range(self.components):
            white = torch.linalg.solve_triangular(self.scale_trils[k], (flat - self.means[k]).T, upper=False)
            log_det = self.scale_trils[k].diagonal().log().sum()
            per_component.append(self.weights[k].log() - 0.5 * white.pow(2).sum(0) - log_det
                                 - 0.5 * d * math.log(2 * math.pi))
        return torch.logsumexp(torch.stack(per_component), dim=0)
