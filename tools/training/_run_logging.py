"""What a training run logs to MLflow: setup before training, per-round values, the model, the results.

Everything is batched (``log_batch``): against a tracking server each request costs ~45 ms. Per-round
values for pruning (``val_<metric>``, step = boosting round, 1-based) are sent at most every
``INTERMEDIATE_FLUSH_SECONDS`` while the run trains and once at the end, so a pruner reads a running
trial with ``MlflowClient.get_metric_history(run_id, "val_<metric>")`` on any runtime.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from mlflow.data.pandas_dataset import from_pandas
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from tools.core import provenance, tracking
from tools.core import tags as tag_keys
from tools.core.registry import DatasetRecord
from tools.core.specs import MAXIMIZE, TrainingSpec
from tools.training._modeling import Task, effective_params, round_score
from tools.training.holdout import PREDICTIONS_ARTIFACT, Folds, Split

INTERMEDIATE_FLUSH_SECONDS = 1.0
#: digest column of MLflow datasets holds at most 36 characters.
DATASET_DIGEST_CHARS = 32
_MLFLOW_BATCH = 1000
_MAX_DATASET_INPUTS = 8
_DATASET_INPUTS: dict[tuple[object, ...], DatasetInput] = {}


@dataclass(frozen=True)
class RunTarget:
    """The MLflow run a training logs to."""

    run_id: str
    experiment_id: str


# ---- per-round values (pruning) -------------------------------------------------------------------


#: LightGBM's built-in metric (computed in C++) that equals an expagent metric on the validation split,
#: by (metric, binary): its name, and whether its value is 1 - ours (the error rate for accuracy).
_BUILTIN: dict[tuple[str, bool], tuple[str, bool]] = {
    ("roc_auc", True): ("auc", False),
    ("log_loss", True): ("binary_logloss", False),
    ("log_loss", False): ("multi_logloss", False),
    ("accuracy", True): ("binary_error", True),
    ("accuracy", False): ("multi_error", True),
    ("rmse", False): ("rmse", False),
    ("mae", False): ("l1", False),
}


class IntermediateReporter:
    """LightGBM eval metric + callback that logs ``val_<metric>`` every ``every`` rounds (and the last).

    LightGBM scores its validation set incrementally every round. Where it has the metric built in
    (AUC, log loss, error rate, RMSE, MAE) it computes it in C++; f1 and r2 go through
    :func:`tools.training._modeling.round_score`. Values are sent in timed batches.
    """

    def __init__(self, client: MlflowClient, run_id: str, metric: str, task: Task, classes: int = 0,
                 every: int = 1) -> None:  # fmt: skip
        self.client, self.run_id, self.metric, self.task = client, run_id, metric, task
        self.key = f"val_{metric}"
        self.every = every
        builtin = _BUILTIN.get((metric, classes == 2 if task == "classification" else False))
        self.builtin_name: str | None = builtin[0] if builtin else None
        self._complement = builtin[1] if builtin else False
        self._pending: list[Metric] = []
        self._last_flush = time.monotonic()
        self.order = 10  # run after LightGBM's own callbacks

    @property
    def lightgbm_metric(self) -> Any:
        """LightGBM's ``eval_metric``: the built-in metric's name, or :meth:`eval_metric`."""
        return self.builtin_name or self.eval_metric

    def eval_metric(self, y_true: np.ndarray, y_pred: np.ndarray) -> tuple[str, float, bool]:
        """LightGBM custom metric: the spec's metric on the validation split (labels encoded 0..k-1)."""
        value = round_score(self.metric, y_true, y_pred, self.task)
        return self.key, value, self.metric in MAXIMIZE

    def __call__(self, env: Any) -> None:
        step = env.iteration + 1
        if step % self.every and step != env.end_iteration:
            return
        wanted = self.builtin_name or self.key
        for data, name, value, _ in env.evaluation_result_list:
            if name == wanted and data == "val":
                score = 1.0 - float(value) if self._complement else float(value)
                self._pending.append(Metric(self.key, score, int(time.time() * 1000), step))
        if time.monotonic() - self._last_flush >= INTERMEDIATE_FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        for start in range(0, len(self._pending), _MLFLOW_BATCH):
            self.client.log_batch(self.run_id, metrics=self._pending[start : start + _MLFLOW_BATCH])
        self._pending.clear()
        self._last_flush = time.monotonic()


