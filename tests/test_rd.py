"""Rate-distortion metrics: MS-SSIM against an independent numpy version and scikit-image, Bjøntegaard deltas on
curves whose answer is known, interpolation at a rate."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from skimage.metrics import structural_similarity

from aekit.errors import AekitError
from aekit.metrics.rd import MS_SSIM_WEIGHTS, bd_psnr, bd_rate, interpolate_psnr_at, ms_ssim

H, W = 176, 192  # both divisible by 16: no odd side at any of the 5 scales


def smooth_image(seed: int, channels: int = 3) -> torch.Tensor:
    """A photo-like (C, H, W) image in [0, 1]: blurred noise plus a gradient."""
    noise = np.random.default_rng(seed).standard_normal((channels, H, W))
    field = np.stack([gaussian_filter(c, 4) for c in noise])
    field = 0.5 + 0.2 * field / field.std() + 0.2 * np.linspace(-1, 1, W)[None, None]
    return torch.from_numpy(np.clip(field, 0, 1))


def numpy_ms_ssim(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """MS-SSIM of two (C, H, W) arrays written out directly (scipy's Gaussian filter, cropped to the valid part;
    2x2 block means), and the SSIM of the first scale alone."""
    c1, c2, crop = 0.01**2, 0.03**2, 5

    def blur(t):
        return gaussian_filter(t, 1.5, truncate=3.5)[crop:-crop, crop:-crop]  # an 11-tap window, valid part

    per_channel, first_ssim = [], []
    for x, y in zip(a, b):
        value = 1.0
        for scale, weight in enumerate(MS_SSIM_WEIGHTS):
            mx, my = blur(x), blur(y)
            vx, vy, cov = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
            cs = (2 * cov + c2) / (vx + vy + c2)
            ssim = ((2 * mx * my + c1) / (mx**2 + my**2 + c1) * cs).mean()
            if scale == 0:
                first_ssim.append(ssim)
            if scale == len(MS_SSIM_WEIGHTS) - 1:
                value *= max(ssim, 0) ** weight
            else:
                value *= max(cs.mean(), 0) ** weight
                h, w = x.shape
                x, y = (t.reshape(h // 2, 2, w // 2, 2).mean((1, 3)) for t in (x, y))
        per_channel.append(value)
    return float(np.mean(per_channel)), float(np.mean(first_ssim))


def test_ms_ssim_of_an_image_with_itself_is_one():
    x = torch.stack([smooth_image(0), smooth_image(1)])
    assert ms_ssim(x, x).tolist() == [1.0, 1.0]
    assert ms_ssim(x[0], x[0]).dim() == 0


def test_ms_ssim_falls_as_noise_grows():
    x = smooth_image(2)
    noise = torch.from_numpy(np.random.default_rng(3).standard_normal(x.shape))
    values = [float(ms_ssim(x, (x + s * noise).clamp(0, 1))) for s in (0.0, 0.01, 0.03, 0.1, 0.3)]
    assert values[0] == 1.0
    assert all(a > b for a, b in itertools.pairwise(values)), values
    assert values[-1] < 0.9


def test_ms_ssim_matches_an_independent_numpy_version_and_scikit_images_ssim_at_the_first_scale():
    x, y = smooth_image(4), smooth_image(5)
    y = 0.7 * x + 0.3 * y  # related but different images
    expected, first_scale = numpy_ms_ssim(x.numpy(), y.numpy())
    assert float(ms_ssim(x, y)) == pytest.approx(expected, rel=1e-9)
    assert 0.3 < expected < 0.999
    skimage_ssim = structural_similarity(x.numpy(), y.numpy(), gaussian_weights=True, sigma=1.5, data_range=1.0,
                                         use_sample_covariance=False, channel_axis=0)
    assert first_scale == pytest.approx(skimage_ssim, rel=1e-9)


def test_ms_ssim_of_two_flat_images_is_the_luminance_term_to_the_last_weight():
    # no variance anywhere: every contrast-structure term is 1, and only scale 5's luminance term is left
    a, b = torch.full((1, H, W), 0.5, dtype=torch.float64), torch.full((1, H, W), 0.6, dtype=torch.float64)
    luminance = (2 * 0.5 * 0.6 + 0.01**2) / (0.5**2 + 0.6**2 + 0.01**2)
    assert float(ms_ssim(a, b)) == pytest.approx(luminance ** MS_SSIM_WEIGHTS[-1], rel=1e-12)


def test_ms_ssim_is_per_image_in_a_batch_and_checks_its_input():
    x = torch.stack([smooth_image(6), smooth_image(7)])
    y = torch.stack([smooth_image(8), smooth_image(9)])
    batch = ms_ssim(x, y)
    assert batch.dtype == torch.float64 and batch.shape == (2,)
    assert batch[1].item() == pytest.approx(ms_ssim(x[1], y[1]).item(), rel=1e-12)
    with pytest.raises(AekitError, match="at least 161 pixels"):
        ms_ssim(torch.rand(3, 160, 400), torch.rand(3, 160, 400))
    with pytest.raises(AekitError, match="shape"):
        ms_ssim(x, y[:, :1])
    with pytest.raises(AekitError, match="float images"):
        ms_ssim(torch.zeros(3, H, W, dtype=torch.uint8), torch.zeros(3, H, W, dtype=torch.uint8))


RATES = [0.12, 0.2, 0.31, 0.45, 0.7, 1.1, 1.6]  # a JPEG-like curve on Kodak
PSNRS = [23.1, 25.0, 26.6, 28.0, 29.9, 32.1, 34.0]
SHUFFLE = [3, 0, 6, 1, 5, 2, 4]


@pytest.mark.parametrize("method", ["pchip", "cubic"])
def test_bd_of_a_curve_against_itself_is_zero(method):
    assert bd_rate(RATES, PSNRS, RATES, PSNRS, method=method) == pytest.approx(0, abs=1e-10)
    assert bd_psnr(RATES, PSNRS, RATES, PSNRS, method=method) == pytest.approx(0, abs=1e-10)


@pytest.mark.parametrize("method", ["pchip", "cubic"])
def test_four_fifths_of_the_rate_everywhere_is_minus_20_percent_and_points_may_come_unsorted(method):
    rates_b = [0.8 * RATES[i] for i in SHUFFLE]
    psnrs_b = [PSNRS[i] for i in SHUFFLE]
    assert bd_rate(RATES, PSNRS, rates_b, psnrs_b, method=method) == pytest.approx(-20, abs=1e-9)
    assert bd_rate(rates_b, psnrs_b, RATES, PSNRS, method=method) == pytest.approx(25, abs=1e-9)


@pytest.mark.parametrize("method", ["pchip", "cubic"])
def test_one_db_more_everywhere_is_plus_one_db(method):
    assert bd_psnr(RATES, PSNRS, RATES, [p + 1 for p in PSNRS], method=method) == pytest.approx(1, abs=1e-10)


@pytest.mark.parametrize("method", ["pchip", "cubic"])
def test_bd_rate_averages_over_the_overlap_only(method):
    # anchor: log r linear in PSNR over 24..36; b: on 26..34 only, log r_b = log r_a + 0.1 (p - 28), whose mean over
    # the overlap (26..34, centre 30) is 0.2; both fits are exact on these curves
    psnr_a = np.linspace(24, 36, 7)
    psnr_b = np.linspace(26, 34, 5)
    rate_a = np.exp(-2 + 0.25 * (psnr_a - 24))
    rate_b = np.exp(-2 + 0.25 * (psnr_b - 24) + 0.1 * (psnr_b - 28))
    assert bd_rate(rate_a, psnr_a, rate_b, psnr_b, method=method) == pytest.approx(100 * math.expm1(0.2), rel=1e-9)


def test_curves_that_cannot_be_compared_raise():
    with pytest.raises(AekitError, match="do not overlap"):
        bd_rate([0.1, 0.2], [20, 22], [1.0, 2.0], [30, 32])
    with pytest.raises(AekitError, match="do not overlap"):
        bd_psnr([0.1, 0.2], [20, 22], [1.0, 2.0], [30, 32])
    with pytest.raises(AekitError, match="at least 4"):
        bd_rate(RATES[:3], PSNRS[:3], RATES, PSNRS, method="cubic")
    with pytest.raises(AekitError, match="at least 2"):
        bd_rate(RATES, PSNRS, [0.5], [28.0])
    with pytest.raises(AekitError, match="rate <= 0"):
        bd_rate([0.0, 0.2], [20, 22], RATES, PSNRS)
    with pytest.raises(AekitError, match="same distortion"):
        bd_rate([0.1, 0.2, 0.3], [24, 26, 26], RATES, PSNRS)
    with pytest.raises(AekitError, match="unknown Bjøntegaard method"):
        bd_rate(RATES, PSNRS, RATES, PSNRS, method="akima")


def test_interpolate_psnr_at_is_linear_in_log_rate_and_none_outside():
    rates, psnrs = [1.0, 0.25, 0.5], [31.5, 25.0, 28.0]
    assert interpolate_psnr_at(rates, psnrs, 0.5) == 28.0
    assert interpolate_psnr_at(rates, psnrs, 0.25) == 25.0
    assert interpolate_psnr_at(rates, psnrs, math.sqrt(0.125)) == pytest.approx(26.5, abs=1e-12)  # half-way in log
    assert interpolate_psnr_at(rates, psnrs, 0.2) is None
    assert interpolate_psnr_at(rates, psnrs, 1.01) is None
    with pytest.raises(AekitError, match="rate > 0"):
        interpolate_psnr_at(rates, psnrs, 0.0)
