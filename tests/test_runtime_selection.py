"""A request's runtime and namespace reach the launch, the guard and the job tools; failed turns end cleanly.

Real parts: MLflow (sqlite), the dataset registry, the guard, the agent graph with a scripted intake
model, and the Kubernetes runtime against the fake API server (pods run stand-in commands, so the runs
they belong to are closed by the runtime or the agent, never by a trainer).
"""

from __future__ import annotations

import importlib
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from graph_support import all_runs, experiment_reply, make_service, make_settings

from agent.answer import SECTIONS, answer_problems
from evals.fakes.kube import FakeKube
from tools import runtime as runtime_package
from tools.context import build_context
from tools.core.registry import DatasetRegistry
from tools.core.specs import TrainingSpec
from tools.guard.policy import Reject, guarded_call

pytestmark = pytest.mark.timeout(120)

QUICK = [sys.executable, "-c", "print('training done')"]
SLEEPY = [sys.executable, "-c", "import time; print('training started', flush=True); time.sleep(60)"]
NAMESPACES = ["ml-experiments", "ml-team"]
KUBE_REQUEST = {"runtime": "kubernetes", "namespace": "ml-team", "experiment": "k8s-select"}
LAUNCH = {
    "dataset": "breast_cancer", "version": "1", "model_family": "logistic_regression", "metric": "roc_auc",
    "experiment": "k8s-select", "timeout_seconds": 120,
}  # fmt: skip


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("template")
    DatasetRegistry.open(make_settings(home))  # demo catalog + migrated MLflow store, built once
    return home


@pytest.fixture
def home(template: Path, tmp_path: Path) -> Path:
    shutil.copytree(template, tmp_path / "home")
    return tmp_path / "home"


def fake_kube(command: list[str]) -> FakeKube:
    return FakeKube(namespaces=NAMESPACES, command_override=command, grace_seconds=0.5)


def kube_settings(home: Path, kube: FakeKube, **overrides: Any) -> dict[str, Any]:
    """Settings overrides: runtime local by default, a cluster with two allowed namespaces."""
    return {"k8s_kubeconfig": kube.kubeconfig_path, "namespaces": NAMESPACES, **overrides}


def statuses(settings: Any) -> dict[str, str]:
    return {r.info.run_id: r.info.status for r in all_runs(settings)}


# ---- the context -------------------------------------------------------------------------------


class NamedRuntime:
    """A runtime double that only knows its name."""

    def __init__(self, name: str) -> None:
        self.name, self.closed = name, False

    def close(self) -> None:
        self.closed = True


def test_the_context_routes_specs_and_job_ids_to_their_runtime(home: Path, monkeypatch) -> None:
    opened: list[str] = []

    def make_runtime(settings: Any, name: str | None = None) -> NamedRuntime:
        opened.append(name or settings.runtime)
        return NamedRuntime(name or settings.runtime)

    monkeypatch.setattr(runtime_package, "make_runtime", make_runtime)
    ctx = build_context(make_settings(home))
    spec = TrainingSpec(**LAUNCH)
    assert ctx.runtime.name == "local" and ctx.runtime_for(spec) is ctx.runtime  # the default, unchanged
    kube = ctx.runtime_for(spec.model_copy(update={"runtime": "kubernetes"}))
    assert kube.name == "kubernetes" and ctx.runtimes["kubernetes"] is kube
    assert ctx.runtime_for_job("expagent-abc") is kube and ctx.runtime_for_job("local-abc") is ctx.runtime
    assert ctx.runtime_for_job("no-prefix") is ctx.runtime
    copy = ctx.with_runtime("kubernetes")
    assert copy.runtime is kube and copy.runtime_named("local") is ctx.runtime  # the cache is shared
    assert opened == ["local", "kubernetes"]  # each opened once
    ctx.close()
    assert ctx.runtime.closed and kube.closed  # type: ignore[attr-defined]


# ---- the launch tools ---------------------------------------------------------------------------


