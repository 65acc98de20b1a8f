"""Conversation phrasings (#14): typos in cue words, relative changes, named-run follow-ups, filters."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from agent.grammar import parse_question
from agent.grammar.followups import read_followup
from agent.grammar.notes import note_request
from agent.grammar.questions import run_window
from agent.grammar.relative import read_relative, resolve
from agent.grammar.typos import edits, read_cue_typos
from agent.nodes.intake import relative_changes
from agent.offline import intake_from_history
from agent.offline_questions import first_calls, list_filter
from agent.references import ReferenceProblem, RunReference, resolve_runs
from agent.run_bases import named_run
from agent.state import ExperimentRequestDraft, ThreadMemory


def _decide(*turns: str):  # type: ignore[no-untyped-def]
    messages: list = []
    for turn in turns:
        messages += [HumanMessage(turn), AIMessage("ok")]
    return intake_from_history(messages[:-1])


@pytest.mark.parametrize(
    ("text", "trials"),
    [
        ("5-trial sweep over lr 1e-3..1e-1 log, lgbm on breast_cancer@1, roc_auc, experiment x", 5),
        ("run a 10-trial study of lightgbm on wine@1", 10),
        ("a 3 trial run of lgbm on wine v1", 3),
    ],
)
def test_hyphenated_trial_counts(text: str, trials: int) -> None:
    decision = _decide(text)
    assert decision.intent == "experiment" and decision.request.trials == trials
    assert decision.not_understood == []


@pytest.mark.parametrize(
    ("text", "more", "changes", "read"),
    [
        ("giv it 3 more trails", 3, {}, ["read 'giv' as 'give'", "read 'trails' as 'trials'"]),
        ("rerun w/ sed 7", None, {"seed": 7}, ["read 'sed' as 'seed'"]),
        ("retrian", None, {}, ["read 'retrian' as 'retrain'"]),
    ],
)
def test_misspelled_cue_words_are_read_and_stated(
    text: str, more: int | None, changes: dict[str, object], read: list[str]
) -> None:
    decision = _decide(text)
    assert decision.intent == "experiment" and decision.follow_up and decision.more_trials == more
    assert decision.request.model_dump(exclude_none=True, exclude_defaults=True) == changes
    assert decision.readings == read and decision.not_understood == []


def test_an_ambiguous_typo_is_asked_and_names_are_never_corrected() -> None:
    trail = _decide("trail lightgbm on wine@1, accuracy, experiment x")
    assert "'trail' (did you mean 'train' or 'trial'?)" in trail.not_understood
    wnie = _decide("rf baseline on wnie v1, accuracy, experiment conv-wnie")
    assert wnie.request.dataset == "wnie" and wnie.readings == []
    # only leftover words are candidates: a param or experiment name near a cue word stays as written
    assert read_cue_typos("experiment trails", set()).fixes == []
    assert edits("trails", "trials", 1) == 1 and edits("sparkle", "seed", 1) == 2


def test_bare_param_and_no_use_rf() -> None:
    assert _decide("n_estimators 50").request.params == {"n_estimators": 50}
    no_rf = _decide("no, use rf")
    assert no_rf.accept_defaults and no_rf.request.model_family == "random_forest"
    fresh = _decide("train rf on wine@1, accuracy, experiment x")
    assert not fresh.follow_up


@pytest.mark.parametrize(
    ("text", "family", "params", "expected"),
    [
        ("double the trees", "random_forest", {"n_estimators": 10}, {"n_estimators": 20}),
        ("halve the learning rate", "lightgbm", {}, {"learning_rate": 0.05}),
        ("lower the learning rate a bit", "lightgbm", {"learning_rate": 0.2}, {"learning_rate": 0.15}),
        ("make it a bit deeper", "random_forest", {"max_depth": 3}, {"max_depth": 4}),
        ("double the trees", "hist_gradient_boosting", {}, {"max_iter": 200}),
        ("double the trees and add 50 more", "random_forest", {"n_estimators": 10}, {"n_estimators": 70}),
        ("add 50 more trees", "random_forest", {"n_estimators": 10}, {"n_estimators": 60}),
        ("20 fewer trees", "lightgbm", {}, {"n_estimators": 80}),
        ("learning rate 10x smaller", "lightgbm", {"learning_rate": 0.2}, {"learning_rate": 0.02}),
        ("make the learning rate 10 times smaller", "xgboost", {}, {"learning_rate": 0.03}),
        ("use a 3x bigger num_leaves", "lightgbm", {}, {"num_leaves": 93}),
        ("increase n_estimators by 25", "random_forest", {"n_estimators": 10}, {"n_estimators": 35}),
        ("lower the learning rate by 0.01", "lightgbm", {}, {"learning_rate": 0.09}),
        ("a bit lower learning rate", "lightgbm", {"learning_rate": 0.2}, {"learning_rate": 0.15}),
    ],
)
def test_relative_changes_resolve_to_exact_values(
    text: str, family: str, params: dict[str, object], expected: dict[str, object]
) -> None:
    draft = ExperimentRequestDraft(dataset="wine", version="1", model_family=family, params=params)
    changed = relative_changes(draft, text, fresh=False)
    assert not isinstance(changed, str)
    assert {k: changed[0].params[k] for k in expected} == expected and changed[1]


def test_relative_change_without_a_base_asks() -> None:
    draft = ExperimentRequestDraft(dataset="wine", version="1", model_family="lightgbm")
    assert isinstance(relative_changes(draft, "a bit deeper", fresh=False), str)
    assert isinstance(relative_changes(ExperimentRequestDraft(), "double the trees", fresh=True), str)
    # "bump n_estimators to 500" states the value: not relative; names are never read as changes
    assert read_relative("bump n_estimators to 500")[0] == []
    assert read_relative("experiment conv-deeper")[0] == []
    assert isinstance(relative_changes(draft, "lower the learning rate by 0.5", fresh=False), str)  # below 0
    assert read_relative("add 50 more") == ([], "add 50 more")  # no parameter before it: not a change
    assert read_relative("give it 3 more trials")[0] == []
    change = read_relative("double the trees")[0][0]
    assert resolve(change, "logistic_regression", {}) != ("n_estimators", 200)


def test_named_run_followups() -> None:
    memory = ThreadMemory(run_ids=["a" * 32, "b1" * 16], best_run_id="a" * 32)
    assert _decide("rerun the best one with seed 3").request.seed == 3
    assert _decide("same as run 8788935a but with max_depth=4").not_understood == []
    assert named_run("rerun the best one with seed 3", memory) == "a" * 32
    assert named_run("same as run 8788935a but with max_depth=4", memory) == "8788935a"
    assert named_run("rerun it with seed 3", memory) is None  # "it" is the thread's last request
    assert isinstance(named_run("rerun the best one", ThreadMemory()), ReferenceProblem)
    one_run = ThreadMemory(run_ids=["c" * 32])
    # the kind of reference decides, not how it was spelled: "two" stops like "2" does
    for text in ("rerun the last 2 runs with seed 3", "rerun the last two runs with seed 3"):
        problem = named_run(text, one_run)
        assert isinstance(problem, ReferenceProblem) and "only 1 run" in problem.message, text
    assert named_run("rerun it with seed 3", ThreadMemory()) is None  # no runs: the follow-up rules say so
    assert named_run("same again but use both splits", one_run) is None  # "both" is also plain English
    two_runs = ThreadMemory(run_ids=["c" * 32, "d1" * 16])
    for text in ("rerun both with seed 3", "retrain them", "rerun the last two runs with seed 3"):
        problem = named_run(text, two_runs)  # several runs at once: said, never one of them silently
        assert isinstance(problem, ReferenceProblem) and "rerun one at a time" in problem.message, text
    assert named_run("same again but use both splits", two_runs) is None


@pytest.mark.parametrize(
    ("text", "names_run"),
    [
        ("rerun the last one with seed 7", False),  # the thread's last run, like "it"
        ("redo the previous run with seed 7", False),
        ("ok now do that one again, seed 7", False),
        ("train that model again with seed 7", False),
        ("rerun the one before with seed 7", True),
        ("rerun the first model with seed 7", True),
        ("rerun the top trial with seed 7", True),
        ("same as run 8788935a but seed 7", True),
    ],
)
def test_run_phrases_are_removed_from_followups(text: str, names_run: bool) -> None:
    # the follow-up grammar strips the phrases agent.references resolves: what is left is the change
    followup = read_followup(text)
    assert followup is not None and followup.kind == "rerun", text
    assert set(re.findall(r"\w+", followup.text)) <= {"with", "but", "now", "seed", "7"}, followup.text
    assert followup.names_run == names_run, text
    assert _decide("train lightgbm on wine@1, accuracy, experiment x", text).not_understood == [], text


@pytest.mark.parametrize(
    "text",
    ["no need to rerun it, thanks", "no need to retrain", "no rerun please", "no need to rerun the last one",
     "there is no need to rerun it", "don't rerun it", "nope don't redo it"],
)  # fmt: skip
def test_a_negated_followup_is_not_acted_on(text: str) -> None:
    decision = _decide("train lightgbm on wine@1, accuracy, experiment x", text)
    assert decision.not_understood, decision


@pytest.mark.parametrize("text", ["no, use rf", "nope - use rf", "no use rf", "no thanks, use rf"])
def test_a_leading_no_still_declines_and_replaces(text: str) -> None:
    followup = read_followup(text)
    assert followup is not None and followup.decline_defaults and followup.text.strip() == "use rf", text


@pytest.mark.parametrize(
    "text",
    ["don't stop it", "do not cancel", "no, don't cancel", "never cancel runs",
     "please don't kill the study", "what killed it?", "why was it killed?", "why did it stop?",
     "did you kill it?", "was anything cancelled?", "why did you cancel it", "what happens if I cancel?",
     "is it safe to kill it?", "should I stop the study?"],
)  # fmt: skip
def test_a_negated_or_asked_about_stop_stops_nothing(text: str) -> None:
    # a cancel stops running work: only an imperative does it
    assert _decide(text).intent != "cancel", text


@pytest.mark.parametrize(
    "text",
    ["cancel the study and train rf on wine@1, accuracy, experiment x",
     "train rf on wine@1, accuracy, experiment x and cancel the old study",
     "stop the study, then tune 5 more trials", "stop training after 10 trials",
     "kill the run if it takes more than 5 minutes"],
)  # fmt: skip
def test_a_stop_later_or_beside_a_request_is_asked_about(text: str) -> None:
    # a stop with a condition is not a stop now; a stop and a request in one message are two actions
    decision = _decide(text)
    assert decision.intent != "cancel" and decision.not_understood, decision


@pytest.mark.parametrize(
    "text",
    ["stop training", "cancel the tuning", "please stop the study if it is still running",
     "stop everything if you can", "stop", "kill it", "cancel everything", "please stop", "can you stop?",
     "stop the study", "abort!", "could you cancel the runs please", "stop, do not rerun it"],
)  # fmt: skip
def test_an_imperative_stop_cancels(text: str) -> None:
    assert _decide(text).intent == "cancel", text


@pytest.mark.parametrize(
    "text",
    ["should I retrain it with seed 3?", "should we tune 10 more trials?", "shall we go with random forest?",
     "should I train rf on wine@1, accuracy, experiment y?"],
)  # fmt: skip
def test_asking_for_advice_orders_nothing(text: str) -> None:
    decision = _decide("train lightgbm on wine@1, accuracy, experiment x", text)
    assert decision.intent in ("question", "unknown") and decision.more_trials is None, decision


def test_a_negated_note_request_writes_no_note() -> None:
    for text in ("please don't add a note to run 8788935a: fine", "do not annotate 8788935a with: x"):
        assert note_request(text) is None and parse_question(text).kind != "note", text
    kept = note_request("add a note to run 8788935a: don't use it")  # a negation inside the note is its text
    assert kept is not None and kept.text == "don't use it"


def test_a_hex_word_is_not_a_run_id() -> None:
    assert resolve_runs("rerun deface with seed 3", ThreadMemory(run_ids=["d" * 32])) is None
    assert read_followup("rerun deface with seed 3") is not None
    assert not read_followup("rerun deface with seed 3").names_run  # type: ignore[union-attr]


def test_questions_not_cancels_and_labelled_notes() -> None:
    assert _decide("what killed run 8788935a").intent == "question"
    assert _decide("any killed runs in mine?").intent == "question"
    assert _decide("kill run 8788935a").intent == "cancel"
    assert parse_question("what killed 8788935a").kind == "why_failed"
    note = note_request("note: rf baseline looks fine on run 8788935a")
    assert note is not None and (note.run, note.text) == ("8788935a", "rf baseline looks fine")
    assert note_request("note: 8788935a") is None


def test_status_and_time_filters() -> None:
    now = datetime(2026, 12, 3, 15, 0, tzinfo=UTC)
    today = run_window("any failures today?", now)
    yesterday = run_window("runs from yesterday", now)
    midnight = datetime(2026, 12, 3, tzinfo=UTC)
    assert today is not None and today.since_ms == int(midnight.timestamp() * 1000)
    assert yesterday is not None and yesterday.until_ms == today.since_ms
    assert yesterday.since_ms == today.since_ms - int(timedelta(days=1).total_seconds() * 1000)
    failed = parse_question("list failed runs in mine")
    assert (failed.kind, failed.experiment, failed.status) == ("list_runs", "mine", "FAILED")
    assert first_calls(failed, {"search_runs"})[0][1]["filter"] == "attributes.status = 'FAILED'"
    listing = parse_question("any failures today?")
    assert listing.window is not None and "attributes.start_time >=" in (list_filter(listing) or "")
    assert parse_question("why did the last run in mine fail?").kind == "why_failed"


def test_them_both_those_two_name_the_last_two_runs() -> None:
    memory = ThreadMemory(run_ids=["a" * 32, "b" * 32, "c" * 32])
    for text in ("compare them", "compare both", "how did those two do?"):
        found = resolve_runs(text, memory)
        assert isinstance(found, RunReference) and found.run_ids == ["b" * 32, "c" * 32]
    assert isinstance(resolve_runs("compare them", ThreadMemory(run_ids=["a" * 32])), ReferenceProblem)


@pytest.mark.parametrize(
    ("text", "params", "left"),
    [
        ("train rf on wine@1 with n_estimators 50, accuracy, experiment x", {"n_estimators": 50}, []),
        (
            "lgbm baseline on wine v1 with num_leaves 15 and learning_rate 0.05, accuracy, experiment x",
            {"num_leaves": 15, "learning_rate": 0.05},
            [],
        ),
        ("train rf on wine@1 with foo_bar 3, accuracy, experiment x", {}, ["foo_bar 3"]),  # not a known name
    ],
)
def test_bare_params_in_a_new_request_only_for_names_the_allowlist_knows(
    text: str, params: dict[str, object], left: list[str]
) -> None:
    decision = _decide(text)
    assert decision.intent == "experiment" and not decision.follow_up
    assert decision.request.params == params and decision.not_understood == left
    ranged = _decide("tune lgbm on wine@1 with num_leaves 16 to 64, 5 trials, accuracy, experiment x")
    assert ranged.request.params == {} and ranged.request.search_space is not None


@pytest.mark.parametrize(
    ("text", "family", "metric", "read"),
    [
        ("train xgbost on wine@1 optimizing logloss, experiment x", "xgboost", "log_loss",
         ["'xgbost' as 'xgboost'"]),
        ("tune hist gradient bosting on wine@1, accuracy, experiment x", "hist_gradient_boosting", "accuracy",
         ["'bosting' as 'boosting'"]),
        ("train lightgmb on wine@1 optimizing acuracy, experiment x", "lightgbm", "accuracy",
         ["'lightgmb' as 'lightgbm'", "'acuracy' as 'accuracy'"]),
    ],
)  # fmt: skip
def test_misspelled_family_and_metric_names_are_read_and_stated(
    text: str, family: str, metric: str, read: list[str]
) -> None:
    decision = _decide(text)
    assert (decision.request.model_family, decision.request.metric) == (family, metric)
    assert decision.readings == [f"read {r}" for r in read] and decision.not_understood == []
