"""Entry points on Kubernetes: a Job in the project's declared image, against the fake API server.

The official client talks to ``evals.fakes.kube.FakeKube`` unchanged; its kubelet runs the pod's real
command (the trainer) on this machine, ignoring the image. The project directory named by
``image_project_dir`` stands in for the image's copy of the project: the pod hashes it before running.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from evals.fakes.kube import FakeKube
from tools.context import build_context
from tools.core.audit import AuditLog
from tools.core.entrypoints import EntryPointRegistry
from tools.core.settings import Settings
from tools.guard.policy import Reject, guarded_call

pytestmark = pytest.mark.timeout(300)

IMAGE = "registry.example/churn/train:1a2b3c"
MLPROJECT = """\
name: tiny
{docker}
entry_points:
  main:
    parameters:
      lr: {{type: float, default: 0.1}}
    command: "python train.py --lr {{lr}}"
"""
SCRIPT = """\
import argparse, os
import mlflow, pandas as pd
from sklearn.dummy import DummyClassifier
parser = argparse.ArgumentParser(); parser.add_argument("--lr", type=float)
args = parser.parse_args()
frame = pd.read_csv(os.environ["EXPAGENT_DATASET_PATH"])
target = os.environ["EXPAGENT_DATASET_TARGET"]
with mlflow.start_run():
    mlflow.log_param("lr", args.lr)
    mlflow.log_input(mlflow.data.from_pandas(frame, name="d"), context="training")
    mlflow.log_metric("val_accuracy", 0.9)
    model = DummyClassifier().fit(frame.drop(columns=[target]), frame[target])
    mlflow.sklearn.log_model(model, name="model", serialization_format="cloudpickle",
                             pip_requirements=["scikit-learn"])
