"""verify: ask MLflow about every run this turn launched and check what the tracker must contain.

Runs are found twice — from the turn's own records and by searching MLflow for this session's runs
started during the turn — so trials the tuning loop launched are verified too. Answers may only cite
run IDs this node got back from MLflow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, get_args

from langgraph.runtime import Runtime
from langgraph.types import Command

from agent.experiment_plan import (
    ExperimentRequest,
    RollbackRecord,
    RunCheck,
    RunVerification,
    VerificationReport,
)
from agent.sections import primary_metric
from agent.state import AgentState, RunRecord, RunRole
from agent.turn_context import TurnContext, turn_context
from tools.core import tags as tag_keys
from tools.core.specs import selection_metric
from tools.core.tracking import model_uri

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

Route = Literal["respond", "rollback"]
TRAINING_ROLES = frozenset({"baseline", "trial", "single"})


def verify(state: AgentState, runtime: Runtime[TurnContext]) -> Command[Route]:
    """Build the VerificationReport; failed, killed or still-running runs go to rollback."""
    ctx = turn_context(runtime)
    plan = state.get("plan")
    assert plan is not None
    client = ctx.tools.tracking
    records = session_runs(client, state, plan.request.experiment, ctx.thread_id)
    report = VerificationReport()
    refreshed: list[RunRecord] = []
    for record in records:
        run = _get(client, record.run_id)
        if run is None:
            report.missing_run_ids.append(record.run_id)
            continue
        refreshed.append(refresh(record, run))
        if record.role != "session":
            report.runs.append(check_run(client, run, record.role, plan.request))
    update: dict[str, Any] = {"verification": report, "runs": refreshed}
    broken = [r for r in refreshed if r.role != "session" and r.status != "FINISHED"]
    if broken or report.missing_run_ids:
        if state.get("rollback") is None:
            ids = ", ".join(r.run_id for r in broken) or ", ".join(report.missing_run_ids)
            update["rollback"] = RollbackRecord(
                trigger="run_failed", reason=f"run(s) did not finish: {ids}", requested_by="expagent"
            )
        return Command(goto="rollback", update=update)
    return Command(goto="respond", update=update)


def session_runs(
    client: MlflowClient, state: AgentState, experiment: str, session_id: str
) -> list[RunRecord]:
    """Return the turn's run records plus any run MLflow has for this session since the turn began."""
    records = {r.run_id: r for r in state.get("runs", [])}
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        since = int(state.get("turn_started_at", 0) * 1000)
        query = f"tags.`{tag_keys.SESSION}` = '{session_id}' and attributes.start_time >= {since}"
        for run in client.search_runs([found.experiment_id], filter_string=query, max_results=1000):
            role = run.data.tags.get(tag_keys.ROLE, "single")
            if run.info.run_id not in records and role in get_args(RunRole):
                record = {"run_id": run.info.run_id, "role": role, "status": run.info.status}
                records[run.info.run_id] = RunRecord.model_validate(record)
    return list(records.values())


def _get(client: MlflowClient, run_id: str) -> Run | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException:
        return None


def refresh(record: RunRecord, run: Run) -> RunRecord:
    """Return the record with status, params and metrics as MLflow has them."""
    note = record.note
    if run.info.status != "FINISHED" and not note:
        note = run.data.tags.get("mlflow.note.content")
    return record.model_copy(
        update={
            "status": run.info.status,
            "params": dict(run.data.params) or record.params,
            "metrics": dict(run.data.metrics) or record.metrics,
            "job_id": record.job_id or run.data.tags.get(tag_keys.JOB_ID),
            "note": note,
        }
    )


def check_run(client: MlflowClient, run: Run, role: str, request: ExperimentRequest) -> RunVerification:
    """Return the checks of one run (training runs get all of them, a tuning run its status)."""
    checks = [_check("status_finished", run.info.status == "FINISHED", f"status {run.info.status}")]
    if role in TRAINING_ROLES:
        checks += training_checks(client, run, request)
    if role == "tuning" and run.info.status == "FINISHED":
        selected = run.data.tags.get(tag_keys.SELECTED_ON)
        wanted = selection_metric(request.metric, request.cv_folds)
        checks.append(
            _check(
                "selected_on_validation",
                selected == wanted,
                f"best trial selected on {selected or 'unknown'}",
            )
        )
    return RunVerification(run_id=run.info.run_id, role=role, status=run.info.status, checks=checks)


def training_checks(client: MlflowClient, run: Run, request: ExperimentRequest) -> list[RunCheck]:
    """Check params, the primary metric, the model, the dataset tags and the git SHA of a run."""
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    found = primary_metric(metrics, request.metric)
    uri = tags.get(tag_keys.MODEL_URI) or model_uri(client, run)
    expected = {"dataset.name": request.dataset, "dataset.version": request.version}
    if request.dataset_sha256:
        expected["dataset.sha256"] = request.dataset_sha256
    wrong = [f"{k}={tags.get(k)!r} (expected {v!r})" for k, v in expected.items() if tags.get(k) != v]
    sha = tags.get("git_sha")
    return [
        _check("params_logged", bool(params), f"{len(params)} params"),
        _check(
            "primary_metric_logged",
            found is not None,
            f"{found[0]} = {found[1]}" if found is not None else f"{request.metric} missing",
        ),  # fmt: skip
        _check("model_artifact", bool(uri), uri or "no model logged"),
        _check(
            "dataset_tags", not wrong, "; ".join(wrong) or f"{request.dataset}@{request.version}, sha256 ok"
        ),
        _check(
            "git_sha_tag",
            bool(sha),
            f"git_sha {sha}" + (f" ({tags['git_sha_reason']})" if tags.get("git_sha_reason") else "")
            if sha
            else "git_sha tag missing",
        ),  # fmt: skip
    ]


def _check(name: str, passed: bool, detail: str) -> RunCheck:
    return RunCheck(name=name, passed=passed, detail=detail)  # type: ignore[arg-type]
