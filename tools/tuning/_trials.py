"""Running trials: polling their jobs, pruning, the watchdog, stopping (``TrialMonitor``)."""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from tools.core import tracking
from tools.core.registry_violations import check_finished_run
from tools.core.specs import CancellationRecord
from tools.tuning._watchdog import Watchdog
from tools.tuning.records import StudySettings, TrialState
from tools.tuning.runs import read_intermediate, read_metric

if TYPE_CHECKING:
    import optuna

    from tools.context import ToolContext
    from tools.core.specs import JobInfo

#: the trainer flushes intermediate values about once a second: reading earlier finds nothing.
_INTERMEDIATE_MIN_AGE = 1.0


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

    @property
    def number(self) -> int:
        return int(self.trial.number)


class Conclude(Protocol):
    """Records a trial's outcome (the study loop's ``conclude``)."""

    def __call__(
        self,
        flight: InFlight,
        state: TrialState,
        value: float | None,
        info: JobInfo | None,
        note: str | None,
        cancelled_by: str | None = None,
    ) -> None: ...


class TrialMonitor:
    """Watches a study's running trials: polls their jobs, prunes, enforces the watchdog, stops them.

    It owns the in-flight trials; how an outcome is recorded is the study loop's (``conclude``).
    """

    def __init__(
        self, ctx: ToolContext, settings: StudySettings, watchdog: Watchdog, pruning: bool, conclude: Conclude
    ) -> None:
        self.ctx, self.settings, self.watchdog, self.pruning = ctx, settings, watchdog, pruning
        self.conclude = conclude
        self.in_flight: dict[str, InFlight] = {}
        self.reference_step = 0  # the last round any completed trial reported (pruning)

    def poll(self) -> None:
        """Wait for the running trials (one poll interval at most) and handle what changed."""
        if not self.in_flight:
            time.sleep(self.settings.poll_seconds)  # waiting for a concurrency slot held by others
            return
        infos = self.ctx.runtime.wait(list(self.in_flight), timeout=self.settings.poll_seconds)
        for info in infos:
            flight = self.in_flight.get(info.job_id)
            if flight is None:
                continue
            if info.done:
                self.finish(flight, info)
            else:
                self._watch(flight)

    def _watch(self, flight: InFlight) -> None:
        age = time.monotonic() - flight.started
        why = self.watchdog.overdue(age)
        if why is not None:
            self.stop(flight, "timeout", f"runaway trial: {why}", "watchdog")
        elif self.pruning and age >= _INTERMEDIATE_MIN_AGE:
            self._check_pruning(flight)

    def _report_intermediate(self, flight: InFlight, up_to: int | None = None) -> bool:
        """Report the trial's new intermediate values (every ``prune_interval_steps`` rounds).

        A running trial reports only rounds that some completed trial reached (``up_to``): the pruner
        compares at the trial's last reported round, and beyond the completed curves it has nothing to
        compare with. A completed trial reports its whole curve for the trials after it.
        """
        values = read_intermediate(self.ctx.tracking, flight.run_id, self.settings.selection_metric)
        every = 1 if self.settings.cv_folds else self.settings.prune_interval_steps  # CV: every fold
        limit = up_to if up_to is not None else max(values, default=0)
        steps = sorted(s for s in values if flight.reported_step < s <= limit and s % every == 0)
        for step in steps:
            flight.trial.report(values[step], step)
            flight.reported_step, flight.last_value = step, values[step]
        return bool(steps)

    def _check_pruning(self, flight: InFlight) -> None:
        if flight.reported_step >= self.reference_step:
            return
        if self._report_intermediate(flight, self.reference_step) and flight.trial.should_prune():
            at = "after fold" if self.settings.cv_folds else "at round"
            reason = (
                f"{self.settings.selection_metric} {flight.last_value:.6g} {at} {flight.reported_step} is "
                f"worse than the median of earlier trials {at} {flight.reported_step}"
            )
            self.stop(flight, "pruned", reason, "pruner")

    def stop(self, flight: InFlight, kind: str, reason: str, cancelled_by: str) -> None:
        """Cancel a running trial through the runtime and conclude it (PRUNED or KILLED)."""
        info = cancel_job(self.ctx, flight.job_id, flight.run_id, reason, cancelled_by, kind)
        if info.state == "succeeded":  # it finished before the signal landed
            self.finish(flight, info)
            return
        state: TrialState = "PRUNED" if kind == "pruned" else "KILLED"
        value = flight.last_value if state == "PRUNED" else None
        self.conclude(flight, state, value, info, f"{kind} by {cancelled_by}: {reason}", cancelled_by)

    def stop_all(self, kind: str, reason: str, cancelled_by: str) -> None:
        """Cancel every running trial (``kind``: cancelled, timeout, budget)."""
        for flight in list(self.in_flight.values()):
            self.stop(flight, kind, reason, cancelled_by)

    def finish(self, flight: InFlight, info: JobInfo) -> None:
        """Conclude a trial whose job ended on its own: COMPLETE with its metric, else FAIL/KILLED."""
        metric = self.settings.metric
        violation = None
        if self.settings.entry_point is not None:  # only user code can touch the model registry
            violation = check_finished_run(self.ctx.settings, self.ctx.tracking, flight.run_id)
        if violation is not None:  # user code touched the model registry (the entry point is blocked now)
            self.conclude(flight, "FAIL", None, info, violation)
            return
        if info.state == "succeeded":
            value = read_metric(
                self.ctx.tracking, flight.run_id, self.settings.selection_metric
            )  # val or CV mean
            if value is not None:
                if self.pruning:  # later trials are compared with this trial's whole curve
                    self._report_intermediate(flight)
                    self.reference_step = max(self.reference_step, flight.reported_step)
                self.conclude(flight, "COMPLETE", value, info, None)
                return
            note = f"the run finished without a numeric {metric} metric"
            tracking.end_run(self.ctx.tracking, flight.run_id, "FAILED", note=note)
            self.conclude(flight, "FAIL", None, info, note)
        elif info.state == "cancelled":
            self.conclude(flight, "KILLED", None, info, info.reason or "cancelled", "runtime")
        else:
            note = info.reason or f"job failed with exit code {info.exit_code}"
            tracking.end_run(self.ctx.tracking, flight.run_id, "FAILED", note=f"Trial failed: {note}")
            self.conclude(flight, "FAIL", None, info, note)


