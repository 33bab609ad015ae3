"""A scikit-learn outlier detector around aekit's autoencoders, with scikit-learn's conventions
(``IsolationForest``, ``LocalOutlierFactor``): ``score_samples`` is higher for more normal samples,
``decision_function`` is negative for outliers, ``predict`` returns +1 (inlier) or -1 (outlier), and
``contamination`` sets the threshold ``offset_`` on the training data. The anomaly score itself is
:mod:`aekit.anomaly`'s (``-score_samples``): PyOD's ``decision_scores_`` convention, higher = more anomalous.

Every training option is the same parameter as in :class:`aekit.sklearn.AutoencoderTransformer` (one
declaration, :func:`aekit.core.config.options`), plus ``contamination`` and ``anomaly_score``.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
from sklearn.base import OutlierMixin
from sklearn.utils.validation import check_is_fitted

from . import anomaly
from .sklearn import _SIGNATURE, AutoencoderTransformer

_PARAMETERS = [
    *_SIGNATURE.parameters.values(),
    inspect.Parameter("contamination", inspect.Parameter.KEYWORD_ONLY, default=0.1),
    inspect.Parameter("anomaly_score", inspect.Parameter.KEYWORD_ONLY, default=None),
]
_DETECTOR_SIGNATURE = _SIGNATURE.replace(parameters=_PARAMETERS)


class AutoencoderOutlierDetector(OutlierMixin, AutoencoderTransformer):
    """Outlier detection with an image autoencoder: samples it reconstructs (or explains) badly are outliers.
    It is also the transformer it is built on (``transform`` gives the codes).

    Parameters
    ----------
    family, and every option of :class:`aekit.sklearn.AutoencoderTransformer`
        The autoencoder and its training.
    contamination : float in (0, 0.5], default 0.1
        The fraction of the training data taken to be outliers: ``offset_`` is that quantile of the training
        samples' ``score_samples``.
    anomaly_score : str, optional
        The anomaly score (:data:`aekit.anomaly.SCORES`); default the family's (mse; elbo for a VAE).

    Attributes
    ----------
    offset_ : float
        ``decision_function = score_samples - offset_``.

    Examples
    --------
    >>> import aekit
    >>> from aekit.outliers import AutoencoderOutlierDetector
    >>> X = aekit.load_dataset("mnist-5k").train.images[:300].reshape(300, -1).numpy()
    >>> detector = AutoencoderOutlierDetector("ae", latent_dim=8, hidden=(64,), epochs=2, random_state=0).fit(X)
    >>> sorted(set(detector.predict(X[:20]).tolist())) in ([-1, 1], [1], [-1])
    True
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # binds this class's signature

    __init__.__signature__ = _DETECTOR_SIGNATURE  # type: ignore[attr-defined]

    def fit(self, X, y=None):
        """Train on ``X`` (taken to be mostly normal) and set ``offset_`` from ``contamination``."""
        if not isinstance(self.contamination, (int, float)) or not 0 < self.contamination <= 0.5:
            raise ValueError(f"contamination must be in (0, 0.5] (got {self.contamination!r})")
        if self.anomaly_score is not None and self.anomaly_score not in anomaly.SCORES:
            raise ValueError(f"anomaly_score must be one of {', '.join(anomaly.SCORES)} (got {self.anomaly_score!r})")
        super().fit(X)
        self.offset_ = float(np.percentile(self.score_samples(X), 100 * self.contamination))
        return self

    def score_samples(self, X):
        """Minus the anomaly score of each sample: lower = more abnormal. ndarray of shape (n_samples,)."""
        check_is_fitted(self)
        X = self._validated(X)
        net, dtype = self._network(X)  # float64 data: a float64 copy, as transform
        return -anomaly.score_tensor(net, self.run_config_.objective, self._scaled(X, dtype), self.anomaly_score)

    def decision_function(self, X):
        """``score_samples(X) - offset_``: negative for outliers."""
        return self.score_samples(X) - self.offset_

    def predict(self, X):
        """+1 for inliers, -1 for outliers."""
        return np.where(self.decision_function(X) < 0, -1, 1)
