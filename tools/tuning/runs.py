"""The MLflow side of a tuning study: the parent tuning run, reading trial results, closing runs.

The tuning run is nested under the session run; every trial run is nested under the tuning run. The
tuning run holds the study settings and search space (params + artifacts) from the start, and the final
comparison of the best trial against the baseline at the end.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from tools.core import tags as tag_keys
from tools.core import tracking
from tools.tuning.records import StudyResult, StudySettings, TestComparison, TrialResult

if TYPE_CHECKING:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from tools.context import ToolContext

#: study settings logged as params of the tuning run (the rest is in study_settings.json).
_LOGGED_SETTINGS = (
    "study_name", "dataset", "version", "model_family", "metric", "direction", "n_trials", "parallelism",
    "wall_clock_seconds", "cpu_hours", "gpu_hours", "patience", "target", "seed", "trial_timeout_seconds",
    "watchdog_factor", "prune",
)  # fmt: skip


def create_tuning_run(ctx: ToolContext, settings: StudySettings) -> str:
    """Create the RUNNING tuning run (settings as params, search space as params and artifacts)."""
    params: dict[str, Any] = {key: getattr(settings, key) for key in _LOGGED_SETTINGS}
    params["sampler"] = f"TPESampler(seed={settings.seed})"
    params["pruner"] = "MedianPruner" if settings.prune else "none"
    params.update({f"space.{name}": _spec_text(spec) for name, spec in settings.search_space.items()})
    tags = {
        tag_keys.NOTE: (
            f"Tuning study {settings.study_name}: {settings.code_label} on {settings.dataset}@"
            f"{settings.version}, up to {settings.n_trials} trials, selected on {settings.selection_metric}. "
            f"Chart best_val_{settings.metric} is the optimisation history; plots/ has Optuna's plots."
        ),
        "dataset.name": settings.dataset,
        "dataset.version": settings.version,
        **(
            {"entry_point": settings.entry_point.ref}
            if settings.entry_point
            else {"model_family": str(settings.model_family)}
        ),
        "optuna.study_name": settings.study_name,
        "seed": str(settings.seed),
    }
    run_id = tracking.create_parent_run(
        ctx, settings.experiment, "tuning", run_name=f"tuning-{settings.study_name}"[:250],
        params=params, tags=tags, parent_run_id=settings.parent_run_id,
    )  # fmt: skip
    client = ctx.tracking
    client.log_dict(run_id, settings.search_space, "search_space.json")
    client.log_dict(run_id, settings.model_dump(mode="json"), "study_settings.json")
    return run_id


def _spec_text(spec: dict[str, Any]) -> str:
    if spec.get("type") == "fixed":
        return f"fixed {spec.get('value')!r}"
    if spec.get("type") == "categorical":
        return f"categorical {spec.get('choices')!r}"
    scale = " log" if spec.get("log") else ""
    return f"{spec.get('type')} [{spec.get('low')}, {spec.get('high')}]{scale}"


def reopen_if_ended(client: MlflowClient, run_id: str) -> bool:
    """Set an ended tuning run back to RUNNING (a study continued after it was stopped)."""
    if client.get_run(run_id).info.status == "RUNNING":
        return False
    client.update_run(run_id, status="RUNNING")
    return True


def read_metric(client: MlflowClient, run_id: str, metric: str) -> float | None:
    """Return the run's final ``metric``, or None when it is missing or not a number."""
    # One query for one metric's history instead of the whole run. The final value is the one MLflow
    # reports as the run's metric: the greatest (step, timestamp, value), a NaN stored as 0.
    history = client.get_metric_history(run_id, metric)
    if not history:
        return None
    value = float(max(history, key=_recency).value)
    return None if math.isnan(value) else value


def _recency(measure: Metric) -> tuple[int, int, float]:
    value = float(measure.value)
    return int(measure.step), int(measure.timestamp), 0.0 if math.isnan(value) else value


