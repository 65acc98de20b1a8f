"""Read-only tools for the questions people ask about their runs.

Why a run failed, its training log, what is running now, which experiments exist, and a side-by-side
comparison of runs (params that differ, metrics, and whether they share a dataset and a split). All
of them only read MLflow and the workspace's job files; a run may be named by a unique ID prefix.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from tools.context import ToolContext
from tools.core import tags as tag_keys
from tools.core.redact import redact_text
from tools.core.run_refs import resolve_run_id
from tools.core.tracking import NOTE_TAG, get_run_or_error, list_artifacts, ui_url
from tools.runs import RunSummary, summarize_run
from tools.toolset import tool
from tools.training.job_files import read_tail

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

#: artifacts that say why a run ended, most specific first.
_ERROR_ARTIFACTS = ("traceback.txt", "submit_error.txt", "turn_error.txt", "cancellation.json")
_LOG_ARTIFACTS = ("output.log",)
_SPLIT_TAGS = ("split.train_sha256", "split.val_sha256", "split.test_sha256")
_EXCEPTION_LINE = re.compile(r"^\w[\w.]*(?:Error|Exception|Interrupt|Exit|Failure)\b.*")


def _time(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def _experiment_names(client: MlflowClient) -> dict[str, str]:
    return {str(e.experiment_id): str(e.name) for e in client.search_experiments()}


# ---- which experiments exist ----------------------------------------------------------------------


class ListExperimentsArgs(BaseModel):
    """Which experiments to list."""

    max_results: int = Field(default=50, ge=1, le=200, description="Maximum experiments to list (1-200).")


class ExperimentInfo(BaseModel):
    """One MLflow experiment with how much it holds."""

    name: str
    experiment_id: str
    runs: int = Field(description="Runs in the experiment (counted up to 1000).")
    running: int = Field(description="Runs still RUNNING.")
    last_activity: datetime | None = Field(
        description="Start of the newest run, else the experiment's last update."
    )
    ui_url: str


class ExperimentList(BaseModel):
    """The experiments of this tracking store, most recently active first."""

    experiments: list[ExperimentInfo]


@tool(read_only=True)
def list_experiments(ctx: ToolContext, args: ListExperimentsArgs) -> ExperimentList:
    """List the MLflow experiments with their run counts and last activity, most recent first."""
    client = ctx.tracking
    found = []
    for experiment in client.search_experiments(max_results=args.max_results):
        runs = client.search_runs(
            [experiment.experiment_id], max_results=1000, order_by=["attributes.start_time DESC"]
        )
        newest = _time(runs[0].info.start_time) if runs else _time(experiment.last_update_time)
        found.append(ExperimentInfo(
            name=experiment.name, experiment_id=experiment.experiment_id, runs=len(runs),
            running=sum(r.info.status == "RUNNING" for r in runs), last_activity=newest,
            ui_url=ui_url(ctx.settings, experiment.experiment_id),
        ))  # fmt: skip
    found.sort(key=lambda e: e.last_activity or datetime.min.replace(tzinfo=UTC), reverse=True)
    return ExperimentList(experiments=found)


# ---- what is running now ---------------------------------------------------------------------------


class ListRunningArgs(BaseModel):
    """Which running runs to list."""

    max_results: int = Field(default=50, ge=1, le=500, description="Maximum runs to list (1-500).")


class RunningRun(RunSummary):
    """A run that is RUNNING now, with where it runs."""

    experiment: str
    job_id: str | None = Field(default=None, description="Runtime job of the run (none for session runs).")
    requester: str | None = None


class RunningList(BaseModel):
    """Every RUNNING run of this workspace's tracking store, newest first."""

    runs: list[RunningRun]


@tool(read_only=True)
def list_running(ctx: ToolContext, args: ListRunningArgs) -> RunningList:
    """List what is running now: every RUNNING run in any experiment, with its job, role and requester."""
    client = ctx.tracking
    names = _experiment_names(client)
    if not names:
        return RunningList(runs=[])
    runs = client.search_runs(
        list(names), filter_string="attributes.status = 'RUNNING'", max_results=args.max_results,
        order_by=["attributes.start_time DESC"],
    )  # fmt: skip
    return RunningList(runs=[
        RunningRun(
            **summarize_run(ctx.settings, run).model_dump(),
            experiment=names.get(run.info.experiment_id, "?"),
            job_id=run.data.tags.get(tag_keys.JOB_ID),
            requester=run.data.tags.get(tag_keys.REQUESTER),
        )
        for run in runs
    ])  # fmt: skip


