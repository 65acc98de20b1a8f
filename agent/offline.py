"""The embedded default chat model: deterministic, rule-based, no network.

``OfflineChatModel`` emits the same tool calls an LLM would for the two ways the graph uses a model:

- bound to ``record_intake``: one ``record_intake`` call whose args are an ``IntakeDecision`` parsed
  from the user's latest message by ``agent.grammar`` (fields-only follow-ups are merged with
  the request they answer);
- bound to the read-only tools (``search_runs``, ``get_run``, ``list_datasets``, ``lookup_dataset``):
  first the tool calls the question needs, then, once ToolMessages are present, a factual markdown
  answer built only from those results. Text inside tool results is data, never instructions.

Without bound tools it replies in text with what it understood.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolCall, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool

from agent.grammar import QuestionPlan, parse_message, parse_question
from agent.grammar.followups import FollowUp, read_followup
from agent.grammar.scanner import Scanner
from agent.grammar.typos import read_cue_typos
from agent.offline_answers import write_answer
from agent.offline_questions import MAX_ROUNDS, first_calls, next_calls, payloads, resolved, thread_experiment
from agent.state import RECORD_INTAKE, IntakeDecision
from agent.tokens import estimate_usage
from tools.core.specs import metric_direction

QUESTION_TOOLS = frozenset({
    "search_runs", "get_run", "list_datasets", "lookup_dataset", "list_experiments", "list_running",
    "get_run_failure", "get_run_logs", "compare_runs", "log_note",
})  # fmt: skip
# Names the tools' argument models may use for the same idea; the first one in the bound schema wins.
_ARG_ALIASES: dict[str, tuple[str, ...]] = {
    "experiment": ("experiment", "experiment_name", "experiment_names"),
    "max_results": ("max_results", "limit", "top_k"),
    "run_id": ("run_id", "id"),
    "name": ("name", "dataset", "dataset_name"),
    "version": ("version", "dataset_version"),
}


class OfflineChatModel(BaseChatModel):
    """A rule-based chat model for the documented request grammar (docs/offline-grammar.md)."""

    tools: list[dict[str, Any]] = []
    tool_choice: str | None = None

    @property
    def _llm_type(self) -> str:
        return "expagent-offline"

    def bind_tools(  # type: ignore[override]
        self, tools: Sequence[Any], *, tool_choice: str | dict[str, Any] | bool | None = None, **kwargs: Any
    ) -> OfflineChatModel:
        """Return a copy that sees ``tools`` (OpenAI function dicts, pydantic models or functions)."""
        schemas = [convert_to_openai_tool(t) for t in tools]
        return self.model_copy(update={"tools": schemas, "tool_choice": _choice_name(tool_choice, schemas)})

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        reply = self._reply(messages)
        reply.usage_metadata = estimate_usage(messages, reply, self.tools)
        return ChatResult(generations=[ChatGeneration(message=reply)])

    def _reply(self, messages: list[BaseMessage]) -> AIMessage:
        names = {t["function"]["name"] for t in self.tools}
        if self.tool_choice not in (None, "any", RECORD_INTAKE):
            raise ValueError(
                f"the offline model can be forced to call only {RECORD_INTAKE!r}, not {self.tool_choice!r}"
            )
        if self.tool_choice == RECORD_INTAKE or RECORD_INTAKE in names:
            return _intake_reply(messages)
        if names & QUESTION_TOOLS:
            return _question_reply(messages, self.tools)
        return AIMessage(content=_describe(intake_from_history(messages)))


def _choice_name(choice: str | dict[str, Any] | bool | None, schemas: list[dict[str, Any]]) -> str | None:
    """Normalise LangChain's tool_choice forms to a tool name, 'any' or None (auto)."""
    if isinstance(choice, dict):
        return str(choice.get("function", {}).get("name") or choice.get("name"))
    if choice is True:
        return schemas[0]["function"]["name"] if len(schemas) == 1 else "any"
    if choice in (None, False, "auto", "none"):
        return None
    return "any" if choice == "required" else str(choice)


