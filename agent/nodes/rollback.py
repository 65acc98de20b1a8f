"""rollback: stop whatever still runs, make sure every run ended FAILED/KILLED, and document it.

Reached when a run failed or was killed (from verify), when the user cancelled during execution
(from execute), or for a "cancel" request in a later turn (from intake; then the thread's session is
searched in MLflow for runs still RUNNING, which also finds work left behind by a crashed process).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from langgraph.runtime import Runtime

from agent.plan import RollbackAction, RollbackRecord
from agent.runctx import TurnContext, turn_context
from agent.state import AgentState, RunRecord
from agent.toolcalls import call_tool
from tools.specs import CancellationRecord
from tools.tracking import end_run, write_cancellation

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

STOPPABLE_ROLES = ("baseline", "trial", "single", "tuning")


def rollback(state: AgentState, runtime: Runtime[TurnContext]) -> dict[str, Any]:
    """Cancel running jobs, end their runs KILLED (failed ones stay FAILED), return the RollbackRecord."""
    ctx = turn_context(runtime)
    record = state.get("rollback") or _record_for(state, ctx)
    client = ctx.tools.tracking
    plan = state.get("plan")
    targets = _targets(client, state, ctx.thread_id, plan.session_run_id if plan else None)
    actions: list[RollbackAction] = []
    runs: list[RunRecord] = []
    for target in targets:
        action = _roll_back(ctx, client, target, record)
        actions.append(action)
        runs.append(
            target.model_copy(update={"status": action.final_status or target.status, "note": action.note})
        )
    if not actions:
        actions.append(
            RollbackAction(action="nothing_running", note="No run of this conversation was running.")
        )
    ctx.progress("status", f"rollback: {len(targets)} run(s) checked")
    return {"rollback": record.model_copy(update={"actions": actions}), "runs": runs}


def _record_for(state: AgentState, ctx: TurnContext) -> RollbackRecord:
    by = ctx.cancelled_by or ctx.tools.requester
    return RollbackRecord(
        trigger="cancel_request", reason=f"{by} asked to cancel running work", requested_by=by
    )


def _targets(
    client: MlflowClient, state: AgentState, session_id: str, current_session_run: str | None
) -> list[RunRecord]:
    """Return this turn's training runs plus every RUNNING run of the session anywhere in MLflow.

    That includes the session run of an earlier turn a crashed process left RUNNING; the current
    turn's session run is not a target (respond closes it with the answer).
    """
    records = {r.run_id: r for r in state.get("runs", []) if r.role in STOPPABLE_ROLES}
    for run in _running_session_runs(client, session_id):
        role = run.data.tags.get("expagent.role", "single")
        stoppable = role in STOPPABLE_ROLES or (role == "session" and run.info.run_id != current_session_run)
        if run.info.run_id not in records and stoppable:
            job_id = run.data.tags.get("expagent.job_id")
            record = {"run_id": run.info.run_id, "role": role, "status": "RUNNING", "job_id": job_id}
            records[run.info.run_id] = RunRecord.model_validate(record)
    return list(records.values())


def _running_session_runs(client: MlflowClient, session_id: str) -> list[Run]:
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    query = f"tags.`expagent.session` = '{session_id}' and attributes.status = 'RUNNING'"
    return list(client.search_runs(experiments, filter_string=query, max_results=1000))


def _roll_back(
    ctx: TurnContext, client: MlflowClient, target: RunRecord, record: RollbackRecord
) -> RollbackAction:
    status = client.get_run(target.run_id).info.status
    if status != "RUNNING":
        note = target.note or ("finished normally" if status == "FINISHED" else "already ended")
        return RollbackAction(run_id=target.run_id, job_id=target.job_id, action="already_ended",
                              final_status=status, note=note)  # fmt: skip
    if target.job_id:
        # The cancellation record names who asked (cancel_job takes it from the context's requester).
        _ = ctx.tools.runtime  # create the shared runtime first, so the copy below uses it
        as_canceller = dataclasses.replace(ctx.tools, requester=record.requested_by)
        cancel = call_tool(as_canceller, "cancel_job", {"job_id": target.job_id, "reason": record.reason})
        if not cancel.ok:
            _orphan(ctx, client, target, record, f"cancel_job failed ({cancel.problem})")
    else:
        _orphan(ctx, client, target, record, "no job to stop")
    final = client.get_run(target.run_id).info.status
    if final == "RUNNING":  # the job is gone but nobody closed the run
        final = _orphan(ctx, client, target, record, "the job ended without closing its run")
    return RollbackAction(
        run_id=target.run_id, job_id=target.job_id, action="cancelled_job" if target.job_id else "ended_run",
        final_status=final, note=f"cancellation.json written ({record.reason})",
    )  # fmt: skip


def _orphan(
    ctx: TurnContext, client: MlflowClient, target: RunRecord, record: RollbackRecord, why: str
) -> str:
    """End a run no job will close: KILLED with a cancellation record (kind 'orphan')."""
    cancellation = CancellationRecord(
        run_id=target.run_id, job_id=target.job_id or "none", cancelled_by=record.requested_by,
        reason=f"{record.reason}; {why}", cancelled_at=ctx.tools.clock(), kind="orphan",
    )  # fmt: skip
    try:
        write_cancellation(client, cancellation)
    except Exception as exc:  # noqa: BLE001 - never leave it RUNNING: end it with a plain note instead
        end_run(client, target.run_id, "KILLED", note=f"{cancellation.reason} (record not written: {exc})")
    return str(client.get_run(target.run_id).info.status)