# ---- why a run failed -----------------------------------------------------------------------------


class RunRefArgs(BaseModel):
    """Which run."""

    run_id: str = Field(description="MLflow run ID: 32 hex characters, or a unique prefix of at least 6.")


class RunFailure(BaseModel):
    """How a run ended and the error MLflow holds for it."""

    run_id: str
    name: str | None = None
    status: str = Field(description="RUNNING, FINISHED, FAILED or KILLED.")
    failed: bool = Field(description="The run ended FAILED or KILLED.")
    exception: str | None = Field(
        default=None, description="The exception line (type: message), when one was logged."
    )
    details: str | None = Field(default=None, description="The last lines of the traceback or record.")
    source: str | None = Field(default=None, description="The artifact the error was read from.")
    note: str | None = Field(default=None, description="The run's description (first 500 characters).")
    cancelled_by: str | None = None
    cancel_reason: str | None = None
    ui_url: str


def _artifact_text(client: MlflowClient, run_id: str, path: str) -> str | None:
    import tempfile

    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"  # no download progress bar in the user's terminal
    previous = os.environ.get(key)
    os.environ[key] = "false"
    try:
        with tempfile.TemporaryDirectory(prefix="expagent-artifact-") as tmp:
            local = client.download_artifacts(run_id, path, tmp)
            with open(local, encoding="utf-8", errors="replace") as handle:
                return handle.read()
    except Exception:  # noqa: BLE001 - an artifact that cannot be read is simply not used
        return None
    finally:
        if previous is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = previous


def exception_line(text: str) -> str | None:
    """Return the last ``SomeError: message`` line of a traceback or log, or None."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return next((line for line in reversed(lines) if _EXCEPTION_LINE.match(line)), None)


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


@tool(read_only=True)
def get_run_failure(ctx: ToolContext, args: RunRefArgs) -> RunFailure:
    """Explain why a run failed or was stopped: the error line, the traceback's end, who cancelled it."""
    client = ctx.tracking
    run = get_run_or_error(client, resolve_run_id(client, args.run_id))
    run_id, tags = run.info.run_id, run.data.tags
    artifacts = set(list_artifacts(client, run_id))
    error = details = source = None
    for name in (*_ERROR_ARTIFACTS, *_LOG_ARTIFACTS):
        text = _artifact_text(client, run_id, name) if name in artifacts else None
        if not text:
            continue
        if name == "cancellation.json":
            error, details = _cancellation(text), None
        else:
            error, details = exception_line(text), redact_text(_tail(text, 12))
        source = name
        break
    if source is None and run.info.status in ("FAILED", "KILLED"):
        log = _job_log(ctx, tags.get(tag_keys.JOB_ID), 40)
        if log:
            error, details, source = exception_line(log), redact_text(_tail(log, 12)), "job output"
    return RunFailure(
        run_id=run_id, name=run.info.run_name, status=run.info.status,
        failed=run.info.status in ("FAILED", "KILLED"), exception=redact_text(error) if error else None,
        details=details, source=source, note=redact_text(tags.get(NOTE_TAG, ""))[:500] or None,
        cancelled_by=tags.get(tag_keys.CANCELLED_BY), cancel_reason=tags.get(tag_keys.CANCEL_REASON),
        ui_url=ui_url(ctx.settings, run.info.experiment_id, run_id),
    )  # fmt: skip


def _cancellation(text: str) -> str | None:
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        return None
    kind = str(record.get("kind") or "cancelled")
    return redact_text(f"{kind.capitalize()} by {record.get('cancelled_by')}: {record.get('reason')}")


# ---- the training log of a run --------------------------------------------------------------------


class RunLogsArgs(BaseModel):
    """Which run's training log to read."""

    run_id: str = Field(description="MLflow run ID: 32 hex characters, or a unique prefix of at least 6.")
    tail_lines: int = Field(default=40, ge=1, le=1000, description="How many of the last lines to return.")


class RunLogs(BaseModel):
    """The end of a run's training log (secrets and personal data redacted)."""

    run_id: str
    status: str
    job_id: str | None = None
    source: str | None = Field(default=None, description="Where the log was read: job output or an artifact.")
    text: str = Field(description="The last lines of the log; empty when no log was kept.")
    ui_url: str


