"""Typed inputs and outputs of the tuning loop: what to tune, and what each trial and the study did."""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from tools.core.specs import RunTemplate, metric_direction

TrialState = Literal["COMPLETE", "PRUNED", "FAIL", "KILLED"]
StopReason = Literal[
    "max_trials", "wall_clock", "budget", "patience", "target", "cancelled", "failures", "rejected"
]


class WarmStartTrial(BaseModel):
    """An earlier trial whose params are enqueued as one of the study's first trials."""

    run_id: str = Field(description="The earlier trial's MLflow run.")
    value: float = Field(description="Its val_<metric>.")
    params: dict[str, Any] = Field(description="Its searched params, as the study's space types them.")


class StudySettings(RunTemplate):
    """Everything one tuning study needs; built by the plan node, passed to ``run_study``.

    The run template (data, family, metric, experiment, seed, resources, runtime) is every trial's.
    """

    study_name: str = Field(
        description="Optuna study name; deterministic per session and request so a resume finds it."
    )
    session_id: str = Field(description="Agent session (graph thread) that owns the study.")
    parent_run_id: str | None = Field(
        default=None, description="The session's MLflow run (tuning run parent)."
    )
    direction: Literal["maximize", "minimize"] | None = Field(
        default=None, description="Optimisation direction; derived from the metric when omitted."
    )
    search_space: dict[str, Any] = Field(
        description="Resolved search space ({param: spec}) from tools.tuning.space.load_search_space."
    )
    n_trials: int = Field(default=20, ge=1, description="Maximum number of trials (launched trials count).")
    parallelism: int = Field(default=1, ge=1, description="Trials in flight at once.")
    wall_clock_seconds: float | None = Field(
        default=None, gt=0, description="Active wall-clock limit for the tuning loop (None = no limit)."
    )
    cpu_hours: float | None = Field(
        default=None,
        gt=0,
        description="CPU-hour budget for the request, baseline included (None = no limit).",
    )
    gpu_hours: float | None = Field(
        default=None, gt=0, description="GPU-hour budget, enforced when trials request GPUs."
    )
    patience: int | None = Field(
        default=None, ge=1, description="Stop after this many finished trials without improving the best."
    )
    target: float | None = Field(default=None, description="Stop once the best value reaches this value.")
    trial_timeout_seconds: int = Field(default=600, gt=0, description="Hard deadline of each trial.")
    watchdog_factor: float = Field(
        default=3.0, gt=1, description="Cancel a trial running longer than this many times the median trial."
    )
    watchdog_floor_seconds: float = Field(
        default=30.0, ge=0, description="Never cancel a trial by the median rule before it ran this long."
    )
    watchdog_min_trials: int = Field(
        default=3, ge=1, description="Finished trials needed for the median rule."
    )
    warm_start: bool = Field(
        default=True, description="Enqueue the best params of earlier finished trials on the same problem."
    )
    warm_start_trials: list[WarmStartTrial] = Field(
        default_factory=list, description="The earlier trials found when planning (enqueued first)."
    )
    trials_before: int = Field(
        default=0,
        ge=0,
        description="Trials earlier studies of the same request already ran ('N more trials'): the "
        "sampler is seeded past them so it does not replay their settings.",
    )
    prune: bool = Field(
        default=True, description="Prune unpromising trials (families with intermediate metrics)."
    )
    prune_startup_trials: int = Field(default=5, ge=0, description="Completed trials before pruning starts.")
    prune_warmup_steps: int = Field(
        default=10, ge=0, description="Boosting rounds before a trial can be pruned."
    )
    prune_interval_steps: int = Field(default=10, ge=1, description="Check pruning every this many rounds.")
    max_consecutive_failures: int = Field(
        default=3, ge=1, description="Stop after this many failures in a row."
    )
    poll_seconds: float = Field(default=0.2, gt=0, description="How often running trials are checked.")

    @model_validator(mode="after")
    def _derive_direction(self) -> StudySettings:
        if self.direction is None:
            self.direction = metric_direction(self.metric)
        return self

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"


