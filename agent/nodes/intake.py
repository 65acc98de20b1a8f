"""intake: turn the conversation into an IntakeDecision, then route the turn.

The chat model must call ``record_intake`` (schema: ``IntakeDecision``); everything after that is code:
merging the draft with the one an earlier turn left incomplete, asking for missing inputs, checking
the dataset through the guard, and completing the request with stated defaults.
"""

from __future__ import annotations

import re
import time
from typing import Any, Literal, get_args

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langgraph.runtime import Runtime
from langgraph.types import Command, Overwrite
from pydantic import ValidationError

from agent.grammar.asides import is_aside, is_grammar_note, pasted_details
from agent.grammar.followups import answer_word
from agent.grammar.forbidden import requested_forbidden_action
from agent.grammar.intent import asks_question
from agent.grammar.notes import note_request
from agent.grammar.relative import FAMILY_DEFAULTS, read_relative, resolve
from agent.grammar.relative import describe as describe_change
from agent.grammar.unsupported import unsupported_note
from agent.model_wire import endpoint_of, invoke_model
from agent.projects import project_facts
from agent.prompts import render_prompt
from agent.references import RunReference, resolve_runs
from agent.request import complete_request, merge_drafts, metric_problem, missing_inputs
from agent.run_bases import named_run, request_of_run
from agent.state import (
    RECORD_INTAKE,
    AgentState,
    ExperimentRequestDraft,
    ForbiddenAction,
    IntakeDecision,
    PolicyEvent,
    Refusal,
    ThreadMemory,
    Usage,
    intake_tool_schema,
)
from agent.tokens import trim_history, usage_of
from agent.tool_calls import audit_refusal, call_tool, check_data
from agent.turn_context import TurnContext, turn_context
from tools.core.entrypoints import EntryPointRegistry
from tools.core.redact import redact, redact_text
from tools.core.specs import CLASSIFICATION_METRICS, REGRESSION_METRICS, ModelFamily

_MAX_ATTEMPTS = 2
Route = Literal["plan", "answer_question", "refuse", "rollback", "respond"]


def intake(state: AgentState, runtime: Runtime[TurnContext]) -> Command[Route]:
    """Classify the latest message and route: plan, answer, refuse, cancel, or ask/explain."""
    ctx = turn_context(runtime)
    update = turn_reset()
    if state.get("directive") == "cancel":
        update["intake"] = IntakeDecision(intent="cancel")
        return Command(goto="rollback", update=update)
    memory = state.get("memory") or ThreadMemory()
    answer = answer_word(_last_user_text(state)) if state.get("draft") is not None else None
    if answer is not None and memory.proposal is not None:
        # "yes" / "no" to the defaults proposed last turn: no model needed to read it.
        return _answer_proposal(ctx, state, memory, answer == "yes", update)
    decision, usage, events = classify(ctx, state)
    decision = second_opinion(decision, _last_user_text(state))
    decision = with_thread_references(decision, _last_user_text(state), memory)
    update.update(intake=decision, usage=usage)
    if events:
        update["policy_events"] = Overwrite(events)
    if decision.intent == "experiment":
        return route_experiment(ctx, state, decision, update)
    goto: Route = {"question": "answer_question", "cancel": "rollback", "forbidden": "refuse"}.get(
        decision.intent, "respond"
    )  # type: ignore[assignment]
    return Command(goto=goto, update=update)


def _answer_proposal(
    ctx: TurnContext, state: AgentState, memory: ThreadMemory, accepted: bool, update: dict[str, Any]
) -> Command[Route]:
    """Take (yes) or drop (no) the defaults proposed for the pending request."""
    draft = state.get("draft")
    assert draft is not None and memory.proposal is not None
    decision = IntakeDecision(intent="experiment", follow_up=True, accept_defaults=accepted)
    update["intake"] = decision
    if accepted:
        return _route_draft(ctx, fill_from(draft, memory.proposal), decision, memory, update)
    update["memory"] = memory.model_copy(update={"proposal": None})
    update["asked_for"] = missing_inputs(draft)
    update["request_problems"] = ["OK, I will not use those defaults; nothing was launched."]
    return Command(goto="respond", update=update)


