"""respond: render the five-section answer from state and close the turn's session run.

The session run (if the turn planned one) gets ``answer.md`` and the turn's model usage as metrics,
then ends FINISHED — the last write of every turn, so no run of the turn is left RUNNING.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage
from langgraph.runtime import Runtime

from agent.answer import render_answer
from agent.memory import remember
from agent.sections import answer_lead, compose_sections
from agent.state import AgentState, RunRecord, Usage
from agent.turn_context import TurnContext, turn_context
from tools.core.tags import NOTE
from tools.core.tracking import end_run, ui_url

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


def respond(state: AgentState, runtime: Runtime[TurnContext]) -> dict[str, Any]:
    """Render the answer, log it on the session run and end that run FINISHED."""
    ctx = turn_context(runtime)
    plan = state.get("plan")
    session_id = plan.session_run_id if plan is not None else None
    # The answer describes the turn as it ends: the session run closes FINISHED right after rendering.
    final = {**state, "runs": [_closing(r, session_id) for r in state.get("runs", [])]}
    answer = render_answer(compose_sections(final, run_links(ctx, final)), answer_lead(final))  # type: ignore[arg-type]
    update: dict[str, Any] = {"answer": answer, "messages": [AIMessage(answer)]}
    memory = remember(state)
    if memory is not None:
        update["memory"] = memory
    if session_id:
        usage = state.get("usage") or Usage()
        update["runs"] = [close_session_run(ctx.tools.tracking, session_id, answer, usage, state)]
    return update


def _closing(run: RunRecord, session_run_id: str | None) -> RunRecord:
    if run.run_id != session_run_id:
        return run
    return run.model_copy(update={"status": "FINISHED", "note": run.note or "holds the plan and this answer"})


def run_links(ctx: TurnContext, state: AgentState) -> dict[str, str]:
    """Return MLflow UI links of the turn's runs (they all live in the request's experiment)."""
    plan = state.get("plan")
    runs = state.get("runs", [])
    if plan is None or not runs:
        return {}
    experiment = ctx.tools.tracking.get_experiment_by_name(plan.request.experiment)
    if experiment is None:
        return {}
    settings = ctx.tools.settings
    return {r.run_id: ui_url(settings, experiment.experiment_id, r.run_id) for r in runs}


def _described_with_answer(client: MlflowClient, run_id: str, answer: str) -> str:
    """Return the session run's description with the answer first and the plan after it."""
    plan = client.get_run(run_id).data.tags.get(NOTE, "")
    request, _, plan_part = plan.partition("\n\n")
    return f"{request}\n\n## Answer\n{answer}\n\n## Plan\n{plan_part}".strip()


def close_session_run(
    client: MlflowClient, run_id: str, answer: str, usage: Usage, state: AgentState
) -> RunRecord:
    """Log the answer and usage on the session run and end it FINISHED; return its record."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    # Under "agent/": MLflow's chart view groups them apart from the models' metrics.
    metrics = [Metric(f"agent/{k}", float(v), now, 0) for k, v in usage.model_dump().items()]
    client.log_batch(run_id, metrics=metrics)
    client.log_text(run_id, answer, "answer.md")
    end_run(client, run_id, "FINISHED", note=_described_with_answer(client, run_id, answer))
    previous = next((r for r in state.get("runs", []) if r.run_id == run_id), None)
    note = previous.note if previous else None
    return RunRecord(run_id=run_id, role="session", status="FINISHED", metrics=usage.model_dump(), note=note)
