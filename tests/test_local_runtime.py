"""Training jobs end to end: the job tools through the guard, the warm local runtime, adoption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tools.context import ToolContext, build_context
from tools.core import tracking
from tools.core.settings import Settings
from tools.core.specs import TrainingSpec
from tools.guard.policy import guarded_call
from tools.runtime.local import (
    DEFAULT_GRACE_SECONDS,
    JobOutcome,
    JobRecord,
    LocalRuntime,
    job_id_for,
    process_start,
)
from tools.runtime.processes import process_alive

LONG_PARAMS = {"n_estimators": 1_000_000, "learning_rate": 0.0001}


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(home=tmp_path_factory.mktemp("runtime"))


@pytest.fixture(scope="module")
def runtime(settings: Settings) -> Iterator[LocalRuntime]:
    # The product's grace period: a job told to stop closes its MLflow run first (SQLite writes that can
    # wait on the agent's own writes); 5 s was exceeded once on a loaded CI machine and the job was
    # SIGKILLed although it was honouring SIGTERM.
    runtime = LocalRuntime(settings, grace_seconds=DEFAULT_GRACE_SECONDS)  # the default: warm workers
    runtime.warm_up()
    yield runtime
    runtime.close()


@pytest.fixture
def ctx(settings: Settings, runtime: LocalRuntime) -> ToolContext:
    return build_context(settings, requester="alice@example.com", _runtime=runtime)


def _args(**overrides: Any) -> dict[str, Any]:
    return {
        "dataset": "breast_cancer", "version": "1", "model_family": "lightgbm", "metric": "roc_auc",
        "experiment": "runtime-tests", "params": {"n_estimators": 20}, **overrides,
    }  # fmt: skip


def _call(ctx: ToolContext, name: str, args: dict[str, Any]) -> dict[str, Any]:
    outcome = guarded_call(name, args, ctx)
    assert outcome.ok, (outcome.verdict, outcome.error)
    assert outcome.result is not None
    return outcome.result


def _wait_done(ctx: ToolContext, job_id: str, timeout: float = 120) -> dict[str, Any]:
    (info,) = ctx.runtime.wait([job_id], timeout=timeout)
    assert info.done, info
    return _call(ctx, "get_job_status", {"job_id": job_id})


def _artifact_text(ctx: ToolContext, run_id: str, name: str) -> str:
    root = ctx.tracking.get_run(run_id).info.artifact_uri.removeprefix("file://")
    return Path(root, name).read_text()


def test_start_training_run_produces_a_finished_fully_logged_run(ctx: ToolContext) -> None:
    started = _call(ctx, "start_training_run", _args())
    assert started["job_id"] == job_id_for(started["run_id"])
    assert started["ui_url"].endswith(f"/runs/{started['run_id']}")
    status = _wait_done(ctx, started["job_id"])
    assert status["state"] == "succeeded" and status["exit_code"] == 0 and status["run_status"] == "FINISHED"
    assert status["cpu_seconds"] > 0 and status["wall_seconds"] > 0
    run = _call(ctx, "get_run", {"run_id": started["run_id"]})
    assert run["params"]["model_family"] == "lightgbm" and run["metrics"]["roc_auc"] > 0.9
    tags = run["tags"]
    assert tags["expagent.managed"] == "true" and tags["expagent.session"] == ctx.session_id
    assert tags["expagent.job_id"] == started["job_id"] and tags["expagent.role"] == "single"
    assert tags["dataset.sha256"] and tags["git_sha"] and tags["seed"] == "42"
    assert "[REDACTED" in tags["expagent.requester"] or "alice@example.com" not in tags["expagent.requester"]
    assert "environment/requirements.lock" in run["artifacts"]
    assert run["model_uri"].startswith("models:/")
    assert run["datasets"][0]["name"] == "breast_cancer@1"
    logs = _call(ctx, "get_job_logs", {"job_id": started["job_id"], "tail_lines": 5})
    assert '"status":"FINISHED"' in logs["text"]


def test_submit_is_idempotent_per_run(ctx: ToolContext, runtime: LocalRuntime, settings: Settings) -> None:
    spec = TrainingSpec.model_validate(_args())
    spec.run_id = tracking.create_run(ctx, spec)
    first = runtime.submit(spec)
    pid = json.loads((settings.jobs_dir / first.job_id / "job.json").read_text())["pid"]
    second = runtime.submit(spec)
    assert second.job_id == first.job_id
    assert json.loads((settings.jobs_dir / first.job_id / "job.json").read_text())["pid"] == pid
    assert runtime.wait([first.job_id], timeout=120)[0].state == "succeeded"


def test_crashing_run_ends_failed_with_traceback_and_output(ctx: ToolContext) -> None:
    started = _call(ctx, "start_training_run", _args(params={"n_estimators": 5, "num_leaves": 1}))
    status = _wait_done(ctx, started["job_id"])
    assert status["state"] == "failed" and status["exit_code"] == 1 and status["run_status"] == "FAILED"
    trace = _artifact_text(ctx, started["run_id"], "traceback.txt")
    assert "LightGBMError" in trace and "num_leaves" in trace
    assert "num_leaves" in _artifact_text(ctx, started["run_id"], "output.log")


def test_cancelled_run_ends_killed_with_a_cancellation_record(ctx: ToolContext) -> None:
    started = _call(ctx, "start_training_run", _args(params=LONG_PARAMS))
    job_id = started["job_id"]
    deadline = time.monotonic() + 60
    while not ctx.tracking.get_run(started["run_id"]).data.params and time.monotonic() < deadline:
        time.sleep(0.1)  # wait until it is training
    status = _call(ctx, "cancel_job", {"job_id": job_id, "reason": "runaway test job"})
    assert status["exit_code"] == 143  # the trainer honoured SIGTERM itself; no SIGKILL was needed
    assert status["state"] == "cancelled" and status["run_status"] == "KILLED"
    record = json.loads(_artifact_text(ctx, started["run_id"], "cancellation.json"))
    assert record["reason"] == "runaway test job" and record["kind"] == "cancelled"
    assert record["cancelled_by"] == "[REDACTED_EMAIL]" or "@" not in record["cancelled_by"]
    assert record["wall_seconds"] > 0 and record["cpu_seconds"] > 0 and record["resources"]["cpu"] == 1.0
    assert ctx.tracking.get_run(started["run_id"]).info.status == "KILLED"


def test_job_past_its_timeout_is_stopped_and_recorded(ctx: ToolContext) -> None:
    started = _call(ctx, "start_training_run", _args(params=LONG_PARAMS, timeout_seconds=2))
    status = _wait_done(ctx, started["job_id"], timeout=60)
    assert status["state"] == "cancelled" and status["run_status"] == "KILLED"
    record = json.loads(_artifact_text(ctx, started["run_id"], "cancellation.json"))
    assert record["kind"] == "timeout" and "timeout" in record["reason"]


def test_a_new_runtime_instance_sees_status_and_logs(ctx: ToolContext, settings: Settings) -> None:
    started = _call(ctx, "start_training_run", _args())
    ctx.runtime.wait([started["job_id"]], timeout=120)
    restarted = LocalRuntime(settings, mode="forkserver")
    info = restarted.status(started["job_id"])
    assert info.state == "succeeded" and info.run_id == started["run_id"]
    assert '"status":"FINISHED"' in restarted.logs(started["job_id"], 3)
    assert started["job_id"] in [j.job_id for j in restarted.list_jobs(ctx.session_id)]
    with pytest.raises(KeyError):
        restarted.status("local-unknown")


def test_adopted_job_whose_process_vanished_is_failed_and_its_run_closed(
    ctx: ToolContext, settings: Settings
) -> None:
    spec = TrainingSpec.model_validate(_args())
    spec.run_id = tracking.create_run(ctx, spec)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    start = process_start(gone.pid)
    gone.wait()
    job_id = job_id_for(spec.run_id)
    (settings.jobs_dir / job_id).mkdir()
    now = datetime.now(UTC)
    record = JobRecord(
        job_id=job_id, run_id=spec.run_id, mode="forkserver", pid=gone.pid, pid_start=start,
        submitted_at=now, deadline=now + timedelta(minutes=5),
    )  # fmt: skip
    (settings.jobs_dir / job_id / "job.json").write_text(record.model_dump_json())
    info = LocalRuntime(settings, mode="forkserver").status(job_id)
    assert info.state == "failed" and info.reason == "process vanished"
    assert ctx.tracking.get_run(spec.run_id).info.status == "FAILED"


def test_unknown_job_is_a_clear_tool_error(ctx: ToolContext) -> None:
    outcome = guarded_call("get_job_status", {"job_id": "local-nope"}, ctx)
    assert outcome.error and "no job 'local-nope'" in outcome.error


def test_model_cannot_set_the_run_id(ctx: ToolContext) -> None:
    outcome = guarded_call("start_training_run", _args(run_id="0" * 32), ctx)
    assert not outcome.allowed and outcome.verdict.rule == "invalid_arguments"  # type: ignore[union-attr]


def _pid(settings: Settings, job_id: str) -> int:
    return int(json.loads((settings.jobs_dir / job_id / "job.json").read_text())["pid"])


def test_a_worker_runs_clean_jobs_one_after_another(ctx: ToolContext, settings: Settings) -> None:
    jobs = []
    for _ in range(2):
        started = _call(ctx, "start_training_run", _args(params={"n_estimators": 5}))
        jobs.append((started, _wait_done(ctx, started["job_id"])))
    (first, first_status), (second, second_status) = jobs
    assert _pid(settings, first["job_id"]) == _pid(settings, second["job_id"])  # the same warm worker
    assert first_status["state"] == second_status["state"] == "succeeded"
    assert 0 < second_status["cpu_seconds"] < 10  # charged for its own job only, not the worker's past
    first_log = _call(ctx, "get_job_logs", {"job_id": first["job_id"]})["text"]
    assert first["run_id"] in first_log and second["run_id"] not in first_log  # each job has its own log


def test_a_failed_or_killed_job_takes_its_worker_with_it(ctx: ToolContext, settings: Settings) -> None:
    crashed = _call(ctx, "start_training_run", _args(params={"n_estimators": 5, "num_leaves": 1}))
    assert _wait_done(ctx, crashed["job_id"])["state"] == "failed"
    pid = _pid(settings, crashed["job_id"])
    deadline = time.monotonic() + 10
    while process_alive(pid, None) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not process_alive(pid, None)  # never reused after a failure

    victim = _call(ctx, "start_training_run", _args(params=LONG_PARAMS))
    assert _pid(settings, victim["job_id"]) != pid
    deadline = time.monotonic() + 60
    while not ctx.tracking.get_run(victim["run_id"]).data.params and time.monotonic() < deadline:
        time.sleep(0.1)
    os.kill(_pid(settings, victim["job_id"]), signal.SIGKILL)  # the worker dies mid-job
    status = _wait_done(ctx, victim["job_id"])
    assert status["state"] == "failed" and "SIGKILL" in status["reason"]
    assert ctx.tracking.get_run(victim["run_id"]).info.status == "FAILED"

    after = _call(ctx, "start_training_run", _args(params={"n_estimators": 5}))
    assert _wait_done(ctx, after["job_id"])["state"] == "succeeded"
    assert _pid(settings, after["job_id"]) not in (pid, _pid(settings, victim["job_id"]))


def test_stopping_a_job_that_just_ended_never_hits_its_workers_next_job(
    ctx: ToolContext, runtime: LocalRuntime, settings: Settings
) -> None:
    done = _call(ctx, "start_training_run", _args(params={"n_estimators": 5}))
    assert _wait_done(ctx, done["job_id"])["state"] == "succeeded"
    busy = _call(ctx, "start_training_run", _args(params=LONG_PARAMS))
    worker = _pid(settings, busy["job_id"])
    assert worker == _pid(settings, done["job_id"])  # the same warm worker runs the next job
    record = JobRecord.model_validate_json((settings.jobs_dir / done["job_id"] / "job.json").read_text())
    assert runtime._terminate(record) is None  # the cancel of a job that has just ended sends nothing
    time.sleep(0.3)
    assert process_alive(worker, None) and runtime.status(busy["job_id"]).state == "running"
    stopped = _call(ctx, "cancel_job", {"job_id": busy["job_id"], "reason": "end of test"})
    assert stopped["state"] == "cancelled"


def test_closing_the_runtime_retires_idle_workers(settings: Settings) -> None:
    runtime = LocalRuntime(settings, grace_seconds=5)
    ctx = build_context(settings, _runtime=runtime)
    started = _call(ctx, "start_training_run", _args(params={"n_estimators": 5}))
    assert _wait_done(ctx, started["job_id"])["state"] == "succeeded"
    pid = _pid(settings, started["job_id"])
    assert process_alive(pid, None)  # idle, waiting for the next job
    runtime.close()
    deadline = time.monotonic() + 10
    while process_alive(pid, None) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not process_alive(pid, None)


def test_fork_per_job_mode_runs_each_job_in_a_fresh_process(settings: Settings) -> None:
    runtime = LocalRuntime(settings, mode="forkserver")
    ctx = build_context(settings, _runtime=runtime)
    pids = set()
    for _ in range(2):
        started = _call(ctx, "start_training_run", _args(params={"n_estimators": 5}))
        assert _wait_done(ctx, started["job_id"])["state"] == "succeeded"
        pids.add(_pid(settings, started["job_id"]))
    assert len(pids) == 2


def test_plain_subprocess_mode_runs_the_job_program(settings: Settings) -> None:
    runtime = LocalRuntime(settings, mode="subprocess")
    ctx = build_context(settings, _runtime=runtime)
    started = _call(ctx, "start_training_run", _args(params={"n_estimators": 5}))
    status = _wait_done(ctx, started["job_id"], timeout=180)
    assert status["state"] == "succeeded" and status["run_status"] == "FINISHED"
    assert status["cpu_seconds"] > 0


def test_finished_job_with_a_running_run_is_reconciled(ctx: ToolContext, settings: Settings) -> None:
    spec = TrainingSpec.model_validate(_args())
    spec.run_id = tracking.create_run(ctx, spec)
    job_id = job_id_for(spec.run_id)
    (settings.jobs_dir / job_id).mkdir()
    now = datetime.now(UTC)
    record = JobRecord(
        job_id=job_id, run_id=spec.run_id, mode="forkserver", pid=1, submitted_at=now, deadline=now,
    )  # fmt: skip
    (settings.jobs_dir / job_id / "job.json").write_text(record.model_dump_json())
    outcome = JobOutcome(state="failed", exit_code=1, reason="trainer crashed before closing its run")
    (settings.jobs_dir / job_id / "status.json").write_text(outcome.model_dump_json())
    status = _call(ctx, "get_job_status", {"job_id": job_id})
    assert status["state"] == "failed" and status["run_status"] == "FAILED"
    run = ctx.tracking.get_run(spec.run_id)
    assert run.info.status == "FAILED" and "trainer crashed" in run.data.tags["mlflow.note.content"]


class _BrokenRuntime:
    name = "local"

    def submit(self, spec: TrainingSpec, approvals: Any = ()) -> None:
        raise OSError("no process slots left")

    def list_jobs(self, session_id: str | None = None) -> list[Any]:
        return []


def test_failed_submission_ends_the_run_failed(settings: Settings) -> None:
    ctx = build_context(settings, _runtime=_BrokenRuntime())  # type: ignore[arg-type]
    outcome = guarded_call("start_training_run", _args(experiment="broken-submit"), ctx)
    assert outcome.error and "no process slots left" in outcome.error
    experiment = ctx.tracking.get_experiment_by_name("broken-submit")
    (run,) = ctx.tracking.search_runs([experiment.experiment_id])
    assert run.info.status == "FAILED" and "no process slots left" in run.data.tags["mlflow.note.content"]
    assert "OSError" in _artifact_text(ctx, run.info.run_id, "submit_error.txt")


def test_list_jobs_finds_jobs_another_process_started_after_the_first_listing(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    runtime = LocalRuntime(settings, mode="subprocess")
    assert runtime.list_jobs("mine") == []
    now = datetime.now(UTC)
    for session, run_id in (("mine", "a" * 32), ("theirs", "b" * 32)):
        job_id = job_id_for(run_id)
        (settings.jobs_dir / job_id).mkdir()
        record = JobRecord(
            job_id=job_id, run_id=run_id, mode="forkserver", pid=1, submitted_at=now, deadline=now,
            session_id=session,
        )  # fmt: skip
        (settings.jobs_dir / job_id / "job.json").write_text(record.model_dump_json())
        outcome = JobOutcome(state="succeeded", exit_code=0, run_status="FINISHED")
        (settings.jobs_dir / job_id / "status.json").write_text(outcome.model_dump_json())
    (settings.jobs_dir / job_id_for("c" * 32)).mkdir()  # being submitted: no job.json yet
    assert [j.run_id for j in runtime.list_jobs("mine")] == ["a" * 32]
    assert {j.run_id for j in runtime.list_jobs(None)} == {"a" * 32, "b" * 32}
