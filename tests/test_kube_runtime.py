"""KubernetesRuntime against the fake API server, with stand-in pod commands and real MLflow (sqlite).

The stand-in commands never touch MLflow, so whatever the run ends up as (FAILED, KILLED) was written
by the runtime; the real trainer is exercised in test_kube_e2e.py.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from evals.fakes.kube import FakeKube
from evals.fakes.kube_faults import Faults, PodFault
from tools.core.settings import Settings
from tools.core.specs import JobInfo, TrainingSpec
from tools.runtime import kubernetes as kube_runtime
from tools.runtime.kube_client import KubernetesConfigError, load_api_client, tracking_reachability_warning
from tools.runtime.kubernetes import (
    KubernetesRuntime,
    KubernetesSubmitError,
    KubernetesUnavailable,
    ManifestRejected,
)

pytestmark = pytest.mark.timeout(60)

QUICK = [sys.executable, "-c", "print('training started'); print('training done')"]
SLEEPY = [sys.executable, "-c", "import time; print('training started', flush=True); time.sleep(30)"]


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Any, str]:
    from tools.core.tracking import ensure_experiment, make_client

    settings = Settings(home=tmp_path_factory.mktemp("kube-home"))
    settings.ensure_home()
    mlflow_client = make_client(settings)
    return settings, mlflow_client, ensure_experiment(mlflow_client, "k8s-tests")


@pytest.fixture
def new_spec(tracking: tuple[Settings, Any, str]) -> Callable[..., TrainingSpec]:
    _, mlflow_client, experiment_id = tracking

    def make(**overrides: Any) -> TrainingSpec:
        run = mlflow_client.create_run(experiment_id)
        fields: dict[str, Any] = dict(
            dataset="breast_cancer",
            version="1",
            model_family="lightgbm",
            metric="roc_auc",
            experiment="k8s-tests",
            run_id=run.info.run_id,
            session_id="thread-1",
            timeout_seconds=120,
        )
        return TrainingSpec(**{**fields, **overrides})

    return make


@contextmanager
def cluster(
    base: Settings, command: list[str] = QUICK, faults: Faults | None = None, **settings_update: Any
) -> Iterator[tuple[FakeKube, KubernetesRuntime]]:
    with FakeKube(faults=faults, command_override=command, grace_seconds=0.5) as kube:
        settings = base.model_copy(update={"k8s_kubeconfig": kube.kubeconfig_path, **settings_update})
        runtime = KubernetesRuntime(settings, load_api_client(settings), backoff_seconds=0.02)
        try:
            yield kube, runtime
        finally:
            runtime.close()


def run_status(tracking: tuple[Settings, Any, str], run_id: str) -> str:
    return str(tracking[1].get_run(run_id).info.status)


def artifacts(tracking: tuple[Settings, Any, str], run_id: str, path: str | None = None) -> list[str]:
    return [a.path for a in tracking[1].list_artifacts(run_id, path)]


def wait_done(runtime: KubernetesRuntime, info: JobInfo, timeout: float = 20) -> JobInfo:
    final = runtime.wait([info.job_id], timeout=timeout)[0]
    assert final.done, f"job did not finish in {timeout}s: {final}"
    return final


def job_failed(kube: FakeKube, name: str) -> bool:
    conditions = kube.store.get("jobs", "ml-experiments", name)["status"].get("conditions", [])
    return any(c["type"] == "Failed" for c in conditions)


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


# ---- the happy path and idempotence ---------------------------------------------------------------


def test_submitted_job_runs_and_status_comes_from_the_watch(tracking, new_spec) -> None:
    spec = new_spec()
    with cluster(tracking[0]) as (kube, runtime):
        info = runtime.submit(spec)
        assert info.job_id == f"expagent-{spec.run_id}" and info.runtime == "kubernetes"
        final = wait_done(runtime, info)
        assert (final.state, final.exit_code, final.run_id) == ("succeeded", 0, spec.run_id)
        assert "training done" in runtime.logs(info.job_id)
        assert [j.job_id for j in runtime.list_jobs("thread-1")] == [info.job_id]
        assert runtime.list_jobs("another-thread") == []
        for _ in range(20):
            runtime.status(info.job_id)  # answered from the cache: no requests
        assert kube.requests["create jobs"] == 1
        assert kube.requests["get jobs"] == 0 and kube.requests["list jobs"] == 1
    assert run_status(tracking, spec.run_id) == "RUNNING"  # success path leaves the run to the trainer


def test_logs_are_found_while_the_pod_watch_lags(tracking, new_spec, monkeypatch) -> None:
    spec = new_spec()
    with cluster(tracking[0]) as (kube, runtime):
        info = runtime.submit(spec)
        assert wait_done(runtime, info).state == "succeeded"
        monkeypatch.setattr(runtime, "_job_pods", lambda name: [])  # the cache has not seen the pod
        assert "training done" in runtime.logs(info.job_id)


def test_resubmitting_or_resuming_never_creates_a_second_job(tracking, new_spec) -> None:
    spec = new_spec()
    with cluster(tracking[0], SLEEPY) as (kube, runtime):
        first = runtime.submit(spec)
        assert runtime.submit(spec).job_id == first.job_id
        resumed = KubernetesRuntime(runtime.settings, load_api_client(runtime.settings))
        try:
            assert resumed.submit(spec).job_id == first.job_id  # a new process adopts it
        finally:
            resumed.close()
        assert len(kube.jobs()) == 1
        assert kube.requests["create jobs"] == 1
        runtime.cancel(first.job_id, "test over", "pytest")


def test_a_job_of_another_run_under_the_same_name_is_refused(tracking, new_spec) -> None:
    from tools.runtime.job_manifest import job_manifest

    spec = new_spec()
    foreign = job_manifest(spec, tracking[0])
    foreign["metadata"]["annotations"]["expagent.io/run-id"] = "someone-else"
    with cluster(tracking[0], SLEEPY) as (kube, runtime):
        kube.cluster.create_job("ml-experiments", foreign)
        eventually(lambda: runtime._watches.job(foreign["metadata"]["name"]) is not None)
        with pytest.raises(KubernetesSubmitError, match="another run"):
            runtime.submit(spec)
        assert kube.requests["create jobs"] == 0
    assert run_status(tracking, spec.run_id) == "FAILED"


# ---- API faults -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("faults", "creates"),
    [
        (Faults(create_errors=2), 3),  # 500 before storing: retried
        (Faults(create_errors_after_commit=1), 1),  # 500 after storing: found, adopted
        (Faults(create_conflicts=1), 1),  # 409: adopted, not an error
        (Faults(slow_requests=1, slow_seconds=1.5), 1),  # read timeout after storing: found, adopted
    ],
    ids=["500", "500-after-commit", "409", "timeout"],
)
def test_api_faults_are_retried_without_double_submission(tracking, new_spec, faults, creates) -> None:
    spec = new_spec()
    with cluster(tracking[0], faults=faults) as (kube, runtime):
        runtime.request_timeout = (2.0, 0.5)
        info = runtime.submit(spec)
        assert wait_done(runtime, info).state == "succeeded"
        assert [j["metadata"]["name"] for j in kube.jobs()] == [info.job_id]
        assert kube.requests["create jobs"] == creates
    assert run_status(tracking, spec.run_id) == "RUNNING"  # not lost, not failed


def test_persistent_api_failure_ends_the_run_failed(tracking, new_spec) -> None:
    spec = new_spec()
    with cluster(tracking[0], faults=Faults(create_errors=10)) as (kube, runtime):
        runtime.max_attempts = 3
        with pytest.raises(KubernetesSubmitError, match="after 3 attempts: 500"):
            runtime.submit(spec)
        assert kube.jobs() == [] and kube.requests["create jobs"] == 3
    assert run_status(tracking, spec.run_id) == "FAILED"


def test_dropped_and_expired_watches_still_converge(tracking, new_spec) -> None:
    faults = Faults(drop_watches=4, drop_after_events=1, expire_watches=1)
    spec = new_spec()
    with cluster(tracking[0], faults=faults) as (kube, runtime):
        info = runtime.submit(spec)
        assert wait_done(runtime, info).state == "succeeded"
        assert kube.requests["watch jobs"] + kube.requests["watch pods"] >= 4
        caches = (
            runtime._watches.jobs_cache("ml-experiments"),
            runtime._watches.pods_cache("ml-experiments"),
        )
        assert sum(c.relists for c in caches) >= 3  # initial lists + a re-list after 410


def test_the_guard_checks_every_manifest_before_submission(tracking, new_spec) -> None:
    spec = new_spec()
    with cluster(tracking[0], k8s_service_account="cluster-admin", namespaces=["other"]) as (kube, runtime):
        with pytest.raises(ManifestRejected, match="not allowed"):
            runtime.submit(spec)
        assert kube.requests["create jobs"] == 0
    assert run_status(tracking, spec.run_id) == "FAILED"


# ---- pod failures ---------------------------------------------------------------------------------


def test_error_exit_code_is_surfaced_and_pod_logs_become_an_artifact(tracking, new_spec) -> None:
    spec = new_spec()
    faults = Faults(pod_faults=[PodFault("fail", exit_code=3)])
    with cluster(tracking[0], faults=faults) as (kube, runtime):
        final = wait_done(runtime, runtime.submit(spec))
        assert (final.state, final.exit_code, final.reason) == ("failed", 3, "Error (exit code 3)")
        assert "injected failure" in runtime.logs(final.job_id)
    assert run_status(tracking, spec.run_id) == "FAILED"
    logs = artifacts(tracking, spec.run_id, "kubernetes")
    assert len(logs) == 1 and logs[0].startswith(f"kubernetes/{final.job_id}-")
    tags = tracking[1].get_run(spec.run_id).data.tags
    assert tags["expagent.k8s.failure_reason"] == "Error (exit code 3)"


def test_oom_killed_is_surfaced(tracking, new_spec) -> None:
    spec = new_spec()
    with cluster(tracking[0], SLEEPY, faults=Faults(pod_faults=[PodFault("oom")])) as (kube, runtime):
        final = wait_done(runtime, runtime.submit(spec))
        assert (final.state, final.reason, final.exit_code) == ("failed", "OOMKilled (exit code 137)", 137)
    assert run_status(tracking, spec.run_id) == "FAILED"
    assert artifacts(tracking, spec.run_id, "kubernetes")


def test_an_oom_fault_kills_even_a_command_faster_than_the_kill(tracking, new_spec) -> None:
    # CI saw k8s-oom-killed end FINISHED: a warm pod trained and closed its run before the OOM timer.
    spec = new_spec()
    faults = Faults(pod_faults=[PodFault("oom")], oom_after_seconds=1.0)
    with cluster(tracking[0], QUICK, faults=faults) as (kube, runtime):
        final = wait_done(runtime, runtime.submit(spec))
        assert (final.state, final.reason, final.exit_code) == ("failed", "OOMKilled (exit code 137)", 137)
    assert run_status(tracking, spec.run_id) == "FAILED"


def test_a_failed_job_reports_its_recorded_reason_while_the_pod_watch_lags(
    tracking, new_spec, monkeypatch
) -> None:
    # The k8s-oom-killed race: the Job's Failed condition arrives before the pod's OOMKilled state, and
    # a wait() that times out while the failure is being recorded must not report the stale reason.
    spec, finalizing = new_spec(), threading.Event()
    with cluster(tracking[0], SLEEPY, faults=Faults(pod_faults=[PodFault("oom")])) as (kube, runtime):
        monkeypatch.setattr(runtime, "_job_pods", lambda name: [])  # the pod watch has not caught up
        record_failure = runtime.runs.record_failure

        def slow_record(*args: Any, **kwargs: Any) -> None:
            finalizing.set()
            time.sleep(0.5)
            record_failure(*args, **kwargs)

        monkeypatch.setattr(runtime.runs, "record_failure", slow_record)
        info = runtime.submit(spec)
        assert finalizing.wait(30)
        seen = runtime.wait([info.job_id], timeout=0.05)[0]  # times out mid-recording
        assert (seen.state, seen.reason) == ("failed", "OOMKilled (exit code 137)")
    assert run_status(tracking, spec.run_id) == "FAILED"


def test_deadline_exceeded_is_surfaced(tracking, new_spec) -> None:
    spec = new_spec(timeout_seconds=1)
    with cluster(tracking[0], SLEEPY) as (kube, runtime):
        final = wait_done(runtime, runtime.submit(spec))
        assert final.state == "failed" and final.reason is not None
        assert final.reason.startswith("DeadlineExceeded")
        eventually(lambda: kube.pods() == [])  # the cluster killed the pod
    assert run_status(tracking, spec.run_id) == "FAILED"


def test_image_pull_backoff_is_surfaced_then_failed_after_the_grace_period(tracking, new_spec) -> None:
    spec = new_spec()
    faults = Faults(pod_faults=[PodFault("never_start")])
    with cluster(tracking[0], faults=faults, k8s_start_grace_seconds=1.0) as (kube, runtime):
        info = runtime.submit(spec)
        eventually(lambda: "ImagePullBackOff" in (runtime.status(info.job_id).reason or ""))
        assert runtime.status(info.job_id).state == "pending"
        final = wait_done(runtime, info)
        assert final.state == "failed" and "ImagePullBackOff" in (final.reason or "")
        eventually(lambda: kube.jobs() == [] and kube.pods() == [])
    assert run_status(tracking, spec.run_id) == "FAILED"


# ---- cancel and reconcile -------------------------------------------------------------------------


def test_cancel_deletes_job_and_pods_and_records_the_cancellation(tracking, new_spec) -> None:
    spec = new_spec()
    with cluster(tracking[0], SLEEPY) as (kube, runtime):
        info = runtime.submit(spec)
        eventually(lambda: runtime.status(info.job_id).state == "running")
        cancelled = runtime.cancel(info.job_id, "runaway cost", "alice")
        assert (cancelled.state, cancelled.reason) == ("cancelled", "runaway cost")
        assert runtime.wait([info.job_id], timeout=1)[0].state == "cancelled"
        eventually(lambda: kube.jobs() == [] and kube.pods() == [])
        assert runtime.cancel(info.job_id, "again", "alice").state == "cancelled"  # idempotent
        assert kube.requests["delete jobs"] == 1
    assert run_status(tracking, spec.run_id) == "KILLED"
    assert "cancellation.json" in artifacts(tracking, spec.run_id)
    assert tracking[1].get_run(spec.run_id).data.tags["expagent.cancelled_by"] == "alice"


def test_a_second_stop_reports_the_cancellation_under_way(tracking, new_spec, monkeypatch) -> None:
    """Two callers stopping one Job at once (the start-up reconcile and a user's cancel, say): the second
    reports the cancellation under way, never the Job's state from before it (CI once saw "running")."""
    import threading

    with cluster(tracking[0], SLEEPY) as (_kube, runtime):
        info = runtime.submit(new_spec())
        entered, release = threading.Event(), threading.Event()
        delete = runtime._delete_job

        def slow_delete(name: str, namespace: str, propagation: str) -> None:
            entered.set()
            release.wait(30)  # the first stop is inside its delete while the second one asks
            delete(name, namespace, propagation)

        monkeypatch.setattr(runtime, "_delete_job", slow_delete)
        first: list[Any] = []
        stopper = threading.Thread(target=lambda: first.append(runtime.cancel(info.job_id, "user", "tester")))
        stopper.start()
        assert entered.wait(30)
        monkeypatch.setattr(kube_runtime, "ORPHAN_GRACE_SECONDS", -1000.0)
        second = {i.job_id: i.state for i in runtime.reconcile()}
        release.set()
        stopper.join(30)
        assert second[info.job_id] == "cancelled"
        assert first and first[0].state == "cancelled"
    assert run_status(tracking, info.run_id) == "KILLED"


def test_reconcile_adopts_running_records_failed_and_cancels_orphans(tracking, new_spec, monkeypatch) -> None:
    from tools.runtime.job_manifest import job_manifest

    running, failing = new_spec(), new_spec()
    faults = Faults(pod_faults=[PodFault("fail", exit_code=2, match=failing.run_id or "")])
    with cluster(tracking[0], SLEEPY, faults=faults) as (kube, first):
        running_info = first.submit(running)
        first.close()  # the agent stops; meanwhile a Job it launched fails
        failing_job = kube.cluster.create_job("ml-experiments", job_manifest(failing, first.settings))
        failing_name = failing_job["metadata"]["name"]
        eventually(lambda: job_failed(kube, failing_name))
        assert run_status(tracking, failing.run_id) == "RUNNING"

        second = KubernetesRuntime(first.settings, load_api_client(first.settings))
        try:
            assert second.wait([failing_name], timeout=10)[0].state == "failed"
            assert run_status(tracking, failing.run_id) == "FAILED"  # recorded on start
            assert second.status(running_info.job_id).state in ("pending", "running")  # adopted

            monkeypatch.setattr(kube_runtime, "ORPHAN_GRACE_SECONDS", -1000.0)
            states = {i.job_id: i.state for i in second.reconcile("thread-1")}
            assert states == {running_info.job_id: "cancelled", failing_name: "failed"}
        finally:
            second.close()
        assert kube.requests["create jobs"] == 1  # the failing Job was created behind the API's back
    assert run_status(tracking, running.run_id) == "KILLED"
    assert tracking[1].get_run(running.run_id).data.tags["expagent.cancel_kind"] == "orphan"


def test_unknown_job_is_a_key_error(tracking) -> None:
    with cluster(tracking[0]) as (_, runtime):
        with pytest.raises(KeyError, match="no Kubernetes Job"):
            runtime.status("expagent-does-not-exist")


# ---- configuration ------------------------------------------------------------------------------


def _client_for(host: str) -> client.ApiClient:
    configuration = type.__call__(client.Configuration)
    configuration.host = host
    return client.ApiClient(configuration)


def test_local_tracking_store_with_a_remote_cluster_is_warned_about(tmp_path: Path) -> None:
    local = Settings(home=tmp_path)
    remote_server = Settings(home=tmp_path, tracking_uri="https://mlflow.internal.example.com")
    eks = _client_for("https://ABCDEF.gr7.eu-west-1.eks.amazonaws.com")
    warning = tracking_reachability_warning(local, eks)
    assert warning is not None and "cannot reach" in warning and "sqlite" in warning
    assert tracking_reachability_warning(local, _client_for("http://127.0.0.1:8001")) is None
    assert tracking_reachability_warning(remote_server, eks) is None
    localhost_server = Settings(home=tmp_path, tracking_uri="http://localhost:5000")
    assert tracking_reachability_warning(localhost_server, eks) is not None


def test_missing_kubeconfig_or_context_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KubernetesConfigError, match="cannot load Kubernetes config"):
        load_api_client(Settings(home=tmp_path, k8s_kubeconfig=tmp_path / "missing"))
    with FakeKube() as kube:
        bad_context = Settings(home=tmp_path, k8s_kubeconfig=kube.kubeconfig_path, k8s_context="eks-prod")
        with pytest.raises(KubernetesConfigError, match="eks-prod"):
            load_api_client(bad_context)


