"""XGBoost's scikit-learn estimators as expagent trains them.

XGBoost's classifier accepts only labels ``0..k-1``; the datasets in the catalog may hold any labels
(``"yes"``/``"no"``). ``LabelledXGBClassifier`` encodes them on ``fit`` and answers ``classes_`` and
``predict`` in the dataset's own labels, like every other family's classifier.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xgboost


class LabelledXGBClassifier(xgboost.XGBClassifier):  # type: ignore[misc]
    """``xgboost.XGBClassifier`` fitted on any labels (encoded as ``0..k-1`` inside)."""

    def fit(self, X: Any, y: Any, **kwargs: Any) -> LabelledXGBClassifier:  # noqa: N803 - sklearn API
        labels, codes = np.unique(np.asarray(y), return_inverse=True)
        self.labels_ = labels
        super().fit(X, codes, **kwargs)
        return self

    @property
    def classes_(self) -> np.ndarray:
        labels = getattr(self, "labels_", None)
        return labels if labels is not None else np.arange(self.n_classes_)

    def predict(self, X: Any, **kwargs: Any) -> np.ndarray:  # noqa: N803 - sklearn API
        """Return the most probable label of every row."""
        return np.asarray(self.classes_)[np.argmax(self.predict_proba(X), axis=1)]


def estimator(classify: bool, seed: int, n_jobs: int, params: dict[str, Any]) -> Any:
    """Return an unfitted XGBoost classifier or regressor (histogram trees, deterministic on CPU)."""
    params = {"tree_method": "hist", "verbosity": 0, **params}
    cls = LabelledXGBClassifier if classify else xgboost.XGBRegressor
    try:
        return cls(random_state=seed, n_jobs=n_jobs, **params)
    except TypeError as exc:  # pragma: no cover - XGBoost takes **kwargs; kept for symmetry
        raise ValueError(f"invalid params for xgboost: {exc}") from exc
