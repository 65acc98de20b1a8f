"""plan: turn the complete request into an ExperimentPlan, check it against the guard, log it to MLflow.

The plan is code: baseline config (family defaults unless the user fixed params), the tuning study
(search space from ``prompts/search_spaces.yaml``, every stopping criterion), the compute estimate
against the budget, and the approval keys the guard would ask for. It is logged as ``plan.json`` and
``plan.md`` on a new session run (``expagent.role=session``) in the request's experiment.

Before anything is logged, the guard judges the baseline launch exactly as ``start_training_run`` will
send it (runtime and namespace included): a hard rejection (e.g. a namespace outside the allowlist) is a
refusal, audited, with nothing created; a runtime that cannot be opened (no cluster configured or
reachable) is reported as a problem with the request, again with nothing created.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from langgraph.runtime import Runtime
from langgraph.types import Command

from agent.experiment_plan import (
    BaselineConfig,
    ComputeEstimate,
    ExperimentPlan,
    ExperimentRequest,
    TuningPlan,
)
from agent.state import AgentState, Refusal, RunRecord
from agent.tool_calls import audit_refusal
from agent.turn_context import TurnContext, turn_context
from tools.core.entrypoints import EntryPointError, EntryPointRegistry
from tools.core.redact import redact_text
from tools.core.settings import Settings
from tools.core.tags import NOTE
from tools.core.tracking import create_parent_run
from tools.guard.policy import Halt, Reject, evaluate
from tools.toolset import get_tool
from tools.tuning.budget import DEFAULT_RUN_SECONDS, TrialCost, cv_fit_factor, estimate_plan
from tools.tuning.cost_history import typical_baseline_cost
from tools.tuning.records import StudySettings, WarmStartTrial, default_parallelism
from tools.tuning.space import SEARCH_SPACES_FILE, SearchSpaceError, load_search_space, project_search_space
from tools.tuning.warm_start import find_warm_start

DEFAULT_TIMEOUT_SECONDS = 600
Route = Literal["approve", "execute", "respond"]


def plan(state: AgentState, runtime: Runtime[TurnContext]) -> Command[Route]:
    """Build, check and log the plan; route to approval when the guard asks for it."""
    ctx = turn_context(runtime)
    request = state.get("request")
    assert request is not None, "plan runs only after intake completed the request"
    ctx.tools.approvals.update(state.get("approvals", []))
    try:
        draft = build_plan(request, ctx)
    except SearchSpaceError as exc:
        return Command(goto="respond", update={"request_problems": [str(exc)], "asked_for": []})
    unavailable = runtime_problem(request, ctx)
    hard = hard_rejections(draft, ctx, skip_runtime_rules=unavailable is not None)
    if hard:
        return Command(goto="respond", update=_refusal_update(hard, training_args(draft), ctx))
    if unavailable is not None:
        return Command(goto="respond", update={"request_problems": [unavailable], "asked_for": []})
    approvals = approval_needs(draft, ctx)
    draft.approval_keys = sorted({key for key, _ in approvals})
    draft.approval_reasons = [reason for _, reason in approvals]
    session = log_session_run(draft, ctx, awaiting=bool(draft.approval_keys))
    update: dict[str, Any] = {"plan": draft, "runs": [session]}
    return Command(goto="approve" if draft.approval_keys else "execute", update=update)


# ---- building ---------------------------------------------------------------------------------------


def build_plan(request: ExperimentRequest, ctx: TurnContext) -> ExperimentPlan:
    """Return the plan for ``request`` (no session run yet); raises SearchSpaceError for a bad override."""
    settings = ctx.tools.settings
    timeout = min(DEFAULT_TIMEOUT_SECONDS, settings.budget.max_wall_seconds_per_run)
    baseline = BaselineConfig(
        model_family=request.model_family,
        entry_point=request.entry_point,
        params=request.params,
        seed=request.seed,
        resources=request.resources,
        timeout_seconds=timeout,
    )
    prior = (
        typical_baseline_cost(
            ctx.tools.tracking,
            f"{request.dataset}@{request.version}",
            request.model_family,
            request.resources.cpu,
            request.cv_folds,
        )  # fmt: skip
        if request.model_family is not None
        else None  # user code: no history of earlier baselines to go by
    )
    tuning = _tuning_plan(request, ctx, timeout, prior) if request.trials > 0 else None
    return ExperimentPlan(
        request=request, baseline=baseline, tuning=tuning, estimate=_estimate(request, tuning, prior)
    )


def _tuning_plan(
    request: ExperimentRequest, ctx: TurnContext, timeout: int, prior: TrialCost | None
) -> TuningPlan:
    settings = ctx.tools.settings
    space, source, pruning = _search_space(request, settings)
    parallelism = request.parallelism or default_parallelism(
        settings.budget.max_concurrent_jobs, request.resources.cpu, request.trials
    )
    study = StudySettings(
        **request.run_template().model_dump(),
        study_name=f"{ctx.thread_id}-{request.experiment}-{request.code_label.replace(' ', '-')}",
        session_id=ctx.thread_id,
        direction=request.direction,
        search_space=space,
        n_trials=request.trials,
        parallelism=parallelism,
        wall_clock_seconds=request.wall_minutes * 60 if request.wall_minutes else None,
        cpu_hours=request.cpu_hours,
        gpu_hours=request.gpu_hours or None,
        patience=request.patience,
        target=request.target,
        trial_timeout_seconds=timeout,
        warm_start=request.warm_start,
        trials_before=request.trials_before,
        **pruning,
    )
    if study.warm_start:
        study.warm_start_trials = _warm_start_trials(ctx, study)
    estimate = estimate_plan(None, study, settings.budget, prior=prior)
    overrides = "your overrides on " if request.search_space else ""
    return TuningPlan(study=study, search_space_source=f"{overrides}{source}", estimate=estimate)


def _search_space(
    request: ExperimentRequest, settings: Settings
) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """Return the search space, where it came from, and the pruning settings of the study.

    A family's space is in ``prompts/search_spaces.yaml``; a project's in its ``expagent.yaml`` (or around
    its declared params' defaults), with the params the user fixed held fixed in every trial. A project's
    steps are its own (epochs): the pruner looks at every one after the first.
    """
    if request.entry_point is None:
        space = load_search_space(str(request.model_family), request.search_space)
        return space, SEARCH_SPACES_FILE.name, {}
    call = request.entry_point
    try:
        record = EntryPointRegistry.open(settings).resolve(call.ref)
    except EntryPointError as exc:
        raise SearchSpaceError(str(exc)) from exc
    space = project_search_space(record, call.entry, {**request.params, **request.search_space})
    configured = bool(record.config.search_space)
    source = f"{call.ref} expagent.yaml" if configured else f"around the declared params of {call.ref}"
    pruning = {
        "prune": record.config.reports_intermediate,
        "prune_warmup_steps": 1,
        "prune_interval_steps": 1,
        "prune_startup_trials": min(5, max(2, request.trials // 3)),
    }
    return space, source, pruning


def _warm_start_trials(ctx: TurnContext, study: StudySettings) -> list[WarmStartTrial]:
    """Return the earlier trials to enqueue first; none when MLflow cannot be searched."""
    try:
        return find_warm_start(ctx.tools.tracking, study)
    except Exception:  # noqa: BLE001 - a warm start is an optimisation: plan without it
        return []


def _estimate(
    request: ExperimentRequest, tuning: TuningPlan | None, prior: TrialCost | None
) -> ComputeEstimate:
    default = DEFAULT_RUN_SECONDS * cv_fit_factor(request.cv_folds) * request.resources.cpu
    per_run = prior.cpu_seconds if prior is not None else default
    if tuning is None:
        total = per_run / 3600
        return ComputeEstimate(
            cpu_seconds_per_run=per_run, runs=1, total_cpu_hours=total, budget_cpu_hours=request.cpu_hours,
            trials_that_fit=0, within_budget=total <= request.cpu_hours,
        )  # fmt: skip
    e = tuning.estimate
    return ComputeEstimate(
        cpu_seconds_per_run=e.per_trial_cpu_seconds, runs=1 + e.trials_requested,
        total_cpu_hours=e.cpu_hours_estimated, budget_cpu_hours=request.cpu_hours,
        trials_that_fit=e.trials_that_fit, within_budget=e.within_budget,
    )  # fmt: skip


def training_args(
    plan: ExperimentPlan, role: str = "baseline", parent_run_id: str | None = None
) -> dict[str, Any]:
    """Return the ``start_training_run`` arguments of the plan's baseline run.

    The session and requester are not arguments: the tool takes them from the ToolContext. The
    runtime and namespace are the request's, so the guard judges where the run would really go.
    """
    b = plan.baseline
    template = plan.request.run_template(model_family=b.model_family, seed=b.seed)
    template.resources = b.resources
    code = b.entry_point.ref if b.entry_point is not None else b.model_family
    return {
        **template.model_dump(mode="json"),
        "params": b.params,
        "role": role,
        "run_name": f"{role}-{code}",
        "parent_run_id": parent_run_id or plan.session_run_id,
        "timeout_seconds": b.timeout_seconds,
    }


# ---- checking against the guard ---------------------------------------------------------------------


def runtime_problem(request: ExperimentRequest, ctx: TurnContext) -> str | None:
    """Return why the request's runtime cannot be used (e.g. no cluster reachable), or None if it can."""
    try:
        ctx.tools.runtime_named(request.runtime)
    except Exception as exc:  # noqa: BLE001 - any failure to open it is reported, never raised
        why = redact_text(f"{type(exc).__name__}: {exc}").rstrip(".")
        return (
            f"The {request.runtime} runtime is not available, so nothing was launched: {why}. Fix the "
            "configuration (for Kubernetes: EXPAGENT_K8S_KUBECONFIG / EXPAGENT_K8S_CONTEXT and a reachable "
            "API server), or ask to run locally."
        )
    return None


def _launch_findings(
    plan: ExperimentPlan, ctx: TurnContext, skip: tuple[str, ...] = ()
) -> list[Reject | Halt]:
    tool = get_tool("start_training_run")
    args = tool.args_model.model_validate(training_args(plan))
    return evaluate(tool, args, ctx.tools, skip)


def hard_rejections(
    plan: ExperimentPlan, ctx: TurnContext, skip_runtime_rules: bool = False
) -> list[Reject | Halt]:
    """Return the guard's findings on the baseline launch that no approval can lift.

    With ``skip_runtime_rules`` (the runtime cannot be opened) the rules that need no runtime still
    run (all but ``resources``, which counts running jobs), so a forbidden namespace is still refused.
    """
    findings = _launch_findings(plan, ctx, ("resources",) if skip_runtime_rules else ())
    return [f for f in findings if isinstance(f, Halt) or f.approval_key is None]


def approval_needs(plan: ExperimentPlan, ctx: TurnContext) -> list[tuple[str, str]]:
    """Return ``(approval_key, reason)`` for everything in the plan the user must approve first."""
    needs = [
        (f.approval_key, f.reason)
        for f in _launch_findings(plan, ctx)
        if isinstance(f, Reject) and f.approval_key
    ]
    if plan.tuning is not None:
        estimate = plan.tuning.estimate
        for key in estimate.approval_keys:
            if key not in ctx.tools.approvals:
                needs.append((key, f"{_KEY_REASONS.get(key, key)}: {estimate.summary}"))
    return [(k, r) for k, r in needs if k is not None]


_KEY_REASONS = {
    "budget:cpu": "the requested trials do not fit the CPU budget",
    "budget:gpu": "the requested trials do not fit the GPU budget",
    "budget:trials": "more trials than the configured maximum",
    "concurrency": "more parallel jobs than the configured cap",
}


def _refusal_update(findings: list[Reject | Halt], args: dict[str, Any], ctx: TurnContext) -> dict[str, Any]:
    first = findings[0]
    # The launch never reaches the guard's call path, so its verdicts are audited here.
    events = [
        audit_refusal(ctx.tools, "start_training_run", f.rule, f.reason, args).model_copy(
            update={"verdict": f.verdict}
        )
        for f in findings
    ]
    refusal = Refusal(
        action="other",
        rule=first.rule,
        reason=f"The plan breaks policy rule '{first.rule}': {first.reason}",
        alternatives=["Change the request as the reason says (resources, namespace, runtime) and ask again."],
    )
    return {"refusal": refusal, "policy_events": events}


# ---- the session run --------------------------------------------------------------------------------


def request_summary(plan: ExperimentPlan) -> str:
    """Return the request in one line: what is trained on which data, with how many trials."""
    r = plan.request
    what = f"tune {r.code_label} ({r.trials} trials)" if r.trials else f"train a {r.code_label} baseline"
    return f"{what} on {r.dataset}@{r.version}, metric {r.metric}"


def session_run_name(plan: ExperimentPlan) -> str:
    """Return the session run's name: the request it holds (``session: tune lightgbm …``)."""
    return f"session: {request_summary(plan)}"[:250]


def log_session_run(plan: ExperimentPlan, ctx: TurnContext, awaiting: bool) -> RunRecord:
    """Create the session run, attach plan.json/plan.md; SCHEDULED while approval is pending."""
    from agent.sections import plan_text

    r = plan.request
    params = {"dataset": f"{r.dataset}@{r.version}", "metric": r.metric,
              "trials": r.trials, "runtime": r.runtime,
              ("entry_point" if r.entry_point else "model_family"): r.code_label}  # fmt: skip
    note = f"Request by {ctx.tools.requester}: {request_summary(plan)}.\n\n" + plan_text(plan, {})
    run_id = create_parent_run(
        ctx.tools, r.experiment, "session", run_name=session_run_name(plan), params=params,
        tags={NOTE: note},
    )  # fmt: skip
    plan.session_run_id = run_id
    if plan.tuning is not None:
        plan.tuning.study.parent_run_id = run_id
        plan.tuning.study.study_name = f"{ctx.thread_id}-{run_id[:12]}"
    client = ctx.tools.tracking
    client.log_text(run_id, json.dumps(plan.model_dump(mode="json"), indent=2) + "\n", "plan.json")
    client.log_text(run_id, plan_text(plan, {}) + "\n", "plan.md")
    status = "RUNNING"
    if awaiting:
        client.update_run(run_id, status="SCHEDULED")
        status = "SCHEDULED"
    return RunRecord(run_id=run_id, role="session", status=status, note="holds the plan and the answer")
