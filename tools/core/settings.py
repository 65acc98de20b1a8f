"""Runtime configuration: one pydantic-settings model read from ``EXPAGENT_*`` environment variables.

Everything the program writes lives under ``home`` (``EXPAGENT_HOME``, default ``./.expagent``).
Importing this module must stay cheap: it is imported by ``expagent --help`` and by every trainer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from tools.core.sqlite_uri import sqlite_uri


class Budget(BaseSettings):
    """Resource caps the policy guard enforces; beyond them a call needs approval."""

    model_config = SettingsConfigDict(env_prefix="EXPAGENT_BUDGET_", extra="ignore")

    max_cpu_per_run: float = Field(4.0, description="CPU cores one run may request.")
    max_memory_gb_per_run: float = Field(8.0, description="Memory (GiB) one run may request.")
    max_gpu_per_run: int = Field(0, description="GPUs one run may request.")
    max_wall_seconds_per_run: int = Field(3600, description="Wall-clock cap for a single run.")
    max_concurrent_jobs: int = Field(2, description="Jobs that may run at once without approval.")
    cpu_hours: float = Field(2.0, description="Default compute budget for one request, in CPU-hours.")
    gpu_hours: float = Field(0.0, description="Default GPU budget for one request, in GPU-hours.")
    max_trials: int = Field(50, description="Trials one request may run without approval.")


class Settings(BaseSettings):
    """expagent settings; every field can be set as ``EXPAGENT_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="EXPAGENT_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path(".expagent"), description="Workspace root.")
    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; MLFLOW_TRACKING_URI also works; default sqlite in home."
    )
    catalog_path: Path | None = Field(None, description="Dataset catalog file; default home/registry.")
    model: str = Field("offline", description="Chat model: offline | openai:<model> | scripted:<file>.")
    runtime: Literal["local", "kubernetes"] = "local"
    namespaces: list[str] = Field(default_factory=lambda: ["ml-experiments"])
    k8s_namespace: str = "ml-experiments"
    k8s_image: str = "ghcr.io/expagent/trainer:0.1.0"
    k8s_context: str | None = None
    k8s_service_account: str | None = None
    k8s_queue_name: str | None = None
    # --- Kubernetes runtime details (issue #5) ---
    k8s_kubeconfig: Path | None = Field(
        None, description="kubeconfig file; default $KUBECONFIG or ~/.kube/config, else in-cluster config."
    )
    k8s_node_selector: dict[str, str] = Field(default_factory=dict, description="Pod nodeSelector.")
    k8s_tolerations: list[dict[str, str | int]] = Field(
        default_factory=list, description="Pod tolerations (Kubernetes JSON shape)."
    )
    k8s_ttl_seconds: int = Field(3600, ge=0, description="ttlSecondsAfterFinished for training Jobs.")
    k8s_secret_env: dict[str, str] = Field(
        default_factory=dict, description="Pod env vars from Secrets: {ENV_NAME: 'secret-name/key'}."
    )
    k8s_pod_home: str | None = Field(
        None, description="EXPAGENT_HOME inside the pod; default: the same path as home (shared files)."
    )
    k8s_start_grace_seconds: float = Field(
        120.0, gt=0, description="How long a pod may sit in ImagePullBackOff-like states before failing."
    )
    # --- Local runtime (issue #2) ---
    local_launch: Literal["worker", "forkserver", "subprocess"] = Field(
        default="worker",
        description=(
            "worker: warm worker processes run jobs one at a time (fastest); forkserver: a fresh process "
            "forked from a warm one per job; subprocess: python -m tools.training.trainer per job."
        ),
    )
    require_approval_for_kubernetes: bool = False
    # --- Datasets in S3 (issue #15); credentials come from boto3's standard chain, never from settings ---
    s3_endpoint_url: str | None = Field(
        None,
        description="S3 endpoint for s3:// datasets (MinIO, Ceph, a test server); default boto3's own "
        "AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3, else AWS.",
    )
    agent_experiment: str = "expagent-agent"
    trace: bool = True
    context_token_budget: int = 12000
    mlflow_ui_base: str | None = Field(
        None,
        description="Base URL of the MLflow UI in answer links; default the tracking URI when it is "
        "http(s), else http://127.0.0.1:5000 (what `expagent ui` serves).",
    )
    user_tag_prefixes: list[str] = Field(
        default_factory=lambda: ["team.", "project.", "user.", "note.", "ticket."],
        description="The only key prefixes a request may use for its own MLflow tags.",
    )
    mlflow_http_timeout: float = Field(
        15.0, gt=0, description="Seconds one MLflow HTTP request may take (MLFLOW_HTTP_REQUEST_TIMEOUT)."
    )
    mlflow_http_retries: int = Field(
        5, ge=0, description="Retries of a failing MLflow HTTP request (MLFLOW_HTTP_REQUEST_MAX_RETRIES)."
    )
    model_timeout_s: float = Field(
        30.0, gt=0, description="Seconds one request to an openai:<model> endpoint may take."
    )
    model_turn_budget_s: float = Field(
        90.0, gt=0, description="Seconds of model time one turn may use, retries and waits included."
    )
    model_retries: int = Field(2, ge=0, description="Retries of a failing model request (429, 5xx, timeout).")
    model_stream: bool = Field(False, description="Stream model replies (long answers arrive as made).")
    requester: str = Field(default_factory=lambda: _os_user())
    # --- Slack bot (issue #7); tokens come from SLACK_BOT_TOKEN / SLACK_APP_TOKEN /
    # SLACK_SIGNING_SECRET and are deliberately not settings, so they never appear in a dump ---
    slack_mode: Literal["socket", "http"] = Field(
        default="socket",
        description="socket: Socket Mode (needs SLACK_APP_TOKEN); http: Events API over HTTP.",
    )
    slack_port: int = Field(default=3000, description="Port the HTTP-mode endpoint listens on.")
    slack_approvers: list[str] = Field(
        default_factory=list, description='Slack user IDs allowed to approve, JSON: ["U123","U456"].'
    )
    slack_allowed_channels: list[str] = Field(
        default_factory=list, description="Channel IDs where work may start; empty = any channel."
    )
    slack_allowed_users: list[str] = Field(
        default_factory=list, description="User IDs who may start work; empty = anyone."
    )
    slack_progress_interval: float = Field(
        default=1.0, ge=0, description="Minimum seconds between two updates of a progress message."
    )
    slack_workers: int = Field(default=4, ge=1, description="Conversations the bot works on at once.")
    budget: Budget = Field(default_factory=Budget)

    @property
    def resolved_tracking_uri(self) -> str:
        """Return the MLflow tracking URI (env override, else sqlite under home)."""
        explicit = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if explicit:
            return explicit
        return sqlite_uri((self.home / "mlflow.db").resolve())

    @property
    def artifact_root(self) -> Path:
        return (self.home / "artifacts").resolve()

    @property
    def remote_tracking(self) -> bool:
        """Whether runs are tracked by an MLflow server (which then also stores the artifacts)."""
        return self.resolved_tracking_uri.startswith(("http://", "https://"))

    @property
    def ui_base(self) -> str:
        """The MLflow UI base URL for links (``mlflow_ui_base``, else the server, else a local UI)."""
        if self.mlflow_ui_base:
            return self.mlflow_ui_base
        return self.resolved_tracking_uri if self.remote_tracking else "http://127.0.0.1:5000"

    @property
    def log_path(self) -> Path:
        """The agent's log file: tracebacks and details that the terminal only summarises."""
        return (self.home / "logs" / "expagent.log").resolve()

    @property
    def resolved_catalog_path(self) -> Path:
        return (self.catalog_path or self.home / "registry" / "catalog.json").resolve()

    @property
    def data_dir(self) -> Path:
        return (self.home / "registry" / "data").resolve()

    @property
    def checkpoint_path(self) -> Path:
        return (self.home / "checkpoints.sqlite").resolve()

    @property
    def optuna_storage(self) -> str:
        # A journal file (tools.tuning.study.study_storage); an RDB URL such as sqlite:///… also works there.
        return str((self.home / "optuna.journal").resolve())

    @property
    def audit_log_path(self) -> Path:
        return (self.home / "audit.jsonl").resolve()

    @property
    def jobs_dir(self) -> Path:
        return (self.home / "jobs").resolve()

    def ensure_home(self) -> Path:
        """Create the workspace directories and return the absolute home."""
        for p in (self.home, self.home / "registry", self.jobs_dir, self.artifact_root):
            p.mkdir(parents=True, exist_ok=True)
        return self.home.resolve()


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment, with explicit keyword overrides on top."""
    return Settings(**overrides)  # type: ignore[arg-type]


def _os_user() -> str:
    """The OS user (LOGNAME, USER, LNAME, USERNAME, then the password database), else "unknown"."""
    import getpass

    try:
        return getpass.getuser() or "unknown"
    except (KeyError, OSError):
        return "unknown"
