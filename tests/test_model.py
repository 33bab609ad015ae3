import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

from aekit.core import objectives
from aekit.core.config import ModelConfig, ObjectiveConfig, preset
from aekit.core.latent import DiagonalGaussian, PointPosterior
from aekit.core.model import Autoencoder
from aekit.errors import AekitError

SHAPES = [(1, 28, 28), (3, 32, 32), (3, 64, 64), (1, 13, 17)]


def make(family, arch, shape, **kw):
    cfg = preset(family, arch=arch, **kw)
    return Autoencoder(dataclasses.replace(cfg.model, channels=shape[0], height=shape[1], width=shape[2])), cfg


@pytest.mark.parametrize("family", ["ae", "dae", "sae", "vae"])
@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("shape", SHAPES)
def test_shapes_of_every_family_and_backbone(family, arch, shape):
    torch.manual_seed(0)
    model, cfg = make(family, arch, shape, latent_dim=6, hidden=(16, 8) if arch == "mlp" else (4, 8))
    x = torch.rand(3, *shape)
    posterior = model.encode(x)
    assert posterior.mode().shape == (3, 6)
    assert model.decode(posterior.sample()).shape == (3, *shape)
    assert model(x).shape == (3, *shape)
    assert 0 <= model(x).min() and model(x).max() <= 1
    terms = objectives.loss_terms(model, x, cfg.objective)
    assert set(terms) == {"loss", "recon", "kl", "sparsity"}
    assert all(t.shape == () and torch.isfinite(t) for t in terms.values())
    if family == "sae":
        codes = posterior.mode()
        assert (codes > 0).all() and (codes < 1).all()
    if family == "vae":
        assert isinstance(posterior, DiagonalGaussian) and terms["kl"] > 0
    else:
        assert isinstance(posterior, PointPosterior) and terms["kl"] == 0


def test_reference_vae_architecture_is_reproduced_exactly():
    # pytorch/examples vae/main.py: fc1 784->400, fc21/fc22 400->20, fc3 20->400, fc4 400->784
    model, _ = make("vae", "mlp", (1, 28, 28), hidden=(400,), latent_dim=20)
    reference = 784 * 400 + 400 + 2 * (400 * 20 + 20) + 20 * 400 + 400 + 400 * 784 + 784
    n_buffers = 20 + 20 * 20  # code_mean, code_scale_tril: not parameters
    assert sum(p.numel() for p in model.parameters()) == reference
    assert sum(b.numel() for b in model.buffers()) == n_buffers