def test_a_kubernetes_launch_runs_there_while_the_settings_say_local(home: Path) -> None:
    with fake_kube(SLEEPY) as kube:
        ctx = build_context(make_settings(home, **kube_settings(home, kube)), session_id="sel-1")
        try:
            launch = guarded_call("start_training_run", {**LAUNCH, **KUBE_REQUEST}, ctx)
            assert launch.ok, launch.to_model_message()
            job_id = launch.result["job_id"]  # type: ignore[index]
            assert job_id.startswith("expagent-")
            assert [j["metadata"]["name"] for j in kube.jobs("ml-team")] == [job_id]
            command = kube.jobs("ml-team")[0]["spec"]["template"]["spec"]["containers"][0]["command"]
            sent = json.loads(command[command.index("--spec-json") + 1])
            assert (sent["runtime"], sent["namespace"]) == ("kubernetes", "ml-team")
            status = guarded_call("get_job_status", {"job_id": job_id}, ctx)
            assert status.ok and status.result["namespace"] == "ml-team"  # type: ignore[index]
            assert guarded_call("get_job_logs", {"job_id": job_id}, ctx).ok
            cancel = guarded_call("cancel_job", {"job_id": job_id, "reason": "test over"}, ctx)
            assert cancel.ok and cancel.result["state"] == "cancelled"  # type: ignore[index]
            assert "local" not in ctx.runtimes  # nothing ran or was looked up locally
        finally:
            ctx.close()
    assert set(statuses(ctx.settings).values()) == {"KILLED"}


def test_a_namespace_outside_the_allowlist_is_refused_before_any_run_or_job(home: Path) -> None:
    with fake_kube(QUICK) as kube:
        ctx = build_context(make_settings(home, **kube_settings(home, kube)), session_id="sel-2")
        try:
            outcome = guarded_call("start_training_run", {**LAUNCH, **KUBE_REQUEST, "namespace": "prod"}, ctx)
        finally:
            ctx.close()
        assert kube.requests["create jobs"] == 0
    assert isinstance(outcome.verdict, Reject) and outcome.verdict.rule == "kubernetes"
    assert outcome.verdict.approval_key is None and "ml-experiments, ml-team" in outcome.verdict.reason
    assert all_runs(ctx.settings) == []
    audit = [json.loads(line) for line in ctx.settings.audit_log_path.read_text().splitlines()]
    verdicts = [(a["tool"], a["verdict"], a["rule"]) for a in audit]
    assert verdicts == [("start_training_run", "reject", "kubernetes")]


def test_a_kubernetes_launch_without_a_cluster_fails_clearly_and_creates_no_run(home: Path) -> None:
    settings = make_settings(home, k8s_kubeconfig=home / "no-such-kubeconfig")
    ctx = build_context(settings, session_id="sel-3")
    outcome = guarded_call("start_training_run", {**LAUNCH, "runtime": "kubernetes"}, ctx)
    assert not outcome.ok and "cannot load Kubernetes config" in outcome.to_model_message()
    assert all_runs(settings) == [] and ctx.open_runtimes() == []
    ctx.close()


# ---- the graph ----------------------------------------------------------------------------------


def test_a_request_on_kubernetes_in_a_namespace_runs_there_end_to_end(home: Path) -> None:
    with fake_kube(QUICK) as kube:
        service, _ = make_service(home, [experiment_reply(**KUBE_REQUEST)], **kube_settings(home, kube))
        try:
            result = service.send("sel-graph", "Train on kubernetes in namespace ml-team")
        finally:
            service.close()
        jobs = kube.jobs("ml-team")
    assert "namespace `ml-team`" in result.sections["Plan"]
    baseline = next(r for r in result.runs if r.role == "baseline")
    assert [j["metadata"]["name"] for j in jobs] == [baseline.job_id]
    assert "RUNNING" not in statuses(service.settings).values()


def test_a_request_for_a_forbidden_namespace_is_refused_with_a_policy_event(home: Path) -> None:
    with fake_kube(QUICK) as kube:
        reply = experiment_reply(**{**KUBE_REQUEST, "namespace": "prod"})
        service, _ = make_service(home, [reply], **kube_settings(home, kube))
        try:
            result = service.send("sel-prod", "Train on kubernetes in namespace prod")
        finally:
            service.close()
        assert kube.requests["create jobs"] == 0
    events = [(e.verdict, e.rule) for e in result.policy_events]
    assert events == [("reject", "kubernetes")], "the namespace is judged by the kubernetes rule alone"
    assert "'prod' is not allowed" in result.sections["Summary"] and "ml-team" in result.sections["Summary"]
    assert all_runs(service.settings) == [] and answer_problems(result.answer) == []


