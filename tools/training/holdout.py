"""The selection protocol's data roles and the uncertainty of a comparison on the test split.

Three roles of rows: ``train`` (fitting), ``val`` (what tuning, pruning and early stopping look at:
``val_<metric>``) and ``test`` (held out: ``test_<metric>``, reported and compared, never selected on).
The split is a function of (rows, target, fractions, seed) only, so two runs with the same inputs share
it; the sha256 of each split's sorted row indices is logged to check that.

A run's test predictions are logged as ``evaluation/test_predictions.csv`` (row index, label,
prediction, class probabilities); :func:`paired_bootstrap` compares two runs on the same test rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

PREDICTIONS_ARTIFACT = "evaluation/test_predictions.csv"
ROW_COLUMN, LABEL_COLUMN, PREDICTED_COLUMN, PROBA_PREFIX = "row", "y_true", "y_pred", "proba_"


@dataclass(frozen=True)
class Split:
    """Row positions of the three roles, and how they were made."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    test_size: float
    val_size: float
    seed: int

    def params(self) -> dict[str, object]:
        """Return the split's MLflow params: fractions of all rows, sizes and the seed."""
        total = len(self.train) + len(self.val) + len(self.test)
        return {
            "split.protocol": "train/val/test (select on val, report test)",
            "split.train_fraction": round(len(self.train) / total, 4),
            "split.val_fraction": round(len(self.val) / total, 4),
            "split.test_fraction": round(len(self.test) / total, 4),
            "split.rows": f"{len(self.train)}/{len(self.val)}/{len(self.test)}",
            "split.seed": self.seed,
        }

    def tags(self, index: pd.Index) -> dict[str, str]:
        """Return ``split.<role>_sha256``: the sha256 of the role's sorted row labels in ``index``."""
        return {f"split.{role}_sha256": rows_sha256(index[rows]) for role, rows in self.roles().items()}

    def roles(self) -> dict[str, np.ndarray]:
        return {"train": self.train, "val": self.val, "test": self.test}


def rows_sha256(rows: Sequence[Any] | pd.Index) -> str:
    """Return the sha256 of the sorted row labels (comma-joined)."""
    text = ",".join(str(r) for r in sorted(rows))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def split_rows(y: pd.Series, test_size: float, val_size: float, seed: int, stratify: bool) -> Split:
    """Split row positions into train, val (``val_size`` of the non-test rows) and test."""
    positions = np.arange(len(y))
    rest, test = train_test_split(
        positions, test_size=test_size, random_state=seed, stratify=y if stratify else None
    )
    train, val = train_test_split(
        rest, test_size=val_size, random_state=seed, stratify=y.iloc[rest] if stratify else None
    )
    return Split(train=train, val=val, test=test, test_size=test_size, val_size=val_size, seed=seed)


@dataclass(frozen=True)
class Folds:
    """K-fold cross-validation over the non-test rows (train + val): each fold's held-out positions."""

    rows: np.ndarray
    held_out: tuple[np.ndarray, ...]
    seed: int

    def pairs(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Return ``(fit rows, held-out rows)`` positions of every fold."""
        return [(np.setdiff1d(self.rows, out), out) for out in self.held_out]

    def tags(self, index: pd.Index) -> dict[str, str]:
        """Return ``cv.rows_sha256`` (all CV rows) and ``cv.fold<k>_val_sha256`` per fold."""
        tags = {"cv.rows_sha256": rows_sha256(index[self.rows])}
        for k, out in enumerate(self.held_out):
            tags[f"cv.fold{k}_val_sha256"] = rows_sha256(index[out])
        return tags


def cv_folds(split: Split, y: pd.Series, folds: int, stratify: bool) -> Folds:
    """Return ``folds`` folds over the split's train and val rows; the test rows are never in one."""
    rows = np.sort(np.concatenate([split.train, split.val]))
    kind = StratifiedKFold if stratify else KFold
    splitter = kind(n_splits=folds, shuffle=True, random_state=split.seed)
    held = tuple(np.sort(rows[out]) for _, out in splitter.split(rows, y.iloc[rows]))
    return Folds(rows=rows, held_out=held, seed=split.seed)


def cv_summary(per_fold: Sequence[dict[str, float]]) -> dict[str, float]:
    """Return ``cv_val_<metric>_mean`` and ``_std`` (population std over folds) of every metric."""
    summary: dict[str, float] = {}
    for name in sorted(per_fold[0]):
        values = np.array([fold[name] for fold in per_fold], dtype=float)
        summary[f"cv_val_{name}_mean"] = float(values.mean())
        summary[f"cv_val_{name}_std"] = float(values.std())
    return summary


def predictions_frame(rows: pd.Index, y_true: Any, predicted: Any, proba: Any, classes: Any) -> pd.DataFrame:
    """Return a run's test predictions as the table logged in ``PREDICTIONS_ARTIFACT``."""
    frame = pd.DataFrame(
        {ROW_COLUMN: list(rows), LABEL_COLUMN: list(y_true), PREDICTED_COLUMN: list(predicted)}
    )
    if proba is not None:
        for k, label in enumerate(classes):
            frame[f"{PROBA_PREFIX}{label}"] = proba[:, k]
    return frame


@dataclass(frozen=True)
class Comparison:
    """A paired bootstrap of ``metric(best) - metric(baseline)`` over the shared test rows."""

    metric: str
    difference: float
    low: float
    high: float
    rows: int
    resamples: int

    @property
    def within_noise(self) -> bool:
        """Whether the interval contains zero (the gain is not distinguishable from noise)."""
        return self.low <= 0.0 <= self.high


Scorer = Callable[[pd.DataFrame], float]
#: binds a predictions table and returns a function scoring the rows at the given positions (a resample).
RowScorer = Callable[[pd.DataFrame], Callable[[np.ndarray], float]]


def paired_bootstrap(best: pd.DataFrame, baseline: pd.DataFrame, metric: str, scorer: Scorer,
                     resamples: int = 500, seed: int = 0, level: float = 0.95,
                     row_scorer: RowScorer | None = None) -> Comparison:  # fmt: skip
    """Return the difference ``scorer(best) - scorer(baseline)`` with a percentile bootstrap interval.

    Both tables are aligned on their row labels first; a resample draws rows with replacement and scores
    both runs on the same rows. Resamples a metric cannot be computed on (one class only) are skipped.
    ``row_scorer`` (same metric, same values) scores the resamples without building a table for each.
    """
    shared = best.merge(baseline, on=ROW_COLUMN, suffixes=("", "__base"))
    if shared.empty:
        raise ValueError("the two runs share no test rows; they were not evaluated on the same split")
    a = shared[[c for c in shared.columns if not c.endswith("__base")]]
    b = shared[[ROW_COLUMN] + [c for c in shared.columns if c.endswith("__base")]]
    b = b.rename(columns=lambda c: c.removesuffix("__base"))
    if row_scorer is not None:
        score_a, score_b = row_scorer(a), row_scorer(b)
    else:
        score_a, score_b = (lambda take: scorer(a.iloc[take])), (lambda take: scorer(b.iloc[take]))
    rng = np.random.default_rng(seed)
    diffs: list[float] = []
    for _ in range(resamples):
        take = rng.integers(0, len(shared), len(shared))
        try:
            diffs.append(score_a(take) - score_b(take))
        except ValueError:
            continue
    if not diffs:
        raise ValueError(f"no bootstrap resample could be scored on {metric}")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(diffs, [tail, 100 - tail])
    return Comparison(metric, scorer(a) - scorer(b), float(low), float(high), len(shared), len(diffs))
