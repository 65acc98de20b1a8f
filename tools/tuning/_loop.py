"""One execution of the tuning loop: stopping criteria, launching trials, concluding them, closing up.

Its collaborators: ``tools.tuning._trials.TrialMonitor`` watches the running trials,
``tools.tuning._resume`` restores a study after a restart, ``tools.tuning.runs`` reads and writes the
study's MLflow runs. The entry point is ``tools.tuning.study.run_study``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tools.core import tags as tag_keys
from tools.core.specs import RunTemplate
from tools.tuning import _resume as recovery
from tools.tuning._progress import log_best_so_far, log_study_plots, prepare_plotting
from tools.tuning._trials import InFlight, TrialMonitor
from tools.tuning._watchdog import Watchdog
from tools.tuning.budget import BudgetLedger, TrialCost, cost_from_job
from tools.tuning.records import BudgetUsage, StopReason, StudyResult, StudySettings, TrialResult, TrialState
from tools.tuning.runs import compare_on_test, finish_tuning_run
from tools.tuning.space import ParamSpec, parse_space, suggest_params, supports_pruning

if TYPE_CHECKING:
    import optuna

    from tools.context import ToolContext
    from tools.core.specs import JobInfo

Progress = Callable[[dict[str, Any]], None]
#: how often the loop's active time is written to the study (it bounds the wall clock after a resume).
_SAVE_ELAPSED_SECONDS = 10.0


class StudyLoop:
    """One execution of the tuning loop over a (possibly partly done) study."""

    def __init__(
        self,
        ctx: ToolContext,
        settings: StudySettings,
        study: optuna.Study,
        baseline: TrialResult | None,
        progress: Progress | None,
        cancel_event: threading.Event,
    ) -> None:
        self.ctx, self.settings, self.study, self.baseline = ctx, settings, study, baseline
        self.progress, self.cancel_event = progress, cancel_event
        self.space: dict[str, ParamSpec] = parse_space(settings.search_space)
        self.pruning = settings.prune and (
            settings.entry_point is not None or supports_pruning(settings.model_family)
        )
        self.ledger = BudgetLedger(settings, _baseline_cost(baseline))
        self.watchdog = Watchdog(
            settings.trial_timeout_seconds, settings.watchdog_factor, settings.watchdog_floor_seconds,
            settings.watchdog_min_trials,
        )  # fmt: skip
        self.results: dict[int, TrialResult] = {}
        self.trials = TrialMonitor(ctx, settings, self.watchdog, self.pruning, self.conclude)
        self.pending: tuple[optuna.trial.Trial, dict[str, Any]] | None = None
        self.notes: list[str] = []
        self.best: TrialResult | None = None
        self.best_value = baseline.value if baseline is not None else None
        self.since_improvement = 0
        self.consecutive_failures = 0
        self.stop: StopReason | None = None
        self.stop_detail = ""
        self.hard_stop = False  # running trials are cancelled rather than allowed to finish
        self.resumed = False
        self._elapsed_before = float(study.user_attrs.get("active_seconds", 0.0))
        self._t0 = self._saved_at = time.monotonic()
        self.tuning_run_id = ""
        self.plots: list[str] = []

    # -- the loop --

    def run(self) -> StudyResult:
        """Run until a stopping criterion is met and nothing is in flight; return the result."""
        self.tuning_run_id = recovery.tuning_run_for(self)
        prepare_plotting()  # the plots at the end need matplotlib: import it while the trials run
        try:
            recovery.reconcile(self)
            while True:
                self._check_criteria()
                if self.hard_stop:
                    self._stop_all()
                    break
                if self.stop is None:
                    self._launch_available()
                if not self.in_flight and self.stop is not None:
                    break
                self.trials.poll()
        except BaseException as exc:
            self._abort(exc)
            raise
        return self._finish()

    @property
    def elapsed(self) -> float:
        return self._elapsed_before + time.monotonic() - self._t0

    @property
    def in_flight(self) -> dict[str, InFlight]:
        return self.trials.in_flight

    @property
    def launched(self) -> int:
        return len(self.results) + len(self.in_flight)

    def set_stop(self, reason: StopReason, detail: str, hard: bool = False) -> None:
        """Record the first stop reason; a hard stop (cancel, wall clock) overrides a soft one."""
        if self.stop is None or (hard and not self.hard_stop):
            self.stop, self.stop_detail = reason, detail
        self.hard_stop = self.hard_stop or hard

    def _check_criteria(self) -> None:
        s = self.settings
        if self.cancel_event.is_set():
            self.set_stop("cancelled", f"cancelled by {self.ctx.requester}", hard=True)
        elif s.wall_clock_seconds is not None and self.elapsed >= s.wall_clock_seconds:
            limit = f"reached the wall-clock limit of {s.wall_clock_seconds:g}s"
            self.set_stop("wall_clock", limit, hard=True)
        self._check_running_budget()
        if self.stop is not None:
            return
        if s.target is not None and self.best_value is not None and self._reaches(self.best_value, s.target):
            self.set_stop("target", f"{s.metric} {self.best_value:.6g} reached the target {s.target:g}")
        elif s.patience is not None and self.since_improvement >= s.patience:
            self.set_stop("patience", f"{self.since_improvement} trials without improvement")
        elif self.consecutive_failures >= s.max_consecutive_failures:
            self.set_stop("failures", f"{self.consecutive_failures} trials failed in a row")
        elif self.launched >= s.n_trials:
            self.set_stop("max_trials", f"ran the {s.n_trials} trials requested")

    def _reaches(self, value: float, target: float) -> bool:
        return value >= target if self.settings.maximize else value <= target

    def _check_running_budget(self) -> None:
        """Stop running trials the moment spent + running compute would pass the budget.

        A running trial is charged its reserved cores (and GPUs) times its wall time so far: an upper
        bound of what it used, so the budget holds even before the runtime reports actual CPU time.
        """
        s = self.settings
        if not self.in_flight or self.hard_stop:
            return
        now = time.monotonic()
        wall = sum(now - f.started for f in self.in_flight.values())
        over = None
        if s.cpu_hours is not None and self.ledger.cpu_seconds + wall * s.resources.cpu > s.cpu_hours * 3600:
            over = f"the CPU budget of {s.cpu_hours:g} CPU-h was used up"
        gpu_budget = s.gpu_hours if s.resources.gpu else None
        if gpu_budget is not None and self.ledger.gpu_seconds + wall * s.resources.gpu > gpu_budget * 3600:
            over = f"the GPU budget of {gpu_budget:g} GPU-h was used up"
        if over is None:
            return
        self.set_stop("budget", over)
        self.trials.stop_all("budget", over, "budget rule")

    def _stop_all(self) -> None:
        """Cancel every running trial (the study was cancelled or ran out of wall-clock time)."""
        kind = "cancelled" if self.stop == "cancelled" else "timeout"
        who = self.ctx.requester if self.stop == "cancelled" else "wall-clock limit"
        self.trials.stop_all(kind, f"tuning study stopped: {self.stop_detail}", who)

    # -- launching --

    def _launch_available(self) -> None:
        while self.stop is None and len(self.in_flight) < self.settings.parallelism:
            if self.launched >= self.settings.n_trials:
                return
            shortfall = self.ledger.shortfall(len(self.in_flight))
            if shortfall is not None:
                self.set_stop("budget", shortfall)
                return
            if not self._fits_wall_clock():
                return
            if not self._launch_one():
                return

    def _fits_wall_clock(self) -> bool:
        """Return False (and stop) if the next trial would likely not finish before the wall-clock limit."""
        limit = self.settings.wall_clock_seconds
        expected = self.ledger.trial_estimate().wall_seconds
        if limit is None or self.elapsed + expected <= limit:
            return True
        detail = f"a trial (≈{expected:.1f}s) would not finish within the wall-clock limit of {limit:g}s"
        self.set_stop("wall_clock", detail)
        return False

    def _launch_one(self) -> bool:
        """Launch the next trial; return False when it could not be launched now."""
        from tools.guard.policy import Halt, Reject, guarded_call

        trial, params = self.pending or self._ask()
        self.pending = None
        outcome = guarded_call("start_training_run", self._trial_args(trial.number, params), self.ctx)
        verdict = outcome.verdict
        if isinstance(verdict, Reject) and verdict.approval_key == "concurrency":
            self.pending = (trial, params)
            self.note(f"parallelism held at {len(self.in_flight)}: {verdict.reason}")
            return False
        if isinstance(verdict, Reject | Halt):
            self.abandon(trial, f"rejected by policy rule {verdict.rule}: {verdict.reason}")
            self.set_stop("rejected", f"policy rule {verdict.rule}: {verdict.reason}")
            return False
        if outcome.error is not None or not outcome.result:
            self._launch_failed(trial, params, outcome.error or "start_training_run returned nothing")
            return True
        run_id, job_id = str(outcome.result["run_id"]), str(outcome.result["job_id"])
        trial.set_user_attr("launch", {"run_id": run_id, "job_id": job_id, "params": params})
        self.in_flight[job_id] = InFlight(trial, params, run_id, job_id, time.monotonic())
        self.emit("run_started", f"trial {trial.number} started: {_short(params)}", run_id)
        return True

    def _ask(self) -> tuple[optuna.trial.Trial, dict[str, Any]]:
        trial = self.study.ask()
        return trial, suggest_params(trial, self.space)

    def _trial_args(self, number: int, params: dict[str, Any]) -> dict[str, Any]:
        s = self.settings
        return {
            **RunTemplate.fields_of(s), "params": params, "role": "trial", "run_name": f"trial-{number:02d}",
            "tags": {tag_keys.NOTE: self._trial_description(number, params)},
            "parent_run_id": self.tuning_run_id, "trial_number": number,
            "timeout_seconds": self._job_timeout(), "report_intermediate": self.pruning,
            "intermediate_every": s.prune_interval_steps,  # the only rounds the pruner looks at
        }  # fmt: skip

    def _trial_description(self, number: int, params: dict[str, Any]) -> str:
        """Return the trial run's description: which study it belongs to, its data and params."""
        s = self.settings
        return (
            f"Trial {number} of study {s.study_name}: {s.code_label} on {s.dataset}@{s.version}, "
            f"params {_short(params)}. Selected on {s.selection_metric}; test_{s.metric} is reported, never "
            "selected on."
        )

    def _job_timeout(self) -> int:
        """The job's own deadline: a little after the watchdog's, within the per-run wall-clock cap."""
        watchdog = self.settings.trial_timeout_seconds
        cap = self.ctx.settings.budget.max_wall_seconds_per_run
        return min(watchdog + 30, max(watchdog, cap))

    def abandon(self, trial: optuna.trial.Trial, note: str) -> None:
        """Fail a trial that was asked but never launched (it does not count as a trial)."""
        import optuna

        trial.set_user_attr("launched", False)
        trial.set_user_attr("note", note)
        self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        self.note(f"trial {trial.number} not launched: {note}")

    def _launch_failed(self, trial: optuna.trial.Trial, params: dict[str, Any], error: str) -> None:
        flight = InFlight(trial, params, run_id="", job_id="", started=time.monotonic())
        self.conclude(flight, "FAIL", None, None, f"could not be launched: {error}")

    # -- concluding trials --

    def conclude(
        self,
        flight: InFlight,
        state: TrialState,
        value: float | None,
        info: JobInfo | None,
        note: str | None,
        cancelled_by: str | None = None,
    ) -> None:
        """Record a trial's outcome in the study (user attribute, then tell) and in the loop."""
        import optuna

        if info is not None:
            cost = cost_from_job(info, self.settings.resources)
        else:
            cost = TrialCost(cpu_seconds=0.0, wall_seconds=time.monotonic() - flight.started)
        result = TrialResult(
            number=flight.number, run_id=flight.run_id or None, job_id=flight.job_id or None, state=state,
            value=value, params=flight.params, wall_seconds=cost.wall_seconds, cpu_seconds=cost.cpu_seconds,
            gpu_seconds=cost.gpu_seconds, note=note, cancelled_by=cancelled_by,
        )  # fmt: skip
        flight.trial.set_user_attr("result", result.model_dump(mode="json"))
        states = {"COMPLETE": optuna.trial.TrialState.COMPLETE, "PRUNED": optuna.trial.TrialState.PRUNED}
        told = states.get(state, optuna.trial.TrialState.FAIL)
        self.study.tell(flight.trial, value if state == "COMPLETE" else None, state=told)
        self.in_flight.pop(flight.job_id, None)
        self.record(result, cost)
        self._save_elapsed()
        self.emit("trial_finished", self._finished_note(result), result.run_id)

    def _finished_note(self, result: TrialResult) -> str:
        """Return the progress line of a concluded trial: its outcome, how many are done, the best so far."""
        metric = self.settings.metric
        note = f"{_describe(result, metric)} [{len(self.results)} of {self.settings.n_trials} done"
        if self.best is not None and self.best.value is not None:
            note += f"; best so far {metric}={self.best.value:.6g} (trial {self.best.number})"
        return note + "]"

    def _save_elapsed(self, force: bool = False) -> None:
        """Persist the loop's active time (for the wall-clock limit after a resume), every 10 s at most."""
        if force or time.monotonic() - self._saved_at >= _SAVE_ELAPSED_SECONDS:
            self.study.set_user_attr("active_seconds", self.elapsed)
            self._saved_at = time.monotonic()

    def record(self, result: TrialResult, cost: TrialCost) -> None:
        """Account for a concluded trial: budget, watchdog median, best, patience and failure streak."""
        assert result.number is not None
        self.results[result.number] = result
        self.ledger.record(cost, completed=result.state == "COMPLETE")
        if result.state in ("FAIL", "KILLED"):
            self.consecutive_failures += 1
            return
        self.consecutive_failures = 0
        if result.state == "COMPLETE" and result.value is not None:
            self.watchdog.record(cost.wall_seconds)
            if self.best is None or self._better(result.value, self.best.value):
                self.best = result
            self._log_best_so_far(result.number)
            if self.best_value is None or self._better(result.value, self.best_value):
                self.best_value, self.since_improvement = result.value, 0
                return
        self.since_improvement += 1

    def _log_best_so_far(self, number: int) -> None:
        """Log the best validation value after trial ``number`` (the tuning run's step metric)."""
        if self.best is None or self.best.value is None or not self.tuning_run_id:
            return
        try:
            log_best_so_far(
                self.ctx.tracking, self.tuning_run_id, self.settings.metric, self.best.value, number
            )
        except Exception as exc:  # noqa: BLE001 - a progress chart never stops the study
            self.note(f"best-so-far of trial {number} not logged: {exc}")

    def _log_plots(self) -> None:
        """Log the study's plots on the tuning run (skipped plots become notes)."""
        try:
            logged, skipped = log_study_plots(self.ctx.tracking, self.tuning_run_id, self.study)
        except Exception as exc:  # noqa: BLE001 - plots never fail the study
            logged, skipped = [], [f"plots not drawn: {exc}"]
        self.plots = logged
        for text in skipped:
            self.note(text)

    def _better(self, value: float, than: float | None) -> bool:
        if than is None:
            return True
        return value > than if self.settings.maximize else value < than

    # -- ending --

    def _abort(self, exc: BaseException) -> None:
        """On an error or interrupt in the loop: stop running trials and close the tuning run."""
        reason = f"tuning loop interrupted ({type(exc).__name__}: {exc})"
        for flight in list(self.in_flight.values()):
            try:
                self.trials.stop(flight, "cancelled", reason, "agent")
            except Exception as inner:  # noqa: BLE001 - keep stopping the others
                self.note(f"could not stop trial {flight.number}: {inner}")
        if self.pending is not None:
            try:
                self.abandon(self.pending[0], reason)
            except Exception as inner:  # noqa: BLE001 - e.g. the journal is gone: still close the runs
                self.note(f"could not record trial {self.pending[0].number} as not launched: {inner}")
        self.set_stop("cancelled", reason, hard=True)
        self._close("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")

    def _finish(self) -> StudyResult:
        if self.pending is not None:
            self.abandon(self.pending[0], f"the study stopped ({self.stop}) before it could run")
            self.pending = None
        if self.stop == "cancelled":
            status = "KILLED"
        elif self.best is None and self.stop in ("failures", "rejected"):
            status = "FAILED"
        else:
            status = "FINISHED"
        return self._close(status)

    def _close(self, status: str) -> StudyResult:
        try:
            self._save_elapsed(force=True)
        except Exception as exc:  # noqa: BLE001 - the study storage failed: the MLflow runs still close
            self.note(f"the study's active time could not be saved: {exc}")
        recovery.end_stray_trial_runs(self, keep=set())
        if self.results:
            self._log_plots()
        result = self.result().model_copy(update={"tuning_run_status": status})
        comparison, why_not = compare_on_test(self.ctx.tracking, result)
        if why_not and result.best is not None:
            self.note(why_not)
        result = result.model_copy(update={"test_comparison": comparison, "notes": self.notes})
        finish_tuning_run(self.ctx, result, status)  # type: ignore[arg-type]
        self.emit("status", f"tuning finished: {result.stop_reason} ({result.stop_detail})", None)
        return result

    def result(self) -> StudyResult:
        """Return the study's result so far."""
        s = self.settings
        return StudyResult(
            study_name=s.study_name, tuning_run_id=self.tuning_run_id, direction=s.direction or "maximize",
            metric=s.metric, n_trials_requested=s.n_trials, selected_on=s.selection_metric,
            trials=[self.results[n] for n in sorted(self.results)], best=self.best, baseline=self.baseline,
            stop_reason=self.stop or "max_trials", stop_detail=self.stop_detail,
            budget=BudgetUsage(
                cpu_seconds=self.ledger.cpu_seconds, gpu_seconds=self.ledger.gpu_seconds,
                wall_seconds=self.elapsed, cpu_hours_budget=s.cpu_hours, gpu_hours_budget=s.gpu_hours,
                estimated_trial_cpu_seconds=self.ledger.trial_estimate().cpu_seconds,
            ),
            resumed=self.resumed, notes=self.notes, plots=self.plots,
        )  # fmt: skip

    # -- reporting --

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def emit(self, kind: str, message: str, run_id: str | None) -> None:
        if self.progress is not None:
            self.progress({"kind": kind, "message": message, "run_id": run_id})


def _baseline_cost(baseline: TrialResult | None) -> TrialCost | None:
    if baseline is None or baseline.wall_seconds is None:
        return None
    wall = baseline.wall_seconds
    return TrialCost(
        cpu_seconds=baseline.cpu_seconds if baseline.cpu_seconds is not None else wall,
        wall_seconds=wall,
        gpu_seconds=baseline.gpu_seconds or 0.0,
    )


def _short(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _describe(result: TrialResult, metric: str) -> str:
    head = f"trial {result.number} {result.state.lower()}"
    if result.state == "COMPLETE":
        return f"{head}: {metric}={result.value:.6g} ({result.wall_seconds or 0:.1f}s)"
    return f"{head}: {result.note}"
