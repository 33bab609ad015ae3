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
SCALES = torch.exp(torch.linspace(math.log(0.11), math.log(256), 64, dtype=torch.float64))  # the coded scales
SCALE_MIN = 0.11  # a conditional scale is at least this (CompressAI's lower bound)
GAUSSIAN_SYMBOLS = 4096  # integers per Gaussian table (its support +-6.1 sigma, cut to this)
GAUSSIAN_BITS = 20  # the Gaussian tables' frequencies sum to 2^20
FIXED_POINT = 8  # the integer hyper-synthesis carries activations x 2^8 ...
WEIGHT_BITS = 12  # ... and weights x 2^12: exact in float64 (every partial sum an integer below 2^53)


class EntropyHead(nn.Module):
    """features (B, F, h, w) -> a :class:`QuantizedCode` of C channels (a 1x1 convolution), with its density."""

    def __init__(self, feature_dim: int, channels: int) -> None:
        super().__init__()
        self.linear = nn.Conv2d(feature_dim, channels, 1)
        self.density = FactorizedDensity(channels)

    def forward(self, h: torch.Tensor) -> QuantizedCode:
        return QuantizedCode(self.linear(h), self.density)

    def update_tables(self) -> None:
        self.density.update_tables()


class HyperpriorHead(nn.Module):
    """features -> a :class:`HyperCode`: the code y (C channels) and a side code z of ``side`` channels at a quarter
    of y's resolution, whose decoding gives each element of y the scale of its zero-mean Gaussian (Ballé et al.
    2018, the scale hyperprior). z has a factorized density; y, given z, a discretized Gaussian per element."""

    def __init__(self, feature_dim: int, channels: int, side: int) -> None:
        super().__init__()
        self.linear = nn.Conv2d(feature_dim, channels, 1)
        self.analysis = nn.Sequential(  # |y| (B, C, h, w) -> z (B, side, h/4, w/4)
            nn.Conv2d(channels, side, 3, padding=1), nn.ReLU(),
            nn.Conv2d(side, side, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(side, side, 3, stride=2, padding=1))
        self.synthesis = nn.ModuleList([  # z -> log scales (B, C, h, w): convs, ReLU, nearest x2 (integer-exact)
            nn.Conv2d(side, side, 3, padding=1), nn.Conv2d(side, side, 3, padding=1), nn.Conv2d(side, channels, 3,
                                                                                              padding=1)])
        self.density = FactorizedDensity(side)
        self.register_buffer("gaussian_table", torch.ones(len(SCALES), GAUSSIAN_SYMBOLS + 1, dtype=torch.int32))
        self.register_buffer("gaussian_length", torch.ones(len(SCALES), dtype=torch.int32))  # 2 K + 1 integers

    def forward(self, h: torch.Tensor) -> HyperCode:
        return HyperCode(self.linear(h), self)

    def side_input(self, y: torch.Tensor) -> torch.Tensor:
        """|y| padded (replicated) to a multiple of 4, so that z has ceil(h/4) x ceil(w/4) positions."""
        pad_h, pad_w = -y.shape[-2] % 4, -y.shape[-1] % 4
        return F.pad(y.abs(), (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else y.abs()

    def log_scales(self, z: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """z (B, side, h', w') -> log scales (B, C, 4h', 4w') cropped to ``size``, in float (training)."""
        a, b, c = self.synthesis
        x = F.interpolate(F.relu(a(z)), scale_factor=2.0, mode="nearest")
        x = F.interpolate(F.relu(b(x)), scale_factor=2.0, mode="nearest")
        return c(x)[..., : size[0], : size[1]]

    def log_likelihoods(self, y: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log P of y's bins given the side code z (a zero-mean Gaussian per element, of z's scale) and of z's bins
        under its factorized density: ((B, C, h, w), (B, side, h', w'))."""
        scale = self.log_scales(z, y.shape[-2:]).exp().clamp_min(SCALE_MIN)
        v = y.abs()  # symmetric: the lower tail, where the normal CDF is accurate (as CompressAI)
        p = torch.special.ndtr((0.5 - v) / scale) - torch.special.ndtr((-0.5 - v) / scale)
        return torch.log(p.clamp_min(LIKELIHOOD_FLOOR)), self.density.log_likelihood(z)

    @torch.no_grad()
    def start_from_codes(self, y: torch.Tensor) -> None:
        """A data-dependent start for fresh side networks on trained transforms (``--init-from`` a factorized
        codec), given y (B, C, h, w) of some training images: each channel's scale starts at its rounded values'
        RMS, a per-channel Gaussian close to the factorized density's rate, and z's density starts spread over the
        range z takes. From the default start (scales near 1, a density spread over ±10) the rate is several times
        the factorized model's, and a fine-tune's learning rate takes tens of thousands of steps to move the
        biases that far."""
        y = torch.round(y)
        self.synthesis[-1].bias.copy_(y.pow(2).mean((0, 2, 3)).sqrt().clamp_min(SCALE_MIN).log())
        spread = float(self.analysis(self.side_input(y)).abs().max().clamp_min(0.1))
        fresh = FactorizedDensity(self.density.channels, init_scale=spread).to(y.device)
        self.density.load_state_dict(fresh.state_dict())

    @torch.no_grad()
    def scale_indexes(self, z: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Integer z (B, side, h', w') -> the index into SCALES of each element of y (B, C, h, w), computed in exact
        integer arithmetic (carried in float64), so that encoder and decoder agree on every machine (Ballé et al.
        2019, Integer networks for data compression): index i is the first with SCALES[i] >= the scale."""
        x = z.double() * 2**FIXED_POINT
        for i, conv in enumerate(self.synthesis):
            weight = torch.round(conv.weight.double() * 2**WEIGHT_BITS)
            bias = torch.round(conv.bias.double() * 2 ** (WEIGHT_BITS + FIXED_POINT))
            x = torch.floor((F.conv2d(x, weight, padding=1) + bias[:, None, None]) / 2**WEIGHT_BITS)
            if i < 2:
                x = F.interpolate(x.clamp_min(0), scale_factor=2.0, mode="nearest")
        thresholds = torch.floor(torch.log(SCALES[:-1]) * 2**FIXED_POINT)  # (63,) integers
        x = x[..., : size[0], : size[1]]
        return (x[..., None] > thresholds).sum(-1)  # (B, C, h, w) in [0, 63]

    @torch.no_grad()
    def update_tables(self) -> None:
        """The side code's factorized tables, and one integer table per coded scale: a zero-mean Gaussian of that
        scale over the integers -K..K (K = its 1 - 1e-9 quantile, at most GAUSSIAN_SYMBOLS / 2), then an escape."""
        self.density.update_tables()
        for i, scale in enumerate(SCALES):
            k = min(math.ceil(float(scale) * 6.1), GAUSSIAN_SYMBOLS // 2 - 1)
            n = torch.arange(-k, k + 1, dtype=torch.float64)
            pmf = torch.special.ndtr((n + 0.5) / scale) - torch.special.ndtr((n - 0.5) / scale)
            escape = (1 - pmf.sum()).clamp_min(0).reshape(1)
            self.gaussian_length[i] = len(n)
            self.gaussian_table[i] = 0
            self.gaussian_table[i, : len(n) + 1] = integer_frequencies(torch.cat([pmf, escape]), GAUSSIAN_BITS)


class HyperCode:
    """The code of a scale-hyperprior model: y rounded (or noisy in training) and its side code z, with their rate.
    ``mode()`` is y (what the decoder reads); ``side`` is z; ``kl()`` the rate of both, in nats per image."""

    def __init__(self, y: torch.Tensor, head: HyperpriorHead, noise: torch.Tensor | None = None,
                 side_noise: torch.Tensor | None = None) -> None:
        self.mean, self.head = y, head
        self.z = y + noise if noise is not None else torch.round(y)
        z = head.analysis(head.side_input(y))
        self.side = z + side_noise if side_noise is not None else torch.round(z)

    def with_noise(self, noise: torch.Tensor, side_noise: torch.Tensor | None = None) -> HyperCode:
        return HyperCode(self.mean, self.head, noise, side_noise)

    def mode(self) -> torch.Tensor:
        return self.z

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.z

    def _log_likelihoods(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head.log_likelihoods(self.z, self.side)

    def kl(self) -> torch.Tensor:
        """The rate of y given z plus the rate of z, in nats per image: (B,)."""
        y, z = self._log_likelihoods()
        return -(y.flatten(1).sum(1) + z.flatten(1).sum(1))

    def kl_per_dim(self) -> torch.Tensor:
        return -self._log_likelihoods()[0].flatten(2).sum(2)  # (B, C): y's channels (z's rate is shared)


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

    def with_noise(self, noise: torch.Tensor, side_noise: torch.Tensor | None = None) -> QuantizedCode:
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