def default_parallelism(max_concurrent_jobs: int, cpu_per_trial: float, n_trials: int) -> int:
    """Return the trials to run at once: within the concurrency cap, the machine's cores and the trials."""
    cores = os.cpu_count() or 1
    by_cores = max(1, int(cores // max(cpu_per_trial, 1e-9)))
    return max(1, min(max_concurrent_jobs, by_cores, n_trials))


class TrialResult(BaseModel):
    """One training run of the study (or the baseline, with ``number`` None)."""

    number: int | None = Field(default=None, description="Optuna trial number; None for the baseline.")
    run_id: str | None = Field(default=None, description="MLflow run of the trial.")
    job_id: str | None = Field(default=None, description="Runtime job that trained it.")
    state: TrialState = Field(description="COMPLETE, PRUNED (stopped early), FAIL, or KILLED.")
    value: float | None = Field(
        default=None, description="Primary metric (COMPLETE) or last intermediate value."
    )
    params: dict[str, Any] = Field(default_factory=dict)
    wall_seconds: float | None = None
    cpu_seconds: float | None = None
    gpu_seconds: float | None = None
    note: str | None = Field(default=None, description="Why it failed, was pruned or cancelled.")
    cancelled_by: str | None = Field(default=None, description="pruner, watchdog, user, ... when stopped.")


class BudgetUsage(BaseModel):
    """Compute the request used, against its budget."""

    cpu_seconds: float = 0.0
    gpu_seconds: float = 0.0
    wall_seconds: float = Field(default=0.0, description="Active wall-clock time of the tuning loop.")
    cpu_hours_budget: float | None = None
    gpu_hours_budget: float | None = None
    estimated_trial_cpu_seconds: float | None = Field(
        default=None, description="Per-trial CPU estimate used for the last launch decision."
    )

    @property
    def cpu_hours(self) -> float:
        return self.cpu_seconds / 3600


class TestComparison(BaseModel):
    """The best trial against the baseline on the test split: a paired bootstrap over the test rows."""

    metric: str = Field(description="The primary metric (compared as test_<metric>).")
    best_value: float = Field(description="test_<metric> of the best trial.")
    baseline_value: float = Field(description="test_<metric> of the baseline.")
    difference: float = Field(description="best - baseline on the test rows.")
    low: float = Field(description="Lower end of the 95% bootstrap interval of the difference.")
    high: float = Field(description="Upper end of the 95% bootstrap interval of the difference.")
    rows: int = Field(description="Test rows both runs were scored on.")
    resamples: int = Field(description="Bootstrap resamples that could be scored.")

    @property
    def within_noise(self) -> bool:
        """Whether the interval contains zero."""
        return self.low <= 0.0 <= self.high

    def sentence(self) -> str:
        """Return the claim in words, with its interval."""
        claim = (
            f"On the test split ({self.rows} rows) the best trial's test_{self.metric} is "
            f"{self.best_value:.4f} vs the baseline's {self.baseline_value:.4f}: {self.difference:+.4f} "
            f"(95% paired bootstrap interval {self.low:+.4f} to {self.high:+.4f})"
        )
        return claim + (", within noise." if self.within_noise else ".")


class StudyResult(BaseModel):
    """What a tuning study did: every trial, the best one, why it stopped and what it cost."""

    study_name: str
    tuning_run_id: str = Field(description="The parent MLflow run of the trials.")
    tuning_run_status: Literal["RUNNING", "FINISHED", "FAILED", "KILLED"] = Field(
        default="RUNNING", description="MLflow status the tuning run ended with."
    )
    direction: Literal["maximize", "minimize"]
    metric: str
    n_trials_requested: int
    trials: list[TrialResult] = Field(default_factory=list)
    best: TrialResult | None = Field(default=None, description="Best COMPLETE trial, if any.")
    baseline: TrialResult | None = None
    stop_reason: StopReason
    stop_detail: str = Field(default="", description="Human-readable explanation of the stop reason.")
    budget: BudgetUsage = Field(default_factory=BudgetUsage)
    resumed: bool = Field(default=False, description="The study continued from persisted state.")
    notes: list[str] = Field(default_factory=list, description="Events worth reporting (rejections...).")
    test_comparison: TestComparison | None = Field(
        default=None, description="Best vs baseline on the test split, with a bootstrap interval."
    )
    selected_on: str = Field(
        default="", description="The logged metric trials were selected on (val_<metric> or the CV mean)."
    )
    plots: list[str] = Field(
        default_factory=list, description="Plot artifacts of the tuning run (optimisation history, ...)."
    )

    @property
    def cancelled_trials(self) -> list[TrialResult]:
        """Trials stopped by the watchdog, the user or a budget rule (for the Rollback section)."""
        return [t for t in self.trials if t.state == "KILLED"]

    @property
    def improved_over_baseline(self) -> bool | None:
        if self.best is None or self.baseline is None or self.baseline.value is None:
            return None
        assert self.best.value is not None
        if self.direction == "maximize":
            return self.best.value > self.baseline.value
        return self.best.value < self.baseline.value

    def count(self, state: TrialState) -> int:
        return sum(1 for t in self.trials if t.state == state)
