"""What each of the five answer sections says, composed from graph state (code, not model text).

``compose_sections(state, links)`` picks the turn's kind (refusal, question, missing inputs, unknown,
cancel, experiment) and returns ``{section: markdown}``; ``agent.answer.render_answer`` formats it.
Only run IDs that MLflow returned during verification are cited as verified.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from agent.experiment_plan import ExperimentPlan, ExperimentRequest, RollbackRecord, VerificationReport
from agent.model_prose import quote_line
from agent.state import AgentState, IntakeDecision, RunRecord
from tools.core.specs import selection_metric
from tools.tuning.warm_start import describe as warm_start_text

Sections = dict[str, str]

GRAMMAR_HINTS = (
    "I can train, tune and compare models on registered, versioned datasets and answer questions "
    "about MLflow runs. For example:\n"
    '- "Train a lightgbm baseline on breast_cancer version 1 optimizing roc_auc in experiment smoke"\n'
    '- "... then tune 20 trials" (add a budget: "budget 0.5 cpu hours")\n'
    '- "What is the best run in experiment smoke?" or "compare runs A and B"\n'
    '- "List the datasets" or "cancel" to stop running work'
)
REQUIRED_LABELS = {
    "dataset": "the dataset (a registered name, e.g. breast_cancer)",
    "version": "the dataset version (I never assume one)",
    "model_family": "the model family (logistic_regression, random_forest, hist_gradient_boosting, lightgbm, "
    "xgboost)",
    "metric": "the primary metric (roc_auc, accuracy, f1, log_loss for classification; rmse, mae, r2 "
    "for regression)",
    "experiment": "the MLflow experiment name",
}


def compose_sections(state: AgentState, links: Mapping[str, str]) -> Sections:
    """Return the five section bodies for the turn ``state`` describes."""
    intake = state.get("intake")
    if state.get("refusal") is not None:
        return refusal_sections(state)
    if intake is not None and intake.intent == "question":
        return question_sections(state)
    if state.get("asked_for") or state.get("request_problems"):
        return missing_input_sections(state)
    if intake is not None and intake.intent == "cancel":
        return cancel_sections(state, links)
    if state.get("plan") is not None:
        return experiment_sections(state, links)
    return unknown_sections(intake)


# ---- refusal / question / unknown / missing inputs -------------------------------------------------


def refusal_sections(state: AgentState) -> Sections:
    """Explain the refused request, the policy, and what the user can do instead."""
    refusal = state["refusal"]
    assert refusal is not None
    events = "\n".join(
        f"- Guard verdict on `{e.tool}`: **{e.verdict}** (rule `{e.rule}`): {e.reason}"
        for e in state.get("policy_events", [])
    )
    alternatives = "\n".join(f"- {a}" for a in refusal.alternatives)
    return {
        "Plan": f"No plan: the request was refused ({refusal.action.replace('_', ' ')}).",
        "Changes": "None. Nothing was launched and nothing changed in MLflow: no runs, no registered "
        "models, no aliases or stages.",
        "Verification": (events or f"- Policy rule `{refusal.rule}`") + "\n- The verdict is recorded in "
        "the audit log.",
        "Rollback": "Nothing to roll back: nothing was started.",
        "Summary": f"{refusal.reason}\n\nWhat you can do instead:\n{alternatives}",
    }


def question_sections(state: AgentState) -> Sections:
    """Answer a question about runs/datasets (short sections; the lookups are the verification)."""
    intake = state["intake"]
    assert intake is not None
    calls = state.get("tool_calls", [])
    looked_up = ", ".join(sorted({c.tool for c in calls if c.tool != "log_note"})) or "no tools"
    checks = "\n".join(
        f"- `{c.tool}({_short_args(c.args)})`: {'ok' if c.ok else 'refused'} — {c.summary}" for c in calls
    )
    notes = [c for c in calls if c.tool == "log_note" and c.ok]
    changes = "\n".join(f"- {c.summary}; the call is in the audit log." for c in notes)
    return {
        "Plan": "Add the note you asked for to the run's description (log_note), nothing else."
        if notes
        else f"Answer “{quote_line(intake.question or 'your question')}” from MLflow ({looked_up}).",
        "Changes": changes or "None (read-only lookups).",
        "Verification": checks
        if calls
        else "No lookups were needed; nothing in the answer comes from MLflow.",
        "Rollback": "To take the note back, edit the run's description in the MLflow UI."
        if notes
        else "Nothing to roll back.",
        "Summary": state.get("model_answer") or "I could not find an answer.",
    }


def answer_lead(state: AgentState) -> str | None:
    """Return the answer's first paragraph for a question turn, shown above the five sections."""
    intake = state.get("intake")
    answer = (state.get("model_answer") or "").strip()
    if intake is None or intake.intent != "question" or state.get("refusal") is not None or not answer:
        return None
    first = answer.split("\n\n", 1)[0].strip()
    return first if first and not first.startswith(("|", "```")) and len(first) <= 600 else None


