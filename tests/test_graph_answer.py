"""The five-section answer format and the request logic (drafts over turns, defaults, metric fit)."""

from __future__ import annotations

import pytest

from agent.answer import (
    SECTIONS,
    AnswerFormatError,
    answer_problems,
    parse_sections,
    render_answer,
    validate_answer,
)
from agent.prompts import render_prompt
from agent.request import complete_request, merge_drafts, metric_problem, missing_inputs
from agent.state import ExperimentRequestDraft
from tools.core.settings import Settings


def test_render_fills_empty_sections_and_keeps_the_order() -> None:
    answer = render_answer({"Summary": "done", "Plan": "p"})
    assert [h for h in parse_sections(answer)] == list(SECTIONS)
    assert parse_sections(answer)["Rollback"] == "Nothing to roll back."
    assert answer_problems(answer) == []


def test_validation_names_wrong_order_and_empty_sections() -> None:
    swapped = "### Changes\nx\n\n### Plan\ny\n\n### Verification\nz\n\n### Rollback\n\n### Summary\ns\n"
    problems = answer_problems(swapped)
    assert any("in order" in p for p in problems) and any("Rollback is empty" in p for p in problems)
    with pytest.raises(AnswerFormatError):
        validate_answer(swapped)
    with pytest.raises(AnswerFormatError, match="unknown answer sections: Deploy"):
        render_answer({"Deploy": "no"})


def test_parse_ignores_other_headings_inside_a_section() -> None:
    answer = render_answer({"Summary": "#### details\n### Not a section\ntext"})
    assert "### Not a section" in parse_sections(answer)["Summary"]


def test_merge_keeps_earlier_inputs_and_drops_a_version_of_another_dataset() -> None:
    earlier = ExperimentRequestDraft(dataset="wine", version="1", metric="accuracy", experiment="e")
    assert merge_drafts(earlier, ExperimentRequestDraft(model_family="lightgbm")).version == "1"
    switched = merge_drafts(earlier, ExperimentRequestDraft(dataset="breast_cancer"))
    assert switched.dataset == "breast_cancer" and switched.version is None
    assert missing_inputs(switched) == ["version", "model_family"]


def test_complete_request_lists_every_default_it_chose() -> None:
    draft = ExperimentRequestDraft(
        dataset="breast_cancer", version="1", model_family="lightgbm", metric="log_loss", experiment="e"
    )
    request = complete_request(draft, Settings(home="/nonexistent"), "classification", "abc")
    assert request.seed == 42 and request.runtime == "local" and request.trials == 0
    assert request.direction == "minimize"
    joined = "; ".join(request.assumptions)
    assert (
        "seed 42" in joined
        and "runtime local" in joined
        and "CPU-hours" in joined
        and "tuning trials" in joined
    )
    with pytest.raises(ValueError, match="lacks: version"):
        complete_request(
            draft.model_copy(update={"version": None}), Settings(home="/nonexistent"), None, None
        )


def test_metric_must_fit_the_task() -> None:
    assert metric_problem("roc_auc", "classification") is None
    assert "rmse" in (metric_problem("roc_auc", "regression") or "")
    assert metric_problem("rmse", None) is None


def test_prompts_fail_on_missing_variables() -> None:
    from jinja2 import UndefinedError

    with pytest.raises(UndefinedError):
        render_prompt("intake")
    with pytest.raises(KeyError, match="unknown prompt"):
        render_prompt("nope")
    assert "read-only tools" in render_prompt("question")