_RUN_ID_IN_TEXT = re.compile(r"\b[0-9a-f]{6,32}\b", re.IGNORECASE)


def with_thread_references(decision: IntakeDecision, text: str, memory: ThreadMemory) -> IntakeDecision:
    """Name the thread's runs in a question that points at them ("why did it fail?", "how did it do?",
    "logs of the baseline", "compare the last two"), so whatever model answers reads the run IDs.

    Only questions (or a message nothing else understood that ends with "?") in a thread that has
    runs, and only when the message names no run ID itself; the IDs come from the thread's memory
    (``agent.references``), never from the model.
    """
    if not memory.run_ids or decision.intent not in ("question", "unknown") or _RUN_ID_IN_TEXT.search(text):
        return decision
    if decision.intent == "unknown" and not (text.rstrip().endswith("?") or asks_question(text, text, False)):
        return decision  # "compare them" asks; "blorp it" does not
    found = resolve_runs(text, memory)
    if not isinstance(found, RunReference):
        return decision
    runs = " and ".join(f"run {run_id}" for run_id in found.run_ids)
    question = f"{text.strip()} ({found.phrase}: {runs})"
    return IntakeDecision(intent="question", question=redact_text(question[:2000]))


def second_opinion(decision: IntakeDecision, text: str) -> IntakeDecision:
    """Refuse what the user's own words ask to deploy, whatever the model classified.

    The chat model's classification is one opinion; ``grammar.forbidden`` reading the sentence is the
    other. Either one seeing a request to deploy, promote, stage, register or serve makes it a refusal.
    A request for a change expagent has no tool for (``grammar.unsupported``: deleting runs, editing
    data, ...) is never taken as an experiment or a cancel, whatever the model classified.
    """
    if decision.intent == "forbidden":
        return decision
    action = requested_forbidden_action(text)
    if action is not None:
        return decision.model_copy(update={"intent": "forbidden", "forbidden_action": action})
    if note_request(text) is not None and decision.intent in ("experiment", "cancel", "unknown"):
        # a note on a named run is answered with log_note on the question path, never trained on
        return IntakeDecision(intent="question", question=redact_text(text.strip()[:2000]))
    note = unsupported_note(text) if decision.intent in ("experiment", "cancel") else None
    if note is not None:  # a change there is no tool for: nothing of the message is acted on
        return IntakeDecision(intent="unknown", not_understood=[note])
    return decision


def _last_user_text(state: AgentState) -> str:
    for message in reversed(state.get("messages", [])):
        if getattr(message, "type", "") == "human":
            return str(message.content)
    return ""


def turn_reset() -> dict[str, Any]:
    """Return the update that clears every per-turn field (``messages`` and ``draft`` span turns)."""
    return {
        "directive": None,
        "turn_started_at": time.time(),
        "intake": None,
        "request": None,
        "asked_for": [],
        "request_problems": [],
        "refusal": None,
        "plan": None,
        "approval_decision": None,
        "approver": None,
        "runs": Overwrite([]),
        "baseline_run_id": None,
        "best_run_id": None,
        "execution_notes": [],
        "policy_events": Overwrite([]),
        "verification": None,
        "rollback": None,
        "tool_calls": [],
        "model_answer": None,
        "answer": None,
        "usage": Usage(),
    }


# ---- the model call -------------------------------------------------------------------------------


