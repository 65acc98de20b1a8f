"""approve: pause the graph until a human approves or denies what the guard flagged.

``interrupt`` saves the thread in the checkpoint; the service resumes it with
``Command(resume={"approve": bool, "approver": str})``, also from a new process.
"""

from __future__ import annotations

from typing import Any, Literal

from langgraph.runtime import Runtime
from langgraph.types import Command, interrupt

from agent.state import AgentState, ApprovalRequest, PolicyEvent, RunRecord
from agent.turn_context import TurnContext, turn_context

Route = Literal["execute", "respond"]


def approval_request(state: AgentState) -> ApprovalRequest:
    """Return what the human is asked to approve for the plan in ``state``."""
    plan = state.get("plan")
    assert plan is not None
    r = plan.request
    trials = f", then tune {r.trials} trials" if r.trials else ""
    summary = (
        f"Train {r.code_label} on {r.dataset}@{r.version} optimising {r.metric}{trials} in experiment "
        f"{r.experiment} ({r.runtime}); estimate {plan.estimate.total_cpu_hours:.3g} CPU-h of a "
        f"{plan.estimate.budget_cpu_hours:g} CPU-h budget."
    )
    return ApprovalRequest(reasons=plan.approval_reasons, approval_keys=plan.approval_keys, summary=summary)


def approve(state: AgentState, runtime: Runtime[TurnContext]) -> Command[Route]:
    """Ask for approval; on yes grant the keys and execute, on no end the session run and respond."""
    ctx = turn_context(runtime)
    request = approval_request(state)
    decision = interrupt(request.model_dump())
    approved, approver = _parse(decision, ctx.tools.requester)
    plan = state.get("plan")
    assert plan is not None and plan.session_run_id is not None
    verdict: Literal["approved", "denied"] = "approved" if approved else "denied"
    reason = f"{verdict} by {approver}: {', '.join(request.approval_keys)}"
    events = [PolicyEvent(tool="approval", verdict=verdict, rule=None, reason=reason)]
    ctx.tools.audit.write(
        {"timestamp": ctx.tools.clock().isoformat(), "session": ctx.thread_id, "requester": approver,
         "tool": "approval", "args": {"approval_keys": request.approval_keys}, "verdict": verdict,
         "rule": None, "reason": reason}
    )  # fmt: skip
    update: dict[str, Any] = {
        "approval_decision": "approved" if approved else "denied",
        "approver": approver,
        "policy_events": events,
    }
    client = ctx.tools.tracking
    if approved:
        client.update_run(plan.session_run_id, status="RUNNING")
        update["approvals"] = sorted(set(state.get("approvals", [])) | set(request.approval_keys))
        update["runs"] = [_session(plan.session_run_id, "RUNNING")]
        return Command(goto="execute", update=update)
    client.update_run(plan.session_run_id, status="RUNNING")  # respond ends it FINISHED with the note
    client.set_tag(plan.session_run_id, "mlflow.note.content", f"approval denied by {approver}")
    update["runs"] = [_session(plan.session_run_id, "RUNNING", note=f"approval denied by {approver}")]
    return Command(goto="respond", update=update)


def _session(run_id: str, status: str, note: str | None = None) -> RunRecord:
    return RunRecord(
        run_id=run_id, role="session", status=status, note=note or "holds the plan and the answer"
    )


def _parse(decision: Any, default_approver: str) -> tuple[bool, str]:
    if isinstance(decision, dict):
        return bool(decision.get("approve")), str(decision.get("approver") or default_approver)
    return bool(decision), default_approver
