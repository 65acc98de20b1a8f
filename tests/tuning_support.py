"""Helpers shared by the tuning tests: a workspace context, study settings, a runtime with hanging trials."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from tools.context import ToolContext, build_context
from tools.core.settings import Settings
from tools.core.specs import JobInfo, TrainingSpec
from tools.guard.policy import guarded_call
from tools.runtime.local import LocalRuntime
from tools.tuning.records import StudySettings, TrialResult
from tools.tuning.space import load_search_space

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

    def __init__(self, settings: Settings, hang: set[int] | None = None, params: dict | None = None) -> None:
        self.inner = LocalRuntime.from_settings(settings)
        self.hang = hang if hang is not None else {1}
        self.params = params or HANG_PARAMS
        self.name = "local"

    def submit(self, spec: TrainingSpec, approvals: Collection[str] = ()) -> JobInfo:
        if spec.trial_number in self.hang:
            spec = spec.model_copy(update={"params": {**spec.params, **self.params}})
        return self.inner.submit(spec, approvals)

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


def cancellation_record(ctx: ToolContext, run_id: str) -> dict[str, Any]:
    """Return the run's cancellation.json artifact."""
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
    value = ctx.tracking.get_run(job.run_id).data.metrics["val_roc_auc"]
    return TrialResult(run_id=job.run_id, job_id=job.job_id, state="COMPLETE", value=value,
                       wall_seconds=job.wall_seconds, cpu_seconds=job.cpu_seconds)  # fmt: skip