"""
LAUNCH = {
    "dataset": "breast_cancer", "version": "1", "model_family": "logistic_regression", "metric": "accuracy",
    "experiment": "ep-k8s", "runtime": "kubernetes", "timeout_seconds": 240, "seed": 7,
    "resources": {"cpu": 1, "memory_gb": 1},
}  # fmt: skip
SECRET_ENV = {"AWS_SECRET_ACCESS_KEY": "s3-creds/secret"}


@pytest.fixture
def home(demo_home: Path, tmp_path: Path) -> Path:
    shutil.copytree(demo_home, tmp_path / "home")
    return tmp_path / "home"


def _project(root: Path, image: str | None = IMAGE, image_dir: Path | None = None) -> Path:
    root.mkdir(parents=True)
    docker = f"docker_env:\n  image: {image}" if image else ""
    (root / "MLproject").write_text(MLPROJECT.format(docker=docker))
    # The image's copy of the project sits at image_project_dir (here: a directory on this machine).
    (root / "expagent.yaml").write_text(
        f"primary_metric: val_accuracy\nimage_project_dir: {image_dir or root}\n"
    )
    (root / "train.py").write_text(SCRIPT)
    return root


def _validated(settings: Settings, project: Path) -> str:
    registry = EntryPointRegistry.open(settings)
    record = registry.register(project, "tiny")
    registry.set_status(record.ref, "validated", "test: the local dry run is covered elsewhere")
    return record.ref


def _settings(home: Path, kube: FakeKube) -> Settings:
    return Settings(home=home, trace=False, k8s_kubeconfig=kube.kubeconfig_path, k8s_secret_env=SECRET_ENV)


def _launch(settings: Settings, ref: str) -> tuple[Any, dict[str, Any]]:
    ctx = build_context(settings, session_id="ep-k8s")
    try:
        call = {**LAUNCH, "entry_point": {"ref": ref, "entry": "main"}, "params": {"lr": 0.3}}
        outcome = guarded_call("start_training_run", call, ctx)
        if not outcome.allowed or outcome.result is None:
            return outcome, {}
        (info,) = ctx.runtime_named("kubernetes").wait([outcome.result["job_id"]], timeout=240)
        return outcome, {"state": info.state, "run": ctx.tracking.get_run(outcome.result["run_id"])}
    finally:
        ctx.close()


def test_entry_point_job_runs_in_the_declared_image_with_its_inputs(home: Path, tmp_path: Path) -> None:
    secrets = {"ml-experiments/s3-creds": {"secret": "not-a-real-key"}}
    with FakeKube(secrets=secrets, grace_seconds=0.5) as kube:
        settings = _settings(home, kube)
        ref = _validated(settings, _project(tmp_path / "p"))
        outcome, done = _launch(settings, ref)
        (job,) = kube.jobs()
    assert outcome.allowed and done["state"] == "succeeded", (outcome, done)
    run = done["run"]
    assert run.info.status == "FINISHED" and run.data.params["lr"] == "0.3"
    assert run.data.tags["expagent.entry_point.env"] == f"image:{IMAGE}"  # the image is the environment
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == IMAGE
    env = {e["name"]: e for e in container["env"]}
    values = {name: e.get("value") for name, e in env.items()}
    assert values["MLFLOW_RUN_ID"] == run.info.run_id
    assert values["MLFLOW_TRACKING_URI"] == settings.resolved_tracking_uri
    assert values["EXPAGENT_DATASET_URI"].endswith("breast_cancer/1.csv")
    assert values["EXPAGENT_DATASET_SHA256"] == run.data.tags["dataset.sha256"]
    assert json.loads(values["EXPAGENT_PARAMS"] or "") == {"lr": 0.3} and values["EXPAGENT_SEED"] == "7"
    carried = json.loads(values["EXPAGENT_ENTRY_POINT_RECORD"] or "")
    assert carried["tree_sha256"] == run.data.tags["expagent.entry_point.tree_sha256"]
    secret = env["AWS_SECRET_ACCESS_KEY"]  # by reference only: no value anywhere in the manifest
    assert "value" not in secret and secret["valueFrom"]["secretKeyRef"] == {
        "name": "s3-creds",
        "key": "secret",
    }
    assert "not-a-real-key" not in json.dumps(job)


def test_project_without_an_image_is_refused_on_kubernetes_before_any_run(home: Path, tmp_path: Path) -> None:
    with FakeKube(grace_seconds=0.5) as kube:
        settings = _settings(home, kube)
        ref = _validated(settings, _project(tmp_path / "p", image=None))
        outcome, _ = _launch(settings, ref)
        assert kube.requests["create jobs"] == 0
    verdict = outcome.verdict
    assert isinstance(verdict, Reject) and verdict.rule == "entry_points"
    assert "declares no image" in verdict.reason and "\n" not in verdict.reason
    client = MlflowClient(settings.resolved_tracking_uri)
    assert client.get_experiment_by_name("ep-k8s") is None or not client.search_runs(
        [client.get_experiment_by_name("ep-k8s").experiment_id]  # type: ignore[union-attr]
    )


def test_image_holding_other_code_than_the_registered_tree_does_not_train(home: Path, tmp_path: Path) -> None:
    in_image = tmp_path / "image-copy"
    project = _project(tmp_path / "p", image_dir=in_image)
    shutil.copytree(project, in_image)
    (in_image / "train.py").write_text(SCRIPT.replace("0.9", "0.99"))  # built from another commit
    with FakeKube(grace_seconds=0.5) as kube:
        settings = _settings(home, kube)
        settings = settings.model_copy(update={"k8s_secret_env": {}})
        ref = _validated(settings, project)
        outcome, done = _launch(settings, ref)
    assert outcome.allowed and done["state"] == "failed", (outcome, done)
    run = done["run"]
    assert run.info.status == "FAILED" and "val_accuracy" not in run.data.metrics
    note = run.data.tags["mlflow.note.content"]
    assert f"image {IMAGE} does not hold tiny@1 at its pinned tree" in note, note


def test_a_pod_registering_a_model_is_audited_and_blocked_in_the_agents_workspace(
    home: Path, tmp_path: Path
) -> None:
    """The pod has no workspace: the agent finds the version when it sees the job end, and records it once."""
    project = _project(tmp_path / "p")
    register = '\n    mlflow.register_model(f"runs:/{run.info.run_id}/model", "sneaky")'
    script = SCRIPT.replace(
        'pip_requirements=["scikit-learn"])', 'pip_requirements=["scikit-learn"])' + register
    )
    (project / "train.py").write_text(
        script.replace("with mlflow.start_run():", "with mlflow.start_run() as run:")
    )
    with FakeKube(grace_seconds=0.5) as kube:
        settings = _settings(home, kube).model_copy(update={"k8s_secret_env": {}})
        ref = _validated(settings, project)
        outcome, done = _launch(settings, ref)
        assert outcome.allowed and done["state"] == "failed", (outcome, done)
        ctx = build_context(settings, session_id="ep-k8s")
        try:
            job = {"job_id": outcome.result["job_id"]}
            statuses = [guarded_call("get_job_status", job, ctx).result for _ in range(2)]
            again = guarded_call(
                "start_training_run", {**LAUNCH, "entry_point": {"ref": ref, "entry": "main"}}, ctx
            )
        finally:
            ctx.close()
        assert kube.requests["create jobs"] == 1
    run_id = done["run"].info.run_id
    assert all(s is not None and s["run_status"] == "FAILED" for s in statuses)
    assert all("touched the model registry (sneaky v1)" in s["reason"] for s in statuses if s)
    violations = [e for e in AuditLog(settings.audit_log_path).read() if e.get("kind") == "policy_violation"]
    assert [(v["entry_point"], v["run_id"]) for v in violations] == [(ref, run_id)]  # once, in the workspace
    record = EntryPointRegistry.open(settings).resolve(ref)
    assert record.status == "blocked" and "sneaky v1" in record.status_reason
    run = MlflowClient(settings.resolved_tracking_uri).get_run(run_id)
    assert run.info.status == "FAILED" and "policy violation" in run.data.tags["mlflow.note.content"]
    assert isinstance(again.verdict, Reject) and "blocked" in again.verdict.reason
