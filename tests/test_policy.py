"""The policy guard: each rule allowed and blocked, the audit trail, redaction, and the guarded call."""

from __future__ import annotations

import copy
import json
import multiprocessing
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from tools import toolset
from tools.context import ToolContext
from tools.core.audit import AuditLog
from tools.core.settings import Budget, Settings
from tools.core.specs import JobInfo, TrainingSpec
from tools.guard.policy import (
    Allow,
    Halt,
    PolicyHalt,
    Reject,
    check,
    check_manifest,
    evaluate,
    guarded_call,
    parse_cpu,
    parse_memory_gb,
)
from tools.toolset import TOOLS, ToolDef

FIXED_TIME = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
SECRET = "sk-proj-abcdefghijklmnopqrstuvwxyz0123"


# ---- test-only tools (registered per test, removed afterwards) -------------------------------------


class Echo(BaseModel):
    received: dict[str, Any]


class NoteArgs(BaseModel):
    run_id: str
    text: str


class DataRef(BaseModel):
    dataset: str | None = None
    version: str | None = None


class ManifestArgs(BaseModel):
    manifest: dict[str, Any]


CALLS: list[str] = []


def launch(ctx: ToolContext, args: TrainingSpec) -> Echo:
    CALLS.append("launch")
    return Echo(received=args.model_dump(mode="json"))


def write_note(ctx: ToolContext, args: NoteArgs) -> Echo:
    CALLS.append("write_note")
    return Echo(received={"echo": args.text})


def explode(ctx: ToolContext, args: NoteArgs) -> Echo:
    raise RuntimeError(f"could not connect with password=hunter2 as {args.text}")


def stop_everything(ctx: ToolContext, args: NoteArgs) -> Echo:
    raise PolicyHalt("budget", "the request's compute budget is spent")


def inspect_data(ctx: ToolContext, args: DataRef) -> Echo:
    CALLS.append("inspect_data")
    return Echo(received=args.model_dump())


def apply_manifest(ctx: ToolContext, args: ManifestArgs) -> Echo:
    CALLS.append("apply_manifest")
    return Echo(received={})


TEST_TOOLS = [
    ToolDef("launch", launch, TrainingSpec, read_only=False),
    ToolDef("write_note", write_note, NoteArgs, read_only=False),
    ToolDef("explode", explode, NoteArgs, read_only=False),
    ToolDef("stop_everything", stop_everything, NoteArgs, read_only=False),
    ToolDef("inspect_data", inspect_data, DataRef, read_only=True),
    ToolDef("apply_manifest", apply_manifest, ManifestArgs, read_only=False),
]


class FakeRuntime:
    """Stands in for a runtime: only ``list_jobs`` matters to the guard."""

    name = "fake"

    def __init__(self) -> None:
        self.jobs: list[JobInfo] = []

    def add(self, state: str, session: str = "s1") -> None:
        job = JobInfo(job_id=f"j{len(self.jobs)}", run_id="r", runtime="local", state=state)  # type: ignore[arg-type]
        self.jobs.append(job.model_copy(update={"reason": session}))

    def list_jobs(self, session_id: str | None = None) -> list[JobInfo]:
        return [j for j in self.jobs if session_id is None or j.reason == session_id]

    def close(self) -> None:
        pass


@pytest.fixture(autouse=True)
def test_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    # Only the registry's tools plus these: the tests do not depend on other tool modules.
    monkeypatch.setattr(toolset, "_TOOL_MODULES", ("tools.datasets",))
    for tool_def in TEST_TOOLS:
        monkeypatch.setitem(TOOLS, tool_def.name, tool_def)
    CALLS.clear()


@pytest.fixture
def settings(demo_home: Path, tmp_path: Path) -> Settings:
    home = tmp_path / "home"
    shutil.copytree(demo_home, home)
    budget = Budget(
        max_cpu_per_run=4, max_memory_gb_per_run=8, max_gpu_per_run=0, max_wall_seconds_per_run=3600
    )
    return Settings(home=home, budget=budget, namespaces=["ml-experiments"], k8s_service_account="trainer")


@pytest.fixture
def runtime() -> FakeRuntime:
    return FakeRuntime()


@pytest.fixture
def ctx(settings: Settings, runtime: FakeRuntime) -> ToolContext:
    return ToolContext(
        settings=settings, session_id="s1", requester="alice", clock=lambda: FIXED_TIME, _runtime=runtime
    )


