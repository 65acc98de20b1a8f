"""A request tunes the XGBoost example project on Kubernetes: one Job per run in the project's image.

Real parts: the offline model, AgentService and its graph, the tuning loop, MLflow on sqlite, the
official Kubernetes client against ``evals.fakes.kube.FakeKube`` (its kubelet runs each pod's command on
this machine, ignoring the image). The project's ``image_project_dir`` names a copy of the tree: the
image's copy, which every pod hashes against the registered tree before it trains.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from graph_support import all_runs, make_settings
from mlflow.tracking import MlflowClient

from agent.offline import OfflineChatModel
from agent.service import AgentService
from evals.fakes.kube import FakeKube
from tools.core import tags as tag_keys
from tools.core.entrypoints import EntryPointRegistry

pytestmark = pytest.mark.timeout(300)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "xgboost-tabular"
IMAGE = "ghcr.io/expagent/xgboost-tabular:0.1.0"  # what the example's MLproject declares


def test_a_request_tunes_six_trials_of_the_xgboost_project_on_kubernetes(
    demo_home: Path, tmp_path: Path
) -> None:
    project, in_image = tmp_path / "xgboost-tabular", tmp_path / "image" / "project"
    shutil.copytree(EXAMPLE, project)
    with (project / "expagent.yaml").open("a") as config:
        config.write(f"image_project_dir: {in_image}\n")
    shutil.copytree(project, in_image)
    home = tmp_path / "home"
    shutil.copytree(demo_home, home)
    with FakeKube(grace_seconds=0.5) as kube:
        settings = make_settings(home, runtime="kubernetes", k8s_kubeconfig=kube.kubeconfig_path)
        registry = EntryPointRegistry.open(settings)
        record = registry.register(project, "xgb")
        registry.set_status(record.ref, "validated", "test: the dry run is covered in test_entrypoints")
        service = AgentService(settings, model=OfflineChatModel())
        try:
            result = service.send(
                None,
                "tune 6 trials of my project xgb@1 on breast_cancer version 1 on kubernetes, "
                "n_estimators in [5, 20], 2 in parallel, experiment byo-xgb-k8s",
            )
        finally:
            service.close()
        jobs = kube.jobs()
    assert result.status == "answered", result.answer
    runs = [r for r in all_runs(settings) if r.data.tags.get(tag_keys.ROLE) in ("baseline", "trial")]
    trials = [r for r in runs if r.data.tags[tag_keys.ROLE] == "trial"]
    assert len(trials) == 6 and len(runs) == 7, result.answer
    assert not [r for r in all_runs(settings) if r.info.status == "RUNNING"]
    client = MlflowClient(settings.resolved_tracking_uri)
    for run in runs:
        tags = run.data.tags
        assert run.info.status == "FINISHED", tags.get("mlflow.note.content")
        assert 0.5 < run.data.metrics["val_roc_auc"] <= 1.0
        assert tags[tag_keys.ENTRY_POINT] == "xgb@1" and tags[tag_keys.ENTRY_POINT_TREE] == record.tree_sha256
        assert tags[tag_keys.ENTRY_POINT_ENV] == f"image:{IMAGE}"  # trained in the pod, from the image's copy
        assert tags["seed"] == "42" and run.inputs.dataset_inputs
        assert client.search_logged_models(
            [run.info.experiment_id], filter_string=f"source_run_id='{run.info.run_id}'"
        )
    assert all(5 <= int(r.data.params["n_estimators"]) <= 20 for r in trials)
    assert len({tuple(sorted(r.data.params.items())) for r in trials}) == 6
    job_runs = sorted(
        e["value"] for j in jobs for e in j["spec"]["template"]["spec"]["containers"][0]["env"]
        if e["name"] == "MLFLOW_RUN_ID"
    )  # fmt: skip
    assert job_runs == sorted(r.info.run_id for r in runs)  # one Job per run, nothing else
    for job in jobs:
        assert job["metadata"]["namespace"] == settings.k8s_namespace
        assert job["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE
