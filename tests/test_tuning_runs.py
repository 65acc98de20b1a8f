"""Reading a trial's result back from MLflow (a real sqlite store)."""

from __future__ import annotations

import math

import pytest
from mlflow.entities import Metric

from tools.context import ToolContext, build_context
from tools.core import tracking
from tools.core.settings import Settings
from tools.core.specs import TrainingSpec
from tools.tuning.runs import read_metric


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> ToolContext:
    return build_context(Settings(home=tmp_path_factory.mktemp("tuning-runs")), session_id="s-1")


def _run(ctx: ToolContext, *metrics: tuple[str, float, int, int]) -> str:
    spec = TrainingSpec(dataset="breast_cancer", version="1", model_family="lightgbm", metric="roc_auc",
                        experiment="read-metric")  # fmt: skip
    run_id = tracking.create_run(ctx, spec)
    batch = [Metric(key, value, timestamp, step) for key, value, timestamp, step in metrics]
    if batch:
        ctx.tracking.log_batch(run_id, metrics=batch)
    tracking.end_run(ctx, run_id, "FINISHED")
    return run_id


def test_read_metric_returns_the_value_mlflow_shows_for_the_run(ctx: ToolContext) -> None:
    run_id = _run(
        ctx, ("roc_auc", 0.91, 5, 2), ("roc_auc", 0.97, 9, 0), ("roc_auc", 0.93, 1, 2),
        ("val_roc_auc", 0.99, 10, 50),
    )  # fmt: skip
    shown = ctx.tracking.get_run(run_id).data.metrics["roc_auc"]
    assert shown == 0.91 and read_metric(ctx.tracking, run_id, "roc_auc") == shown


def test_read_metric_is_none_when_missing_or_not_a_number(ctx: ToolContext) -> None:
    assert read_metric(ctx.tracking, _run(ctx, ("accuracy", 0.9, 1, 0)), "roc_auc") is None
    nan_last = _run(ctx, ("roc_auc", 0.9, 1, 0), ("roc_auc", math.nan, 2, 0))
    assert math.isnan(ctx.tracking.get_run(nan_last).data.metrics["roc_auc"])
    assert read_metric(ctx.tracking, nan_last, "roc_auc") is None
