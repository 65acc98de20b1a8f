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


def test_log_scaled_plot_axes_are_labelled_in_plain_text() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tools.tuning._progress import _plain_log_labels

    figure, axes = plt.subplots()
    try:
        axes.plot([1e-3, 1e-2, 1e-1], [20, 200, 400])
        axes.set_xscale("log")
        axes.set_yscale("log")  # a range under two decades: minor ticks are labelled too
        _plain_log_labels(figure)
        figure.canvas.draw()
        x_labels = [t.get_text() for t in axes.get_xticklabels() if t.get_text()]
        y_labels = [t.get_text() for t in axes.get_yticklabels(minor=True) if t.get_text()]
        assert "1e-02" in [label.replace("\N{MINUS SIGN}", "-") for label in x_labels], x_labels
        assert {"20", "200", "400"} <= set(y_labels), y_labels
        assert not [label for label in x_labels + y_labels if "$" in label or "mathdefault" in label]
    finally:
        plt.close(figure)
