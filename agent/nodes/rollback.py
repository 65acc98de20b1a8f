"""rollback: stop whatever still runs, make sure every run ended FAILED/KILLED, and document it.

Reached when a run failed or was killed (from verify), when the user cancelled during execution
(from execute), or for a "cancel" request in a later turn (from intake; then the thread's session is
searched in MLflow for runs still RUNNING, which also finds work left behind by a crashed process).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langgraph.runtime import Runtime

from agent.experiment_plan import RollbackAction, RollbackRecord
from agent.state import AgentState, RunRecord
from agent.turn_context import TurnContext, turn_context
from tools.cleanup import RunToStop, StoppedRun, stop_runs
from tools.core.tags import TRAINING_ROLES, job_id_of, role_of, running_session_runs

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


def rollback(state: AgentState, runtime: Runtime[TurnContext]) -> dict[str, Any]:
    """Cancel running jobs, end their runs KILLED (failed ones stay FAILED), return the RollbackRecord."""
    ctx = turn_context(runtime)
    record = state.get("rollback") or _record_for(state, ctx)
    plan = state.get("plan")
    targets = _targets(ctx.tools.tracking, state, ctx.thread_id, plan.session_run_id if plan else None)
    stopped = stop_runs(
        ctx.tools,
        [RunToStop(t.run_id, t.role, t.job_id) for t in targets],
        record.reason,
        record.requested_by,
    )
    actions = [_action(target, done) for target, done in zip(targets, stopped, strict=True)]
    runs = [
        target.model_copy(update={"status": action.final_status or target.status, "note": action.note})
        for target, action in zip(targets, actions, strict=True)
    ]
    if not actions:
        actions.append(
            RollbackAction(action="nothing_running", note="No run of this conversation was running.")
        )
    ctx.progress("status", f"rollback: {len(targets)} run(s) checked")
    return {"rollback": record.model_copy(update={"actions": actions}), "runs": runs}


def _action(target: RunRecord, done: StoppedRun) -> RollbackAction:
    note = (target.note or done.note) if done.action == "already_ended" else done.note
    return RollbackAction(
        run_id=done.run_id, job_id=done.job_id, action=done.action, final_status=done.final_status, note=note
    )


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
    records = {r.run_id: r for r in state.get("runs", []) if r.role in TRAINING_ROLES}
    for run in running_session_runs(client, session_id):
        role = role_of(run)
        stoppable = role in TRAINING_ROLES or (role == "session" and run.info.run_id != current_session_run)
        if run.info.run_id not in records and stoppable:
            record = {"run_id": run.info.run_id, "role": role, "status": "RUNNING", "job_id": job_id_of(run)}
            records[run.info.run_id] = RunRecord.model_validate(record)
    return list(records.values())