def classify(ctx: TurnContext, state: AgentState) -> tuple[IntakeDecision, Usage, list[PolicyEvent]]:
    """Ask the model for ``record_intake``; one retry with the validation error, else 'unknown'.

    A call to a tool the intake does not offer is a policy event (audited, refused); one whose name
    asks to deploy, promote, stage, serve or register makes the turn a refusal at once.
    """
    settings = ctx.tools.settings
    memory = state.get("memory") or ThreadMemory()
    system = SystemMessage(
        render_prompt("intake", **_prompt_vars(ctx), thread_memory=memory.describe() or "nothing yet")
    )
    prompt: list[BaseMessage] = trim_history(
        [system, *state.get("messages", [])], settings.context_token_budget, settings.model
    )
    model = ctx.model.bind_tools([intake_tool_schema()], tool_choice=RECORD_INTAKE)
    usage = Usage()
    problem = "the model did not call record_intake"
    events: list[PolicyEvent] = []
    for _ in range(_MAX_ATTEMPTS):
        reply = invoke_model(model, prompt, endpoint_of(ctx.model))
        usage = usage.add(_usage(reply, prompt, settings.model))
        foreign = _foreign_calls(ctx, reply)
        events += foreign
        names = [str(c["name"]) for c in reply.tool_calls if c["name"] != RECORD_INTAKE]
        forbidden = next((a for n in names if (a := forbidden_tool_action(n))), None)
        if forbidden is not None:
            return IntakeDecision(intent="forbidden", forbidden_action=forbidden), usage, events
        decision, problem = _parse(reply)
        if decision is not None:
            return decision, usage, events
        prompt = [*prompt, reply, *_retry_messages(reply, problem)]
    return IntakeDecision(intent="unknown", not_understood=[f"(internal) {problem}"]), usage, events


def _foreign_calls(ctx: TurnContext, reply: AIMessage) -> list[PolicyEvent]:
    """Audit every call of the reply to a tool other than ``record_intake``; return the events."""
    names = [str(c["name"]) for c in reply.tool_calls] + [
        str(c.get("name")) for c in reply.invalid_tool_calls
    ]
    return [
        audit_refusal(
            ctx.tools,
            f"tool:{name[:80]}",
            "unknown_tool",
            f"the model called {name[:80]!r}, which is not a tool it may use here; refused",
            {"tool": name[:200]},
        )
        for name in names
        if name != RECORD_INTAKE
    ]


def forbidden_tool_action(name: str) -> ForbiddenAction | None:
    """Return what a tool name asks for when it names a forbidden action (``deploy_model``,
    ``transition_model_version_stage``, ``create_registered_model``, ``setAlias``), else None."""
    words = set(re.sub(r"[^a-z]+", " ", re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).lower()).split())
    for action, tokens in _FORBIDDEN_TOOL_WORDS:
        if words & tokens:
            return action
    return None


_FORBIDDEN_TOOL_WORDS: tuple[tuple[ForbiddenAction, frozenset[str]], ...] = (
    ("deploy", frozenset({"deploy", "deployment", "deployments", "rollout", "release", "ship"})),
    ("stage", frozenset({"stage", "stages", "staging", "transition"})),
    ("promote", frozenset({"promote", "promotion", "alias", "aliases", "champion", "production", "prod"})),
    ("serve", frozenset({"serve", "serving", "endpoint", "endpoints", "inference"})),
    ("register_model", frozenset({"register", "registered", "registry", "publish"})),
)


def _prompt_vars(ctx: TurnContext) -> dict[str, str]:
    refs = [r.ref for r in ctx.tools.registry.list("validated")]
    return {
        "model_families": ", ".join(get_args(ModelFamily)),
        "metrics": ", ".join(sorted(CLASSIFICATION_METRICS | REGRESSION_METRICS)),
        "datasets": ", ".join(refs) or "none",
        "projects": ", ".join(
            f"{r.ref} ({r.status})" for r in EntryPointRegistry.open(ctx.tools.settings).list()
        )
        or "none",
    }


def _usage(reply: AIMessage, prompt: list[BaseMessage], model: str) -> Usage:
    prompt_tokens, completion_tokens = usage_of(reply, prompt, model)
    return Usage(model_calls=1, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)


def _parse(reply: AIMessage) -> tuple[IntakeDecision | None, str]:
    calls = [c for c in reply.tool_calls if c["name"] == RECORD_INTAKE]
    if not calls:
        broken = [c for c in reply.invalid_tool_calls if c.get("name") == RECORD_INTAKE]
        if broken:
            return (
                None,
                f"the record_intake arguments are not valid JSON ({broken[0].get('error') or 'parse error'})",
            )
        others = sorted(
            {str(c["name"]) for c in reply.tool_calls}
            | {str(c.get("name")) for c in reply.invalid_tool_calls}
        )
        return None, f"expected a record_intake call, got {', '.join(others) or 'plain text'}"
    try:
        # The model's strings are untrusted: secrets and personal data leave them before anything
        # (an experiment name, a session run, a checkpoint) can store them.
        return IntakeDecision.model_validate(redact(calls[0]["args"])), ""
    except ValidationError as exc:
        return None, f"invalid record_intake arguments: {exc.errors(include_url=False)}"


