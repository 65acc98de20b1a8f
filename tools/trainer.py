"""The training job program: one reproducible, fully logged training run for a ``TrainingSpec``.

Entry points:
- ``run_training(spec, settings)`` in-process (the local runtime's warm workers fork and call it);
- ``python -m tools.trainer --spec FILE.json | --spec-json '{...}'`` — the job program (local process
  and Kubernetes container). Exit 0 success, 1 failure (run FAILED with ``traceback.txt`` and
  ``output.log``), 143 when stopped by SIGTERM or its own deadline (run KILLED with a note).

Intermediate values for pruning (``spec.report_intermediate``, LightGBM only): ``val_<metric>`` is logged
as a step metric per boosting round (step = round, 1-based). Values are sent with ``log_batch`` at most
every ``INTERMEDIATE_FLUSH_SECONDS`` while the run trains and once at the end, so a pruner reads a running
trial with ``MlflowClient.get_metric_history(run_id, "val_<metric>")`` on any runtime (local or
Kubernetes) without a per-round request.

Heavy imports (mlflow, scikit-learn, LightGBM) are at module level on purpose: the local runtime
preloads this module into its fork server so each job starts warm.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import lightgbm
import mlflow
import mlflow.lightgbm
import mlflow.sklearn
import numpy as np
import pandas as pd
import skops.io
from mlflow.data.pandas_dataset import from_pandas
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from pydantic import BaseModel, Field, ValidationError
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
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from agent.config import Settings, load_settings
from tools import provenance, tracking
from tools.context import ToolContext
from tools.redact import redact_text
from tools.registry import DatasetRecord, DatasetRegistry
from tools.specs import (
    CLASSIFICATION_METRICS,
    MAXIMIZE,
    REGRESSION_METRICS,
    CancellationRecord,
    TrainingSpec,
)

RunStatus = Literal["FINISHED", "FAILED", "KILLED"]
Task = Literal["classification", "regression"]
EXIT_OK, EXIT_FAILED, EXIT_TERMINATED = 0, 1, 143
INTERMEDIATE_FLUSH_SECONDS = 1.0
#: bytes of combined stdout/stderr kept for the failure artifact (the tail).
OUTPUT_TAIL_BYTES = 256_000
#: digest column of MLflow datasets holds at most 36 characters.
DATASET_DIGEST_CHARS = 32
_MLFLOW_BATCH = 1000
#: known, harmless warnings of MLflow that would only clutter every job log.
_QUIET_WARNINGS = (
    "The specified dataset source can be interpreted in multiple ways",
    "Hint: Inferred schema contains integer column",
)


@dataclass(frozen=True)
class RunTarget:
    """The MLflow run a training logs to."""

    run_id: str
    experiment_id: str


class TrainingResult(BaseModel):
    """What one training run produced (also printed as the job's last stdout line)."""

    run_id: str
    status: RunStatus
    metric: str = Field(description="The spec's primary metric.")
    value: float | None = Field(default=None, description="The primary metric on the held-out split.")
    metrics: dict[str, float] = Field(default_factory=dict)
    model_uri: str | None = None
    wall_seconds: float = 0.0
    error: str | None = Field(default=None, description="Why the run failed or was stopped.")
    stopped_by: Literal["sigterm", "timeout"] | None = None


# ---- stopping: SIGTERM and the job's own deadline -------------------------------------------------


class Interrupted(BaseException):
    """Raised inside training when the job is told to stop (BaseException: not caught as a failure)."""

    def __init__(self, kind: Literal["sigterm", "timeout"]) -> None:
        super().__init__("terminated by SIGTERM" if kind == "sigterm" else "the run's deadline passed")
        self.kind: Literal["sigterm", "timeout"] = kind


class _StopSwitch:
    """Turns SIGTERM/SIGALRM into ``Interrupted`` while training, and into a no-op while closing a run."""

    def __init__(self) -> None:
        self.armed = False
        self.pending: Literal["sigterm", "timeout"] | None = None

    def handler(self, signum: int, frame: FrameType | None) -> None:
        kind: Literal["sigterm", "timeout"] = "timeout" if signum == signal.SIGALRM else "sigterm"
        self.pending = self.pending or kind
        if self.armed:
            self.armed = False  # raise once; the run is being closed from here on
            raise Interrupted(kind)

    @contextmanager
    def armed_block(self) -> Iterator[None]:
        if self.pending:
            raise Interrupted(self.pending)
        self.armed = True
        try:
            yield
        finally:
            self.armed = False


STOP = _StopSwitch()


@contextmanager
def stop_signals(timeout_seconds: float | None) -> Iterator[None]:
    """Route SIGTERM (and SIGALRM after ``timeout_seconds``) to a clean KILLED end of the run.

    Main thread only; the previous handlers are restored on exit.
    """
    STOP.pending = None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGALRM)}
    signal.signal(signal.SIGTERM, STOP.handler)
    signal.signal(signal.SIGALRM, STOP.handler)
    if timeout_seconds:
        signal.setitimer(signal.ITIMER_REAL, timeout_seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# ---- capturing output ------------------------------------------------------------------------------


class OutputTee:
    """Copy everything written to file descriptors 1 and 2 (Python and C code) into a bounded buffer.

    The output still reaches the original descriptors (the job log), so live logs keep working.
    """

    def __init__(self, limit: int = OUTPUT_TAIL_BYTES) -> None:
        self.limit = limit
        self._buffer = bytearray()
        self._lock = threading.Lock()
        self._saved: list[int] = []
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> OutputTee:
        _flush_std()
        for fd in (1, 2):
            saved = os.dup(fd)
            read_end, write_end = os.pipe()
            os.dup2(write_end, fd)
            os.close(write_end)
            thread = threading.Thread(target=self._pump, args=(read_end, saved), daemon=True)
            thread.start()
            self._saved.append(saved)
            self._threads.append(thread)
        return self

    def _pump(self, read_end: int, target: int) -> None:
        while chunk := os.read(read_end, 65536):
            os.write(target, chunk)
            with self._lock:
                self._buffer.extend(chunk)
                del self._buffer[: max(0, len(self._buffer) - self.limit)]
        os.close(read_end)

    def __exit__(self, *exc: object) -> None:
        _flush_std()
        for fd, saved in zip((1, 2), self._saved, strict=True):
            os.dup2(saved, fd)  # closes the pipe's write end, so the pump sees end of file
        for thread in self._threads:
            thread.join(timeout=2)  # a forked grandchild may still hold the pipe open
        for saved in self._saved:
            os.close(saved)

    def text(self) -> str:
        with self._lock:
            return self._buffer.decode("utf-8", errors="replace")


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


@contextmanager
def _maybe_tee(enabled: bool) -> Iterator[OutputTee | None]:
    if not enabled:
        yield None
        return
    with OutputTee() as tee:
        yield tee


# ---- data and model --------------------------------------------------------------------------------


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
            "random_forest, hist_gradient_boosting or lightgbm"
        )
    for reserved in ("random_state", "seed", "n_jobs"):
        if reserved in spec.params:
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


