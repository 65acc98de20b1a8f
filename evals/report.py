"""Write what a suite run found: report.json, report.md, transcripts, a baseline diff and an MLflow run.

``report.json`` holds ``manifest`` (what ran), ``metrics`` (deterministic: identical on a second run
of a scripted/offline suite), ``timings`` (not), ``results`` (one row per scenario and trial) and,
with a baseline, ``diff``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evals.metrics import RunResult
from tools.core import tags as tag_keys

if TYPE_CHECKING:
    from evals.observe import Observation
    from evals.schema import Scenario

EVAL_EXPERIMENT = "expagent-evals"
_MAX_ANSWER_CHARS = 6000


# ---- transcripts ---------------------------------------------------------------------------------


def _fence(text: str) -> str:
    return "````text\n" + text.rstrip() + "\n````"


def _turn_lines(obs: Observation) -> list[str]:
    lines: list[str] = []
    for turn in obs.turns:
        lines.append(f"## Turn {turn.index}" + (" (after a restart)" if turn.restarted else ""))
        if turn.user is not None:
            lines.append(f"**User:** {turn.user}")
        if turn.approve is not None:
            lines.append(f"**Approval answer:** {'yes' if turn.approve else 'no'} "
                         f"(approval requested {turn.approvals_requested}x)")  # fmt: skip
        lines.append(f"**Status:** {turn.status}" + (" · cancelled by the harness" if turn.cancelled else ""))
        if turn.asked_for:
            lines.append(f"**Asked for:** {', '.join(turn.asked_for)}")
        for event in turn.policy_events:
            lines.append(f"- policy: {event.get('tool')} {event.get('verdict')} {event.get('rule') or ''}: "
                         f"{event.get('reason', '')}")  # fmt: skip
        if turn.error:
            lines.append("**Error:**\n" + _fence(turn.error))
        if turn.answer:
            lines.append("**Answer:**\n" + _fence(turn.answer[:_MAX_ANSWER_CHARS]))
    return lines


def render_transcript(scenario: Scenario, trial: int, obs: Observation, result: RunResult) -> str:
    """Return a Markdown transcript of one run: turns, tool calls, runs and gate verdicts."""
    verdict = "PASSED" if result.passed else "FAILED"
    lines = [f"# {scenario.id} (trial {trial}): {verdict}", "", scenario.description.strip(), ""]
    lines += _turn_lines(obs)
    lines += ["", "## Tool calls (audit log)"]
    for i, entry in enumerate(obs.audit, 1):
        args = json.dumps(entry.args, sort_keys=True)[:300]
        lines.append(f"{i}. `{entry.tool}` {entry.verdict} {entry.rule or ''} — args `{args}`")
    if not obs.audit:
        lines.append("(none)")
    lines += ["", "## MLflow runs after the scenario"]
    for run in obs.runs:
        origin = " (pre-existing)" if run.preexisting else ""
        lines.append(f"- `{run.run_id}` {run.experiment} role={run.role} {run.status}{origin}")
    if not obs.runs:
        lines.append("(none)")
    if obs.k8s_objects:
        lines += ["", "## Kubernetes objects"] + [
            f"- {o['kind']} {o['namespace']}/{o['name']}" for o in obs.k8s_objects
        ]
    if obs.error:
        lines += ["", "## Harness error", _fence(obs.error)]
    lines += ["", "## Gates"]
    for gate in result.gates:
        mark = "pass" if gate.passed else "FAIL"
        scope = "safety" if gate.safety else ("counts" if gate.in_basis else "informational")
        lines.append(f"- **{gate.name}**: {mark} ({scope})")
        lines += [f"  - {reason}" for reason in gate.reasons]
    return "\n".join(lines) + "\n"


# ---- report.json -------------------------------------------------------------------------------------


def result_row(result: RunResult) -> dict[str, Any]:
    """Return the report.json row of one run."""
    return {
        "id": result.id,
        "trial": result.trial,
        "passed": result.passed,
        "failed_gates": [{"gate": g.name, "reasons": g.reasons} for g in result.failed_gates],
        "safety_violations": result.safety_hits,
        "refused": result.refused,
        "model_calls": result.model_calls,
        "tokens": result.prompt_tokens + result.completion_tokens,
        "tool_calls": result.tool_calls,
        "wall_seconds": result.wall_seconds,
        "cpu_seconds": result.cpu_seconds,
        "job_cpu_seconds": result.job_cpu_seconds,
        "gates": {g.name: g.passed for g in result.gates},
    }


def baseline_diff(current: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """Compare two reports: per-run regressions/fixes, scenarios added/removed, metric deltas."""
    now = {(r["id"], r["trial"]): r["passed"] for r in current["results"]}
    before = {(r["id"], r["trial"]): r["passed"] for r in baseline.get("results", [])}
    shared = sorted(set(now) & set(before))
    deltas = {}
    for key in ("success_rate", "safety_violations", "model_calls", "tool_calls"):
        old, new = baseline.get("metrics", {}).get(key), current["metrics"].get(key)
        if isinstance(old, int | float) and isinstance(new, int | float):
            deltas[key] = {"baseline": old, "current": new, "delta": round(new - old, 6)}
    return {
        "baseline_manifest": baseline.get("manifest", {}),
        "regressions": [f"{i}#{t}" for i, t in shared if before[(i, t)] and not now[(i, t)]],
        "fixes": [f"{i}#{t}" for i, t in shared if not before[(i, t)] and now[(i, t)]],
        "added": sorted({i for i, _ in set(now) - set(before)}),
        "removed": sorted({i for i, _ in set(before) - set(now)}),
        "metrics": deltas,
    }


def build_report(
    manifest: dict[str, Any],
    metrics: dict[str, Any],
    timings: dict[str, Any],
    results: list[RunResult],
    baseline: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble the report.json document."""
    report = {
        "manifest": manifest,
        "metrics": metrics,
        "timings": timings,
        "results": [result_row(r) for r in sorted(results, key=lambda r: (r.id, r.trial))],
    }
    if baseline is not None:
        report["diff"] = baseline_diff(report, baseline)
    return report


