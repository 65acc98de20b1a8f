"""Training tools: start a run, watch its job, read its logs, cancel it.

``start_training_run`` opens the spec's runtime (``spec.runtime``, else the configured one), creates the
MLflow run (RUNNING, expagent tags) and then submits the job, so every attempt is tracked; if the
submission fails the run ends FAILED with the error. A runtime that cannot be opened (no cluster
configured or reachable) fails the call before any run exists. Job IDs name their runtime (``local-…``,
``expagent-…``), so status, logs and cancel go to the runtime that runs the job. Whoever observes a job
end without the trainer having closed its run closes it (``get_job_status``).
"""

from __future__ import annotations

import traceback
from typing import TYPE_CHECKING, cast

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from tools.context import ToolContext, job_id_of_run, runtime_name
from tools.core import tags as tag_keys
from tools.core import tracking
from tools.core.entrypoints import EntryPointRegistry
from tools.core.redact import redact_text
from tools.core.registry import DatasetRecord, RegistryError
from tools.core.registry_violations import check_finished_run
from tools.core.specs import DataSource, JobInfo, RuntimeName, TrainingSpec
from tools.toolset import tool

if TYPE_CHECKING:
    from mlflow.entities import Run

    from tools.runtime.base import Runtime


class StartTrainingRunArgs(TrainingSpec):
    """One training run to launch (the run ID, session and requester are filled in by expagent)."""

    model_config = ConfigDict(extra="forbid")

    # Set by the launcher, never by the model: hidden from the schema and only None is accepted.
    run_id: SkipJsonSchema[None] = Field(default=None, exclude=True)
    data_source: SkipJsonSchema[None] = Field(default=None, exclude=True)
    session_id: SkipJsonSchema[None] = Field(default=None, exclude=True)
    requester: SkipJsonSchema[None] = Field(default=None, exclude=True)


class StartedRun(BaseModel):
    """A launched training run."""

    run_id: str = Field(description="MLflow run ID.")
    job_id: str = Field(description="Runtime job ID (for get_job_status, get_job_logs, cancel_job).")
    experiment_id: str
    state: str = Field(description="Job state right after submission.")
    ui_url: str = Field(description="Link to the run in the MLflow UI.")


class JobRef(BaseModel):
    """Which job."""

    job_id: str = Field(description="Job ID returned by start_training_run.")


class JobStatus(JobInfo):
    """A job's state together with its MLflow run's status."""

    run_status: str | None = Field(
        default=None, description="MLflow run status: RUNNING, FINISHED, FAILED, KILLED."
    )
    ui_url: str | None = None


class JobLogsArgs(BaseModel):
    """Which job's output to read."""

    job_id: str = Field(description="Job ID returned by start_training_run.")
    tail_lines: int = Field(
        default=50, ge=1, le=1000, description="How many of the last lines to return (1-1000)."
    )


class JobLogs(BaseModel):
    """The end of a job's combined stdout/stderr (secrets and personal data redacted)."""

    job_id: str
    text: str


class CancelJobArgs(BaseModel):
    """Which job to stop, and why."""

    job_id: str = Field(description="Job ID returned by start_training_run.")
    reason: str = Field(min_length=3, max_length=500, description="Why the job is being stopped.")


def data_source_of(record: DatasetRecord) -> DataSource | None:
    """Return the pinned S3 object version a job of ``record`` reads (None: a workspace file)."""
    if not record.in_s3 or not record.s3_version_id:
        return None
    return DataSource(
        uri=record.uri, version_id=record.s3_version_id, sha256=record.sha256, format=record.format,
        catalog_entry=record.model_dump(mode="json"),
    )  # fmt: skip


def _data_source(ctx: ToolContext, args: TrainingSpec) -> DataSource | None:
    try:  # the entry the guard has just verified
        return data_source_of(ctx.registry.get(args.dataset, args.version))
    except RegistryError:
        return None  # not a plain name and version: the trainer reports what is wrong


def _code_tags(ctx: ToolContext, spec: TrainingSpec) -> dict[str, str]:
    """Return the pin of the entry point the guard has just verified (tree sha256, git commit)."""
    if spec.entry_point is None:
        return {}
    record = EntryPointRegistry.open(ctx.settings).resolve(spec.entry_point.ref)
    pins = {tag_keys.ENTRY_POINT_TREE: record.tree_sha256}
    if record.git_commit:
        pins[tag_keys.ENTRY_POINT_COMMIT] = record.git_commit
    return pins


def _submit(ctx: ToolContext, runtime: Runtime, spec: TrainingSpec) -> JobInfo:
    """Submit ``spec`` (its run exists); on failure end the run FAILED with the error and re-raise."""
    assert spec.run_id is not None
    try:
        return runtime.submit(spec, approvals=frozenset(ctx.approvals))
    except Exception as exc:
        tracking.end_run(
            ctx, spec.run_id, "FAILED", note=f"Job submission failed: {type(exc).__name__}: {exc}",
            artifacts={"submit_error.txt": traceback.format_exc()},
        )  # fmt: skip
        raise


