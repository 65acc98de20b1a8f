"""A user's request reaches their own training code: the offline model, the graph, the tuning loop, MLflow.

Real parts: the offline rule-based model, AgentService and its graph, MLflow on sqlite, the example
projects run as subprocesses on the local runtime, Optuna. The validation dry run itself is covered in
``tests/test_entrypoints.py``; here a registered project is marked validated by hand to keep tests short.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from graph_support import all_runs, make_settings
from mlflow.tracking import MlflowClient

from agent.grammar import parse_message
from agent.offline import OfflineChatModel
from agent.service import AgentService
from tools.core import tags as tag_keys
from tools.core.entrypoints import EntryPointRecord, EntryPointRegistry
from tools.core.settings import Settings

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize(
    ("text", "ref", "entry", "params"),
    [
        (
            "train my project churn-model@3 entry point main with lr=0.01 on breast_cancer v1",
            "churn-model@3",
            "main",
            {"lr": 0.01},
        ),
        (
            "tune 6 trials of my project xgboost-tabular@1 on breast_cancer version 1 optimizing roc_auc, "
            "experiment x",
            "xgboost-tabular@1",
            "main",
            {},
        ),
        (
            "run entry point main of xgboost-tabular@1 on breast_cancer@1 with max_depth=3 and "
            "learning_rate=0.2, experiment x",
            "xgboost-tabular@1",
            "main",
            {"max_depth": 3, "learning_rate": 0.2},
        ),
        ("use my project mlp-tabular@1", "mlp-tabular@1", "main", {}),
        (
            "tune my repo churn-model@3 (entry train) on wine@1 with 5 trials, experiment e",
            "churn-model@3",
            "train",
            {},
        ),
        ("train my project churn-model on breast_cancer@1, experiment e", "churn-model", "main", {}),
        (
            "train my project churn-model@latest on breast_cancer@1, experiment e",
            "churn-model@latest",
            "main",
            {},
        ),
    ],
)
def test_offline_model_reads_the_project_as_written(
    text: str, ref: str, entry: str, params: dict[str, Any]
) -> None:
    decision, _ = parse_message(text)
    assert decision.intent == "experiment" and decision.not_understood == [], decision
    request = decision.request
    assert request.entry_point is not None and request.model_family is None
    assert (request.entry_point.ref, request.entry_point.entry) == (ref, entry)
    assert request.params == params  # the params given, none dropped or invented


def test_half_understood_project_requests_are_not_acted_on() -> None:
    for text in (
        "train my project churn-model@3 on breast_cancer@1 with extra sparkle, experiment e",
        "train my project on breast_cancer@1, experiment e",  # no project name: 'project' is not understood
    ):
        decision, _ = parse_message(text)
        assert decision.not_understood, text


def test_start_training_run_needs_a_family_or_an_entry_point(tmp_path: Path) -> None:
    from tools.context import build_context
    from tools.guard.policy import Reject, guarded_call

    ctx = build_context(make_settings(tmp_path / "home"), session_id="s", requester="alice")
    args = {"dataset": "breast_cancer", "version": "1", "metric": "accuracy", "experiment": "e"}
    verdict = guarded_call("start_training_run", args, ctx).verdict
    assert isinstance(verdict, Reject) and "\n" not in verdict.reason
    assert "give model_family (a built-in family) or entry_point" in verdict.reason
    assert all_runs(ctx.settings) == []


def test_switching_a_thread_to_a_project_drops_the_last_codes_params_and_metric() -> None:
    from agent.nodes.intake import merge_followup
    from agent.state import ExperimentRequestDraft

    last = ExperimentRequestDraft(
        dataset="breast_cancer", version="1", model_family="lightgbm", metric="roc_auc", experiment="e",
        params={"num_leaves": 31},
    )  # fmt: skip
    decision, _ = parse_message("use my project mlp-tabular@1")
    merged = merge_followup(last, decision.request)
    assert merged.model_family is None and merged.entry_point is not None
    assert merged.entry_point.ref == "mlp-tabular@1" and merged.params == {} and merged.metric is None
    assert (merged.dataset, merged.version, merged.experiment) == ("breast_cancer", "1", "e")


# ---- through the service ----------------------------------------------------------------------------


@pytest.fixture
def settings(demo_home: Path, tmp_path: Path) -> Settings:
    home = tmp_path / "home"
    shutil.copytree(demo_home, home)
    return make_settings(home, local_launch="subprocess")


def _registered(settings: Settings, directory: Path, name: str) -> EntryPointRecord:
    registry = EntryPointRegistry.open(settings)
    record = registry.register(directory, name)
    return registry.set_status(record.ref, "validated", "test: the dry run is covered in test_entrypoints")


def _send(settings: Settings, text: str) -> Any:
    service = AgentService(settings, model=OfflineChatModel())
    try:
        return service.send(None, text)
    finally:
        service.close()


def _trials(settings: Settings) -> list[Any]:
    return [r for r in all_runs(settings) if r.data.tags.get(tag_keys.ROLE) == "trial"]


def _has_model(client: MlflowClient, run: Any) -> bool:
    found = client.search_logged_models(
        [run.info.experiment_id], filter_string=f"source_run_id='{run.info.run_id}'"
    )
    return bool(found)


def test_a_request_tunes_six_trials_of_the_xgboost_project(settings: Settings) -> None:
    record = _registered(settings, EXAMPLES / "xgboost-tabular", "xgb")
    result = _send(
        settings,
        "tune 6 trials of my project xgb@1 on breast_cancer version 1, n_estimators in [5, 20], "
        "2 in parallel, experiment byo-xgb",
    )
    assert result.status == "answered", result.answer
    assert "xgb@1 entry main" in result.sections["Plan"] and "xgb@1 expagent.yaml" in result.sections["Plan"]
    assert "roc_auc" in result.sections["Plan"]  # the metric came from the project's expagent.yaml
    assert "xgb@1 entry main" in result.sections["Summary"]
    client = MlflowClient(settings.resolved_tracking_uri)
    trials = _trials(settings)
    assert len(trials) == 6, result.answer
    for run in trials:
        tags = run.data.tags
        assert run.info.status == "FINISHED", tags.get("mlflow.note.content")
        assert 0.5 < run.data.metrics["val_roc_auc"] <= 1.0
        assert 5 <= int(run.data.params["n_estimators"]) <= 20
        assert tags[tag_keys.ENTRY_POINT] == "xgb@1" and tags[tag_keys.ENTRY_POINT_NAME] == "main"
        assert tags[tag_keys.ENTRY_POINT_TREE] == record.tree_sha256 and tags["seed"] == "42"
        assert "model_family" not in tags
        assert run.inputs.dataset_inputs and _has_model(client, run)
    (baseline,) = [r for r in all_runs(settings) if r.data.tags.get(tag_keys.ROLE) == "baseline"]
    assert baseline.info.status == "FINISHED" and baseline.data.params["n_estimators"] == "50"


def test_mlp_project_trials_are_pruned_on_their_epoch_metric(settings: Settings) -> None:
    _registered(settings, EXAMPLES / "mlp-tabular", "mlp")
    # Every trial runs 60 epochs (a fixed param), logging val_accuracy at each: seconds of epochs after
    # the process started, while the loop polls every 0.2 s. TPE (seed 42) draws lr 5e-5 for trial 2,
    # which leaves the network near chance, far below the median of trials 0 and 1 at every epoch.
    result = _send(
        settings,
        "tune 6 trials of my project mlp@1 on breast_cancer@1 with epochs=60, lr in [0.00001, 0.3], "
        "hidden in [4, 8], 2 in parallel, experiment byo-mlp",
    )
    assert result.status == "answered", result.answer
    client = MlflowClient(settings.resolved_tracking_uri)
    trials = _trials(settings)
    assert len(trials) == 6, result.answer
    assert all(r.data.params["epochs"] == "60" for r in trials)
    pruned = [r for r in trials if r.data.tags.get(tag_keys.CANCEL_KIND) == "pruned"]
    assert pruned, [(r.info.status, r.data.params, r.data.metrics) for r in trials]
    for run in pruned:
        assert run.info.status == "KILLED"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
        assert steps and max(steps) < 60  # stopped mid-training, on its per-epoch metric
    assert any(r.info.status == "FINISHED" for r in trials)


def test_a_project_changed_after_registration_is_refused_before_any_run(
    settings: Settings, tmp_path: Path
) -> None:
    project = tmp_path / "churn"
    shutil.copytree(EXAMPLES / "xgboost-tabular", project)
    _registered(settings, project, "churn-model")
    (project / "train.py").write_text((project / "train.py").read_text() + "\n# edited\n")
    result = _send(settings, "train my project churn-model@1 on breast_cancer@1, experiment byo-changed")
    assert "changed since registration" in result.answer and "nothing was launched" in result.answer
    assert any(e.rule == "entry_points" for e in result.policy_events)
    assert all_runs(settings) == []


@pytest.mark.parametrize(
    ("ref", "words"),
    [
        ("churn-model", "needs an explicit version"),
        ("churn-model@latest", "needs an explicit version"),
        ("churn-model@7", "no entry point churn-model@7"),
        ("nobody@1", "No project 'nobody' is registered"),
    ],
)
def test_unusable_project_references_get_a_specific_answer(settings: Settings, ref: str, words: str) -> None:
    registry = EntryPointRegistry.open(settings)
    registry.register(EXAMPLES / "xgboost-tabular", "churn-model")  # churn-model@1, not validated
    result = _send(settings, f"train my project {ref} on breast_cancer@1, experiment byo-bad")
    assert words in result.answer, result.answer
    assert all_runs(settings) == []


def test_an_undeclared_param_or_unvalidated_project_is_refused(settings: Settings) -> None:
    registry = EntryPointRegistry.open(settings)
    registry.register(EXAMPLES / "xgboost-tabular", "churn-model")
    result = _send(settings, "train my project churn-model@1 on breast_cancer@1, experiment byo-bad")
    assert "has status 'registered'" in result.answer
    assert "entrypoints validate churn-model@1" in result.answer
    registry.set_status("churn-model@1", "validated", "test")
    result = _send(settings, "train my project churn-model@1 with depth=3 on breast_cancer@1, experiment e")
    assert "declares no param depth" in result.answer, result.answer
    assert all_runs(settings) == []