def _retry_messages(reply: AIMessage, problem: str) -> list[BaseMessage]:
    """Return what answers a reply that recorded no decision, in a sequence the OpenAI API accepts.

    Every tool call of the reply (valid or not) gets a tool message with its own ID; a reply without
    tool calls gets a user message instead (a tool message must answer a call).
    """
    ids = [c.get("id") for c in reply.tool_calls] + [c.get("id") for c in reply.invalid_tool_calls]
    text = f"Error: {problem}. Call record_intake exactly once with valid JSON arguments."
    if not ids:
        return [HumanMessage(text)]
    return [ToolMessage(text, tool_call_id=str(call_id or f"call_{i}")) for i, call_id in enumerate(ids)]


# ---- experiment requests --------------------------------------------------------------------------


def route_experiment(
    ctx: TurnContext, state: AgentState, decision: IntakeDecision, update: dict[str, Any]
) -> Command[Route]:
    """Complete the request, ask for what is missing, or refuse unusable data.

    A follow-up ("rerun with seed 7", "3 more trials") changes the thread's last request (the thread
    memory); fields answering a pending question complete the pending draft, with the defaults the
    agent proposed for what is still missing. A follow-up naming another run ("rerun the best one")
    starts from that run's request in MLflow; relative changes ("double the trees") become exact
    values. A message with any part not understood changes nothing.
    """
    memory = state.get("memory") or ThreadMemory()
    pending = state.get("draft")
    if _unmapped(decision) and (
        decision.follow_up
        or decision.more_trials is not None
        or decision.accept_defaults
        or (_would_launch(state, decision, memory) and _in_request_sentence(state, decision))
    ):
        return unclear(update, decision, pending or memory.request)
    if decision.more_trials is not None:
        return _more_trials(ctx, memory, decision, update)
    named = named_run(_last_user_text(state), memory) if decision.follow_up and pending is None else None
    if named is not None:
        # "rerun the best one with seed 3", "same as run 8788935a but …": that run's request, from MLflow
        base = request_of_run(ctx.tools, named, memory) if isinstance(named, str) else named.message
        if isinstance(base, str):
            update["intake"] = decision.model_copy(update={"intent": "unknown"})
            update.update(request_problems=[base + ". Nothing was launched or changed."], asked_for=[])
            return Command(goto="respond", update=update)
        draft = merge_followup(base, decision.request)
        decision = decision.model_copy(
            update={"readings": [*decision.readings, f"the request of run {named}"]}
        )
        update["intake"] = decision
    elif decision.follow_up and pending is None and memory.request is not None:
        draft = merge_followup(memory.request, decision.request)
    else:
        draft = merge_drafts(pending, decision.request)
        if pending is not None and memory.proposal is not None and decision.accept_defaults:
            draft = fill_from(draft, memory.proposal)  # "ok, v1" / "whatever model is fastest"
    changed = relative_changes(draft, _last_user_text(state), pending is None and memory.request is None)
    if isinstance(changed, str):
        update["intake"] = decision.model_copy(update={"intent": "unknown"})
        update.update(request_problems=[changed + ". Nothing was launched or changed."], asked_for=[])
        return Command(goto="respond", update=update)
    draft, readings = changed
    if readings:
        decision = decision.model_copy(update={"readings": [*decision.readings, *readings]})
        update["intake"] = decision
    return _route_draft(ctx, draft, decision, memory, update)


def relative_changes(
    draft: ExperimentRequestDraft, text: str, fresh: bool
) -> tuple[ExperimentRequestDraft, list[str]] | str:
    """Resolve "double the trees" / "a bit deeper" in the user's words to exact values.

    The base is the param as the request sets it, else the family's default; with no base value (or
    nothing earlier in the thread to change) the answer is the question to ask, and nothing runs.
    """
    changes, _ = read_relative(text)
    if not changes:
        return draft, []
    if fresh and not draft.dataset:
        return (
            f"'{changes[0].phrase}': there is no earlier request in this thread to change; name the request"
        )
    params = dict(draft.params)
    readings = []
    for change in changes:
        resolved = resolve(change, draft.model_family, params)
        if isinstance(resolved, str):
            return resolved
        name, value = resolved
        old = params.get(name, f"{relative_default(draft.model_family, name)} ({draft.model_family} default)")
        params[name] = value
        readings.append(describe_change(change, name, old, value))
    return draft.model_copy(update={"params": params}), readings


