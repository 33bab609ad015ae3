"""Evaluation metrics: the IW likelihood against a closed form, its bounds, image metrics, active and dead
units, the Fréchet distance and its cached classifier."""

import copy
import math

import numpy as np
import pytest
import torch

import aekit
from aekit.core.config import ObjectiveConfig
from aekit.core.latent import DiagonalGaussian
from aekit.errors import AekitError
from aekit.metrics.frechet import frechet_distance, load_or_train_classifier
from aekit.metrics.likelihood import (
    active_units,
    importance_weighted_log_likelihood,
    iw_decoding,
    log_likelihood_fn,
    variational_metrics,
)
from aekit.metrics.pixels import psnr_per_image, ssim_per_image
from aekit.metrics.sparsity import sparsity_metrics

torch.set_flush_denormal(True)
BERNOULLI = ObjectiveConfig(likelihood="bernoulli")

# ----- probabilistic PCA: a linear-Gaussian VAE whose log p(x) is known in closed form -----


class PPCA:
    """x = W z + b + N(0, s² I), z ~ N(0, I), with orthogonal columns in W so the exact posterior is diagonal."""

    def __init__(self, p: int = 6, d: int = 2, noise: float = 0.3, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(p, d, generator=g, dtype=torch.float64))
        self.w = q * torch.tensor([2.0, 0.8], dtype=torch.float64)[:d]  # (P, D), W^T W = diag(4, 0.64)
        self.b = torch.randn(p, generator=g, dtype=torch.float64)
        self.noise = noise
        self.p, self.d = p, d

    def sample_x(self, n: int, seed: int = 1) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.d, generator=g, dtype=torch.float64)
        return z @ self.w.T + self.b + self.noise * torch.randn(n, self.p, generator=g, dtype=torch.float64)

    def exact_log_px(self, x: torch.Tensor) -> torch.Tensor:
        cov = self.w @ self.w.T + self.noise**2 * torch.eye(self.p, dtype=torch.float64)
        return torch.distributions.MultivariateNormal(self.b, covariance_matrix=cov).log_prob(x)

    def encode(self, x: torch.Tensor, mean_scale: float = 1.0, extra_logvar: float = 0.0) -> DiagonalGaussian:
        # Exact posterior (Tipping & Bishop 1999): M = W^T W + s² I, mean M^-1 W^T (x - b), cov s² M^-1.
        m = (self.w * self.w).sum(0) + self.noise**2  # (D,): M is diagonal
        mean = (x - self.b) @ self.w / m
        logvar = torch.log(self.noise**2 / m).expand_as(mean)
        return DiagonalGaussian(mean_scale * mean, logvar + extra_logvar)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.w.T + self.b  # (M, D) -> (M, P) means

    def log_likelihood(self, mean: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return -0.5 * (((x - mean) / self.noise) ** 2 + math.log(2 * math.pi * self.noise**2)).sum(-1)


def test_iw_with_the_exact_posterior_is_exact_for_any_k_and_chunk():
    model = PPCA()
    x = model.sample_x(40)
    exact = model.exact_log_px(x)
    for k, chunk in ((1, 8192), (7, 3), (50, 1), (50, 10_000)):
        log_px, elbo = importance_weighted_log_likelihood(
            model.encode, model.decode, model.log_likelihood, x, k, chunk_size=chunk
        )
        assert log_px.shape == (40,)
        assert torch.allclose(log_px, exact, atol=1e-8), (k, chunk)  # every weight is p(x)
        if k >= 50:  # the ELBO's reconstruction term is a K-sample average; its KL(q || p(z|x)) gap is 0
            assert abs(float((elbo - exact).mean())) < 0.1


def test_iw_converges_to_the_exact_log_likelihood_from_a_poor_posterior():
    model = PPCA()
    x = model.sample_x(30)
    exact = model.exact_log_px(x)

    def poor(xb):  # shrunk means, doubled variances: a proposal that is wrong but covers the posterior
        return model.encode(xb, mean_scale=0.85, extra_logvar=math.log(2.0))

    one, elbo = importance_weighted_log_likelihood(poor, model.decode, model.log_likelihood, x, 1)
    many, _ = importance_weighted_log_likelihood(poor, model.decode, model.log_likelihood, x, 5000, chunk_size=20_000)
    gap = float((exact - elbo).mean())
    assert gap > 0.5  # the ELBO is loose for this posterior (about 1.2 nats) ...
    assert float((exact - one).mean()) > 0.5  # ... and so is IW with K = 1 ...
    assert float((exact - many).abs().max()) < 0.1  # ... but with K = 5000 every image is within 0.1 nats
    assert abs(float((exact - many).mean())) < 0.01


def test_the_gaussian_likelihood_callable_is_the_gaussian_density_of_the_sigmoid_mean():
    g = torch.Generator().manual_seed(0)
    mean = torch.rand(5, 1, 4, 4, generator=g) * 0.8 + 0.1
    x = torch.rand(5, 1, 4, 4, generator=g)
    got = log_likelihood_fn(ObjectiveConfig(likelihood="gaussian", gaussian_std=0.2))(torch.logit(mean), x)
    want = torch.distributions.Normal(mean, 0.2).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(got, want, atol=1e-4)
    bern = log_likelihood_fn(BERNOULLI)(torch.logit(mean), x)
    want_bern = (x * mean.log() + (1 - x) * (1 - mean).log()).flatten(1).sum(1)
    assert torch.allclose(bern, want_bern, atol=1e-4)


def test_iw_rejects_zero_samples():
    model = PPCA()
    with pytest.raises(AekitError, match="iw-samples"):
        importance_weighted_log_likelihood(model.encode, model.decode, model.log_likelihood, model.sample_x(2), 0)


# ----- a small trained VAE -----


@pytest.fixture(scope="module")
def data():
    return aekit.load_dataset("mnist-5k", progress=False)


@pytest.fixture(scope="module")
def vae(tmp_path_factory, data):
    return aekit.train("vae", data="mnist-5k", splits=data, hidden=(128,), latent_dim=8, epochs=2, batch_size=64,
                       out=tmp_path_factory.mktemp("vae"), progress=False, log=None).model


def test_the_fast_conv_decoding_gives_the_plain_estimate_and_leaves_the_model_as_it_was(data):
    from aekit.core.config import ModelConfig
    from aekit.core.model import Autoencoder

    torch.manual_seed(0)
    config = ModelConfig(arch="conv", latent="gaussian", latent_dim=6, hidden=(8, 16), code_scale=2.0)
    model = Autoencoder(config).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    decode, chunk = iw_decoding(model)
    assert decode != model.decode and chunk < 2048
    images = data.test.images[:6]
    ll = log_likelihood_fn(BERNOULLI)
    k = 2100  # K >= both chunk sizes: one image per pass either way, so both draw the same samples
    plain, _ = importance_weighted_log_likelihood(model.encode, model.decode, ll, images, k, seed=1)
    fast, _ = importance_weighted_log_likelihood(model.encode, decode, ll, images, k, chunk_size=chunk, seed=1)
    assert torch.allclose(fast, plain, rtol=0, atol=1e-4)  # the same numbers (code_scale applied too)
    assert all(v.is_contiguous() for v in model.state_dict().values())  # the model keeps its layout ...
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # ... and its weights
    mlp = Autoencoder(ModelConfig(arch="mlp", latent="gaussian", latent_dim=6, hidden=(16,)))
    assert iw_decoding(mlp) == (mlp.decode, 2048)


def test_iw_nll_is_below_the_negative_elbo_and_falls_with_k(vae, data):
    images = data.test.images[:300]
    nll = {}
    for k in (1, 10, 100):
        log_px, elbo = importance_weighted_log_likelihood(
            vae.encode, vae.decode, log_likelihood_fn(BERNOULLI), images, k, seed=3
        )
        nll[k] = float(-log_px.mean())
    neg_elbo = float(-elbo.mean())
    assert nll[100] <= nll[10] <= nll[1]
    assert nll[10] < neg_elbo and nll[100] < neg_elbo - 1.0  # a clearly tighter bound
    assert abs(nll[1] - neg_elbo) < 3.0  # K = 1 is an (unbiased, noisier) ELBO estimate

    m = variational_metrics(vae, BERNOULLI, images, iw_samples=20, chunk_size=64)
    assert m["iw_nll_nats"] < m["neg_elbo_nats"]
    assert m["iw_nll_bits_per_dim"] == pytest.approx(m["iw_nll_nats"] / (784 * math.log(2)))
    assert "BCE" in m["likelihood_note"] and len(m["kl_per_dim_nats"]) == 8
    assert m["kl_nats"] == pytest.approx(sum(m["kl_per_dim_nats"]), rel=1e-3)


def test_active_units_count_drops_by_the_dimensions_made_dead(vae, data):
    images = data.test.images[:300]
    before = variational_metrics(vae, BERNOULLI, images, iw_samples=2)
    dead = [0, 3, 5]
    broken = copy.deepcopy(vae)
    with torch.no_grad():
        broken.head.mean.weight[dead] = 0.0  # posterior mean of these units: the bias, whatever x is
    after = variational_metrics(broken, BERNOULLI, images, iw_samples=2)
    was_active = [before["posterior_mean_variance"][j] > 0.01 for j in dead]
    assert sum(was_active) >= 2  # the test means something
    assert after["active_units"] == before["active_units"] - sum(was_active)
    assert all(after["posterior_mean_variance"][j] == 0 for j in dead)


def test_active_units_on_known_means():
    g = torch.Generator().manual_seed(0)
    means = torch.randn(500, 4, generator=g) * torch.tensor([1.0, 0.5, 0.05, 0.0])  # variances 1, .25, .0025, 0
    count, variance = active_units(means)
    assert count == 2
    assert variance[0] == pytest.approx(1.0, rel=0.2) and variance[3] == 0


# ----- image metrics -----


def test_psnr_and_ssim_of_an_image_with_itself_and_with_noise(data):
    clean = data.test.images[:6].float() / 255
    noisy = (clean + 0.2 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert (psnr_per_image(clean, clean) == 100.0).all()  # capped, documented as PSNR_CAP_DB
    assert np.allclose(ssim_per_image(clean, clean), 1.0)
    assert (ssim_per_image(noisy, clean) < 0.9).all()
    assert (psnr_per_image(noisy, clean) < 25).all()
    rgb = clean.expand(-1, 3, -1, -1)
    assert np.allclose(ssim_per_image(rgb, rgb), 1.0)
    assert (ssim_per_image(noisy.expand(-1, 3, -1, -1), rgb) < 0.9).all()


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 5, 9), (2, 7, 7), (1, 2, 8)])
def test_ssim_is_scikit_images_for_every_image(shape):
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(sum(shape))
    a = torch.rand(7, *shape, generator=g)
    b = (a + 0.3 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    b[0] = a[0]  # one identical pair: SSIM 1
    got = ssim_per_image(a, b, batch_size=3)  # several batches, the last one short
    win = min(7, *shape[1:])
    win -= 1 - win % 2
    if win < 3:
        assert got.shape == (7,) and np.isnan(got).all()
        return
    want = [structural_similarity(x.double().numpy(), y.double().numpy(), data_range=1.0, win_size=win,
                                  channel_axis=0) for x, y in zip(a, b)]
    assert np.allclose(got, want, rtol=0, atol=1e-12) and got[0] == pytest.approx(1.0)


def test_ssim_is_scikit_images_on_digits_and_their_blurred_copies(data):
    from skimage.metrics import structural_similarity

    digits = data.test.images[:20].float() / 255
    blurred = torch.nn.functional.avg_pool2d(digits, 3, stride=1, padding=1)
    want = [structural_similarity(x[0].double().numpy(), y[0].double().numpy(), data_range=1.0)
            for x, y in zip(digits, blurred)]
    assert np.allclose(ssim_per_image(digits, blurred), want, rtol=0, atol=1e-12)


def test_sparsity_metrics_count_dead_units():
    codes = torch.full((100, 4), 0.01)
    codes[:, 1] = torch.linspace(0.0, 0.09, 100)  # never above 0.1: dead
    codes[::10, 2] = 0.95  # fires on 10% of images
    codes[:, 3] = 0.5
    s = sparsity_metrics(codes, target=0.05)
    assert s["dead_units"] == 2 and s["dead_unit_indices"] == [0, 1]
    assert s["target_activation"] == 0.05
    below = float((codes < 0.05).double().mean())
    assert s["fraction_below_0.05"] == pytest.approx(below)
    assert s["mean_activation"] == pytest.approx(float(codes.double().mean()))


# ----- Fréchet distance and the feature classifier -----


def test_frechet_distance_matches_the_matrix_square_root_formula():
    from scipy import linalg

    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(size=(300, 6)) * 2 + 1
    mu_a, mu_b, ca, cb = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    want = ((mu_a - mu_b) ** 2).sum() + np.trace(ca + cb - 2 * linalg.sqrtm(ca @ cb).real)
    assert frechet_distance(a, b) == pytest.approx(want, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(AekitError):
        frechet_distance(a, b[:, :3])


def test_the_feature_classifier_is_trained_once_then_cached(data, tmp_path):
    import shutil

    from aekit.data import default_data_dir
    from aekit.metrics.frechet import _load_cached

    messages = []  # the session's data folder: the report tests reuse this classifier
    net, info = load_or_train_classifier("mnist-5k", data.train, data.test, log=messages.append)
    assert info["test_accuracy"] > 0.9 and info["image_shape"] == [1, 28, 28]
    folder = default_data_dir() / "classifiers" / "mnist-5k-1x28x28"
    assert (folder / "classifier.safetensors").is_file() and (folder / "classifier.json").is_file()
    trained = len(messages)
    again, info2 = load_or_train_classifier("mnist-5k", data.train, data.test, log=messages.append)
    assert len(messages) == trained and info2 == info  # loaded, not retrained
    x = data.test.images[:16]
    assert np.allclose(net.embed(x), again.embed(x))
    copy_ = tmp_path / "copy"
    shutil.copytree(folder, copy_)
    assert _load_cached(copy_, data.train, 10) is not None
    assert _load_cached(copy_, data.train.subset(torch.arange(100)), 10) is None  # other data: stale
    (copy_ / "classifier.safetensors").write_bytes(b"garbage")
    assert _load_cached(copy_, data.train, 10) is None  # a corrupt cache is rebuilt, not an error


def test_a_classifier_recipe_for_photos_mirrors_its_batches_and_keys_its_cache(tmp_path):
    """``flip``: a class told only by which half of the image is bright cannot be learnt from mirrored batches;
    ``epochs`` sets the length; a classifier cached with another recipe is retrained, not reused."""
    import aekit

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (512,), generator=g)
    images = torch.randint(0, 60, (512, 1, 8, 8), generator=g, dtype=torch.uint8)
    left = labels == 0
    images[left, :, :, :4] += 150
    images[~left, :, :, 4:] += 150
    train = aekit.ImageSet(images[:384], labels[:384], "train", ["left", "right"])
    test = aekit.ImageSet(images[384:], labels[384:], "test", ["left", "right"])
    messages = []
    _, plain = load_or_train_classifier("halves", train, test, data_dir=tmp_path, epochs=6, log=messages.append)
    _, mirrored = load_or_train_classifier("halves", train, test, data_dir=tmp_path, epochs=6, flip=True,
                                           log=messages.append)
    assert plain["test_accuracy"] > 0.95 and mirrored["test_accuracy"] < 0.75
    assert plain["steps"] == 6 * 6 and mirrored["recipe"] == {"epochs": 6, "flip": True}
    assert len(messages) == 2  # the second recipe retrained over the first one's cache
    _, again = load_or_train_classifier("halves", train, test, data_dir=tmp_path, epochs=6, flip=True,
                                        log=messages.append)
    assert len(messages) == 2 and again == mirrored  # the same recipe: loaded from the cache
