"""AutoencoderTransformer: scikit-learn's own estimator checks, pipelines, grid search, and aekit parity."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

import aekit
from aekit.data import ImageSet, Splits
from aekit.sklearn import AutoencoderTransformer
from aekit.training.loop import evaluate_losses

# Tiny on purpose: check_estimator fits ~50 times on 20-30 rows, so one batch per epoch.
TINY = {"latent_dim": 2, "hidden": (4,), "epochs": 1, "batch_size": 64, "random_state": 0}


# No check is expected to fail, so no expected_failed_checks. scikit-learn itself skips
# check_array_api_input unless SCIPY_ARRAY_API=1 is set (the estimator takes NumPy arrays only).
@parametrize_with_checks([AutoencoderTransformer(**TINY)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def digits():
    """mnist-5k flattened: uint8 (4000, 784) train and (1000, 784) test, with labels."""
    splits = aekit.load_dataset("mnist-5k", progress=False)
    flat = lambda s: s.images.reshape(len(s), -1).numpy()  # noqa: E731
    return flat(splits.train), splits.train.labels.numpy(), flat(splits.test), splits.test.labels.numpy()


def test_pipeline_with_logistic_regression_classifies_digits(digits):
    X, y, X_test, y_test = digits
    pipe = Pipeline([
        ("ae", AutoencoderTransformer("vae", latent_dim=32, hidden=(256,), epochs=8, random_state=0)),
        ("clf", LogisticRegression(max_iter=500)),
    ])
    pipe.fit(X, y)
    accuracy = pipe.score(X_test, y_test)
    assert accuracy > 0.8, accuracy  # chance is 0.1; these 32 VAE codes + a linear classifier get 0.88


def test_grid_search_over_latent_dim(digits):
    X, y, _, _ = digits
    pipe = Pipeline([
        ("ae", AutoencoderTransformer("ae", hidden=(32,), epochs=1, batch_size=64, random_state=0)),
        ("clf", LogisticRegression(max_iter=200)),
    ])
    search = GridSearchCV(pipe, {"ae__latent_dim": [2, 8]}, cv=2).fit(X[:600] / 255.0, y[:600])
    assert list(search.cv_results_["param_ae__latent_dim"]) == [2, 8]
    assert search.best_params_["ae__latent_dim"] in (2, 8)
    best = search.best_params_["ae__latent_dim"]
    assert search.best_estimator_.named_steps["ae"].transform(X[:5] / 255.0).shape == (5, best)


def test_clone_gives_an_unfitted_copy_with_equal_params(digits):
    X = digits[0][:100]
    est = AutoencoderTransformer("dae", latent_dim=3, hidden=(8,), epochs=1, image_shape=(1, 28, 28), random_state=4)
    est.fit(X)
    copy = clone(est)
    assert copy.get_params() == est.get_params()
    assert not hasattr(copy, "model_") and hasattr(est, "model_")
    assert repr(copy) == repr(est)
    copy.set_params(latent_dim=5)
    assert est.latent_dim == 3 and copy.fit(X).transform(X).shape == (100, 5)


@pytest.mark.parametrize("extra", [
    {},
    # options the estimator gained when its parameters became generated from the config
    {"binarize": "static", "lr_schedule": "cosine", "grad_clip": 5.0, "importance_samples": 2, "activation": "elu"},
])
def test_the_model_is_exactly_aekit_train_with_the_same_seed(digits, tmp_path, extra):
    """fit reuses aekit.train: same seed, same images -> the same weights, codes and test losses."""
    X = digits[0][:300]
    options = {"latent_dim": 4, "hidden": (16,), "epochs": 2, "batch_size": 32, **extra}
    est = AutoencoderTransformer("vae", random_state=7, **options).fit(X)
    images = torch.from_numpy(X).reshape(-1, 1, 28, 28)
    splits = Splits(ImageSet(images, None, "train"), ImageSet(images[:10], None, "test"))
    ref = aekit.train("vae", out=tmp_path / "run", splits=splits, progress=False, log=None, seed=7, **options)
    for part in ("model", "objective", "train"):
        assert getattr(est.run_config_, part) == getattr(ref.config, part)
    assert est.run_config_.data.binarize == ref.config.data.binarize == extra.get("binarize", "none")
    for name, tensor in ref.model.state_dict().items():
        assert torch.equal(tensor, est.model_.state_dict()[name]), name
    np.testing.assert_array_equal(est.transform(X), ref.model.embed(images).numpy())
    test_loss = evaluate_losses(ref.model, ImageSet(images, None, "x"), ref.config)["loss"]
    assert est.score(X) == pytest.approx(-test_loss, rel=1e-6)
    assert len(est.loss_curve_) == 2 and est.loss_curve_[1] < est.loss_curve_[0]


def test_fit_writes_nothing_to_the_working_directory(digits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    AutoencoderTransformer(latent_dim=2, hidden=(8,), epochs=1, random_state=0).fit(digits[0][:50])
    assert list(tmp_path.iterdir()) == []


def test_scaling_uint8_and_unit_floats_give_the_same_model(digits):
    X = digits[0][:200]
    a = AutoencoderTransformer(**{**TINY, "hidden": (16,)}).fit(X)
    b = AutoencoderTransformer(**{**TINY, "hidden": (16,)}).fit(X / 255.0)
    assert (a.scaling_, b.scaling_) == ("uint8", "unit")
    codes_a, codes_b = a.transform(X), b.transform(X / 255.0)
    assert codes_a.dtype == np.float32 and codes_b.dtype == np.float64  # float64 data -> float64 network
    np.testing.assert_allclose(codes_a, codes_b, atol=1e-5)
    # inverse_transform returns images in the units fit saw: 0..255 here, [0, 1] there
    back_a, back_b = a.inverse_transform(codes_a[:5]), b.inverse_transform(codes_b[:5])
    assert back_a.shape == (5, 784) and 0 <= back_a.min() and back_a.max() <= 255 and back_a.max() > 1
    np.testing.assert_allclose(back_a / 255, back_b, atol=1e-5)


def test_minmax_scaling_of_general_features():
    rng = np.random.default_rng(0)
    X = rng.normal(10, 5, size=(40, 6))
    X[:, 2] = 3.0  # a constant feature
    est = AutoencoderTransformer(**TINY).fit(X)
    assert est.scaling_ == "minmax" and est.image_shape_ == (1, 1, 6)
    np.testing.assert_array_equal(est.data_min_, X.min(0))
    back = est.inverse_transform(est.transform(X))
    assert back.shape == X.shape and np.all(back >= X.min(0) - 1e-9) and np.all(back <= X.max(0) + 1e-9)
    np.testing.assert_allclose(back[:, 2], 3.0)
    with pytest.raises(ValueError, match="scaling='unit'"):
        AutoencoderTransformer(**TINY, scaling="unit").fit(X)


def test_four_d_images_and_image_shape(digits):
    X = digits[0][:64]
    images = X.reshape(64, 1, 28, 28)
    est = AutoencoderTransformer(**TINY).fit(images)
    assert est.n_features_in_ == 784 and est.image_shape_ == (1, 28, 28)
    assert est.inverse_transform(est.transform(images)).shape == (64, 1, 28, 28)
    np.testing.assert_array_equal(est.transform(images), est.transform(X))  # rows of the same pixels
    with pytest.raises(ValueError, match="shape"):
        est.transform(images.reshape(64, 1, 784, 1))
    # a 2-D fit infers a square image; image_shape overrides it and must hold the features
    assert AutoencoderTransformer(**TINY).fit(X).image_shape_ == (1, 28, 28)
    assert AutoencoderTransformer(**TINY, image_shape=(1, 14, 56)).fit(X).image_shape_ == (1, 14, 56)
    with pytest.raises(ValueError, match="does not hold 784"):
        AutoencoderTransformer(**TINY, image_shape=(3, 28, 28)).fit(X)
    conv = AutoencoderTransformer(**{**TINY, "hidden": (4, 8)}, arch="conv").fit(images)
    assert conv.transform(images[:3]).shape == (3, 2)


def test_options_left_at_none_take_the_familys_preset(digits):
    X = digits[0][:64]
    sae = AutoencoderTransformer("sae", **TINY).fit(X)
    assert sae.code_scale is None and sae.run_config_.model.code_scale == pytest.approx(20.0)  # 1 / rho
    assert sae.run_config_.objective.sparsity == "kl" and sae.run_config_.objective.sparsity_weight == 10.0
    dae = AutoencoderTransformer("dae", **TINY, mask_prob=0.1).fit(X)
    assert dae.run_config_.objective.noise_std == 0.5 and dae.run_config_.objective.mask_prob == 0.1
    assert dae.run_config_.model.hidden == (4,) and dae.run_config_.train.compile == "auto"


def test_bad_hyperparameters_raise_aekit_errors_from_fit(digits):
    est = AutoencoderTransformer("gan", **TINY)  # __init__ only stores
    with pytest.raises(aekit.AekitError, match="family must be one of"):
        est.fit(digits[0][:10])
    with pytest.raises(aekit.AekitError, match="latent_dim"):
        AutoencoderTransformer(**{**TINY, "latent_dim": 0}).fit(digits[0][:10])
    with pytest.raises(aekit.AekitError, match=r"lr must be > 0 and <= 10 \(got inf\)"):
        AutoencoderTransformer(**TINY, lr=float("inf")).fit(digits[0][:10])
    with pytest.raises(TypeError, match="seed"):  # random_state is the seed; options the estimator lacks are refused
        AutoencoderTransformer(**TINY, seed=3)


def test_a_fitted_estimator_pickles_and_scores(digits):
    X = digits[0][:200]
    est = AutoencoderTransformer(**{**TINY, "epochs": 2}).fit(X)
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(again.transform(X), est.transform(X))
    assert again.score(X) == est.score(X) and np.isfinite(est.score(X))
    assert list(est.get_feature_names_out()) == ["autoencodertransformer0", "autoencodertransformer1"]
