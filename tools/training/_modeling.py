"""What a training run trains and how it is scored: spec checks, model construction, fitting, metrics.

``build_model`` turns a ``TrainingSpec`` into an unfitted scikit-learn / LightGBM / XGBoost model (with the
preprocessing its family needs), ``fit`` trains it (reporting LightGBM's per-round validation value when
asked), and ``evaluate`` / ``score`` compute the held-out metrics; ``round_score`` is the fast per-round
version of ``score`` used for pruning. Nothing here talks to MLflow: ``tools.training._run_logging`` logs, and
``tools.training.trainer`` runs the whole thing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Protocol

import lightgbm
import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn import metrics as skm
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from tools.core.registry import DatasetRecord
from tools.core.specs import CLASSIFICATION_METRICS, REGRESSION_METRICS, TrainingSpec
from tools.training import _xgboost
from tools.training.holdout import (
    LABEL_COLUMN,
    PREDICTED_COLUMN,
    PROBA_PREFIX,
    RowScorer,
    Scorer,
    predictions_frame,
)

Task = Literal["classification", "regression"]


class RoundReporter(Protocol):
    """Receives LightGBM's validation value every boosting round (``run_logging.IntermediateReporter``)."""

    @property
    def lightgbm_metric(self) -> Any:
        """LightGBM's ``eval_metric``: a built-in metric's name, or a custom metric callable."""
        ...

    def __call__(self, env: Any) -> None:
        """LightGBM callback, called after every boosting round."""
        ...

    def flush(self) -> None:
        """Send what is still pending (called once after fitting)."""
        ...


# ---- the model -------------------------------------------------------------------------------------


def check_spec(spec: TrainingSpec, record: DatasetRecord) -> Task:
    """Return the task; raise ValueError (before any training) when spec and dataset do not fit."""
    if record.status != "validated":
        raise ValueError(
            f"{record.ref} has status {record.status!r}; only validated datasets can be trained on"
        )
    task: Task = record.schema.task
    allowed = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
    if spec.metric not in allowed:
        raise ValueError(
            f"metric {spec.metric!r} does not apply to {record.ref}, a {task} dataset; "
            f"use one of: {', '.join(sorted(allowed))}"
        )
    if task == "regression" and spec.model_family == "logistic_regression":
        raise ValueError(
            f"logistic_regression is a classifier and {record.ref} is a regression dataset; use "
            "random_forest, hist_gradient_boosting, lightgbm or xgboost"
        )
    # The seed and every thread-count alias belong to the trainer and the runtime (the guard rejects them
    # too; this holds for a spec that reaches the trainer some other way).
    reserved_params = ("random_state", "seed", "n_jobs", "num_threads", "num_thread", "nthread", "nthreads")
    for reserved in reserved_params:
        if reserved in {str(k).strip().lower() for k in spec.params}:
            raise ValueError(
                f"param {reserved!r} is set by the trainer (from 'seed' and 'resources.cpu'); remove it"
            )
    return task


def _estimator(spec: TrainingSpec, task: Task) -> Any:
    params: dict[str, Any] = dict(spec.params)
    n_jobs = max(1, int(spec.resources.cpu))
    classify = task == "classification"
    if spec.model_family == "lightgbm":
        params = {"deterministic": True, "force_col_wise": True, "verbose": -1, **params}
        cls = lightgbm.LGBMClassifier if classify else lightgbm.LGBMRegressor
        return cls(random_state=spec.seed, n_jobs=n_jobs, **params)
    if spec.model_family == "xgboost":
        return _xgboost.estimator(classify, spec.seed, n_jobs, params)
    if spec.model_family == "random_forest":
        cls = RandomForestClassifier if classify else RandomForestRegressor
        return _construct(cls, spec, random_state=spec.seed, n_jobs=n_jobs, **params)
    if spec.model_family == "hist_gradient_boosting":
        cls = HistGradientBoostingClassifier if classify else HistGradientBoostingRegressor
        return _construct(cls, spec, random_state=spec.seed, **params)
    params = {"max_iter": 1000, **params}
    return _construct(LogisticRegression, spec, random_state=spec.seed, **params)


