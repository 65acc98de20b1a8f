"""Requests for changes expagent has no tool for never change state (issue #14: never act on half an
understanding): the offline grammar and the second opinion on a model's classification."""

from __future__ import annotations

from pathlib import Path

import pytest
from graph_support import all_runs, experiment_reply, make_service

from agent.grammar.intake import parse_message
from agent.grammar.unsupported import unsupported_request

UNSUPPORTED = [
    ("add a note to the best run: rf baseline looks fine", "note"),  # no run ID: not a note it can add
    ("delete the failed runs in experiment mine", "delete"),
    ("please remove run 8788935a", "delete"),
    ("can you purge the old trials from tune-smoke?", "delete"),
    ("clean up experiment scratch", "delete"),
    ("rename experiment mine to theirs", "rename"),
    ("archive the runs of last week", "rename"),
    ("restore run 8788935a4b", "rename"),
    ("edit the wine dataset to drop nulls", "edit_data"),
    ("Train lightgbm on wine version 1 and drop the id column", "edit_data"),
    ("fix the labels in breast_cancer v1 then retrain", "edit_data"),
    ("tune 20 trials and tag the best run as reviewed", "note"),
    ("leave a comment on the baseline run: looks overfit", "note"),
    ("export the results to csv", "send"),
    ("email the metrics of experiment demo to my team", "send"),
    ("upload the best model to s3", "send"),
    ("train random forest on wine v1, then delete the baseline run", "delete"),
    ("pls wipe experiment demo", "delete"),
    ("I want you to remove all runs in tune-smoke", "delete"),
    ("share the report with alice", "send"),
    ("upload a new version of wine from /tmp/wine.csv", "edit_data"),
    ("add a new version of wine", "edit_data"),
    ("register wine version 3", "edit_data"),
    ("create version 3 of wine from this csv", "edit_data"),
    ("make a new version of the wine dataset with the outliers removed", "edit_data"),
    ("please add wine v3 to the registry", "edit_data"),
    ("import the new churn data", "edit_data"),
]
BENIGN = [
    "Train a lightgbm baseline on breast_cancer version 1 optimizing roc_auc, experiment demo",
    "how do I delete runs?",
    "what is the best run in experiment x?",
    "show me the logs of the last run",
    "compare the last two runs",
    "use the data from breast_cancer version 1",
    "we will delete the old runs ourselves",
    "don't delete anything",
    "change the metric to accuracy",
    "train random forest on wine v1, remove max_depth from the search space",
    "which runs should I delete?",
    "tune lightgbm on breast_cancer@1 with feature_fraction between 0.5 and 1",
    "train on the cleaned dataset wine version 2",
    "is the facade experiment finished?",
    "train lightgbm on wine version 1 optimizing accuracy in experiment x",
    "build a model on wine version 1 with lightgbm, accuracy, experiment x",
    "train a new version of the model on wine v1, accuracy, experiment x",
    "retrain with the new version 2 of wine",
    "which version of wine should I use?",
    "which datasets are in the registry?",
]


@pytest.mark.parametrize(("text", "kind"), UNSUPPORTED)
def test_unsupported_changes_are_recognised_and_do_nothing(text: str, kind: str) -> None:
    assert unsupported_request(text) == kind
    decision, _ = parse_message(text)
    assert decision.intent == "unknown"
    assert "I can't do that" in decision.not_understood[0]


@pytest.mark.parametrize("text", BENIGN)
def test_benign_phrasings_are_not_taken_for_unsupported_changes(text: str) -> None:
    assert unsupported_request(text) is None


def test_a_model_that_calls_delete_runs_an_experiment_trains_nothing(tmp_path: Path) -> None:
    service, _ = make_service(tmp_path, [experiment_reply(experiment="mine")])
    result = service.send(None, "delete the failed runs in experiment mine")
    assert all_runs(service.settings) == [] and result.runs == []
    assert "no tool for" in result.sections["Plan"] and "mlflow runs delete" in result.sections["Plan"]


def test_offline_model_answers_a_note_request_without_training(tmp_path: Path) -> None:
    from graph_support import make_settings

    from agent.service import AgentService

    service = AgentService(make_settings(tmp_path), model="offline")
    first = service.send(None, "add a note to run 0123456789abcdef0123456789abcdef: rf baseline looks fine")
    again = service.send(first.thread_id, "breast_cancer version 1, roc_auc, experiment notes")
    assert all_runs(service.settings) == []  # the follow-up does not complete a "request" to train
    assert first.runs == [] and again.runs == []