def unknown_sections(intake: IntakeDecision | None) -> Sections:
    """Say what was not understood and how to phrase a request."""
    missed = [quote_line(m, limit=600) for m in intake.not_understood] if intake is not None else []
    what = "\n".join(f"- {m}" for m in missed) or "- the request as a whole"
    cannot = bool(missed) and all("I can't do that" in m for m in missed)
    opening = (
        "your message asks for something I have no tool for"
        if cannot
        else "I did not understand this part of your message"
    )
    return {
        "Plan": f"No plan: {opening}:\n{what}",
        "Changes": "None. Nothing was launched or changed.",
        "Verification": "Nothing to verify: no runs were launched.",
        "Rollback": "Nothing to roll back.",
        "Summary": GRAMMAR_HINTS,
    }


def missing_input_sections(state: AgentState) -> Sections:
    """Ask, in one consolidated question, for exactly the inputs that are missing or unusable."""
    asked = state.get("asked_for", [])
    problems = state.get("request_problems", [])
    draft = state.get("draft")
    known = {k: v for k, v in (draft.model_dump(exclude_defaults=True) if draft else {}).items() if v}
    known_text = ", ".join(f"{k}={v}" for k, v in known.items()) or "nothing yet"
    needs = [REQUIRED_LABELS.get(a, a) for a in asked]
    memory = state.get("memory")
    proposed = memory is not None and memory.proposal is not None
    # With proposed defaults the one question is in the problems ("Which version? … — ok?").
    question = (
        "Before I launch anything, please tell me " + _join(needs) + "." if needs and not proposed else ""
    )
    problem_text = "\n".join(f"- {p}" for p in problems)
    missed = not_understood_text(state.get("intake"))
    summary = "\n\n".join(t for t in (problem_text, missed, question) if t)
    return {
        "Plan": f"Not planned yet: inputs are missing or unusable. Understood so far: {known_text}.",
        "Changes": "None. Nothing was launched.",
        "Verification": "Nothing to verify: no runs were launched.",
        "Rollback": "Nothing to roll back.",
        "Summary": summary,
    }


# ---- experiment ------------------------------------------------------------------------------------


def experiment_sections(state: AgentState, links: Mapping[str, str]) -> Sections:
    """Describe the plan, what was launched, what MLflow confirmed, any rollback, and the result."""
    plan = state["plan"]
    assert plan is not None
    return {
        "Plan": plan_text(plan, state),
        "Changes": changes_text(state, links),
        "Verification": verification_text(state.get("verification"), state.get("approval_decision"))
        if state.get("verification") is not None or state.get("rollback") is None
        else after_rollback_text(state.get("rollback")),
        "Rollback": rollback_text(state.get("rollback")),
        "Summary": summary_text(plan.request, state, links),
    }


