"""answer_question: let the model answer with read-only tools (each call guarded, results redacted).

The model sees tool results only as the guard returns them (redacted JSON or the refusal text) and may
call tools for at most ``MAX_ITERATIONS`` rounds; its final text becomes the answer's Summary, quoted
through ``agent.model_prose`` (no headings, capped, redacted, run IDs checked against MLflow, claimed
actions checked against what ran).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolCall, ToolMessage
from langgraph.runtime import Runtime

from agent.grammar.notes import note_request
from agent.model_prose import quote_prose
from agent.model_wire import endpoint_of, invoke_model
from agent.prompts import render_prompt
from agent.state import AgentState, ToolCallRecord, Usage
from agent.tokens import trim_history, usage_of
from agent.tool_calls import audit_refusal, call_tool
from agent.turn_context import TurnContext, turn_context
from tools.toolset import get_tool

READ_ONLY_TOOLS = (
    "search_runs", "get_run", "list_datasets", "lookup_dataset", "list_experiments", "list_running",
    "get_run_failure", "get_run_logs", "compare_runs",
)  # fmt: skip
#: the one write a question may make, and only when the user's own words ask for it.
NOTE_TOOL = "log_note"
MAX_ITERATIONS = 6
_RUN_IDS = re.compile(r"[0-9a-f]{32}")


def answer_question(state: AgentState, runtime: Runtime[TurnContext]) -> dict[str, Any]:
    """Run the read-only tool loop and keep the model's final text and the calls it made."""
    ctx = turn_context(runtime)
    settings = ctx.tools.settings
    allowed = question_tools(_last_user_text(state))
    schemas = [get_tool(name).json_schema() for name in allowed]
    model = ctx.model.bind_tools(schemas)
    messages = _prompt(state, settings.context_token_budget, settings.model)
    usage = state.get("usage") or Usage()
    calls: list[ToolCallRecord] = []
    for _ in range(MAX_ITERATIONS):
        reply = invoke_model(model, messages, endpoint_of(ctx.model))
        prompt_tokens, completion_tokens = usage_of(reply, messages, settings.model)
        usage = usage.add(
            Usage(model_calls=1, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        )
        if not reply.tool_calls:
            answer = quote_prose(_text(reply), _run_checker(ctx, calls), {c.tool for c in calls if c.ok})
            return {"model_answer": answer, "tool_calls": calls, "usage": usage}
        messages.append(reply)
        for call in reply.tool_calls:
            message, record = _run_call(ctx, call, allowed)
            messages.append(message)
            calls.append(record)
    answer = (
        f"I stopped after {MAX_ITERATIONS} rounds of lookups without a final answer; ask a narrower question."
    )
    return {"model_answer": answer, "tool_calls": calls, "usage": usage}


def _run_checker(ctx: TurnContext, calls: list[ToolCallRecord]) -> Callable[[str], bool]:
    """Return a check that MLflow has a run: IDs the lookups returned, else one ``get_run`` each."""
    seen = {word for c in calls if c.ok for word in _RUN_IDS.findall(c.summary or "")}

    def exists(run_id: str) -> bool:
        if run_id in seen:
            return True
        try:
            ctx.tools.tracking.get_run(run_id)
        except Exception:  # noqa: BLE001 - MLflow raises for unknown IDs; unreadable is not verified
            return False
        return True

    return exists


def _prompt(state: AgentState, budget: int, model_name: str) -> list[BaseMessage]:
    intake = state.get("intake")
    history = list(state.get("messages", []))
    if intake is not None and intake.question:
        history.append(HumanMessage(f"(The question to answer: {intake.question})"))
    return trim_history([SystemMessage(render_prompt("question")), *history], budget, model_name)


def question_tools(user_text: str) -> tuple[str, ...]:
    """Return the tools a question may call: the read-only ones, plus ``log_note`` when the user's own
    words ask to add a note to a named run (the model's classification alone never allows a write)."""
    return (*READ_ONLY_TOOLS, NOTE_TOOL) if note_request(user_text) is not None else READ_ONLY_TOOLS


def _last_user_text(state: AgentState) -> str:
    for message in reversed(state.get("messages", [])):
        if isinstance(message, HumanMessage) and isinstance(message.content, str):
            return message.content
    return ""


def _run_call(
    ctx: TurnContext, call: ToolCall, allowed: tuple[str, ...]
) -> tuple[ToolMessage, ToolCallRecord]:
    name = call["name"]
    call_id = call.get("id") or name
    if name not in allowed:  # a policy event, audited: questions never change state (but a note asked for)
        text = f"Error: {name} is not available here; use one of {', '.join(allowed)}."
        reason = f"the model called {name[:80]!r} while answering a question; only read-only tools may run"
        audit_refusal(ctx.tools, f"tool:{name[:80]}", "read_only", reason, {"tool": name[:200]})
        record = ToolCallRecord(tool=name[:80], args={}, ok=False, summary="not a read-only tool; refused")
        return ToolMessage(text, tool_call_id=call_id), record
    result = call_tool(ctx.tools, name, call.get("args") or {})
    text = result.outcome.to_model_message()
    return ToolMessage(text, tool_call_id=call_id), result.record(
        _summary(name, result.data) if result.ok else None
    )


def _summary(name: str, data: dict[str, Any]) -> str:
    special = {
        NOTE_TOOL: lambda: f"note added to run {data.get('run_id')} ({data.get('tag')})",
        "list_experiments": lambda: f"{len(data.get('experiments', []))} experiment(s)",
        "list_running": lambda: f"{len(data.get('runs', []))} run(s) RUNNING",
        "compare_runs": lambda: f"{len(data.get('runs', []))} runs compared",
        "get_run_logs": lambda: (
            f"log of run {data.get('run_id')} ({len(str(data.get('text') or '').splitlines())} lines)"
        ),
        "get_run_failure": lambda: (
            f"run {data.get('run_id')} ({data.get('status')}): {data.get('exception') or 'no error line'}"
        ),
    }
    if name in special:
        return str(special[name]())[:200]
    if "runs" in data:
        more = " (more match)" if data.get("more") else ""
        return f"{len(data['runs'])} run(s) in experiment {data.get('experiment')}{more}"
    if "datasets" in data:
        return f"{len(data['datasets'])} dataset version(s)"
    if "run_id" in data:
        return f"run {data['run_id']} ({data.get('status')})"
    if "name" in data and "version" in data:
        return f"{data['name']}@{data['version']} ({data.get('status')})"
    return "returned a result"


def _text(reply: AIMessage) -> str:
    content = reply.content
    if isinstance(content, str):
        return content.strip()
    return "".join(p if isinstance(p, str) else str(p.get("text", "")) for p in content).strip()
