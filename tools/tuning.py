"""The tuning loop: an Optuna study (TPE, seeded, SQLite storage) driving trials as guarded training runs.

``run_study`` asks the study for parameters, launches each trial through ``guarded_call(
"start_training_run")`` (a child MLflow run of the tuning run, executed by the runtime), watches the
running trials (pruning on intermediate metrics, the runaway watchdog, budget and wall clock), reads the
finished trial's metric back from MLflow and tells the study. Everything the loop needs to continue
after the agent process dies lives in the study's storage (trial user attributes ``launch`` and
``result``) and in the runtime's job state; calling ``run_study`` again with the same study name
resumes (see ``tools/tuning_resume.py``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tools.budget import BudgetLedger, TrialCost, cost_from_job
from tools.tuning_models import (
    BudgetUsage,
    StopReason,
    StudyResult,
    StudySettings,
    TrialResult,
    TrialState,
)
from tools.tuning_space import ParamSpec, load_search_space, parse_space, suggest_params, supports_pruning
from tools.watchdog import Watchdog

if TYPE_CHECKING:
    import optuna

    from tools.context import ToolContext
    from tools.specs import JobInfo

Progress = Callable[[dict[str, Any]], None]
#: the trainer flushes intermediate values about once a second: reading earlier finds nothing.
_INTERMEDIATE_MIN_AGE = 1.0

__all__ = ["StudySettings", "StudyResult", "TrialResult", "load_search_space", "open_study", "run_study"]


class StudyConflict(ValueError):
    """A study with this name exists but tunes something else (dataset, family, metric or space)."""


@dataclass
class InFlight:
    """A trial whose job is running."""

    trial: optuna.trial.Trial
    params: dict[str, Any]
    run_id: str
    job_id: str
    started: float  # time.monotonic() when the job started
    reported_step: int = 0
    last_value: float | None = None
    pruned: bool = field(default=False)

    @property
    def number(self) -> int:
        return int(self.trial.number)


def open_study(settings: StudySettings, storage_url: str) -> optuna.Study:
    """Create or load the study ``settings.study_name`` (TPE seeded, median pruner) in RDB storage."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(storage_url, engine_kwargs={"connect_args": {"timeout": 60}})
    pruner: optuna.pruners.BasePruner = optuna.pruners.NopPruner()
    if settings.prune and supports_pruning(settings.model_family):
        pruner = optuna.pruners.MedianPruner(
            n_startup_trials=settings.prune_startup_trials, n_warmup_steps=settings.prune_warmup_steps
        )
    study = optuna.create_study(
        storage=storage, sampler=optuna.samplers.TPESampler(seed=settings.seed), pruner=pruner,
        study_name=settings.study_name, direction=settings.direction, load_if_exists=True,
    )  # fmt: skip
    _check_same_study(study, settings)
    return study


def _fingerprint(settings: StudySettings) -> dict[str, Any]:
    keys = ("dataset", "version", "model_family", "metric", "direction", "search_space", "seed")
    return {key: getattr(settings, key) for key in keys}


def _check_same_study(study: optuna.Study, settings: StudySettings) -> None:
    stored = study.user_attrs.get("fingerprint")
    wanted = _fingerprint(settings)
    if stored is None:
        study.set_user_attr("fingerprint", wanted)
        return
    changed = sorted(k for k in wanted if stored.get(k) != wanted[k])
    if changed:
        raise StudyConflict(
            f"study {settings.study_name!r} already exists with different {', '.join(changed)}; "
            "use a new study name for a different tuning request"
        )


