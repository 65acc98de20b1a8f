"""Runtimes that execute training jobs: local processes and Kubernetes batch Jobs."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.config import Settings
    from tools.runtime.base import Runtime


def make_runtime(settings: Settings) -> Runtime:
    """Return the runtime the settings select (``local`` or ``kubernetes``)."""
    if settings.runtime == "kubernetes":
        from tools.runtime.kubernetes import KubernetesRuntime

        return KubernetesRuntime.from_settings(settings)
    from tools.runtime.local import LocalRuntime

    return LocalRuntime.from_settings(settings)
