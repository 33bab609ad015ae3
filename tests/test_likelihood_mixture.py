"""The mixture of discretized logistics (``--likelihood logistic-mixture``): an exact distribution over a pixel's
8-bit values whose first C outputs stay the mean image, that fits pixels a single logistic cannot."""

from __future__ import annotations

import pytest
import torch

import aekit
from aekit.core.likelihoods import LIKELIHOODS, MIXTURE

NLL = LIKELIHOODS["logistic-mixture"].nll
P = LIKELIHOODS["logistic-mixture"].params
LEVELS = torch.arange(256, dtype=torch.float64) / 255


def _grid(c: int) -> torch.Tensor:
    """Every 8-bit value of a pixel of c channels, as (256**c, c, 1, 1) targets."""
    values = torch.cartesian_prod(*[LEVELS] * c) if c > 1 else LEVELS[:, None]
    return values.view(-1, c, 1, 1)


def _outputs(c: int, seed: int, offsets: float = 0.3, log_scale: float = -3.0, spread: float = 1.5):
    """Random decoder outputs for one pixel of c channels, float64: groups of c (mean logits, then the K offsets,
    log-scales, coefficients and mixture logits)."""
    g = torch.Generator().manual_seed(seed)
    groups = torch.randn(P, c, generator=g, dtype=torch.float64)
    groups[0] *= 0.5  # means near the middle
    groups[1:1 + MIXTURE] *= offsets
    groups[1 + MIXTURE:1 + 2 * MIXTURE] = log_scale + spread * groups[1 + MIXTURE:1 + 2 * MIXTURE]
    groups[1 + 3 * MIXTURE:] *= 2.0
    return groups.reshape(1, P * c, 1, 1)


@pytest.mark.parametrize("c", [1, 2])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_mixture_is_a_distribution_over_every_value_of_a_pixel(c, seed):
    """Summed over all 256**c values of a pixel, its probabilities make one (sharp and broad components, the
    edge bins taking the tails), whatever the coupling."""
    outputs, grid = _outputs(c, seed, spread=3.0), _grid(c)
    nll = NLL(outputs.expand(len(grid), -1, -1, -1), grid, 0.0)
    assert nll.shape == grid.shape and torch.isfinite(nll).all()
    assert float(torch.exp(-nll.sum(1)).sum()) == pytest.approx(1.0, abs=1e-5)  # as the single logistic's


@pytest.mark.parametrize("c", [1, 2])
def test_the_first_outputs_are_the_mixtures_mean_image(c):
    """E[x] under the mixture is sigmoid of the first C outputs (away from the edges, where no tail is cut), so the
    model's mean image, reconstructions and samples need nothing new."""
    for seed in range(3):
        outputs, grid = _outputs(c, seed, offsets=0.05, spread=0.3), _grid(c)
        p = torch.exp(-NLL(outputs.expand(len(grid), -1, -1, -1), grid, 0.0).sum(1)).view(-1, 1)
        expected = (p * grid.view(-1, c)).sum(0)
        torch.testing.assert_close(expected, torch.sigmoid(outputs[0, :c, 0, 0]), atol=2e-3, rtol=0)
        components = torch.sigmoid(outputs[0, :c, 0, 0]) + outputs.view(P, c)[1:1 + MIXTURE]
        assert float((components - expected).abs().max()) > 0.02  # the components are not all at the mean


def test_identical_components_are_the_coupled_logistic():
    """K copies of one coupled logistic (any mixture weights) score what ``logistic-rgb`` scores for the pixel."""
    g = torch.Generator().manual_seed(3)
    rgb = torch.randn(1, 9, 1, 1, generator=g, dtype=torch.float64) - torch.tensor(
        [0.0] * 3 + [2.5] * 3 + [0.0] * 3, dtype=torch.float64).view(1, 9, 1, 1)
    groups = torch.zeros(P, 3, dtype=torch.float64)
    groups[0] = rgb[0, :3, 0, 0]
    groups[1:1 + MIXTURE] = 0.4  # the same offset for every component: centred away
    groups[1 + MIXTURE:1 + 2 * MIXTURE] = rgb[0, 3:6, 0, 0]
    groups[1 + 2 * MIXTURE:1 + 3 * MIXTURE] = rgb[0, 6:, 0, 0]
    groups[1 + 3 * MIXTURE:] = torch.randn(MIXTURE, 3, generator=g, dtype=torch.float64)
    x = torch.randint(0, 256, (32, 3, 1, 1), generator=g, dtype=torch.float64) / 255
    mixture = NLL(groups.reshape(1, -1, 1, 1).expand(32, -1, -1, -1), x, 0.0).sum(1)
    single = LIKELIHOODS["logistic-rgb"].nll(rgb.expand(32, -1, -1, -1), x, 0.0).sum(1)
    torch.testing.assert_close(mixture, single)