def load_baseline(path: Path) -> dict[str, Any]:
    """Read a previous report.json (a directory holding one also works)."""
    file = path / "report.json" if path.is_dir() else path
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"baseline {file}: cannot read a report.json ({exc})") from exc
    if not isinstance(data, dict) or "results" not in data:
        raise ValueError(f"baseline {file}: not an expagent eval report (no 'results')")
    return data


# ---- report.md ------------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _summary_lines(report: dict[str, Any]) -> list[str]:
    m, manifest, t = report["metrics"], report["manifest"], report["timings"]
    pass_k = " · ".join(f"pass^{k} {_pct(v)}" for k, v in m["pass_hat_k"].items())
    inj, ref = m["injection"], m["refusal"]
    return [
        "# expagent eval report", "",
        f"Model `{manifest.get('model')}` ({manifest.get('mode')}) · {m['scenarios']} scenarios × "
        f"{manifest.get('trials')} trial(s) · code `{str(manifest.get('git_sha'))[:12]}` · "
        f"suite `{str(manifest.get('scenario_set_hash'))[:12]}`", "",
        "| metric | value |", "|---|---|",
        f"| success rate | {_pct(m['success_rate'])} ({m['passed_runs']}/{m['runs']}) |",
        f"| **safety violations** | **{m['safety_violations']}** "
        f"({_pct(m['safety_violation_rate'])} of runs) |",
        f"| pass^k | {pass_k} |",
        f"| correct refusals / over-refusals | {_pct(ref['correct_refusal_rate'])} / "
        f"{_pct(ref['over_refusal_rate'])} |",
        f"| injection: utility / under attack / attack success | {_pct(inj['utility'])} / "
        f"{_pct(inj['utility_under_attack'])} / {_pct(inj['attack_success_rate'])} |",
        f"| model calls · tokens · tool calls | {m['model_calls']} · "
        f"{t.get('prompt_tokens', 0) + t.get('completion_tokens', 0)} · {m['tool_calls']} |",
        f"| wall time | {report['timings'].get('wall_seconds')} s |",
    ]  # fmt: skip


def _failure_lines(report: dict[str, Any]) -> list[str]:
    failed = [r for r in report["results"] if not r["passed"]]
    if not failed:
        return ["", "All runs passed."]
    lines = ["", "## Failures", ""]
    for row in failed:
        marker = " ⚠ SAFETY" if row["safety_violations"] else ""
        transcript = f"transcripts/{row['id']}__t{row['trial']}.md"
        lines.append(f"- **{row['id']}** (trial {row['trial']}){marker} — see `{transcript}`")
        for gate in row["failed_gates"]:
            lines += [f"  - `{gate['gate']}`: {reason}" for reason in gate["reasons"][:8]]
    return lines


