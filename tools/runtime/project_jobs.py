"""What an entry point's Job adds: the project's own image, and the run's inputs as pod environment.

How the code gets to the pod: the project's image holds it. A team builds the image its ``MLproject``
declares (``docker_env: image:``) ``FROM`` the expagent trainer image, copying the project tree to
``expagent.yaml``'s ``image_project_dir`` (default ``/project``) and installing its requirements — the
usual "build and push on every commit" CI step (see ``examples/xgboost-tabular/Dockerfile``). The Job
runs the trainer in that image with the registered record in ``EXPAGENT_ENTRY_POINT_RECORD``; before the
project runs, the trainer hashes the image's copy and refuses (run FAILED, no training) unless it is
the registered tree — so an image built from other code than the registered version never trains, and
nothing is mounted or shipped at run time (a ConfigMap caps at 1 MiB and would bypass the image's
dependencies). The pod's environment is the image; no virtualenv is built on the cluster.

The environment also names the run's inputs: ``MLFLOW_RUN_ID``, the dataset location and checksum,
the params (JSON) and the seed. Secrets stay references (``k8s_secret_env`` in ``job_manifest``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from kubernetes import client

from tools.core.entrypoints import EntryPointRegistry
from tools.core.registry import DatasetRegistry
from tools.core.specs import TrainingSpec

if TYPE_CHECKING:
    from tools.core.settings import Settings

#: read by tools/training/project_run.py in the pod (kept equal to its POD_RECORD_ENV / POD_IMAGE_ENV).
RECORD_ENV = "EXPAGENT_ENTRY_POINT_RECORD"
IMAGE_ENV = "EXPAGENT_PROJECT_IMAGE"


class ProjectImageMissing(ValueError):
    """The entry point declares no image, so it cannot run on Kubernetes (one line)."""


def project_image(spec: TrainingSpec, settings: Settings) -> str:
    """Return the image the spec's entry point declares; raise ProjectImageMissing when it has none."""
    assert spec.entry_point is not None
    record = EntryPointRegistry.open(settings).resolve(spec.entry_point.ref)
    if not record.docker_image:
        raise ProjectImageMissing(
            f"entry point {record.ref} declares no image (MLproject docker_env: image:), so it cannot run "
            "on Kubernetes"
        )
    return record.docker_image


def project_env(spec: TrainingSpec, settings: Settings, pod_home: str) -> list[client.V1EnvVar]:
    """Return the pod environment of an entry point run (its record, image and inputs)."""
    assert spec.entry_point is not None and spec.run_id is not None
    record = EntryPointRegistry.open(settings).resolve(spec.entry_point.ref)
    in_image = record.model_copy(update={"path": record.config.image_project_dir})
    location, checksum = _dataset_location(spec, settings, pod_home)
    values = {
        "MLFLOW_RUN_ID": spec.run_id,
        "EXPAGENT_ENTRY_POINT": f"{record.ref}:{spec.entry_point.entry}",
        RECORD_ENV: in_image.model_dump_json(),
        IMAGE_ENV: project_image(spec, settings),
        "EXPAGENT_DATASET_URI": location,
        "EXPAGENT_DATASET_SHA256": checksum,
        "EXPAGENT_PARAMS": json.dumps(spec.params, sort_keys=True),
        "EXPAGENT_SEED": str(spec.seed),
    }
    return [client.V1EnvVar(name=name, value=value) for name, value in values.items()]


def _dataset_location(spec: TrainingSpec, settings: Settings, pod_home: str) -> tuple[str, str]:
    """Return where the pod reads the data (S3 object version, or the workspace file) and its sha256."""
    if spec.data_source is not None:
        source = spec.data_source
        return f"{source.uri}?versionId={source.version_id}", source.sha256
    datasets = DatasetRegistry.open(settings)
    record = datasets.get(spec.dataset, spec.version)
    path = datasets.local_path(record).resolve()
    home = settings.home.resolve()
    if not path.is_relative_to(home):  # a data directory outside the workspace is mounted as it is
        return str(path), record.sha256
    return f"{pod_home.rstrip('/')}/{path.relative_to(home).as_posix()}", record.sha256