def _route_draft(
    ctx: TurnContext,
    draft: ExperimentRequestDraft,
    decision: IntakeDecision,
    memory: ThreadMemory,
    update: dict[str, Any],
) -> Command[Route]:
    if draft.dataset_uri:
        update["intake"] = decision.model_copy(update={"intent": "forbidden", "forbidden_action": "raw_data"})
        update["draft"] = None
        return Command(goto="refuse", update=update)
    update["draft"] = draft
    registry = ctx.tools.registry
    if draft.dataset and not registry.versions(draft.dataset):
        refused = _refuse_data(ctx, draft, update)
        assert refused is not None, "the guard rejects a dataset with no registered version"
        return refused
    missing = missing_inputs(draft)
    if draft.dataset and draft.version and draft.version not in registry.versions(draft.dataset):
        missing = ["version", *[m for m in missing if m != "version"]]
        update["request_problems"] = [f"{draft.dataset}@{draft.version} is not registered."]
    if missing:
        if "version" in missing and draft.dataset:
            update["request_problems"] = [*update["request_problems"], _versions_hint(ctx, draft.dataset)]
        proposal = propose_defaults(ctx, draft, missing)
        update["memory"] = memory.model_copy(update={"proposal": proposal})
        if proposal is not None:
            update["request_problems"] = [
                *update["request_problems"],
                proposal_text(draft, proposal, missing),
            ]
        update["asked_for"] = missing
        return Command(goto="respond", update=update)
    update["memory"] = memory.model_copy(update={"proposal": None})
    return _check_dataset(ctx, draft, update)


def _unmapped(decision: IntakeDecision) -> list[str]:
    """Return the parts of the message nothing was mapped to (a note that a link was ignored is fine)."""
    return [m for m in decision.not_understood if not m.startswith("ignored a link")]


def _in_request_sentence(state: AgentState, decision: IntakeDecision) -> bool:
    """Return whether an unmapped part asks for something: it is in the request's sentence, or no aside.

    "Train … on wine@1 … with extra sparkle" is half understood, and so is "… in experiment x. Don't log
    anything to MLflow."; a request followed by an aside in a sentence of its own ("… Thanks a lot!",
    "… If anything goes wrong, my e-mail is …") is not (``agent.grammar.asides``: an allowlist).
    """
    text = _last_user_text(state)
    sentences = [s for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]
    dataset = decision.request.dataset
    main = next((s for s in sentences if dataset and dataset.lower() in s.lower()), None)
    if main is None or len(sentences) == 1:
        return True
    details = pasted_details(decision.not_understood, text)
    for part in _unmapped(decision):
        if is_grammar_note(part):
            continue  # contact details or a key the grammar removed: ignored, never used
        if part.lower() in main.lower() or not is_aside(part, details):
            return True
    return False


def _would_launch(state: AgentState, decision: IntakeDecision, memory: ThreadMemory) -> bool:
    """Return whether the message, as understood, would complete a request (and so launch runs)."""
    base = state.get("draft")
    draft = merge_drafts(base, decision.request)
    if base is not None and memory.proposal is not None and decision.accept_defaults:
        draft = fill_from(draft, memory.proposal)
    return not missing_inputs(draft)


def merge_followup(last: ExperimentRequestDraft, change: ExperimentRequestDraft) -> ExperimentRequestDraft:
    """Return the thread's last request with only what the follow-up changes (params are added to)."""
    merged = merge_drafts(last, change)
    if change.entry_point is not None and change.entry_point != last.entry_point:
        # Another project ("use my project mlp-tabular@1"): the last request's params and metric were
        # another code's; only what this message says is kept (the metric then comes from the project).
        return merged.model_copy(
            update={"params": change.params, "search_space": change.search_space, "metric": change.metric}
        )
    return merged.model_copy(
        update={
            "params": {**last.params, **change.params},
            "search_space": {**last.search_space, **change.search_space},
        }
    )


