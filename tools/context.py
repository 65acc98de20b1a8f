"""The typed context every tool receives: settings and the clients it may use (never module globals)."""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tools.core.settings import Settings

if TYPE_CHECKING:  # heavy imports stay lazy
    from mlflow.tracking import MlflowClient

    from tools.core.audit import AuditLog
    from tools.core.registry import DatasetRegistry
    from tools.core.specs import TrainingSpec
    from tools.runtime.base import Runtime

#: job ID prefix -> the runtime that issued it (``tools.training.job_files.job_id_for`` and
#: ``tools.runtime.job_manifest.job_name``); a job ID names its runtime, so any process can route it.
JOB_ID_PREFIXES: dict[str, str] = {"local-": "local", "expagent-": "kubernetes"}


def runtime_of_job(job_id: str) -> str | None:
    """Return the name of the runtime that issued ``job_id`` (None if the ID has no known prefix)."""
    return next((name for prefix, name in JOB_ID_PREFIXES.items() if job_id.startswith(prefix)), None)


def job_id_of_run(runtime: str | None, run_id: str) -> str:
    """Return the ID the runtime called ``runtime`` gives the job of ``run_id`` (before it exists)."""
    prefix = next((p for p, name in JOB_ID_PREFIXES.items() if name == runtime), "local-")
    return f"{prefix}{run_id}"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class OpenedClients:
    """The clients a context opens on first use. Copies of a context (one per turn or session) share
    one holder, so whatever one copy opens, every other copy and the service reuse."""

    registry: DatasetRegistry | None = None
    audit: AuditLog | None = None
    tracking: MlflowClient | None = None
    #: every runtime opened so far, by name.
    runtimes: dict[str, Runtime] = field(default_factory=dict)
    #: (tracking URI, experiment name) -> MLflow experiment ID; ``tools.core.tracking`` drops an entry
    #: whose experiment was deleted and looks it up again.
    experiment_ids: dict[tuple[str, str], str] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)


@dataclass
class ToolContext:
    """Clients and session facts for tool calls. Build with :func:`build_context`.

    Session facts (``session_id``, ``requester``, ``approvals``) are this context's own; clients are
    opened on first use into ``clients``, which copies (``dataclasses.replace``) share.
    """

    settings: Settings
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    requester: str = "unknown"
    #: approval keys the user granted in this session (see ``policy.Reject.approval_key``).
    approvals: set[str] = field(default_factory=set)
    clock: Callable[[], datetime] = utcnow
    #: this context's default runtime when it is not ``settings.runtime`` (see ``with_runtime``).
    _runtime: Runtime | None = None
    clients: OpenedClients = field(default_factory=OpenedClients)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def runtimes(self) -> dict[str, Runtime]:
        return self.clients.runtimes

    @property
    def experiment_ids(self) -> dict[tuple[str, str], str]:
        return self.clients.experiment_ids

    @property
    def registry(self) -> DatasetRegistry:
        with self.clients.lock:
            if self.clients.registry is None:
                from tools.core.registry import DatasetRegistry

                self.clients.registry = DatasetRegistry.open(self.settings)
            return self.clients.registry

    @property
    def audit(self) -> AuditLog:
        with self.clients.lock:
            if self.clients.audit is None:
                from tools.core.audit import AuditLog

                self.clients.audit = AuditLog(self.settings.audit_log_path)
            return self.clients.audit

    @property
    def tracking(self) -> MlflowClient:
        with self.clients.lock:
            if self.clients.tracking is None:
                from tools.core.tracking import make_client

                self.clients.tracking = make_client(self.settings)
            return self.clients.tracking

    @property
    def runtime(self) -> Runtime:
        """The default runtime (``settings.runtime``, or the one this context was built with)."""
        if self._runtime is not None:
            return self._runtime
        return self.runtime_named(self.settings.runtime)

    def runtime_named(self, name: str) -> Runtime:
        """Return the runtime called ``name`` (``local`` or ``kubernetes``), opening it on first use.

        Raises whatever opening it raises (e.g. ``KubernetesConfigError``, ``KubernetesUnavailable``);
        nothing is cached then, so a later call tries again.
        """
        if self._runtime is not None and runtime_name(self._runtime, self.settings.runtime) == name:
            return self._runtime
        with self.clients.lock:
            if name not in self.runtimes:
                from tools.runtime import make_runtime

                self.runtimes[name] = make_runtime(self.settings, name)
            return self.runtimes[name]

    def runtime_for(self, spec: TrainingSpec) -> Runtime:
        """Return the runtime ``spec`` runs on (its ``runtime``, else the configured default)."""
        return self.runtime_named(spec.runtime or self.settings.runtime)

    def runtime_for_job(self, job_id: str) -> Runtime:
        """Return the runtime that issued ``job_id`` (the default runtime for an unknown prefix)."""
        name = runtime_of_job(job_id)
        return self.runtime if name is None else self.runtime_named(name)

    def with_runtime(self, name: str | None) -> ToolContext:
        """Return a copy of this context whose default runtime is ``name`` (self when None)."""
        if name is None:
            return self
        return dataclasses.replace(self, _runtime=self.runtime_named(name))

    def open_runtimes(self) -> list[Runtime]:
        """Return every runtime opened so far (each once)."""
        with self.clients.lock:
            found = [self._runtime, *self.runtimes.values()]
        unique: dict[int, Runtime] = {id(r): r for r in found if r is not None}
        return list(unique.values())

    def close(self) -> None:
        """Release runtime resources (worker processes, watches)."""
        for runtime in self.open_runtimes():
            runtime.close()


def runtime_name(runtime: Runtime, default: str) -> str:
    """Return ``runtime``'s name; one without a runtime's name (a test double) stands in for ``default``."""
    name = str(getattr(runtime, "name", ""))
    return name if name in JOB_ID_PREFIXES.values() else default


def build_context(settings: Settings, **kwargs: Any) -> ToolContext:
    """Create the workspace if needed and return a context for ``settings``."""
    settings.ensure_home()
    kwargs.setdefault("requester", settings.requester)
    return ToolContext(settings=settings, **kwargs)