def read_intermediate(client: MlflowClient, run_id: str, key: str) -> dict[int, float]:
    """Return the trial's intermediate values logged so far, by step.

    ``key`` is the selection metric: ``val_<metric>`` by boosting round, or with cross-validation
    ``cv_val_<metric>_mean``, the running CV mean after fold k (step k).
    """
    history = client.get_metric_history(run_id, key)
    return {int(m.step): float(m.value) for m in history if not math.isnan(m.value)}


def running_trial_runs(client: MlflowClient, experiment: str, tuning_run_id: str) -> dict[int, str]:
    """Return ``{trial_number: run_id}`` of trial runs under the tuning run still marked RUNNING."""
    found = {}
    for run in _child_runs(client, experiment, tuning_run_id):
        number = run.data.tags.get(tag_keys.TRIAL_NUMBER)
        if run.info.status == "RUNNING" and number is not None and number.isdigit():
            found[int(number)] = run.info.run_id
    return found


def trial_run_by_number(client: MlflowClient, experiment: str, tuning_run_id: str, number: int) -> str | None:
    """Return the run of trial ``number`` under the tuning run, if one was created."""
    for run in _child_runs(client, experiment, tuning_run_id):
        if run.data.tags.get(tag_keys.TRIAL_NUMBER) == str(number):
            return str(run.info.run_id)
    return None


def _child_runs(client: MlflowClient, experiment: str, tuning_run_id: str) -> list[Any]:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    query = f"tags.`mlflow.parentRunId` = '{tuning_run_id}'"
    return list(client.search_runs([found.experiment_id], filter_string=query, max_results=5000))


#: where the study's outcome starts in the tuning run's description (after what the study is).
_RESULT_HEAD = "\n\nResult: "


def finish_tuning_run(ctx: ToolContext, result: StudyResult, status: tracking.TerminalStatus) -> None:
    """Log the final comparison (best vs baseline), trial table and stop reason; end the tuning run."""
    from mlflow.entities import Metric, RunTag

    client = ctx.tracking
    run_id = result.tuning_run_id
    metrics = _final_metrics(result)
    best, baseline = result.best, result.baseline
    tags = {
        tag_keys.STOP_REASON: result.stop_reason,
        tag_keys.BEST_RUN_ID: (best.run_id if best else None) or "none",
        tag_keys.BASELINE_RUN_ID: (baseline.run_id if baseline else None) or "none",
        tag_keys.SELECTED_ON: result.selected_on or f"val_{result.metric}",
    }
    if result.test_comparison is not None:
        metrics.update(_comparison_metrics(result.test_comparison))
        tags[tag_keys.WITHIN_NOISE] = str(result.test_comparison.within_noise).lower()
    client.log_batch(
        run_id,
        metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()],
        tags=[RunTag(k, v) for k, v in tracking.clean_tags(tags).items()],
    )
    client.log_dict(run_id, comparison(result), "comparison.json")
    client.log_dict(run_id, {"trials": [t.model_dump(mode="json") for t in result.trials]}, "trials.json")
    described = client.get_run(run_id).data.tags.get(tag_keys.NOTE, "").split(_RESULT_HEAD)[0].strip()
    note = f"{described}{_RESULT_HEAD}{comparison_text(result)}" if described else comparison_text(result)
    tracking.end_run(client, run_id, status, note=note, only_if_running=False)


def _final_metrics(result: StudyResult) -> dict[str, float]:
    metrics: dict[str, float] = {
        "trials_complete": result.count("COMPLETE"),
        "trials_pruned": result.count("PRUNED"),
        "trials_failed": result.count("FAIL"),
        "trials_killed": result.count("KILLED"),
        "cpu_seconds_used": result.budget.cpu_seconds,
        "wall_seconds": result.budget.wall_seconds,
    }
    # Selection values are validation values: the names say so (best_val_<metric> is also the step metric
    # of the optimisation history; its last step is the study's best).
    if result.baseline is not None and result.baseline.value is not None:
        metrics[f"baseline_val_{result.metric}"] = result.baseline.value
        if result.best is not None and result.best.value is not None:
            metrics[f"improvement_val_{result.metric}"] = result.best.value - result.baseline.value
    return metrics


