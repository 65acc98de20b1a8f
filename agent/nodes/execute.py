"""execute: run the plan through the guarded tools — the baseline, then the tuning study if planned.

Waiting polls the runtime in short slices so a cancel (``TurnContext.cancel_event``, set from another
thread by the service or by Ctrl-C in chat) is noticed within a fraction of a second; cancelled work
goes to rollback, everything else to verify.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from langgraph.runtime import Runtime
from langgraph.types import Command

from agent.experiment_plan import ExperimentPlan, RollbackRecord
from agent.nodes.plan import training_args
from agent.sections import plan_text
from agent.state import AgentState, RunRecord
from agent.tool_calls import call_tool
from agent.turn_context import TurnContext, turn_context
from tools.core import tags as tag_keys
from tools.core.specs import JobInfo, selection_metric
from tools.core.tracking import end_run
from tools.tuning.records import StudyResult, TrialResult

POLL_SECONDS = 0.25
Route = Literal["verify", "rollback"]
_JOB_TO_RUN_STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}
_TRIAL_TO_RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED", "KILLED": "KILLED"}


class Cancelled(Exception):
    """The user cancelled while work was running."""


def execute(state: AgentState, runtime: Runtime[TurnContext]) -> Command[Route]:
    """Launch and wait for the baseline, then run the tuning study when the plan has one."""
    ctx = turn_context(runtime)
    plan = state.get("plan")
    assert plan is not None and plan.session_run_id is not None
    ctx.tools.approvals.update(state.get("approvals", []))
    update: dict[str, Any] = {"execution_notes": [], "policy_events": [], "runs": []}
    if ctx.cancel_event.is_set():
        update["rollback"] = _cancel_record(ctx)
        return Command(goto="rollback", update=update)
    if plan.request.continues_from and plan.tuning is not None:
        return _continue(ctx, plan, plan.request.continues_from, update)
    started = adopt_baseline(ctx, plan)  # a turn resumed after a crash must not launch it twice
    if started is None:
        ctx.progress("plan", plan_text(plan, state))  # the front end shows the plan before training starts
        launch = call_tool(ctx.tools, "start_training_run", training_args(plan))
        update["policy_events"] += launch.policy_events()
        if not launch.ok:
            update["execution_notes"].append(f"The baseline was not launched: {launch.problem}")
            return Command(goto="verify", update=update)
        started = str(launch.data["run_id"]), str(launch.data["job_id"])
    run_id, job_id = started
    ctx.progress("run_started", f"baseline run {run_id} started (job {job_id})", run_id)
    try:
        job = wait_for_job(ctx, job_id)
    except Cancelled:
        update["runs"].append(RunRecord(run_id=run_id, role="baseline", status="RUNNING", job_id=job_id))
        update.update(baseline_run_id=run_id, rollback=_cancel_record(ctx))
        return Command(goto="rollback", update=update)
    baseline = finished_record(ctx, run_id, job, "baseline")
    ctx.progress("run_finished", f"baseline run {run_id}: {baseline.status}", run_id)
    update["runs"].append(baseline)
    update.update(baseline_run_id=run_id, best_run_id=run_id if baseline.status == "FINISHED" else None)
    if plan.tuning is not None:
        return _tune(ctx, plan, baseline, job, update)
    return Command(goto="verify", update=update)


def adopt_baseline(ctx: TurnContext, plan: ExperimentPlan) -> tuple[str, str] | None:
    """Return ``(run_id, job_id)`` of a baseline this plan already launched (before a crash), if any."""
    client = ctx.tools.tracking
    experiment = client.get_experiment_by_name(plan.request.experiment)
    if experiment is None:
        return None
    query = (
        f"tags.`{tag_keys.SESSION}` = '{ctx.thread_id}' and tags.`{tag_keys.ROLE}` = 'baseline' "
        f"and tags.`mlflow.parentRunId` = '{plan.session_run_id}'"
    )
    for run in client.search_runs([experiment.experiment_id], filter_string=query, max_results=1):
        job_id = run.data.tags.get(tag_keys.JOB_ID)
        if job_id:
            return run.info.run_id, job_id
    return None


def wait_for_job(ctx: TurnContext, job_id: str) -> JobInfo:
    """Block until the job is done; raise Cancelled as soon as the turn's cancel event is set."""
    while True:
        if ctx.cancel_event.is_set():
            raise Cancelled()
        runtime = ctx.tools.runtime_for_job(job_id)  # the job ID names the runtime that runs it
        job = next(j for j in runtime.wait([job_id], timeout=POLL_SECONDS) if j.job_id == job_id)
        if job.done:
            return job


def finished_record(ctx: TurnContext, run_id: str, job: JobInfo, role: str) -> RunRecord:
    """Return the run as MLflow has it after its job ended; a run the job left RUNNING is ended here."""
    client = ctx.tools.tracking
    run = client.get_run(run_id)
    if run.info.status == "RUNNING":
        status = _JOB_TO_RUN_STATUS.get(job.state, "FAILED")
        why = f"job {job.job_id} ended {job.state} without closing its run: {job.reason or 'no reason given'}"
        end_run(client, run_id, "KILLED" if status == "KILLED" else "FAILED", note=why)
        run = client.get_run(run_id)
    note = run.data.tags.get("mlflow.note.content") if run.info.status != "FINISHED" else None
    return RunRecord(
        run_id=run_id, role=role, status=run.info.status, job_id=job.job_id,  # type: ignore[arg-type]
        params=dict(run.data.params), metrics=dict(run.data.metrics), note=note or job.reason,
    )  # fmt: skip


