"""Training entry points (MLflow Projects): registry pins, the guard, the contract, registry touches.

Real parts only: MLflow on sqlite, the projects run as real subprocesses (``python`` of this venv), the
local runtime for the guarded launch.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from agent.cli import app
from tools.context import ToolContext, build_context
from tools.core.audit import AuditLog
from tools.core.entrypoints import EntryPointRegistry
from tools.core.settings import Settings
from tools.guard.policy import Reject, guarded_call
from tools.training.entrypoint_validation import validate_entry_point

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

MLPROJECT = """\
name: tiny
entry_points:
  main:
    parameters:
      lr: {type: float, default: 0.1}
    command: "python train.py --lr {lr}"
"""
# Logs what the contract asks for, minus what a test leaves out (a tiny sklearn model keeps it fast).
SCRIPT = """\
import argparse, os
import mlflow, pandas as pd
from sklearn.dummy import DummyClassifier
parser = argparse.ArgumentParser(); parser.add_argument("--lr", type=float)
args = parser.parse_args()
frame = pd.read_csv(os.environ["EXPAGENT_DATASET_PATH"])
with mlflow.start_run():
    mlflow.log_param("lr", args.lr)
    mlflow.log_input(mlflow.data.from_pandas(frame, name="d"), context="training")
    {metric}
    target = os.environ["EXPAGENT_DATASET_TARGET"]
    model = DummyClassifier().fit(frame.drop(columns=[target]), frame[target])
    info = mlflow.sklearn.log_model(
        model, name="model", serialization_format="cloudpickle", pip_requirements=["scikit-learn"]
    )
    {register}
