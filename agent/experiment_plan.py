"""Domain records of one experiment turn: the complete request, the plan, verification and rollback.

These are code-made (never model text) and are what the five-section answer is rendered from. They
live in graph state and in the SQLite checkpoint, so every field is plain data.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from tools.core.specs import EntryPointCall, Metric, ModelFamily, Resources, RunTemplate
from tools.tuning.budget import BudgetEstimate
from tools.tuning.records import StudySettings

Direction = Literal["maximize", "minimize"]
CheckName = Literal[
    "status_finished",
    "params_logged",
    "primary_metric_logged",
    "model_artifact",
    "dataset_tags",
    "git_sha_tag",
    "selected_on_validation",
]
RollbackTrigger = Literal["run_failed", "user_cancelled", "cancel_request", "budget", "runaway"]
RollbackActionKind = Literal["cancelled_job", "ended_run", "already_ended", "nothing_running"]


class ExperimentRequest(BaseModel):
    """A complete, validated experiment request: every required input is known."""

    dataset: str = Field(description="Registered dataset name.")
    version: str = Field(description="Explicit registered dataset version the user stated.")
    dataset_sha256: str | None = Field(None, description="Registry checksum of that version.")
    task: Literal["classification", "regression"] | None = Field(
        None, description="The dataset's task, from the registry schema."
    )
    model_family: ModelFamily | None = Field(
        None, description="Built-in model family to train (None when an entry point trains)."
    )
    entry_point: EntryPointCall | None = Field(
        None, description="The user's registered project (name@N and entry) that trains instead of a family."
    )
    metric: Metric = Field(description="Primary metric.")
    direction: Direction = Field(description="Whether a larger or smaller metric is better.")
    experiment: str = Field(description="MLflow experiment the runs are logged to.")
    runtime: Literal["local", "kubernetes"] = Field(description="Where runs execute.")
    namespace: str | None = Field(None, description="Kubernetes namespace, when runtime is kubernetes.")
    cpu_hours: float = Field(description="Compute budget for the whole request, CPU-hours.")
    gpu_hours: float = Field(0.0, description="GPU budget for the whole request, GPU-hours.")
    resources: Resources = Field(default_factory=Resources, description="Compute each run requests.")
    trials: int = Field(0, ge=0, description="Tuning trials after the baseline; 0 = baseline only.")
    parallelism: int | None = Field(None, description="Trials to run at once; None = plan default.")
    wall_minutes: float | None = Field(None, description="Wall-clock limit for the tuning loop.")
    patience: int | None = Field(None, description="Stop after this many trials without improvement.")
    target: float | None = Field(None, description="Stop once the primary metric reaches this value.")
    seed: int = Field(42, description="Random seed for splits, models and the sampler.")
    params: dict[str, Any] = Field(default_factory=dict, description="Fixed hyperparameters.")
    cv_folds: int = Field(
        0,
        ge=0,
        le=20,
        description="K-fold CV on the non-test rows; runs are selected on the CV mean (0 = off).",
    )
    warm_start: bool = Field(
        True, description="Start tuning from the best params of earlier trials on the same problem."
    )
    search_space: dict[str, Any] = Field(
        default_factory=dict, description="User overrides of the tuning search space."
    )
    continues_from: str | None = Field(
        None,
        description="Baseline run of an earlier turn this request continues ('N more trials'): no new "
        "baseline is trained; the study compares with that run.",
    )
    trials_before: int = Field(0, description="Trials the thread already ran for this request.")
    assumptions: list[str] = Field(
        default_factory=list, description="Defaults chosen for inputs the user did not state."
    )

    @property
    def code_label(self) -> str:
        """Return what trains, as the answer names it: ``lightgbm`` or ``churn-model@3 entry main``."""
        if self.entry_point is not None:
            return f"{self.entry_point.ref} entry {self.entry_point.entry}"
        return str(self.model_family)

    def run_template(self, model_family: ModelFamily | None = None, seed: int | None = None) -> RunTemplate:
        """Return what every run of this request shares (the baseline's and every trial's arguments)."""
        return RunTemplate(
            dataset=self.dataset, version=self.version, model_family=model_family or self.model_family,
            metric=self.metric, experiment=self.experiment, seed=self.seed if seed is None else seed,
            resources=self.resources, runtime=self.runtime, cv_folds=self.cv_folds,
            namespace=self.namespace if self.runtime == "kubernetes" else None,
            entry_point=self.entry_point,
        )  # fmt: skip


class BaselineConfig(BaseModel):
    """The first run of every plan: the family's default parameters, fixed seed."""

    model_family: ModelFamily | None = Field(None, description="Model family of the baseline.")
    entry_point: EntryPointCall | None = Field(None, description="Or the registered project it runs.")
    params: dict[str, Any] = Field(default_factory=dict, description="Hyperparameters of the baseline.")
    seed: int = Field(description="Random seed.")
    resources: Resources = Field(default_factory=Resources, description="Compute the run requests.")
    timeout_seconds: int = Field(description="Wall-clock deadline of the run.")


