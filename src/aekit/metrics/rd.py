"""Rate-distortion metrics: MS-SSIM (:mod:`aekit.core.msssim`), Bjøntegaard deltas (BD-rate, BD-PSNR), and a
curve's PSNR at a given rate."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..core.msssim import MS_SSIM_MIN_SIDE, MS_SSIM_WEIGHTS, ms_ssim
from ..errors import AekitError

__all__ = ["MS_SSIM_MIN_SIDE", "MS_SSIM_WEIGHTS", "bd_psnr", "bd_rate", "interpolate_psnr_at", "ms_ssim"]

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