def _job_log(ctx: ToolContext, job_id: str | None, lines: int) -> str:
    """Return the tail of a job's output: the local job files, else the job's runtime ("" if gone)."""
    if not job_id or "/" in job_id or job_id.startswith("."):
        return ""
    local = ctx.settings.jobs_dir / job_id / "output.log"
    if local.exists():
        return read_tail(local, lines)
    if job_id.startswith("local-"):
        return ""
    try:
        return ctx.runtime_for_job(job_id).logs(job_id, lines)
    except Exception:  # noqa: BLE001 - a cluster that cannot be reached has no log to show
        return ""


@tool(read_only=True)
def get_run_logs(ctx: ToolContext, args: RunLogsArgs) -> RunLogs:
    """Read the last lines of a run's training log (its job's output, or the log MLflow kept)."""
    client = ctx.tracking
    run = get_run_or_error(client, resolve_run_id(client, args.run_id))
    run_id, job_id = run.info.run_id, run.data.tags.get(tag_keys.JOB_ID)
    text = _job_log(ctx, job_id, args.tail_lines)
    source: str | None = "job output"
    if not text:
        logged = [p for p in list_artifacts(client, run_id) if p.endswith(".log")]
        source = logged[0] if logged else None
        text = _tail(_artifact_text(client, run_id, source) or "", args.tail_lines) if source else ""
    return RunLogs(
        run_id=run_id, status=run.info.status, job_id=job_id, source=source if text else None,
        text=redact_text(text), ui_url=ui_url(ctx.settings, run.info.experiment_id, run_id),
    )  # fmt: skip


# ---- comparing runs -------------------------------------------------------------------------------


class CompareRunsArgs(BaseModel):
    """Which runs to compare."""

    run_ids: list[str] = Field(
        min_length=2,
        max_length=10,
        description="2-10 run IDs (32 hex characters or unique prefixes of >= 6).",
    )


class RunComparison(BaseModel):
    """Runs side by side: params that differ, metrics, and whether their data and splits match."""

    runs: list[RunSummary]
    differing_params: dict[str, dict[str, str | None]] = Field(
        description="param -> run ID -> value, for params whose values differ (or are missing on a run)."
    )
    same_params: dict[str, str] = Field(description="Params every run has with the same value.")
    metrics: dict[str, dict[str, float | None]] = Field(description="metric -> run ID -> value.")
    warnings: list[str] = Field(description="Why the numbers may not be comparable (dataset, split).")


@tool(read_only=True)
def compare_runs(ctx: ToolContext, args: CompareRunsArgs) -> RunComparison:
    """Compare runs: a table of the params that differ and every metric, with a warning when the runs
    used different datasets or data splits."""
    client = ctx.tracking
    ids = list(dict.fromkeys(resolve_run_id(client, ref) for ref in args.run_ids))
    runs = [get_run_or_error(client, run_id) for run_id in ids]
    params = sorted({k for r in runs for k in r.data.params})
    values = {k: {r.info.run_id: r.data.params.get(k) for r in runs} for k in params}
    same = {k: str(next(iter(v.values()))) for k, v in values.items() if len(set(v.values())) == 1}
    metrics = sorted({k for r in runs for k in r.data.metrics})
    return RunComparison(
        runs=[summarize_run(ctx.settings, r) for r in runs],
        differing_params={k: v for k, v in values.items() if k not in same},
        same_params=same,
        metrics={m: {r.info.run_id: r.data.metrics.get(m) for r in runs} for m in metrics},
        warnings=comparability_warnings(runs),
    )


def comparability_warnings(runs: list[Run]) -> list[str]:
    """Return why the runs' metrics may not be comparable: other datasets, other splits."""
    warnings = []
    datasets = {
        r.info.run_id: f"{r.data.tags.get('dataset.name')}@{r.data.tags.get('dataset.version')}"
        + (f" ({r.data.tags['dataset.sha256'][:12]})" if r.data.tags.get("dataset.sha256") else "")
        for r in runs
    }
    if len(set(datasets.values())) > 1:
        shown = ", ".join(f"{run_id[:8]}: {ref}" for run_id, ref in datasets.items())
        warnings.append(f"The runs used different datasets ({shown}); their metrics are not comparable.")
    for key in _SPLIT_TAGS:
        hashes = {r.data.tags.get(key) for r in runs}
        if len(hashes) > 1:
            which = key.split(".")[1].split("_")[0]
            missing = " (some runs record no split)" if None in hashes else ""
            warnings.append(
                f"The runs were scored on different {which} splits ({key} differs{missing}); compare "
                "their metrics with care."
            )
            break
    return warnings
