"""What the MCP server offers, as MCP types: tools (from the toolset), resources, the planning prompt.

Pure functions over the toolset, guarded outcomes and turn results; the protocol handlers that call
them are in ``agent.mcp_server``.
"""

from __future__ import annotations

import json
import re
from typing import Any, get_args

import mcp_types as types
from pydantic import BaseModel, Field

from agent.service import TurnResult
from tools.core.specs import CLASSIFICATION_METRICS, REGRESSION_METRICS, ModelFamily
from tools.guard.policy import ToolOutcome
from tools.toolset import ToolDef

AGENT_TOOL = "run_experiment_request"
DATASETS_URI = "expagent://datasets"
DATASET_URI_PREFIX = "expagent://datasets/"
RUN_URI_PREFIX = "expagent://runs/"
PLAN_PROMPT = "plan_experiment"
_JSON = "application/json"


class ExperimentRequestArgs(BaseModel):
    """A request in words for the expagent agent, or the answer to its pending approval."""

    request: str = Field(
        default="",
        max_length=4000,
        description="What to do, e.g. 'Train a lightgbm baseline on breast_cancer version 1 optimizing "
        "roc_auc in experiment demo, then tune 10 trials', or a question about runs and datasets.",
    )
    thread_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
        description="Continue this conversation (a thread_id an earlier call returned); omit for a new one.",
    )
    approve: bool | None = Field(
        default=None,
        description="Answer the thread's pending approval: true approves, false denies (needs thread_id).",
    )


def run_experiment_request_doc() -> str:
    """Return the agent tool's description (what a host's model reads)."""
    return (
        "Run a request through the expagent agent: it plans, asks for approval when the plan needs it, "
        "launches a baseline and an Optuna study on a registered dataset version, verifies every run in "
        "MLflow and answers in five sections (Plan, Changes, Verification, Rollback, Summary). It never "
        "deploys, registers, promotes or aliases a model and never trains on raw data.\n\n"
        "If approval is needed and the host cannot ask the user, the result says 'approval pending' with "
        "the thread_id: call again with that thread_id and approve true or false."
    )


def tool_annotations(tool: ToolDef) -> types.ToolAnnotations:
    """Return the MCP hints for ``tool`` from what the toolset records about it."""
    return types.ToolAnnotations(
        title=tool.name.replace("_", " ").capitalize(),
        read_only_hint=tool.read_only,
        destructive_hint=False if tool.read_only else tool.destructive,
        idempotent_hint=tool.is_idempotent,
        open_world_hint=False,
    )


def _input_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema.pop("title", None)
    return schema


def list_tools(tools: dict[str, ToolDef]) -> list[types.Tool]:
    """Return every toolset tool (schema, docstring, hints) plus the agent tool."""
    listed = [
        types.Tool(
            name=t.name,
            description=t.description,
            input_schema=_input_schema(t.args_model),
            annotations=tool_annotations(t),
        )
        for t in (tools[name] for name in sorted(tools))
    ]
    agent = types.Tool(
        name=AGENT_TOOL,
        description=run_experiment_request_doc(),
        input_schema=_input_schema(ExperimentRequestArgs),
        # It launches runs and, when asked to cancel, stops the thread's running jobs.
        annotations=types.ToolAnnotations(
            title="Run experiment request",
            read_only_hint=False,
            destructive_hint=True,
            idempotent_hint=False,
            open_world_hint=False,
        ),  # fmt: skip
    )
    return [*listed, agent]


def _text(text: str) -> list[types.ContentBlock]:
    return [types.TextContent(type="text", text=text)]


def error_result(message: str, structured: dict[str, Any] | None = None) -> types.CallToolResult:
    """Return a tool error the host shows its model (``isError``)."""
    return types.CallToolResult(content=_text(message), structured_content=structured, is_error=True)


def outcome_result(outcome: ToolOutcome) -> types.CallToolResult:
    """Return a guarded call's outcome as a tool result; a rejection is an error whose text is the reason."""
    if outcome.ok:
        result = outcome.result or {}
        return types.CallToolResult(content=_text(json.dumps(result, default=str)), structured_content=result)
    verdict = outcome.verdict.model_dump(mode="json")
    return error_result(outcome.to_model_message(), {"verdict": verdict, "error": outcome.error})


def agent_result(result: TurnResult) -> types.CallToolResult:
    """Return a turn as a tool result: the five-section answer and the structured result."""
    text = result.answer
    if result.status == "awaiting_approval" and result.approval is not None:
        text = (
            f"Approval pending (thread_id {result.thread_id}): {'; '.join(result.approval.reasons)}. "
            f"Call {AGENT_TOOL} again with this thread_id and approve true or false.\n\n{text}"
        )
    return types.CallToolResult(
        content=_text(text), structured_content=result.to_json(), is_error=result.status == "failed"
    )


def approval_question(result: TurnResult) -> tuple[str, dict[str, Any]]:
    """Return the elicitation message and its requested schema for the turn's pending approval."""
    approval = result.approval
    assert approval is not None
    reasons = "\n".join(f"- {r}" for r in approval.reasons)
    message = f"expagent needs your approval before it launches anything.\n\n{approval.summary}\n\n{reasons}"
    schema = {
        "type": "object",
        "properties": {
            "approve": {
                "type": "boolean",
                "title": "Approve",
                "description": f"Approve {', '.join(approval.approval_keys) or 'the plan'} for this request.",
            }
        },
        "required": ["approve"],
    }
    return message, schema


