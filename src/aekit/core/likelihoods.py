"""Decoder likelihoods p(x | z): a registry from the name a config gives (``--likelihood``) to its NLL.

Each entry maps decoder outputs (logits) and target images in [0, 1] to the negative log-likelihood of every
pixel, in nats; the loss sums it over the pixels of each image. The decoder's mean image is the sigmoid of
the logits for every likelihood here (:func:`aekit.core.objectives.mean_image`).

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
    """``nll(logits, target, gaussian_std) -> per-pixel nats`` (same shape, broadcasting) and a note saying
    what its numbers are, for the evaluation report."""

    nll: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
    note: str


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
}
LIKELIHOODS: dict[str, Likelihood] = dict(BUILTIN)


def register_likelihood(name: str, nll: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor],
                        note: str = "") -> None:
    """Make ``likelihood=name`` mean ``nll`` (see :class:`Likelihood`) in configs and the CLI.

    Examples
    --------
    >>> from aekit.core.likelihoods import register_likelihood
    >>> register_likelihood("laplace", lambda logits, x, s: (x - torch.sigmoid(logits)).abs() / s)  # doctest: +SKIP
    """
    if not isinstance(name, str) or not name:
        raise ValueError("a likelihood needs a non-empty name")
    LIKELIHOODS[name] = Likelihood(nll, note or f"the {name} likelihood")


def unregister_likelihood(name: str) -> None:
    """Forget a registered likelihood (a built-in one goes back to its built-in function)."""
    if name in BUILTIN:
        LIKELIHOODS[name] = BUILTIN[name]
    else:
        LIKELIHOODS.pop(name, None)
