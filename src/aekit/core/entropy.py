"""Entropy models for learned compression: a spatial code that is quantized and costs bits.

Ballé et al. 2017 (End-to-end optimized image compression) and 2018 (Variational image compression with a scale
hyperprior, appendix 6.1): the encoder's map y is rounded to integers at test time; in training, additive uniform
noise U(-1/2, 1/2) stands in for the rounding, and a learned, factorized density per channel gives the rate
-log2 p(y~) that the loss pays. The density is the derivative of a monotone cumulative c(x) = sigmoid(f(x)), f a
small per-channel network whose matrices are kept positive (softplus) and whose nonlinearities x + a tanh(x) are
monotone (|a| < 1), so the probability of an integer is c(n + 1/2) - c(n - 1/2), exact over the bins.

For coding, each channel's probabilities of the integers in its support are frozen into integer frequencies
(:meth:`FactorizedDensity.integer_tables`), saved with the weights: the encoder and the decoder read the same
integers, so a file decodes bit-exactly in any process, with any thread count, on any machine.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LIKELIHOOD_FLOOR = 1e-9  # a bin's probability is at least this in training (the rate stays finite)
TABLE_SYMBOLS = 1024  # integers per channel's table (plus an escape symbol); values outside go to the escape
TABLE_TAIL = 1e-9  # the support is cut where the mass left outside on each side falls below this
FREQUENCY_BITS = 16  # each table's frequencies sum to 2^16


class EntropyHead(nn.Module):
    """features (B, F, h, w) -> a :class:`QuantizedCode` of C channels (a 1x1 convolution), with its density."""

    def __init__(self, feature_dim: int, channels: int) -> None:
        super().__init__()
        self.linear = nn.Conv2d(feature_dim, channels, 1)
        self.density = FactorizedDensity(channels)

    def forward(self, h: torch.Tensor) -> QuantizedCode:
        return QuantizedCode(self.linear(h), self.density)


class QuantizedCode:
    """A code that is rounded at test time (``mode``) or noisy in training (:meth:`with_noise`), with its rate.

    Shares the code-distribution interface of :mod:`aekit.core.latent` (``mode``, ``sample``, ``kl``, ``mean``), so
    the objective needs nothing new: ``kl()`` is the code's rate in nats, and ``recon + kl`` is the
    rate-distortion loss (Ballé et al. 2018, Eq. 2; a uniform posterior of width 1 has no entropy).
    """

    def __init__(self, y: torch.Tensor, density: FactorizedDensity, noise: torch.Tensor | None = None) -> None:
        self.mean = y  # (B, C, h, w), the encoder's continuous output
        self.density = density
        self.z = y + noise if noise is not None else torch.round(y)

    def with_noise(self, noise: torch.Tensor) -> QuantizedCode:
        """The training code y + u, u ~ U(-1/2, 1/2) drawn by the caller (``noise``: (B, C, h, w))."""
        return QuantizedCode(self.mean, self.density, noise)

    def mode(self) -> torch.Tensor:
        return self.z

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.z

    def kl(self) -> torch.Tensor:
        """The rate in nats per image: -sum log p(z), (B,)."""
        return -self.density.log_likelihood(self.z).flatten(1).sum(1)

    def kl_per_dim(self) -> torch.Tensor:
        return -self.density.log_likelihood(self.z).flatten(2).sum(2)  # (B, C)


class FactorizedDensity(nn.Module):
    """One learned univariate density per channel (Ballé et al. 2018, appendix 6.1), of the integer bins."""

    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3), init_scale: float = 10.0) -> None:
        super().__init__()
        widths = (1, *filters, 1)
        scale = init_scale ** (1 / (len(widths) - 1))
        self.matrices, self.biases, self.factors = nn.ParameterList(), nn.ParameterList(), nn.ParameterList()
        generator = torch.Generator().manual_seed(0)  # the density's start does not depend on the global seed
        for i in range(len(widths) - 1):
            start = math.log(math.expm1(1 / scale / widths[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, widths[i + 1], widths[i]), start)))
            self.biases.append(nn.Parameter(torch.rand(channels, widths[i + 1], 1, generator=generator) - 0.5))
            if i < len(widths) - 2:
                self.factors.append(nn.Parameter(torch.zeros(channels, widths[i + 1], 1)))
        self.channels = channels
        self.register_buffer("table", torch.ones(channels, TABLE_SYMBOLS + 1, dtype=torch.int32))
        self.register_buffer("table_offset", torch.zeros(channels, dtype=torch.int32))  # the support's first integer
        self.register_buffer("table_length", torch.ones(channels, dtype=torch.int32))  # integers in the support

    def logits_cumulative(self, x: torch.Tensor) -> torch.Tensor:
        """f(x) with c(x) = sigmoid(f(x)): (C, 1, N) -> (C, 1, N), monotone increasing in x per channel."""
        return _logits_cumulative(self.matrices, self.biases, self.factors, x)

    def log_likelihood(self, z: torch.Tensor) -> torch.Tensor:
        """log P(bin of z) for codes (B, C, h, w): log [c(z + 1/2) - c(z - 1/2)], floored at LIKELIHOOD_FLOOR."""
        b, c = z.shape[:2]
        values = z.transpose(0, 1).reshape(c, 1, -1)  # (B, C, h, w) -> (C, 1, B h w)
        lower, upper = self.logits_cumulative(values - 0.5), self.logits_cumulative(values + 0.5)
        sign = -torch.sign(lower + upper).detach()  # difference of sigmoids on the side where they are not both ~1
        p = (torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).abs()
        log_p = torch.log(p.clamp_min(LIKELIHOOD_FLOOR))
        return log_p.reshape(c, b, *z.shape[2:]).transpose(0, 1)  # (B, C, h, w)

    @torch.no_grad()
    def update_tables(self) -> None:
        """Freeze the density into integer frequencies: per channel, the integers whose bins hold all but
        TABLE_TAIL of the mass on each side (at most TABLE_SYMBOLS of them, around the median), then one escape
        symbol with the mass outside; at least 1 each, summing to 2^FREQUENCY_BITS. Computed in float64."""
        half = TABLE_SYMBOLS // 2
        grid = torch.arange(-4 * half, 4 * half + 1, dtype=torch.float64)  # candidate integers
        matrices, biases, factors = ([p.detach().double() for p in part]
                                     for part in (self.matrices, self.biases, self.factors))
        logits = _logits_cumulative(matrices, biases, factors, (grid - 0.5).expand(self.channels, 1, -1))  # (C, 1, N)
        cdf = torch.sigmoid(logits[:, 0])  # (C, N)
        for ch in range(self.channels):
            inside = ((cdf[ch] > TABLE_TAIL) & (cdf[ch] < 1 - TABLE_TAIL)).nonzero()
            median = int(torch.searchsorted(cdf[ch].contiguous(), torch.tensor([0.5], dtype=torch.float64)))
            first = int(inside[0]) - 1 if len(inside) else median - 1
            last = int(inside[-1]) if len(inside) else median
            first, last = max(first, median - half, 0), min(last, median + half - 1, len(grid) - 2)
            edges = cdf[ch, first:last + 2]  # c at the lower edges of first .. last + 1
            pmf = (edges[1:] - edges[:-1]).clamp_min(0)  # (L,) the bins first .. last
            escape = (1 - pmf.sum()).clamp_min(0).reshape(1)
            self.table_offset[ch] = int(grid[first])
            self.table_length[ch] = len(pmf)
            self.table[ch] = 0
            self.table[ch, : len(pmf) + 1] = integer_frequencies(torch.cat([pmf, escape]))


def _logits_cumulative(matrices, biases, factors, x: torch.Tensor) -> torch.Tensor:
    for i, (matrix, bias) in enumerate(zip(matrices, biases)):
        x = torch.matmul(F.softplus(matrix), x) + bias  # (C, out, in) @ (C, in, N) -> (C, out, N)
        if i < len(factors):  # x + a tanh(x), |a| < 1: monotone
            x = x + torch.tanh(factors[i]) * torch.tanh(x)
    return x


def integer_frequencies(pmf: torch.Tensor, bits: int = FREQUENCY_BITS) -> torch.Tensor:
    """Probabilities (L,) -> int32 frequencies, each at least 1, summing to exactly 2^bits (L <= 2^bits)."""
    total = 1 << bits
    if len(pmf) > total:
        raise ValueError(f"{len(pmf)} symbols do not fit {bits}-bit frequencies")
    p = pmf.double().clamp_min(0)
    p = p / p.sum() if p.sum() > 0 else torch.full_like(p, 1 / len(p))
    freq = (p * (total - len(p))).floor().long() + 1  # every symbol at least 1
    short = total - int(freq.sum())
    if short > 0:  # the rounding's remainder, to the largest fractional parts (ties: the lower index)
        fractions = p * (total - len(p)) - (p * (total - len(p))).floor()
        freq[torch.argsort(-fractions, stable=True)[:short]] += 1
    return freq.int()