def spec(**overrides: Any) -> dict[str, Any]:
    base = {"dataset": "breast_cancer", "version": "1", "model_family": "lightgbm", "metric": "roc_auc"}
    return {**base, "experiment": "exp", **overrides}


def job(**pod: Any) -> dict[str, Any]:
    container = {
        "name": "trainer", "image": "img",
        "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}},
    }  # fmt: skip
    return {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "t", "namespace": "ml-experiments"},
        "spec": {"activeDeadlineSeconds": 600, "template": {"spec": {"containers": [container], **pod}}},
    }  # fmt: skip


def rejected(outcome: Any) -> Reject:
    assert isinstance(outcome.verdict, Reject), outcome
    return outcome.verdict


# ---- no_deployment --------------------------------------------------------------------------------


def test_ordinary_training_arguments_are_allowed(ctx: ToolContext) -> None:
    args = spec(
        params={"num_leaves": 31, "learning_rate": 0.05}, tags={"team": "risk", "mlflow.note.content": "x"}
    )
    outcome = guarded_call("launch", args, ctx)
    assert outcome.ok and CALLS == ["launch"]


@pytest.mark.parametrize(
    "overrides",
    [
        {"tags": {"mlflow.modelVersionStage": "None"}},
        {"tags": {"alias": "champion"}},
        {"tags": {"model_alias": "challenger"}},
        {"params": {"stage": "x"}},
        {"tags": {"env": "Production"}},
        {"tags": {"target": "staging"}},
        {"params": {"registered_model_name": "fraud"}},
        {"tags": {"deploy": "true"}},
        {"tags": {"serving_endpoint": "fraud-v2"}},
        {"tags": {"promote_to": "x"}},
    ],
)
def test_deployment_like_arguments_are_rejected(ctx: ToolContext, overrides: dict[str, Any]) -> None:
    verdict = rejected(guarded_call("launch", spec(**overrides), ctx))
    assert verdict.rule == "no_deployment" and verdict.approval_key is None
    assert "never deploys or promotes" in verdict.reason
    assert CALLS == []


def test_a_manifest_in_arguments_must_be_a_batch_job(ctx: ToolContext) -> None:
    assert guarded_call("apply_manifest", {"manifest": job()}, ctx).ok
    deployment = {**job(), "apiVersion": "apps/v1", "kind": "Deployment"}
    verdict = rejected(guarded_call("apply_manifest", {"manifest": deployment}, ctx))
    assert verdict.rule == "no_deployment" and "apps/v1/Deployment" in verdict.reason
    assert CALLS == ["apply_manifest"]


# ---- Kubernetes manifests (check_manifest, used by the Kubernetes runtime) --------------------------


def test_a_plain_job_manifest_is_allowed(ctx: ToolContext) -> None:
    assert isinstance(check_manifest(job(), ctx), Allow)
    assert isinstance(check_manifest(job(serviceAccountName="trainer"), ctx), Allow)


def test_the_job_builder_output_passes_the_guard(ctx: ToolContext) -> None:
    from tools.runtime.job_manifest import job_manifest

    training = TrainingSpec.model_validate({**spec(), "run_id": "0123456789abcdef0123456789abcdef"})
    assert isinstance(check_manifest(job_manifest(training, ctx.settings), ctx), Allow)


@pytest.mark.parametrize(
    ("mutate", "rule", "text"),
    [
        (lambda m: m.update(kind="Deployment", apiVersion="apps/v1"), "no_deployment", "only batch/v1 Job"),
        (lambda m: m.update(kind="CronJob"), "no_deployment", "batch/v1/CronJob"),
        (lambda m: m.update(apiVersion="batch/v2"), "no_deployment", "batch/v2/Job"),
        (lambda m: m["metadata"].update(namespace="kube-system"), "kubernetes", "namespace 'kube-system'"),
        (lambda m: m["metadata"].pop("namespace"), "kubernetes", "namespace None"),
        (lambda m: _pod(m).update(hostNetwork=True), "kubernetes", "hostNetwork"),
        (lambda m: _pod(m).update(hostPID=True), "kubernetes", "hostPID"),
        (
            lambda m: _pod(m).update(volumes=[{"name": "root", "hostPath": {"path": "/"}}]),
            "kubernetes",
            "hostPath",
        ),
        (lambda m: _pod(m).update(serviceAccountName="cluster-admin"), "kubernetes", "serviceAccountName"),
        (lambda m: _container(m).update(securityContext={"privileged": True}), "kubernetes", "privileged"),
        (
            lambda m: _container(m).update(securityContext={"capabilities": {"add": ["SYS_ADMIN"]}}),
            "kubernetes",
            "SYS_ADMIN",
        ),
        (lambda m: m["spec"].pop("activeDeadlineSeconds"), "resources", "activeDeadlineSeconds"),
    ],
)
def test_unsafe_manifests_are_rejected(ctx: ToolContext, mutate: Any, rule: str, text: str) -> None:
    manifest = copy.deepcopy(job())
    mutate(manifest)
    verdict = check_manifest(manifest, ctx)
    assert isinstance(verdict, Reject) and verdict.rule == rule and verdict.approval_key is None
    assert text in verdict.reason


