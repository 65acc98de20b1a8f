"""Runtimes that execute training jobs: local processes and Kubernetes batch Jobs."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.config import Settings
    from tools.runtime.base import Runtime


def make_runtime(settings: Settings, name: str | None = None) -> Runtime:
    """Return the runtime called ``name`` (``local`` or ``kubernetes``; None = ``settings.runtime``)."""
    if (name or settings.runtime) == "kubernetes":
        from tools.runtime.kubernetes import KubernetesRuntime

        return KubernetesRuntime.from_settings(settings)
    from tools.runtime.local import LocalRuntime

    return LocalRuntime.from_settings(settings)