class TuningPlan(BaseModel):
    """The tuning loop after the baseline: the study settings (search space, stopping criteria)."""

    study: StudySettings = Field(
        description="What run_study gets: search space, trials, parallelism, all stopping criteria."
    )
    search_space_source: str = Field(description="Where the search space came from.")
    estimate: BudgetEstimate = Field(description="The study's cost estimate against the budget.")


class ComputeEstimate(BaseModel):
    """Expected compute of the plan against its budget (refined from the baseline when tuning)."""

    cpu_seconds_per_run: float = Field(description="Estimated CPU-seconds one run takes.")
    runs: int = Field(description="Runs the plan launches (baseline + trials).")
    total_cpu_hours: float = Field(description="Estimated CPU-hours of the whole plan.")
    budget_cpu_hours: float = Field(description="Budget of the request, CPU-hours.")
    trials_that_fit: int = Field(description="Trials that fit in the budget after the baseline.")
    within_budget: bool = Field(description="Whether the estimate fits the budget.")


class ExperimentPlan(BaseModel):
    """What the agent will do for a request: baseline, then optionally a tuning loop."""

    request: ExperimentRequest = Field(description="The complete request the plan is for.")
    baseline: BaselineConfig = Field(description="The baseline run.")
    tuning: TuningPlan | None = Field(None, description="The tuning loop; None for baseline only.")
    estimate: ComputeEstimate = Field(description="Compute estimate against the budget.")
    session_run_id: str | None = Field(None, description="The MLflow session run holding the plan.")
    approval_keys: list[str] = Field(
        default_factory=list, description="Guard approval keys the plan needs before it may run."
    )
    approval_reasons: list[str] = Field(default_factory=list, description="Why approval is needed.")


class RunCheck(BaseModel):
    """One verification check of one run."""

    name: CheckName = Field(description="What was checked.")
    passed: bool = Field(description="Whether MLflow had what the check requires.")
    detail: str = Field(description="What MLflow returned, or what was missing.")


class RunVerification(BaseModel):
    """The checks of one run, as MLflow returned it."""

    run_id: str = Field(description="Run ID MLflow returned.")
    role: str = Field(description="baseline, trial, single or tuning.")
    status: str = Field(description="MLflow status.")
    checks: list[RunCheck] = Field(default_factory=list, description="Per-check results.")

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


class VerificationReport(BaseModel):
    """What MLflow confirmed about every run the session launched."""

    runs: list[RunVerification] = Field(default_factory=list, description="One entry per run.")
    missing_run_ids: list[str] = Field(
        default_factory=list, description="Run IDs the session recorded that MLflow did not return."
    )

    @property
    def passed(self) -> bool:
        return not self.missing_run_ids and all(r.passed for r in self.runs)

    @property
    def verified_run_ids(self) -> set[str]:
        return {r.run_id for r in self.runs}


class RollbackAction(BaseModel):
    """One thing rollback did to one run or job."""

    run_id: str | None = Field(None, description="MLflow run affected.")
    job_id: str | None = Field(None, description="Runtime job affected.")
    action: RollbackActionKind = Field(description="What was done.")
    final_status: str | None = Field(None, description="MLflow status after the action.")
    note: str = Field(description="Why, and what was recorded.")


class RollbackRecord(BaseModel):
    """Why rollback ran and what it did; every run it touched ends FAILED or KILLED."""

    trigger: RollbackTrigger = Field(description="What started the rollback.")
    reason: str = Field(description="Human-readable reason.")
    requested_by: str = Field(description="User, watchdog or the agent itself.")
    actions: list[RollbackAction] = Field(default_factory=list, description="What was done, per run.")
