"""The typed context every tool receives: settings and the clients it may use (never module globals)."""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from agent.config import Settings

if TYPE_CHECKING:  # heavy imports stay lazy
    from mlflow.tracking import MlflowClient

    from tools.audit import AuditLog
    from tools.registry import DatasetRegistry
    from tools.runtime.base import Runtime
    from tools.specs import TrainingSpec

#: job ID prefix -> the runtime that issued it (``tools.runtime.job_files.job_id_for`` and
#: ``tools.kubernetes.job_name``); a job ID names its runtime, so any process can route it.
JOB_ID_PREFIXES: dict[str, str] = {"local-": "local", "expagent-": "kubernetes"}


def runtime_of_job(job_id: str) -> str | None:
    """Return the name of the runtime that issued ``job_id`` (None if the ID has no known prefix)."""
    return next((name for prefix, name in JOB_ID_PREFIXES.items() if job_id.startswith(prefix)), None)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class ToolContext:
    """Clients and session facts for tool calls. Build with :func:`build_context`."""

    settings: Settings
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    requester: str = "unknown"
    #: approval keys the user granted in this session (see ``policy.Reject.approval_key``).
    approvals: set[str] = field(default_factory=set)
    clock: Callable[[], datetime] = utcnow
    _registry: DatasetRegistry | None = None
    _runtime: Runtime | None = None
    _audit: AuditLog | None = None
    _tracking: MlflowClient | None = None
    #: every runtime opened so far, by name; copies of the context (dataclasses.replace) share it.
    runtimes: dict[str, Runtime] = field(default_factory=dict)
    _runtimes_lock: threading.RLock = field(default_factory=threading.RLock)
    #: (tracking URI, experiment name) -> MLflow experiment ID, looked up once per context and shared by
    #: its copies; ``tools.tracking`` drops an entry whose experiment was deleted and looks it up again.
    experiment_ids: dict[tuple[str, str], str] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def registry(self) -> DatasetRegistry:
        if self._registry is None:
            from tools.registry import DatasetRegistry

            self._registry = DatasetRegistry.open(self.settings)
        return self._registry

    @property
    def audit(self) -> AuditLog:
        if self._audit is None:
            from tools.audit import AuditLog

            self._audit = AuditLog(self.settings.audit_log_path)
        return self._audit

    @property
    def tracking(self) -> MlflowClient:
        if self._tracking is None:
            from tools.tracking import make_client

            self._tracking = make_client(self.settings)
        return self._tracking

    @property
    def runtime(self) -> Runtime:
        """The default runtime (``settings.runtime``, or the one this context was built with)."""
        if self._runtime is None:
            self._runtime = self.runtime_named(self.settings.runtime)
        return self._bound(self._runtime)

    def runtime_named(self, name: str) -> Runtime:
        """Return the runtime called ``name`` (``local`` or ``kubernetes``), opening it on first use.

        Raises whatever opening it raises (e.g. ``KubernetesConfigError``, ``KubernetesUnavailable``);
        nothing is cached then, so a later call tries again.
        """
        if self._runtime is not None and runtime_name(self._runtime, self.settings.runtime) == name:
            return self._bound(self._runtime)
        with self._runtimes_lock:
            if name not in self.runtimes:
                from tools.runtime import make_runtime

                self.runtimes[name] = make_runtime(self.settings, name)
            return self._bound(self.runtimes[name])

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
        with self._runtimes_lock:
            found = [self._runtime, *self.runtimes.values()]
        unique: dict[int, Runtime] = {id(r): r for r in found if r is not None}
        return list(unique.values())

    def _bound(self, runtime: Runtime) -> Runtime:
        # The Kubernetes runtime re-checks every manifest with the approvals of the session's context.
        bind = getattr(runtime, "bind_context", None)
        if bind is not None:
            bind(self)
        return runtime

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