def relative_default(family: str | None, name: str) -> object:
    """Return the family's default of ``name`` (what a relative change starts from)."""
    return FAMILY_DEFAULTS.get(family or "", {}).get(name)


def fill_from(draft: ExperimentRequestDraft, proposal: ExperimentRequestDraft) -> ExperimentRequestDraft:
    """Return ``draft`` with its still-empty fields taken from the proposed defaults."""
    offered = {k: v for k, v in proposal.model_dump(exclude_defaults=True).items() if v is not None}
    return draft.model_copy(update={k: v for k, v in offered.items() if getattr(draft, k) is None})


#: family proposed when the user did not name one: the fastest to train on small tabular data.
DEFAULT_FAMILY = "lightgbm"
_DEFAULT_METRIC = {"classification": "accuracy", "regression": "rmse"}


def propose_defaults(
    ctx: TurnContext, draft: ExperimentRequestDraft, missing: list[str]
) -> ExperimentRequestDraft | None:
    """Return defaults for the missing inputs that have a safe one (family, metric, experiment).

    A dataset and its version never get a default; the metric needs the dataset's task.
    """
    if not draft.dataset:
        return None
    record = ctx.tools.registry.latest_validated(draft.dataset)
    task = record.schema.task if record is not None else None
    offered: dict[str, Any] = {}
    if "model_family" in missing:
        offered["model_family"] = DEFAULT_FAMILY
    if "metric" in missing and task in _DEFAULT_METRIC:
        offered["metric"] = _DEFAULT_METRIC[task]
    if "experiment" in missing:
        kind = "tuning" if draft.trials else "baseline"
        offered["experiment"] = f"{draft.dataset}-{kind}"
    return ExperimentRequestDraft(**offered) if offered else None


def proposal_text(draft: ExperimentRequestDraft, proposal: ExperimentRequestDraft, missing: list[str]) -> str:
    """Return the one question: what has no default, and the defaults offered for the rest."""
    parts = []
    if proposal.model_family:
        parts.append(str(proposal.model_family))
    if proposal.metric:
        parts.append(f"metric {proposal.metric}")
    if proposal.experiment:
        parts.append(f"experiment {proposal.experiment}")
    no_default = [m for m in missing if getattr(proposal, m, None) is None]
    ask = f"Which {_join_words(no_default)} should I use? " if no_default else ""
    return (
        f"{ask}For the rest I propose: {', '.join(parts)} — ok? Reply 'yes' to take these defaults"
        + (" together with the " + _join_words(no_default) if no_default else "")
        + ", or name what you want instead."
    )


def _join_words(names: list[str]) -> str:
    words = [n.replace("model_family", "model family").replace("version", "dataset version") for n in names]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def unclear(
    update: dict[str, Any], decision: IntakeDecision, known: ExperimentRequestDraft | None
) -> Command[Route]:
    """Act on nothing: restate what was understood, name what was not, and ask (state unchanged)."""
    understood = decision.request.model_dump(exclude_none=True, exclude_defaults=True)
    if decision.more_trials is not None:
        understood["more trials"] = decision.more_trials
    said = ", ".join(f"{k}={v}" for k, v in understood.items()) or "nothing I can act on"
    missed = "; ".join(f"'{m}'" for m in _unmapped(decision))
    update["intake"] = decision.model_copy(update={"intent": "unknown"})
    update["request_problems"] = [
        f"I understood: {said}. I did not understand: {missed}. Nothing was launched or changed; "
        "please rephrase that part (or leave it out) and I will go ahead."
    ]
    update["asked_for"] = []
    return Command(goto="respond", update=update)


