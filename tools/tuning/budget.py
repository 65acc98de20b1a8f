"""Compute budgets for tuning: estimate what trials cost before the study, account for them during it.

Costs are CPU-seconds (and GPU-seconds when trials request GPUs). A trial's actual cost comes from the
runtime's ``JobInfo`` (measured CPU time of the job; reserved cores x wall time when the runtime does
not measure CPU). Before any trial finishes, a trial is estimated as the baseline's cost times the
family's ``cost_factor`` (the search space reaches larger models than the default baseline); after
that, as the median of the completed trials.
"""

from __future__ import annotations

import math
import statistics
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from tools.tuning.space import family_space

if TYPE_CHECKING:
    from tools.core.settings import Budget
    from tools.core.specs import JobInfo, Resources
    from tools.tuning.records import StudySettings

#: rough cost of one run when nothing has been measured yet (a small tabular model, warm worker).
DEFAULT_RUN_SECONDS = 10.0


class TrialCost(BaseModel):
    """What one run cost (or is estimated to cost)."""

    cpu_seconds: float = Field(ge=0, description="CPU time in seconds.")
    wall_seconds: float = Field(ge=0, description="Wall-clock time in seconds.")
    gpu_seconds: float = Field(default=0.0, ge=0, description="GPU-seconds (GPUs x wall time).")


def cost_from_job(job: JobInfo, resources: Resources) -> TrialCost:
    """Return the actual cost of a finished (or stopped) job."""
    wall = job.wall_seconds or 0.0
    cpu = job.cpu_seconds if job.cpu_seconds is not None else wall * resources.cpu
    return TrialCost(cpu_seconds=cpu, wall_seconds=wall, gpu_seconds=wall * resources.gpu)


class BudgetEstimate(BaseModel):
    """The plan's compute estimate for a tuning study, against the budget."""

    basis: str = Field(
        description="Where the per-trial estimate comes from: 'baseline', 'earlier baselines' or 'default'."
    )
    per_trial_cpu_seconds: float = Field(description="Estimated CPU-seconds of one trial.")
    per_trial_wall_seconds: float = Field(description="Estimated wall seconds of one trial.")
    baseline_cpu_seconds: float = Field(description="Baseline cost counted against the budget.")
    trials_requested: int
    trials_that_fit: int = Field(description="Trials the CPU/GPU budget and wall-clock limit allow.")
    parallelism: int
    cpu_hours_estimated: float = Field(description="Baseline + requested trials, CPU-hours.")
    cpu_hours_budget: float | None
    gpu_hours_estimated: float = 0.0
    gpu_hours_budget: float | None = None
    wall_seconds_estimated: float = Field(description="Expected wall time of the tuning loop.")
    approval_keys: list[str] = Field(
        default_factory=list, description="What needs the user's approval: budget:cpu, concurrency..."
    )
    summary: str = Field(description="One-paragraph estimate for the Plan section.")

    @property
    def within_budget(self) -> bool:
        return self.trials_that_fit >= self.trials_requested


def cv_fit_factor(cv_folds: int) -> int:
    """Models one run fits: one per fold plus the final one (1 without cross-validation)."""
    return cv_folds + 1 if cv_folds else 1


def estimate_trial_cost(
    baseline_cost: TrialCost | None, settings: StudySettings, prior: TrialCost | None = None
) -> tuple[TrialCost, str]:
    """Return the estimated cost of one trial and its basis.

    The basis is 'baseline' (this study's measured baseline), 'earlier baselines' (``prior``: what
    baselines of the same dataset and family cost before, ``tools.tuning.cost_history``) or 'default'.
    """
    factor = family_space(settings.model_family).cost_factor if settings.model_family else 1.0
    if baseline_cost is not None and baseline_cost.wall_seconds > 0:
        base, basis = baseline_cost, "baseline"
    elif prior is not None and prior.wall_seconds > 0:
        base, basis = prior, "earlier baselines"
    else:  # the default is one fit: a run with K folds fits K+1 models
        seconds = DEFAULT_RUN_SECONDS * cv_fit_factor(settings.cv_folds)
        base = TrialCost(cpu_seconds=seconds * settings.resources.cpu, wall_seconds=seconds)
        basis = "default"
    wall = base.wall_seconds * factor
    cost = TrialCost(
        cpu_seconds=base.cpu_seconds * factor,
        wall_seconds=wall,
        gpu_seconds=wall * settings.resources.gpu,
    )
    return cost, basis


def estimate_plan(
    baseline_cost: TrialCost | None,
    settings: StudySettings,
    caps: Budget | None = None,
    prior: TrialCost | None = None,
) -> BudgetEstimate:
    """Estimate the study's cost from the baseline and say how many trials fit the budget.

    ``baseline_cost`` is the measured baseline (None before it ran: ``prior``, what earlier baselines
    cost, or else a default is assumed, and the baseline itself is counted at that cost). ``caps`` are
    the configured limits; exceeding one adds its approval key (``budget:cpu``, ``budget:gpu``,
    ``budget:trials``, ``concurrency``).
    """
    trial, basis = estimate_trial_cost(baseline_cost, settings, prior)
    baseline = (
        baseline_cost or prior or TrialCost(cpu_seconds=trial.cpu_seconds, wall_seconds=trial.wall_seconds)
    )
    fit = _trials_that_fit(trial, baseline, settings)
    n = settings.n_trials
    waves = math.ceil(n / settings.parallelism)
    estimate = BudgetEstimate(
        basis=basis,
        per_trial_cpu_seconds=round(trial.cpu_seconds, 3),
        per_trial_wall_seconds=round(trial.wall_seconds, 3),
        baseline_cpu_seconds=round(baseline.cpu_seconds, 3),
        trials_requested=n,
        trials_that_fit=fit,
        parallelism=settings.parallelism,
        cpu_hours_estimated=(baseline.cpu_seconds + n * trial.cpu_seconds) / 3600,
        cpu_hours_budget=settings.cpu_hours,
        gpu_hours_estimated=(baseline.gpu_seconds + n * trial.gpu_seconds) / 3600,
        gpu_hours_budget=settings.gpu_hours if settings.resources.gpu else None,
        wall_seconds_estimated=waves * trial.wall_seconds,
        approval_keys=_approval_keys(fit, settings, caps),
        summary="",
    )
    estimate.summary = _summary(estimate)
    return estimate


