"""The Job manifest builder: every variant validates (strict) and the guard rejects what it must."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from tools.context import ToolContext
from tools.core.settings import Budget, Settings
from tools.core.specs import Resources, TrainingSpec
from tools.runtime.job_manifest import build_job, job_manifest, job_name, label_value

K8S_VERSION = "1.37.0"
RUN_ID = "0123456789abcdef0123456789abcdef"


def make_spec(**overrides: Any) -> TrainingSpec:
    base: dict[str, Any] = dict(
        dataset="breast_cancer",
        version="1",
        model_family="lightgbm",
        metric="roc_auc",
        experiment="k8s-smoke",
        run_id=RUN_ID,
        session_id="thread-1",
    )
    return TrainingSpec(**{**base, **overrides})


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path)


VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "defaults": ({}, {}),
    "gpu_trial_with_queue": (
        {"role": "trial", "trial_number": 7, "resources": Resources(cpu=2, memory_gb=6, gpu=1)},
        {"k8s_queue_name": "team-a", "budget": Budget(max_gpu_per_run=1)},
    ),
    "node_selector_tolerations_secrets": (
        {"params": {"num_leaves": 31, "learning_rate": 0.1}, "parent_run_id": "f" * 32},
        {
            "k8s_node_selector": {"node.kubernetes.io/instance-type": "m5.xlarge"},
            "k8s_tolerations": [
                {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"},
                {"key": "spot", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60},
            ],
            "k8s_secret_env": {"MLFLOW_TRACKING_TOKEN": "mlflow-auth/token"},
            "k8s_service_account": "expagent-trainer",
            "tracking_uri": "https://mlflow.example.com",
        },
    ),
    "odd_ids": ({"run_id": "Run_ID With Spaces/1", "session_id": "user@example.com:chat"}, {}),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_manifest_variant_validates_strictly(variant: str, tmp_path: Path) -> None:
    spec_overrides, settings_overrides = VARIANTS[variant]
    settings = Settings(home=tmp_path, **settings_overrides)
    manifest = job_manifest(make_spec(**spec_overrides), settings)
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)  # raises on any schema error


def test_manifest_is_a_bounded_one_shot_job_running_the_trainer(settings: Settings) -> None:
    spec = make_spec(timeout_seconds=900, resources=Resources(cpu=1.5, memory_gb=3))
    manifest = job_manifest(spec, settings)
    job_spec = manifest["spec"]
    pod = job_spec["template"]["spec"]
    container = pod["containers"][0]
    assert (manifest["apiVersion"], manifest["kind"]) == ("batch/v1", "Job")
    assert manifest["metadata"]["namespace"] == "ml-experiments"
    assert job_spec["activeDeadlineSeconds"] == 900
    assert job_spec["backoffLimit"] == 0
    assert job_spec["ttlSecondsAfterFinished"] == settings.k8s_ttl_seconds
    assert pod["restartPolicy"] == "Never"
    assert container["image"] == settings.k8s_image
    assert container["command"][:4] == ["python", "-m", "tools.training.trainer", "--spec-json"]
    assert TrainingSpec.model_validate_json(container["command"][4]) == spec
    assert container["resources"]["requests"] == {"cpu": "1500m", "memory": "3072Mi"}
    assert container["resources"]["limits"] == container["resources"]["requests"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MLFLOW_TRACKING_URI"] == settings.resolved_tracking_uri
    assert env["EXPAGENT_DATASET"] == "breast_cancer@1"
    assert env["EXPAGENT_HOME"] == str(settings.home.resolve())


def test_gpu_and_queue_and_links_to_mlflow(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, k8s_queue_name="team-a")
    spec = make_spec(role="trial", trial_number=3, resources=Resources(gpu=2), parent_run_id="p" * 32)
    manifest = job_manifest(spec, settings)
    labels, annotations = manifest["metadata"]["labels"], manifest["metadata"]["annotations"]
    limits = manifest["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "2"
    assert labels["kueue.x-k8s.io/queue-name"] == "team-a"
    assert labels["expagent.io/run-id"] == RUN_ID
    assert labels["expagent.io/session"] == "thread-1"
    assert labels["expagent.io/trial"] == "3"
    assert annotations["expagent.io/experiment"] == "k8s-smoke"
    assert annotations["expagent.io/parent-run-id"] == "p" * 32
    assert manifest["spec"]["template"]["metadata"]["labels"] == labels  # pods are selectable too


def test_no_gpu_resource_unless_asked(settings: Settings) -> None:
    container = job_manifest(make_spec(), settings)["spec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]


def test_secrets_appear_only_as_secret_key_refs(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, k8s_secret_env={"MLFLOW_TRACKING_PASSWORD": "mlflow-auth/password"})
    manifest = job_manifest(make_spec(), settings)
    env = manifest["spec"]["template"]["spec"]["containers"][0]["env"]
    secret = next(e for e in env if e["name"] == "MLFLOW_TRACKING_PASSWORD")
    assert "value" not in secret
    assert secret["valueFrom"] == {"secretKeyRef": {"name": "mlflow-auth", "key": "password"}}


def test_malformed_secret_reference_is_a_clear_error(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, k8s_secret_env={"TOKEN": "no-key-here"})
    with pytest.raises(ValueError, match="secret-name/key"):
        build_job(make_spec(), settings)


def test_job_names_are_deterministic_dns1123_and_distinct() -> None:
    assert job_name(RUN_ID) == job_name(RUN_ID) == f"expagent-{RUN_ID}"
    odd = ["Run_A", "run-a", "RUN A", "x" * 80, "x" * 81]
    names = [job_name(r) for r in odd]
    assert len(set(names)) == len(odd)
    for name in names:
        assert len(name) <= 63 and name == name.lower() and name[0].isalnum() and name[-1].isalnum()


def test_label_values_are_sanitised_only_when_needed() -> None:
    assert label_value("thread-1") == "thread-1"
    cleaned = label_value("user@example.com:chat")
    assert cleaned != label_value("user@example.com:chat2")
    assert all(c.isalnum() or c in "-_." for c in cleaned)


def test_spec_without_run_id_is_refused(settings: Settings) -> None:
    with pytest.raises(ValueError, match="run_id"):
        build_job(make_spec(run_id=None), settings)


# ---- the guard on manifests -----------------------------------------------------------------------


def _verdict(manifest: dict[str, Any], settings: Settings, approvals: set[str] | None = None) -> Any:
    from tools.guard.policy import check_manifest

    ctx = ToolContext(settings=settings, session_id="thread-1", approvals=approvals or set())
    return check_manifest(manifest, ctx)


def test_guard_allows_the_built_manifest(settings: Settings) -> None:
    assert _verdict(job_manifest(make_spec(), settings), settings).verdict == "allow"


def test_guard_rejects_a_deployment(settings: Settings) -> None:
    manifest = job_manifest(make_spec(), settings)
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": manifest["metadata"],
        "spec": {"replicas": 1, "template": manifest["spec"]["template"]},
    }
    verdict = _verdict(deployment, settings)
    assert verdict.verdict == "reject" and verdict.rule == "no_deployment"
    assert verdict.approval_key is None


def _mutated(settings: Settings, change: Any) -> dict[str, Any]:
    manifest = copy.deepcopy(job_manifest(make_spec(), settings))
    change(manifest["spec"]["template"]["spec"])
    return manifest


@pytest.mark.parametrize(
    ("what", "change", "expected"),
    [
        (
            "privileged",
            lambda pod: pod["containers"][0]["securityContext"].update(privileged=True),
            "privileged",
        ),
        (
            "hostPath",
            lambda pod: pod.update(volumes=[{"name": "root", "hostPath": {"path": "/"}}]),
            "hostPath",
        ),
        ("hostNetwork", lambda pod: pod.update(hostNetwork=True), "hostNetwork"),
        ("hostPID", lambda pod: pod.update(hostPID=True), "hostPID"),
        ("service account", lambda pod: pod.update(serviceAccountName="cluster-admin"), "serviceAccountName"),
    ],
)
def test_guard_rejects_unsafe_pods(settings: Settings, what: str, change: Any, expected: str) -> None:
    verdict = _verdict(_mutated(settings, change), settings)
    assert verdict.verdict == "reject", what
    assert verdict.rule == "kubernetes"
    assert expected in verdict.reason
    assert verdict.approval_key is None  # never approvable


def test_guard_rejects_namespace_outside_allowlist(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, k8s_namespace="kube-system")
    verdict = _verdict(job_manifest(make_spec(), settings), settings)
    assert verdict.verdict == "reject" and "kube-system" in verdict.reason


def test_guard_rejects_resources_beyond_budget_unless_approved(settings: Settings) -> None:
    big = job_manifest(make_spec(resources=Resources(cpu=64, memory_gb=2)), settings)
    verdict = _verdict(big, settings)
    assert verdict.verdict == "reject" and verdict.rule == "resources"
    assert verdict.approval_key == "budget:cpu"
    assert _verdict(big, settings, approvals={"budget:cpu"}).verdict == "allow"


def test_guard_rejects_gpu_and_deadline_beyond_budget(settings: Settings) -> None:
    gpu = _verdict(job_manifest(make_spec(resources=Resources(gpu=1)), settings), settings)
    long = _verdict(job_manifest(make_spec(timeout_seconds=10 * 3600), settings), settings)
    assert (gpu.approval_key, long.approval_key) == ("budget:gpu", "budget:wall")


def test_manifest_serialises_to_plain_json(settings: Settings) -> None:
    manifest = job_manifest(make_spec(), settings)
    assert json.loads(json.dumps(manifest)) == manifest