def _cancel_record(ctx: TurnContext) -> RollbackRecord:
    by = ctx.cancelled_by or ctx.tools.requester
    return RollbackRecord(
        trigger="user_cancelled", reason=f"cancelled by {by} while runs were executing", requested_by=by
    )


# ---- tuning ----------------------------------------------------------------------------------------

StudyRunner = Callable[..., StudyResult]


def study_runner() -> StudyRunner | None:
    """Return ``tools.tuning.study.run_study`` when the tuning loop is installed, else None."""
    try:
        from tools.tuning.study import run_study
    except ImportError:
        return None
    return run_study  # type: ignore[no-any-return]


def _continue(
    ctx: TurnContext, plan: ExperimentPlan, baseline_id: str, update: dict[str, Any]
) -> Command[Route]:
    """Run more trials for the thread's earlier request: no new baseline, compared with the earlier one."""
    run = ctx.tools.tracking.get_run(baseline_id)
    m = plan.request.metric
    metrics = dict(run.data.metrics)
    baseline = RunRecord(
        run_id=baseline_id, role="baseline", status=run.info.status, params=dict(run.data.params),
        metrics=metrics, note="the thread's earlier baseline (not run again)",
    )  # fmt: skip
    from agent.sections import primary_value

    seed = TrialResult(
        number=None, run_id=baseline_id, state="COMPLETE",
        value=metrics.get(f"val_{m}", primary_value(metrics, m)), params=baseline.params,
    )  # fmt: skip
    update["execution_notes"].append(
        f"No new baseline: continuing from the thread's baseline `{baseline_id}` with "
        f"{plan.tuning.study.n_trials if plan.tuning else 0} more trials."
    )
    update["runs"].append(baseline)
    update.update(baseline_run_id=baseline_id, best_run_id=baseline_id)
    return _tune(ctx, plan, baseline, None, update, seed)


def _tune(
    ctx: TurnContext,
    plan: ExperimentPlan,
    baseline: RunRecord,
    job: JobInfo | None,
    update: dict[str, Any],
    seed: TrialResult | None = None,
) -> Command[Route]:
    assert plan.tuning is not None
    run_study = study_runner()
    if run_study is None:
        update["execution_notes"].append(
            f"Tuning was not run: the tuning loop is not installed in this build; only the baseline ran "
            f"({plan.tuning.study.n_trials} trials were planned)."
        )
        return Command(goto="verify", update=update)
    if baseline.status != "FINISHED":
        update["execution_notes"].append("Tuning was not started because the baseline did not finish.")
        return Command(goto="verify", update=update)
    if seed is None:
        assert job is not None
        seed = _baseline_trial(baseline, job, plan)
    result = run_study(ctx.tools, plan.tuning.study, seed, ctx.progress_from, ctx.cancel_event)
    update["runs"] += study_records(result, plan)
    update["execution_notes"].append(
        f"Tuning stopped ({result.stop_reason}): {result.stop_detail}".rstrip(": ")
    )
    update["execution_notes"] += result.notes
    if result.test_comparison is not None:
        update["execution_notes"].append(result.test_comparison.sentence())
    if result.plots:
        plots = ", ".join(f"`{p}`" for p in result.plots)
        update["execution_notes"].append(
            f"Tuning run `{result.tuning_run_id}` has the optimisation history as its best_val_"
            f"{result.metric} chart and the study's plots {plots}."
        )
    if result.best is not None and result.best.run_id and result.improved_over_baseline:
        update["best_run_id"] = result.best.run_id
    if result.stop_reason == "cancelled":
        update["rollback"] = _cancel_record(ctx)
        return Command(goto="rollback", update=update)
    return Command(goto="verify", update=update)


def _baseline_trial(baseline: RunRecord, job: JobInfo, plan: ExperimentPlan) -> TrialResult:
    from agent.sections import primary_value

    m = plan.request.metric  # the study compares on validation: the baseline's val_<metric> or CV mean
    key = selection_metric(m, plan.request.cv_folds)
    return TrialResult(
        number=None, run_id=baseline.run_id, job_id=job.job_id, state="COMPLETE",
        value=baseline.metrics.get(key, primary_value(baseline.metrics, m)),
        params=baseline.params,
        wall_seconds=job.wall_seconds, cpu_seconds=job.cpu_seconds,
    )  # fmt: skip


def study_records(result: StudyResult, plan: ExperimentPlan) -> list[RunRecord]:
    """Return run records for the study's parent run and every trial that has a run."""
    records = [
        RunRecord(
            run_id=result.tuning_run_id, role="tuning", status="FINISHED", note=result.stop_detail or None
        )
    ]
    for trial in result.trials:
        if not trial.run_id:
            continue
        metrics: dict[str, float] = (
            {selection_metric(plan.request.metric, plan.request.cv_folds): trial.value}
            if trial.value is not None and trial.state == "COMPLETE"
            else {}
        )
        records.append(
            RunRecord(
                run_id=trial.run_id,
                role="trial",
                status=_TRIAL_TO_RUN_STATUS[trial.state],
                job_id=trial.job_id,
                trial_number=trial.number,
                params=trial.params,
                metrics=metrics,
                note=trial.note,
            )  # fmt: skip
        )
    return records
