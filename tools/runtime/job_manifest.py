"""Turn a TrainingSpec into a ``batch/v1`` Job: the one place a Kubernetes manifest is built.

The Job runs the trainer program (``python -m tools.training.trainer --spec-json <spec>``) in the configured
image (an entry point's Job: in the image its project declares, see ``project_jobs``), with requests
equal to limits, labels that link it to its MLflow run and agent session, and no secret values (only
``secretKeyRef``). The runtime (``tools/runtime/kubernetes.py``) submits it after the policy guard has
checked the manifest.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Any, cast

from kubernetes import client

from tools.core.specs import Resources, TrainingSpec
from tools.runtime.project_jobs import project_env, project_image

if TYPE_CHECKING:
    from tools.core.settings import Settings

LABEL_PREFIX = "expagent.io"
RUN_ID_LABEL = f"{LABEL_PREFIX}/run-id"
SESSION_LABEL = f"{LABEL_PREFIX}/session"
TRIAL_LABEL = f"{LABEL_PREFIX}/trial"
ROLE_LABEL = f"{LABEL_PREFIX}/role"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "expagent"
MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
RUN_ID_ANNOTATION = f"{LABEL_PREFIX}/run-id"
EXPERIMENT_ANNOTATION = f"{LABEL_PREFIX}/experiment"
CONTAINER_NAME = "trainer"
GPU_RESOURCE = "nvidia.com/gpu"

_NAME_PREFIX = "expagent-"
_MAX_NAME = 63
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def job_name(run_id: str) -> str:
    """Return the deterministic DNS-1123 Job name for an MLflow run (same run, same name)."""
    clean = re.sub(r"[^a-z0-9-]+", "-", run_id.lower()).strip("-")
    name = _NAME_PREFIX + clean
    if clean == run_id and len(name) <= _MAX_NAME:
        return name
    # Anything altered or too long gets a digest of the original so two runs never share a name.
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:10]
    return f"{_NAME_PREFIX}{clean[:40]}-{digest}".replace("--", "-")


def job_namespace(spec: TrainingSpec, settings: Settings) -> str:
    """Return the namespace the Job for ``spec`` is created in (``spec.namespace``, else the default)."""
    return spec.namespace or settings.k8s_namespace


def label_value(value: str) -> str:
    """Return ``value`` as a valid label value (≤63 chars of ``[A-Za-z0-9-_.]``, alnum at both ends)."""
    if len(value) <= _MAX_NAME and _LABEL_VALUE.match(value):
        return value
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "-", value)[:50].strip("-_.")
    return f"{clean}-{hashlib.sha256(value.encode()).hexdigest()[:8]}".lstrip("-")


def trainer_command(spec: TrainingSpec) -> list[str]:
    """Return the container command that runs the trainer on ``spec``."""
    command = [
        "python",
        "-m",
        "tools.training.trainer",
        "--spec-json",
        spec.model_dump_json(exclude_none=True),
    ]
    return command + (["--job-id", job_name(spec.run_id)] if spec.run_id else [])


def resource_quantities(resources: Resources) -> dict[str, str]:
    """Return Kubernetes quantities (``cpu``, ``memory``, ``nvidia.com/gpu``) for ``resources``."""
    quantities = {
        "cpu": f"{round(resources.cpu * 1000)}m",
        "memory": f"{round(resources.memory_gb * 1024)}Mi",
    }
    if resources.gpu > 0:
        quantities[GPU_RESOURCE] = str(resources.gpu)
    return quantities


def job_labels(spec: TrainingSpec, settings: Settings) -> dict[str, str]:
    """Return the labels put on the Job and its pods (selectable: run, session, trial, role)."""
    if spec.run_id is None:
        raise ValueError("spec.run_id is not set: create the MLflow run before building the Job")
    labels = {
        MANAGED_BY_LABEL: MANAGED_BY,
        RUN_ID_LABEL: label_value(spec.run_id),
        ROLE_LABEL: spec.role,
    }
    if spec.session_id:
        labels[SESSION_LABEL] = label_value(spec.session_id)
    if spec.trial_number is not None:
        labels[TRIAL_LABEL] = str(spec.trial_number)
    if settings.k8s_queue_name:
        labels[QUEUE_LABEL] = label_value(settings.k8s_queue_name)
    return labels


def job_annotations(spec: TrainingSpec) -> dict[str, str]:
    """Return annotations carrying the exact (unsanitised) links to MLflow and the dataset."""
    annotations = {
        RUN_ID_ANNOTATION: spec.run_id or "",
        EXPERIMENT_ANNOTATION: spec.experiment,
        f"{LABEL_PREFIX}/dataset": f"{spec.dataset}@{spec.version}",
        f"{LABEL_PREFIX}/model-family": spec.model_family or "entry-point",
        f"{LABEL_PREFIX}/metric": spec.metric,
    }
    if spec.entry_point is not None:
        annotations[f"{LABEL_PREFIX}/entry-point"] = f"{spec.entry_point.ref}:{spec.entry_point.entry}"
    optional = {
        "session": spec.session_id,
        "requester": spec.requester,
        "parent-run-id": spec.parent_run_id,
        "trial-number": None if spec.trial_number is None else str(spec.trial_number),
    }
    annotations.update({f"{LABEL_PREFIX}/{k}": v for k, v in optional.items() if v is not None})
    return annotations


def container_env(spec: TrainingSpec, settings: Settings) -> list[client.V1EnvVar]:
    """Return the trainer's environment: tracking URI, workspace, dataset ref, secrets by reference."""
    pod_home = settings.k8s_pod_home or str(settings.home.resolve())
    env = [
        client.V1EnvVar(name="MLFLOW_TRACKING_URI", value=settings.resolved_tracking_uri),
        client.V1EnvVar(name="EXPAGENT_HOME", value=pod_home),
        client.V1EnvVar(name="EXPAGENT_DATASET", value=f"{spec.dataset}@{spec.version}"),
        client.V1EnvVar(name="PYTHONUNBUFFERED", value="1"),
    ]
    if spec.data_source is not None:  # the pinned S3 object the pod reads (also in --spec-json)
        source = spec.data_source
        env += [
            client.V1EnvVar(name="EXPAGENT_DATA_URI", value=source.uri),
            client.V1EnvVar(name="EXPAGENT_DATA_VERSION_ID", value=source.version_id),
            client.V1EnvVar(name="EXPAGENT_DATA_SHA256", value=source.sha256),
        ]
    if settings.s3_endpoint_url:  # credentials never go here: k8s_secret_env or the pod's service account
        env.append(client.V1EnvVar(name="EXPAGENT_S3_ENDPOINT_URL", value=settings.s3_endpoint_url))
    for env_name, ref in sorted(settings.k8s_secret_env.items()):
        secret, sep, key = ref.partition("/")
        if not sep or not secret or not key:
            raise ValueError(f"k8s_secret_env[{env_name!r}] must be 'secret-name/key', got {ref!r}")
        selector = client.V1SecretKeySelector(name=secret, key=key)
        env.append(client.V1EnvVar(name=env_name, value_from=client.V1EnvVarSource(secret_key_ref=selector)))
    if spec.entry_point is not None:  # user code: its record, image and the run's inputs
        env += project_env(spec, settings, pod_home)
    return env


