"""The guard's allowlists and provenance checks, each bypass with its benign twin (through the real tool)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from tools.context import ToolContext, build_context
from tools.core.settings import Settings
from tools.core.store_seed import seed_new_store
from tools.core.text import normalize
from tools.guard.allowlists import allowed_hyperparameters
from tools.guard.policy import Reject, guarded_call


@pytest.fixture
def ctx(demo_home: Path, tmp_path: Path) -> ToolContext:
    home = tmp_path / "home"
    shutil.copytree(demo_home, home)
    return build_context(Settings(home=home, trace=False), session_id="sec-1", requester="alice")


def args(**overrides: Any) -> dict[str, Any]:
    base = {"dataset": "breast_cancer", "version": "1", "model_family": "lightgbm", "metric": "roc_auc"}
    return {**base, "experiment": "sec", "params": {"n_estimators": 5}, **overrides}


def _runs(ctx: ToolContext) -> list[Any]:
    seed_new_store(ctx.settings.resolved_tracking_uri)  # a store nothing wrote to yet: no migrations
    client = MlflowClient(ctx.settings.resolved_tracking_uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return list(client.search_runs(ids)) if ids else []


def rejected(ctx: ToolContext, call_args: dict[str, Any]) -> Reject:
    outcome = guarded_call("start_training_run", call_args, ctx)
    assert isinstance(outcome.verdict, Reject), outcome
    return outcome.verdict


# ---- hyperparameters: allowlist, scalars, no files, no threads ---------------------------------------


@pytest.mark.parametrize(
    ("params", "text"),
    [
        ({"forcedsplits_filename": "/etc/passwd"}, "not a lightgbm hyperparameter"),
        ({"input_model": "model.txt"}, "not a lightgbm hyperparameter"),
        ({"machines": "10.0.0.1:12400"}, "not a lightgbm hyperparameter"),
        ({"num_threads": 64}, "set by the runtime from resources.cpu"),
        ({"nthread": 32}, "set by the runtime from resources.cpu"),
        ({"n_jobs": 8}, "set by the runtime from resources.cpu"),
        ({"api_key": "x"}, "not a lightgbm hyperparameter"),
        ({"boosting": "../../etc/passwd"}, "looks like a path or URL"),
        ({"boosting": "https://evil.example/x"}, "looks like a path or URL"),
    ],
)
def test_unknown_owned_or_file_valued_params_are_rejected_before_any_run(
    ctx: ToolContext, params: dict[str, Any], text: str
) -> None:
    verdict = rejected(ctx, args(params=params))
    assert verdict.rule == "allowlist" and text in verdict.reason
    assert _runs(ctx) == []


def test_a_nested_param_is_one_clear_sentence_not_a_validation_dump(ctx: ToolContext) -> None:
    verdict = rejected(ctx, args(params={"num_leaves": {"a": 1}}))
    assert verdict.rule == "invalid_arguments"
    assert verdict.reason == (
        "invalid arguments for start_training_run: "
        "params.num_leaves: must be a single number, string or boolean"
    )


@pytest.mark.parametrize(
    ("family", "params"),
    [
        ("lightgbm", {"num_leaves": 15, "learning_rate": 0.1, "min_child_samples": 5, "lambda_l1": 0.1}),
        ("lightgbm", {"bagging_fraction": 0.8, "subsample_freq": 1, "boosting": "gbdt"}),
        ("random_forest", {"n_estimators": 10, "max_depth": 3, "criterion": "entropy"}),
        ("hist_gradient_boosting", {"max_iter": 10, "learning_rate": 0.1}),
        ("logistic_regression", {"C": 0.5}),
    ],
)
def test_documented_hyperparameters_pass(ctx: ToolContext, family: str, params: dict[str, Any]) -> None:
    outcome = guarded_call("start_training_run", args(model_family=family, params=params), ctx)
    assert outcome.ok, outcome
    ctx.runtime.wait([outcome.result["job_id"]], timeout=120)  # type: ignore[index]


def test_the_allowlist_file_matches_the_installed_libraries() -> None:
    from tools.training.hyperparameters import generate

    stored = {family: sorted(names) for family, names in allowed_hyperparameters().items()}
    assert stored == generate(), "run `make hyperparameters` after changing the pinned libraries"


# ---- tags: prefixes, reserved keys in any case, deployment words however spelled ----------------------


@pytest.mark.parametrize(
    "tags",
    [
        {"modelalias": "x"},
        {"team.role": "champion"},
        {"team.env": "staging"},
        {"autodeploy": "true"},
        {"team.production_ready": "yes"},
        {"team.env": "pro\u200bduction"},
        {"team.d\u0435ploy": "yes"},
        {"MLflow.user": "root"},
        {"EXPAGENT.session": "other"},
        {"owner": "alice"},
    ],
)
def test_tags_outside_the_allowlist_or_with_deployment_meaning_are_rejected(
    ctx: ToolContext, tags: dict[str, str]
) -> None:
    verdict = rejected(ctx, args(tags=tags))
    assert verdict.rule in ("allowlist", "no_deployment")
    assert _runs(ctx) == []


def test_team_tags_and_a_description_are_written(ctx: ToolContext) -> None:
    tags = {
        "team.owner": "alice",
        "project": "churn",
        "mlflow.note.content": "rf baseline for the churn review",
    }
    outcome = guarded_call("start_training_run", args(tags=tags), ctx)
    assert outcome.ok, outcome
    ctx.runtime.wait([outcome.result["job_id"]], timeout=120)  # type: ignore[index]
    (run,) = _runs(ctx)
    assert run.data.tags["team.owner"] == "alice" and run.data.tags["project"] == "churn"


def test_normalize_folds_what_a_reader_cannot_tell_apart() -> None:
    assert normalize("d\u0435ploy") == "deploy"
    assert normalize("pro\u200bduc\u200dtion") == "production"
    assert normalize("\uff50\uff52\uff4f\uff44") == "prod"  # fullwidth letters (NFKC)
    assert normalize("MLflow.User") == "mlflow.user"


# ---- provenance and the workspace ------------------------------------------------------------------


@pytest.mark.parametrize("parent", ["0" * 32, "../../etc/passwd"])
def test_a_parent_run_that_does_not_exist_is_refused_and_nothing_is_created(
    ctx: ToolContext, parent: str
) -> None:
    outcome = guarded_call("start_training_run", args(parent_run_id=parent), ctx)
    assert not outcome.ok and "parent_run_id" in (outcome.error or "")
    assert _runs(ctx) == []


def test_a_parent_run_of_another_session_is_refused(ctx: ToolContext) -> None:
    other = build_context(ctx.settings, session_id="someone-else", requester="bob")
    first = guarded_call("start_training_run", args(), other)
    assert first.ok
    other.runtime.wait([first.result["job_id"]], timeout=120)  # type: ignore[index]
    outcome = guarded_call("start_training_run", args(parent_run_id=first.result["run_id"]), ctx)  # type: ignore[index]
    assert not outcome.ok and "not a run of this session" in (outcome.error or "")
    assert len(_runs(ctx)) == 1


def test_the_default_experiment_never_writes_to_mlruns_of_the_working_directory(
    ctx: ToolContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    outcome = guarded_call("start_training_run", args(experiment="Default"), ctx)
    assert not outcome.ok and "outside the workspace" in (outcome.error or "")
    assert not (tmp_path / "mlruns").exists()
    assert _runs(ctx) == []
