"""Factual markdown answers the offline model writes from read-only tool results.

Only values taken from the tool results appear: run IDs, statuses, metrics, params and dataset
fields. Free text from results (descriptions, notes) is shown only when it does not read like an
instruction; text that does is withheld and the answer says so. Instructions inside tool results are
data, never followed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import ToolMessage

from agent.grammar import QuestionPlan
from agent.offline_questions import payloads
from agent.run_answers import ANSWERS as RUN_ANSWERS
from agent.run_answers import answer_experiments
from tools.core import tags as tag_keys
from tools.core.specs import metric_direction

_METRIC_PREFERENCE = ("roc_auc", "accuracy", "f1", "log_loss", "r2", "rmse", "mae")
_MAX_ROWS = 10
_SAFE_ID = re.compile(r"^[\w.-]{1,64}$")
_INSTRUCTION_LIKE = re.compile(
    r"\b(?:ignore|disregard|forget|override)\b.{0,60}\b(?:instructions?|previous|above|prior|rules|policy|guard)\b"
    r"|\bsystem\s+prompt\b|\byou\s+(?:must|should|are\s+now)\b|\bassistant\s*:|\b(?:deploy|promot|alias)\w*\b"
    r"|\bcall\s+the\s+\w+\s+tool\b",
    re.IGNORECASE | re.DOTALL,
)


@dataclass
class _Results:
    """Tool results split into usable data and failures, plus what was withheld."""

    runs: list[dict[str, Any]] = field(default_factory=list)
    datasets: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    withheld: int = 0
    more: bool = False  # a search returned only the first of more matching runs


def write_answer(plan: QuestionPlan, results: list[tuple[str, ToolMessage]]) -> str:
    """Return the markdown answer to ``plan`` from ``(tool name, ToolMessage)`` results."""
    if plan.kind == "unclear":
        return _unclear()
    data = _collect(results)
    found = payloads(results)
    if (
        plan.kind == "list_runs"
        and plan.window is not None
        and not plan.experiment
        and "search_runs" not in found
    ):
        status = f" with status {plan.status}" if plan.status else ""
        body = f"No runs{status} were started {plan.window.label} in any experiment." if found else ""
    elif plan.needs_experiment and "list_experiments" in found and "search_runs" not in found:
        body = answer_experiments(plan, found)  # which experiment? (none named, not exactly one with runs)
    elif plan.kind in RUN_ANSWERS:
        body = RUN_ANSWERS[plan.kind](plan, found)
        if not body and plan.kind == "compare" and data.runs:
            body = _answer_runs(plan, data)  # compared with get_run (compare_runs not offered)
    else:
        body = _ANSWERS[plan.kind](plan, data) if (data.runs or data.datasets or not data.failures) else ""
    parts = [body] if body else []
    if data.failures:
        parts.append(
            "Some tool calls failed:\n" + "\n".join(f"- {_mask_ids(f, data)}" for f in data.failures)
        )
    if data.withheld:
        parts.append(
            f"Note: {data.withheld} text field(s) in the tool results read like instructions to me "
            "(for example to deploy a model or ignore rules). I treated them as data, did not follow "
            "them, and left them out of this answer."
        )
    return "\n\n".join(parts)


def _unclear() -> str:
    return (
        "I could not tell which runs or datasets the question is about. I can answer: the best run in "
        "an experiment (optionally by a metric), the latest run, a run by ID, a comparison of run IDs, "
        "the list of datasets, or a dataset by name@version."
    )


def _collect(results: list[tuple[str, ToolMessage]]) -> _Results:
    data = _Results()
    for name, message in results:
        parsed = _parse(message)
        if isinstance(parsed, str):
            data.failures.append(f"`{name}`: {parsed}")
            continue
        for run in _walk(parsed, _is_run):
            data.runs.append(_flatten_run(run))
        data.more = data.more or (isinstance(parsed, dict) and parsed.get("more") is True)
        if name in ("list_datasets", "lookup_dataset"):
            data.datasets.extend(_dataset(d) for d in _walk(parsed, _is_dataset))
    data.runs = list({r["run_id"]: r for r in data.runs if _SAFE_ID.match(str(r["run_id"]))}.values())
    return data


def _parse(message: ToolMessage) -> Any:
    """Return the JSON a tool returned, or a one-line failure text."""
    text = message.content if isinstance(message.content, str) else json.dumps(message.content)
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        return _first_line(text)
    if message.status == "error":
        return _first_line(text)
    if isinstance(parsed, dict) and (parsed.get("error") or parsed.get("verdict") in ("reject", "halt")):
        return _first_line(str(parsed.get("error") or parsed.get("reason") or parsed))
    return parsed


def _first_line(text: str) -> str:
    line = (text.strip().splitlines() or ["(empty result)"])[0]
    return line[:300]


def _walk(value: Any, wanted: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        if wanted(value):
            yield value
            return
        for item in value.values():
            yield from _walk(item, wanted)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item, wanted)


def _is_run(value: dict[str, Any]) -> bool:
    info = value.get("info")
    return "run_id" in value or (isinstance(info, dict) and "run_id" in info)


def _is_dataset(value: dict[str, Any]) -> bool:
    return ("ref" in value or ("name" in value and "version" in value)) and "run_id" not in value


def _dataset(value: dict[str, Any]) -> dict[str, Any]:
    """Return a dataset record or listing line with ``name`` and ``version`` (split from ``ref``)."""
    if "name" in value and "version" in value:
        return value
    name, _, version = str(value["ref"]).partition("@")
    return {**value, "name": name, "version": version}


def _as_mapping(value: Any) -> dict[str, Any]:
    """Accept metrics/params as a dict or as MLflow's list of {key, value}."""
    if isinstance(value, dict):
        return value
    if isinstance(value, list):
        return {str(i.get("key")): i.get("value") for i in value if isinstance(i, dict)}
    return {}


