"""The bootstrap's numpy scoring gives scikit-learn's values on every resample, for every metric."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tools.training._modeling import frame_row_scorer, frame_scorer
from tools.training.holdout import paired_bootstrap, predictions_frame


def _classification(classes: int, rows: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    labels = np.array([f"c{k}" for k in range(classes)])
    y = labels[rng.integers(0, classes, rows)]
    proba = rng.dirichlet(np.ones(classes), rows)
    predicted = labels[np.argmax(proba, axis=1)]
    return predictions_frame(pd.RangeIndex(rows), pd.Series(y), predicted, proba, list(labels))


def _regression(rows: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = rng.normal(0, 1, rows)
    return predictions_frame(pd.RangeIndex(rows), pd.Series(y), y + rng.normal(0, 0.5, rows), None, None)


CASES = [
    *[(2, m) for m in ("roc_auc", "accuracy", "f1", "log_loss")],
    *[(3, m) for m in ("roc_auc", "accuracy", "f1", "log_loss")],
    *[(0, m) for m in ("rmse", "mae", "r2")],
]


@pytest.mark.parametrize(("classes", "metric"), CASES)
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
def test_resample_scores_equal_sklearn_scores(classes: int, metric: str) -> None:
    frame = _regression() if classes == 0 else _classification(classes)
    slow, fast = frame_scorer(metric), frame_row_scorer(metric)(frame)
    rng = np.random.default_rng(3)
    for size in (60, 60, 60, 5, 3, 3, 2):
        take = rng.integers(0, len(frame), size)
        try:
            expected = slow(frame.iloc[take])
        except ValueError:
            with pytest.raises(ValueError):
                fast(take)
            continue
        assert fast(take) == pytest.approx(expected, rel=1e-9, abs=1e-12, nan_ok=True)


def test_a_one_class_resample_cannot_be_scored_by_roc_auc() -> None:
    frame = _classification(2)
    first = frame.index[frame["y_true"] == "c0"][:4].to_numpy()
    with pytest.raises(ValueError):
        frame_row_scorer("roc_auc")(frame)(first)


@pytest.mark.parametrize("metric", ["roc_auc", "f1", "log_loss"])
def test_the_bootstrap_interval_is_the_same_either_way(metric: str) -> None:
    best, baseline = _classification(3, rows=40, seed=1), _classification(3, rows=40, seed=2)
    scorer = frame_scorer(metric)
    slow = paired_bootstrap(best, baseline, metric, scorer, resamples=60)
    fast = paired_bootstrap(best, baseline, metric, scorer, resamples=60, row_scorer=frame_row_scorer(metric))
    assert fast.resamples == slow.resamples
    assert (fast.difference, fast.low, fast.high) == pytest.approx((slow.difference, slow.low, slow.high))
