"""The typed context every tool receives: settings and the clients it may use (never module globals)."""

from __future__ import annotations

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
        if self._runtime is None:
            from tools.runtime import make_runtime

            self._runtime = make_runtime(self.settings)
            # The Kubernetes runtime re-checks every manifest with this session's approvals.
            bind = getattr(self._runtime, "bind_context", None)
            if bind is not None:
                bind(self)
        return self._runtime

    def close(self) -> None:
        """Release runtime resources (worker processes, watches)."""
        if self._runtime is not None:
            self._runtime.close()


def build_context(settings: Settings, **kwargs: Any) -> ToolContext:
    """Create the workspace if needed and return a context for ``settings``."""
    settings.ensure_home()
    kwargs.setdefault("requester", settings.requester)
    return ToolContext(settings=settings, **kwargs)