def evaluate(model: Any, task: Task, x_test: pd.DataFrame, y_test: pd.Series) -> dict[str, float]:
    """Return every metric of ``task`` on the held-out split."""
    predicted = model.predict(x_test)
    if task == "regression":
        return {m: score(m, y_test, predicted, None, None) for m in sorted(REGRESSION_METRICS)}
    proba, classes = model.predict_proba(x_test), list(model.classes_)
    return {m: score(m, y_test, predicted, proba, classes) for m in sorted(CLASSIFICATION_METRICS)}


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


class IntermediateReporter:
    """LightGBM eval metric + callback that logs ``val_<metric>`` per round in timed batches."""

    def __init__(self, client: MlflowClient, run_id: str, metric: str, task: Task) -> None:
        self.client, self.run_id, self.metric, self.task = client, run_id, metric, task
        self.key = f"val_{metric}"
        self._pending: list[Metric] = []
        self._last_flush = time.monotonic()
        self.order = 10  # run after LightGBM's own callbacks

    def eval_metric(self, y_true: np.ndarray, y_pred: np.ndarray) -> tuple[str, float, bool]:
        """LightGBM custom metric: the spec's metric on the validation split (labels encoded 0..k-1)."""
        value = round_score(self.metric, y_true, y_pred, self.task)
        return self.key, value, self.metric in MAXIMIZE

    def __call__(self, env: Any) -> None:
        for _, name, value, _ in env.evaluation_result_list:
            if name == self.key:
                now = int(time.time() * 1000)
                self._pending.append(Metric(self.key, float(value), now, env.iteration + 1))
        if time.monotonic() - self._last_flush >= INTERMEDIATE_FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        for start in range(0, len(self._pending), _MLFLOW_BATCH):
            self.client.log_batch(self.run_id, metrics=self._pending[start : start + _MLFLOW_BATCH])
        self._pending.clear()
        self._last_flush = time.monotonic()


