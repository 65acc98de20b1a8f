"""Model-facing tools over MLflow runs: search runs, read one run, add a note to a run.

The MLflow library under them (client, run lifecycle, tags, redaction of what is written) is
``tools.core.tracking``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from tools.context import ToolContext
from tools.core import tags as tag_keys
from tools.core.redact import redact_text
from tools.core.run_refs import resolve_run_id
from tools.core.settings import Settings
from tools.core.specs import metric_direction
from tools.core.tracking import (
    MANAGED_TAG,
    METRIC_NAME_RE,
    NOTE_TAG,
    clip,
    get_run_or_error,
    list_artifacts,
    model_uri,
    ui_url,
)
from tools.toolset import tool

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient


class SearchRunsArgs(BaseModel):
    """Which runs to find and how to order them."""

    experiment: str = Field(description="MLflow experiment name to search in.")
    filter: str | None = Field(
        default=None,
        description=(
            'Optional MLflow filter, e.g. "metrics.roc_auc > 0.95 and params.model_family = '
            "'lightgbm'\" or \"tags.`expagent.role` = 'baseline'\"."
        ),
    )
    order_by: str | None = Field(default=None, description="Metric name to sort by, e.g. 'roc_auc'.")
    direction: Literal["best", "asc", "desc"] = Field(
        default="best",
        description="Sort direction; 'best' puts the best value first (high for roc_auc, low for rmse).",
    )
    max_results: int = Field(default=20, ge=1, le=100, description="Maximum runs to return (1-100).")


class RunSummary(BaseModel):
    """A compact view of one run."""

    run_id: str
    name: str | None = None
    status: str = Field(description="RUNNING, FINISHED, FAILED or KILLED.")
    role: str | None = Field(
        default=None, description="expagent role: baseline, trial, single, tuning, session."
    )
    parent_run_id: str | None = None
    dataset: str | None = Field(default=None, description="Dataset as name@version.")
    dataset_sha256: str | None = None
    params: dict[str, str] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    start_time: datetime | None = None
    end_time: datetime | None = None
    ui_url: str = Field(description="Link to the run in the MLflow UI.")


class SearchRunsResult(BaseModel):
    """Runs found in one experiment."""

    experiment: str
    experiment_id: str
    runs: list[RunSummary]
    more: bool = Field(
        default=False, description="More runs match than max_results: only the first max_results are here."
    )


class GetRunArgs(BaseModel):
    """Which run to read."""

    run_id: str = Field(description="MLflow run ID: 32 hex characters, or a unique prefix of at least 6.")


class DatasetInputInfo(BaseModel):
    """A dataset logged as a run input."""

    name: str
    digest: str
    context: str | None = None


class RunDetail(RunSummary):
    """Everything recorded on one run."""

    experiment_id: str
    tags: dict[str, str] = Field(default_factory=dict, description="Run tags (MLflow internals omitted).")
    artifacts: list[str] = Field(default_factory=list, description="Artifact paths on the run.")
    model_uri: str | None = Field(default=None, description="URI of the model logged by the run, if any.")
    datasets: list[DatasetInputInfo] = Field(default_factory=list)


def _time(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def summarize_run(settings: Settings, run: Run) -> RunSummary:
    """Return the compact summary of ``run``."""
    tags = run.data.tags
    name, version = tags.get("dataset.name"), tags.get("dataset.version")
    return RunSummary(
        run_id=run.info.run_id, name=run.info.run_name, status=run.info.status,
        role=tags.get(tag_keys.ROLE), parent_run_id=tags.get("mlflow.parentRunId"),
        dataset=f"{name}@{version}" if name and version else None,
        dataset_sha256=tags.get("dataset.sha256"), params=dict(run.data.params),
        metrics=dict(run.data.metrics), start_time=_time(run.info.start_time),
        end_time=_time(run.info.end_time), ui_url=ui_url(settings, run.info.experiment_id, run.info.run_id),
    )  # fmt: skip


def _experiment_id_or_error(client: MlflowClient, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None or experiment.lifecycle_stage == "deleted":
        known = sorted(e.name for e in client.search_experiments(max_results=50))
        raise LookupError(f"no MLflow experiment named {name!r}; known experiments: {', '.join(known)}")
    return str(experiment.experiment_id)


def _order_clause(args: SearchRunsArgs) -> list[str] | None:
    if not args.order_by:
        return None
    if not METRIC_NAME_RE.match(args.order_by):
        raise ValueError(f"order_by must be a metric name like 'roc_auc', got {args.order_by!r}")
    direction = args.direction
    if direction == "best":
        direction = "desc" if metric_direction(args.order_by) == "maximize" else "asc"
    return [f"metrics.`{args.order_by}` {direction.upper()}"]


@tool(read_only=True)
def search_runs(ctx: ToolContext, args: SearchRunsArgs) -> SearchRunsResult:
    """Search the runs of an MLflow experiment; returns params, metrics, status, role and UI links.

    Use order_by with a metric name to get the best runs first.
    """
    from mlflow.exceptions import MlflowException

    client = ctx.tracking
    experiment_id = _experiment_id_or_error(client, args.experiment)
    try:
        runs = client.search_runs(
            [experiment_id], filter_string=args.filter or "", max_results=args.max_results + 1,
            order_by=_order_clause(args),
        )  # fmt: skip
    except MlflowException as exc:
        raise ValueError(
            f"MLflow rejected the search (filter {args.filter!r}): {exc.message}. Example filter: "
            "\"metrics.roc_auc > 0.9 and params.model_family = 'lightgbm'\""
        ) from exc
    summaries = [summarize_run(ctx.settings, run) for run in runs[: args.max_results]]
    return SearchRunsResult(
        experiment=args.experiment, experiment_id=experiment_id, runs=summaries,
        more=len(runs) > args.max_results,
    )  # fmt: skip


def _visible_tags(tags: Mapping[str, str]) -> dict[str, str]:
    keep = {"mlflow.parentRunId", NOTE_TAG, "mlflow.runName", "mlflow.user"}
    return {k: v for k, v in tags.items() if not k.startswith("mlflow.") or k in keep}


@tool(read_only=True)
def get_run(ctx: ToolContext, args: GetRunArgs) -> RunDetail:
    """Read one MLflow run: params, metrics, tags, artifact list, dataset inputs and model URI."""
    client = ctx.tracking
    run = get_run_or_error(client, resolve_run_id(client, args.run_id))
    datasets = [
        DatasetInputInfo(
            name=d.dataset.name,
            digest=d.dataset.digest,
            context=next((t.value for t in d.tags if t.key == "mlflow.data.context"), None),
        )  # fmt: skip
        for d in (run.inputs.dataset_inputs if run.inputs else [])
    ]
    return RunDetail(
        **summarize_run(ctx.settings, run).model_dump(),
        experiment_id=run.info.experiment_id,
        tags=_visible_tags(run.data.tags),
        artifacts=list_artifacts(client, run.info.run_id),
        model_uri=model_uri(client, run),
        datasets=datasets,
    )


# ---- tools: annotate runs -------------------------------------------------------------------------


class LogNoteArgs(BaseModel):
    """A note to add to a run's description."""

    run_id: str = Field(
        description="MLflow run ID of a run expagent launched: 32 hex characters, or a unique prefix of >= 6."
    )
    text: str = Field(min_length=1, max_length=5000, description="The note (markdown).")
    as_tag: bool = Field(
        default=False, description="Also store the note (first 500 characters) as tag expagent.note."
    )