def _diff_lines(diff: dict[str, Any] | None) -> list[str]:
    if diff is None:
        return []
    lines = ["", "## Against the baseline", ""]
    for key in ("regressions", "fixes", "added", "removed"):
        lines.append(f"- {key}: {', '.join(diff[key]) or 'none'}")
    for key, delta in diff["metrics"].items():
        lines.append(f"- {key}: {delta['baseline']} → {delta['current']} ({delta['delta']:+})")
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    """Return report.md: summary table, failures with reasons, baseline diff, per-scenario table."""
    lines = _summary_lines(report) + _failure_lines(report) + _diff_lines(report.get("diff"))
    lines += [
        "",
        "## Runs",
        "",
        "| scenario | trial | result | model calls | tool calls | seconds | CPU s (agent + jobs) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report["results"]:
        result = "pass" if row["passed"] else ("**SAFETY**" if row["safety_violations"] else "fail")
        cpu = f"{row.get('cpu_seconds', 0.0):.1f} + {row.get('job_cpu_seconds', 0.0):.1f}"
        cells = [
            row["id"],
            row["trial"],
            result,
            row["model_calls"],
            row["tool_calls"],
            row["wall_seconds"],
            cpu,
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


# ---- writing --------------------------------------------------------------------------------------


def write_report(directory: Path, report: dict[str, Any], results: list[RunResult]) -> Path:
    """Write report.json, report.md and transcripts/ under ``directory``; return report.json's path."""
    directory.mkdir(parents=True, exist_ok=True)
    transcripts = directory / "transcripts"
    transcripts.mkdir(exist_ok=True)
    for old in transcripts.glob("*.md"):
        old.unlink()
    for result in results:
        (transcripts / f"{result.id}__t{result.trial}.md").write_text(result.transcript, encoding="utf-8")
    (directory / "report.md").write_text(render_markdown(report), encoding="utf-8")
    path = directory / "report.json"
    path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def _numeric_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_numeric_metrics(value, name.replace("^", "_hat_") + "."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


def log_to_mlflow(directory: Path, report: dict[str, Any], tracking_uri: str) -> str:
    """Log the report as a FINISHED evaluation run (metrics, manifest as params, files as artifacts)."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    from tools.core.tracking import ensure_experiment

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment_id = ensure_experiment(client, EVAL_EXPERIMENT)
    manifest = report["manifest"]
    run = client.create_run(
        experiment_id, run_name=f"eval-{str(manifest.get('model'))}-{manifest.get('created_at', '')}"
    )
    run_id = run.info.run_id
    try:
        metrics = _numeric_metrics(report["metrics"]) | _numeric_metrics(report["timings"], "timing.")
        params = {k: str(v)[:500] for k, v in sorted(manifest.items()) if not isinstance(v, dict | list)}
        tags = {
            tag_keys.ROLE: "evaluation",
            "eval.passed": str(report["metrics"]["safety_violations"] == 0).lower(),
        }
        client.log_batch(
            run_id,
            metrics=[Metric(k.replace("^", "_hat_"), v, 0, 0) for k, v in sorted(metrics.items())],
            params=[Param(k, v) for k, v in params.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )
        client.log_artifact(run_id, str(directory / "report.json"))
        client.log_artifact(run_id, str(directory / "report.md"))
        client.log_artifacts(run_id, str(directory / "transcripts"), "transcripts")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id


# ---- terminal output ------------------------------------------------------------------------------


def _seconds(result: RunResult) -> str:
    return f"{result.wall_seconds:.1f} s, CPU {result.cpu_seconds:.1f} + {result.job_cpu_seconds:.1f} s"


def progress_line(result: RunResult) -> str:
    """Return one line for a finished run (shown while the suite runs)."""
    if result.passed:
        return f"PASS {result.id}#{result.trial} ({_seconds(result)})"
    label = "SAFETY" if result.safety_hits else "FAIL"
    first = result.failed_gates[0] if result.failed_gates else None
    reason = f" {first.name}: {first.reasons[0] if first.reasons else ''}" if first else ""
    head = f"{label} {result.id}#{result.trial} ({_seconds(result)})"
    return head + (reason.splitlines()[0] if reason else "")


def summary_text(report: dict[str, Any], report_path: Path, eval_run_id: str | None) -> str:
    """Return the end-of-suite summary: the headline numbers, failures and where the report is."""
    m = report["metrics"]
    lines = [
        f"scenarios {m['scenarios']} · runs {m['runs']} · success {_pct(m['success_rate'])} · "
        f"safety violations {m['safety_violations']} · "
        + " ".join(f"pass^{k} {_pct(v)}" for k, v in m["pass_hat_k"].items()),
        f"wall time {report['timings'].get('wall_seconds')} s",
    ]
    for row in report["results"]:
        if not row["passed"]:
            gates = ", ".join(g["gate"] for g in row["failed_gates"])
            lines.append(f"  failed: {row['id']}#{row['trial']} [{gates}]")
    lines.append(f"report: {report_path} and {report_path.with_name('report.md')}")
    if eval_run_id:
        lines.append(f"MLflow evaluation run: {eval_run_id} (experiment {EVAL_EXPERIMENT})")
    return "\n".join(lines) + "\n"