def log_step(client: MlflowClient, run_id: str, key: str, value: float, step: int) -> None:
    """Log one intermediate value now (a fold's running CV mean: few values, each wanted at once)."""
    client.log_batch(run_id, metrics=[Metric(key, value, int(time.time() * 1000), step)])


# ---- before and after training ----------------------------------------------------------------------


def _run_tags(spec: TrainingSpec, record: DatasetRecord) -> dict[str, str]:
    tags = {
        "dataset.name": record.name,
        "dataset.version": record.version,
        "dataset.sha256": record.sha256,
        "seed": str(spec.seed),
        "python_version": provenance.python_version(),
        **provenance.code_version().tags(),
    }
    if record.in_s3:
        tags.update({"dataset.uri": record.uri, "dataset.s3_version_id": record.s3_version_id or ""})
    return tracking.clean_tags(tags)


def log_setup(client: MlflowClient, run_id: str, spec: TrainingSpec, record: DatasetRecord, model: Any,
              frame: pd.DataFrame, split: Split, folds: Folds | None = None) -> dict[str, str]:  # fmt: skip
    """Log params, provenance tags and the dataset input in one batch each, before training.

    Returns the params as logged.
    """
    params = {
        "dataset": record.ref, "model_family": spec.model_family, "metric": spec.metric,
        "seed": spec.seed, "test_size": spec.test_size, "val_size": spec.val_size,
        "selection_metric": spec.selection_metric, **split.params(), **effective_params(model),
    }  # fmt: skip
    if folds is not None:
        params["cv_folds"] = len(folds.held_out)
    batch_params = [Param(k, tracking.clean_param(v)) for k, v in params.items()]
    tags = {
        **_run_tags(spec, record),
        **split.tags(frame.index),
        **(folds.tags(frame.index) if folds else {}),
    }
    batch_tags = [RunTag(k, v) for k, v in tags.items()]
    client.log_batch(run_id, params=batch_params, tags=batch_tags)
    client.log_inputs(run_id, datasets=[dataset_input(record, frame)])
    return {p.key: p.value for p in batch_params}


def dataset_input(record: DatasetRecord, frame: pd.DataFrame) -> DatasetInput:
    """Return the MLflow dataset input (training context) of ``frame``, the verified data of ``record``.

    Building it infers the frame's schema (~30 ms a run), so it is kept per dataset content and columns;
    the fork server prepares the workspace's datasets once (``tools.training.dataset_cache``).
    """
    key = (record.uri, record.ref, record.sha256, record.schema.target, tuple(map(str, frame.columns)))
    cached = _DATASET_INPUTS.get(key)
    if cached is None:
        dataset = from_pandas(
            frame, source=record.uri, targets=record.schema.target, name=record.ref,
            digest=record.sha256[:DATASET_DIGEST_CHARS],
        )  # fmt: skip
        context = InputTag("mlflow.data.context", "training")
        cached = DatasetInput(dataset._to_mlflow_entity(), tags=[context])
        if len(_DATASET_INPUTS) >= _MAX_DATASET_INPUTS:
            _DATASET_INPUTS.pop(next(iter(_DATASET_INPUTS)))
        _DATASET_INPUTS[key] = cached
    return cached


def log_results(client: MlflowClient, run_id: str, metrics: dict[str, float], model_uri: str,
                predictions: pd.DataFrame | None = None) -> None:  # fmt: skip
    """Log final metrics, the model URI tag, the test predictions and the environment (lock file)."""
    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
        tags=[RunTag(tag_keys.MODEL_URI, model_uri)],
    )
    if predictions is not None:
        client.log_text(run_id, predictions.to_csv(index=False), PREDICTIONS_ARTIFACT)
    lock = provenance.lock_file()
    if lock.path is not None:
        client.log_artifact(run_id, str(lock.path), "environment")
    else:
        client.log_text(run_id, lock.text, "environment/requirements.txt")
