"""Graph paths that launch real training runs (scripted model, real MLflow sqlite, real local runtime)."""

from __future__ import annotations

import threading
from pathlib import Path

from graph_support import all_runs, experiment_reply, make_service

from agent.answer import SECTIONS, answer_problems
from agent.service import ProgressEvent


def _statuses(service) -> dict[str, str]:  # noqa: ANN001 - AgentService
    return {r.info.run_id: r.info.status for r in all_runs(service.settings)}


def test_baseline_runs_verifies_and_cites_the_mlflow_run(tmp_path: Path) -> None:
    service, model = make_service(tmp_path, [experiment_reply()])
    result = service.send("happy", "Train a logistic regression baseline on breast_cancer version 1")
    service.close()
    assert result.status == "answered" and answer_problems(result.answer) == []
    assert list(result.sections) == list(SECTIONS)
    statuses = _statuses(service)
    assert result.baseline_run_id is not None and statuses[result.baseline_run_id] == "FINISHED"
    assert result.baseline_run_id in result.sections["Summary"]
    assert "http://mlflow.test/#/experiments/" in result.sections["Summary"]
    assert "all passed" in result.sections["Verification"]
    assert "seed 42" in result.sections["Plan"] and "runtime local" in result.sections["Plan"]
    assert sorted(r.role for r in result.runs) == ["baseline", "session"]
    assert set(statuses.values()) == {"FINISHED"}, "no run may be left RUNNING"
    session = next(r for r in result.runs if r.role == "session")
    client = service._tools.tracking  # noqa: SLF001
    artifacts = {a.path for a in client.list_artifacts(session.run_id)}
    assert {"plan.json", "plan.md", "answer.md"} <= artifacts
    run = client.get_run(session.run_id)
    assert run.data.tags["expagent.role"] == "session" and run.data.metrics["agent/model_calls"] == 1
    # Readable in MLflow: named after the request, described by it and the answer, a user and a source.
    assert run.info.run_name.startswith("session: train a logistic_regression baseline on breast_cancer@1")
    note = run.data.tags["mlflow.note.content"]
    assert note.startswith("Request by ") and "## Answer" in note and result.baseline_run_id in note
    assert run.data.tags["mlflow.user"] and run.data.tags["mlflow.source.name"] == "expagent agent"
    baseline = client.get_run(result.baseline_run_id)
    assert baseline.info.run_name.startswith("baseline-")
    assert baseline.data.tags["mlflow.note.content"].startswith("Baseline ")
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    model.assert_complete()


def test_failing_run_is_rolled_back_and_reported(tmp_path: Path) -> None:
    service, _ = make_service(tmp_path, [experiment_reply(params={"C": -1.0})])
    result = service.send("fails", "Train logistic regression with C=-1 on breast_cancer version 1")
    service.close()
    baseline = result.baseline_run_id
    assert baseline is not None and _statuses(service)[baseline] == "FAILED"
    assert baseline in result.sections["Rollback"] and "run failed" in result.sections["Rollback"]
    assert "status_finished" in result.sections["Verification"]
    assert "RUNNING" not in _statuses(service).values()
    assert f"`{baseline}` ended FAILED" in result.sections["Summary"]
    assert "C" in result.sections["Summary"], "the summary says why the run failed"


def test_cancel_during_execution_kills_the_run(tmp_path: Path) -> None:
    slow = experiment_reply(model_family="random_forest", params={"n_estimators": 50000})
    service, _ = make_service(tmp_path, [slow])
    cancellers: list[threading.Thread] = []

    def on_progress(event: ProgressEvent) -> None:
        if event.kind == "run_started":
            canceller = threading.Thread(target=service.cancel, args=("slow", "tester"))
            canceller.start()
            cancellers.append(canceller)

    service.on_progress = on_progress
    result = service.send("slow", "Train a huge random forest on breast_cancer version 1")
    for canceller in cancellers:
        canceller.join()
    service.close()
    baseline = result.baseline_run_id
    assert baseline is not None and _statuses(service)[baseline] == "KILLED"
    assert "user cancelled" in result.sections["Rollback"] and baseline in result.sections["Rollback"]
    artifacts = {a.path for a in service._tools.tracking.list_artifacts(baseline)}  # noqa: SLF001
    assert "cancellation.json" in artifacts
    assert "RUNNING" not in _statuses(service).values()