def _comparison_metrics(found: TestComparison) -> dict[str, float]:
    m = found.metric
    return {
        f"test_{m}_best": found.best_value,
        f"test_{m}_baseline": found.baseline_value,
        f"test_{m}_gain": found.difference,
        f"test_{m}_gain_low": found.low,
        f"test_{m}_gain_high": found.high,
    }


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    """Keep MLflow's download progress bars out of the user's terminal for the block."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    previous = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = previous


def compare_on_test(client: MlflowClient, result: StudyResult) -> tuple[TestComparison | None, str | None]:
    """Compare the best trial with the baseline on the test rows (paired bootstrap); or say why not.

    Returns ``(comparison, None)`` or ``(None, reason)``.
    """
    import tempfile

    import pandas as pd

    from tools.training._modeling import frame_row_scorer, frame_scorer
    from tools.training.holdout import PREDICTIONS_ARTIFACT, paired_bootstrap

    best, baseline = result.best, result.baseline
    if best is None or baseline is None or not best.run_id or not baseline.run_id:
        return None, "no best trial and baseline to compare on the test split"
    try:
        with tempfile.TemporaryDirectory() as tmp, _no_progress_bars():
            frames = [
                pd.read_csv(client.download_artifacts(run_id, PREDICTIONS_ARTIFACT, tmp + f"/{i}"))
                for i, run_id in enumerate((best.run_id, baseline.run_id))
            ]
        scorer = frame_scorer(result.metric)
        found = paired_bootstrap(
            frames[0], frames[1], result.metric, scorer, row_scorer=frame_row_scorer(result.metric)
        )
    except Exception as exc:  # noqa: BLE001 - an older run without predictions: say so, do not fail
        return None, f"best vs baseline not compared on the test split: {type(exc).__name__}: {exc}"
    return TestComparison(
        metric=result.metric, best_value=scorer(frames[0]), baseline_value=scorer(frames[1]),
        difference=found.difference, low=found.low, high=found.high, rows=found.rows,
        resamples=found.resamples,
    ), None  # fmt: skip


def comparison(result: StudyResult) -> dict[str, Any]:
    """Return the best-vs-baseline comparison as plain data."""

    def brief(trial: TrialResult | None) -> dict[str, Any] | None:
        if trial is None:
            return None
        return {"run_id": trial.run_id, "trial_number": trial.number, "value": trial.value,
                "params": trial.params}  # fmt: skip

    return {
        "metric": result.metric,
        "direction": result.direction,
        "best": brief(result.best),
        "baseline": brief(result.baseline),
        "selected_on": result.selected_on or f"val_{result.metric}",
        "improved_over_baseline": result.improved_over_baseline,
        "test_comparison": result.test_comparison.model_dump() if result.test_comparison else None,
        "stop_reason": result.stop_reason,
        "stop_detail": result.stop_detail,
        "trials": {s: result.count(s) for s in ("COMPLETE", "PRUNED", "FAIL", "KILLED")},
        "budget": result.budget.model_dump(),
    }


def comparison_text(result: StudyResult) -> str:
    """Return a one-paragraph summary of the study for the tuning run's note."""
    best = result.best
    text = f"Tuning stopped ({result.stop_reason}: {result.stop_detail}). "
    if best is None:
        return text + "No trial completed."
    selected = result.selected_on or f"val_{result.metric}"
    text += f"Best {selected} = {best.value:.6g} (trial {best.number}, run {best.run_id})"
    base = result.baseline
    if base is not None and base.value is not None:
        text += f" vs baseline {base.value:.6g} (run {base.run_id})"
    text += "."
    if result.test_comparison is not None:
        text += " " + result.test_comparison.sentence()
    return text
