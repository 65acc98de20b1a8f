"""Which tool calls the offline model makes for a question, round by round.

A question may need more than one round: "why did the last run in smoke fail?" first finds the run
(``search_runs``), then reads its error (``get_run_failure``); "what's the best run so far?" with no
experiment first lists the experiments and, when exactly one holds runs, searches it. Each round is
decided only from the question and the tool results so far, so the model stays deterministic.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, ToolMessage

from agent.grammar import QuestionPlan, parse_question

SemanticCall = tuple[str, dict[str, Any]]
#: at most this many rounds of tool calls per question.
MAX_ROUNDS = 3
#: experiments that hold the harness's or the agent's own bookkeeping, never "your" experiment.
_NOT_YOURS = frozenset({"expagent-evals"})
_FAILED = "attributes.status = 'FAILED'"


def thread_experiment(plan: QuestionPlan, earlier: Sequence[BaseMessage]) -> QuestionPlan:
    """Return ``plan`` with the experiment an earlier message of the thread named, when it needs one."""
    if not plan.needs_experiment:
        return plan
    for message in reversed(earlier):
        if isinstance(message, HumanMessage) and isinstance(message.content, str):
            named = parse_question(message.content).experiment
            if named:
                return replace(plan, experiment=named)
    return plan


def first_calls(plan: QuestionPlan, bound: set[str]) -> list[SemanticCall]:
    """Return (tool, arguments by meaning) for the first round of a question."""
    if plan.needs_experiment and "list_experiments" in bound:
        return [("list_experiments", {})]
    ids = list(plan.run_ids)
    match plan.kind:
        case "note":
            return [("log_note", {"run_id": ids[0], "text": plan.note})]
        case "why_failed" if ids:
            return [("get_run_failure", {"run_id": ids[0]})]
        case "run_logs" if ids:
            return [("get_run_logs", {"run_id": ids[0]})]
        case "why_failed" | "run_logs":
            return [_latest(plan, 5, _FAILED if plan.failed_only else None)]
        case "running":
            return [("list_running", {})]
        case "list_experiments":
            return [("list_experiments", {})]
        case "compare" if ids:
            if "compare_runs" in bound:
                return [("compare_runs", {"run_ids": ids})]
            return [("get_run", {"run_id": run_id}) for run_id in ids]
        case "compare":
            return [_latest(plan, plan.limit + 5)]
        case "list_runs" if not plan.metric:
            return [_latest(plan, plan.limit + 5, list_filter(plan))]
    return legacy_calls(plan)


def list_filter(plan: QuestionPlan) -> str | None:
    """Return the MLflow filter of a listing's status and time window (None: every run)."""
    clauses = [f"attributes.status = '{plan.status}'"] if plan.status else []
    if plan.window is not None:
        clauses.append(plan.window.filter())
    return " and ".join(clauses) or None


def _active_since(plan: QuestionPlan, found: dict[str, list[Any]], limit: int = 5) -> list[str]:
    """Return the experiments with activity inside the plan's window (newest first, at most ``limit``)."""
    assert plan.window is not None
    since = datetime.fromtimestamp(plan.window.since_ms / 1000, UTC)
    names = []
    for experiment in your_experiments(found):
        last = experiment.get("last_activity")
        try:
            when = datetime.fromisoformat(str(last).replace("Z", "+00:00")) if last else None
        except ValueError:
            when = None
        if when is not None and (when.tzinfo is None or when >= since):
            names.append(str(experiment["name"]))
    return names[:limit]


def _latest(plan: QuestionPlan, count: int, filter_string: str | None = None) -> SemanticCall:
    meaning = {"experiment": plan.experiment, "rank": "latest", "max_results": min(count, 100)}
    return ("search_runs", {**meaning, "filter": filter_string})


