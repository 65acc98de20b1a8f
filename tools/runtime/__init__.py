"""Runtimes that execute training jobs: local processes and Kubernetes batch Jobs.

Public: ``make_runtime`` (below), ``base`` (the ``Runtime`` protocol), ``local`` (``LocalRuntime``),
``kubernetes`` (``KubernetesRuntime``), ``kube_errors``, ``kube_client`` (API client and checks),
``job_manifest`` (the Job a run becomes; ``project_jobs``: an entry point's image and pod inputs),
``manifest_checks`` (what a Job manifest may contain),
``forkserver`` and ``processes`` (the warm fork server; process liveness and stopping).
Internals: ``_workers``, ``_kube_status``, ``_kube_watch``, ``_kube_runs``, ``_kube_finalizer``.
See README.md in this folder for the rules of the fork server and the private APIs used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tools.core.settings import Settings
    from tools.runtime.base import Runtime


def make_runtime(settings: Settings, name: str | None = None) -> Runtime:
    """Return the runtime called ``name`` (``local`` or ``kubernetes``; None = ``settings.runtime``)."""
    if (name or settings.runtime) == "kubernetes":
        from tools.runtime.kubernetes import KubernetesRuntime

        return KubernetesRuntime.from_settings(settings)
    from tools.runtime.local import LocalRuntime

    return LocalRuntime.from_settings(settings)
