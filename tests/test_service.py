"""AgentService behaviour front ends rely on: approvals by text, busy threads, cancel, tracing."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from graph_support import all_runs, experiment_reply, intake_reply, make_service

from agent.service import ProgressEvent, ThreadBusy
from tools.core.settings import Budget


def test_pending_approval_waits_for_a_yes_or_no(tmp_path: Path) -> None:
    service, model = make_service(tmp_path, [experiment_reply()], budget=Budget(max_cpu_per_run=0.5))
    assert (
        service.send("t", "Train logistic regression on breast_cancer version 1").status
        == "awaiting_approval"
    )
    again = service.send("t", "what happens now?")
    assert again.status == "awaiting_approval" and again.approval is not None
    done = service.send("t", "yes")
    service.close()
    assert done.status == "answered" and done.baseline_run_id is not None
    model.assert_complete()  # neither "what happens now?" nor "yes" reached the model


def test_a_second_turn_on_a_busy_thread_is_refused(tmp_path: Path) -> None:
    slow = experiment_reply(model_family="random_forest", params={"n_estimators": 50000})
    service, _ = make_service(tmp_path, [slow])
    seen: list[BaseException] = []
    helpers: list[threading.Thread] = []

    def on_progress(event: ProgressEvent) -> None:
        if event.kind != "run_started":
            return
        try:
            service.send("busy", "another request")
        except ThreadBusy as exc:
            seen.append(exc)
        helper = threading.Thread(target=service.cancel, args=("busy", "tester"))
        helper.start()
        helpers.append(helper)

    service.on_progress = on_progress
    result = service.send("busy", "Train a huge random forest on breast_cancer version 1")
    for helper in helpers:
        helper.join()
    service.close()
    assert seen and "already running a turn" in str(seen[0])
    assert "KILLED" in result.sections["Rollback"]


def test_cancel_in_a_later_turn_ends_runs_left_running(tmp_path: Path) -> None:
    from tools.context import build_context
    from tools.core.settings import Settings
    from tools.core.tracking import create_parent_run

    service, _ = make_service(tmp_path, [])
    settings: Settings = service.settings
    orphan_ctx = build_context(settings, session_id="left-over", requester="alice")
    orphan = create_parent_run(orphan_ctx, "graph-tests", "single", run_name="orphan")  # RUNNING, no job
    result = service.cancel("left-over", by="alice")
    service.close()
    statuses = {r.info.run_id: r.info.status for r in all_runs(settings)}
    assert statuses[orphan] == "KILLED"
    assert orphan in result.sections["Rollback"] and "cancel request" in result.sections["Rollback"]
    artifacts = {a.path for a in service._tools.tracking.list_artifacts(orphan)}  # noqa: SLF001
    assert "cancellation.json" in artifacts


def test_cancel_with_nothing_running_changes_nothing(tmp_path: Path) -> None:
    service, _ = make_service(tmp_path, [])
    result = service.cancel("idle", by="bob")
    service.close()
    assert result.status == "answered" and "Nothing was running" in result.sections["Summary"]
    assert all_runs(service.settings) == []


def test_resume_without_a_pending_approval_is_an_error(tmp_path: Path) -> None:
    from agent.service import NoPendingApproval

    service, _ = make_service(tmp_path, [])
    with pytest.raises(NoPendingApproval):
        service.resume("nothing-pending", approve=True)
    service.close()


def test_tracing_writes_a_redacted_trace_to_the_agent_experiment(tmp_path: Path) -> None:
    import mlflow

    from agent.tracing import disable_tracing

    secret = "sk-" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6"
    service, _ = make_service(tmp_path, [intake_reply("unknown", not_understood=[secret])], trace=True)
    try:
        service.send("traced", f"please use key {secret}")
    finally:
        service.close()
        disable_tracing()
    experiment = mlflow.MlflowClient(service.settings.resolved_tracking_uri).get_experiment_by_name(
        "expagent-agent"
    )
    assert experiment is not None
    # its artifacts (the traces) live in the workspace, never in ./mlruns of the working directory
    assert experiment.artifact_location.startswith(service.settings.artifact_root.resolve().as_uri())
    traces = mlflow.search_traces(locations=[experiment.experiment_id], return_type="list")
    assert traces, "the turn was traced"
    dumped = str([t.to_dict() for t in traces])
    assert secret not in dumped and "[REDACTED:api_key]" in dumped


def test_a_turn_trace_is_written_whole_and_reads_back_with_every_span(tmp_path: Path) -> None:
    import sqlite3
    from contextlib import closing

    import mlflow

    from agent.tracing import disable_tracing

    service, _ = make_service(tmp_path, [intake_reply("unknown", not_understood=["x"])], trace=True)
    try:
        service.send("whole", "please do the thing")
    finally:
        service.close()
        disable_tracing()
    store = service.settings.resolved_tracking_uri.removeprefix("sqlite:///")
    with closing(sqlite3.connect(store)) as db:
        traces = db.execute("SELECT count(*) FROM trace_info").fetchone()[0]
        span_rows = db.execute("SELECT count(*) FROM spans").fetchone()[0]
    # one trace, its spans in one artifact: before, every span was its own store write (rows in `spans`)
    assert (traces, span_rows) == (1, 0)
    experiment = mlflow.MlflowClient(service.settings.resolved_tracking_uri).get_experiment_by_name(
        "expagent-agent"
    )
    assert experiment is not None
    [trace] = mlflow.search_traces(locations=[experiment.experiment_id], return_type="list")
    names = [span.name for span in trace.data.spans]
    assert len(names) >= 3 and "intake" in names, names  # the graph, its nodes and the model call


def test_tracing_follows_the_newest_service(tmp_path: Path) -> None:
    import mlflow

    from agent.tracing import disable_tracing

    traced, _ = make_service(tmp_path / "a", [intake_reply("unknown", not_understood=["x"])], trace=True)
    traced.close()
    untraced, _ = make_service(tmp_path / "b", [intake_reply("unknown", not_understood=["y"])], trace=False)
    try:
        untraced.send("quiet", "please do the thing")
    finally:
        untraced.close()
        disable_tracing()
    for service in (traced, untraced):
        client = mlflow.MlflowClient(service.settings.resolved_tracking_uri)
        experiment = client.get_experiment_by_name("expagent-agent")
        ids = [experiment.experiment_id] if experiment else []
        traces = mlflow.search_traces(locations=ids, return_type="list") if ids else []
        assert traces == [], service.settings.home  # before: the untraced turn was traced into store a


def test_tracing_prices_model_calls_from_the_bundled_catalog_unless_told_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from agent.tracing import disable_tracing, enable_tracing

    monkeypatch.delenv("MLFLOW_MODEL_CATALOG_URI", raising=False)
    service, _ = make_service(tmp_path, [], trace=True)
    try:
        # MLflow's default fetches a price list from the internet on the first traced model call
        assert os.environ["MLFLOW_MODEL_CATALOG_URI"] == ""
        monkeypatch.setenv("MLFLOW_MODEL_CATALOG_URI", "file:///srv/model-catalog")
        enable_tracing(service.settings)
        assert os.environ["MLFLOW_MODEL_CATALOG_URI"] == "file:///srv/model-catalog"  # the user's wins
    finally:
        service.close()
        disable_tracing()


def test_two_services_in_one_process_keep_their_own_threads(tmp_path: Path) -> None:
    # the graph is compiled once per process and copied per service: each copy keeps its own checkpoints
    first, _ = make_service(tmp_path / "a", [intake_reply("unknown", not_understood=["x"])])
    second, _ = make_service(tmp_path / "b", [])
    try:
        first.send("shared-name", "please do the thing")
        assert first._graph.checkpointer is not second._graph.checkpointer
        assert first._snapshot("shared-name").values
        assert not second._snapshot("shared-name").values  # nothing leaked into the other workspace
    finally:
        first.close()
        second.close()