def run_study(
    ctx: ToolContext,
    settings: StudySettings,
    baseline: TrialResult | None = None,
    progress: Progress | None = None,
    cancel_event: threading.Event | None = None,
) -> StudyResult:
    """Run (or resume) the tuning study described by ``settings`` and return what it did.

    Args:
        ctx: Tool context (runtime, MLflow client, approvals of the session).
        settings: The study; ``study_name`` must be the same when resuming after a crash.
        baseline: The finished baseline run (its metric starts the patience count and is compared
            with the best trial; its CPU time counts against the budget).
        progress: Called with ``{"kind", "message", "run_id"}`` dicts as trials start and finish.
        cancel_event: Set it (from any thread) to stop every running trial and end the study.
    """
    if not settings.search_space:
        settings = settings.model_copy(update={"search_space": load_search_space(settings.model_family)})
    study = open_study(settings, ctx.settings.optuna_storage)
    loop = StudyLoop(ctx, settings, study, baseline, progress, cancel_event or threading.Event())
    return loop.run()


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
        self.pruning = settings.prune and supports_pruning(settings.model_family)
        self.ledger = BudgetLedger(settings, _baseline_cost(baseline))
        self.watchdog = Watchdog(
            settings.trial_timeout_seconds, settings.watchdog_factor, settings.watchdog_floor_seconds,
            settings.watchdog_min_trials,
        )  # fmt: skip
        self.results: dict[int, TrialResult] = {}
        self.in_flight: dict[str, InFlight] = {}
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
        self._t0 = time.monotonic()
        self.tuning_run_id = ""

    # -- the loop --

    def run(self) -> StudyResult:
        """Run until a stopping criterion is met and nothing is in flight; return the result."""
        from tools import tuning_resume

        self.tuning_run_id = tuning_resume.tuning_run_for(self)
        try:
            tuning_resume.reconcile(self)
            while True:
                self._check_criteria()
                if self.hard_stop:
                    self._stop_all()
                    break
                if self.stop is None:
                    self._launch_available()
                if not self.in_flight and self.stop is not None:
                    break
                self._poll()
        except BaseException as exc:
            self._abort(exc)
            raise
        return self._finish()

    @property
    def elapsed(self) -> float:
        return self._elapsed_before + time.monotonic() - self._t0

    @property
    def launched(self) -> int:
        return len(self.results) + len(self.in_flight)

    def _set_stop(self, reason: StopReason, detail: str, hard: bool = False) -> None:
        """Record the first stop reason; a hard stop (cancel, wall clock) overrides a soft one."""
        if self.stop is None or (hard and not self.hard_stop):
            self.stop, self.stop_detail = reason, detail
        self.hard_stop = self.hard_stop or hard

    def _check_criteria(self) -> None:
        s = self.settings
        if self.cancel_event.is_set():
            self._set_stop("cancelled", f"cancelled by {self.ctx.requester}", hard=True)
        elif s.wall_clock_seconds is not None and self.elapsed >= s.wall_clock_seconds:
            limit = f"reached the wall-clock limit of {s.wall_clock_seconds:g}s"
            self._set_stop("wall_clock", limit, hard=True)
        self._check_running_budget()
        if self.stop is not None:
            return
        if s.target is not None and self.best_value is not None and self._reaches(self.best_value, s.target):
            self._set_stop("target", f"{s.metric} {self.best_value:.6g} reached the target {s.target:g}")
        elif s.patience is not None and self.since_improvement >= s.patience:
            self._set_stop("patience", f"{self.since_improvement} trials without improvement")
        elif self.consecutive_failures >= s.max_consecutive_failures:
            self._set_stop("failures", f"{self.consecutive_failures} trials failed in a row")
        elif self.launched >= s.n_trials:
            self._set_stop("max_trials", f"ran the {s.n_trials} trials requested")

    def _reaches(self, value: float, target: float) -> bool:
        return value >= target if self.settings.maximize else value <= target

    def _check_running_budget(self) -> None:
        """Stop running trials the moment spent + running CPU would pass the budget."""
        s = self.settings
        if s.cpu_hours is None or not self.in_flight or self.hard_stop:
            return
        now = time.monotonic()
        running = sum((now - f.started) * s.resources.cpu for f in self.in_flight.values())
        if self.ledger.cpu_seconds + running > s.cpu_hours * 3600:
            detail = f"the CPU budget of {s.cpu_hours:g} CPU-h was used up"
            self._set_stop("budget", detail)
            for flight in list(self.in_flight.values()):
                self._stop_trial(flight, "budget", detail, "budget rule")

    # -- launching --

    def _launch_available(self) -> None:
        while self.stop is None and len(self.in_flight) < self.settings.parallelism:
            if self.launched >= self.settings.n_trials:
                return
            shortfall = self.ledger.shortfall(len(self.in_flight))
            if shortfall is not None:
                self._set_stop("budget", shortfall)
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
        self._set_stop("wall_clock", detail)
        return False

    def _launch_one(self) -> bool:
        """Launch the next trial; return False when it could not be launched now."""
        from tools.policy import Halt, Reject, guarded_call

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
            self._set_stop("rejected", f"policy rule {verdict.rule}: {verdict.reason}")
            return False
        if outcome.error is not None or not outcome.result:
            self._launch_failed(trial, params, outcome.error or "start_training_run returned nothing")
            return True
        run_id, job_id = str(outcome.result["run_id"]), str(outcome.result["job_id"])
        trial.set_user_attr("launch", {"run_id": run_id, "job_id": job_id, "params": params})
        self.in_flight[job_id] = InFlight(trial, params, run_id, job_id, time.monotonic())
        self._emit("run_started", f"trial {trial.number} started: {_short(params)}", run_id)
        return True

    def _ask(self) -> tuple[optuna.trial.Trial, dict[str, Any]]:
        trial = self.study.ask()
        return trial, suggest_params(trial, self.space)

    def _trial_args(self, number: int, params: dict[str, Any]) -> dict[str, Any]:
        s = self.settings
        return {
            "dataset": s.dataset, "version": s.version, "model_family": s.model_family, "metric": s.metric,
            "experiment": s.experiment, "params": params, "seed": s.seed, "test_size": s.test_size,
            "role": "trial", "run_name": f"trial-{number}", "parent_run_id": self.tuning_run_id,
            "trial_number": number, "resources": s.resources.model_dump(),
            # the watchdog acts at trial_timeout_seconds; the job's own deadline is the backstop
            "timeout_seconds": s.trial_timeout_seconds + 30, "report_intermediate": self.pruning,
        }  # fmt: skip

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

    # -- watching --

    def _poll(self) -> None:
        if not self.in_flight:
            time.sleep(self.settings.poll_seconds)  # waiting for a concurrency slot held by others
            return
        infos = self.ctx.runtime.wait(list(self.in_flight), timeout=self.settings.poll_seconds)
        for info in infos:
            flight = self.in_flight.get(info.job_id)
            if flight is None:
                continue
            if info.done:
                self.finish_job(flight, info)
            else:
                self._watch(flight)

    def _watch(self, flight: InFlight) -> None:
        age = time.monotonic() - flight.started
        why = self.watchdog.overdue(age)
        if why is not None:
            self._stop_trial(flight, "timeout", f"runaway trial: {why}", "watchdog")
        elif self.pruning and age >= _INTERMEDIATE_MIN_AGE:
            self._check_pruning(flight)

    def _check_pruning(self, flight: InFlight) -> None:
        from tools.tuning_runs import read_intermediate

        values = read_intermediate(self.ctx.tracking, flight.run_id, self.settings.metric)
        every = self.settings.prune_interval_steps
        steps = sorted(s for s in values if s > flight.reported_step and s % every == 0)
        for step in steps:
            flight.trial.report(values[step], step)
            flight.reported_step, flight.last_value = step, values[step]
        if steps and flight.trial.should_prune():
            reason = (
                f"{self.settings.metric} {flight.last_value:.6g} at round {flight.reported_step} is below "
                "the median of earlier trials at that round"
            )
            flight.pruned = True
            self._stop_trial(flight, "pruned", reason, "pruner")

    def _stop_trial(self, flight: InFlight, kind: str, reason: str, cancelled_by: str) -> None:
        """Cancel a running trial through the runtime and conclude it (PRUNED or KILLED)."""
        from tools.tuning_resume import cancel_job

        info = cancel_job(self.ctx, flight.job_id, flight.run_id, reason, cancelled_by, kind)
        if info.state == "succeeded":  # it finished before the signal landed
            self.finish_job(flight, info)
            return
        state: TrialState = "PRUNED" if kind == "pruned" else "KILLED"
        value = flight.last_value if state == "PRUNED" else None
        self.conclude(flight, state, value, info, f"{kind} by {cancelled_by}: {reason}", cancelled_by)

    def _stop_all(self) -> None:
        kind = "cancelled" if self.stop == "cancelled" else "timeout"
        who = self.ctx.requester if self.stop == "cancelled" else "wall-clock limit"
        for flight in list(self.in_flight.values()):
            self._stop_trial(flight, kind, f"tuning study stopped: {self.stop_detail}", who)

    def finish_job(self, flight: InFlight, info: JobInfo) -> None:
        """Conclude a trial whose job ended on its own: COMPLETE with its metric, else FAIL/KILLED."""
        from tools import tracking
        from tools.tuning_runs import read_metric

        if info.state == "succeeded":
            value = read_metric(self.ctx.tracking, flight.run_id, self.settings.metric)
            if value is not None:
                self.conclude(flight, "COMPLETE", value, info, None)
                return
            note = f"the run finished without a numeric {self.settings.metric} metric"
            tracking.end_run(self.ctx.tracking, flight.run_id, "FAILED", note=note)
            self.conclude(flight, "FAIL", None, info, note)
        elif info.state == "cancelled":
            self.conclude(flight, "KILLED", None, info, info.reason or "cancelled", "runtime")
        else:
            note = info.reason or f"job failed with exit code {info.exit_code}"
            tracking.end_run(self.ctx.tracking, flight.run_id, "FAILED", note=f"Trial failed: {note}")
            self.conclude(flight, "FAIL", None, info, note)

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
        self.study.set_user_attr("active_seconds", self.elapsed)
        self._emit("trial_finished", _describe(result, self.settings.metric), result.run_id)

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
            if self.best_value is None or self._better(result.value, self.best_value):
                self.best_value, self.since_improvement = result.value, 0
                return
        self.since_improvement += 1

    def _better(self, value: float, than: float | None) -> bool:
        if than is None:
            return True
        return value > than if self.settings.maximize else value < than

    # -- ending --

    def _abort(self, exc: BaseException) -> None:
        """On an error or interrupt in the loop: stop running trials and close the tuning run."""
        import optuna

        reason = f"tuning loop interrupted ({type(exc).__name__}: {exc})"
        for flight in list(self.in_flight.values()):
            try:
                self._stop_trial(flight, "cancelled", reason, "agent")
            except Exception as inner:  # noqa: BLE001 - keep stopping the others
                self.note(f"could not stop trial {flight.number}: {inner}")
        if self.pending is not None:
            self.study.tell(self.pending[0], state=optuna.trial.TrialState.FAIL)
        self._set_stop("cancelled", reason, hard=True)
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
        from tools.tuning_resume import end_stray_trial_runs
        from tools.tuning_runs import finish_tuning_run

        self.study.set_user_attr("active_seconds", self.elapsed)
        end_stray_trial_runs(self, keep=set())
        result = self.result().model_copy(update={"tuning_run_status": status})
        finish_tuning_run(self.ctx, result, status)  # type: ignore[arg-type]
        self._emit("status", f"tuning finished: {result.stop_reason} ({result.stop_detail})", None)
        return result

    def result(self) -> StudyResult:
        """Return the study's result so far."""
        s = self.settings
        return StudyResult(
            study_name=s.study_name, tuning_run_id=self.tuning_run_id, direction=s.direction or "maximize",
            metric=s.metric, n_trials_requested=s.n_trials,
            trials=[self.results[n] for n in sorted(self.results)], best=self.best, baseline=self.baseline,
            stop_reason=self.stop or "max_trials", stop_detail=self.stop_detail,
            budget=BudgetUsage(
                cpu_seconds=self.ledger.cpu_seconds, gpu_seconds=self.ledger.gpu_seconds,
                wall_seconds=self.elapsed, cpu_hours_budget=s.cpu_hours, gpu_hours_budget=s.gpu_hours,
                estimated_trial_cpu_seconds=self.ledger.trial_estimate().cpu_seconds,
            ),
            resumed=self.resumed, notes=self.notes,
        )  # fmt: skip

    # -- reporting --

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def _emit(self, kind: str, message: str, run_id: str | None) -> None:
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