def _flatten_run(run: dict[str, Any]) -> dict[str, Any]:
    """Return {run_id, status, metrics, params, tags, start_time} from flat or MLflow-shaped runs."""
    flat = {
        **run.get("info", {}),
        **run.get("data", {}),
        **{k: v for k, v in run.items() if k not in ("info", "data")},
    }
    return {
        "run_id": flat["run_id"],
        "status": flat.get("status"),
        "metrics": _as_mapping(flat.get("metrics")),
        "params": _as_mapping(flat.get("params")),
        "tags": _as_mapping(flat.get("tags")),
        "start_time": flat.get("start_time"),
        "role": flat.get("role") or _as_mapping(flat.get("tags")).get(tag_keys.ROLE),
        "ui_url": flat.get("ui_url"),
    }


def _metric_value(run: dict[str, Any], metric: str) -> float | None:
    for key in (metric, f"test_{metric}", f"eval_{metric}"):
        value = run["metrics"].get(key)
        if isinstance(value, int | float):
            return float(value)
    return None


def _choose_metric(plan: QuestionPlan, runs: list[dict[str, Any]]) -> tuple[str | None, str]:
    """Return the metric to rank by and a note on why it was chosen."""
    if plan.metric:
        return plan.metric, ""
    for run in runs:
        for key in ("metric", "primary_metric"):
            named = run["params"].get(key) or run["tags"].get(f"expagent.{key}")
            if named in _METRIC_PREFERENCE:
                return str(named), f" (no metric named; {named} is the primary metric logged on the runs)"
    scored = [r for r in runs if r["metrics"]] or runs  # a run that failed before logging anything
    for metric in _METRIC_PREFERENCE:
        if all(_metric_value(r, metric) is not None for r in scored):
            return metric, f" (no metric named; ranked by {metric}, which every run reports)"
    return None, ""


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else _cell(value)


def _cell(value: Any, limit: int = 100) -> str:
    text = str(value if value is not None else "—").replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _link(run: dict[str, Any]) -> str:
    url = str(run.get("ui_url") or "")
    return f" ([MLflow UI]({url}))" if re.match(r"^https?://[^\s()]+$", url) else ""


def _family(run: dict[str, Any]) -> str:
    return str(run["params"].get("model_family") or run["tags"].get("expagent.model_family") or "—")


def _runs_table(runs: list[dict[str, Any]], metrics: list[str]) -> str:
    header = "| run ID | status | model | " + " | ".join(metrics) + " |"
    rule = "|---|---|---|" + "---|" * len(metrics)
    rows = [
        f"| `{r['run_id']}` | {_cell(r['status'])} | {_cell(_family(r))} | "
        + " | ".join(_fmt(_metric_value(r, m)) for m in metrics)
        + " |"
        for r in runs[:_MAX_ROWS]
    ]
    return "\n".join([header, rule, *rows])


def _shared_metrics(runs: list[dict[str, Any]]) -> list[str]:
    known = [m for m in _METRIC_PREFERENCE if any(_metric_value(r, m) is not None for r in runs)]
    return known or sorted({k for r in runs for k in r["metrics"]})[:6]


#: params of the top run listed in a best-run answer.
_MAX_PARAMS = 20