def plan_text(plan: ExperimentPlan, state: AgentState) -> str:
    """Render the plan: baseline, tuning loop, estimate, assumptions, approval."""
    r = plan.request
    b = plan.baseline
    where = r.runtime + (f" (namespace `{r.namespace}`)" if r.namespace else "")
    lines = [
        f"Train **{r.code_label}** on `{r.dataset}@{r.version}` ({r.task or 'task unknown'}), primary "
        f"metric **{r.metric}** ({r.direction}), MLflow experiment `{r.experiment}`, {where} runtime.",
        f"- Baseline: {_params(b.params)}, seed {b.seed}, {b.resources.cpu:g} CPU / "
        f"{b.resources.memory_gb:g} GiB per run, timeout {b.timeout_seconds} s.",
    ]
    lines.append(_tuning_line(plan))
    e = plan.estimate
    lines.append(
        f"- Compute estimate: ≈ {e.cpu_seconds_per_run:.0f} CPU-s per run × {e.runs} run(s) ≈ "
        f"{e.total_cpu_hours:.3g} CPU-h of a {e.budget_cpu_hours:g} CPU-h budget"
        + ("." if e.within_budget else f"; only {e.trials_that_fit} trial(s) fit.")
    )
    if r.assumptions:
        lines.append("- Assumptions (not stated, defaults chosen): " + "; ".join(r.assumptions) + ".")
    intake = state.get("intake")
    if intake is not None and intake.readings:
        lines.append("- How I read your message: " + "; ".join(intake.readings) + ".")
    if missed := not_understood_text(intake):
        lines.append("- " + missed.replace("\n", "\n  "))
    if plan.approval_keys:
        lines.append(_approval_line(plan, state))
    if plan.session_run_id:
        lines.append(f"- Plan logged as `plan.json` / `plan.md` on session run `{plan.session_run_id}`.")
    return "\n".join(lines)


def _tuning_line(plan: ExperimentPlan) -> str:
    if plan.tuning is None:
        return "- Tuning: none (baseline only; ask for e.g. “tune 20 trials”)."
    s = plan.tuning.study
    stops = [f"max {s.n_trials} trials"]
    if s.wall_clock_seconds:
        stops.append(f"wall clock {s.wall_clock_seconds:.0f} s")
    if s.cpu_hours:
        stops.append(f"budget {s.cpu_hours:g} CPU-h")
    if s.patience:
        stops.append(f"patience {s.patience} trials")
    if s.target is not None:
        stops.append(f"target {s.metric} {s.target:g}")
    space = ", ".join(f"{k} {_spec(v)}" for k, v in s.search_space.items())
    return (
        f"- Tuning: {s.n_trials} trials, TPE sampler (seed {s.seed}), {s.parallelism} at a time; stopping: "
        f"{', '.join(stops)}. Search space ({plan.tuning.search_space_source}): {space}.\n"
        f"- {warm_start_text(s.warm_start_trials, s.metric, s.warm_start)}\n"
        f"- Selection: trials are chosen on {_selection_words(s.metric, s.cv_folds)}; the best and the "
        "baseline "
        f"are compared on test_{s.metric} (held-out test split) with a paired bootstrap interval.\n"
        f"- Tuning estimate: {plan.tuning.estimate.summary}"
    )


def _approval_line(plan: ExperimentPlan, state: AgentState) -> str:
    reasons = "; ".join(plan.approval_reasons) or ", ".join(plan.approval_keys)
    decision = state.get("approval_decision")
    who = state.get("approver") or "unknown"
    if decision == "approved":
        return f"- Approval needed ({reasons}): **approved** by {who}."
    if decision == "denied":
        return f"- Approval needed ({reasons}): **denied** by {who}; nothing was launched."
    return f"- Approval needed ({reasons}): waiting for a decision."


def changes_text(state: AgentState, links: Mapping[str, str]) -> str:
    """List every MLflow run the turn created and how it ended."""
    lines = []
    for run in state.get("runs", []):
        link = f" ([MLflow]({links[run.run_id]}))" if run.run_id in links else ""
        job = f", job `{run.job_id}`" if run.job_id else ""
        note = f" — {run.note}" if run.note else ""
        lines.append(f"- {run.role} run `{run.run_id}`{job}: {run.status}{link}{note}")
    lines.extend(f"- {n}" for n in state.get("execution_notes", []))
    if state.get("approval_decision") == "denied":
        lines.append("- Approval was denied: no training run was launched.")
    return "\n".join(lines) or "None. Nothing was launched or changed in MLflow."