def _construct(cls: Callable[..., Any], spec: TrainingSpec, **params: Any) -> Any:
    try:
        return cls(**params)
    except TypeError as exc:
        valid = ", ".join(sorted(cls().get_params()))
        raise ValueError(f"invalid params for {spec.model_family}: {exc}; valid params: {valid}") from exc


def build_model(spec: TrainingSpec, task: Task, features: pd.DataFrame) -> Any:
    """Return the unfitted model: the estimator, wrapped in preprocessing where the family needs it."""
    estimator = _estimator(spec, task)
    text = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    numeric = [c for c in features.columns if c not in text]
    if spec.model_family == "logistic_regression":
        numeric_steps = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
        if not text:
            return Pipeline([("prepare", numeric_steps), ("model", estimator)])
        encode = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
        prepare = ColumnTransformer([("numeric", numeric_steps, numeric), ("text", encode, text)])
        return Pipeline([("prepare", prepare), ("model", estimator)])
    if not text:
        return estimator
    encode = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
    prepare = ColumnTransformer([("text", encode, text)], remainder="passthrough")
    return Pipeline([("prepare", prepare), ("model", estimator)])


def final_estimator(model: Any) -> Any:
    return model.steps[-1][1] if isinstance(model, Pipeline) else model


def effective_params(model: Any) -> dict[str, str]:
    """Return the estimator's scalar hyperparameters that are set (what actually trained)."""
    params = final_estimator(model).get_params(deep=False)
    scalars = (bool, int, float, str, np.integer, np.floating)
    return {k: str(v) for k, v in sorted(params.items()) if v is not None and isinstance(v, scalars)}


def score(metric: str, y_true: Any, predicted: Any, proba: Any, classes: Any) -> float:
    """Return ``metric`` for predictions (``proba`` has one column per class in ``classes``)."""
    if metric in ("rmse", "mae", "r2"):
        if metric == "rmse":
            return float(np.sqrt(skm.mean_squared_error(y_true, predicted)))
        return float(
            skm.mean_absolute_error(y_true, predicted) if metric == "mae" else skm.r2_score(y_true, predicted)
        )
    binary = len(classes) == 2
    if metric == "accuracy":
        return float(skm.accuracy_score(y_true, predicted))
    if metric == "f1":
        if binary:
            return float(skm.f1_score(y_true, predicted, pos_label=classes[1]))
        return float(skm.f1_score(y_true, predicted, average="macro"))
    if metric == "log_loss":
        return float(skm.log_loss(y_true, proba, labels=classes))
    if binary:
        return float(skm.roc_auc_score(y_true, proba[:, 1]))
    return float(skm.roc_auc_score(y_true, proba, multi_class="ovr", labels=classes))


def predict_split(model: Any, task: Task, x: pd.DataFrame) -> tuple[Any, Any, list[Any] | None]:
    """Return ``(predicted, proba, classes)`` of one split in one pass over the model.

    A classifier's label is the most probable class (what LightGBM and scikit-learn predict), so a
    large model is not run twice per split.
    """
    if task == "regression":
        return model.predict(x), None, None
    proba, classes = model.predict_proba(x), list(model.classes_)
    return np.asarray(classes)[np.argmax(proba, axis=1)], proba, classes


def evaluate(model: Any, task: Task, x_test: pd.DataFrame, y_test: pd.Series,
             predictions: tuple[Any, Any, list[Any] | None] | None = None) -> dict[str, float]:  # fmt: skip
    """Return every metric of ``task`` on a split (from ``predictions`` when already computed)."""
    predicted, proba, classes = predictions or predict_split(model, task, x_test)
    names = REGRESSION_METRICS if task == "regression" else CLASSIFICATION_METRICS
    return {m: score(m, y_test, predicted, proba, classes) for m in sorted(names)}


def test_predictions(x_test: pd.DataFrame, y_test: pd.Series,
                     predictions: tuple[Any, Any, list[Any] | None]) -> pd.DataFrame:  # fmt: skip
    """Return the test rows' predictions (``tools.training.holdout.predictions_frame``)."""
    predicted, proba, classes = predictions
    return predictions_frame(x_test.index, y_test, predicted, proba, classes)


