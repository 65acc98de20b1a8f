"""Graph paths that launch nothing: missing inputs, refusals, questions, unknown requests (scripted model)."""

from __future__ import annotations

import json
from pathlib import Path

from graph_support import (
    all_runs,
    experiment_reply,
    intake_reply,
    make_service,
    make_settings,
    registered_models,
)

from agent.answer import SECTIONS, answer_problems


def test_missing_inputs_asks_for_exactly_those_and_launches_nothing(tmp_path: Path) -> None:
    service, model = make_service(tmp_path, [intake_reply(request={"model_family": "lightgbm"})])
    result = service.send(None, "Train a lightgbm model")
    assert result.asked_for == ["dataset", "version", "metric", "experiment"]
    assert answer_problems(result.answer) == []
    assert "the dataset version" in result.sections["Summary"]
    assert "model family" not in result.sections["Summary"]
    assert result.runs == [] and all_runs(service.settings) == []
    model.assert_complete()


def test_follow_up_completes_the_earlier_request_without_assuming_a_version(tmp_path: Path) -> None:
    first = experiment_reply(version=None)
    follow_up = intake_reply(request={"version": "1"})
    service, _ = make_service(tmp_path, [first, follow_up])
    asked = service.send(
        "t-follow", "Train logistic regression on breast_cancer optimizing roc_auc in experiment e"
    )
    assert asked.asked_for == ["version"]
    assert "Registered versions of breast_cancer: 1" in asked.sections["Summary"]
    plan_state = service._graph.get_state({"configurable": {"thread_id": "t-follow"}}).values  # noqa: SLF001
    assert plan_state["draft"].dataset == "breast_cancer"
    # The follow-up only gives the version; the merged request is complete and goes to planning.
    from agent.request import merge_drafts, missing_inputs
    from agent.state import ExperimentRequestDraft

    merged = merge_drafts(plan_state["draft"], ExperimentRequestDraft(version="1"))
    assert missing_inputs(merged) == []


def test_metric_that_does_not_fit_the_task_is_questioned(tmp_path: Path) -> None:
    service, _ = make_service(tmp_path, [experiment_reply(dataset="diabetes", metric="roc_auc")])
    result = service.send(None, "Train logistic regression on diabetes version 1 optimizing roc_auc")
    assert result.asked_for == ["metric"]
    assert "roc_auc is not a regression metric" in result.sections["Summary"]
    assert all_runs(service.settings) == []


def test_deploy_is_refused_with_a_policy_event_and_no_mlflow_change(tmp_path: Path) -> None:
    service, _ = make_service(tmp_path, [intake_reply("forbidden", forbidden_action="deploy")])
    result = service.send(None, "Deploy the best breast_cancer model to production")
    assert [s for s in result.sections] == list(SECTIONS)
    assert [(e.rule, e.verdict) for e in result.policy_events] == [("no_deployment", "reject")]
    assert "deployment team" in result.sections["Summary"]
    assert (
        result.runs == [] and all_runs(service.settings) == [] and registered_models(service.settings) == []
    )
    audit = [json.loads(line) for line in service.settings.audit_log_path.read_text().splitlines()]
    assert any(a["rule"] == "no_deployment" and a["verdict"] == "reject" for a in audit)


def test_raw_uri_is_refused_by_the_guard(tmp_path: Path) -> None:
    reply = experiment_reply(dataset=None, version=None, dataset_uri="s3://lake/raw/customers.csv")
    service, _ = make_service(tmp_path, [reply])
    result = service.send(None, "Train lightgbm on s3://lake/raw/customers.csv")
    assert [e.rule for e in result.policy_events] == ["versioned_data"]
    assert "raw path/URI" in result.sections["Summary"]
    assert all_runs(service.settings) == []


def test_unvalidated_registry_dataset_is_refused(tmp_path: Path) -> None:
    from tools.core.registry import DatasetRegistry

    records = DatasetRegistry.open(make_settings(tmp_path)).list()
    raw = next(r for r in records if r.status == "raw")
    service, _ = make_service(tmp_path, [experiment_reply(dataset=raw.name, version=raw.version)])
    result = service.send(None, f"Train on {raw.ref}")
    assert [e.rule for e in result.policy_events] == ["versioned_data"]
    assert "is raw" in result.sections["Summary"]
    assert all_runs(service.settings) == []


def test_unknown_request_explains_the_grammar(tmp_path: Path) -> None:
    service, _ = make_service(tmp_path, [intake_reply("unknown", not_understood=["make it pop"])])
    result = service.send(None, "make it pop")
    assert "make it pop" in result.sections["Plan"]
    assert "Train a lightgbm baseline" in result.sections["Summary"]
    assert answer_problems(result.answer) == []


def test_question_uses_guarded_read_only_tools(tmp_path: Path) -> None:
    replies = [
        intake_reply("question", question="Which datasets can I use?"),
        {"tool_calls": [{"name": "list_datasets", "args": {"status": "validated"}}]},
        "You can use breast_cancer@1 and wine@1.",
    ]
    service, model = make_service(tmp_path, replies)
    result = service.send(None, "Which datasets can I use?")
    assert result.sections["Summary"] == "You can use breast_cancer@1 and wine@1."
    assert "list_datasets" in result.sections["Verification"]
    assert result.sections["Changes"].startswith("None")
    assert result.usage.model_calls == 3 and result.usage.prompt_tokens > 0
    tool_message = model.calls[2][-1]
    assert tool_message.type == "tool" and "breast_cancer@1" in str(tool_message.content)
    model.assert_complete()