def cancel_job(
    ctx: ToolContext, job_id: str, run_id: str, reason: str, cancelled_by: str, kind: str
) -> JobInfo:
    """Cancel a trial's job; its run ends KILLED with a cancellation record of ``kind``."""
    runtime = ctx.runtime
    if "kind" in inspect.signature(runtime.cancel).parameters:
        return runtime.cancel(job_id, reason, cancelled_by, kind=kind)  # type: ignore[call-arg]
    info = runtime.cancel(job_id, reason, cancelled_by)
    if info.state == "cancelled":  # this runtime records kind "cancelled": correct it
        record = cancellation_record(run_id, job_id, reason, cancelled_by, kind, info)
        tracking.write_cancellation(ctx.tracking, record)
    return info


def cancellation_record(
    run_id: str, job_id: str, reason: str, by: str, kind: str, info: JobInfo | None
) -> CancellationRecord:
    """Return the record written as ``cancellation.json`` when the loop stops a run itself."""
    return CancellationRecord(
        run_id=run_id, job_id=job_id or "none", cancelled_by=by, reason=reason,
        cancelled_at=datetime.now(UTC), wall_seconds=info.wall_seconds if info else None,
        cpu_seconds=info.cpu_seconds if info else None, kind=kind,  # type: ignore[arg-type]
    )  # fmt: skip