def frame_scorer(metric: str) -> Scorer:
    """Return a scorer of ``metric`` on a predictions table (labels compared as text)."""

    def scorer(frame: pd.DataFrame) -> float:
        proba_columns = [c for c in frame.columns if c.startswith(PROBA_PREFIX)]
        if not proba_columns:  # regression
            return score(
                metric, frame[LABEL_COLUMN].to_numpy(), frame[PREDICTED_COLUMN].to_numpy(), None, None
            )
        classes = [c.removeprefix(PROBA_PREFIX) for c in proba_columns]
        y_true = frame[LABEL_COLUMN].astype(str).to_numpy()
        if len(set(y_true)) < 2 and metric == "roc_auc":
            raise ValueError("one class only")
        predicted = frame[PREDICTED_COLUMN].astype(str).to_numpy()
        return score(metric, y_true, predicted, frame[proba_columns].to_numpy(), classes)

    return scorer


def frame_row_scorer(metric: str) -> RowScorer:
    """Return :func:`frame_scorer`'s ``metric`` for resampled rows of a predictions table, in numpy.

    A paired bootstrap scores 2 x 500 resamples; through pandas and scikit-learn's input validation that
    took ~10 ms each (5-10 s per study, measured), this way ~0.1 ms. The values agree with
    ``frame_scorer`` on the same rows (tested), and a resample ``frame_scorer`` cannot score (one class
    only, for ROC AUC) raises ValueError here too.
    """

    def bind(frame: pd.DataFrame) -> Callable[[np.ndarray], float]:
        proba_columns = [c for c in frame.columns if c.startswith(PROBA_PREFIX)]
        if not proba_columns:  # regression
            y_true = frame[LABEL_COLUMN].to_numpy(dtype=float)
            predicted = frame[PREDICTED_COLUMN].to_numpy(dtype=float)
            return lambda take: _regression_score(metric, y_true[take], predicted[take])
        codes = {c.removeprefix(PROBA_PREFIX): k for k, c in enumerate(proba_columns)}
        y_text = frame[LABEL_COLUMN].astype(str).to_numpy()
        if not set(y_text) <= set(codes):  # a label the model never saw: leave it to scikit-learn
            slow = frame_scorer(metric)
            return lambda take: slow(frame.iloc[take])
        y = np.array([codes[v] for v in y_text])
        predicted = np.array([codes.get(v, -1) for v in frame[PREDICTED_COLUMN].astype(str).to_numpy()])
        proba = frame[proba_columns].to_numpy(dtype=float)
        return lambda take: _classification_score(metric, y[take], predicted[take], proba[take])

    return bind


def _regression_score(metric: str, y: np.ndarray, predicted: np.ndarray) -> float:
    error = predicted - y
    if metric == "rmse":
        return float(np.sqrt(np.mean(error**2)))
    if metric == "mae":
        return float(np.mean(np.abs(error)))
    residual, total = float(np.sum(error**2)), float(np.sum((y - y.mean()) ** 2))
    if total == 0.0:  # scikit-learn's r2_score (force_finite) for a constant target
        return 1.0 if residual == 0.0 else 0.0
    return 1 - residual / total


def _classification_score(metric: str, y: np.ndarray, predicted: np.ndarray, proba: np.ndarray) -> float:
    """Score class codes ``y`` (columns of ``proba``) as :func:`score` does."""
    k = proba.shape[1]
    if metric == "accuracy":
        return float(np.mean(predicted == y))
    if metric == "f1":
        if k == 2:
            return _f1(y, predicted, 1)
        return float(np.mean([_f1(y, predicted, c) for c in np.union1d(y, predicted)]))
    if metric == "log_loss":
        p = np.clip(proba / proba.sum(axis=1, keepdims=True), np.finfo(proba.dtype).eps, 1)
        return float(-np.mean(np.log(p[np.arange(len(y)), y])))
    if len(np.unique(y)) < 2:
        raise ValueError("one class only")
    if k == 2:
        return _auc(y == 1, proba[:, 1])
    # One-vs-rest: scikit-learn scores a class absent from these rows as NaN (and warns), so does this.
    positives = [y == c for c in range(k)]
    return float(np.mean([_auc(p, proba[:, c]) if p.any() else np.nan for c, p in enumerate(positives)]))


