"""Connect to a cluster: kubeconfig (with an EKS context) or in-cluster service account.

Also decides whether pods can reach the tracking store: a local file (``sqlite:///``, ``file:``) or a
server on localhost is fine for the fake cluster (it runs pods on this machine) but not for EKS.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

if TYPE_CHECKING:
    from tools.core.settings import Settings

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class KubernetesConfigError(RuntimeError):
    """No usable cluster configuration (kubeconfig, context or in-cluster service account)."""


def kubeconfig_path(settings: Settings) -> str | None:
    """Return the kubeconfig file to use: settings, then $KUBECONFIG, then ~/.kube/config if present."""
    if settings.k8s_kubeconfig is not None:
        return str(settings.k8s_kubeconfig)
    if os.environ.get("KUBECONFIG"):
        return os.environ["KUBECONFIG"]
    default = Path.home() / ".kube" / "config"
    return str(default) if default.exists() else None


def load_api_client(settings: Settings, pool_size: int = 32) -> client.ApiClient:
    """Return an API client for the configured cluster (kubeconfig context, else in-cluster).

    Raises:
        KubernetesConfigError: With what to set when no configuration works.
    """
    # A private Configuration (never the process-wide default) so two runtimes can coexist.
    configuration = type.__call__(client.Configuration)
    path = kubeconfig_path(settings)
    try:
        if path is not None:
            config.load_kube_config(
                config_file=path,
                context=settings.k8s_context,
                client_configuration=configuration,
                persist_config=False,
            )
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)
        else:
            raise KubernetesConfigError(
                "no Kubernetes configuration: set EXPAGENT_K8S_KUBECONFIG or KUBECONFIG (and "
                "EXPAGENT_K8S_CONTEXT for an EKS context), or run inside a cluster"
            )
    except (ConfigException, OSError) as err:
        context = f", context {settings.k8s_context!r}" if settings.k8s_context else ""
        raise KubernetesConfigError(f"cannot load Kubernetes config from {path}{context}: {err}") from err
    configuration.retries = False  # the runtime retries itself, checking for an existing Job first
    configuration.connection_pool_maxsize = pool_size
    return client.ApiClient(configuration)


def api_host(api_client: client.ApiClient) -> str:
    """Return the API server's host name."""
    return urlsplit(api_client.configuration.host).hostname or ""


def is_local_tracking(uri: str) -> bool:
    """Return whether ``uri`` names a store only this machine can reach (file, sqlite, localhost)."""
    parts = urlsplit(uri)
    if parts.scheme in ("", "file", "sqlite"):
        return True
    return (parts.hostname or "") in LOCAL_HOSTS


def tracking_reachability_warning(settings: Settings, api_client: client.ApiClient) -> str | None:
    """Return a warning when pods on a remote cluster could not reach the tracking store."""
    uri = settings.resolved_tracking_uri
    host = api_host(api_client)
    if host in LOCAL_HOSTS or not is_local_tracking(uri):
        return None
    return (
        f"the MLflow tracking URI {uri!r} is local to this machine, but the Kubernetes API server "
        f"{host!r} is remote: pods there cannot reach it, so their runs would not be logged. Run an "
        "MLflow tracking server the cluster can reach and set MLFLOW_TRACKING_URI (or "
        "EXPAGENT_TRACKING_URI) to it."
    )