def _pod(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["spec"]["template"]["spec"]


def _container(manifest: dict[str, Any]) -> dict[str, Any]:
    return _pod(manifest)["containers"][0]


@pytest.mark.parametrize(
    ("limits", "key"),
    [
        ({"cpu": "8"}, "budget:cpu"),
        ({"memory": "64Gi"}, "budget:memory"),
        ({"nvidia.com/gpu": "1"}, "budget:gpu"),
    ],
)
def test_manifest_resources_over_budget_need_approval(
    ctx: ToolContext, limits: dict[str, str], key: str
) -> None:
    manifest = job()
    _container(manifest)["resources"]["limits"].update(limits)
    verdict = check_manifest(manifest, ctx)
    assert isinstance(verdict, Reject) and verdict.approval_key == key
    ctx.approvals.add(key)
    assert isinstance(check_manifest(manifest, ctx), Allow)


def test_manifest_deadline_over_the_wall_clock_cap_needs_approval(ctx: ToolContext) -> None:
    manifest = job()
    manifest["spec"]["activeDeadlineSeconds"] = 7200
    verdict = check_manifest(manifest, ctx)
    assert isinstance(verdict, Reject) and verdict.approval_key == "budget:wall"


def test_kubernetes_approval_required_when_configured(ctx: ToolContext) -> None:
    ctx.settings.require_approval_for_kubernetes = True
    verdict = check_manifest(job(), ctx)
    assert isinstance(verdict, Reject) and verdict.approval_key == "kubernetes"
    ctx.approvals.add("kubernetes")
    assert isinstance(check_manifest(job(), ctx), Allow)


def test_kubernetes_quantities_are_parsed() -> None:
    assert parse_cpu("500m") == 0.5 and parse_cpu("2") == 2.0 and parse_cpu(1.5) == 1.5
    assert parse_memory_gb("512Mi") == 0.5 and parse_memory_gb("2Gi") == 2.0
    assert parse_memory_gb(str(2**30)) == 1.0 and round(parse_memory_gb("1G"), 3) == 0.931


# ---- versioned_data -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "text"),
    [
        ({"dataset": "wine", "version": "7"}, "available versions: wine@0, wine@1"),
        ({"dataset": "nope", "version": "1"}, "no dataset named 'nope'"),
        ({"dataset": "wine", "version": "latest"}, "explicit, immutable version is required"),
        ({"dataset": "wine", "version": ""}, "was given no version"),
        ({"dataset": "wine"}, "Available: wine@0, wine@1"),
        ({"dataset": "s3://bucket/train.csv", "version": "1"}, "is a raw path/URI, not a registry entry"),
        ({"dataset": "/data/train.csv"}, "ask them to validate and register it"),
        ({"dataset": "customer_events", "version": "1"}, "is raw (not validated by Data Engineering)"),
        ({"dataset": "wine", "version": "0"}, "is deprecated; use the validated version wine@1"),
        ({"dataset": "wine@0", "version": "1"}, "disagree"),
        ({"dataset": ""}, "a dataset name is required"),
    ],
)
def test_unversioned_unregistered_or_unvalidated_data_is_rejected(
    ctx: ToolContext, args: dict[str, Any], text: str
) -> None:
    verdict = rejected(guarded_call("inspect_data", args, ctx))
    assert verdict.rule == "versioned_data" and verdict.approval_key is None
    assert text in verdict.reason
    assert CALLS == []


@pytest.mark.parametrize("args", [{"dataset": "wine", "version": "1"}, {"dataset": "iris@1"}])
def test_registered_validated_versions_are_allowed(ctx: ToolContext, args: dict[str, Any]) -> None:
    assert guarded_call("inspect_data", args, ctx).ok


