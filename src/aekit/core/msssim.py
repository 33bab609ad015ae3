"""Multi-scale SSIM (Wang, Simoncelli & Bovik 2003): a metric of :mod:`aekit.metrics.rd` and, as 1 - MS-SSIM, a
distortion a compressor can be trained on (``--distortion ms-ssim``), so it lives beside the objectives."""

from __future__ import annotations

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


def ms_ssim(a: torch.Tensor, b: torch.Tensor, *, floor: float = 0.0) -> torch.Tensor:
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
    floor : float
        The clamp of the terms (0 in the standard metric). Training on 1 - MS-SSIM passes a small positive floor:
        a term's power (x^0.0448 and the like) has an infinite slope at 0.

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
            terms.append(cs.clamp_min(floor))
            pad = [s % 2 for s in x.shape[-2:]]
            x, y = F.avg_pool2d(x, 2, padding=pad), F.avg_pool2d(y, 2, padding=pad)  # (N, C, H, W) -> (N, C, H/2, W/2)
    terms.append(ssim.clamp_min(floor))
    weights = torch.tensor(MS_SSIM_WEIGHTS, dtype=torch.float64, device=x.device).view(-1, 1, 1)
    per_channel = torch.stack(terms).pow(weights).prod(0)  # (5, N, C) -> (N, C); Wang et al. 2003, Eq. 7
    value = per_channel.mean(1)  # (N,)
    return value[0] if single else value