def verification_text(report: VerificationReport | None, decision: str | None) -> str:
    """Render the per-run checks MLflow confirmed (or why nothing was verified)."""
    if report is None:
        if decision == "denied":
            return "Nothing to verify: no training run was launched."
        return "Not verified: the turn ended before verification."
    if not report.runs and not report.missing_run_ids:
        return "Nothing to verify: no training run was launched."
    rows = ["| run | role | status | checks |", "|---|---|---|---|"]
    for rv in report.runs:
        failed = [f"{c.name}: {c.detail}" for c in rv.checks if not c.passed]
        checks = "all passed" if not failed else "FAILED — " + "; ".join(failed)
        rows.append(f"| `{rv.run_id}` | {rv.role} | {rv.status} | {checks} |")
    lines = ["Checked against MLflow (params, primary metric, model artifact, dataset tags, git SHA):"]
    lines.extend(rows)
    if report.missing_run_ids:
        lines.append("MLflow did not return: " + ", ".join(f"`{i}`" for i in report.missing_run_ids))
    return "\n".join(lines)


def after_rollback_text(record: RollbackRecord | None) -> str:
    """Render the MLflow statuses rollback read back (the turn skipped verification)."""
    checked = [a for a in (record.actions if record else []) if a.run_id]
    if not checked:
        return "Nothing to verify: no run was launched."
    lines = ["Checked in MLflow after the rollback (the runs did not finish, so nothing else was verified):"]
    lines += [f"- `{a.run_id}`: {a.final_status}" for a in checked]
    return "\n".join(lines)


def rollback_text(record: RollbackRecord | None) -> str:
    """Render what rollback did, or say there was nothing to roll back."""
    if record is None:
        return "Nothing to roll back: no run failed and nothing was cancelled."
    lines = [f"Rollback ({record.trigger.replace('_', ' ')}, by {record.requested_by}): {record.reason}"]
    for a in record.actions:
        if a.action == "nothing_running":
            lines.append(f"- {a.note}")
            continue
        target = f"run `{a.run_id}`" if a.run_id else f"job `{a.job_id}`"
        status = f" → {a.final_status}" if a.final_status else ""
        lines.append(f"- {target}: {a.action.replace('_', ' ')}{status}. {a.note}")
    return "\n".join(lines)


def summary_text(request: ExperimentRequest, state: AgentState, links: Mapping[str, str]) -> str:
    """Compare the best run with the baseline, citing only run IDs MLflow returned."""
    if state.get("approval_decision") == "denied":
        return "Approval was denied, so nothing ran. Ask again with a smaller plan or approve it."
    report = state.get("verification")
    verified = report.verified_run_ids if report is not None else set()
    runs = {r.run_id: r for r in state.get("runs", [])}
    baseline = runs.get(state.get("baseline_run_id") or "")
    best = runs.get(state.get("best_run_id") or "")
    if baseline is None or baseline.run_id not in verified:
        stopped = stopped_summary(request, state, links)
        return stopped or "No baseline result to report: " + _why_no_result(state)
    if baseline.status != "FINISHED":
        why = f": {_first_line(baseline.note).rstrip('.')}" if baseline.note else ""
        return (
            f"The baseline run `{baseline.run_id}` ended {baseline.status}{why}. There is no result to "
            "compare; see Rollback for what was stopped and recorded."
        )
    code = f" of {request.code_label}" if request.entry_point is not None else ""
    parts = [f"Baseline{code} {_run_ref(baseline, request.metric, links)}."]
    if best is not None and best.run_id != baseline.run_id and best.run_id in verified:
        tuning = next((r for r in runs.values() if r.role == "tuning"), None)
        delta = _delta(best, baseline, request, tuning)
        parts.append(f"Best run {_run_ref(best, request.metric, links)}; {delta}.")
    elif request.trials:
        parts.append("No tuning trial beat the baseline; the baseline is the best run.")
    if state.get("rollback") is not None:
        parts.append("Some work was rolled back; see Rollback.")
    return " ".join(parts)