def _trials_that_fit(trial: TrialCost, baseline: TrialCost, settings: StudySettings) -> int:
    limits = [settings.n_trials]
    if settings.cpu_hours is not None and trial.cpu_seconds > 0:
        left = settings.cpu_hours * 3600 - baseline.cpu_seconds
        limits.append(max(0, math.floor(left / trial.cpu_seconds)))
    if settings.resources.gpu and settings.gpu_hours is not None and trial.gpu_seconds > 0:
        left = settings.gpu_hours * 3600 - baseline.gpu_seconds
        limits.append(max(0, math.floor(left / trial.gpu_seconds)))
    if settings.wall_clock_seconds is not None and trial.wall_seconds > 0:
        waves = math.floor(settings.wall_clock_seconds / trial.wall_seconds)
        limits.append(max(0, waves * settings.parallelism))
    return min(limits)


def _approval_keys(fit: int, settings: StudySettings, caps: Budget | None) -> list[str]:
    keys: list[str] = []
    if fit < settings.n_trials:
        keys.append("budget:gpu" if settings.resources.gpu and settings.gpu_hours else "budget:cpu")
    if caps is not None and settings.n_trials > caps.max_trials:
        keys.append("budget:trials")
    if caps is not None and settings.parallelism > caps.max_concurrent_jobs:
        keys.append("concurrency")
    return keys


def _summary(e: BudgetEstimate) -> str:
    budget = f"{e.cpu_hours_budget:.3g} CPU-h" if e.cpu_hours_budget is not None else "no CPU-hour cap"
    text = (
        f"One trial ≈ {e.per_trial_cpu_seconds:.1f} CPU-s / {e.per_trial_wall_seconds:.1f} s wall "
        f"(from the {e.basis}); baseline + {e.trials_requested} trials ≈ "
        f"{e.cpu_hours_estimated:.3g} CPU-h against {budget}; "
        f"{e.parallelism} at a time ≈ {e.wall_seconds_estimated:.0f} s."
    )
    if e.gpu_hours_budget is not None:
        text += f" GPU: ≈ {e.gpu_hours_estimated:.3g} GPU-h of {e.gpu_hours_budget:.3g}."
    if not e.within_budget:
        text += f" Only {e.trials_that_fit} of {e.trials_requested} trials fit the budget."
    return text


class BudgetLedger:
    """Running account of what the study spent, and whether one more trial fits."""

    def __init__(self, settings: StudySettings, baseline_cost: TrialCost | None) -> None:
        self._settings = settings
        self._initial, _ = estimate_trial_cost(baseline_cost, settings)
        self.cpu_seconds = baseline_cost.cpu_seconds if baseline_cost else 0.0
        self.gpu_seconds = baseline_cost.gpu_seconds if baseline_cost else 0.0
        self._completed: list[TrialCost] = []

    def record(self, cost: TrialCost, completed: bool) -> None:
        """Add a finished trial's cost; completed trials also refine the per-trial estimate."""
        self.cpu_seconds += cost.cpu_seconds
        self.gpu_seconds += cost.gpu_seconds
        if completed:
            self._completed.append(cost)

    def trial_estimate(self) -> TrialCost:
        """Return the expected cost of the next trial (median of completed ones, else the initial)."""
        if not self._completed:
            return self._initial
        return TrialCost(
            cpu_seconds=statistics.median(c.cpu_seconds for c in self._completed),
            wall_seconds=statistics.median(c.wall_seconds for c in self._completed),
            gpu_seconds=statistics.median(c.gpu_seconds for c in self._completed),
        )

    def shortfall(self, in_flight: int) -> str | None:
        """Return why one more trial (on top of ``in_flight`` running ones) would exceed the budget."""
        est = self.trial_estimate()
        n = in_flight + 1
        s = self._settings
        if s.cpu_hours is not None:
            projected = self.cpu_seconds + n * est.cpu_seconds
            if projected > s.cpu_hours * 3600:
                return (
                    f"CPU budget: {self.cpu_seconds / 3600:.4f} of {s.cpu_hours:g} CPU-h used; "
                    f"{n} more trial(s) at ≈ {est.cpu_seconds:.1f} CPU-s would exceed it"
                )
        if s.resources.gpu and s.gpu_hours is not None:
            projected = self.gpu_seconds + n * est.gpu_seconds
            if projected > s.gpu_hours * 3600:
                return (
                    f"GPU budget: {self.gpu_seconds / 3600:.4f} of {s.gpu_hours:g} GPU-h used; "
                    f"{n} more trial(s) at ≈ {est.gpu_seconds:.1f} GPU-s would exceed it"
                )
        return None
