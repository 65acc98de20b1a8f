"""Stop what is still RUNNING: the one way rollback, a failed turn and tuning recovery end runs.

Every stop of a run that has a job goes through the guard's ``cancel_job`` (audited); a run with no
job to stop, or whose cancel failed, or whose job ended without closing it, is ended KILLED with an
``orphan`` cancellation record. No run passed in is left RUNNING.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from tools.context import ToolContext
from tools.core import tags as tag_keys
from tools.core.liveness import owner_alive
from tools.core.specs import CancellationRecord
from tools.core.tracking import end_run, replay_outbox, write_cancellation
from tools.guard.policy import guarded_call

log = logging.getLogger(__name__)

#: ``cancel_job``'s reason field takes at most this many characters.
_MAX_REASON = 500
#: who the cancellation records of orphans name.
_ORPHAN_CHECK = "expagent (orphan check)"


@dataclass(frozen=True)
class RunToStop:
    """A run that may still be RUNNING, and the job that trains it (None: no job known)."""

    run_id: str
    role: str
    job_id: str | None = None


@dataclass(frozen=True)
class StoppedRun:
    """What stopping one run did."""

    run_id: str
    role: str
    job_id: str | None
    action: Literal["cancelled_job", "ended_run", "already_ended"]
    final_status: str
    note: str


def stop_runs(
    ctx: ToolContext, runs: Iterable[RunToStop], reason: str, requested_by: str
) -> list[StoppedRun]:
    """Stop every run in ``runs`` still RUNNING (cancelling its job through the guard); report each."""
    canceller = dataclasses.replace(ctx, requester=requested_by)  # the record names who asked
    return [_stop(canceller, run, reason) for run in runs]


def _stop(ctx: ToolContext, run: RunToStop, reason: str) -> StoppedRun:
    client = ctx.tracking
    status = str(client.get_run(run.run_id).info.status)
    if status != "RUNNING":
        note = "finished normally" if status == "FINISHED" else "already ended"
        return StoppedRun(run.run_id, run.role, run.job_id, "already_ended", status, note)
    if run.job_id:
        args = {"job_id": run.job_id, "reason": reason[:_MAX_REASON]}
        outcome = guarded_call("cancel_job", args, ctx)
        if not outcome.ok:
            problem = outcome.error or getattr(outcome.verdict, "reason", "refused")
            _end_orphan(ctx, run, reason, f"cancel_job failed ({problem})")
    else:
        _end_orphan(ctx, run, reason, "no job to stop")
    final = str(client.get_run(run.run_id).info.status)
    if final == "RUNNING":  # the job is gone but nobody closed the run
        final = _end_orphan(ctx, run, reason, "the job ended without closing its run")
    action: Literal["cancelled_job", "ended_run"] = "cancelled_job" if run.job_id else "ended_run"
    return StoppedRun(
        run.run_id, run.role, run.job_id, action, final, f"cancellation.json written ({reason})"
    )


def _end_orphan(ctx: ToolContext, run: RunToStop, reason: str, why: str) -> str:
    """End a run no job will close: KILLED with a cancellation record (kind ``orphan``)."""
    client = ctx.tracking
    record = CancellationRecord(
        run_id=run.run_id, job_id=run.job_id or "none", cancelled_by=ctx.requester,
        reason=f"{reason}; {why}", cancelled_at=ctx.clock(), kind="orphan",
    )  # fmt: skip
    try:
        write_cancellation(client, record)
    except Exception as exc:  # noqa: BLE001 - never leave it RUNNING: end it with a plain note instead
        end_run(client, run.run_id, "KILLED", note=f"{record.reason} (record not written: {exc})")
    return str(client.get_run(run.run_id).info.status)


def reconcile_orphans(ctx: ToolContext, limit: int = 1000) -> list[StoppedRun]:
    """End the RUNNING runs whose agent process is gone and whose job (if any) is not running.

    Runs record their owner (host, pid, process start time). A run owned by a live process, by another
    host, or whose job is still running (it will close its run itself) is left alone; the rest are
    ended KILLED with an ``orphan`` cancellation record. Any command that opens a workspace calls this.
    """
    client = ctx.tracking
    written, waiting = replay_outbox(client)  # real outcomes first: a kept FINISHED is not an orphan
    for write in written:
        log.info("wrote the kept %s of run %s (%s)", write.op, write.run_id, write.status)
    if waiting:
        log.warning("%d kept run-state write(s) still wait for the tracking server", waiting)
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    query = f"attributes.status = 'RUNNING' and tags.`{tag_keys.MANAGED}` = 'true'"
    orphans: list[RunToStop] = []
    for run in client.search_runs(experiments, filter_string=query, max_results=limit):
        if owner_alive(dict(run.data.tags)) is not False:
            continue
        job_id = tag_keys.job_id_of(run)
        if job_id and _job_running(ctx, job_id):
            continue  # adopted: the job ends its own run
        orphans.append(RunToStop(run.info.run_id, tag_keys.role_of(run)))
    reason = "orphan: the agent process that owned this run is gone and no job is running for it"
    return stop_runs(ctx, orphans, reason, _ORPHAN_CHECK)


def _job_running(ctx: ToolContext, job_id: str) -> bool:
    try:
        return not ctx.runtime_for_job(job_id).status(job_id).done
    except Exception:  # noqa: BLE001 - unknown to the runtime, or the runtime is unreachable: not running here
        return False