def test_paths_under_non_data_keys_are_not_data(ctx: ToolContext) -> None:
    tags = {"team.source": "/src/train.py", "note.file": "notes/summary.txt"}  # (allowlisted tag keys)
    assert guarded_call("launch", spec(tags=tags), ctx).ok


def test_training_on_latest_or_raw_data_is_rejected(ctx: ToolContext) -> None:
    assert rejected(guarded_call("launch", spec(version="latest"), ctx)).rule == "versioned_data"
    assert rejected(guarded_call("launch", spec(dataset="customer_events"), ctx)).rule == "versioned_data"
    verdict = rejected(guarded_call("launch", spec(params={"train_path": "s3://lake/events.parquet"}), ctx))
    assert verdict.rule == "versioned_data" and "train_path" in verdict.reason
    verdict = rejected(guarded_call("launch", spec(tags={"data_uri": "/mnt/exports/users"}), ctx))
    assert verdict.rule == "versioned_data" and "data_uri" in verdict.reason


def test_a_checksum_mismatch_is_rejected(ctx: ToolContext) -> None:
    path = ctx.registry.local_path(ctx.registry.get("breast_cancer", "1"))
    path.write_bytes(path.read_bytes() + b"\n")
    verdict = rejected(guarded_call("launch", spec(), ctx))
    assert verdict.rule == "versioned_data" and "does not match the catalog sha256" in verdict.reason


# ---- resources ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"resources": {"cpu": 8}}, "budget:cpu"),
        ({"resources": {"memory_gb": 64}}, "budget:memory"),
        ({"resources": {"gpu": 1}}, "budget:gpu"),
        ({"timeout_seconds": 7200}, "budget:wall"),
    ],
)
def test_over_budget_runs_need_approval(ctx: ToolContext, overrides: dict[str, Any], key: str) -> None:
    verdict = rejected(guarded_call("launch", spec(**overrides), ctx))
    assert verdict.rule == "resources" and verdict.approval_key == key
    assert "exceeds the cap" in verdict.reason and CALLS == []
    ctx.approvals.add(key)
    outcome = guarded_call("launch", spec(**overrides), ctx)
    assert outcome.ok and outcome.approvals_used == [key]


def test_within_budget_is_allowed(ctx: ToolContext) -> None:
    args = spec(resources={"cpu": 4, "memory_gb": 8, "gpu": 0}, timeout_seconds=3600)
    assert guarded_call("launch", args, ctx).ok


def test_every_approval_needed_is_listed_at_once(ctx: ToolContext) -> None:
    args = TrainingSpec.model_validate(spec(resources={"cpu": 8, "gpu": 2}))
    keys = [f.approval_key for f in evaluate(TOOLS["launch"], args, ctx) if isinstance(f, Reject)]
    assert keys == ["budget:cpu", "budget:gpu"]


def test_hard_rejections_come_before_approvable_ones(ctx: ToolContext) -> None:
    args = TrainingSpec.model_validate(spec(dataset="customer_events", resources={"cpu": 8}))
    verdict = check(TOOLS["launch"], args, ctx)
    assert isinstance(verdict, Reject) and verdict.rule == "versioned_data"


def test_concurrent_jobs_beyond_the_cap_need_approval(ctx: ToolContext, runtime: FakeRuntime) -> None:
    runtime.add("running")
    runtime.add("succeeded")
    assert guarded_call("launch", spec(), ctx).ok  # 1 active in the workspace, cap 2
    runtime.add("pending", session="other-session")  # the cap is the workspace's, not the session's
    verdict = rejected(guarded_call("launch", spec(), ctx))
    assert verdict.approval_key == "concurrency"
    assert "2 jobs of this workspace" in verdict.reason and "1 of this session" in verdict.reason
    assert guarded_call("inspect_data", {"dataset": "wine", "version": "1"}, ctx).ok  # read-only: no job
    ctx.approvals.add("concurrency")
    assert guarded_call("launch", spec(), ctx).ok


def test_kubernetes_launches_need_approval_when_configured(ctx: ToolContext) -> None:
    ctx.settings.runtime = "kubernetes"
    ctx.settings.require_approval_for_kubernetes = True
    verdict = rejected(guarded_call("launch", spec(), ctx))
    assert (verdict.rule, verdict.approval_key) == ("kubernetes", "kubernetes")
    ctx.approvals.add("kubernetes")
    assert guarded_call("launch", spec(), ctx).ok


