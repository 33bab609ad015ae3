"""Pixel metrics between images in [0, 1]: PSNR and SSIM, per image."""

from __future__ import annotations

import numpy as np
import torch

PSNR_CAP_DB = 100.0  # PSNR of identical images: MSE is floored at 1e-10


def psnr_per_image(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """PSNR in dB between (N, C, H, W) images in [0, 1]; identical images give ``PSNR_CAP_DB`` (100 dB)."""
    mse = (a.float() - b.float()).pow(2).flatten(1).mean(1).clamp_min(10 ** (-PSNR_CAP_DB / 10))
    return (10 * torch.log10(1.0 / mse)).double().numpy()


def mean_psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """The mean over images of :func:`psnr_per_image`."""
    return float(psnr_per_image(a, b).mean())


def ssim_per_image(a: torch.Tensor, b: torch.Tensor, batch_size: int = 1000) -> np.ndarray:
    """SSIM (Wang et al. 2004) between (N, C, H, W) images in [0, 1], as scikit-image's
    ``structural_similarity(data_range=1, win_size=7)`` computes it, in float64 for a batch at a time.

    scikit-image averages the SSIM map over the pixels whose 7x7 window lies inside the image (it crops the
    border the filter padded), which are the windows of an unpadded 7x7 average pool; the variances are the
    sample ones (N - 1). RGB images average over channels, as with ``channel_axis``; images under 7 pixels a
    side use the largest odd window that fits, and under 3 pixels SSIM is undefined (NaN). The tests compare
    it with scikit-image's, image by image.
    """
    n, _, h, w = a.shape
    win = min(7, h, w)
    win -= 1 - win % 2  # odd
    if win < 3:
        return np.full(n, np.nan)
    cov_norm = win * win / (win * win - 1)
    c1, c2 = 0.01**2, 0.03**2

    def pool(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(t, win, stride=1)

    out = []
    for start in range(0, n, batch_size):
        x, y = a[start : start + batch_size].double(), b[start : start + batch_size].double()
        ux, uy = pool(x), pool(y)
        vx = cov_norm * (pool(x * x) - ux * ux)
        vy = cov_norm * (pool(y * y) - uy * uy)
        vxy = cov_norm * (pool(x * y) - ux * uy)
        ssim = (2 * ux * uy + c1) * (2 * vxy + c2) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
        out.append(ssim.flatten(1).mean(1))
    return torch.cat(out).numpy() if out else np.empty(0)


MAD_TO_STD = 0.6745  # the median of |N(0, 1)|: a Gaussian's median absolute deviation over its std


def estimate_noise_std(x: torch.Tensor) -> np.ndarray:
    """Each image's Gaussian noise std, estimated from its finest diagonal wavelet detail: (N, C, H, W) in [0, 1]
    -> (N,), on the [0, 1] scale (x 255 for 8-bit levels).

    Donoho and Johnstone (1994): the HH coefficients of a one-level Haar transform are mostly noise, and their
    median absolute value over 0.6745 estimates its std robustly against the few edges; averaged over channels
    (scikit-image's ``estimate_sigma`` does the same with a Daubechies wavelet). A clean photo reads a little
    above 0 from its finest texture."""
    x = x.double()
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    if h == 0 or w == 0:
        return np.full(len(x), np.nan)
    b = x[..., :h, :w]
    hh = (b[..., 0::2, 0::2] - b[..., 0::2, 1::2] - b[..., 1::2, 0::2] + b[..., 1::2, 1::2]) / 2  # (N, C, H/2, W/2)
    return (hh.abs().flatten(2).median(dim=2).values / MAD_TO_STD).mean(1).numpy()