class LogNoteResult(BaseModel):
    """Where the note was stored."""

    run_id: str
    tag: str = Field(description="The tag that holds the run's description with the note.")
    text: str = Field(description="The note as stored (personal data and secrets redacted).")
    tagged: bool


#: a description may hold earlier notes; MLflow caps a tag value, so the oldest text is cut first.
_MAX_NOTE_CHARS = 5000


@tool(read_only=False)
def log_note(ctx: ToolContext, args: LogNoteArgs) -> LogNoteResult:
    """Add a note to the description of a run expagent launched (the run's mlflow.note.content).

    The note is appended below what the description already says, with who wrote it and when. Runs
    not created by expagent are refused. Personal data and secrets are redacted before writing.
    """
    from mlflow.entities import RunTag

    client = ctx.tracking
    run = get_run_or_error(client, resolve_run_id(client, args.run_id))
    run_id = run.info.run_id
    if run.data.tags.get(MANAGED_TAG) != "true":
        raise PermissionError(
            f"run {run_id} was not launched by expagent (tag {MANAGED_TAG} is not 'true'); "
            "notes can only be added to runs the agent owns"
        )
    text = redact_text(args.text).strip()
    stamp = ctx.clock().strftime("%Y-%m-%d %H:%M UTC")
    entry = f"**Note** ({redact_text(ctx.requester)}, {stamp}): {text}"
    before = run.data.tags.get(NOTE_TAG, "").rstrip()
    description = f"{before}\n\n{entry}" if before else entry
    tags = [RunTag(NOTE_TAG, description[-_MAX_NOTE_CHARS:])]
    if args.as_tag:
        tags.append(RunTag("expagent.note", clip(text, 500)))
    client.log_batch(run_id, tags=tags)
    return LogNoteResult(run_id=run_id, tag=NOTE_TAG, text=text, tagged=args.as_tag)
