"""A VAE's likelihood: the importance-weighted estimate of log p(x), the ELBO, KL per dimension, active units.

Under torchrun the importance-weighted estimate shares the images out over the processes and gathers the
per-image values, which are those of one process: the same numbers.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from ..core.config import ObjectiveConfig
from ..core.likelihoods import LIKELIHOODS
from ..core.model import Autoencoder
from ..core.objectives import importance_weighted_bound, log_importance_weight, reconstruction_nll
from ..data import to_unit
from ..data.machine import check_memory
from ..errors import AekitError
from ..training.distributed import World

IW_SAMPLES = 1000
IW_CHUNK = 2048  # (sample, image) pairs decoded per pass: small enough for the outputs to stay in cache
IW_CHUNK_CONV = 512  # a conv decoder's passes on the CPU: its activations are larger, so a smaller pass stays in cache
ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. 2015, Sec. 5.2: A_u = Cov_x(E_q[u]) > 0.01


def log_likelihood_fn(objective: ObjectiveConfig) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """log p(x | z) per image from decoder logits, as trained: (..., C, H, W) logits and targets
    that broadcast -> (...)."""
    return lambda logits, target: -reconstruction_nll(logits, target, objective)


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
        (B, ...) -> a :class:`aekit.core.latent.DiagonalGaussian` q(z|x) over (B, D).
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
    generator = torch.Generator().manual_seed(seed)
    batch = max(1, chunk_size // k)  # inputs per outer step
    per_pass = max(1, min(k, chunk_size // batch))  # samples per forward pass
    per_input = math.prod(x.shape[1:]) if x.ndim > 1 else 1
    check_memory(f"an importance-weighted estimate with K = {k:,}",  # (K, B) log-weights + one pass's decodings
                 k * batch * 8 + per_pass * batch * per_input * 4 * 3)

    def samples(q) -> Iterator[tuple[int, torch.Tensor]]:
        for s0 in range(0, k, per_pass):
            yield s0, torch.randn((min(per_pass, k - s0), *q.mean.shape), generator=generator, dtype=q.mean.dtype)

    def estimate(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        xb = to_unit(x[start:stop])  # (B, ...)
        q = encode(xb)
        b = len(xb)
        log_w = torch.empty(k, b, dtype=torch.float64)
        recon = torch.zeros(b, dtype=torch.float64)
        for s0, eps in samples(q):
            s = len(eps)
            z = q.mean + q.std * eps  # (S, B, D)
            outputs = decode(z.reshape(s * b, *z.shape[2:]))  # (S*B, ...)
            if outputs.dim() == 4 and xb.dim() == 4 and outputs.shape[-2:] != xb.shape[-2:]:
                outputs = outputs[..., : xb.shape[-2], : xb.shape[-1]]  # a spatial latent decodes the padded size
            log_lik = log_likelihood(outputs.view(s, b, *outputs.shape[1:]), xb)  # (S, B): broadcast, no copies of xb
            log_w[s0 : s0 + s] = log_importance_weight(log_lik, z, q).double()
            recon += log_lik.double().sum(0)
        log_px = importance_weighted_bound(log_w)  # (K, B) -> (B,)
        return log_px.numpy(), (recon / k - q.kl().double()).numpy()

    def skip(start: int, stop: int) -> None:  # another process's inputs: draw their samples all the same
        for _ in samples(encode(to_unit(x[start:stop]))):
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
    transposed convolutions) in passes of ``IW_CHUNK_CONV`` pairs, about twice as fast as the plain decoder
    (docs/performance.md). Other models: ``model.decode`` and ``IW_CHUNK``."""
    if model.config.arch != "conv" or next(model.parameters()).device.type != "cpu":
        return model.decode, IW_CHUNK
    fast = copy.deepcopy(model)
    fast.decoder.to(memory_format=torch.channels_last)
    return fast.decode, IW_CHUNK_CONV


@torch.inference_mode()
def variational_metrics(
    model: Autoencoder,
    objective: ObjectiveConfig,
    images: torch.Tensor,
    *,
    iw_samples: int = IW_SAMPLES,
    chunk_size: int | None = None,
    seed: int = 0,
    batch_size: int = 1000,
    world: World | None = None,
) -> dict[str, Any]:
    """Negative ELBO, IW-NLL (nats per image and bits per dimension), KL per dimension, active units, under
    the likelihood ``objective`` trained with.

    With a ``world`` of several processes the IW estimate is shared out over them."""
    model.eval()
    means, kl_dims = [], []
    for start in range(0, len(images), batch_size):
        q = model.encode(model.prepare(images[start : start + batch_size]))
        means.append(q.mean if q.mean.dim() == 2 else q.mean.flatten(2).mean(2))  # a map's units: its channels
        kl_dims.append(q.kl_per_dim().double().sum(0))
    means_all = torch.cat(means)
    kl_per_dim = (torch.stack(kl_dims).sum(0) / len(images)).tolist()
    n_active, variance = active_units(means_all)
    decode, fastest = iw_decoding(model)
    chunk_size = fastest if chunk_size is None else chunk_size
    log_px, elbo = importance_weighted_log_likelihood(
        model.encode, decode, log_likelihood_fn(objective),
        torch.as_tensor(images), iw_samples, chunk_size=chunk_size, seed=seed, world=world,
    )
    n_dims = math.prod(images.shape[1:])
    nll = float(-log_px.mean())
    order = sorted(range(len(kl_per_dim)), key=lambda j: -kl_per_dim[j])
    return {
        "neg_elbo_nats": float(-elbo.mean()),
        "iw_nll_nats": nll,
        "iw_nll_bits_per_dim": nll / (n_dims * math.log(2)),
        "neg_elbo_bits_per_dim": float(-elbo.mean()) / (n_dims * math.log(2)),
        "iw_samples": iw_samples,
        "likelihood": objective.likelihood,
        "likelihood_note": LIKELIHOODS[objective.likelihood].note,
        "kl_nats": float(sum(kl_per_dim)),
        "kl_per_dim_nats": [round(v, 5) for v in kl_per_dim],
        "dims_by_kl": order,
        "active_units": n_active,
        "active_unit_threshold": ACTIVE_UNIT_THRESHOLD,
        "dims_kl_above_0.1": sum(v > 0.1 for v in kl_per_dim),  # a second, stricter view of posterior collapse
        "posterior_mean_variance": [round(v, 5) for v in variance],
        "latent_dim": len(kl_per_dim),
    }