def stopped_summary(request: ExperimentRequest, state: AgentState, links: Mapping[str, str]) -> str | None:
    """Summarise a turn that was stopped (cancel, budget, failure): what finished, what was stopped, and
    the best result so far; None when nothing of it finished."""
    record = state.get("rollback")
    if record is None:
        return None
    training = [r for r in state.get("runs", []) if r.role in ("baseline", "trial", "single")]
    finished = [r for r in training if r.status == "FINISHED"]
    if not finished:
        return None
    m = request.metric
    scored = [r for r in finished if primary_value(r.metrics, m) is not None]
    high = request.direction == "maximize"
    best = max(scored, key=lambda r: (primary_value(r.metrics, m) or 0.0) * (1 if high else -1), default=None)
    stopped = [a for a in record.actions if a.run_id and a.action != "nothing_running"]
    baseline = next((r for r in finished if r.role == "baseline"), None)
    trials = [r for r in finished if r.role == "trial"]
    why = f"{record.trigger.replace('_', ' ')}: {_first_line(record.reason)}"
    parts = [f"Stopped before the plan finished ({why})."]
    done = [f"the baseline {_run_ref(baseline, m, links)}"] if baseline else []
    if trials:
        done.append(f"{len(trials)} tuning trial(s)")
    parts.append("Finished: " + (" and ".join(done) or f"{len(finished)} run(s)") + ".")
    if stopped:
        parts.append(f"Stopped: {len(stopped)} run(s), recorded in MLflow (see Rollback).")
    if best is not None and best is not baseline:
        parts.append(f"Best so far: {_run_ref(best, m, links)}.")
    elif best is not None:
        parts.append("Best so far: the baseline.")
    return " ".join(parts)


def _first_line(text: str, limit: int = 200) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _why_no_result(state: AgentState) -> str:
    if state.get("rollback") is not None:
        return "the run did not finish (see Rollback)."
    return "no run finished."


def _run_ref(run: RunRecord, metric: str, links: Mapping[str, str]) -> str:
    found = primary_metric(run.metrics, metric)
    shown = f"{found[0]} = {found[1]:.4f}" if found is not None else f"{metric} not logged"
    link = f" ([open in MLflow]({links[run.run_id]}))" if run.run_id in links else ""
    return f"`{run.run_id}` ({run.status}, {shown}){link}"


def _delta(best: RunRecord, baseline: RunRecord, request: ExperimentRequest, tuning: RunRecord | None) -> str:
    """Return best vs baseline on the test split, with the tuning run's bootstrap interval when it has one."""
    m = request.metric
    found = tuning.metrics if tuning is not None else {}
    gain, low, high = (found.get(f"test_{m}_gain{end}") for end in ("", "_low", "_high"))
    if gain is not None and low is not None and high is not None:
        noise = "within noise" if low <= 0 <= high else "outside noise"
        return (
            f"selected on {selection_metric(m, request.cv_folds)}; on the held-out test split test_{m} "
            f"{gain:+.4f} vs the baseline (95% "
            f"paired bootstrap interval {low:+.4f} to {high:+.4f}: {noise})"
            f"{_cv_spread(best, baseline, m)}"
        )
    b = primary_value(best.metrics, m)
    a = primary_value(baseline.metrics, m)
    if a is None or b is None:
        return "no comparable metric"
    return f"{m} {b - a:+.4f} vs the baseline (no interval computed){_cv_spread(best, baseline, m)}"


def _selection_words(metric: str, cv_folds: int) -> str:
    if cv_folds:
        return (
            f"cv_val_{metric}_mean ({cv_folds}-fold cross-validation on the non-test rows, mean ± std logged)"
        )
    return f"val_{metric} (validation split)"


def _cv_spread(best: RunRecord, baseline: RunRecord, metric: str) -> str:
    """Return the runs' cross-validation mean ± std, and whether the CV difference is within one std."""
    mean, std = f"cv_val_{metric}_mean", f"cv_val_{metric}_std"
    runs = [(r.metrics.get(mean), r.metrics.get(std)) for r in (best, baseline)]
    if any(v is None for pair in runs for v in pair):
        return ""
    (bm, bs), (am, as_) = runs
    assert bm is not None and bs is not None and am is not None and as_ is not None
    noise = "within noise" if abs(bm - am) <= max(bs, as_) else "outside noise"
    return (
        f"; cross-validation {mean} {bm:.4f} ± {bs:.4f} vs baseline {am:.4f} ± {as_:.4f} "
        f"(difference {bm - am:+.4f}, {noise} of one fold std)"
    )