def fit(model: Any, spec: TrainingSpec, x: pd.DataFrame, y: pd.Series, reporter: IntermediateReporter | None,
        x_val: pd.DataFrame, y_val: pd.Series) -> None:  # fmt: skip
    """Fit ``model``; LightGBM reports ``val_<metric>`` per round when a reporter is given."""
    if reporter is None or spec.model_family != "lightgbm" or isinstance(model, Pipeline):
        model.fit(x, y)
        return
    model.fit(x, y, eval_X=(x_val,), eval_y=(y_val,), eval_names=["val"], eval_metric=reporter.eval_metric,
              callbacks=[reporter])  # fmt: skip
    reporter.flush()


# ---- logging ---------------------------------------------------------------------------------------


def _run_tags(spec: TrainingSpec, record: DatasetRecord) -> dict[str, str]:
    tags = {
        "dataset.name": record.name,
        "dataset.version": record.version,
        "dataset.sha256": record.sha256,
        "seed": str(spec.seed),
        "python_version": provenance.python_version(),
        **provenance.code_version().tags(),
    }
    return tracking.clean_tags(tags)


def log_setup(client: MlflowClient, run_id: str, spec: TrainingSpec, record: DatasetRecord, model: Any,
              frame: pd.DataFrame) -> dict[str, str]:  # fmt: skip
    """Log params, provenance tags and the dataset input in one batch each, before training.

    Returns the params as logged.
    """
    params = {
        "dataset": record.ref, "model_family": spec.model_family, "metric": spec.metric,
        "seed": spec.seed, "test_size": spec.test_size, **effective_params(model),
    }  # fmt: skip
    batch_params = [Param(k, tracking.clean_param(v)) for k, v in params.items()]
    batch_tags = [RunTag(k, v) for k, v in _run_tags(spec, record).items()]
    client.log_batch(run_id, params=batch_params, tags=batch_tags)
    dataset = from_pandas(
        frame, source=record.uri, targets=record.schema.target, name=record.ref,
        digest=record.sha256[:DATASET_DIGEST_CHARS],
    )  # fmt: skip
    context = InputTag("mlflow.data.context", "training")
    client.log_inputs(run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), tags=[context])])
    return {p.key: p.value for p in batch_params}


