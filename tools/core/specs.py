"""Shared data models: what a training job is, and what a runtime reports about it.

These are the contract between the agent, the guard, the runtimes (local and Kubernetes) and the
trainer program. Keep this module import-light (pydantic only): the trainer imports it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ModelFamily = Literal["logistic_regression", "random_forest", "hist_gradient_boosting", "lightgbm", "xgboost"]
Metric = Literal["roc_auc", "accuracy", "f1", "log_loss", "rmse", "mae", "r2"]
RunRole = Literal["baseline", "trial", "single"]
JobState = Literal["pending", "running", "succeeded", "failed", "cancelled"]
RuntimeName = Literal["local", "kubernetes"]

#: metrics where larger is better; everything else is minimised.
MAXIMIZE: frozenset[str] = frozenset({"roc_auc", "accuracy", "f1", "r2"})
CLASSIFICATION_METRICS: frozenset[str] = frozenset({"roc_auc", "accuracy", "f1", "log_loss"})
REGRESSION_METRICS: frozenset[str] = frozenset({"rmse", "mae", "r2"})


def metric_direction(metric: str) -> Literal["maximize", "minimize"]:
    """Return whether a larger value of ``metric`` is better."""
    return "maximize" if metric in MAXIMIZE else "minimize"


def selection_metric(metric: str, cv_folds: int = 0) -> str:
    """Return the logged metric that selects between runs: ``cv_val_<m>_mean`` with CV, else ``val_<m>``."""
    return f"cv_val_{metric}_mean" if cv_folds else f"val_{metric}"


class Resources(BaseModel):
    """Compute one run requests; the guard compares it with the budget."""

    cpu: float = Field(1.0, gt=0, description="CPU cores for the run.")
    memory_gb: float = Field(2.0, gt=0, description="Memory in GiB for the run.")
    gpu: int = Field(0, ge=0, description="GPUs for the run (nvidia.com/gpu).")


class EntryPointCall(BaseModel):
    """A registered training entry point to run instead of a built-in model family."""

    model_config = ConfigDict(extra="forbid")

    ref: str = Field(description="Registered entry point at an explicit version, e.g. 'churn-model@3'.")
    entry: str = Field("main", description="Entry point name inside its MLproject file, e.g. 'main'.")


class RunTemplate(BaseModel):
    """What every run of one request shares: data, model family, metric, experiment, seed, where it runs.

    ``TrainingSpec`` (one run, and the ``start_training_run`` arguments) and the tuning study's
    ``StudySettings`` extend it; the agent's ``ExperimentRequest.run_template()`` fills it once.
    """

    dataset: str = Field(description="Registered dataset name, e.g. 'breast_cancer'.")
    version: str = Field(description="Explicit registered dataset version, e.g. '1'.")
    model_family: ModelFamily | None = Field(
        None, description="Built-in model family to train; leave null when 'entry_point' names a project."
    )
    metric: Metric = Field(description="Primary metric to optimise and report.")
    experiment: str = Field(description="MLflow experiment name.")
    seed: int = Field(42, description="Random seed for the split and the model.")
    test_size: float = Field(
        0.25, gt=0, lt=1, description="Held-out test fraction of all rows (reported, never selected on)."
    )
    val_size: float = Field(
        0.2, gt=0, lt=1,
        description="Validation fraction of the non-test rows (what tuning, pruning and early stopping see).",
    )  # fmt: skip
    cv_folds: int = Field(
        0, ge=0, le=20,
        description="K-fold cross-validation on the non-test rows (0 = off, else 2-20 folds): logs "
        "cv_val_<metric>_mean/_std and selects on the mean; the test rows are never in a fold.",
    )  # fmt: skip
    resources: Resources = Field(default_factory=Resources)
    runtime: RuntimeName | None = Field(
        None,
        description="Where the run executes: 'local' (a process on this machine) or 'kubernetes' (a batch "
        "Job). Null = the configured default runtime.",
    )
    namespace: str | None = Field(
        None,
        description="Kubernetes namespace of the Job (must be an allowed namespace); only used when the "
        "runtime is 'kubernetes'. Null = the configured default namespace.",
    )

    entry_point: EntryPointCall | None = Field(
        None,
        description="Run this registered entry point (its MLproject params go in 'params') instead of the "
        "built-in model_family; null = train model_family.",
    )

    @model_validator(mode="after")
    def _family_or_entry_point(self) -> RunTemplate:
        if self.model_family is None and self.entry_point is None:
            raise ValueError(
                "give model_family (a built-in family) or entry_point (a registered project, name@N)"
            )
        return self

    @field_validator("cv_folds")
    @classmethod
    def _folds(cls, value: int) -> int:
        if value == 1:
            raise ValueError("cross-validation needs at least 2 folds (0 turns it off)")
        return value

    @property
    def code_label(self) -> str:
        """Return what trains: the model family, or ``entry point churn-model@3 main``."""
        if self.entry_point is not None:
            return f"entry point {self.entry_point.ref} {self.entry_point.entry}"
        return str(self.model_family)

    @property
    def selection_metric(self) -> str:
        """Return the logged metric a tuning study selects on: the CV mean with folds, else ``val_``."""
        return selection_metric(self.metric, self.cv_folds)

    @classmethod
    def fields_of(cls, model: BaseModel) -> dict[str, Any]:
        """Return the template's fields of ``model`` (any model that has them), as JSON-ready values."""
        return model.model_dump(mode="json", include=set(cls.model_fields))