def legacy_calls(plan: QuestionPlan) -> list[SemanticCall]:
    """Return the calls of the original question kinds (best run, latest run, run IDs, datasets)."""
    if plan.kind == "runs":
        return [("get_run", {"run_id": run_id}) for run_id in plan.run_ids]
    if plan.kind == "list_datasets":
        return [("list_datasets", {})]
    if plan.kind == "describe_dataset" and plan.version is None:
        return [("list_datasets", {})]  # no version named: show the registered versions instead
    if plan.kind == "describe_dataset":
        return [("lookup_dataset", {"name": plan.dataset, "version": plan.version})]
    if plan.kind == "unclear":
        return []
    if plan.kind == "latest_run":
        return [("search_runs", {"experiment": plan.experiment, "rank": "latest", "max_results": 1})]
    rank = "worst" if plan.reverse else "best"
    meaning = {"experiment": plan.experiment, "metric": plan.metric, "rank": rank, "max_results": 20}
    calls: list[SemanticCall] = [("search_runs", meaning)]
    if plan.kind == "best_run" and plan.baseline:
        baseline = {"experiment": plan.experiment, "filter": "tags.`expagent.role` = 'baseline'",
                    "rank": "latest", "max_results": 1}  # fmt: skip
        calls.append(("search_runs", baseline))
    return calls


def payloads(results: Sequence[tuple[str, ToolMessage]]) -> dict[str, list[Any]]:
    """Return the parsed JSON results by tool name (failed calls left out)."""
    found: dict[str, list[Any]] = {}
    for name, message in results:
        if message.status == "error" or not isinstance(message.content, str):
            continue
        try:
            parsed = json.loads(message.content)
        except json.JSONDecodeError:
            continue
        if (
            isinstance(parsed, dict)
            and not parsed.get("error")
            and parsed.get("verdict") not in ("reject", "halt")
        ):
            found.setdefault(name, []).append(parsed)
    return found


def your_experiments(found: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Return the listed experiments that hold runs (the harness's own experiment left out)."""
    listed = [e for p in found.get("list_experiments", []) for e in p.get("experiments", [])]
    return [e for e in listed if e.get("runs") and e.get("name") not in _NOT_YOURS]


def resolved(plan: QuestionPlan, found: dict[str, list[Any]]) -> QuestionPlan:
    """Return ``plan`` with the experiment the lookups settled on (the only one with runs)."""
    if not plan.needs_experiment:
        return plan
    searched = [p.get("experiment") for p in found.get("search_runs", []) if p.get("experiment")]
    if searched:
        return replace(plan, experiment=searched[0])
    candidates = your_experiments(found)
    return replace(plan, experiment=candidates[0]["name"]) if len(candidates) == 1 else plan


def training_runs(found: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Return the searched runs, newest first, without the agent's session runs."""
    runs = [r for p in found.get("search_runs", []) for r in p.get("runs", [])]
    return [r for r in runs if r.get("role") != "session"]


def next_calls(
    plan: QuestionPlan, results: Sequence[tuple[str, ToolMessage]], bound: set[str]
) -> list[SemanticCall]:
    """Return the next round of calls the results make possible, or [] when it is time to answer."""
    found = payloads(results)
    settled = resolved(plan, found)
    if plan.needs_experiment and "search_runs" not in found and settled.experiment:
        return first_calls(settled, bound)
    if plan.needs_experiment and plan.window is not None and "search_runs" not in found and found:
        # "any failures today?": every experiment active in the window, not one named experiment
        return [_latest(replace(plan, experiment=name), plan.limit + 5, list_filter(plan))
                for name in _active_since(plan, found)]  # fmt: skip
    if plan.run_ids or "search_runs" not in found:
        return []
    runs = training_runs(found)
    if plan.kind == "why_failed" and runs and "get_run_failure" not in found:
        return [("get_run_failure", {"run_id": runs[0]["run_id"]})]
    if plan.kind == "run_logs" and runs and "get_run_logs" not in found:
        return [("get_run_logs", {"run_id": runs[0]["run_id"]})]
    if plan.kind == "compare" and len(runs) >= 2 and "compare_runs" not in found and "compare_runs" in bound:
        return [("compare_runs", {"run_ids": [r["run_id"] for r in runs[: plan.limit]]})]
    return []
