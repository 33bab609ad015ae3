"""Rate-distortion metrics: MS-SSIM, Bjøntegaard deltas (BD-rate, BD-PSNR), and a curve's PSNR at a given rate."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import AekitError

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang, Simoncelli & Bovik 2003, Sec. 3.2
WINDOW, SIGMA, K1, K2 = 11, 1.5, 0.01, 0.03  # Wang et al. 2004, Sec. III-C
MS_SSIM_MIN_SIDE = (WINDOW - 1) * 2 ** (len(MS_SSIM_WEIGHTS) - 1) + 1  # 161: a valid 11x11 window at the 5th scale


def _gaussian_window() -> torch.Tensor:
    x = torch.arange(WINDOW, dtype=torch.float64) - WINDOW // 2
    g = torch.exp(-(x**2) / (2 * SIGMA**2))
    return g / g.sum()  # (WINDOW,)


def _blur(t: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of each channel, 'valid' only (no padding): (N, C, H, W) -> (N, C, H-10, W-10).

    Eleven shifted multiply-adds per direction: in float64 on a CPU, several times faster than a grouped conv2d."""
    weights = g.tolist()
    width = t.shape[-1] - WINDOW + 1
    rows = t[..., :width] * weights[0]
    for k in range(1, WINDOW):
        rows.add_(t[..., k : k + width], alpha=weights[k])
    height = t.shape[-2] - WINDOW + 1
    out = rows[..., :height, :] * weights[0]
    for k in range(1, WINDOW):
        out.add_(rows[..., k : k + height, :], alpha=weights[k])
    return out


