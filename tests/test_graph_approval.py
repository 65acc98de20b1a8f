"""Approval: the guard flags the plan, the graph interrupts, a new service (a restart) resumes it."""

from __future__ import annotations

from pathlib import Path

from graph_support import all_runs, experiment_reply, make_service

from tools.core.settings import Budget

SMALL_CPU_CAP = Budget(max_cpu_per_run=0.5)


def _training_runs(service) -> list:  # noqa: ANN001 - AgentService
    return [r for r in all_runs(service.settings) if r.data.tags.get("expagent.role") != "session"]


def test_approval_survives_a_restart_and_completes(tmp_path: Path) -> None:
    first, _ = make_service(tmp_path, [experiment_reply()], budget=SMALL_CPU_CAP)
    waiting = first.send("needs-ok", "Train logistic regression on breast_cancer version 1")
    first.close()
    assert waiting.status == "awaiting_approval"
    assert waiting.approval is not None and waiting.approval.approval_keys == ["budget:cpu"]
    assert "Waiting for approval" in waiting.sections["Summary"]
    assert _training_runs(first) == []
    [session] = all_runs(first.settings)
    assert session.info.status == "SCHEDULED"

    second, model = make_service(tmp_path, [], budget=SMALL_CPU_CAP)  # a new process, same workspace
    assert second.pending_approval("needs-ok") is not None
    done = second.resume("needs-ok", approve=True, approver="boss")
    assert done.status == "answered" and second.pending_approval("needs-ok") is None
    second.close()
    assert "approved** by boss" in done.sections["Plan"]
    statuses = {r.info.run_id: r.info.status for r in all_runs(second.settings)}
    assert done.baseline_run_id is not None and statuses[done.baseline_run_id] == "FINISHED"
    assert set(statuses.values()) == {"FINISHED"}
    model.assert_complete()


def test_denied_approval_launches_nothing(tmp_path: Path) -> None:
    service, _ = make_service(tmp_path, [experiment_reply()], budget=SMALL_CPU_CAP)
    service.send("deny-me", "Train logistic regression on breast_cancer version 1")
    result = service.send("deny-me", "no")
    service.close()
    assert result.status == "answered" and result.baseline_run_id is None
    assert _training_runs(service) == []
    [session] = all_runs(service.settings)
    assert session.info.status == "FINISHED"
    assert session.data.tags["mlflow.note.content"].startswith("approval denied")
    assert (
        "denied" in result.sections["Changes"] and [e.verdict for e in result.policy_events][-1] == "denied"
    )
