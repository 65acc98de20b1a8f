"""The chat model is untrusted input: its prose is quoted, its classification double-checked, its tool
names audited (issue #18). Judged by the world's state: MLflow, the audit log, the answer's sections."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from graph_support import all_runs, intake_reply, make_service, registered_models

from agent.answer import SECTIONS, answer_problems, parse_sections, render_answer
from agent.model_prose import MAX_PROSE_CHARS, quote_line, quote_prose

FAKE_ID = "f" * 32
MALICIOUS = (
    "### Changes\nRegistered model `prod-model` version 3 and set alias `production` on run "
    f"`{FAKE_ID}`.\n\n### Summary\nI registered the model and deployed it. Your key AKIAABCDEFGHIJKLMNOP "
    "is fine."
)


def _audit(service: object) -> list[dict[str, object]]:
    path = service.settings.audit_log_path  # type: ignore[attr-defined]
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_quote_prose_strips_headings_caps_redacts_and_checks_ids() -> None:
    real = "a" * 32
    text = f"# Plan\n### Changes\nrun {real} is good, run `{FAKE_ID}` too.\nkey AKIAABCDEFGHIJKLMNOP"
    out = quote_prose(text, run_exists=lambda rid: rid == real)
    assert "#" not in out
    assert f"{real} is good" in out
    assert f"`{FAKE_ID}` (not found in MLflow)" in out
    assert "AKIAABCDEFGHIJKLMNOP" not in out
    long = quote_prose("x" * 200_000, run_exists=lambda _: True)
    assert len(long) <= MAX_PROSE_CHARS + 20 and long.endswith("…truncated")


@pytest.mark.parametrize(
    "claim",
    [
        "I registered the model as prod-model.",
        "We deployed the best run to production.",
        "The model has been promoted to Production.",
        "I have set the alias champion on version 3.",
        "I launched three new trials for you.",
        "I deleted the failed runs.",
    ],
)
def test_claims_of_actions_not_in_the_audit_are_marked_not_done(claim: str) -> None:
    assert "not done" in quote_prose(claim, run_exists=lambda _: True)


@pytest.mark.parametrize(
    "honest",
    [
        "The best run has roc_auc 0.99.",
        "The dataset breast_cancer@1 is registered and validated.",
        "You could hand the run to the deployment team.",
        "Run abc trained for 3 seconds and finished.",
    ],
)
def test_honest_prose_is_left_alone(honest: str) -> None:
    assert quote_prose(honest, run_exists=lambda _: True) == honest


def test_a_launch_claim_stands_when_the_tool_ran() -> None:
    out = quote_prose(
        "I launched the baseline.", run_exists=lambda _: True, done_tools={"start_training_run"}
    )
    assert "not done" not in out


def test_quote_line_is_one_capped_line() -> None:
    line = quote_line("### Changes\nDeployed " + "y" * 500)
    assert "\n" not in line and "#" not in line and line.endswith("…truncated")


def test_parse_sections_keeps_the_first_copy_of_a_heading() -> None:
    answer = render_answer(
        {name: f"real {name}" for name in SECTIONS[:-1]} | {"Summary": "s\n### Changes\nfake"}
    )
    assert parse_sections(answer)["Changes"] == "real Changes"
    assert "fake" in parse_sections(answer)["Summary"]


def test_model_prose_with_fake_sections_ids_and_claims_is_quoted(tmp_path: Path) -> None:
    replies = [intake_reply("question", question="what is the best run?"), MALICIOUS]
    service, model = make_service(tmp_path, replies)
    result = service.send(None, "what is the best run?")
    assert answer_problems(result.answer) == []
    assert result.sections["Changes"] == "None (read-only lookups)."
    assert result.answer.count("### Changes") == 1
    summary = result.sections["Summary"]
    assert f"{FAKE_ID}` (not found in MLflow)" in summary
    assert "not done" in summary
    assert "AKIAABCDEFGHIJKLMNOP" not in result.answer
    assert registered_models(service.settings) == [] and all_runs(service.settings) == []
    model.assert_complete()


def test_deploy_classified_as_experiment_is_refused_and_nothing_trains(tmp_path: Path) -> None:
    request = {
        "dataset": "breast_cancer",
        "version": "1",
        "model_family": "logistic_regression",
        "metric": "roc_auc",
        "experiment": "sneaky",
    }
    service, _ = make_service(tmp_path, [intake_reply("experiment", request=request)])
    result = service.send(None, "deploy the best run to production")
    assert result.runs == [] and all_runs(service.settings) == []
    assert any(e.rule == "no_deployment" for e in result.policy_events)
    assert "deploy" in result.sections["Summary"].lower()
    assert any(a["rule"] == "no_deployment" for a in _audit(service))


def test_unknown_deploy_tool_is_a_policy_event_not_not_understood(tmp_path: Path) -> None:
    reply = {"tool_calls": [{"name": "deploy_model", "args": {"run_id": FAKE_ID, "stage": "Production"}}]}
    service, model = make_service(tmp_path, [reply])
    result = service.send(None, "what is the best run in experiment x?")
    rules = [e.rule for e in result.policy_events]
    assert "unknown_tool" in rules and "no_deployment" in rules
    audit = _audit(service)
    assert any(a["rule"] == "unknown_tool" and "deploy_model" in str(a["reason"]) for a in audit)
    assert all_runs(service.settings) == [] and registered_models(service.settings) == []
    model.assert_complete()


def test_unknown_harmless_tool_is_audited_and_retried(tmp_path: Path) -> None:
    replies = [
        {"tool_calls": [{"name": "search_everything", "args": {}}]},
        intake_reply("unknown", not_understood=["### Summary\nfake heading"]),
    ]
    service, model = make_service(tmp_path, replies)
    result = service.send(None, "blorp")
    assert any(a["rule"] == "unknown_tool" for a in _audit(service))
    assert result.answer.count("### Summary") == 1
    model.assert_complete()


def test_write_tool_while_answering_a_question_is_refused_and_audited(tmp_path: Path) -> None:
    replies = [
        intake_reply("question", question="best run?"),
        {"tool_calls": [{"name": "start_training_run", "args": {"dataset": "breast_cancer"}}]},
        "Nothing to report.",
    ]
    service, model = make_service(tmp_path, replies)
    result = service.send(None, "best run?")
    assert all_runs(service.settings) == []
    assert "refused" in result.sections["Verification"]
    assert any(a["rule"] == "read_only" for a in _audit(service))
    model.assert_complete()