def _ssim_cs(x: torch.Tensor, y: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean SSIM and mean contrast-structure term per image and channel: (N, C, H, W) twice -> (N, C), (N, C)."""
    c1, c2 = K1**2, K2**2  # data range 1
    c = x.shape[1]
    moments = _blur(torch.cat([x, y, x * x, y * y, x * y], 1), g)  # (N, 5C, H', W')
    mx, my, mxx, myy, mxy = moments.split(c, 1)
    vx, vy, cov = mxx - mx * mx, myy - my * my, mxy - mx * my  # population (co)variances under the window
    cs = (2 * cov + c2) / (vx + vy + c2)
    ssim = (2 * mx * my + c1) / (mx * mx + my * my + c1) * cs
    return ssim.flatten(2).mean(-1), cs.flatten(2).mean(-1)


def ms_ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Multi-scale SSIM (Wang, Simoncelli & Bovik 2003) between images in [0, 1], one value per image.

    The standard settings: 5 scales weighted (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), an 11x11 Gaussian window
    of sigma 1.5 applied without padding, K1 = 0.01, K2 = 0.03 with a data range of 1, and a 2x2 average pooling
    between scales. It follows ``pytorch_msssim.ms_ssim`` (the one CompressAI reports Kodak with): the contrast-
    structure terms of scales 1-4 and the SSIM of scale 5 are clamped at 0, combined per channel, and the result
    averaged over channels (``tf.image.ssim_multiscale`` does the same). An odd side is padded with one zero pixel
    on each side before pooling, as there (TensorFlow mirrors one pixel at its end instead: the two differ slightly
    on odd sizes, never on Kodak's 768x512). Computed in float64; differentiable.

    Parameters
    ----------
    a, b : torch.Tensor
        Images of the same shape, (N, C, H, W) or (C, H, W), any C (RGB or grey), values in [0, 1]. The shorter
        side must be at least 161 pixels (an 11-pixel window at the fifth scale).

    Returns
    -------
    torch.Tensor
        float64 of shape (N,), or a 0-d tensor for a (C, H, W) input; 1 for identical images.

    Examples
    --------
    >>> x = torch.rand(2, 3, 176, 192, generator=torch.Generator().manual_seed(0))
    >>> ms_ssim(x, x).tolist()
    [1.0, 1.0]
    """
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        raise AekitError("ms_ssim takes two torch tensors")
    if a.shape != b.shape or a.dim() not in (3, 4):
        raise AekitError(f"ms_ssim needs two images of one (N, C, H, W) or (C, H, W) shape, got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")
    if not (a.is_floating_point() and b.is_floating_point()):
        raise AekitError(f"ms_ssim takes float images in [0, 1], got {a.dtype} and {b.dtype} (divide uint8 by 255)")
    single = a.dim() == 3
    x, y = (a[None], b[None]) if single else (a, b)
    x, y = x.to(torch.float64), y.to(torch.float64)
    if min(x.shape[-2:]) < MS_SSIM_MIN_SIDE:
        raise AekitError(f"ms_ssim needs images at least {MS_SSIM_MIN_SIDE} pixels on the shorter side (5 scales of an "
                         f"11-pixel window), got {x.shape[-2]}x{x.shape[-1]}")
    g = _gaussian_window().to(x.device)
    terms = []
    for scale in range(len(MS_SSIM_WEIGHTS)):
        ssim, cs = _ssim_cs(x, y, g)  # (N, C) each
        if scale < len(MS_SSIM_WEIGHTS) - 1:
            terms.append(cs.clamp_min(0))
            pad = [s % 2 for s in x.shape[-2:]]
            x, y = F.avg_pool2d(x, 2, padding=pad), F.avg_pool2d(y, 2, padding=pad)  # (N, C, H, W) -> (N, C, H/2, W/2)
    terms.append(ssim.clamp_min(0))
    weights = torch.tensor(MS_SSIM_WEIGHTS, dtype=torch.float64, device=x.device).view(-1, 1, 1)
    per_channel = torch.stack(terms).pow(weights).prod(0)  # (5, N, C) -> (N, C); Wang et al. 2003, Eq. 7
    value = per_channel.mean(1)  # (N,)
    return value[0] if single else value


def _curve(rate: Sequence[float], dist: Sequence[float], name: str) -> tuple[np.ndarray, np.ndarray]:
    """(log rate, distortion) as float64 arrays, checked: same length, finite, rates > 0."""
    r, d = np.asarray(rate, dtype=np.float64).ravel(), np.asarray(dist, dtype=np.float64).ravel()
    if len(r) != len(d):
        raise AekitError(f"curve {name} has {len(r)} rates but {len(d)} distortion values")
    if not (np.isfinite(r).all() and np.isfinite(d).all()):
        raise AekitError(f"curve {name} has a non-finite rate or distortion value")
    if (r <= 0).any():
        raise AekitError(f"curve {name} has a rate <= 0; rates are compared in log scale")
    return np.log(r), d


def _mean_of_fit(x: np.ndarray, y: np.ndarray, lo: float, hi: float, method: str, name: str, axis: str) -> float:
    """Mean over [lo, hi] of y(x) fitted through the points (sorted here): PCHIP or a least-squares cubic."""
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    if (np.diff(x) <= 0).any():
        raise AekitError(f"curve {name} has two points with the same {axis}: cannot interpolate over {axis}")
    if method == "pchip":
        from scipy.interpolate import PchipInterpolator

        integral = float(PchipInterpolator(x, y).integrate(lo, hi))  # Fritsch & Carlson 1980
    else:
        antiderivative = np.polyint(np.polyfit(x, y, 3))  # Bjøntegaard 2001, VCEG-M33 (exact through 4 points)
        integral = float(np.polyval(antiderivative, hi) - np.polyval(antiderivative, lo))
    return integral / (hi - lo)


def _bd_delta(xa: np.ndarray, ya: np.ndarray, xb: np.ndarray, yb: np.ndarray, method: str, axis: str) -> float:
    """Mean of y_b - y_a over the overlap of the two x ranges."""
    if method not in ("pchip", "cubic"):
        raise AekitError(f"unknown Bjøntegaard method {method!r}: use 'pchip' or 'cubic'")
    need = 2 if method == "pchip" else 4
    for name, x in (("a", xa), ("b", xb)):
        if len(x) < need:
            raise AekitError(f"curve {name} has {len(x)} points; method {method!r} needs at least {need}")
    lo, hi = max(xa.min(), xb.min()), min(xa.max(), xb.max())
    if not hi > lo:
        raise AekitError(f"the two curves do not overlap in {axis}: no Bjøntegaard delta")
    lo, hi = float(lo), float(hi)
    return _mean_of_fit(xb, yb, lo, hi, method, "b", axis) - _mean_of_fit(xa, ya, lo, hi, method, "a", axis)


def bd_rate(rate_a: Sequence[float], dist_a: Sequence[float], rate_b: Sequence[float], dist_b: Sequence[float],
            method: str = "pchip") -> float:
    """Bjøntegaard delta rate (VCEG-M33) of curve b against the anchor a, in percent: negative = b needs fewer bits.

    Log-rate is interpolated as a function of the distortion (PSNR, or any quality where higher is better) of each
    curve, and the mean log-rate difference over the overlapping distortion range is turned into a rate ratio:
    ``100 * (exp(mean(log r_b - log r_a)) - 1)``. ``method="pchip"`` (default) interpolates with a piecewise cubic
    Hermite (PCHIP, scipy's ``PchipInterpolator``), as current practice does (the JVET common test conditions'
    piecewise cubic, the ``bjontegaard`` package); ``method="cubic"`` fits one cubic polynomial by least squares
    (Bjøntegaard's original). Points may come in any order.

    Parameters
    ----------
    rate_a, dist_a : sequence of float
        The anchor's rates (> 0, e.g. bpp) and distortions (e.g. PSNR in dB); at least 2 points (4 for "cubic").
    rate_b, dist_b : sequence of float
        The tested curve's, likewise.
    method : {"pchip", "cubic"}

    Returns
    -------
    float
        The rate difference in percent.

    Examples
    --------
    >>> round(bd_rate([0.25, 0.5, 1.0], [25.0, 28.0, 31.5], [0.2, 0.4, 0.8], [25.0, 28.0, 31.5]), 6)
    -20.0
    """
    la, da = _curve(rate_a, dist_a, "a")
    lb, db = _curve(rate_b, dist_b, "b")
    return 100.0 * float(np.expm1(_bd_delta(da, la, db, lb, method, "distortion")))


def bd_psnr(rate_a: Sequence[float], dist_a: Sequence[float], rate_b: Sequence[float], dist_b: Sequence[float],
            method: str = "pchip") -> float:
    """Bjøntegaard delta PSNR (VCEG-M33) of curve b against the anchor a: the mean distortion gain at equal rate.

    Distortion (PSNR in dB, or another quality) is interpolated as a function of log-rate, by PCHIP (default) or
    by a least-squares cubic (``method="cubic"``), and averaged over the overlapping log-rate range; positive = b
    is better. Arguments as in :func:`bd_rate`.

    Examples
    --------
    >>> round(bd_psnr([0.25, 0.5, 1.0], [25.0, 28.0, 31.5], [0.25, 0.5, 1.0], [26.0, 29.0, 32.5]), 6)
    1.0
    """
    la, da = _curve(rate_a, dist_a, "a")
    lb, db = _curve(rate_b, dist_b, "b")
    return _bd_delta(la, da, lb, db, method, "log-rate")


def interpolate_psnr_at(rate: Sequence[float], psnr: Sequence[float], at_rate: float) -> float | None:
    """The PSNR of a curve at ``at_rate``, linear in log-rate between its points; None outside its rate range.

    For checks such as "beats JPEG at every rate <= 0.5 bpp": interpolate the anchor at each of the tested
    codec's rates. Points may come in any order.

    Examples
    --------
    >>> interpolate_psnr_at([0.25, 1.0], [25.0, 31.0], 0.5)
    28.0
    >>> interpolate_psnr_at([0.25, 1.0], [25.0, 31.0], 2.0) is None
    True
    """
    log_rate, values = _curve(rate, psnr, "to interpolate")
    if len(log_rate) == 0:
        raise AekitError("interpolate_psnr_at needs a curve of at least one point")
    if not (np.isfinite(at_rate) and at_rate > 0):
        raise AekitError(f"interpolate_psnr_at needs a finite rate > 0, got {at_rate}")
    order = np.argsort(log_rate, kind="stable")
    log_rate, values = log_rate[order], values[order]
    x = float(np.log(at_rate))
    if x < log_rate[0] or x > log_rate[-1]:
        return None
    return float(np.interp(x, log_rate, values))