"""


@pytest.fixture
def ctx(demo_home: Path, tmp_path: Path) -> ToolContext:
    home = tmp_path / "home"
    shutil.copytree(demo_home, home)
    return build_context(Settings(home=home, trace=False), session_id="ep-1", requester="alice")


def _project(root: Path, metric: str = 'mlflow.log_metric("val_accuracy", 0.9)', register: str = "") -> Path:
    root.mkdir(parents=True)
    (root / "MLproject").write_text(MLPROJECT)
    (root / "expagent.yaml").write_text("primary_metric: val_accuracy\ndirection: maximize\n")
    (root / "train.py").write_text(SCRIPT.format(metric=metric, register=register))
    return root


def _runs(settings: Settings) -> list[Any]:
    client = MlflowClient(settings.resolved_tracking_uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return list(client.search_runs(ids)) if ids else []


def _call(ref: str, **overrides: Any) -> dict[str, Any]:
    base = {"dataset": "breast_cancer", "version": "1", "model_family": "logistic_regression",
            "metric": "accuracy", "experiment": "ep"}  # fmt: skip
    base["entry_point"] = {"ref": ref, "entry": "main"}
    return {**base, **overrides}


def test_changed_tree_is_rejected_before_any_run_exists(ctx: ToolContext, tmp_path: Path) -> None:
    registry = EntryPointRegistry.open(ctx.settings)
    record = registry.register(_project(tmp_path / "p"), "tiny")
    registry.set_status(record.ref, "validated", "test")
    (tmp_path / "p" / "train.py").write_text("print('changed')\n")
    outcome = guarded_call("start_training_run", _call("tiny@1"), ctx)
    assert isinstance(outcome.verdict, Reject) and outcome.verdict.rule == "entry_points"
    assert "changed since registration" in outcome.verdict.reason
    assert _runs(ctx.settings) == []
    # No version, an unknown version, an unvalidated version and an undeclared param: rejected alike.
    registry.register(tmp_path / "p", "tiny")  # tiny@2, the changed tree, status registered
    rejections = {
        "tiny": ({}, "explicit version"),
        "tiny@9": ({}, "no entry point tiny@9"),
        "tiny@2": ({}, "has status 'registered'"),
    }
    for ref, (params, words) in rejections.items():
        verdict = guarded_call("start_training_run", _call(ref, params=params), ctx).verdict
        assert isinstance(verdict, Reject) and words in verdict.reason, verdict
    registry.set_status("tiny@2", "validated", "test")
    verdict = guarded_call("start_training_run", _call("tiny@2", params={"cmd": "rm -rf /"}), ctx).verdict
    assert isinstance(verdict, Reject) and "declares no param cmd" in verdict.reason, verdict
    assert _runs(ctx.settings) == []


def test_script_forgetting_its_metric_ends_failed_with_a_contract_note(
    ctx: ToolContext, tmp_path: Path
) -> None:
    registry = EntryPointRegistry.open(ctx.settings)
    registry.register(_project(tmp_path / "p", metric="pass"), "tiny")
    problem = validate_entry_point(ctx.settings, "tiny@1", "breast_cancer", "1")
    assert problem is not None and "contract" in problem and "metric val_accuracy" in problem
    (run,) = _runs(ctx.settings)
    assert run.info.status == "FAILED"
    note = run.data.tags["mlflow.note.content"]
    assert note.startswith("contract:") and "metric val_accuracy" in note and "param" not in note
    assert registry.resolve("tiny@1").status == "registered"


def test_script_registering_a_model_is_caught_reported_and_blocked(ctx: ToolContext, tmp_path: Path) -> None:
    register = 'mlflow.register_model(info.model_uri, "sneaky")'
    registry = EntryPointRegistry.open(ctx.settings)
    registry.register(_project(tmp_path / "p", register=register), "tiny")
    problem = validate_entry_point(ctx.settings, "tiny@1", "breast_cancer", "1")
    assert problem is not None and "policy violation" in problem and "sneaky v1" in problem
    (run,) = _runs(ctx.settings)
    assert run.info.status == "FAILED" and "model registry" in run.data.tags["mlflow.note.content"]
    record = registry.resolve("tiny@1")
    assert record.status == "blocked" and "sneaky" in record.status_reason
    violations = [
        e for e in AuditLog(ctx.settings.audit_log_path).read() if e.get("kind") == "policy_violation"
    ]
    assert (
        violations and violations[0]["entry_point"] == "tiny@1" and violations[0]["run_id"] == run.info.run_id
    )
    verdict = guarded_call("start_training_run", _call("tiny@1"), ctx).verdict
    assert isinstance(verdict, Reject) and "blocked" in verdict.reason


def test_mlp_example_validates_then_runs_guarded_on_the_local_runtime(ctx: ToolContext) -> None:
    home = str(ctx.settings.home)
    command = ["entrypoints", "register", str(EXAMPLES / "mlp-tabular"), "--name", "mlp"]
    result = CliRunner().invoke(app, [*command, "--validate-on", "breast_cancer@1", "--json", "--home", home])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output[result.output.index("{") :])
    assert shown["status"] == "validated" and shown["ref"] == "mlp@1" and len(shown["tree_sha256"]) == 64
    outcome = guarded_call("start_training_run", _call("mlp@1", params={"epochs": 3, "hidden": 8}), ctx)
    assert outcome.allowed and outcome.result is not None, outcome
    (info,) = ctx.runtime.wait([outcome.result["job_id"]], timeout=300)
    client = MlflowClient(ctx.settings.resolved_tracking_uri)
    run = client.get_run(outcome.result["run_id"])
    assert run.info.status == "FINISHED", run.data.tags.get("mlflow.note.content")
    assert run.data.tags["expagent.entry_point"] == "mlp@1" and run.data.params["epochs"] == "3"
    history = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert [m.step for m in history] == [1, 2, 3] and 0.5 < history[-1].value <= 1.0
    assert client.search_logged_models(
        [run.info.experiment_id], filter_string=f"source_run_id='{run.info.run_id}'"
    )
    assert run.inputs.dataset_inputs and run.data.tags["seed"] == "42"


def test_tuning_over_entry_point_params_runs_every_trial_finished(ctx: ToolContext) -> None:
    from tools.core.tracking import create_parent_run
    from tools.tuning.study import StudySettings, run_study

    registry = EntryPointRegistry.open(ctx.settings)
    record = registry.register(EXAMPLES / "xgboost-tabular", "xgb")
    registry.set_status(record.ref, "validated", "test: the dry run is covered above")
    space = {**record.config.search_space, "n_estimators": {"type": "int", "low": 5, "high": 20}}
    session = create_parent_run(ctx, "ep", "session", run_name="session")
    settings = StudySettings.model_validate({
        "study_name": "ep-study", "session_id": ctx.session_id, "parent_run_id": session,
        "dataset": "breast_cancer", "version": "1", "model_family": "logistic_regression",
        "metric": "roc_auc", "experiment": "ep", "entry_point": {"ref": "xgb@1", "entry": "main"},
        "search_space": space,
        "n_trials": 2, "parallelism": 1, "prune": False, "poll_seconds": 0.05, "warm_start": False,
    })  # fmt: skip
    result = run_study(ctx, settings, None)
    assert [t.state for t in result.trials] == ["COMPLETE", "COMPLETE"], result
    for trial in result.trials:
        run = ctx.tracking.get_run(trial.run_id)
        assert run.info.status == "FINISHED" and run.data.tags["expagent.entry_point"] == "xgb@1"
        assert (
            0.5 < run.data.metrics["val_roc_auc"] <= 1.0 and 5 <= int(run.data.params["n_estimators"]) <= 20
        )


def test_tuning_stops_at_the_first_trial_that_touches_the_registry(ctx: ToolContext, tmp_path: Path) -> None:
    from tools.core.tracking import create_parent_run
    from tools.tuning.study import StudySettings, run_study

    register = 'mlflow.register_model(info.model_uri, "sneaky")'
    registry = EntryPointRegistry.open(ctx.settings)
    record = registry.register(_project(tmp_path / "p", register=register), "tiny")
    registry.set_status(record.ref, "validated", "test: the dry run is covered above")
    session = create_parent_run(ctx, "ep", "session", run_name="session")
    settings = StudySettings.model_validate({
        "study_name": "ep-sneaky", "session_id": ctx.session_id, "parent_run_id": session,
        "dataset": "breast_cancer", "version": "1", "model_family": "logistic_regression",
        "metric": "accuracy", "experiment": "ep", "entry_point": {"ref": "tiny@1", "entry": "main"},
        "search_space": {"lr": {"type": "float", "low": 0.01, "high": 1.0}},
        "n_trials": 4, "parallelism": 1, "prune": False, "poll_seconds": 0.05, "warm_start": False,
    })  # fmt: skip
    result = run_study(ctx, settings, None)
    launched = [t for t in result.trials if t.run_id]
    assert len(launched) == 1 and launched[0].state == "FAIL", result.trials
    assert "touched the model registry (sneaky v1)" in (launched[0].note or "")
    assert result.stop_reason == "rejected" and "blocked" in result.stop_detail, result
    violations = [
        e for e in AuditLog(ctx.settings.audit_log_path).read() if e.get("kind") == "policy_violation"
    ]
    assert len(violations) == 1 and violations[0]["run_id"] == launched[0].run_id
    assert [v.version for v in ctx.tracking.search_model_versions("name='sneaky'")] == [1]


def test_user_code_gets_the_data_without_its_pii_columns_in_a_copy_deleted_after_the_run(
    ctx: ToolContext, tmp_path: Path
) -> None:
    seen = (
        'mlflow.log_metric("val_accuracy", 0.9); mlflow.set_tag("columns", ",".join(frame.columns)); '
        'mlflow.set_tag("seen_path", os.environ["EXPAGENT_DATASET_PATH"])'
    )
    registry = EntryPointRegistry.open(ctx.settings)
    record = registry.register(_project(tmp_path / "p", metric=seen), "tiny")
    registry.set_status(record.ref, "validated", "test: the dry run is covered above")
    call = _call(record.ref, dataset="customer_churn", metric="accuracy")
    outcome = guarded_call("start_training_run", call, ctx)
    assert outcome.allowed and outcome.result is not None, outcome
    ctx.runtime.wait([outcome.result["job_id"]], timeout=300)
    run = ctx.tracking.get_run(outcome.result["run_id"])
    assert run.info.status == "FINISHED", run.data.tags.get("mlflow.note.content")
    columns = run.data.tags["columns"].split(",")
    assert "churned" in columns and "tenure_months" in columns and not {"email", "phone"} & set(columns)
    seen_path = Path(run.data.tags["seen_path"])
    assert not seen_path.exists() and not seen_path.is_relative_to(ctx.settings.home)  # a private copy, gone