def test_a_rule_that_cannot_be_checked_rejects(ctx: ToolContext, runtime: FakeRuntime) -> None:
    def broken(session_id: str | None = None) -> list[JobInfo]:
        raise ConnectionError("runtime unreachable")

    runtime.list_jobs = broken  # type: ignore[method-assign]
    verdict = rejected(guarded_call("launch", spec(), ctx))
    assert verdict.rule == "resources" and "could not be checked" in verdict.reason
    assert CALLS == []


# ---- privacy --------------------------------------------------------------------------------------


def test_secrets_and_pii_in_arguments_are_redacted_before_the_tool_runs(ctx: ToolContext) -> None:
    # (hyperparameters and tag keys are allowlisted: a secret can only ride in an allowed one's value)
    args = spec(params={"boosting": SECRET, "num_leaves": 15}, tags={"team.owner": "bob@corp.example.com"})
    outcome = guarded_call("launch", args, ctx)
    assert outcome.ok and outcome.result is not None
    received = outcome.result["received"]
    assert received["params"] == {"boosting": "[REDACTED:api_key]", "num_leaves": 15}
    assert received["tags"] == {"team.owner": "[REDACTED:email]"}
    assert outcome.redacted_fields == ["params.boosting", "tags.team.owner"]
    log = ctx.settings.audit_log_path.read_text()
    assert SECRET not in log and "bob@corp" not in log


def test_results_and_errors_are_redacted(ctx: ToolContext) -> None:
    outcome = guarded_call("write_note", {"run_id": "r1", "text": "plain text"}, ctx)
    assert outcome.result == {"received": {"echo": "plain text"}}
    failed = guarded_call("explode", {"run_id": "r1", "text": "ok"}, ctx)
    assert failed.allowed and failed.result is None
    assert failed.error == "RuntimeError: could not connect with password=[REDACTED:secret] as ok"
    assert "hunter2" not in ctx.settings.audit_log_path.read_text()


# ---- the guarded call and the audit trail ---------------------------------------------------------


def test_invalid_arguments_come_back_as_a_message_the_model_can_act_on(ctx: ToolContext) -> None:
    outcome = guarded_call("launch", {"dataset": "wine", "version": "1", "model_family": "svm"}, ctx)
    verdict = rejected(outcome)
    assert verdict.rule == "invalid_arguments"
    assert "model_family: Input should be" in verdict.reason and "metric: Field required" in verdict.reason
    assert outcome.to_model_message().startswith("Rejected by policy rule 'invalid_arguments'")
    assert CALLS == []


def test_unknown_tools_and_non_object_arguments_are_rejected(ctx: ToolContext) -> None:
    assert rejected(guarded_call("deploy_model", {}, ctx)).rule == "unknown_tool"
    assert rejected(guarded_call("write_note", ["x"], ctx)).rule == "invalid_arguments"  # type: ignore[arg-type]


def test_every_verdict_is_audited(ctx: ToolContext) -> None:
    guarded_call("inspect_data", {"dataset": "wine", "version": "1"}, ctx)
    guarded_call("launch", spec(tags={"alias": "champion"}), ctx)
    guarded_call("launch", spec(resources={"cpu": 99}, params={"boosting": SECRET}), ctx)
    entries = ctx.audit.read()
    assert [(e["tool"], e["verdict"], e["rule"]) for e in entries] == [
        ("inspect_data", "allow", None),
        ("launch", "reject", "no_deployment"),
        ("launch", "reject", "resources"),
    ]
    first = entries[0]
    assert first["timestamp"] == FIXED_TIME.isoformat()
    assert (first["session"], first["requester"]) == ("s1", "alice")
    assert first["args"] == {"dataset": "wine", "version": "1"}
    assert (
        entries[2]["approval_key"] == "budget:cpu"
        and entries[2]["args"]["params"]["boosting"] == "[REDACTED:api_key]"
    )


def test_policy_halt_from_a_tool_propagates_and_is_audited(ctx: ToolContext) -> None:
    with pytest.raises(PolicyHalt, match="compute budget is spent"):
        guarded_call("stop_everything", {"run_id": "r", "text": "t"}, ctx)
    assert [e["verdict"] for e in ctx.audit.read()] == ["allow", "halt"]


def test_no_audit_trail_means_nothing_runs(ctx: ToolContext) -> None:
    ctx.settings.audit_log_path.mkdir(parents=True)  # a directory cannot be appended to
    outcome = guarded_call("write_note", {"run_id": "r", "text": "t"}, ctx)
    assert isinstance(outcome.verdict, Halt) and outcome.verdict.rule == "audit"
    assert CALLS == []


