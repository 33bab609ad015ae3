"""The PCA path (``pca_path``): a vector-code autoencoder that starts as PCA with as many numbers and learns a
correction to it, so training can only start from PCA's quality, not from the mean image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

import aekit
from aekit.core import model as model_module
from aekit.core.config import ModelConfig, preset
from aekit.core.model import Autoencoder
from aekit.errors import AekitError

QUIET = {"progress": False, "log": None}


@pytest.fixture(scope="module")
def digits():
    splits = aekit.load_dataset("mnist-5k", progress=False)
    return splits.train.images[:1500], splits.test.images[:500]


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    return float((10 * torch.log10(1 / (x - y).pow(2).flatten(1).mean(1))).mean())


def test_an_untrained_model_reconstructs_as_pca_does(digits):
    train, test = digits
    model = Autoencoder(ModelConfig(arch="conv", latent_dim=16, channels=1, pca_path=True)).eval()
    torch.manual_seed(5)  # the randomized SVD has its own seed: the global one changes nothing
    model.init_output_bias(train)
    flat = lambda x: x.reshape(len(x), -1).numpy().astype(np.float64) / 255  # noqa: E731
    pca = PCA(16, svd_solver="full").fit(flat(train))
    expected = torch.from_numpy(np.clip(pca.inverse_transform(pca.transform(flat(test))), 1e-3, 1 - 1e-3))
    ours = model.reconstruct(test).reshape(len(test), -1).double()
    x = torch.from_numpy(flat(test))
    assert abs(psnr(ours, x) - psnr(expected, x)) < 0.01  # a randomized SVD: the same subspace, to rounding
    assert (ours - expected).abs().mean() < 1e-4
    codes = model.embed(train).double()  # whitened: the training codes have unit variance, no correlation
    assert torch.allclose(codes.T.cov(), torch.eye(16, dtype=torch.float64), atol=2e-3)
    again = Autoencoder(model.config)
    torch.manual_seed(6)
    again.init_output_bias(train)
    assert torch.equal(again.pca_components, model.pca_components)


def test_a_stream_of_batches_fits_the_same_evenly_spaced_images(digits, monkeypatch):
    """Beyond the budget, every 2^j-th image is kept, in memory or streamed in batches of any size."""
    train, _ = digits
    monkeypatch.setattr(model_module, "PCA_FIT_BYTES", 4 * 784 * 300)  # room for 300: every 8th of 1,500 (188)
    cfg = ModelConfig(arch="mlp", hidden=(8,), latent_dim=10, channels=1, pca_path=True)
    whole, streamed, fitted = Autoencoder(cfg), Autoencoder(cfg), []
    whole.init_output_bias(train)
    streamed.init_output_bias(train[i:i + 97] for i in range(0, len(train), 97))
    assert torch.equal(whole.pca_components, streamed.pca_components)
    monkeypatch.setattr(Autoencoder, "_fit_pca", lambda self, images, mean: fitted.append(images))
    Autoencoder(cfg).init_output_bias(train)
    assert torch.equal(fitted[0], train[::8])


def test_training_improves_on_pca_and_the_path_survives_saving(digits, tmp_path):
    train, test = digits
    run = aekit.train("ae", out=tmp_path / "run", data=_npz(tmp_path, train, test), arch="mlp", hidden=(256,),
                      latent_dim=8, pca_path=True, likelihood="gaussian", epochs=3, batch_size=64, **QUIET)
    start = Autoencoder(run.model.config).eval()
    start.init_output_bias(train)
    x = test.float() / 255
    assert psnr(run.model.reconstruct(test), x) > psnr(start.reconstruct(test), x) + 0.5
    loaded = aekit.load(tmp_path / "run")
    assert torch.equal(loaded.model.reconstruct(test), run.model.reconstruct(test))


def _npz(tmp_path, train, test):
    path = tmp_path / "digits.npz"
    np.savez(path, x_train=train.numpy(), x_test=test.numpy())
    return str(path)


@pytest.mark.parametrize("options, message", [
    ({"arch": "resnet", "latent_channels": 4}, "vector code"),
    ({"code_activation": "sigmoid"}, "sigmoid"),
])
def test_the_path_needs_a_vector_code_without_a_sigmoid(options, message):
    with pytest.raises(AekitError, match=message):
        ModelConfig(pca_path=True, **options)


def test_fewer_training_images_than_code_numbers_is_a_clear_error(digits):
    model = Autoencoder(preset("vae", latent_dim=32, pca_path=True).model)
    with pytest.raises(AekitError, match="at least 32 training images"):
        model.init_output_bias(digits[0][:20])