def log_model(run: RunTarget, spec: TrainingSpec, model: Any, x_example: pd.DataFrame,
              params: dict[str, str]) -> str:  # fmt: skip
    """Log the fitted model with signature, PII-free input example and pinned requirements; return URI."""
    # Created here so the model lands in the run's experiment (the flavors would use the default one).
    logged = mlflow.initialize_logged_model(
        name="model", source_run_id=run.run_id, params=params, experiment_id=run.experiment_id
    )
    example = x_example.head(5)
    signature = infer_signature(example, model.predict(example))
    use_lightgbm = spec.model_family == "lightgbm" and not isinstance(model, Pipeline)
    packages = provenance.LIGHTGBM_MODEL_PACKAGES if spec.model_family == "lightgbm" else None
    requirements = provenance.pip_requirements(packages or provenance.SKLEARN_MODEL_PACKAGES)
    common = {
        "signature": signature,
        "input_example": example,
        "run_id": run.run_id,
        "model_id": logged.model_id,
    }
    if use_lightgbm:
        info = mlflow.lightgbm.log_model(model, pip_requirements=requirements, **common)
    else:  # skops refuses types it does not know; these are the types of the model we just trained
        trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
        info = mlflow.sklearn.log_model(
            model, pip_requirements=requirements, skops_trusted_types=trusted, **common
        )
    return str(info.model_uri)


def log_results(client: MlflowClient, run_id: str, metrics: dict[str, float], model_uri: str) -> None:
    """Log final metrics, the model URI tag and the environment (lock file) artifact."""
    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
        tags=[RunTag("expagent.model_uri", model_uri)],
    )
    lock = provenance.lock_file()
    if lock.path is not None:
        client.log_artifact(run_id, str(lock.path), "environment")
    else:
        client.log_text(run_id, lock.text, "environment/requirements.txt")


# ---- the run ---------------------------------------------------------------------------------------


def _train_and_log(
    spec: TrainingSpec, settings: Settings, client: MlflowClient, run: RunTarget
) -> TrainingResult:
    registry = DatasetRegistry.open(settings)
    record = registry.get(spec.dataset, spec.version)
    task = check_spec(spec, record)
    frame = registry.load_frame(record, drop_pii=True)  # verifies the sha256 first
    target = record.schema.target
    x, y = frame.drop(columns=[target]), frame[target]
    stratify = y if task == "classification" else None
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=spec.test_size, random_state=spec.seed, stratify=stratify
    )
    model = build_model(spec, task, x_train)
    params = log_setup(client, run.run_id, spec, record, model, frame)
    reporter = (
        IntermediateReporter(client, run.run_id, spec.metric, task) if spec.report_intermediate else None
    )
    started = time.monotonic()
    fit(model, spec, x_train, y_train, reporter, x_test, y_test)
    metrics = {**evaluate(model, task, x_test, y_test), "fit_seconds": time.monotonic() - started}
    uri = log_model(run, spec, model, x_test, params)
    log_results(client, run.run_id, metrics, uri)
    return TrainingResult(
        run_id=run.run_id, status="FINISHED", metric=spec.metric, value=metrics[spec.metric],
        metrics=metrics, model_uri=uri,
    )  # fmt: skip


def _attach(spec: TrainingSpec, settings: Settings, client: MlflowClient) -> RunTarget:
    """Return the run to log to: ``spec.run_id`` (which must be RUNNING) or a new run."""
    run_id = spec.run_id
    if run_id is None:
        ctx = ToolContext(
            settings=settings, session_id=spec.session_id or "trainer",
            requester=spec.requester or settings.requester, _tracking=client,
        )  # fmt: skip
        run_id = tracking.create_run(ctx, spec)
    info = client.get_run(run_id).info
    if info.status != "RUNNING":
        raise RuntimeError(f"run {run_id} has already ended ({info.status}); a run is never trained twice")
    return RunTarget(run_id=run_id, experiment_id=str(info.experiment_id))