# ---- intermediate values (pruning) ------------------------------------------------------------------

# Per-round values use these numpy versions: sklearn's input validation costs ~5 ms a call, which per
# boosting round would cost more than the training. They agree with ``score`` (tested).


def _auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """Return the ROC AUC of ``scores`` for a boolean ``positive`` (Mann-Whitney U with tied ranks)."""
    ranks = rankdata(scores)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _f1(y: np.ndarray, predicted: np.ndarray, label: int) -> float:
    true_pos = np.sum((predicted == label) & (y == label))
    denominator = np.sum(predicted == label) + np.sum(y == label)
    return float(2 * true_pos / denominator) if denominator else 0.0


def round_score(metric: str, y_true: np.ndarray, y_pred: np.ndarray, task: Task) -> float:
    """Return ``metric`` from LightGBM's raw validation output (probabilities; labels 0..k-1)."""
    if task == "regression":
        error = y_pred - y_true
        if metric == "rmse":
            return float(np.sqrt(np.mean(error**2)))
        if metric == "mae":
            return float(np.mean(np.abs(error)))
        return float(1 - np.sum(error**2) / np.sum((y_true - y_true.mean()) ** 2))
    proba = np.column_stack([1 - y_pred, y_pred]) if y_pred.ndim == 1 else y_pred
    y = y_true.astype(int)
    if metric == "log_loss":
        proba = proba / proba.sum(axis=1, keepdims=True)
        return float(-np.mean(np.log(np.clip(proba[np.arange(len(y)), y], np.finfo(proba.dtype).eps, 1))))
    if metric == "roc_auc":
        if proba.shape[1] == 2:
            return _auc(y == 1, proba[:, 1])
        return float(np.mean([_auc(y == k, proba[:, k]) for k in range(proba.shape[1])]))
    predicted = proba.argmax(axis=1)
    if metric == "accuracy":
        return float(np.mean(predicted == y))
    if proba.shape[1] == 2:
        return _f1(y, predicted, 1)
    return float(np.mean([_f1(y, predicted, k) for k in np.union1d(y, predicted)]))


# ---- fitting ---------------------------------------------------------------------------------------


def fit(model: Any, spec: TrainingSpec, x: pd.DataFrame, y: pd.Series, reporter: RoundReporter | None,
        x_val: pd.DataFrame, y_val: pd.Series) -> None:  # fmt: skip
    """Fit ``model``; LightGBM reports ``val_<metric>`` per round when a reporter is given.

    Every native thread pool (OpenMP, BLAS) is capped at the run's CPU count for the fit, whatever a
    library would pick by itself: the plan's ``resources.cpu`` is what the run may use.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=max(1, int(spec.resources.cpu))):
        if reporter is None or spec.model_family != "lightgbm" or isinstance(model, Pipeline):
            model.fit(x, y)
            return
        model.fit(x, y, eval_X=(x_val,), eval_y=(y_val,), eval_names=["val"],
                  eval_metric=reporter.lightgbm_metric, callbacks=[reporter])  # fmt: skip
    reporter.flush()
    _drop_eval_history(model)


def _drop_eval_history(model: Any) -> None:
    """Forget LightGBM's per-round validation history: it is in MLflow as ``val_<metric>`` already."""
    # Private LightGBM attribute (LGBMModel._evals_result), used only here. Why: the fitted model keeps
    # every round's validation scores, and skops (MLflow's sklearn model format) stores each value as a
    # node of its own: logging a 200-round model took ~90 ms longer (measured), loading it back ~45 ms.
    # If LightGBM renames it, nothing is dropped and logging is only slower.
    if isinstance(getattr(model, "_evals_result", None), dict):
        model._evals_result = {}