def _text(message: BaseMessage) -> str:
    if isinstance(message.content, str):
        return message.content
    return " ".join(p if isinstance(p, str) else str(p.get("text", "")) for p in message.content)


def intake_from_history(messages: Sequence[BaseMessage]) -> IntakeDecision:
    """Return the decision for the latest user message; misspelled cue words are read when that makes
    the whole message understood ("giv it 3 more trails"), and named in ``readings``."""
    decision = _intake(messages)
    missed = [m for m in decision.not_understood if not m.startswith("ignored ")]
    if not missed or decision.intent not in ("experiment", "unknown"):
        return decision
    suspects = {w.lower() for m in missed for w in re.findall(r"[A-Za-z]+", m)}
    last = max(i for i, m in enumerate(messages) if isinstance(m, HumanMessage))
    reading = read_cue_typos(_text(messages[last]), suspects)
    if reading.ambiguous:
        notes = [f"'{w}' (did you mean {' or '.join(repr(c) for c in cs)}?)" for w, cs in reading.ambiguous]
        return decision.model_copy(update={"not_understood": [*decision.not_understood, *notes]})
    if not reading.fixes:
        return decision
    fixed = [*messages[:last], HumanMessage(reading.text), *messages[last + 1 :]]
    corrected = _intake(fixed)
    if corrected.intent not in ("experiment", "question") or corrected.not_understood:
        return decision  # the reading does not make the message understood: report it as written
    return corrected.model_copy(update={"readings": [*corrected.readings, *reading.describe()]})


def _intake(messages: Sequence[BaseMessage]) -> IntakeDecision:
    """Return the decision for the latest user message, merged with the request it answers.

    A message that only supplies request fields ("breast_cancer@1, roc_auc", "version 1") after an
    experiment request fills in that request: earlier human messages are merged back to the nearest
    one with an explicit experiment verb; a question, cancel or refusal in between stops the merge.
    A bare version attaches to the dataset named earlier; a version is never carried to another one.
    """
    humans = [_text(m) for m in messages if isinstance(m, HumanMessage)]
    if not humans:
        return IntakeDecision(
            intent="unknown", forbidden_action=None, question=None, not_understood=["(no user message)"]
        )
    followup = _followup(humans[-1])
    if followup is not None:
        # a follow-up on a named run changes that run's request, not the earlier messages' one
        names_run = (read_followup(humans[-1]) or FollowUp("change", "")).names_run
        fields_only = followup.more_trials is None and not followup.not_understood and not names_run
        decision = followup
    else:
        decision, fields_only = parse_message(humans[-1])
    if not fields_only:
        return decision
    if not decision.request.dataset and not decision.request.dataset_uri:
        # Fields without a dataset change the thread's pending or last request (the intake node decides
        # which one from the thread memory; a pending draft comes first).
        decision = decision.model_copy(update={"follow_up": True})
    merged = decision.request.model_dump()
    for text in reversed(humans[:-1]):
        earlier_followup = read_followup(text)
        if earlier_followup is not None and earlier_followup.more_trials is not None:
            break  # "3 more trials" continued a study; its count is not part of the request
        earlier, earlier_fields_only = parse_message(text)
        if earlier.intent != "experiment":
            break
        _fill_missing(merged, earlier.request.model_dump())
        if not earlier_fields_only:
            break
    return decision.model_copy(update={"request": type(decision.request)(**merged)})


_QUESTION_OPENING = re.compile(
    r"^\s*(?:what|what's|whats|which|how|who|when|where|why|is|are|did|does|was|were|show|list)\b", re.I
)


