"""The tuning loop end to end: real local runtime, real trainer jobs, MLflow and Optuna on SQLite.

Trials are tiny LightGBM models on breast_cancer@1. A "hanging" trial is a real runaway training job
(millions of boosting rounds at a negligible learning rate) injected by a runtime wrapper for chosen
trial numbers, so the watchdog and cancellation paths stop real processes.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow.tracking import MlflowClient

from agent.config import Settings
from tools.context import ToolContext, build_context
from tools.policy import guarded_call
from tools.runtime.local import LocalRuntime
from tools.specs import JobInfo, TrainingSpec
from tools.tracking import create_parent_run
from tools.tuning import StudyConflict, run_study
from tools.tuning_models import StudyResult, StudySettings, TrialResult
from tools.tuning_space import load_search_space

EXPERIMENT = "tune-test"
TINY = {"n_estimators": [5, 20], "num_leaves": [4, 16]}
HANG_PARAMS = {"n_estimators": 10_000_000, "learning_rate": 1e-9, "num_leaves": 2}

_TEMPLATE: Path | None = None


def _template_store() -> Path:
    # A new MLflow sqlite store runs its migrations (seconds): migrate one and copy the file.
    global _TEMPLATE
    if _TEMPLATE is None:
        _TEMPLATE = Path(tempfile.mkdtemp(prefix="tuning-mlflow-")) / "mlflow.db"
        MlflowClient(f"sqlite:///{_TEMPLATE}").search_experiments()
    return _TEMPLATE


def make_ctx(home: Path, runtime: Any = None, max_concurrent_jobs: int = 2) -> ToolContext:
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_template_store(), home / "mlflow.db")
    settings = Settings(home=home, trace=False)
    settings.budget.max_concurrent_jobs = max_concurrent_jobs
    ctx = build_context(settings, session_id="sess-tune", requester="alice")
    if runtime is not None:
        ctx._runtime = runtime(settings)
    return ctx


def study(
    ctx: ToolContext, name: str = "study", overrides: dict | None = None, **fields: Any
) -> StudySettings:
    parent = fields.pop("parent_run_id", None)
    values: dict[str, Any] = {
        "study_name": name, "session_id": ctx.session_id, "parent_run_id": parent, "dataset": "breast_cancer",
        "version": "1", "model_family": "lightgbm", "metric": "roc_auc", "experiment": EXPERIMENT,
        "search_space": load_search_space("lightgbm", {**TINY, **(overrides or {})}), "n_trials": 3,
        "parallelism": 1, "prune": False, "poll_seconds": 0.05,
    }  # fmt: skip
    return StudySettings.model_validate({**values, **fields})


class HangingRuntime:
    """The local runtime, except that chosen trials train a runaway model (a real hanging job)."""

    def __init__(self, settings: Settings, hang: set[int] | None = None) -> None:
        self.inner = LocalRuntime.from_settings(settings)
        self.hang = hang if hang is not None else {1}
        self.name = "local"

    def submit(self, spec: TrainingSpec) -> JobInfo:
        if spec.trial_number in self.hang:
            spec = spec.model_copy(update={"params": {**spec.params, **HANG_PARAMS}})
        return self.inner.submit(spec)

    def cancel(self, job_id: str, reason: str, cancelled_by: str, kind: Any = "cancelled") -> JobInfo:
        return self.inner.cancel(job_id, reason, cancelled_by, kind=kind)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def hang_all(settings: Settings) -> HangingRuntime:
    return HangingRuntime(settings, hang=set(range(100)))


def runs_of(ctx: ToolContext) -> list[Any]:
    client = ctx.tracking
    ids = [e.experiment_id for e in client.search_experiments()]
    return list(client.search_runs(ids, max_results=1000))


def _artifact_json(ctx: ToolContext, run_id: str) -> dict[str, Any]:
    import json

    import mlflow.artifacts

    text = mlflow.artifacts.load_text(f"{ctx.tracking.get_run(run_id).info.artifact_uri}/cancellation.json")
    return dict(json.loads(text))


def assert_nothing_running(ctx: ToolContext) -> None:
    running = [
        (r.info.run_id, r.data.tags.get("expagent.role")) for r in runs_of(ctx) if r.info.status == "RUNNING"
    ]
    assert running == []


def real_baseline(ctx: ToolContext, session_run: str) -> TrialResult:
    args = {"dataset": "breast_cancer", "version": "1", "model_family": "lightgbm", "metric": "roc_auc",
            "experiment": EXPERIMENT, "params": {"n_estimators": 10}, "role": "baseline",
            "parent_run_id": session_run}  # fmt: skip
    outcome = guarded_call("start_training_run", args, ctx)
    assert outcome.ok and outcome.result, outcome.to_model_message()
    job = ctx.runtime.wait([outcome.result["job_id"]], timeout=120)[0]
    assert job.state == "succeeded", job.reason
    value = ctx.tracking.get_run(job.run_id).data.metrics["roc_auc"]
    return TrialResult(run_id=job.run_id, job_id=job.job_id, state="COMPLETE", value=value,
                       wall_seconds=job.wall_seconds, cpu_seconds=job.cpu_seconds)  # fmt: skip


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
    assert tuning.data.metrics["best_roc_auc"] == result.best.value
    assert tuning.data.metrics["baseline_roc_auc"] == baseline.value
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
        assert run.data.tags["expagent.role"] == "trial" and run.data.metrics["roc_auc"] == trial.value
        assert trial.cpu_seconds and trial.cpu_seconds > 0 and trial.wall_seconds
    stored = optuna.load_study(study_name="study", storage=ctx.settings.optuna_storage)
    assert [t.state.name for t in stored.trials] == ["COMPLETE"] * 4
    assert result.budget.cpu_seconds >= sum(t.cpu_seconds or 0 for t in result.trials)
    client.set_terminated(session)  # the graph ends the session run
    assert_nothing_running(ctx)


def _max_overlap(ctx: ToolContext, result: StudyResult) -> int:
    """Return the most trial runs that were RUNNING at the same moment (from MLflow's times)."""
    spans = [ctx.tracking.get_run(t.run_id).info for t in result.trials]  # type: ignore[arg-type]
    return max(sum(1 for o in spans if o.start_time <= s.start_time < o.end_time) for s in spans)


def test_the_cpu_budget_is_never_exceeded(ctx: ToolContext) -> None:
    baseline = TrialResult(state="COMPLETE", value=0.9, wall_seconds=1.0, cpu_seconds=1.0)
    budget_seconds = 3.0
    result = run_study(ctx, study(ctx, n_trials=10, cpu_hours=budget_seconds / 3600), baseline)

    assert result.stop_reason == "budget", result.stop_detail
    assert 1 <= len(result.trials) < 10
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
    settings = study(
        ctx, n_trials=5, max_consecutive_failures=2, overrides={"objective": "no_such_objective"}
    )
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
    stored = optuna.load_study(study_name="study", storage=ctx.settings.optuna_storage)
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
    record = _artifact_json(ctx, hung.run_id)  # type: ignore[arg-type]
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
        assert _artifact_json(ctx, trial.run_id)["kind"] == "cancelled"  # type: ignore[arg-type]
    assert ctx.tracking.get_run(result.tuning_run_id).info.status == "KILLED"
    assert_nothing_running(ctx)