def test_vae_kl_matches_torch_distributions():
    torch.manual_seed(1)
    mean, logvar = torch.randn(5, 7), torch.randn(5, 7)
    ours = DiagonalGaussian(mean, logvar).kl()
    ref = kl_divergence(Normal(mean, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    z = torch.randn(5, 7)
    torch.testing.assert_close(
        DiagonalGaussian(mean, logvar).log_prob(z), Normal(mean, torch.exp(0.5 * logvar)).log_prob(z).sum(1)
    )


def _iwae_setup(k, beta=1.0):
    torch.manual_seed(0)
    model, cfg = make("vae", "mlp", (1, 4, 4), hidden=(12,), latent_dim=3, importance_samples=k, beta=beta)
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(1)).round()
    return model, cfg.objective, x


@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_iwae_loss_is_the_importance_weighted_bound_of_the_drawn_samples(beta):
    model, objective, x = _iwae_setup(5, beta)
    noise = objectives.draw_noise(x, objective, 3, True, torch.Generator().manual_seed(2))
    assert noise["eps"].shape == (5, 6, 3)
    terms = objectives.loss_with_noise(model, x, noise, objective)
    # independently: log w_k = log p(x|z_k) + beta * (log p(z_k) - log q(z_k|x)), via torch.distributions
    q = model.encode(x)
    q_dist = Normal(q.mean, q.std)
    log_w = []
    for eps in noise["eps"]:
        z = q.mean + q.std * eps
        log_px = -F.binary_cross_entropy_with_logits(model.decode(z), x, reduction="none").flatten(1).sum(1)
        log_w.append(log_px + beta * (Normal(0.0, 1.0).log_prob(z).sum(1) - q_dist.log_prob(z).sum(1)))
    log_w = torch.stack(log_w)  # (K, B)
    expected = -(torch.logsumexp(log_w, 0) - torch.log(torch.tensor(5.0))).mean()
    torch.testing.assert_close(terms["loss"], expected, rtol=1e-5, atol=1e-4)
    assert terms["loss"] < -log_w.mean()  # tighter than the mean of the K one-sample ELBOs (Jensen)
    terms["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_iwae_bound_rises_towards_the_evaluators_log_likelihood_as_k_grows():
    from aekit.metrics.likelihood import importance_weighted_log_likelihood, log_likelihood_fn

    model, _, x = _iwae_setup(1)
    with torch.no_grad():
        def bound(k, seed):
            objective = dataclasses.replace(_iwae_setup(k)[1], importance_samples=k)
            return objectives.loss_terms(model, x, objective, torch.Generator().manual_seed(seed))["loss"].item()
        one, five, many = (sum(bound(k, s) for s in range(20)) / 20 for k in (1, 5, 500))
        log_px, _ = importance_weighted_log_likelihood(model.encode, model.decode, log_likelihood_fn(ObjectiveConfig(likelihood="bernoulli")),
                                                       x, 2000, seed=0)
    assert one > five > many  # minus the bound falls as K grows ...
    assert abs(many - (-log_px.mean().item())) < 0.05  # ... to minus the evaluator's IW log-likelihood


def test_importance_samples_need_a_variational_latent():
    with pytest.raises(AekitError, match="needs a variational latent"):
        preset("ae", importance_samples=5)
    with pytest.raises(AekitError, match="importance_samples must be between 1"):
        preset("vae", importance_samples=0)


def test_reparameterised_samples_have_the_posterior_moments():
    q = DiagonalGaussian(torch.tensor([[2.0, -1.0]]).expand(20000, 2), torch.log(torch.tensor([[0.25, 4.0]])).expand(20000, 2))
    z = q.sample(torch.Generator().manual_seed(0))
    torch.testing.assert_close(z.mean(0), torch.tensor([2.0, -1.0]), atol=0.05, rtol=0)
    torch.testing.assert_close(z.std(0), torch.tensor([0.5, 2.0]), atol=0.05, rtol=0)


def test_kl_sparsity_is_zero_at_the_target_rate_and_positive_elsewhere():
    rho = 0.05
    at_target = torch.full((64, 10), rho)
    assert objectives.kl_sparsity(at_target, rho).abs() < 1e-6
    assert objectives.kl_sparsity(torch.full((64, 10), 0.2), rho) > 0.1
    # matches the closed form for one unit
    rho_hat = 0.3
    expected = rho * torch.log(torch.tensor(rho / rho_hat)) + (1 - rho) * torch.log(torch.tensor((1 - rho) / (1 - rho_hat)))
    torch.testing.assert_close(objectives.kl_sparsity(torch.full((8, 1), rho_hat), rho), expected)


def _train_steps(objective, steps=150, seed=0):
    torch.manual_seed(seed)
    model, _ = make("sae", "mlp", (1, 8, 8), hidden=(32,), latent_dim=16)
    data = torch.rand(256, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = objectives.loss_terms(model, data, objective)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.embed(data).mean().item()


def test_l1_penalty_lowers_mean_activation():
    free = _train_steps(ObjectiveConfig(sparsity="none"))
    sparse = _train_steps(ObjectiveConfig(sparsity="l1", sparsity_weight=0.5))
    assert sparse < 0.5 * free


def test_kl_sparsity_drives_activation_towards_rho():
    mean = _train_steps(ObjectiveConfig(sparsity="kl", sparsity_weight=3.0, sparsity_target=0.05), steps=300)
    assert 0.03 < mean < 0.08


class _Spy(torch.nn.Module):
    """A model whose decoder ignores z and returns fixed logits; records the encoder's input."""

    def __init__(self, logits):
        super().__init__()
        self.config = ModelConfig(latent_dim=2)
        self.logits = logits
        self.seen = None

    is_variational = False

    def latent_shape(self, images=None):
        return (2,)

    def encode(self, x):
        self.seen = x.clone()
        return PointPosterior(x.flatten(1)[:, :2])

    def decode(self, z, size=None):
        return self.logits


def test_denoising_target_is_the_clean_image():
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(4, 1, 6, 6, generator=g)
    logits = torch.randn(4, 1, 6, 6, generator=g)
    spy = _Spy(logits)
    terms = objectives.loss_terms(spy, clean, ObjectiveConfig(noise_std=0.5), torch.Generator().manual_seed(1))
    assert not torch.allclose(spy.seen, clean)  # the encoder saw a corrupted image ...
    assert spy.seen.min() >= 0 and spy.seen.max() <= 1  # ... clipped to [0, 1]
    expected = F.binary_cross_entropy_with_logits(logits, clean, reduction="none").flatten(1).sum(1).mean()
    torch.testing.assert_close(terms["recon"], expected)  # ... and the loss scored the clean one


def test_corruptions_do_what_they_say():
    x = torch.full((1, 1, 100, 100), 0.5)
    g = torch.Generator().manual_seed(0)
    noisy = objectives.corrupt(x, noise_std=0.1, generator=g)
    assert abs((noisy - x).std().item() - 0.1) < 0.01
    masked = objectives.corrupt(x, mask_prob=0.3, generator=g)
    assert abs((masked == 0).float().mean().item() - 0.3) < 0.03
    sp = objectives.corrupt(x, salt_pepper=0.2, generator=g)
    assert abs((sp == 0).float().mean().item() - 0.1) < 0.02 and abs((sp == 1).float().mean().item() - 0.1) < 0.02
    assert objectives.corrupt(x) is x


def test_blind_noise_draws_one_std_per_image_in_the_range():
    x = torch.full((400, 1, 40, 40), 0.5)
    config = ObjectiveConfig(noise_std=0.4, noise_std_min=0.1)
    noise = objectives.draw_noise(x, config, 0, False, torch.Generator().manual_seed(0))
    stds = (0.4 * noise["gauss"]).flatten(1).std(1)  # the std each image is corrupted with
    assert stds.min() > 0.1 * 0.9 and stds.max() < 0.4 * 1.1
    assert stds.min() < 0.13 and stds.max() > 0.37  # the whole range, not one level
    assert abs(stds.mean().item() - 0.25) < 0.02  # uniform in [0.1, 0.4]
    fixed = objectives.draw_noise(x, ObjectiveConfig(noise_std=0.4, noise_std_min=0.4), 0, False,
                                  torch.Generator().manual_seed(0))
    torch.testing.assert_close(fixed["gauss"], objectives.draw_noise(x, ObjectiveConfig(noise_std=0.4), 0, False,
                                                                      torch.Generator().manual_seed(0))["gauss"])


def test_gaussian_likelihood_is_a_scaled_squared_error():
    logits = torch.zeros(2, 1, 2, 2)  # mean 0.5
    target = torch.ones(2, 1, 2, 2)
    nll = objectives.reconstruction_nll(logits, target, ObjectiveConfig(likelihood="gaussian", gaussian_std=0.5))
    expected = Normal(0.5, 0.5).log_prob(torch.tensor(1.0)).neg() * 4
    torch.testing.assert_close(nll, expected.expand(2))


def test_sampling_a_deterministic_ae_uses_the_fitted_code_gaussian():
    torch.manual_seed(0)
    model, _ = make("ae", "mlp", (1, 8, 8), hidden=(16,), latent_dim=3)
    images = torch.randint(0, 256, (500, 1, 8, 8), dtype=torch.uint8)
    model.fit_code_distribution(images)
    codes = model.embed(images)
    torch.testing.assert_close(model.code_mean, codes.mean(0), atol=1e-4, rtol=0)
    cov = model.code_scale_tril @ model.code_scale_tril.T
    torch.testing.assert_close(cov, torch.cov(codes.T), atol=1e-4, rtol=1e-3)
    assert model.sample(10, seed=3).shape == (10, 1, 8, 8)
    torch.testing.assert_close(model.sample(4, seed=3), model.sample(4, seed=3))


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_output_bias_init_starts_the_decoder_at_the_mean_image(arch):
    torch.manual_seed(0)
    model, _ = make("ae", arch, (3, 12, 10), hidden=(16,) if arch == "mlp" else (4, 8))
    images = torch.randint(0, 256, (50, 3, 12, 10), dtype=torch.uint8)
    images[:, 0] //= 4  # channel means differ
    model.init_output_bias(images)
    last = model.decoder.net[-2] if arch == "mlp" else model.decoder.net[-1]
    mean = images.float().mean(0) / 255
    if arch == "mlp":
        torch.testing.assert_close(torch.sigmoid(last.bias).view(3, 12, 10), mean, atol=1e-5, rtol=0)
    else:
        torch.testing.assert_close(last.bias, torch.logit(mean).mean((1, 2)))


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_decode_scales_the_code_before_the_decoder(arch):
    model, _ = make("sae", arch, (1, 12, 12))
    assert model.config.code_scale == pytest.approx(20.0)
    z = torch.rand(3, model.config.latent_dim) * 0.1
    with torch.no_grad():
        assert torch.allclose(model.decode(z), model.decoder(z * 20.0))
        assert not torch.allclose(model.decode(z), model.decoder(z), atol=1e-3)


def test_a_vae_samples_its_prior_or_a_gaussian_fitted_to_its_codes_after_training():
    """source="codes": draws from the Gaussian fitted to the posterior means (refused before a fit, since it
    starts as N(0, I)); the draws have the fitted mean and covariance; a plain AE has no prior to draw from."""
    cfg = preset("vae", arch="mlp", hidden=(16,), latent_dim=3)
    model = Autoencoder(cfg.model).eval()
    with pytest.raises(AekitError, match="code Gaussian is not fitted"):
        model.sample(2, source="codes")
    assert not model.code_distribution_fitted
    images = torch.rand(300, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    model.fit_code_distribution(images)
    assert model.code_distribution_fitted
    means = model.embed(images).double()
    z = model.draw_codes(20000, seed=1, source="codes").double()
    torch.testing.assert_close(z.mean(0), means.mean(0), atol=4 * float(means.std(0).max()) / 141, rtol=0)
    torch.testing.assert_close(torch.cov(z.T), torch.cov(means.T), atol=0.05 * float(torch.cov(means.T).abs().max()),
                               rtol=0)
    prior = model.draw_codes(20000, seed=1)  # the default for a VAE
    torch.testing.assert_close(torch.cov(prior.double().T), torch.eye(3, dtype=torch.float64), atol=0.05, rtol=0)
    assert model.sample(4, source="codes").shape == (4, 1, 28, 28)
    with pytest.raises(AekitError, match="'prior' or 'codes'"):
        model.sample(2, source="posterior")
    ae = Autoencoder(preset("ae", arch="mlp", hidden=(16,), latent_dim=3).model)
    with pytest.raises(AekitError, match="no prior"):
        ae.draw_codes(2, source="prior")