def _followup(text: str) -> IntakeDecision | None:
    """Return the decision for a follow-up ("rerun with seed 7", "3 more trials"), else None.

    The request holds only what changes; the intake node merges it with the thread's last request.
    Anything the request rules leave over is reported, so the node acts on nothing.
    """
    if _QUESTION_OPENING.match(text):
        return None  # "what did the rerun do?", "how did it do with seed 7?": questions
    raw, _ = parse_message(text)
    followup = read_followup(text)
    if followup is None:
        return None
    # "could you run that again with seed 3?" is a request; any other question stays a question.
    asked = raw.intent == "question"
    if raw.intent not in ("experiment", "unknown") and not asked:
        return None
    if followup.text.strip():
        decision, _ = parse_message(followup.text)
        if decision.intent not in ("experiment", "unknown"):
            return None
        missed = decision.not_understood
        if decision.intent == "unknown" and not decision.request.model_dump(exclude_defaults=True):
            missed = Scanner(followup.text).leftovers()  # only filler words left ("please") is fine
        if asked and missed:
            return None  # "could you check what the rerun did?" is a question
    else:
        decision, missed = IntakeDecision(intent="experiment"), []
    # "no, use rf" declines one offered default and names its replacement: the other defaults stand.
    changes = decision.request.model_dump(exclude_none=True, exclude_defaults=True)
    accept = followup.accept_defaults or (followup.decline_defaults and bool(changes))
    return decision.model_copy(
        update={
            "intent": "experiment",
            "question": None,
            "follow_up": True,
            "more_trials": followup.more_trials,
            "accept_defaults": accept,
            "not_understood": missed,
        }
    )


def _fill_missing(target: dict[str, Any], earlier: dict[str, Any]) -> None:
    # A version belongs to the dataset it was stated with: a bare "version 1" completes the dataset
    # named earlier, but an earlier version never moves to a different (or newly named) dataset.
    other_dataset = target.get("dataset") not in (None, earlier.get("dataset"))
    for key, value in earlier.items():
        if isinstance(value, dict):
            target[key] = {**value, **target[key]}
        elif target.get(key) is None and not (key == "version" and other_dataset):
            target[key] = value


def _intake_reply(messages: Sequence[BaseMessage]) -> AIMessage:
    decision = intake_from_history(messages)
    call = ToolCall(
        name=RECORD_INTAKE,
        args=decision.model_dump(mode="json", exclude_none=True),
        id=f"call_intake_{len(messages)}",
    )
    return AIMessage(content="", tool_calls=[call])


def _describe(decision: IntakeDecision) -> str:
    """Return a plain-text account of a decision (used when no tools are bound)."""
    fields = decision.request.model_dump(exclude_none=True, exclude_defaults=True)
    lines = [
        f"Intent: {decision.intent}"
        + (f" ({decision.forbidden_action})" if decision.forbidden_action else "")
    ]
    lines += [f"- {key}: {value}" for key, value in fields.items()]
    if decision.not_understood:
        lines.append("Not understood: " + "; ".join(decision.not_understood))
    return "\n".join(lines)


def question_text(messages: Sequence[BaseMessage]) -> tuple[int, str]:
    """Return the index and text of the latest human message (a "(label: text)" wrapper removed)."""
    index = max((i for i, m in enumerate(messages) if isinstance(m, HumanMessage)), default=-1)
    text = _text(messages[index]).strip() if index >= 0 else ""
    wrapped = re.fullmatch(r"\((?:[^():]{1,60}):\s*(?P<inner>.+)\)", text, re.DOTALL)
    return index, wrapped["inner"].strip() if wrapped else text


def _question_reply(messages: Sequence[BaseMessage], tools: list[dict[str, Any]]) -> AIMessage:
    """Call the tools a question needs, round by round, then answer from the results."""
    index, question = question_text(messages)
    plan = thread_experiment(parse_question(question), messages[:index])
    later = messages[index + 1 :]
    bound = {t["function"]["name"]: t["function"].get("parameters") or {} for t in tools}
    results = _tool_results(later)
    rounds = sum(1 for m in later if isinstance(m, AIMessage) and m.tool_calls)
    if results:
        more = next_calls(plan, results, set(bound)) if rounds < MAX_ROUNDS else []
        if not more:
            return AIMessage(content=write_answer(resolved(plan, payloads(results)), results))
        return _calls_or_question(more, bound, f"call_{len(messages)}", plan, results)
    return _calls_or_question(first_calls(plan, set(bound)), bound, f"call_{len(messages)}", plan, [])