# ---- the audit log itself -------------------------------------------------------------------------


def test_audit_log_redacts_and_reads_back(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a" / "audit.jsonl", fsync=True)
    written = log.write({"tool": "t", "args": {"note": "mail eve@example.org", "password": "pw"}})
    assert written["args"] == {"note": "mail [REDACTED:email]", "password": "[REDACTED:secret]"}
    assert log.read() == [written]


def test_a_torn_last_line_is_skipped_but_damage_elsewhere_is_reported(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    log.write({"n": 1})
    with open(log.path, "a") as handle:
        handle.write('{"n": 2')
    assert log.read() == [{"n": 1}]
    log.path.write_text('{"n": 1\n{"n": 2}\n')
    with pytest.raises(ValueError, match="audit.jsonl:1 is not valid JSON"):
        log.read()


def _write_many(path: str, worker: int) -> None:
    log = AuditLog(path)
    for i in range(50):
        log.write({"worker": worker, "i": i, "pad": "x" * 2000})


def test_concurrent_writers_never_interleave_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_write_many, args=(str(path), w)) for w in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(entries) == 200
    assert sorted((e["worker"], e["i"]) for e in entries) == [(w, i) for w in range(4) for i in range(50)]


# ---- runtime and namespace of a launch --------------------------------------------------------------


def test_a_namespace_outside_the_allowlist_is_a_hard_rejection_naming_the_allowed_ones(
    ctx: ToolContext, runtime: FakeRuntime
) -> None:
    ctx.runtimes["kubernetes"] = runtime  # type: ignore[assignment]
    outcome = guarded_call("launch", spec(runtime="kubernetes", namespace="prod"), ctx)
    verdict = rejected(outcome)
    assert (verdict.rule, verdict.approval_key) == ("kubernetes", None)
    assert "'prod' is not allowed" in verdict.reason and "ml-experiments" in verdict.reason
    assert CALLS == []
    # 'prod' is judged as a namespace, not mistaken for a model-registry stage
    findings = evaluate(TOOLS["launch"], TrainingSpec(**spec(runtime="kubernetes", namespace="prod")), ctx)
    assert [f.rule for f in findings] == ["kubernetes"]
    assert guarded_call("launch", spec(runtime="kubernetes", namespace="ml-experiments"), ctx).ok


def test_the_configured_default_namespace_is_checked_when_a_launch_names_none(ctx: ToolContext) -> None:
    # No cluster is configured: the namespace verdict still comes first, before the job count fails.
    ctx.settings.k8s_namespace = "team-sandbox"
    verdict = rejected(guarded_call("launch", spec(runtime="kubernetes"), ctx))
    assert verdict.rule == "kubernetes" and "'team-sandbox' is not allowed" in verdict.reason
    assert guarded_call("launch", spec(runtime="local"), ctx).ok  # a local run has no namespace


def test_kubernetes_approval_follows_the_launch_runtime_not_only_the_settings(
    ctx: ToolContext, runtime: FakeRuntime
) -> None:
    ctx.runtimes["kubernetes"] = ctx.runtimes["local"] = runtime  # type: ignore[assignment]  # none is opened
    ctx.settings.require_approval_for_kubernetes = True
    verdict = rejected(guarded_call("launch", spec(runtime="kubernetes"), ctx))
    assert (verdict.rule, verdict.approval_key) == ("kubernetes", "kubernetes")
    assert guarded_call("launch", spec(), ctx).ok  # settings say local
    ctx.settings.runtime = "kubernetes"
    assert rejected(guarded_call("launch", spec(), ctx)).approval_key == "kubernetes"
    assert guarded_call("launch", spec(runtime="local"), ctx).ok


def test_concurrency_counts_the_session_jobs_on_the_launch_runtime(ctx: ToolContext) -> None:
    cluster = FakeRuntime()
    cluster.add("running")
    cluster.add("pending")
    ctx.runtimes["kubernetes"] = cluster  # type: ignore[assignment]
    verdict = rejected(guarded_call("launch", spec(runtime="kubernetes"), ctx))
    assert verdict.approval_key == "concurrency" and "2 jobs of this workspace" in verdict.reason
    # the local launch still sees them: the session's cap spans every runtime it has opened
    assert rejected(guarded_call("launch", spec(), ctx)).approval_key == "concurrency"
