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

from agent.model_prose import quote_prose
from agent.model_wire import endpoint_of, invoke_model
from agent.prompts import render_prompt
from agent.state import AgentState, ToolCallRecord, Usage
from agent.tokens import trim_history, usage_of
from agent.tool_calls import audit_refusal, call_tool
from agent.turn_context import TurnContext, turn_context
from tools.toolset import get_tool

READ_ONLY_TOOLS = ("search_runs", "get_run", "list_datasets", "lookup_dataset")
MAX_ITERATIONS = 6
_RUN_IDS = re.compile(r"[0-9a-f]{32}")


def answer_question(state: AgentState, runtime: Runtime[TurnContext]) -> dict[str, Any]:
    """Run the read-only tool loop and keep the model's final text and the calls it made."""
    ctx = turn_context(runtime)
    settings = ctx.tools.settings
    schemas = [get_tool(name).json_schema() for name in READ_ONLY_TOOLS]
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
            message, record = _run_call(ctx, call)
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


def _run_call(ctx: TurnContext, call: ToolCall) -> tuple[ToolMessage, ToolCallRecord]:
    name = call["name"]
    call_id = call.get("id") or name
    if name not in READ_ONLY_TOOLS:  # a policy event, audited: questions never change state
        text = f"Error: {name} is not available here; use one of {', '.join(READ_ONLY_TOOLS)}."
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
