"""refuse: deploy/promote/stage/serve/register requests and raw data; explain, audit, change nothing."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import HumanMessage
from langgraph.runtime import Runtime

from agent.nodes.intake import data_alternatives
from agent.state import AgentState, ForbiddenAction, IntakeDecision, Refusal
from agent.tool_calls import audit_refusal, check_data
from agent.turn_context import TurnContext, turn_context

DEPLOYMENT_POLICY = (
    "I am the experimentation agent: I train, tune and compare models and log every run to MLflow, but I "
    "never deploy, promote, stage, serve or register models, and I do not change production. "
    "Deployment is owned by the deployment team and the model-registry owners."
)
DEPLOYMENT_ALTERNATIVES = [
    'Hand the run ID (see `expagent run "what is the best run in experiment X?"`) and its MLflow link to '
    "the deployment team or the model-registry owners; they register and promote models.",
    "Ask me to train, tune or compare candidates, or to summarise a run's params, metrics, dataset "
    "version and git SHA for the hand-over.",
]


def refuse(state: AgentState, runtime: Runtime[TurnContext]) -> dict[str, Any]:
    """Record the refusal and its policy event (audited); nothing is launched or written to MLflow."""
    ctx = turn_context(runtime)
    intake = state.get("intake") or IntakeDecision(intent="forbidden")
    action: ForbiddenAction = intake.forbidden_action or "other"
    if action == "raw_data":
        return _refuse_raw_data(ctx, intake)
    what = _ACTION_WORDS.get(action, "that request")
    short = f"refused {what}: expagent never deploys, promotes, stages, serves or registers models"
    event = audit_refusal(ctx.tools, action, "no_deployment", short, {"request": _last_request(state)})
    reason = f"I cannot do {what}. {DEPLOYMENT_POLICY}"
    refusal = Refusal(
        action=action, rule="no_deployment", reason=reason, alternatives=DEPLOYMENT_ALTERNATIVES
    )
    return {"refusal": refusal, "policy_events": [event]}


_ACTION_WORDS = {
    "deploy": "a deployment",
    "promote": "a model promotion",
    "stage": "a stage transition",
    "serve": "model serving",
    "register_model": "a model registration",
}


def _refuse_raw_data(ctx: TurnContext, intake: IntakeDecision) -> dict[str, Any]:
    draft = intake.request
    target = draft.dataset_uri or draft.dataset or "the data you named"
    events = check_data(ctx.tools, target, draft.version)
    if not events:  # the guard found nothing wrong with the named data; still never train on raw data
        reason = f"{target} was described as raw or unvalidated data."
        events = [audit_refusal(ctx.tools, "raw_data", "versioned_data", reason, {"dataset": target})]
    refusal = Refusal(
        action="raw_data",
        rule=events[0].rule or "versioned_data",
        reason="I only train on curated, versioned datasets from the registry. " + events[0].reason,
        alternatives=data_alternatives(ctx),
    )
    return {"refusal": refusal, "policy_events": events}


def _last_request(state: AgentState) -> str:
    humans = [m for m in state.get("messages", []) if isinstance(m, HumanMessage)]
    return str(humans[-1].content) if humans else ""