def test_unreachable_api_server_is_a_clear_error(tmp_path: Path) -> None:
    kube = FakeKube(kubeconfig_path=tmp_path / "kubeconfig").start()
    kube.stop()  # the kubeconfig stays, nothing listens any more
    settings = Settings(home=tmp_path, k8s_kubeconfig=tmp_path / "kubeconfig")
    with pytest.raises(
        KubernetesUnavailable, match="cannot list Jobs and pods in namespace 'ml-experiments'"
    ):
        KubernetesRuntime.from_settings(settings)


def test_run_ids_are_required(tracking) -> None:
    with cluster(tracking[0]) as (_, runtime):
        spec = TrainingSpec(
            dataset="d", version="1", model_family="lightgbm", metric="roc_auc", experiment="e"
        )
        with pytest.raises(ValueError, match="run_id"):
            runtime.submit(spec)


# ---- jobs that vanish: never "unknown" for a job the runtime knew ---------------------------------


def test_a_job_the_start_grace_rule_deleted_is_reported_failed_while_it_is_recorded(
    tracking, new_spec, monkeypatch
) -> None:
    # The k8s-never-start race: the Job is deleted, its failure not yet written to MLflow.
    monkeypatch.setattr(kube_runtime, "VANISHED_WAIT_SECONDS", 0.2)
    spec, release = new_spec(), threading.Event()
    faults = Faults(pod_faults=[PodFault("never_start")])
    with cluster(tracking[0], faults=faults, k8s_start_grace_seconds=0.5) as (kube, runtime):
        record_failure = runtime.runs.record_failure

        def slow_record(*args: Any, **kwargs: Any) -> None:
            release.wait(20)
            record_failure(*args, **kwargs)

        monkeypatch.setattr(runtime.runs, "record_failure", slow_record)
        info = runtime.submit(spec)
        eventually(lambda: kube.jobs() == [] and runtime._watches.job(info.job_id) is None)
        early = runtime.status(info.job_id)  # used to raise KeyError: no Kubernetes Job ...
        assert early.state == "failed" and "ImagePullBackOff" in (early.reason or "")
        assert runtime.wait([info.job_id], timeout=0.1)[0].state == "failed"
        assert "has no pods" in runtime.logs(info.job_id)
        release.set()
        final = wait_done(runtime, info)
        assert final.state == "failed" and "did not start within" in (final.reason or "")
    assert run_status(tracking, spec.run_id) == "FAILED"