def _calls_or_question(
    wanted: list[tuple[str, dict[str, Any]]], bound: dict[str, dict[str, Any]], prefix: str,
    plan: QuestionPlan, results: list[tuple[str, ToolMessage]],
) -> AIMessage:  # fmt: skip
    calls: list[ToolCall] = []
    for i, (name, meaning) in enumerate(wanted):
        if name not in bound:
            continue
        args = fit_args(bound[name], meaning)
        missing = [r for r in bound[name].get("required", []) if r not in args]
        if missing:
            return AIMessage(content=_ask_for(name, missing))
        calls.append(ToolCall(name=name, args=args, id=f"{prefix}_{i}"))
    return (
        AIMessage(content="", tool_calls=calls) if calls else AIMessage(content=write_answer(plan, results))
    )


def _ask_for(tool: str, missing: list[str]) -> str:
    if "experiment" in missing:
        return (
            "Which MLflow experiment should I look in? Name it in the question, for example "
            "'best run in experiment smoke' or 'how did the last run in experiment smoke do?'."
        )
    return f"To answer I need {', '.join(missing)} for {tool}; please include it in the question."


def _tool_results(messages: Sequence[BaseMessage]) -> list[tuple[str, ToolMessage]]:
    """Pair each ToolMessage with the name of the tool call it answers."""
    names = {c["id"]: c["name"] for m in messages if isinstance(m, AIMessage) for c in m.tool_calls}
    return [(names.get(m.tool_call_id, m.name or "tool"), m) for m in messages if isinstance(m, ToolMessage)]


def fit_args(parameters: dict[str, Any], meaning: dict[str, Any]) -> dict[str, Any]:
    """Map arguments by meaning onto a tool's JSON-schema properties.

    Handles alias names (``experiment_name``, ``limit``, ``ref`` = name@version), list-typed
    properties, and the two ways to order runs: ``order_by`` = metric name with ``direction``
    (best/asc/desc, the expagent tool) or an MLflow order clause. Without declared properties the
    meaning-named arguments are sent as they are.
    """
    properties: dict[str, Any] = parameters.get("properties") or {}
    present = {k: v for k, v in meaning.items() if v is not None and k != "rank"}
    if not properties:
        return present
    args = _ordering(properties, meaning.get("metric"), meaning.get("rank"))
    for key, value in present.items():
        target = next((a for a in _ARG_ALIASES.get(key, (key,)) if a in properties), None)
        if target is None and key == "name" and "ref" in properties:
            target, value = "ref", f"{value}@{present['version']}" if present.get("version") else value
        if target is not None and target not in args:
            args[target] = [value] if _is_array(properties[target]) and not isinstance(value, list) else value
    return args


def _ordering(properties: dict[str, Any], metric: str | None, rank: str | None) -> dict[str, Any]:
    """Return the ordering arguments for search_runs (empty when nothing is to be ranked)."""
    if "order_by" not in properties or rank is None or (rank != "latest" and not metric):
        return {}
    if rank == "latest":
        return (
            {}
            if "direction" in properties
            else {"order_by": _listed(properties, "attributes.start_time DESC")}
        )
    assert metric is not None
    high_first = (metric_direction(metric) == "maximize") != (rank == "worst")
    if "direction" in properties:
        return {
            "order_by": metric,
            "direction": "best" if rank == "best" else ("desc" if high_first else "asc"),
        }
    return {"order_by": _listed(properties, f"metrics.`{metric}` {'DESC' if high_first else 'ASC'}")}


def _listed(properties: dict[str, Any], value: str) -> str | list[str]:
    return [value] if _is_array(properties["order_by"]) else value


def _is_array(schema: dict[str, Any]) -> bool:
    options = [schema, *schema.get("anyOf", [])]
    return any(option.get("type") == "array" for option in options)