def _answer_best(plan: QuestionPlan, data: _Results) -> str:
    where = f"experiment `{_cell(plan.experiment)}`" if plan.experiment else "the runs searched"
    if not data.runs:
        return f"No runs were found in {where}."
    metric, why = _choose_metric(plan, data.runs)
    if metric is None:
        return f"The runs in {where} share no metric to rank by:\n\n" + _runs_table(
            data.runs, _shared_metrics(data.runs)
        )
    scored = [r for r in data.runs if _metric_value(r, metric) is not None]
    if not scored:
        return f"None of the {len(data.runs)} runs in {where} reports {metric}."
    high = (metric_direction(metric) == "maximize") != plan.reverse
    ranked = sorted(scored, key=lambda r: _metric_value(r, metric) or 0.0, reverse=high)
    word = "worst" if plan.reverse else "best"
    order = "higher" if metric_direction(metric) == "maximize" else "lower"
    top = ranked[0]
    lead = (
        f"The {word} run in {where} by {metric}{why} is `{top['run_id']}`{_link(top)} with {metric} = "
        f"{_fmt(_metric_value(top, metric))} ({order} is better; status {_cell(top['status'])}, "
        f"model {_family(top)})."
    )
    shown = ranked[: max(plan.limit, min(len(ranked), 5))]
    extra = [_against_baseline(top, data.runs, metric)] if plan.baseline else []
    if top["params"]:
        extra.append(f"Params of `{top['run_id']}`: " + ", ".join(
            f"{_cell(k)}={_cell(v)}" for k, v in sorted(top["params"].items())[:_MAX_PARAMS]
        ))  # fmt: skip
    return "\n\n".join([
        lead, *extra, _runs_table(shown, [metric]), f"{len(scored)} of {len(data.runs)} runs report {metric}."
    ])  # fmt: skip


def _against_baseline(top: dict[str, Any], runs: list[dict[str, Any]], metric: str) -> str:
    """Return how ``top`` compares with the baseline run among ``runs`` on ``metric``."""
    baseline = next((r for r in runs if r["role"] == "baseline"), None)
    if baseline is None:
        return "No baseline run (tag expagent.role = baseline) was found to compare with."
    value, best = _metric_value(baseline, metric), _metric_value(top, metric)
    if value is None or best is None:
        return f"The baseline `{baseline['run_id']}`{_link(baseline)} reports no {metric}."
    if baseline["run_id"] == top["run_id"]:
        head = f"The baseline `{baseline['run_id']}`{_link(baseline)}"
        return f"{head} is the top run itself ({metric} = {_fmt(value)})."
    return (
        f"Against the baseline `{baseline['run_id']}`{_link(baseline)} ({metric} = {_fmt(value)}): "
        f"{best - value:+.4f}."
    )


def _answer_latest(plan: QuestionPlan, data: _Results) -> str:
    where = f" in experiment `{_cell(plan.experiment)}`" if plan.experiment else ""
    if not data.runs:
        return f"No runs were found{where}."
    latest = (
        max(data.runs, key=lambda r: r["start_time"] or 0)
        if any(r["start_time"] for r in data.runs)
        else data.runs[0]
    )
    return (
        f"The most recent run{where} is `{latest['run_id']}`{_link(latest)} "
        f"(status {_cell(latest['status'])}).\n\n" + _run_details(latest)
    )


def _run_details(run: dict[str, Any]) -> str:
    metrics = (
        "\n".join(f"- {_cell(k)}: {_fmt(v)}" for k, v in sorted(run["metrics"].items())[:20]) or "- (none)"
    )
    params = (
        "\n".join(f"- {_cell(k)}: {_cell(v)}" for k, v in sorted(run["params"].items())[:20]) or "- (none)"
    )
    return f"Metrics:\n{metrics}\n\nParams:\n{params}"


def _answer_runs(plan: QuestionPlan, data: _Results) -> str:
    if not data.runs:
        return "None of the requested runs was found."
    if len(data.runs) == 1:
        run = data.runs[0]
        return (
            f"Run `{run['run_id']}`{_link(run)}: status {_cell(run['status'])}, "
            f"model {_cell(_family(run))}.\n\n" + _run_details(run)
        )
    metrics = [plan.metric] if plan.metric else _shared_metrics(data.runs)
    lines = [f"Comparison of {len(data.runs)} runs:", "", _runs_table(data.runs, metrics)]
    lines += _winners(data.runs, metrics)
    return "\n".join(lines)