def test_a_request_for_kubernetes_without_a_cluster_gets_a_clear_answer(home: Path) -> None:
    service, _ = make_service(
        home, [experiment_reply(runtime="kubernetes")], k8s_kubeconfig=home / "no-such-kubeconfig"
    )
    try:
        result = service.send("sel-nocluster", "Train on kubernetes")
    finally:
        service.close()
    assert result.status == "answered" and answer_problems(result.answer) == []
    assert "kubernetes runtime is not available" in result.sections["Summary"]
    assert "cannot load Kubernetes config" in result.sections["Summary"]
    assert all_runs(service.settings) == []  # no session run, nothing RUNNING


# ---- a node that raises ---------------------------------------------------------------------------


def test_a_node_that_raises_ends_the_turn_with_no_run_left_running(home: Path, monkeypatch) -> None:
    execute_node = importlib.import_module("agent.nodes.execute")  # the package exports the function

    def crash(ctx: Any, job_id: str) -> Any:
        raise KeyError(f"no Kubernetes Job {job_id!r}")

    monkeypatch.setattr(execute_node, "wait_for_job", crash)
    with fake_kube(SLEEPY) as kube:
        service, _ = make_service(home, [experiment_reply(**KUBE_REQUEST)], **kube_settings(home, kube))
        try:
            result = service.send("sel-crash", "Train on kubernetes in namespace ml-team")
            assert service.resume_interrupted("sel-crash") is None  # the thread is not left half done
        finally:
            service.close()
        assert kube.requests["delete jobs"] == 1  # the orphaned job was stopped
    assert result.status == "failed" and list(result.sections) == list(SECTIONS)  # (exit 5 in `run`)
    assert answer_problems(result.answer) == []
    assert "KeyError" in result.sections["Summary"] and "execute" in result.sections["Summary"]
    by_role = {r.data.tags["expagent.role"]: r for r in all_runs(service.settings)}
    assert by_role["session"].info.status == "FAILED" and by_role["baseline"].info.status == "KILLED"
    client = service._tools.tracking  # noqa: SLF001
    artifacts = {a.path for a in client.list_artifacts(by_role["session"].info.run_id)}
    trace = client.download_artifacts(by_role["session"].info.run_id, "turn_error.txt")
    assert "turn_error.txt" in artifacts and "KeyError" in Path(trace).read_text()
    assert by_role["baseline"].info.run_id in result.sections["Rollback"]


# ---- tuning -------------------------------------------------------------------------------------


@pytest.fixture
def tuning_kube() -> Iterator[FakeKube]:
    with fake_kube(QUICK) as kube:
        yield kube


def test_trials_run_on_the_study_runtime_and_namespace(home: Path, tuning_kube: FakeKube) -> None:
    from tools.tuning.records import StudySettings
    from tools.tuning.space import load_search_space
    from tools.tuning.study import run_study

    ctx = build_context(make_settings(home, **kube_settings(home, tuning_kube)), session_id="sel-tune")
    study = StudySettings(
        study_name="sel-tune", session_id="sel-tune", dataset="breast_cancer", version="1",
        model_family="logistic_regression", metric="roc_auc", experiment="k8s-select",
        search_space=load_search_space("logistic_regression"), n_trials=2, parallelism=1,
        poll_seconds=0.05, runtime="kubernetes", namespace="ml-team", max_consecutive_failures=5,
    )  # fmt: skip
    try:
        result = run_study(ctx, study)
    finally:
        ctx.close()
    jobs = tuning_kube.jobs("ml-team")
    assert sorted(j["metadata"]["labels"]["expagent.io/trial"] for j in jobs) == ["0", "1"]
    assert {t.job_id for t in result.trials} == {j["metadata"]["name"] for j in jobs}
    assert "local" not in ctx.runtimes  # watched and ended on Kubernetes, not locally
    assert "RUNNING" not in statuses(ctx.settings).values()