class DataSource(BaseModel):
    """The exact data a job reads: an S3 object version and its sha256 (set by the launcher, never the model).

    The launcher copies it from the registry entry the guard has just verified, so a local process and a
    Kubernetes pod read the same object version and check the same checksum.
    """

    uri: str = Field(description="s3://bucket/key of the object.")
    version_id: str = Field(description="The pinned S3 object version ID.")
    sha256: str = Field(description="sha256 of the version's bytes; the job checks it before training.")
    format: Literal["csv", "parquet"] = Field("csv", description="File format.")
    catalog_entry: dict[str, Any] | None = Field(
        None,
        description="The registry record (schema, target, PII columns), so a pod without the workspace's "
        "catalog still knows how to read the data.",
    )


class TrainingSpec(RunTemplate):
    """Everything the trainer needs to run one reproducible, fully logged training run."""

    params: dict[str, float | int | str | bool] = Field(
        default_factory=dict, description="Model hyperparameters (family-specific)."
    )
    role: RunRole = Field("single", description="baseline, trial (of a tuning study) or single.")
    run_name: str | None = Field(None, description="MLflow run name.")
    parent_run_id: str | None = Field(None, description="Parent MLflow run (tuning or session run).")
    trial_number: int | None = Field(None, description="Optuna trial number when role is 'trial'.")
    timeout_seconds: int = Field(600, gt=0, description="Wall-clock deadline for the run.")
    report_intermediate: bool = Field(
        False, description="Log per-iteration validation metrics as step metrics (for pruning)."
    )
    intermediate_every: int = Field(
        1, ge=1, le=1000, description="With report_intermediate: log every this many rounds (and the last)."
    )
    session_id: str | None = Field(None, description="Agent session (graph thread) that launched it.")
    requester: str | None = Field(None, description="Who asked for the run.")
    tags: dict[str, str] = Field(default_factory=dict, description="Extra MLflow tags.")
    # Filled by the launcher, not the model: the MLflow run the trainer attaches to, and the S3 object
    # version it reads (None for workspace files).
    run_id: str | None = Field(None, description="Pre-created MLflow run ID the trainer attaches to.")
    data_source: DataSource | None = Field(None, description="The pinned S3 object the job reads.")


class JobInfo(BaseModel):
    """A runtime's view of one training job."""

    job_id: str = Field(description="Runtime job identifier (process or Kubernetes Job name).")
    run_id: str = Field(description="MLflow run the job logs to.")
    runtime: RuntimeName
    state: JobState
    namespace: str | None = None
    exit_code: int | None = None
    reason: str | None = Field(None, description="Why the job failed or was cancelled, if it did.")
    submitted_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    wall_seconds: float | None = None
    cpu_seconds: float | None = None
    trial_number: int | None = None

    @property
    def done(self) -> bool:
        return self.state in ("succeeded", "failed", "cancelled")


class CancellationRecord(BaseModel):
    """What is written as ``cancellation.json`` onto a run that was stopped."""

    run_id: str
    job_id: str
    cancelled_by: str = Field(description="User, watchdog, pruner or budget rule that stopped it.")
    reason: str
    cancelled_at: datetime
    wall_seconds: float | None = None
    cpu_seconds: float | None = None
    resources: Resources | None = None
    kind: Literal["cancelled", "pruned", "timeout", "budget", "orphan"] = "cancelled"
