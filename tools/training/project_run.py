"""Run a registered entry point (an MLflow Project) as one training run, and check its contract.

The launcher has created the MLflow run; this runs the project's command (computed by
``mlflow.projects`` from its ``MLproject`` file and the params) as a subprocess in the project directory,
with ``python`` the project's own environment (``project_env``: a uv virtualenv per environment hash
when it declares a ``python_env``, else the current one; in a Kubernetes pod, the image's), with
``MLFLOW_RUN_ID``, ``MLFLOW_TRACKING_URI``,
``EXPAGENT_DATASET_PATH``/``EXPAGENT_DATASET_SHA256``/``EXPAGENT_DATASET_TARGET`` and ``EXPAGENT_SEED``
(the path: the workspace file, or a private verified copy of an S3 object version or of a file without
its PII columns, deleted after the run: ``tools.training.job_dataset``).
Afterwards the run must hold its params, the primary metric, a logged model and a dataset input; a run
that created a model registry version is a policy violation (audit log, entry point ``blocked``; see
``tools.core.registry_violations``: the agent looks again when it sees the job end).

In a pod the workspace's entry point catalog is not there: the Job carries the registered record in
``EXPAGENT_ENTRY_POINT_RECORD`` (its ``path`` is where the image holds the project), and the project is
run only if that directory hashes to the registered tree (see ``tools/runtime/project_jobs.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from tools.core import tags as tag_keys
from tools.core import tracking
from tools.core.entrypoints import (
    EntryPointRecord,
    EntryPointRegistry,
    command_for,
    contract_findings,
)
from tools.core.registry import DatasetRecord, DatasetRegistry
from tools.core.registry_violations import find_violation, record_violation, violation_note
from tools.core.settings import Settings
from tools.core.specs import TrainingSpec
from tools.training.job_dataset import catalog_record, dataset_file, pinned_record
from tools.training.job_files import TrainingResult
from tools.training.project_env import ProjectEnv, ensure_project_env

#: set on a Kubernetes pod by the Job builder: the registered record (path = the project in the image).
POD_RECORD_ENV = "EXPAGENT_ENTRY_POINT_RECORD"
POD_IMAGE_ENV = "EXPAGENT_PROJECT_IMAGE"


class ContractBroken(RuntimeError):
    """The run finished without what every entry point run must log (or touched the model registry)."""


def project_params(record: EntryPointRecord, entry: str, given: dict[str, Any]) -> dict[str, Any]:
    """Return the entry point's params: defaults overlaid with ``given``; raise on unknown or missing."""
    declared = record.entry_points[entry]
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise ValueError(f"{record.ref} entry {entry!r} has no param {', '.join(unknown)} "
                         f"(declared: {', '.join(declared) or 'none'})")  # fmt: skip
    params = {k: p.default for k, p in declared.items() if p.default is not None} | dict(given)
    missing = sorted(set(declared) - set(params))
    if missing:
        raise ValueError(f"{record.ref} entry {entry!r} needs a value for {', '.join(missing)}")
    return params


