"""The tuning loop end to end: real local runtime, real trainer jobs, MLflow and Optuna on SQLite.

Trials are tiny LightGBM models on breast_cancer@1. A "hanging" trial is a real runaway training job
(millions of boosting rounds at a negligible learning rate) injected by a runtime wrapper for chosen
trial numbers, so the watchdog and cancellation paths stop real processes.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import optuna
import pytest
from tuning_support import (
    EXPERIMENT,
    HangingRuntime,
    assert_nothing_running,
    cancellation_record,
    hang_all,
    make_ctx,
    real_baseline,
    study,
)

from tools.context import ToolContext
from tools.core.settings import Settings
from tools.core.tracking import create_parent_run
from tools.tuning.records import StudyResult, TrialResult
from tools.tuning.study import StudyConflict, run_study, study_storage


@pytest.fixture
def ctx(tmp_path: Path) -> Any:
    context = make_ctx(tmp_path / "ws")
    yield context
    context.close()


# ---- the loop -------------------------------------------------------------------------------------


def test_study_nests_trials_under_a_tuning_run_and_compares_with_the_baseline(ctx: ToolContext) -> None:
    session = create_parent_run(ctx, EXPERIMENT, "session", run_name="session")
    baseline = real_baseline(ctx, session)
    events: list[dict[str, Any]] = []
    settings = study(ctx, n_trials=4, parallelism=3, parent_run_id=session)  # cap is 2, not approved

    result = run_study(ctx, settings, baseline, events.append)

    assert result.stop_reason == "max_trials" and [t.state for t in result.trials] == ["COMPLETE"] * 4
    assert any("parallelism held at 2" in note for note in result.notes)
    assert _max_overlap(ctx, result) == 2
    assert [e["kind"] for e in events].count("trial_finished") == 4
    values = [t.value for t in result.trials]
    assert result.best is not None and result.best.value == max(values)  # type: ignore[type-var]
    client = ctx.tracking
    tuning = client.get_run(result.tuning_run_id)
    assert tuning.info.status == "FINISHED" == result.tuning_run_status
    assert tuning.data.tags["mlflow.parentRunId"] == session
    assert tuning.data.tags["expagent.role"] == "tuning"
    assert tuning.data.params["n_trials"] == "4" and tuning.data.params["space.n_estimators"].startswith(
        "int"
    )
    assert tuning.data.metrics["best_val_roc_auc"] == result.best.value
    assert tuning.data.metrics["baseline_val_roc_auc"] == baseline.value
    assert tuning.data.tags["expagent.best_run_id"] == result.best.run_id
    artifacts = {a.path for a in client.list_artifacts(result.tuning_run_id)}
    assert {"comparison.json", "search_space.json", "study_settings.json", "trials.json"} <= artifacts
    children = client.search_runs(
        [tuning.info.experiment_id], f"tags.`mlflow.parentRunId` = '{result.tuning_run_id}'"
    )
    by_number = {int(r.data.tags["expagent.trial_number"]): r for r in children}
    assert sorted(by_number) == [0, 1, 2, 3]
    for trial in result.trials:
        run = by_number[trial.number]  # type: ignore[index]
        assert run.info.run_id == trial.run_id and run.info.status == "FINISHED"
        assert run.data.tags["expagent.role"] == "trial" and run.data.metrics["val_roc_auc"] == trial.value
        assert trial.cpu_seconds and trial.cpu_seconds > 0 and trial.wall_seconds
    stored = optuna.load_study(study_name="study", storage=study_storage(ctx.settings.optuna_storage))
    assert [t.state.name for t in stored.trials] == ["COMPLETE"] * 4
    assert result.budget.cpu_seconds >= sum(t.cpu_seconds or 0 for t in result.trials)
    client.set_terminated(session)  # the graph ends the session run
    assert_nothing_running(ctx)


def _max_overlap(ctx: ToolContext, result: StudyResult) -> int:
    """Return the most trial runs that were RUNNING at the same moment (from MLflow's times)."""
    spans = [ctx.tracking.get_run(t.run_id).info for t in result.trials]  # type: ignore[arg-type]
    return max(sum(1 for o in spans if o.start_time <= s.start_time < o.end_time) for s in spans)


def test_the_cpu_budget_is_never_exceeded(ctx: ToolContext) -> None:
    baseline = TrialResult(state="COMPLETE", value=0.9, wall_seconds=0.2, cpu_seconds=0.2)
    budget_seconds = 1.5  # a warm trial here uses ~0.1-0.2 CPU-s: 40 of them cannot fit
    result = run_study(ctx, study(ctx, n_trials=40, cpu_hours=budget_seconds / 3600), baseline)

    assert result.stop_reason == "budget", result.stop_detail
    assert 1 <= len(result.trials) < 40
    assert result.budget.cpu_seconds <= budget_seconds
    assert "CPU" in result.stop_detail
    assert_nothing_running(ctx)


@pytest.mark.parametrize(
    ("fields", "baseline_value", "reason"),
    [({"target": 0.5}, 0.4, "target"), ({"patience": 1}, 1.0, "patience")],
)
def test_target_and_patience_stop_the_study(
    ctx: ToolContext, fields: dict, baseline_value: float, reason: str
) -> None:
    baseline = TrialResult(state="COMPLETE", value=baseline_value, wall_seconds=0.5, cpu_seconds=0.5)
    result = run_study(ctx, study(ctx, n_trials=5, **fields), baseline)
    assert result.stop_reason == reason and len(result.trials) == 1


def test_a_trial_that_cannot_finish_in_the_wall_clock_limit_is_not_started(ctx: ToolContext) -> None:
    baseline = TrialResult(state="COMPLETE", value=0.9, wall_seconds=30.0, cpu_seconds=30.0)
    result = run_study(ctx, study(ctx, wall_clock_seconds=10), baseline)
    assert result.stop_reason == "wall_clock" and result.trials == []
    assert "would not finish" in result.stop_detail


def test_consecutive_failures_stop_the_study_and_are_recorded(ctx: ToolContext) -> None:
    settings = study(ctx, n_trials=5, max_consecutive_failures=2, overrides={"num_leaves": 1})
    result = run_study(ctx, settings)
    assert result.stop_reason == "failures" and [t.state for t in result.trials] == ["FAIL", "FAIL"]
    assert all(t.note for t in result.trials)
    for trial in result.trials:
        assert ctx.tracking.get_run(trial.run_id).info.status == "FAILED"  # type: ignore[arg-type]
    assert ctx.tracking.get_run(result.tuning_run_id).info.status == "FAILED"


def test_a_policy_rejection_stops_before_anything_trains(ctx: ToolContext) -> None:
    result = run_study(ctx, study(ctx, version="99"))
    assert result.stop_reason == "rejected" and "versioned_data" in result.stop_detail
    assert result.trials == [] and result.tuning_run_status == "FAILED"
    stored = optuna.load_study(study_name="study", storage=study_storage(ctx.settings.optuna_storage))
    assert [t.user_attrs.get("launched") for t in stored.trials] == [False]


def test_reusing_a_study_name_for_another_request_is_refused(ctx: ToolContext) -> None:
    run_study(ctx, study(ctx, n_trials=1))
    with pytest.raises(StudyConflict, match="different dataset"):
        run_study(ctx, study(ctx, dataset="wine"))


# ---- runaway control ----------------------------------------------------------------------------------


def test_the_watchdog_cancels_a_hanging_trial_and_documents_it(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path / "ws", runtime=HangingRuntime)
    try:
        result = run_study(ctx, study(ctx, n_trials=2, parallelism=2, trial_timeout_seconds=4))
    finally:
        ctx.close()
    states = {t.number: t for t in result.trials}
    assert states[0].state == "COMPLETE"
    hung = states[1]
    assert hung.state == "KILLED" and hung.cancelled_by == "watchdog" and "deadline" in (hung.note or "")
    assert result.cancelled_trials == [hung]
    assert ctx.tracking.get_run(hung.run_id).info.status == "KILLED"  # type: ignore[arg-type]
    record = cancellation_record(ctx, hung.run_id)  # type: ignore[arg-type]
    assert record["kind"] == "timeout" and record["cancelled_by"] == "watchdog"
    assert_nothing_running(ctx)


def test_cancelling_the_study_stops_every_running_trial(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path / "ws", runtime=hang_all)
    cancel = threading.Event()
    started: list[str] = []

    def progress(event: dict[str, Any]) -> None:
        if event["kind"] == "run_started":
            started.append(event["run_id"])
            if len(started) == 2:
                cancel.set()

    try:
        result = run_study(ctx, study(ctx, n_trials=4, parallelism=2), None, progress, cancel)
    finally:
        ctx.close()
    assert result.stop_reason == "cancelled" and result.tuning_run_status == "KILLED"
    assert [t.state for t in result.trials] == ["KILLED", "KILLED"]
    assert {t.cancelled_by for t in result.trials} == {"alice"}
    for trial in result.trials:
        assert ctx.tracking.get_run(trial.run_id).info.status == "KILLED"  # type: ignore[arg-type]
        assert cancellation_record(ctx, trial.run_id)["kind"] == "cancelled"  # type: ignore[arg-type]
    assert ctx.tracking.get_run(result.tuning_run_id).info.status == "KILLED"
    assert_nothing_running(ctx)


def test_an_unpromising_trial_is_pruned_and_its_run_killed(tmp_path: Path) -> None:
    # Trial 1 learns 100x slower and would run for ever: its early log-loss is far above trial 0's curve.
    def slow_learner(settings: Settings) -> HangingRuntime:
        return HangingRuntime(settings, {1}, {"n_estimators": 1_000_000, "learning_rate": 1e-4})

    ctx = make_ctx(tmp_path / "ws", runtime=slow_learner)
    fixed = {"n_estimators": 300, "num_leaves": 4, "learning_rate": [0.05, 0.2]}
    settings = study(
        ctx, n_trials=2, metric="log_loss", overrides=fixed, prune=True, prune_startup_trials=1,
        prune_warmup_steps=10, prune_interval_steps=20, trial_timeout_seconds=60,
    )  # fmt: skip
    try:
        result = run_study(ctx, settings)
    finally:
        ctx.close()
    first, second = result.trials
    assert first.state == "COMPLETE"
    assert second.state == "PRUNED" and second.cancelled_by == "pruner", second.note
    assert "worse than the median" in (second.note or "")
    assert ctx.tracking.get_run(second.run_id).info.status == "KILLED"  # type: ignore[arg-type]
    assert cancellation_record(ctx, second.run_id)["kind"] == "pruned"  # type: ignore[arg-type]
    stored = optuna.load_study(study_name="study", storage=study_storage(ctx.settings.optuna_storage))
    assert [t.state.name for t in stored.trials] == ["COMPLETE", "PRUNED"]
    assert result.count("PRUNED") == 1 and result.cancelled_trials == []
    assert_nothing_running(ctx)