def primary_value(metrics: Mapping[str, float], metric: str) -> float | None:
    """Return the primary metric from a run's metrics (see :func:`primary_metric`), or None."""
    found = primary_metric(metrics, metric)
    return found[1] if found else None


def primary_metric(metrics: Mapping[str, float], metric: str) -> tuple[str, float] | None:
    """Return ``(key, value)`` of a run's primary metric: its test-split value when it has one.

    ``roc_auc`` (unprefixed) is the test split's value, as ``test_roc_auc`` is; selection uses ``val_*``.
    A run with no test-split value (an entry point whose contract is ``val_<metric>`` only) reports its
    ``val_<metric>``, under that name, so no one reads it as a held-out score.
    """
    for key in (metric, f"test_{metric}", f"eval_{metric}", f"val_{metric}"):
        if key in metrics:
            return key, float(metrics[key])
    return None


# ---- cancel ----------------------------------------------------------------------------------------


def cancel_sections(state: AgentState, links: Mapping[str, str]) -> Sections:
    """Describe a cancel request: what was stopped and how each run ended."""
    record = state.get("rollback")
    touched = [a for a in (record.actions if record else []) if a.action != "nothing_running"]
    return {
        "Plan": "Cancel the running work of this conversation and document each cancellation.",
        "Changes": "\n".join(
            f"- run `{a.run_id}`: {a.action.replace('_', ' ')} → {a.final_status}" for a in touched
        )
        or "None: nothing of this conversation was running.",
        "Verification": "\n".join(
            f"- `{a.run_id}` is {a.final_status} in MLflow" for a in touched if a.run_id
        )
        or "Nothing to verify: no run was running.",
        "Rollback": rollback_text(record),
        "Summary": f"Stopped {len(touched)} run(s)." if touched else "Nothing was running; nothing changed.",
    }


# ---- helpers ---------------------------------------------------------------------------------------


def not_understood_text(intake: IntakeDecision | None) -> str:
    """Say which parts of an experiment request were not used (e.g. an unsupported model family)."""
    missed = [quote_line(m) for m in intake.not_understood] if intake is not None else []
    return ("Not understood, so not used:\n" + "\n".join(f"- {m}" for m in missed)) if missed else ""


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _params(params: Mapping[str, Any]) -> str:
    return "default parameters" if not params else "parameters " + json.dumps(dict(params), default=str)


def _spec(spec: Any) -> str:
    if not isinstance(spec, dict):
        return str(spec)
    if spec.get("type") == "fixed":
        return f"= {spec.get('value')}"
    if spec.get("type") == "categorical":
        return "in " + "/".join(str(c) for c in spec.get("choices", []))
    scale = " log" if spec.get("log") else ""
    return f"[{spec.get('low'):g}, {spec.get('high'):g}]{scale}"


def _short_args(args: Mapping[str, Any]) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in args.items())
    return text if len(text) <= 80 else text[:77] + "..."


# ---- awaiting approval -----------------------------------------------------------------------------


def awaiting_approval_sections(state: Mapping[str, Any], approval: Any) -> Sections:
    """Describe a plan that waits for approval: nothing launched yet, how to decide."""
    plan = state.get("plan")
    session = plan.session_run_id if plan is not None else None
    reasons = "\n".join(f"- {r}" for r in approval.reasons) or "- the guard asked for approval"
    return {
        "Plan": plan_text(plan, state) if plan is not None else "A plan is waiting for approval.",  # type: ignore[arg-type]
        "Changes": f"- Session run `{session}` created with the plan (status SCHEDULED); no training run "
        "launched yet."
        if session
        else "None yet.",
        "Verification": "Not verified yet: nothing has run.",
        "Rollback": "Nothing to roll back: nothing has run.",
        "Summary": f"Waiting for approval ({', '.join(approval.approval_keys)}):\n{reasons}\n\n"
        "Approve to run the plan, or deny to end the turn without launching anything.",
    }
