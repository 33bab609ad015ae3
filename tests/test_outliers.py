"""AutoencoderOutlierDetector: scikit-learn's own checks for outlier detectors, and outliers found."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.utils.estimator_checks import parametrize_with_checks

import aekit
from aekit import anomaly
from aekit.outliers import AutoencoderOutlierDetector
from aekit.sklearn import AutoencoderTransformer

TINY = {"latent_dim": 2, "hidden": (4,), "epochs": 1, "batch_size": 64, "random_state": 0}


@parametrize_with_checks([AutoencoderOutlierDetector(**TINY)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_the_parameters_are_the_transformers_plus_contamination_and_the_score():
    detector = set(AutoencoderOutlierDetector().get_params())
    assert detector == set(AutoencoderTransformer().get_params()) | {"contamination", "anomaly_score"}


def test_other_digits_are_outliers_of_a_detector_fitted_on_ones():
    splits = aekit.load_dataset("mnist-5k", progress=False)
    x, y = splits.train.images.reshape(len(splits.train), -1).numpy(), splits.train.labels.numpy()
    x_test, y_test = splits.test.images.reshape(len(splits.test), -1).numpy(), splits.test.labels.numpy()
    detector = AutoencoderOutlierDetector("ae", likelihood="gaussian", latent_dim=8, hidden=(128,), epochs=5,
                                          contamination=0.05, random_state=0).fit(x[y == 1])
    assert abs((detector.predict(x[y == 1]) == -1).mean() - 0.05) < 0.01
    assert roc_auc_score(y_test != 1, -detector.score_samples(x_test)) > 0.9
    assert (detector.predict(x_test[y_test != 1]) == -1).mean() > 0.5
    with pytest.raises(ValueError, match="contamination"):
        AutoencoderOutlierDetector(contamination=0.7).fit(x[:50])
    assert set(anomaly.SCORES) >= {"mse", "elbo"}
    np.testing.assert_array_equal(detector.decision_function(x_test[:5]) < 0, detector.predict(x_test[:5]) == -1)