def run_project(spec: TrainingSpec, settings: Settings, client: MlflowClient, run_id: str) -> TrainingResult:
    """Run the spec's entry point into ``run_id``; return the result or raise (the caller ends the run)."""
    assert spec.entry_point is not None
    begun = time.monotonic()
    record, project_env = _resolve(spec, settings)
    client.set_tag(run_id, tag_keys.ENTRY_POINT_ENV, project_env.env_hash)
    client.set_tag(run_id, tag_keys.ENTRY_POINT_TREE, record.tree_sha256)
    datasets = DatasetRegistry.open(settings)
    dataset = pinned_record(spec, catalog_record(spec, datasets))  # a pod has only the launcher's copy
    params = project_params(record, spec.entry_point.entry, spec.params)
    command = command_for(record, spec.entry_point.entry, params)
    env = {
        **os.environ,
        # 'python' in the command is the project environment's interpreter.
        "PATH": os.pathsep.join([os.path.dirname(project_env.python), os.environ.get("PATH", "")]),
        "MLFLOW_RUN_ID": run_id,
        "MLFLOW_TRACKING_URI": settings.resolved_tracking_uri,
        "MLFLOW_EXPERIMENT_ID": client.get_run(run_id).info.experiment_id,
        "EXPAGENT_DATASET_SHA256": dataset.sha256,
        "EXPAGENT_DATASET_NAME": dataset.ref,
        "EXPAGENT_DATASET_TARGET": dataset.schema.target,
        "EXPAGENT_DATASET_FORMAT": dataset.format,
        # where the data lives (a pod's Job already names it): for the run's dataset input, never to read
        "EXPAGENT_DATASET_URI": os.environ.get("EXPAGENT_DATASET_URI") or _dataset_uri(datasets, dataset),
        "EXPAGENT_SEED": str(spec.seed),
        "EXPAGENT_REPORT_INTERMEDIATE": "1" if spec.report_intermediate else "0",
    }
    # MLflow Projects' commands are shell command lines (mlflow runs them with bash -c too); the command
    # comes from the registered, hash-checked MLproject file, never from the model.
    with dataset_file(datasets, dataset) as data_path:  # verified; S3 or PII: a private copy for the run
        env["EXPAGENT_DATASET_PATH"] = str(data_path)
        done = subprocess.run(command, shell=True, cwd=record.path, env=env, timeout=spec.timeout_seconds)  # noqa: S602
    _check_registry(settings, client, run_id, record)
    if done.returncode != 0:
        raise RuntimeError(
            f"entry point {record.ref} {spec.entry_point.entry!r} exited with code {done.returncode}"
        )
    missing = contract_findings(client, run_id, params, record.config)
    if missing:
        note = f"contract: entry point {record.ref} run is missing {', '.join(missing)}"
        tracking.end_run(client, run_id, "FAILED", note=note, only_if_running=False)
        raise ContractBroken(note)
    metrics = dict(client.get_run(run_id).data.metrics)
    metrics["run_seconds"] = time.monotonic() - begun
    if project_env.built_seconds:
        metrics["env_build_seconds"] = project_env.built_seconds
    primary = record.config.primary_metric
    return TrainingResult(run_id=run_id, status="FINISHED", metric=primary, value=metrics.get(primary),
                          metrics=metrics)  # fmt: skip


def _dataset_uri(datasets: DatasetRegistry, dataset: DatasetRecord) -> str:
    """Return the dataset's location: the S3 object version, or the workspace file."""
    if dataset.in_s3:
        return f"{dataset.uri}?versionId={dataset.s3_version_id}"
    return str(datasets.local_path(dataset))


def _resolve(spec: TrainingSpec, settings: Settings) -> tuple[EntryPointRecord, ProjectEnv]:
    """Return the record to run (the catalog's, or the pod's copy) once its tree is verified, and its env."""
    assert spec.entry_point is not None
    carried = os.environ.get(POD_RECORD_ENV)
    if carried:  # a pod: the image is the environment; its copy of the project must be the pinned tree
        record = EntryPointRecord.model_validate_json(carried)
        image = os.environ.get(POD_IMAGE_ENV, "its image")
        if record.ref != spec.entry_point.ref:
            raise ValueError(
                f"the Job carries entry point {record.ref}, the spec names {spec.entry_point.ref}"
            )
        problem = EntryPointRegistry(Path()).tree_problem(record, spec.entry_point.entry)
        if problem:
            raise ValueError(f"image {image} does not hold {record.ref} at its pinned tree: {problem}")
        return record, ProjectEnv(env_hash=f"image:{image}", python=sys.executable)
    registry = EntryPointRegistry.open(settings)
    record = registry.resolve(spec.entry_point.ref)
    problem = registry.tree_problem(record, spec.entry_point.entry)
    if problem:
        raise ValueError(problem)
    return record, ensure_project_env(Path(record.path), Path(settings.home) / "envs")


def _check_registry(settings: Settings, client: MlflowClient, run_id: str, record: EntryPointRecord) -> None:
    """Stop a run that created model registry versions: run FAILED (and, with the workspace, audited)."""
    reason = find_violation(client, run_id)
    if reason is None:
        return
    if os.environ.get(POD_RECORD_ENV):  # a pod has no workspace: the agent audits and blocks on the end
        note = violation_note(record.ref, reason)
        tracking.end_run(client, run_id, "FAILED", note=note, only_if_running=False)
    else:
        note = record_violation(settings, client, run_id, record.ref, reason)
    raise ContractBroken(note)