def test_a_job_deleted_behind_our_back_is_reported_cancelled_never_unknown(tracking, new_spec) -> None:
    spec = new_spec()
    with cluster(tracking[0], SLEEPY) as (kube, runtime):
        info = runtime.submit(spec)
        eventually(lambda: runtime.status(info.job_id).state == "running")
        kube.cluster.delete_job("ml-experiments", info.job_id, "Foreground")
        deadline = time.monotonic() + 20
        while not (current := runtime.status(info.job_id)).done:  # never a KeyError on the way
            assert time.monotonic() < deadline, "the deletion was never noticed"
        assert current.state == "cancelled" and "deleted" in (current.reason or "")
        assert runtime.cancel(info.job_id, "too late", "pytest").state == "cancelled"
        assert kube.requests["delete jobs"] == 0  # nothing left to delete
    assert run_status(tracking, spec.run_id) == "KILLED"


# ---- namespaces ---------------------------------------------------------------------------------


def test_a_job_runs_in_its_spec_namespace_and_is_followed_there(tracking, new_spec) -> None:
    spec, default = new_spec(namespace="ml-team"), new_spec()
    namespaces = ["ml-experiments", "ml-team"]
    with FakeKube(namespaces=namespaces, command_override=SLEEPY, grace_seconds=0.5) as kube:
        settings = tracking[0].model_copy(
            update={"k8s_kubeconfig": kube.kubeconfig_path, "namespaces": namespaces}
        )
        runtime = KubernetesRuntime(settings, load_api_client(settings), backoff_seconds=0.02)
        try:
            info = runtime.submit(spec)
            assert info.namespace == "ml-team" and runtime.submit(default).namespace == "ml-experiments"
            assert [j["metadata"]["name"] for j in kube.jobs("ml-team")] == [info.job_id]
            eventually(lambda: "training started" in runtime.logs(info.job_id))  # read in ml-team
            assert runtime.status(info.job_id).state == "running"
            assert info.job_id in [j.job_id for j in runtime.list_jobs("thread-1")]
            assert runtime.cancel(info.job_id, "done looking", "pytest").state == "cancelled"
            eventually(lambda: kube.jobs("ml-team") == [])
            runtime.cancel(job_name_of(default), "done looking", "pytest")
        finally:
            runtime.close()
        assert kube.requests["get jobs"] == 0  # followed by the watch, not polled
    assert run_status(tracking, spec.run_id) == "KILLED"


def test_a_spec_namespace_outside_the_allowlist_is_never_created_or_watched(tracking, new_spec) -> None:
    spec = new_spec(namespace="prod")
    with cluster(tracking[0]) as (kube, runtime):
        with pytest.raises(ManifestRejected, match="namespace 'prod' is not allowed; use one of"):
            runtime.submit(spec)
        assert runtime._watches.namespaces == ["ml-experiments"]
        assert kube.requests["create jobs"] == 0
    assert run_status(tracking, spec.run_id) == "FAILED"


def job_name_of(spec: TrainingSpec) -> str:
    from tools.runtime.job_manifest import job_name

    return job_name(spec.run_id or "")