def _tolerations(settings: Settings) -> list[client.V1Toleration] | None:
    if not settings.k8s_tolerations:
        return None
    # Kubernetes JSON keys (tolerationSeconds) -> the client's snake_case constructor arguments.
    snake = [
        {re.sub(r"(?<!^)(?=[A-Z])", "_", k).lower(): v for k, v in t.items()}
        for t in settings.k8s_tolerations
    ]
    return [client.V1Toleration(**cast(dict[str, Any], t)) for t in snake]


def _container(spec: TrainingSpec, settings: Settings) -> client.V1Container:
    quantities = resource_quantities(spec.resources)
    return client.V1Container(
        name=CONTAINER_NAME,
        image=project_image(spec, settings) if spec.entry_point is not None else settings.k8s_image,
        command=trainer_command(spec),
        env=container_env(spec, settings),
        resources=client.V1ResourceRequirements(requests=quantities, limits=dict(quantities)),
        security_context=client.V1SecurityContext(
            allow_privilege_escalation=False,
            privileged=False,
            capabilities=client.V1Capabilities(drop=["ALL"]),
        ),
    )


def build_job(spec: TrainingSpec, settings: Settings) -> client.V1Job:
    """Return the ``batch/v1`` Job that runs ``spec`` (``spec.run_id`` must be set)."""
    labels = job_labels(spec, settings)
    pod_spec = client.V1PodSpec(
        restart_policy="Never",
        containers=[_container(spec, settings)],
        service_account_name=settings.k8s_service_account,
        automount_service_account_token=False,
        node_selector=dict(settings.k8s_node_selector) or None,
        tolerations=_tolerations(settings),
    )
    return client.V1Job(
        api_version="batch/v1",
        kind="Job",
        metadata=client.V1ObjectMeta(
            name=job_name(spec.run_id or ""),
            namespace=job_namespace(spec, settings),
            labels=labels,
            annotations=job_annotations(spec),
        ),
        spec=client.V1JobSpec(
            active_deadline_seconds=spec.timeout_seconds,
            backoff_limit=0,
            ttl_seconds_after_finished=settings.k8s_ttl_seconds,
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels, annotations=job_annotations(spec)),
                spec=pod_spec,
            ),
        ),
    )


def job_manifest(spec: TrainingSpec, settings: Settings) -> dict[str, Any]:
    """Return :func:`build_job` as a plain JSON-ready dict (what the guard checks and the API receives)."""
    manifest: dict[str, Any] = client.ApiClient().sanitize_for_serialization(build_job(spec, settings))
    return manifest