# ---- resources ------------------------------------------------------------------------------------


def dataset_resources(records: list[Any]) -> list[types.Resource]:
    """Return the registry resource and one per registered dataset version (its card)."""
    catalog = types.Resource(
        uri=DATASETS_URI, name="datasets", title="Registered datasets", mime_type=_JSON,
        description="Every registered dataset version: status, task, target, size, PII columns.",
    )  # fmt: skip
    cards = [
        types.Resource(
            uri=f"{DATASET_URI_PREFIX}{r.ref}",
            name=r.ref,
            title=f"Dataset {r.ref}",
            mime_type=_JSON,
            description=f"{r.status} {r.schema.task} dataset, target {r.schema.target}. {r.description}",
        )  # fmt: skip
        for r in records
    ]
    return [catalog, *cards]


def resource_templates() -> list[types.ResourceTemplate]:
    """Return the run template (any MLflow run by ID)."""
    return [
        types.ResourceTemplate(
            uri_template=RUN_URI_PREFIX + "{run_id}",
            name="run",
            title="MLflow run",
            mime_type=_JSON,
            description="One MLflow run: params, metrics, tags, artifact list, dataset inputs.",
        )  # fmt: skip
    ]


_REF = re.compile(r"^(?P<name>[^@/]+)@(?P<version>[^@/]+)$")


def resource_call(uri: str) -> tuple[str, dict[str, Any]] | None:
    """Return the read-only tool call that reads ``uri`` (None for a URI this server does not serve)."""
    if uri == DATASETS_URI:
        return "list_datasets", {}
    if uri.startswith(DATASET_URI_PREFIX):
        ref = _REF.match(uri.removeprefix(DATASET_URI_PREFIX))
        return ("lookup_dataset", ref.groupdict()) if ref else None
    if uri.startswith(RUN_URI_PREFIX) and uri.removeprefix(RUN_URI_PREFIX):
        return "get_run", {"run_id": uri.removeprefix(RUN_URI_PREFIX)}
    return None


def resource_contents(uri: str, result: dict[str, Any]) -> types.ReadResourceResult:
    """Return a resource's JSON contents."""
    text = json.dumps(result, indent=2, default=str)
    return types.ReadResourceResult(
        contents=[types.TextResourceContents(uri=uri, mime_type=_JSON, text=text)]
    )


# ---- the planning prompt --------------------------------------------------------------------------

_FAMILIES = ", ".join(get_args(ModelFamily))
_METRICS = ", ".join(sorted(CLASSIFICATION_METRICS | REGRESSION_METRICS))
#: the inputs the role card says to confirm (agent.request.REQUIRED), then the optional tuning size.
_PROMPT_ARGS: tuple[tuple[str, str, bool], ...] = (
    ("dataset", "Registered dataset with an explicit version, e.g. breast_cancer@1.", True),
    ("model_family", f"One of {_FAMILIES}.", True),
    ("metric", f"Primary metric: {_METRICS}.", True),
    ("experiment", "MLflow experiment name to log to.", True),
    ("trials", "Tuning trials after the baseline (0 or omitted: baseline only).", False),
)


def plan_prompt() -> types.Prompt:
    """Return the "plan an experiment" prompt definition."""
    return types.Prompt(
        name=PLAN_PROMPT,
        title="Plan an experiment",
        description="Confirm the inputs expagent needs (dataset@version, model family, metric, experiment) "
        "and turn them into one request for run_experiment_request.",
        arguments=[types.PromptArgument(name=n, description=d, required=r) for n, d, r in _PROMPT_ARGS],
    )


def render_plan_prompt(arguments: dict[str, str]) -> types.GetPromptResult:
    """Return the prompt filled with ``arguments``; raise ValueError naming what is missing or wrong."""
    missing = [n for n, _, required in _PROMPT_ARGS if required and not (arguments.get(n) or "").strip()]
    if missing:
        raise ValueError(f"{PLAN_PROMPT} needs {', '.join(missing)}")
    ref = _REF.match(arguments["dataset"].strip())
    if ref is None:
        raise ValueError("dataset must be name@version with an explicit version, e.g. breast_cancer@1")
    trials = (arguments.get("trials") or "0").strip()
    if not trials.isdigit():
        raise ValueError(f"trials must be a whole number, got {trials!r}")
    name, version = ref["name"], ref["version"]
    family, metric, experiment = (arguments[k].strip() for k in ("model_family", "metric", "experiment"))
    request = f"Train a {family} baseline on {name} version {version} optimizing {metric}"
    request += f" in experiment {experiment}"
    request += f", then tune {trials} trials" if int(trials) else ""
    text = (
        "Plan an expagent experiment with me. Before starting anything, confirm these inputs with me "
        "(expagent never guesses a dataset version and only trains on registered, validated data):\n"
        f"- dataset: {name} version {version} (check it with lookup_dataset: status validated)\n"
        f"- model family: {family}\n- metric: {metric}\n- MLflow experiment: {experiment}\n"
        f"- tuning: {f'{trials} trials after the baseline' if int(trials) else 'baseline only'}\n\n"
        f'When I confirm, call {AGENT_TOOL} with request "{request}". Show me its five sections; if it '
        "says approval is pending, ask me and answer with approve true or false on the same thread_id."
    )
    return types.GetPromptResult(
        description=f"Plan: {family} on {name}@{version}, {metric}",
        messages=[types.PromptMessage(role="user", content=types.TextContent(type="text", text=text))],
    )
