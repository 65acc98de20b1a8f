"""Model-facing tools over the dataset registry: look up one dataset version, list the catalog.

The registry library under them is ``tools.core.registry``.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from tools.context import ToolContext
from tools.core.registry import DatasetRecord, Status, Task
from tools.toolset import tool


class LookupDatasetArgs(BaseModel):
    """Which dataset version to look up."""

    name: str = Field(description="Registered dataset name, e.g. 'breast_cancer'.")
    version: str = Field(description="Exact registered version, e.g. '1' (never 'latest').")


class ListDatasetsArgs(BaseModel):
    """Optional filter for the dataset listing."""

    status: Status | None = Field(
        default=None,
        description="Only datasets with this status: validated, raw or deprecated. Omit for all.",
    )


class DatasetSummary(BaseModel):
    """One line of the dataset listing."""

    ref: str = Field(description="name@version to use in a training request.")
    status: Status
    task: Task
    target: str
    n_rows: int
    n_columns: int
    pii_columns: list[str]
    description: str


class DatasetList(BaseModel):
    """Registered dataset versions (metadata only)."""

    datasets: list[DatasetSummary]


def summarize(record: DatasetRecord) -> DatasetSummary:
    """Return the listing line for ``record``."""
    return DatasetSummary(
        ref=record.ref, status=record.status, task=record.schema.task, target=record.schema.target,
        n_rows=record.schema.n_rows, n_columns=len(record.schema.columns),
        pii_columns=record.pii_columns, description=record.description,
    )  # fmt: skip


@tool(read_only=True)
def lookup_dataset(ctx: ToolContext, args: LookupDatasetArgs) -> DatasetRecord:
    """Look up one registered dataset version: status, sha256, columns, dtypes, target, task, PII columns.

    Only datasets with status 'validated' can be used for training. Returns metadata, never rows.
    """
    return ctx.registry.get(args.name, args.version)


@tool(read_only=True)
def list_datasets(ctx: ToolContext, args: ListDatasetsArgs) -> DatasetList:
    """List registered dataset versions with their status, task, target and size (no rows).

    Use the 'ref' (name@version) of a 'validated' entry when asking for a training run.
    """
    return DatasetList(datasets=[summarize(r) for r in ctx.registry.list(args.status)])