def _more_trials(
    ctx: TurnContext, memory: ThreadMemory, decision: IntakeDecision, update: dict[str, Any]
) -> Command[Route]:
    """Continue the thread's last request with N more tuning trials and no new baseline."""
    if memory.request is None or memory.baseline_run_id is None:
        update["intake"] = decision.model_copy(update={"intent": "unknown"})
        update["request_problems"] = [
            f"There is no earlier run in this thread to add {decision.more_trials} trials to. Name the "
            "request, e.g. 'tune lightgbm on wine@1 for 5 trials, metric accuracy, experiment x'."
        ]
        return Command(goto="respond", update=update)
    draft = merge_followup(memory.request, decision.request).model_copy(
        update={"trials": max(1, decision.more_trials or 1)}
    )
    update["draft"] = draft
    command = _check_dataset(ctx, draft, update)
    request = update.get("request")
    if request is not None:
        update["request"] = request.model_copy(
            update={"continues_from": memory.baseline_run_id, "trials_before": memory.trials_done,
                    "warm_start": False}
        )  # fmt: skip
    return command


def _check_dataset(ctx: TurnContext, draft: ExperimentRequestDraft, update: dict[str, Any]) -> Command[Route]:
    refused = _refuse_data(ctx, draft, update)
    if refused is not None:
        return refused
    direction = None
    if draft.entry_point is not None:  # the user's own project: usable, and what it says of the metric
        facts = project_facts(ctx.tools.settings, draft, lambda text: ctx.progress("status", text))
        if facts.problem is not None:
            return _project_problem(ctx, draft, facts.problem, update)
        draft, direction = facts.draft, facts.direction
    assert draft.dataset and draft.version and draft.metric
    lookup = call_tool(ctx.tools, "lookup_dataset", {"name": draft.dataset, "version": draft.version})
    if not lookup.ok:
        update["request_problems"] = [f"The dataset could not be looked up: {lookup.problem}"]
        update["policy_events"] = Overwrite(lookup.policy_events())
        return Command(goto="respond", update=update)
    task = lookup.data.get("schema", {}).get("task")
    problem = metric_problem(draft.metric, task)
    if problem:
        update.update(asked_for=["metric"], request_problems=[problem])
        return Command(goto="respond", update=update)
    request = complete_request(draft, ctx.tools.settings, task, lookup.data.get("sha256"), direction)
    update.update(request=request, draft=None)
    return Command(goto="plan", update=update)


def _project_problem(
    ctx: TurnContext, draft: ExperimentRequestDraft, problem: str, update: dict[str, Any]
) -> Command[Route]:
    """Answer that the named project cannot be trained from (audited like the guard's rejection)."""
    assert draft.entry_point is not None
    event = audit_refusal(
        ctx.tools,
        "start_training_run",
        "entry_points",
        problem,
        {"entry_point": draft.entry_point.model_dump()},
    )
    update["policy_events"] = Overwrite([event])
    update["request_problems"] = [f"Your project cannot be used, so nothing was launched: {problem}"]
    update.update(asked_for=[], draft=None)
    return Command(goto="respond", update=update)


def _versions_hint(ctx: TurnContext, dataset: str) -> str:
    versions = ctx.tools.registry.versions(dataset)
    return f"Registered versions of {dataset}: {', '.join(versions)}." if versions else ""


def _refuse_data(
    ctx: TurnContext, draft: ExperimentRequestDraft, update: dict[str, Any]
) -> Command[Route] | None:
    """Refuse data the guard rejects (unregistered, raw, deprecated, checksum); None if it is usable."""
    assert draft.dataset
    events = check_data(ctx.tools, draft.dataset, draft.version or "latest")
    if not events:
        return None
    update["refusal"] = Refusal(
        action="raw_data",
        rule=events[0].rule or "versioned_data",
        reason="I only train on curated, versioned datasets from the registry. " + events[0].reason,
        alternatives=data_alternatives(ctx),
    )
    update["policy_events"] = Overwrite(events)
    update["draft"] = None
    return Command(goto="respond", update=update)


def data_alternatives(ctx: TurnContext) -> list[str]:
    """Return what a user can do instead of training on unusable data."""
    refs = [r.ref for r in ctx.tools.registry.list("validated")]
    return [
        "Ask Data Engineering to validate and register the data, then request it as NAME@VERSION "
        "(`expagent datasets register FILE --name … --version … --target …` registers a local CSV).",
        "Train on a validated dataset that is already registered: " + (", ".join(refs) or "none yet") + ".",
    ]