@contextmanager
def _fluent_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (used by the flavors' log_model) at ``uri`` for the block only.

    ``mlflow.set_tracking_uri`` also sets ``MLFLOW_TRACKING_URI`` in the environment; both are restored
    so an in-process caller's later settings do not silently resolve to this run's store.
    """
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    previous_env = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with _use_tracking_uri(uri):
            yield
    finally:
        if previous_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous_env


def _end_failed(client: MlflowClient, run_id: str, error: BaseException, trace: str, output: str) -> str:
    message = f"{type(error).__name__}: {error}"
    artifacts = {"traceback.txt": trace}
    if output:
        artifacts["output.log"] = output
    tracking.end_run(client, run_id, "FAILED", note=f"Training failed: {message}", artifacts=artifacts)
    return redact_text(message)


def run_training(spec: TrainingSpec, settings: Settings, capture_output: bool = False) -> TrainingResult:
    """Train and log one run for ``spec`` and end its MLflow run (never left RUNNING).

    Args:
        spec: The run to train; ``spec.run_id`` is the pre-created run to attach to (None: create one).
        settings: Workspace settings (tracking store, registry).
        capture_output: Tee fds 1/2 so a failed run gets its ``output.log`` artifact (job processes only:
            it captures every thread of the calling process).
    """
    started = time.monotonic()
    client = tracking.make_client(settings)
    run = _attach(spec, settings, client)
    run_id = run.run_id
    result: TrainingResult | None = None
    failure: tuple[BaseException, str] | None = None
    uri = settings.resolved_tracking_uri
    with _maybe_tee(capture_output) as tee, warnings.catch_warnings(), _fluent_tracking_uri(uri):
        for message in _QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        try:
            with STOP.armed_block():
                result = _train_and_log(spec, settings, client, run)
        except Interrupted as stop:
            failure = (stop, "")
        except Exception as exc:
            failure = (exc, traceback.format_exc())
    if result is not None:
        client.set_terminated(run_id, "FINISHED")
        return result.model_copy(update={"wall_seconds": time.monotonic() - started})
    assert failure is not None
    error, trace = failure
    wall = time.monotonic() - started
    if isinstance(error, Interrupted):
        tracking.end_run(client, run_id, "KILLED", note=f"Training stopped: {error}")
        return TrainingResult(
            run_id=run_id, status="KILLED", metric=spec.metric, wall_seconds=wall, error=str(error),
            stopped_by=error.kind,
        )  # fmt: skip
    message = _end_failed(client, run_id, error, trace, tee.text() if tee else "")
    return TrainingResult(
        run_id=run_id, status="FAILED", metric=spec.metric, wall_seconds=wall, error=message
    )


# ---- the job program -------------------------------------------------------------------------------

#: modules MLflow imports lazily during a run (found by profiling a first run in a fresh process).
_LAZY_MODULES = (
    "alembic.command", "alembic.config", "git", "netrc", "sqlalchemy.dialects.sqlite",
    "narwhals._pandas_like.dataframe", "narwhals._pandas_like.namespace",
    "narwhals._interchange.dataframe", "pyarrow.pandas_compat", "pyarrow.vendored.version",
    "opentelemetry.sdk.metrics", "mlflow.pyfunc.scoring_server", "mlflow.models.display_utils",
    "mlflow.tracing.export", "mlflow.tracing.processor", "mlflow.store.workspace_aware_mixin",
    "mlflow.store.tracking.sqlalchemy_store",
)  # fmt: skip


def warm_caches() -> None:
    """Do the per-process setup every job needs anyway, so a fork server does it once for all jobs.

    Without it each job pays ~0.5-3 s: MLflow maps every installed distribution to its modules on the
    first log_model, and imports a dozen modules lazily.
    """
    from mlflow.utils import requirements_utils
    from sqlalchemy.orm import configure_mappers

    for name in _LAZY_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    requirements_utils._init_packages_to_modules_map()
    configure_mappers()  # SQLAlchemy sets up MLflow's ORM classes on first use otherwise
    provenance.locked_versions()


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def exit_code(result: TrainingResult) -> int:
    """Return the job's exit code for ``result``: 0 finished, 143 stopped, 1 failed."""
    return {"FINISHED": EXIT_OK, "KILLED": EXIT_TERMINATED}.get(result.status, EXIT_FAILED)


def run_job(
    spec: TrainingSpec, settings: Settings, status_file: Path | None = None, job_id: str | None = None
) -> int:
    """Run ``spec`` as a job (signal handlers, own deadline, output capture); return the exit code.

    When ``status_file`` is given, the job's outcome (state, exit code, wall and CPU seconds) is written
    there atomically for the local runtime.
    """
    started = time.monotonic()
    with stop_signals(spec.timeout_seconds):
        try:
            result = run_training(spec, settings, capture_output=True)
        except Exception as exc:  # the run could not even be attached (store unreachable, ended run)
            traceback.print_exc()
            error = redact_text(f"{type(exc).__name__}: {exc}")
            result = TrainingResult(
                run_id=spec.run_id or "", status="FAILED", metric=spec.metric, error=error
            )
    if result.stopped_by == "timeout":
        _record_timeout(spec, settings, result, job_id, _cpu_seconds())
    code = exit_code(result)
    print(result.model_dump_json(), flush=True)
    if status_file is not None:
        from tools.runtime.local import JobOutcome, write_outcome

        outcome = JobOutcome.from_result(result, code, time.monotonic() - started, _cpu_seconds())
        write_outcome(status_file, outcome)
    return code


def _record_timeout(spec: TrainingSpec, settings: Settings, result: TrainingResult, job_id: str | None,
                    cpu_seconds: float) -> None:  # fmt: skip
    record = CancellationRecord(
        run_id=result.run_id, job_id=job_id or os.environ.get("EXPAGENT_JOB_ID", "unknown"),
        cancelled_by="trainer deadline", reason=f"exceeded timeout_seconds={spec.timeout_seconds}",
        cancelled_at=datetime.now(UTC), wall_seconds=result.wall_seconds, cpu_seconds=cpu_seconds,
        resources=spec.resources, kind="timeout",
    )  # fmt: skip
    try:
        tracking.write_cancellation(tracking.make_client(settings), record)
    except Exception:  # the runtime's observer records it instead
        traceback.print_exc()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.trainer", description="Run one training job.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--spec", type=Path, help="TrainingSpec JSON file.")
    source.add_argument("--spec-json", help="TrainingSpec as a JSON string.")
    parser.add_argument("--status-file", type=Path, help="Where to write the job outcome (local runtime).")
    parser.add_argument("--job-id", help="Runtime job ID (for cancellation records).")
    return parser.parse_args(argv)


def _load_spec(args: argparse.Namespace) -> TrainingSpec:
    text = args.spec.read_text(encoding="utf-8") if args.spec else args.spec_json
    return TrainingSpec.model_validate_json(text)


def _fail_unparsable(args: argparse.Namespace, error: Exception) -> int:
    """End the pre-created run FAILED when the spec itself is unusable."""
    print(f"error: invalid training spec: {error}", file=sys.stderr, flush=True)
    try:
        raw = json.loads(args.spec.read_text(encoding="utf-8") if args.spec else args.spec_json)
        run_id = raw.get("run_id") if isinstance(raw, dict) else None
    except (OSError, ValueError):
        run_id = None
    if run_id:
        client = tracking.make_client(load_settings())
        tracking.end_run(client, run_id, "FAILED", note=f"Invalid training spec: {error}",
                         artifacts={"traceback.txt": traceback.format_exc()})  # fmt: skip
    return EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    """Run the job program; return its exit code."""
    args = _parse_args(argv)
    try:
        spec = _load_spec(args)
    except (OSError, ValidationError, ValueError) as exc:
        return _fail_unparsable(args, exc)
    return run_job(spec, load_settings(), args.status_file, args.job_id)


warm_caches()  # at import: the job program needs it anyway, and the fork server preloads this module

if __name__ == "__main__":
    sys.exit(main())
