"""Answers to the questions about run history: failures, logs, what runs now, experiments, comparisons.

Written by the offline model from the read-only tools' results (``agent.offline_questions.payloads``);
only values those results hold appear, and free text from them (errors, logs) is shown as quoted data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent.grammar import QuestionPlan
from agent.offline_questions import training_runs, your_experiments
from tools.core.specs import metric_direction

Found = dict[str, list[Any]]
_MAX_ROWS = 20
_MAX_LOG_CHARS = 2500
_KNOWN_METRICS = frozenset({"roc_auc", "accuracy", "f1", "log_loss", "rmse", "mae", "r2"})


def _cell(value: Any, limit: int = 80) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    text = str(value if value is not None else "—").replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _link(item: dict[str, Any]) -> str:
    url = str(item.get("ui_url") or "")
    return f" ([MLflow UI]({url}))" if url.startswith(("http://", "https://")) and " " not in url else ""


def _when(value: Any) -> str:
    return str(value or "—").replace("T", " ")[:16] + (" UTC" if value else "")


def _fenced(text: str) -> str:
    text = text.replace("```", "'''")
    if len(text) > _MAX_LOG_CHARS:
        text = "…" + text[-_MAX_LOG_CHARS:]
    return f"```\n{text}\n```"


def _where(plan: QuestionPlan) -> str:
    return f" in experiment `{_cell(plan.experiment)}`" if plan.experiment else ""


def answer_note(plan: QuestionPlan, found: Found) -> str:
    notes = found.get("log_note", [])
    if not notes:
        return ""
    note = notes[0]
    return (
        f"Added your note to the description of run `{note['run_id']}` (MLflow `{note.get('tag')}`, shown as "
        f"the run's description in the MLflow UI): “{_cell(note.get('text'), 300)}”. Nothing else changed."
    )


def answer_failure(plan: QuestionPlan, found: Found) -> str:
    failures = found.get("get_run_failure", [])
    if not failures:
        which = "failed runs" if plan.failed_only else "runs"
        return f"No {which} were found{_where(plan)}." if "search_runs" in found else ""
    f = failures[0]
    name = f" ({_cell(f.get('name'))})" if f.get("name") else ""
    head = f"Run `{f['run_id']}`{name}{_link(f)}"
    if not f.get("failed"):
        return f"{head} did not fail: its status is {f.get('status')}."
    error = f": `{_cell(f['exception'], 300)}`" if f.get("exception") else "."
    lines = [f"{head} ended **{f.get('status')}**{error}"]
    if f.get("cancelled_by"):
        lines.append(
            f"Stop record: by {_cell(f['cancelled_by'])}, reason: {_cell(f.get('cancel_reason'), 200)}."
        )
    if f.get("details"):
        lines.append(f"Last lines of {f.get('source')}:\n\n" + _fenced(str(f["details"])))
    elif not f.get("exception"):
        lines.append(
            "MLflow holds no traceback or log for it; its description says: " + _cell(f.get("note"), 300)
        )
    return "\n\n".join(lines)


def answer_logs(plan: QuestionPlan, found: Found) -> str:
    logs = found.get("get_run_logs", [])
    if not logs:
        return f"No runs were found{_where(plan)}." if "search_runs" in found else ""
    log = logs[0]
    head = f"Run `{log['run_id']}`{_link(log)} (status {log.get('status')}"
    head += f", job `{log['job_id']}`)" if log.get("job_id") else ")"
    if not log.get("text"):
        return f"{head} has no training log: its job files are gone and MLflow kept no log artifact."
    count = len(str(log["text"]).splitlines())
    return f"{head} — the last {count} lines of its training log ({log.get('source')}):\n\n" + _fenced(
        str(log["text"])
    )


def answer_running(plan: QuestionPlan, found: Found) -> str:
    listings = found.get("list_running", [])
    if not listings:
        return ""
    runs = listings[0].get("runs", [])
    if not runs:
        return "Nothing is running right now: no run in this workspace's MLflow store is RUNNING."
    rows = [
        f"| `{r['run_id']}` | {_cell(r.get('experiment'))} | {_cell(r.get('role'))} | {_cell(r.get('name'))} "
        f"| {_when(r.get('start_time'))} | {_cell(r.get('requester'))} | {_cell(r.get('job_id'))} |"
        for r in runs[:_MAX_ROWS]
    ]
    table = [
        "| run ID | experiment | role | name | started | requester | job |",
        "|---|---|---|---|---|---|---|",
    ]
    return f"{len(runs)} run(s) running now:\n\n" + "\n".join([*table, *rows])


def answer_experiments(plan: QuestionPlan, found: Found) -> str:
    listings = found.get("list_experiments", [])
    if not listings:
        return ""
    experiments = listings[0].get("experiments", [])
    if not experiments:
        return "There are no MLflow experiments in this workspace yet."
    rows = [
        f"| {_cell(e.get('name'))} | {e.get('runs', 0)} | {e.get('running', 0)} "
        f"| {_when(e.get('last_activity'))} |"
        for e in experiments[:_MAX_ROWS]
    ]
    table = "\n".join(["| experiment | runs | running | last activity |", "|---|---|---|---|", *rows])
    if plan.kind == "list_experiments":
        return f"{len(experiments)} experiment(s), most recently active first:\n\n{table}"
    yours = your_experiments(found)
    names = ", ".join(f"`{_cell(e['name'])}`" for e in yours) or "none with runs"
    example = _cell(yours[0]["name"]) if yours else "smoke"
    return (
        f"Which experiment do you mean? Experiments with runs: {names}. Ask again naming one, e.g. "
        f"“best run in experiment {example}”.\n\n{table}"
    )


def answer_compare(plan: QuestionPlan, found: Found) -> str:
    comparisons = found.get("compare_runs", [])
    if not comparisons:
        runs = training_runs(found)
        if "search_runs" in found and len(runs) < 2:
            return f"There are fewer than two runs to compare{_where(plan)} ({len(runs)} found)."
        return ""
    c = comparisons[0]
    ids = [r["run_id"] for r in c.get("runs", [])]
    short = [f"`{i[:8]}`" for i in ids]
    lines = [f"Comparison of {len(ids)} runs{_where(plan)}: " + ", ".join(f"`{i}`" for i in ids) + "."]
    lines += [f"**Warning:** {w}" for w in c.get("warnings", [])]
    differing = c.get("differing_params", {})
    if differing:
        rows = [
            f"| {_cell(k)} | " + " | ".join(_cell(v.get(i)) for i in ids) + " |"
            for k, v in sorted(differing.items())
        ]
        lines.append(
            "\n".join([f"| param | {' | '.join(short)} |", "|---|" + "---|" * len(ids), *rows[:_MAX_ROWS]])
        )
    else:
        lines.append("Their params are identical.")
    metrics = c.get("metrics", {})
    if metrics:
        rows = [_metric_row(k, v, ids) for k, v in sorted(metrics.items())[:_MAX_ROWS]]
        lines.append(
            "\n".join(
                [f"| metric | {' | '.join(short)} | better |", "|---|" + "---|" * (len(ids) + 1), *rows]
            )
        )
    same = c.get("same_params", {})
    if same:
        lines.append(
            "Same in all: " + ", ".join(f"{_cell(k)}={_cell(v, 30)}" for k, v in sorted(same.items())[:15])
        )
    return "\n\n".join(lines)


def _metric_row(metric: str, values: dict[str, Any], ids: list[str]) -> str:
    scored = {i: v for i, v in values.items() if isinstance(v, int | float)}
    base = metric.removeprefix("test_").removeprefix("val_").removeprefix("best_val_")
    high = metric_direction(base) == "maximize" if base in _KNOWN_METRICS else None
    better = "—"
    if high is not None and len(scored) >= 2:
        pick = max(scored, key=lambda i: scored[i]) if high else min(scored, key=lambda i: scored[i])
        better = f"`{pick[:8]}`"
    return f"| {_cell(metric)} | " + " | ".join(_cell(values.get(i)) for i in ids) + f" | {better} |"


ANSWERS: dict[str, Callable[[QuestionPlan, Found], str]] = {
    "note": answer_note,
    "why_failed": answer_failure,
    "run_logs": answer_logs,
    "running": answer_running,
    "list_experiments": answer_experiments,
    "compare": answer_compare,
}
