"""What happens to one running trial: polling its job, pruning, the watchdog, stopping, concluding.

Functions over the ``StudyLoop`` (``tools/tuning_loop.py``) that owns the trial.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tools.specs import CancellationRecord
from tools.tuning_models import TrialState

if TYPE_CHECKING:
    import optuna

    from tools.context import ToolContext
    from tools.specs import JobInfo
    from tools.tuning_loop import StudyLoop

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


def poll(loop: StudyLoop) -> None:
    """Wait for the running trials (one poll interval at most) and handle what changed."""
    if not loop.in_flight:
        time.sleep(loop.settings.poll_seconds)  # waiting for a concurrency slot held by others
        return
    infos = loop.ctx.runtime.wait(list(loop.in_flight), timeout=loop.settings.poll_seconds)
    for info in infos:
        flight = loop.in_flight.get(info.job_id)
        if flight is None:
            continue
        if info.done:
            finish_job(loop, flight, info)
        else:
            _watch(loop, flight)


def _watch(loop: StudyLoop, flight: InFlight) -> None:
    age = time.monotonic() - flight.started
    why = loop.watchdog.overdue(age)
    if why is not None:
        stop_trial(loop, flight, "timeout", f"runaway trial: {why}", "watchdog")
    elif loop.pruning and age >= _INTERMEDIATE_MIN_AGE:
        _check_pruning(loop, flight)


def _report_intermediate(loop: StudyLoop, flight: InFlight, up_to: int | None = None) -> bool:
    """Report the trial's new intermediate values (every ``prune_interval_steps`` rounds).

    A running trial reports only rounds that some completed trial reached (``up_to``): the pruner
    compares at the trial's last reported round, and beyond the completed curves it has nothing to
    compare with. A completed trial reports its whole curve for the trials after it.
    """
    from tools.tuning_runs import read_intermediate

    values = read_intermediate(loop.ctx.tracking, flight.run_id, loop.settings.metric)
    every = loop.settings.prune_interval_steps
    limit = up_to if up_to is not None else max(values, default=0)
    steps = sorted(s for s in values if flight.reported_step < s <= limit and s % every == 0)
    for step in steps:
        flight.trial.report(values[step], step)
        flight.reported_step, flight.last_value = step, values[step]
    return bool(steps)


def _check_pruning(loop: StudyLoop, flight: InFlight) -> None:
    if flight.reported_step >= loop.reference_step:
        return
    if _report_intermediate(loop, flight, loop.reference_step) and flight.trial.should_prune():
        reason = (
            f"{loop.settings.metric} {flight.last_value:.6g} at round {flight.reported_step} is worse "
            "than the median of earlier trials at that round"
        )
        stop_trial(loop, flight, "pruned", reason, "pruner")


def stop_trial(loop: StudyLoop, flight: InFlight, kind: str, reason: str, cancelled_by: str) -> None:
    """Cancel a running trial through the runtime and conclude it (PRUNED or KILLED)."""
    info = cancel_job(loop.ctx, flight.job_id, flight.run_id, reason, cancelled_by, kind)
    if info.state == "succeeded":  # it finished before the signal landed
        finish_job(loop, flight, info)
        return
    state: TrialState = "PRUNED" if kind == "pruned" else "KILLED"
    value = flight.last_value if state == "PRUNED" else None
    loop.conclude(flight, state, value, info, f"{kind} by {cancelled_by}: {reason}", cancelled_by)


def stop_all(loop: StudyLoop) -> None:
    """Cancel every running trial (the study was cancelled or ran out of wall-clock time)."""
    kind = "cancelled" if loop.stop == "cancelled" else "timeout"
    who = loop.ctx.requester if loop.stop == "cancelled" else "wall-clock limit"
    for flight in list(loop.in_flight.values()):
        stop_trial(loop, flight, kind, f"tuning study stopped: {loop.stop_detail}", who)


def finish_job(loop: StudyLoop, flight: InFlight, info: JobInfo) -> None:
    """Conclude a trial whose job ended on its own: COMPLETE with its metric, else FAIL/KILLED."""
    from tools import tracking
    from tools.tuning_runs import read_metric

    if info.state == "succeeded":
        value = read_metric(loop.ctx.tracking, flight.run_id, loop.settings.metric)
        if value is not None:
            if loop.pruning:  # later trials are compared with this trial's whole curve
                _report_intermediate(loop, flight)
                loop.reference_step = max(loop.reference_step, flight.reported_step)
            loop.conclude(flight, "COMPLETE", value, info, None)
            return
        note = f"the run finished without a numeric {loop.settings.metric} metric"
        tracking.end_run(loop.ctx.tracking, flight.run_id, "FAILED", note=note)
        loop.conclude(flight, "FAIL", None, info, note)
    elif info.state == "cancelled":
        loop.conclude(flight, "KILLED", None, info, info.reason or "cancelled", "runtime")
    else:
        note = info.reason or f"job failed with exit code {info.exit_code}"
        tracking.end_run(loop.ctx.tracking, flight.run_id, "FAILED", note=f"Trial failed: {note}")
        loop.conclude(flight, "FAIL", None, info, note)


def cancel_job(
    ctx: ToolContext, job_id: str, run_id: str, reason: str, cancelled_by: str, kind: str
) -> JobInfo:
    """Cancel a trial's job; its run ends KILLED with a cancellation record of ``kind``."""
    from tools import tracking

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
