"""Follow-ups, proposed defaults and yes/no answers (issue #14): grammar, merge, memory, service."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage

from agent.experiment_plan import ExperimentPlan
from agent.grammar.followups import answer_word, read_followup, rewrite
from agent.memory import remember
from agent.nodes.intake import fill_from, merge_followup
from agent.offline import intake_from_history
from agent.prompts import render_prompt
from agent.state import ExperimentRequestDraft, RunRecord, ThreadMemory


@pytest.mark.parametrize(
    ("text", "kind", "changes", "more"),
    [
        ("rerun with seed 7", "rerun", {"seed": 7}, None),
        ("rerun that with seed 7", "rerun", {"seed": 7}, None),
        ("bump n_estimators to 500 and retrain", "change", {"params": {"n_estimators": 500}}, None),
        ("set learning_rate to 0.05 and rerun", "change", {"params": {"learning_rate": 0.05}}, None),
        ("same but with random forest", "change", {"model_family": "random_forest"}, None),
        ("switch to logreg", "change", {"model_family": "logistic_regression"}, None),
        ("try max_depth=5", "change", {"params": {"max_depth": 5}}, None),
        ("ok give it 3 more trials", "more_trials", {}, 3),
        ("3 more trials", "more_trials", {}, 3),
        ("another five trials please", "more_trials", {}, 5),
        ("run it again", "rerun", {}, None),
        # the run named is resolved by the intake node; only the change stays (no "baseline" = 0 trials)
        ("rerun the baseline with seed 3", "rerun", {"seed": 3}, None),
        ("same as our baseline model but with num_leaves=15", "rerun", {"params": {"num_leaves": 15}}, None),
    ],
)
def test_followups_change_only_what_was_said(
    text: str, kind: str, changes: dict[str, object], more: int | None
) -> None:
    followup = read_followup(text)
    assert followup is not None and followup.kind == kind and followup.more_trials == more
    decision = intake_from_history([HumanMessage(text)])
    assert decision.intent == "experiment" and decision.follow_up
    assert decision.more_trials == more
    assert decision.request.model_dump(exclude_none=True, exclude_defaults=True) == changes
    assert decision.not_understood == []


@pytest.mark.parametrize(
    "text",
    ["train lightgbm on wine@1 in experiment x", "what's the best run in experiment x?", "banana", "cancel"],
)
def test_new_requests_and_questions_are_not_followups(text: str) -> None:
    assert intake_from_history([HumanMessage(text)]).follow_up is False


def test_a_followup_with_an_unmapped_part_reports_it() -> None:
    decision = intake_from_history([HumanMessage("try it with seed 11 and also blorp")])
    assert decision.follow_up and decision.request.seed == 11
    assert decision.not_understood == ["blorp"]


def test_whatever_model_accepts_the_proposed_family() -> None:
    text = "v1, whatever model is fastest, accuracy is fine, call the experiment wine-quick"
    decision = intake_from_history([HumanMessage(text)])
    assert decision.accept_defaults and decision.not_understood == []
    fields = decision.request.model_dump(exclude_none=True, exclude_defaults=True)
    assert fields == {"version": "1", "metric": "accuracy", "experiment": "wine-quick"}


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("yes", "yes"), ("yes go ahead", "yes"), ("ok", "yes"), ("sure", "yes"), ("sounds good", "yes"),
        ("go ahead", "yes"), ("no", "no"), ("nope", "no"), ("no thanks", "no"),
        ("ok give it 3 more trials", None), ("yes, v1", None), ("stop", None), ("maybe", None),
    ],
)  # fmt: skip
def test_answer_word(text: str, answer: str | None) -> None:
    assert answer_word(text) == answer


def test_rewrite_puts_changes_in_the_request_grammar() -> None:
    assert rewrite("bump n_estimators to 500") == "n_estimators=500"
    assert rewrite("call the experiment wine-quick") == "experiment wine-quick"


def test_merge_followup_keeps_earlier_params_and_changes_one() -> None:
    last = ExperimentRequestDraft(
        dataset="wine", version="1", model_family="lightgbm", metric="accuracy", experiment="x",
        seed=42, params={"n_estimators": 50},
    )  # fmt: skip
    merged = merge_followup(last, ExperimentRequestDraft(params={"max_depth": 3}))
    assert merged.params == {"n_estimators": 50, "max_depth": 3}
    assert (merged.dataset, merged.version, merged.seed) == ("wine", "1", 42)
    other = merge_followup(last, ExperimentRequestDraft(dataset="iris"))
    assert other.version is None  # a version never moves to another dataset


def test_fill_from_takes_only_what_is_still_empty() -> None:
    draft = ExperimentRequestDraft(dataset="wine", version="1", metric="f1")
    proposal = ExperimentRequestDraft(model_family="lightgbm", metric="accuracy", experiment="wine-baseline")
    filled = fill_from(draft, proposal)
    assert (filled.model_family, filled.metric, filled.experiment) == ("lightgbm", "f1", "wine-baseline")


def _plan(**changes: object) -> ExperimentPlan:
    request = {
        "dataset": "wine", "version": "1", "model_family": "lightgbm", "metric": "accuracy",
        "direction": "maximize", "experiment": "x", "runtime": "local", "cpu_hours": 1.0, "trials": 2,
        **changes,
    }  # fmt: skip
    return ExperimentPlan.model_validate(
        {
            "request": request,
            "baseline": {"model_family": "lightgbm", "seed": 42, "timeout_seconds": 60},
            "estimate": {
                "cpu_seconds_per_run": 1, "runs": 3, "total_cpu_hours": 0.1, "budget_cpu_hours": 1,
                "trials_that_fit": 2, "within_budget": True,
            },
        }
    )  # fmt: skip


def test_memory_records_the_request_and_adds_continued_trials() -> None:
    runs = [
        RunRecord(run_id="b1", role="baseline", status="FINISHED"),
        RunRecord(run_id="t0", role="tuning", status="FINISHED"),
        RunRecord(run_id="r1", role="trial", status="FINISHED"),
        RunRecord(run_id="r2", role="trial", status="FINISHED"),
    ]
    first = remember({"plan": _plan(), "runs": runs, "baseline_run_id": "b1", "best_run_id": "r2"})
    assert first is not None and first.request is not None
    assert (first.request.dataset, first.request.trials, first.baseline_run_id, first.trials_done) == (
        "wine",
        2,
        "b1",
        2,
    )
    more = [RunRecord(run_id="b1", role="baseline", status="FINISHED"),
            RunRecord(run_id="t1", role="tuning", status="FINISHED"),
            RunRecord(run_id="r3", role="trial", status="FINISHED")]  # fmt: skip
    state = {"plan": _plan(trials=1, continues_from="b1"), "runs": more, "memory": first}
    second = remember(state)  # type: ignore[arg-type]
    assert second is not None and second.request == first.request  # the request itself is kept
    assert second.trials_done == 3 and second.tuning_run_id == "t1"
    assert second.run_ids == ["b1", "r1", "r2", "r3"]
    assert remember({"plan": None, "runs": []}) is None  # a question leaves the memory alone


def test_the_intake_prompt_carries_the_thread_memory() -> None:
    memory = ThreadMemory(
        request=ExperimentRequestDraft(dataset="wine", version="1", model_family="lightgbm"),
        baseline_run_id="abc123",
    )
    text = render_prompt(
        "intake", model_families="lightgbm", metrics="accuracy", datasets="wine@1", projects="none",
        thread_memory=memory.describe(),
    )  # fmt: skip
    assert "dataset=wine" in text and "baseline run: abc123" in text and "more_trials" in text


def test_proposal_then_no_then_unclear_answer_change_nothing(tmp_path: Path) -> None:
    from graph_support import all_runs, make_settings

    from agent.service import AgentService

    settings = make_settings(tmp_path)
    service = AgentService(settings, model="offline")
    try:
        first = service.send(None, "can you get me a quick baseline for the wine data")
        assert "version" in first.asked_for
        assert "lightgbm, metric accuracy, experiment wine-baseline — ok?" in first.answer
        declined = service.send(first.thread_id, "no")
        assert "will not use those defaults" in declined.answer
        unclear = service.send(first.thread_id, "v1 and also frobnicate the splines")
        assert "frobnicate" in unclear.answer and "Nothing was launched" in unclear.answer
        nothing = service.send(first.thread_id, "3 more trials")
        assert "no earlier run" in nothing.answer
    finally:
        service.close()
    assert all_runs(settings) == []


def test_with_params_selects_the_runs_an_expectation_checks() -> None:
    from evals.observe import Observation, RunSnapshot
    from evals.schema import RunExpectation
    from evals.scorers import check_runs

    tags = {"expagent.role": "baseline"}
    obs = Observation(
        runs=[
            RunSnapshot("a", "x", "FINISHED", params={"seed": "42"}, tags=tags),
            RunSnapshot("b", "x", "FINISHED", params={"seed": "7"}, tags=tags),
        ]
    )
    one = RunExpectation.model_validate(
        {"experiment": "x", "role": "baseline", "with_params": {"seed": 7}, "count": 1}
    )
    assert check_runs(obs, one) == []
    none = RunExpectation.model_validate({"experiment": "x", "with_params": {"seed": 3}, "count": 1})
    assert check_runs(obs, none) == ["experiment 'x' has 0 new runs, expected 1"]


def test_more_trials_study_is_not_a_replay_of_the_first(tmp_path: Path) -> None:
    from tuning_support import make_ctx, study

    from tools.tuning.study import open_study

    ctx = make_ctx(tmp_path)
    storage = str(tmp_path / "journal.log")

    def first_params(settings_name: str, before: int) -> float:
        s = open_study(study(ctx, settings_name, trials_before=before, warm_start=False), storage)
        return s.ask().suggest_float("x", 0.0, 1.0)

    assert first_params("a", 0) == first_params("b", 0)  # same seed, same first draw
    assert first_params("c", 2) != first_params("d", 0)  # continued: seeded past the earlier trials


def test_questions_about_the_threads_runs_name_them(tmp_path: Path) -> None:
    """'how did it do?', 'why did it fail?', 'logs of the baseline' in a thread resolve to its runs."""
    from graph_support import all_runs, make_settings

    from agent.service import AgentService

    settings = make_settings(tmp_path)
    service = AgentService(settings, model="offline")
    try:
        trained = service.send(
            None, "Train a logistic_regression baseline on breast_cancer version 1 optimizing roc_auc, "
            "experiment refs",
        )  # fmt: skip
        assert trained.status == "answered" and trained.baseline_run_id
        run_id = trained.baseline_run_id
        before = {r.info.run_id for r in all_runs(settings)}
        how = service.send(trained.thread_id, "how did it do?")
        assert how.status == "answered" and run_id in how.answer and "roc_auc" in how.answer
        why = service.send(trained.thread_id, "why did it fail?")
        assert run_id in why.answer and "FINISHED" in why.answer  # it did not fail, and says so
        logs = service.send(trained.thread_id, "show me the training log of the baseline")
        assert run_id in logs.answer
    finally:
        service.close()
    assert {r.info.run_id for r in all_runs(settings)} == before  # questions change nothing


def test_a_fresh_thread_or_a_named_id_is_not_rewritten() -> None:
    from agent.nodes.intake import with_thread_references
    from agent.state import IntakeDecision

    question = IntakeDecision(intent="question", question="is it possible to list experiments?")
    assert with_thread_references(question, "is it possible to list experiments?", ThreadMemory()) == question
    memory = ThreadMemory(run_ids=["a" * 32])
    named = IntakeDecision(intent="question", question="why did run 8788935a fail?")
    assert with_thread_references(named, "why did run 8788935a fail?", memory) == named
    chatter = IntakeDecision(intent="unknown", not_understood=["banana"])
    assert with_thread_references(chatter, "banana it", memory) == chatter
    how = with_thread_references(IntakeDecision(intent="unknown"), "how did it do?", memory)
    assert how.intent == "question" and "a" * 32 in (how.question or "")
