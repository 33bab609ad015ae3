"""The Gaussian mixture over training codes (aekit.core.code_mixture): what it fits, what it draws, its errors."""

import math

import pytest
import torch

from aekit import AekitError
from aekit.core.code_mixture import MAX_NUMBERS, CodeMixture


def two_clusters(n=600, d=3, gap=10.0, seed=0):
    """(n, d) codes in two tight clusters at -gap/2 and +gap/2 along every axis, 1/4 and 3/4 of them."""
    g = torch.Generator().manual_seed(seed)
    side = (torch.arange(n) >= n // 4).double() * 2 - 1  # -1 for the first quarter, +1 for the rest
    return side[:, None] * gap / 2 + 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64)


def test_two_components_find_two_clusters_and_their_weights():
    codes = two_clusters()
    mixture = CodeMixture.fit(codes, 2, seed=0)
    order = mixture.means[:, 0].argsort()
    assert torch.allclose(mixture.means[order], torch.tensor([[-5.0] * 3, [5.0] * 3], dtype=torch.float64), atol=0.2)
    assert torch.allclose(mixture.weights[order], torch.tensor([0.25, 0.75], dtype=torch.float64), atol=0.02)
    for tril in mixture.scale_trils:  # each cluster's own spread (0.5 per axis), not the spread between them
        assert torch.allclose((tril @ tril.T).diagonal(), torch.full((3,), 0.25, dtype=torch.float64), rtol=0.25)


def test_a_mixture_draws_no_codes_between_clusters_where_one_gaussian_draws_many():
    codes = two_clusters()
    one, two = (CodeMixture.fit(codes, k, seed=0).sample(2000, seed=1) for k in (1, 2))
    assert one.dtype == two.dtype == torch.float32 and one.shape == two.shape == (2000, 3)
    between = lambda z: (z[:, 0].abs() < 2.5).float().mean().item()  # noqa: E731 - the gap between the clusters
    assert between(two) < 0.01 and between(one) > 0.3
    assert abs((two[:, 0] < 0).float().mean().item() - 0.25) < 0.04  # drawn by the fitted weights


def test_one_component_is_the_codes_mean_and_covariance():
    codes = torch.randn(4000, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    codes = codes @ torch.tensor([[2.0, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0.5, 0], [0, 0, 0, 3]], dtype=torch.float64)
    mixture = CodeMixture.fit(codes + 7, 1)
    assert torch.allclose(mixture.means[0], codes.mean(0) + 7, atol=1e-8)
    tril = mixture.scale_trils[0]
    assert torch.allclose(tril @ tril.T, torch.cov(codes.T, correction=0), rtol=1e-3, atol=1e-3)


def test_log_prob_is_the_mixture_density():
    codes = two_clusters(d=2)
    mixture = CodeMixture.fit(codes, 2, seed=0)
    points = torch.tensor([[-5.0, -5.0], [5.0, 5.0], [0.0, 0.0]], dtype=torch.float64)
    expected = torch.zeros(3, dtype=torch.float64)
    for w, mean, tril in zip(mixture.weights, mixture.means, mixture.scale_trils):
        normal = torch.distributions.MultivariateNormal(mean, scale_tril=tril)
        expected += w * normal.log_prob(points).exp()
    assert torch.allclose(mixture.log_prob(points), expected.log(), atol=1e-6)
    assert mixture.log_prob(points)[2] < mixture.log_prob(points)[:2].min() - 20  # nothing lives between them


def test_a_seed_gives_the_same_fit_and_draws_and_maps_keep_their_shape():
    maps = torch.randn(300, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    a, b = CodeMixture.fit(maps, 3, seed=5), CodeMixture.fit(maps, 3, seed=5)
    assert a.shape == (2, 3, 3) and torch.equal(a.means, b.means)
    assert torch.equal(a.sample(10, seed=2), b.sample(10, seed=2)) and a.sample(10, seed=2).shape == (10, 2, 3, 3)
    assert not torch.equal(a.sample(10, seed=2), a.sample(10, seed=3))


def test_codes_of_any_scale_are_fitted_alike():
    """The regularization is relative to the codes' spread: codes 1e4 times larger get the same mixture, scaled."""
    codes = two_clusters()
    small, large = CodeMixture.fit(codes, 2, seed=0), CodeMixture.fit(codes * 1e4, 2, seed=0)
    assert torch.allclose(large.means / 1e4, small.means, rtol=1e-6, atol=1e-9)
    assert torch.allclose(large.weights, small.weights)


@pytest.mark.parametrize("components", [0, -1, 1.5, True])
def test_a_bad_number_of_components_is_refused(components):
    with pytest.raises(AekitError, match="components"):
        CodeMixture.fit(two_clusters(), components)


def test_too_few_codes_or_too_many_numbers_or_bad_codes_are_refused():
    with pytest.raises(AekitError, match="at least 20 codes"):
        CodeMixture.fit(torch.randn(19, 3), 10)
    with pytest.raises(AekitError, match="too large"):
        CodeMixture.fit(torch.randn(8, MAX_NUMBERS + 1), 1)
    with pytest.raises(AekitError, match="NaN"):
        CodeMixture.fit(torch.full((10, 2), math.nan), 1)
    with pytest.raises(AekitError, match="batch"):
        CodeMixture.fit(torch.randn(5), 1)
    mixture = CodeMixture.fit(two_clusters(), 1)
    with pytest.raises(AekitError, match="codes of 4 numbers, a mixture over 3"):
        mixture.log_prob(torch.zeros(2, 4))
    with pytest.raises(AekitError, match=">= 1"):
        mixture.sample(0)
