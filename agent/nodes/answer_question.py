"""answer_question: let the model answer with read-only tools (each call guarded, results redacted).

The model sees tool results only as the guard returns them (redacted JSON or the refusal text) and may
call tools for at most ``MAX_ITERATIONS`` rounds; its final text becomes the answer's Summary.
"""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolCall, ToolMessage
from langgraph.runtime import Runtime

from agent.prompts import render_prompt
from agent.state import AgentState, ToolCallRecord, Usage
from agent.tokens import trim_history, usage_of
from agent.tool_calls import call_tool
from agent.turn_context import TurnContext, turn_context
from tools.toolset import get_tool

READ_ONLY_TOOLS = ("search_runs", "get_run", "list_datasets", "lookup_dataset")
MAX_ITERATIONS = 6


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
        reply = model.invoke(messages)
        assert isinstance(reply, AIMessage)
        prompt_tokens, completion_tokens = usage_of(reply, messages, settings.model)
        usage = usage.add(
            Usage(model_calls=1, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        )
        if not reply.tool_calls:
            return {"model_answer": _text(reply), "tool_calls": calls, "usage": usage}
        messages.append(reply)
        for call in reply.tool_calls:
            message, record = _run_call(ctx, call)
            messages.append(message)
            calls.append(record)
    answer = (
        f"I stopped after {MAX_ITERATIONS} rounds of lookups without a final answer; ask a narrower question."
    )
    return {"model_answer": answer, "tool_calls": calls, "usage": usage}


def _prompt(state: AgentState, budget: int, model_name: str) -> list[BaseMessage]:
    intake = state.get("intake")
    history = list(state.get("messages", []))
    if intake is not None and intake.question:
        history.append(HumanMessage(f"(The question to answer: {intake.question})"))
    return trim_history([SystemMessage(render_prompt("question")), *history], budget, model_name)


def _run_call(ctx: TurnContext, call: ToolCall) -> tuple[ToolMessage, ToolCallRecord]:
    name = call["name"]
    call_id = call.get("id") or name
    if name not in READ_ONLY_TOOLS:
        text = f"Error: {name} is not available here; use one of {', '.join(READ_ONLY_TOOLS)}."
        record = ToolCallRecord(tool=name, args={}, ok=False, summary="not a read-only tool; refused")
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