@tool(read_only=False)
def start_training_run(ctx: ToolContext, args: StartTrainingRunArgs) -> StartedRun:
    """Start one training run on a registered, validated dataset version; returns run and job IDs.

    The run is logged to MLflow (params, metrics, model, dataset, code version). It runs in the
    background: poll get_job_status until it is done. Model params go in 'params' (e.g.
    {"n_estimators": 200, "learning_rate": 0.05} for lightgbm); 'seed' and 'resources.cpu' set the
    random state and thread count. 'runtime' ('local' or 'kubernetes') and 'namespace' (an allowed
    Kubernetes namespace) choose where it runs; leave them null for the configured defaults.
    """
    spec = TrainingSpec(
        **args.model_dump(exclude={"run_id", "session_id", "requester", "data_source"}),
        session_id=ctx.session_id,
        requester=ctx.requester,
        data_source=_data_source(ctx, args),
    )
    runtime = ctx.runtime_for(spec)  # no cluster configured or reachable: fail before any run exists
    spec.runtime = cast(RuntimeName, runtime_name(runtime, spec.runtime or ctx.settings.runtime))
    if spec.runtime == "kubernetes":
        spec.namespace = spec.namespace or ctx.settings.k8s_namespace
    created = tracking.create_mlflow_run(ctx, spec)  # checks the tags before creating anything
    spec.run_id, experiment_id = created.info.run_id, created.info.experiment_id
    # The job's ID is known before it exists (job IDs are derived from the run ID): record it first, so
    # a crash or an outage between submit and tag never leaves a job that no run points to.
    expected = job_id_of_run(spec.runtime, spec.run_id)
    try:
        ctx.tracking.set_tag(spec.run_id, tag_keys.JOB_ID, expected)
        for key, value in _code_tags(ctx, spec).items():
            ctx.tracking.set_tag(spec.run_id, key, value)
    except Exception as exc:
        tracking.end_run(ctx, spec.run_id, "FAILED", note=f"The job was not submitted: {exc}")
        raise
    info = _submit(ctx, runtime, spec)
    if info.job_id != expected:  # a runtime that names its jobs otherwise (a test double)
        ctx.tracking.set_tag(spec.run_id, tag_keys.JOB_ID, info.job_id)
    return StartedRun(
        run_id=spec.run_id, job_id=info.job_id, experiment_id=experiment_id, state=info.state,
        ui_url=tracking.ui_url(ctx.settings, experiment_id, spec.run_id),
    )  # fmt: skip


def _job(ctx: ToolContext, job_id: str) -> JobInfo:
    runtime = ctx.runtime_for_job(job_id)
    try:
        return runtime.status(job_id)
    except KeyError as exc:
        known = [j.job_id for j in runtime.list_jobs(ctx.session_id)][-10:]
        hint = f"; jobs of this session: {', '.join(known)}" if known else ""
        raise LookupError(f"no job {job_id!r}{hint}") from exc


def reconcile(ctx: ToolContext, info: JobInfo, run: Run) -> str:
    """Close the job's MLflow run if the job is done but the run is still RUNNING; return run status."""
    status = str(run.info.status)
    if not info.done or status != "RUNNING":
        return status
    reason = info.reason or f"job ended ({info.state}, exit code {info.exit_code})"
    if info.state == "cancelled":
        tracking.end_run(ctx, info.run_id, "KILLED", note=f"Job was cancelled: {reason}")
        return "KILLED"
    note = f"Job ended ({info.state}) without the trainer closing the run: {reason}"
    tracking.end_run(ctx, info.run_id, "FAILED", note=note)
    return "FAILED"


def _job_status(ctx: ToolContext, info: JobInfo) -> JobStatus:
    run = tracking.get_run_or_error(ctx.tracking, info.run_id)
    run_status = reconcile(ctx, info, run)
    if info.done and run.data.tags.get(tag_keys.ENTRY_POINT):  # user code that touched the model registry
        violation = check_finished_run(ctx.settings, ctx.tracking, info.run_id)
        if violation is not None:
            info = info.model_copy(update={"reason": violation})
            run_status = "FAILED"
    return JobStatus(
        **info.model_dump(), run_status=run_status,
        ui_url=tracking.ui_url(ctx.settings, run.info.experiment_id, info.run_id),
    )  # fmt: skip


@tool(read_only=True)
def get_job_status(ctx: ToolContext, args: JobRef) -> JobStatus:
    """Get a training job's state (pending, running, succeeded, failed, cancelled) and its run status."""
    return _job_status(ctx, _job(ctx, args.job_id))


@tool(read_only=True)
def get_job_logs(ctx: ToolContext, args: JobLogsArgs) -> JobLogs:
    """Read the last lines of a training job's output (secrets and personal data are redacted)."""
    _job(ctx, args.job_id)
    text = ctx.runtime_for_job(args.job_id).logs(args.job_id, args.tail_lines)
    return JobLogs(job_id=args.job_id, text=redact_text(text))


@tool(read_only=False, destructive=True, idempotent=True)
def cancel_job(ctx: ToolContext, args: CancelJobArgs) -> JobStatus:
    """Stop a running training job; its run ends KILLED with a cancellation record (who, why, usage)."""
    _job(ctx, args.job_id)
    stopped = ctx.runtime_for_job(args.job_id).cancel(args.job_id, args.reason, ctx.requester)
    return _job_status(ctx, stopped)