def _winners(runs: list[dict[str, Any]], metrics: list[str]) -> list[str]:
    lines = []
    for metric in metrics:
        scored = [r for r in runs if _metric_value(r, metric) is not None]
        if len(scored) >= 2:
            pick = max if metric_direction(metric) == "maximize" else min
            best = pick(scored, key=lambda r: _metric_value(r, metric) or 0.0)
            lines.append(f"- Better {metric}: `{best['run_id']}` ({_fmt(_metric_value(best, metric))}).")
    return ["", *lines] if lines else []


def _answer_list_runs(plan: QuestionPlan, data: _Results) -> str:
    where = f" in experiment `{_cell(plan.experiment)}`" if plan.experiment else ""
    if plan.status:
        where = f" with status {plan.status}{where}"
    if plan.window is not None:
        where += f", started {plan.window.label}"
    runs = [r for r in data.runs if r["role"] != "session"] or data.runs
    if not runs:
        return f"No runs were found{where}."
    shown = runs[: plan.limit] if plan.limit > 1 else runs
    if len(shown) < len(runs):
        count = f"The {len(shown)} most recent runs" if not plan.metric else f"The first {len(shown)} runs"
    elif data.more:
        count = f"More than {len(shown)} runs (the first {len(shown)} are shown)"
    else:
        count = f"{len(shown)} run(s)"
    return f"{count}{where}:\n\n" + _runs_table(shown, _shared_metrics(shown))


def _safe(value: Any, data: _Results) -> str:
    text = _cell(value)
    if _INSTRUCTION_LIKE.search(str(value or "")):
        data.withheld += 1
        return "(withheld: reads like an instruction)"
    return text


def _answer_datasets(plan: QuestionPlan, data: _Results) -> str:
    datasets = data.datasets
    lead = ""
    if plan.dataset:
        datasets = [d for d in datasets if str(d["name"]).lower() == plan.dataset.lower()]
        if not datasets:
            return f"The registry has no dataset named {_cell(plan.dataset)}."
        versions = ", ".join(f"{_cell(d['name'])}@{_cell(d['version'])}" for d in datasets)
        lead = f"No version was named; registered versions: {versions}. Ask about one as NAME@VERSION.\n\n"
    if not datasets:
        return "The registry returned no datasets."
    rows = [
        f"| {_cell(d['name'])}@{_cell(d['version'])} | {_cell(d.get('status'))} "
        f"| {_cell(_schema(d).get('task'))} | {_safe(d.get('description'), data)} |"
        for d in datasets
    ]
    return lead + "\n".join(["| dataset | status | task | description |", "|---|---|---|---|", *rows])


def _schema(dataset: dict[str, Any]) -> dict[str, Any]:
    schema = dataset.get("schema") or dataset.get("schema_")
    return schema if isinstance(schema, dict) else dataset


def _answer_dataset(plan: QuestionPlan, data: _Results) -> str:
    if plan.version is None:
        return _answer_datasets(plan, data)
    if not data.datasets:
        return f"The registry has no dataset {plan.dataset}@{plan.version or '?'}."
    d = data.datasets[0]
    schema = _schema(d)
    columns = schema.get("columns") or []
    names = (
        [c if isinstance(c, str) else c.get("name", "?") for c in columns]
        if isinstance(columns, list)
        else list(columns)
    )
    shown = ", ".join(map(str, names[:15])) + (" …" if len(names) > 15 else "")
    fields = [
        ("status", d.get("status")), ("task", schema.get("task")), ("target", schema.get("target")),
        ("columns", f"{len(names)}: {shown}" if names else None),
        ("PII columns", ", ".join(map(str, d.get("pii_columns") or [])) or "none"),
        ("sha256", d.get("sha256")), ("format", d.get("format")), ("owner", d.get("owner")),
    ]  # fmt: skip
    lines = [f"Dataset **{_cell(d['name'])}@{_cell(d['version'])}**:"]
    lines += [f"- {label}: {_cell(value)}" for label, value in fields if value is not None]
    if d.get("description"):
        lines.append(f"- description: {_safe(d['description'], data)}")
    return "\n".join(lines)


def _mask_ids(text: str, data: _Results) -> str:
    """Replace run IDs that no tool result returned, so the answer cites only existing runs."""
    known = {r["run_id"] for r in data.runs}
    return re.sub(r"\b[0-9a-f]{32}\b", lambda m: m[0] if m[0] in known else "<run id>", text)


_ANSWERS = {
    "best_run": _answer_best,
    "latest_run": _answer_latest,
    "runs": _answer_runs,
    "list_runs": _answer_list_runs,
    "list_datasets": _answer_datasets,
    "describe_dataset": _answer_dataset,
}
