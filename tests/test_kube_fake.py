"""The fake API server speaks real Kubernetes: the official client's calls, errors and watches work."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from evals.fakes.kube import FakeKube
from evals.fakes.kube_faults import Faults, PodFault

pytestmark = pytest.mark.timeout(60)
NS = "ml-experiments"


def job_body(name: str, command: list[str], **spec: Any) -> dict[str, Any]:
    pod = {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox", "command": command}]}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"team": "ml"}},
        "spec": {
            "backoffLimit": 0,
            **spec,
            "template": {"metadata": {"labels": {"team": "ml"}}, "spec": pod},
        },
    }


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    with FakeKube(namespaces=[NS, "extra"], grace_seconds=0.5) as fake:
        yield fake


@pytest.fixture
def apis(kube: FakeKube) -> tuple[client.BatchV1Api, client.CoreV1Api]:
    api_client = config.new_client_from_config(str(kube.kubeconfig_path), persist_config=False)
    return client.BatchV1Api(api_client), client.CoreV1Api(api_client)


def wait_for_condition(batch: client.BatchV1Api, name: str, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = batch.read_namespaced_job(name, NS)
        if job.status.conditions and any(c.type in ("Complete", "Failed") for c in job.status.conditions):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {name} did not finish")


def status_body(err: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(err.body)
    return body


def test_namespaces_and_discovery(apis) -> None:
    batch, core = apis
    assert {n.metadata.name for n in core.list_namespace().items} == {NS, "extra"}
    assert client.VersionApi(core.api_client).get_code().git_version.startswith("v1.")
    resources = client.BatchV1Api(core.api_client).get_api_resources().resources
    assert [r.name for r in resources] == ["jobs"]


def test_job_runs_its_command_as_a_process_with_the_pod_env(apis, kube) -> None:
    batch, core = apis
    kube.add_secret(NS, "creds", {"token": "s3cr3t"})
    body = job_body("env-job", [sys.executable, "-c", "import os; print(os.environ['A'], os.environ['T'])"])
    body["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "A", "value": "plain"},
        {"name": "T", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
    ]
    created = batch.create_namespaced_job(NS, body)
    assert created.metadata.uid and int(created.metadata.resource_version) > 0
    job = wait_for_condition(batch, "env-job")
    assert [c.type for c in job.status.conditions if c.status == "True"][-1] == "Complete"
    assert job.status.succeeded == 1 and job.status.completion_time is not None
    pod = core.list_namespaced_pod(NS, label_selector="job-name=env-job").items[0]
    assert pod.status.phase == "Succeeded"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 0
    assert core.read_namespaced_pod_log(pod.metadata.name, NS) == "plain s3cr3t\n"


def test_errors_are_kubernetes_status_objects(apis) -> None:
    batch, _ = apis
    batch.create_namespaced_job(NS, job_body("dup", ["true"]))
    with pytest.raises(ApiException) as conflict:
        batch.create_namespaced_job(NS, job_body("dup", ["true"]))
    assert conflict.value.status == 409
    assert status_body(conflict.value)["reason"] == "AlreadyExists"
    assert status_body(conflict.value)["details"] == {"name": "dup", "group": "batch", "kind": "jobs"}
    with pytest.raises(ApiException) as missing:
        batch.read_namespaced_job("nope", NS)
    assert (missing.value.status, status_body(missing.value)["reason"]) == (404, "NotFound")
    with pytest.raises(ApiException) as no_ns:
        batch.create_namespaced_job("prod", job_body("x", ["true"]))
    assert status_body(no_ns.value)["message"] == 'namespaces "prod" not found'
    bad = job_body("bad", ["true"])
    bad["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    with pytest.raises(ApiException) as invalid:
        batch.create_namespaced_job(NS, bad)
    assert (invalid.value.status, status_body(invalid.value)["reason"]) == (422, "Invalid")


def test_watch_streams_changes_and_resumes_from_a_resource_version(apis) -> None:
    batch, _ = apis
    listing = batch.list_namespaced_job(NS, label_selector="team=ml")
    batch.create_namespaced_job(NS, job_body("watched", ["true"]))
    events = []
    stream = watch.Watch().stream(
        batch.list_namespaced_job,
        NS,
        label_selector="team=ml",
        resource_version=listing.metadata.resource_version,
        timeout_seconds=10,
    )
    for event in stream:
        events.append((event["type"], event["object"].metadata.name))
        if event["object"].status.conditions:
            break
    assert events[0] == ("ADDED", "watched") and events[-1][0] == "MODIFIED"
    assert batch.list_namespaced_job(NS, label_selector="team!=ml").items == []


def test_expired_resource_version_answers_410(apis, kube) -> None:
    batch, _ = apis
    kube.faults.update({"expire_watches": 1})
    with pytest.raises(ApiException) as gone:
        for _ in watch.Watch().stream(batch.list_namespaced_job, NS, resource_version="1", timeout_seconds=2):
            pass
    assert gone.value.status == 410


def test_deadline_and_failing_pods(apis, kube) -> None:
    batch, core = apis
    kube.faults.update({"pod_faults": ["fail:4@fails", "never_start@stuck"]})
    batch.create_namespaced_job(NS, job_body("slow", ["sleep", "30"], activeDeadlineSeconds=1))
    batch.create_namespaced_job(NS, job_body("fails", ["true"]))
    batch.create_namespaced_job(NS, job_body("stuck", ["true"]))
    failed = wait_for_condition(batch, "fails")
    assert failed.status.conditions[-1].reason == "BackoffLimitExceeded"
    timed_out = wait_for_condition(batch, "slow")
    assert timed_out.status.conditions[-1].reason == "DeadlineExceeded"
    stuck = core.list_namespaced_pod(NS, label_selector="job-name=stuck").items[0]
    assert stuck.status.phase == "Pending"
    assert stuck.status.container_statuses[0].state.waiting.reason in ("ErrImagePull", "ImagePullBackOff")


@pytest.mark.parametrize(("policy", "pods_left"), [("Orphan", 1), ("Background", 0), ("Foreground", 0)])
def test_delete_propagation(apis, kube, policy: str, pods_left: int) -> None:
    batch, core = apis
    batch.create_namespaced_job(NS, job_body("victim", ["sleep", "30"]))
    deadline = time.monotonic() + 10
    while not kube.pods() or kube.pods()[0]["status"]["phase"] != "Running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    batch.delete_namespaced_job("victim", NS, propagation_policy=policy)
    time.sleep(1.5)  # > grace period: SIGTERM has been delivered
    assert kube.jobs() == []
    assert len(core.list_namespaced_pod(NS, label_selector="job-name=victim").items) == pods_left


def test_fault_counters_are_consumed(kube) -> None:
    kube.faults.update({"create_errors": 2, "pod_faults": [{"kind": "oom", "count": 1}]})
    assert [kube.faults.take("create_errors") for _ in range(3)] == [True, True, False]
    assert kube.faults.take_pod_fault("any") == PodFault("oom", count=0)
    assert kube.faults.take_pod_fault("any") is None
    with pytest.raises(ValueError, match="unknown fault"):
        Faults().update({"explode": True})


def test_cli_writes_a_kubeconfig_and_serves_until_terminated(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "fake.kubeconfig"
    proc = subprocess.Popen(
        [sys.executable, "-m", "evals.fakes.kube", "--kubeconfig", str(kubeconfig), "--namespace", "team-b"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and "fake kube-apiserver at" in proc.stdout.readline()
        api_client = config.new_client_from_config(str(kubeconfig), persist_config=False)
        names = {n.metadata.name for n in client.CoreV1Api(api_client).list_namespace().items}
        assert names == {NS, "team-b"}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