def test_outputs_broadcast_over_the_targets_as_importance_samples_do():
    """(S, B, ...) decodings against (B, ...) images: each sample scored as on its own."""
    g = torch.Generator().manual_seed(4)
    outputs = torch.randn(2, 3, 3 * P, 2, 2, generator=g)
    target = torch.randint(0, 256, (3, 3, 2, 2), generator=g).float() / 255
    together = NLL(outputs, target, 0.0)
    assert together.shape == (2, 3, 3, 2, 2)
    for s in range(2):
        torch.testing.assert_close(together[s], NLL(outputs[s], target, 0.0))


def test_a_mixture_fits_two_valued_pixels_that_one_logistic_cannot():
    """Pixels that are dark or light (an edge seen at either side), with colour noise: the best mixture spends at
    least 0.5 nats a dimension less than the best single coupled logistic; gradients stay finite."""
    g = torch.Generator().manual_seed(5)
    side = torch.randint(0, 2, (4000, 1), generator=g).float()
    levels = (60 + 130 * side + 4 * torch.randn(4000, 3, generator=g)).round().clamp(0, 255) / 255
    target = levels.view(4000, 3, 1, 1)
    best = {}
    for name in ("logistic-rgb", "logistic-mixture"):
        params = LIKELIHOODS[name].params
        start = torch.zeros(params, 3)
        start[1:] = -2.0  # narrow scales (the coupled logistic's second group)
        if name == "logistic-mixture":  # components spread over the range, equal weights, no coupling
            start[1:1 + MIXTURE] = torch.linspace(-0.3, 0.3, MIXTURE)[:, None]
            start[1 + 2 * MIXTURE:] = 0.0
        else:
            start[2] = 0.0
        theta = start.reshape(1, 3 * params, 1, 1).requires_grad_()
        optimizer = torch.optim.Adam([theta], lr=0.05)
        for _ in range(400):
            optimizer.zero_grad()
            loss = LIKELIHOODS[name].nll(theta, target, 0.0).mean()
            loss.backward()
            assert torch.isfinite(theta.grad).all()
            optimizer.step()
        best[name] = float(loss.detach())
    assert best["logistic-mixture"] < best["logistic-rgb"] - 0.5


def test_a_colour_vae_with_the_mixture_trains_and_reports_bits_per_dim(tmp_path):
    g = torch.Generator().manual_seed(0)
    base = torch.randint(40, 216, (1, 3, 16, 16), generator=g)
    images = (base + torch.randint(-30, 31, (120, 1, 16, 16), generator=g)).clamp(0, 255).to(torch.uint8)
    splits = aekit.Splits(aekit.ImageSet(images[:100], None, "a"), aekit.ImageSet(images[100:], None, "b"))
    run = aekit.train("vae", arch="resnet", hidden=(8, 16), likelihood="logistic-mixture", latent_channels=2,
                      epochs=2, batch_size=20, splits=splits, out=tmp_path / "run", progress=False, log=None)
    assert run.config.model.outputs == P and run.model.decode(torch.zeros(1, 2, 4, 4)).shape == (1, 3 * P, 16, 16)
    assert run.model.reconstruct(images[:2]).shape == (2, 3, 16, 16)
    losses = [row["test_loss"] for row in run.history]
    assert losses[1] < losses[0]
    v = aekit.evaluate(run, splits, iw_samples=2, frechet=False)["variational"]
    assert "mixture" in v["likelihood_note"] and 0 < v["iw_nll_bits_per_dim"] < 16  # finite, of the 8-bit images
    reloaded = aekit.load(tmp_path / "run")
    assert reloaded.config.objective.likelihood == "logistic-mixture"
    torch.testing.assert_close(reloaded.model.reconstruct(images[:2]), run.model.reconstruct(images[:2]))
