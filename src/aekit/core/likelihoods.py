"""Decoder likelihoods p(x | z): a registry from the name a config gives (``--likelihood``) to its NLL.

Each entry maps decoder outputs and target images in [0, 1] to the negative log-likelihood of every pixel, in
nats; the loss sums it over the pixels of each image. A likelihood takes ``params`` outputs per image channel
(the decoder makes ``C x params`` channels): the first C are always the mean's logits, so the decoder's mean
image is their sigmoid (``Autoencoder.mean``); the next C, where there are two, the log of a scale.

* ``bernoulli`` and ``gaussian`` (a fixed std) score the continuous pixel values: fine for training, but not a
  likelihood of 8-bit images.
* ``logistic`` and ``normal`` are *discretized*: the mass of the 8-bit bin around each value (Salimans et al.
  2017, PixelCNN++), with a learned scale per pixel and the edge bins open (0 and 255 take the tails). Their
  NLL is an exact discrete likelihood, reported in bits per dimension, comparable with PNG's or WebP's bits.
* ``logistic-rgb`` is ``logistic`` with the channels of a pixel coupled (Salimans et al. 2017, Sec. 2.2): green's
  mean moves with red's residual and blue's with red's and green's, by coefficients the decoder makes per pixel
  (a third group of C outputs). p(x) = p(R) p(G | R) p(B | R, G), each factor a discretized logistic, so it is
  still exact; it spends fewer bits where the channels' errors agree, as a blurred photo's do.
* ``logistic-mixture`` is a mixture of :data:`MIXTURE` coupled logistics per pixel (Salimans et al. 2017, Sec. 2.1
  and 2.2): p(x) = sum_k pi_k p_k(R) p_k(G | R) p_k(B | R, G), for pixels whose value given the code is not one
  bump (an edge that may fall on either side). The components' centres are the mean image plus offsets whose
  pi-weighted sum is zero, so the first C outputs are still the mixture's mean image. A mixture does not factor over
  the channels: a pixel's NLL is shared equally by them (their sum, what the loss takes, is exact).

:func:`register_likelihood` adds one. Only autograd trains a likelihood that the hand-written MLP step does
not implement (:func:`aekit.training.fastmlp.supports` checks which function is registered, not its name).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F


class Likelihood(NamedTuple):
    """``nll(outputs, target, gaussian_std) -> per-pixel nats`` (the target's shape, broadcasting), a note saying
    what its numbers are, the decoder outputs it takes per image channel, and whether it is a likelihood of
    8-bit images (then bits per dimension compare with a codec's)."""

    nll: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
    note: str
    params: int = 1
    discrete: bool = False


HALF_BIN = 0.5 / 255  # half the width of an 8-bit level, with pixels in [0, 1]
LOG_SCALE_RANGE = (-9.0, 3.0)  # exp(-9) = 1.2e-4, well inside a bin; exp(3) = 20 times the pixel range
EDGE = 0.5 / 255  # targets below it are level 0, above 1 - EDGE level 255


def _split(outputs: torch.Tensor, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(…, 2C, H, W) outputs -> mean in (0, 1) and log-scale, each (…, C, H, W)."""
    mean = torch.sigmoid(outputs[..., :channels, :, :])
    log_scale = outputs[..., channels : 2 * channels, :, :].clamp(*LOG_SCALE_RANGE)
    return mean, log_scale


def logistic_nll(outputs: torch.Tensor, target: torch.Tensor, gaussian_std: float = 0.0) -> torch.Tensor:
    """-log P(x) of the 8-bit level x under a logistic discretized to 256 bins (Salimans et al. 2017, Eq. 2)."""
    return _discretized_logistic(*_split(outputs, target.shape[-3]), target)


#: The coupled channels of ``logistic-rgb``: (channel, earlier channel) -> the coefficient's slot among the third
#: group of C outputs (the first channel has no earlier one, so its slot serves blue's second coefficient).
COUPLINGS = {(1, 0): 1, (2, 0): 2, (2, 1): 0}


def logistic_rgb_nll(outputs: torch.Tensor, target: torch.Tensor, gaussian_std: float = 0.0) -> torch.Tensor:
    """-log P(x) with the channels of each pixel coupled: channel c's logistic is centred on its mean plus
    tanh(coefficient) times each earlier channel's residual (its level minus its mean), so P(x) = P(x_0) P(x_1 | x_0)
    P(x_2 | x_0, x_1), every factor a discretized logistic over the 256 levels (Salimans et al. 2017, Sec. 2.2,
    with residuals in place of values: the first C outputs stay the mean image). Two channels have one coupling, a
    single channel is ``logistic``, channels after the third are not coupled."""
    c = target.shape[-3]
    mean, log_scale = _split(outputs, c)
    coefficients = torch.tanh(outputs[..., 2 * c : 3 * c, :, :])
    return _discretized_logistic(_coupled(mean, coefficients, target), log_scale, target)


def _coupled(mean: torch.Tensor, coefficients: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Each channel's centre: its mean plus its coefficients (slots: :data:`COUPLINGS`) times the residuals of the
    earlier channels (their targets minus their means); the shape of ``target - mean``."""
    residual = target - mean
    mean = mean.expand_as(residual)  # the outputs may broadcast over the targets
    return torch.stack([mean[..., i, :, :] + sum(coefficients[..., slot, :, :] * residual[..., j, :, :]
                                                 for (k, j), slot in COUPLINGS.items() if k == i)
                        for i in range(target.shape[-3])], dim=-3)


MIXTURE = 5  # components of ``logistic-mixture``


def logistic_mixture_nll(outputs: torch.Tensor, target: torch.Tensor, gaussian_std: float = 0.0) -> torch.Tensor:
    """-log P(x) of each pixel under a mixture of MIXTURE discretized logistics with coupled channels, shared equally
    by the pixel's channels. Outputs per image channel, in groups of C: the mean's logits, then K groups each of
    the components' offsets, log-scales, coupling coefficients (slots as ``logistic-rgb``'s) and mixture logits (a
    pixel's K logits are the sums over its channels)."""
    c, k = target.shape[-3], MIXTURE
    groups = outputs.unflatten(-3, (1 + 4 * k, c))  # (..., 1 + 4K, C, H, W)
    offsets, log_scale, coefficients, logits = groups[..., 1:, :, :, :].split(k, dim=-4)
    log_pi = torch.log_softmax(logits.sum(-3), dim=-3)  # (..., K, H, W)
    offsets = offsets - (log_pi.exp().unsqueeze(-3) * offsets).sum(-4, keepdim=True)  # pi-weighted sum 0
    centres = torch.sigmoid(groups[..., 0, :, :, :]).unsqueeze(-4) + offsets  # (..., K, C, H, W)
    x = target.unsqueeze(-4)
    shifted = _coupled(centres, torch.tanh(coefficients), x)
    per_component = _discretized_logistic(shifted, log_scale.clamp(*LOG_SCALE_RANGE), x)
    log_p = torch.logsumexp(log_pi - per_component.sum(-3), dim=-3)  # (..., H, W)
    return (-log_p / c).unsqueeze(-3).expand(*log_p.shape[:-2], c, *log_p.shape[-2:])


def _discretized_logistic(mean: torch.Tensor, log_scale: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    inv = torch.exp(-log_scale)
    centred = target - mean
    plus, minus = inv * (centred + HALF_BIN), inv * (centred - HALF_BIN)
    log_cdf_plus = plus - F.softplus(plus)  # log sigmoid(plus): the lowest bin takes the left tail
    log_one_minus_cdf_min = -F.softplus(minus)  # log (1 - sigmoid(minus)): the highest bin the right one
    cdf_delta = torch.sigmoid(plus) - torch.sigmoid(minus)
    mid = inv * centred
    log_pdf_mid = mid - log_scale - 2.0 * F.softplus(mid) + math.log(2 * HALF_BIN)  # the bin's mass when tiny
    inner = torch.where(cdf_delta > 1e-5, torch.log(cdf_delta.clamp(min=1e-12)), log_pdf_mid)
    log_p = torch.where(target < EDGE, log_cdf_plus, torch.where(target > 1 - EDGE, log_one_minus_cdf_min, inner))
    return -log_p


def normal_nll(outputs: torch.Tensor, target: torch.Tensor, gaussian_std: float = 0.0) -> torch.Tensor:
    """-log P(x) of the 8-bit level x under a Gaussian with a learned scale, discretized to 256 bins."""
    mean, log_scale = _split(outputs, target.shape[-3])
    inv = torch.exp(-log_scale)
    centred = target - mean
    plus, minus = inv * (centred + HALF_BIN), inv * (centred - HALF_BIN)
    # Phi(plus) - Phi(minus), computed on the side of the mean where both tails are small (no cancellation)
    right = centred > 0
    upper = torch.where(right, -minus, plus)
    lower = torch.where(right, -plus, minus)
    log_upper = torch.special.log_ndtr(upper)
    ratio = torch.exp(torch.special.log_ndtr(lower) - log_upper).clamp(max=1 - 1e-6)  # finite in float32 too
    inner = log_upper + torch.log1p(-ratio)
    log_pdf_mid = -0.5 * (inv * centred).pow(2) - log_scale - 0.5 * math.log(2 * math.pi) + math.log(2 * HALF_BIN)
    inner = torch.where(inner > math.log(1e-5), inner, log_pdf_mid)  # a tiny mass: the density times the bin
    log_p = torch.where(target < EDGE, torch.special.log_ndtr(plus),
                        torch.where(target > 1 - EDGE, torch.special.log_ndtr(-minus), inner))
    return -log_p


def bernoulli_nll(logits: torch.Tensor, target: torch.Tensor, gaussian_std: float = 0.0) -> torch.Tensor:
    # -[x log s(l) + (1 - x) log(1 - s(l))] = softplus(l) - x l: two passes, where
    # binary_cross_entropy_with_logits makes several and is slower on (K*B, 784)
    return F.softplus(logits) - logits * target


def gaussian_nll(logits: torch.Tensor, target: torch.Tensor, gaussian_std: float) -> torch.Tensor:
    # Gaussian with mean sigmoid(logits) and fixed std s: 0.5 * ((x - mu) / s)^2 + log(s) + 0.5 log(2 pi)
    mean = torch.sigmoid(logits)
    return 0.5 * ((target - mean) / gaussian_std).pow(2) + math.log(gaussian_std) + 0.5 * math.log(2 * math.pi)


BUILTIN: dict[str, Likelihood] = {
    "bernoulli": Likelihood(
        bernoulli_nll,
        "Bernoulli likelihood of the image as given: the continuous pixel values in [0, 1] are scored by BCE, "
        "which is not a normalised density over images; compare between aekit runs on the same data, not with "
        "published NLLs on binarised MNIST",
    ),
    "gaussian": Likelihood(
        gaussian_nll,
        "Gaussian density (fixed std) of the continuous pixel values in [0, 1], not discretised: a differential "
        "NLL that may be negative; bits per dimension are not comparable with discrete-data numbers",
    ),
    "logistic": Likelihood(
        logistic_nll,
        "discretized logistic with a learned scale per pixel (Salimans et al. 2017): an exact likelihood of the 8-bit "
        "images, so bits per dimension compare with a lossless codec's on the same images",
        params=2, discrete=True,
    ),
    "logistic-rgb": Likelihood(
        logistic_rgb_nll,
        "discretized logistic with a learned scale per pixel and the colour channels coupled (Salimans et al. 2017): "
        "an exact likelihood of the 8-bit images, so bits per dimension compare with a lossless codec's",
        params=3, discrete=True,
    ),
    "logistic-mixture": Likelihood(
        logistic_mixture_nll,
        f"mixture of {MIXTURE} discretized logistics per pixel with the colour channels coupled (Salimans et al. "
        "2017): an exact likelihood of the 8-bit images, so bits per dimension compare with a lossless codec's",
        params=1 + 4 * MIXTURE, discrete=True,
    ),
    "normal": Likelihood(
        normal_nll,
        "Gaussian with a learned scale per pixel, discretized to the 256 levels: an exact likelihood of the 8-bit "
        "images, so bits per dimension compare with a lossless codec's on the same images",
        params=2, discrete=True,
    ),
}
LIKELIHOODS: dict[str, Likelihood] = dict(BUILTIN)


def register_likelihood(name: str, nll: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor],
                        note: str = "", params: int = 1, discrete: bool = False) -> None:
    """Make ``likelihood=name`` mean ``nll`` (see :class:`Likelihood`) in configs and the CLI.

    Examples
    --------
    >>> from aekit.core.likelihoods import register_likelihood
    >>> register_likelihood("laplace", lambda logits, x, s: (x - torch.sigmoid(logits)).abs() / s)  # doctest: +SKIP
    """
    if not isinstance(name, str) or not name:
        raise ValueError("a likelihood needs a non-empty name")
    LIKELIHOODS[name] = Likelihood(nll, note or f"the {name} likelihood", params, discrete)


def unregister_likelihood(name: str) -> None:
    """Forget a registered likelihood (a built-in one goes back to its built-in function)."""
    if name in BUILTIN:
        LIKELIHOODS[name] = BUILTIN[name]
    else:
        LIKELIHOODS.pop(name, None)
