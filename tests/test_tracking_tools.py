"""MLflow helpers and the run tools (search_runs, get_run, log_note) against a real sqlite store."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest
from mlflow.entities import Metric, Param

from tools.context import ToolContext, build_context
from tools.core import tracking
from tools.core.settings import Settings
from tools.core.specs import CancellationRecord, Resources, TrainingSpec
from tools.guard.policy import guarded_call

EXPERIMENT = "tracking-tests"


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> ToolContext:
    settings = Settings(home=tmp_path_factory.mktemp("tracking"))
    return build_context(settings, requester="bob", session_id="s-1")


def _spec(**overrides: Any) -> TrainingSpec:
    base = {"dataset": "breast_cancer", "version": "1", "model_family": "lightgbm", "metric": "roc_auc",
            "experiment": EXPERIMENT}  # fmt: skip
    return TrainingSpec.model_validate({**base, **overrides})


def _finished_run(ctx: ToolContext, roc_auc: float, family: str = "lightgbm", **spec: Any) -> str:
    run_id = tracking.create_run(ctx, _spec(model_family=family, **spec))
    ctx.tracking.log_batch(
        run_id, metrics=[Metric("roc_auc", roc_auc, 0, 0)], params=[Param("model_family", family)]
    )
    tracking.end_run(ctx, run_id, "FINISHED")
    return run_id


def _call(ctx: ToolContext, name: str, args: dict[str, Any]) -> Any:
    outcome = guarded_call(name, args, ctx)
    assert outcome.allowed, outcome.verdict
    return outcome


def _artifact(ctx: ToolContext, run_id: str, name: str) -> str:
    root = ctx.tracking.get_run(run_id).info.artifact_uri.removeprefix("file://")
    return Path(root, name).read_text()


def test_experiments_keep_artifacts_in_the_workspace(ctx: ToolContext) -> None:
    first = tracking.ensure_experiment(ctx.tracking, "artifacts here")
    assert tracking.ensure_experiment(ctx.tracking, "artifacts here") == first
    location = ctx.tracking.get_experiment(first).artifact_location
    assert Path(location.removeprefix("file://")).parent == ctx.settings.artifact_root


def test_a_workspace_whose_path_has_url_characters_keeps_its_artifacts_inside(tmp_path: Path) -> None:
    # SQLAlchemy reads a sqlite:/// path as written: '%20' is three characters and '#' is no fragment.
    home = tmp_path / "team a%20b#c"
    home.mkdir()
    client = tracking.make_client(Settings(home=home))
    experiment_id = tracking.ensure_experiment(client, "odd-path")  # no root given: the store's own
    location = urlparse(client.get_experiment(experiment_id).artifact_location)
    assert (home / "mlflow.db").is_file()
    assert Path(unquote(location.path)).parent == (home / "artifacts").resolve(), location
    run_id = client.create_run(experiment_id).info.run_id
    client.log_text(run_id, "hello", "note.txt")
    [written] = (home / "artifacts").rglob("note.txt")
    assert written.read_text() == "hello"
    from evals.observe import snapshot_registry

    assert snapshot_registry(client) == []  # the harness reads the same file MLflow writes


def test_deleted_experiment_is_a_clear_error(ctx: ToolContext) -> None:
    ctx.tracking.delete_experiment(tracking.ensure_experiment(ctx.tracking, "gone"))
    with pytest.raises(ValueError, match="was deleted"):
        tracking.ensure_experiment(ctx.tracking, "gone")


def test_experiment_deleted_after_its_first_run_is_still_a_clear_error(ctx: ToolContext) -> None:
    spec = _spec(experiment="deleted later")
    first = tracking.create_mlflow_run(ctx, spec)
    assert first.info.experiment_id == tracking.ensure_experiment(ctx.tracking, "deleted later")
    tracking.end_run(ctx, first.info.run_id, "FINISHED")
    ctx.tracking.delete_experiment(first.info.experiment_id)
    with pytest.raises(ValueError, match="was deleted"):
        tracking.create_run(ctx, spec)
    with pytest.raises(ValueError, match="was deleted"):
        tracking.create_parent_run(ctx, "deleted later", "tuning")
    ctx.tracking.restore_experiment(first.info.experiment_id)
    again = tracking.create_mlflow_run(ctx, spec)
    assert again.info.experiment_id == first.info.experiment_id
    tracking.end_run(ctx, again.info.run_id, "FINISHED")


def test_purged_experiment_is_created_again(ctx: ToolContext) -> None:
    spec = _spec(experiment="purged later")
    first = tracking.create_mlflow_run(ctx, spec)
    ctx.tracking.delete_experiment(first.info.experiment_id)
    ctx.tracking._tracking_client.store._hard_delete_experiment(first.info.experiment_id)  # `mlflow gc`
    again = tracking.create_mlflow_run(ctx, spec)  # sqlite may hand out the purged ID again
    recreated = ctx.tracking.get_experiment_by_name("purged later")
    assert recreated is not None and recreated.experiment_id == again.info.experiment_id
    tracking.end_run(ctx, again.info.run_id, "FINISHED")


def test_created_run_carries_expagent_tags_and_nests_under_its_parent(ctx: ToolContext) -> None:
    parent = tracking.create_parent_run(ctx, EXPERIMENT, "tuning", run_name="study")
    run_id = tracking.create_run(ctx, _spec(parent_run_id=parent, trial_number=3, role="trial", seed=5))
    run = ctx.tracking.get_run(run_id)
    tags = run.data.tags
    assert run.info.status == "RUNNING"
    assert tags["mlflow.parentRunId"] == parent and tags["expagent.trial_number"] == "3"
    assert tags["expagent.managed"] == "true" and tags["expagent.role"] == "trial"
    assert tags["expagent.session"] == "s-1" and tags["expagent.requester"] == "bob"
    assert tags["dataset.sha256"] == ctx.registry.get("breast_cancer", "1").sha256
    assert tags["seed"] == "5" and "git_sha" in tags and "python_version" in tags
    tracking.end_run(ctx, run_id, "FINISHED")
    tracking.end_run(ctx, parent, "FINISHED")


def test_secrets_in_user_tags_are_redacted_and_reserved_keys_refused(ctx: ToolContext) -> None:
    run_id = tracking.create_run(ctx, _spec(tags={"note": "token sk-abcdefghijklmnopqrstuvwxyz123456"}))
    assert "sk-abcdefghijklmnop" not in ctx.tracking.get_run(run_id).data.tags["note"]
    tracking.end_run(ctx, run_id, "FINISHED")
    with pytest.raises(ValueError, match="reserved"):
        tracking.create_run(ctx, _spec(tags={"mlflow.runName": "x"}))


def test_end_run_never_overwrites_an_ended_run(ctx: ToolContext) -> None:
    run_id = _finished_run(ctx, 0.9)
    assert tracking.end_run(ctx, run_id, "FAILED", note="late observer") is False
    run = ctx.tracking.get_run(run_id)
    assert run.info.status == "FINISHED" and "late observer" not in run.data.tags["mlflow.note.content"]


def test_end_run_attaches_redacted_note_and_artifacts(ctx: ToolContext) -> None:
    run_id = tracking.create_run(ctx, _spec())
    ended = tracking.end_run(
        ctx, run_id, "FAILED", note="mail carol@example.com", artifacts={"err.txt": "password=hunter2"}
    )
    run = ctx.tracking.get_run(run_id)
    assert ended and run.info.status == "FAILED"
    assert "carol@example.com" not in run.data.tags["mlflow.note.content"]
    assert "hunter2" not in _artifact(ctx, run_id, "err.txt")


def test_write_cancellation_records_who_why_and_usage(ctx: ToolContext) -> None:
    run_id = tracking.create_run(ctx, _spec())
    record = CancellationRecord(
        run_id=run_id, job_id="local-x", cancelled_by="watchdog", reason="ran too long",
        cancelled_at=datetime.now(UTC), wall_seconds=12.5, cpu_seconds=11.0, resources=Resources(cpu=2),
        kind="timeout",
    )  # fmt: skip
    tracking.write_cancellation(ctx.tracking, record)
    run = ctx.tracking.get_run(run_id)
    assert run.info.status == "KILLED" and run.data.tags["expagent.cancel_kind"] == "timeout"
    written = json.loads(_artifact(ctx, run_id, "cancellation.json"))
    assert written["cancelled_by"] == "watchdog" and written["cpu_seconds"] == 11.0
    assert written["resources"]["cpu"] == 2


def test_search_runs_orders_best_first_and_filters(ctx: ToolContext) -> None:
    _finished_run(ctx, 0.91)
    _finished_run(ctx, 0.97)
    _finished_run(ctx, 0.80, family="random_forest")
    outcome = _call(ctx, "search_runs", {"experiment": EXPERIMENT, "order_by": "roc_auc", "max_results": 2})
    runs = outcome.result["runs"]
    assert [r["metrics"]["roc_auc"] for r in runs] == [0.97, 0.91]
    assert outcome.result["more"] is True  # a third run matches: the answer must not say "2 runs"
    assert runs[0]["dataset"] == "breast_cancer@1" and runs[0]["ui_url"].endswith(runs[0]["run_id"])
    worst = _call(ctx, "search_runs", {"experiment": EXPERIMENT, "order_by": "roc_auc", "direction": "asc",
                                       "filter": "params.model_family = 'random_forest'"})  # fmt: skip
    assert [r["metrics"]["roc_auc"] for r in worst.result["runs"]] == [0.80]
    assert worst.result["more"] is False


def test_search_runs_errors_say_what_to_fix(ctx: ToolContext) -> None:
    unknown = _call(ctx, "search_runs", {"experiment": "nope"})
    assert (
        unknown.error and "no MLflow experiment named 'nope'" in unknown.error and EXPERIMENT in unknown.error
    )
    bad = _call(ctx, "search_runs", {"experiment": EXPERIMENT, "filter": "metrics.roc_auc >>> 1"})
    assert bad.error and "Example filter" in bad.error
    too_many = guarded_call("search_runs", {"experiment": EXPERIMENT, "max_results": 500}, ctx)
    assert not too_many.allowed


def test_get_run_details_and_unknown_id(ctx: ToolContext) -> None:
    run_id = _finished_run(ctx, 0.88)
    detail = _call(ctx, "get_run", {"run_id": run_id}).result
    assert detail["status"] == "FINISHED" and detail["metrics"] == {"roc_auc": 0.88}
    assert detail["tags"]["expagent.managed"] == "true" and detail["model_uri"] is None
    missing = _call(ctx, "get_run", {"run_id": "0" * 32})
    assert missing.error and "no MLflow run with ID" in missing.error
    malformed = _call(ctx, "get_run", {"run_id": "latest"})
    assert malformed.error and "not an MLflow run ID" in malformed.error


def test_log_note_appends_a_redacted_note_to_the_description_of_managed_runs_only(ctx: ToolContext) -> None:
    run_id = _finished_run(ctx, 0.9)
    before = ctx.tracking.get_run(run_id).data.tags.get("mlflow.note.content", "")
    artifacts_before = ctx.tracking.list_artifacts(run_id)
    note = _call(
        ctx, "log_note", {"run_id": run_id[:10], "text": "ask dave@example.com", "as_tag": True}
    ).result
    assert note["run_id"] == run_id and note["tag"] == "mlflow.note.content" and note["tagged"]
    description = ctx.tracking.get_run(run_id).data.tags["mlflow.note.content"]
    assert description.startswith(before) and "ask" in description and "(bob," in description
    assert "dave@example.com" not in description
    assert "dave@example.com" not in ctx.tracking.get_run(run_id).data.tags["expagent.note"]
    assert ctx.tracking.list_artifacts(run_id) == artifacts_before  # only the description changed
    foreign = ctx.tracking.create_run(tracking.ensure_experiment(ctx.tracking, EXPERIMENT)).info.run_id
    refused = _call(ctx, "log_note", {"run_id": foreign, "text": "hello"})
    assert refused.error and "not launched by expagent" in refused.error
    assert "mlflow.note.content" not in ctx.tracking.get_run(foreign).data.tags


def test_ui_url_points_at_the_run() -> None:
    settings = Settings(mlflow_ui_base="http://127.0.0.1:5001/")
    assert tracking.ui_url(settings, "3", "abc") == "http://127.0.0.1:5001/#/experiments/3/runs/abc"
    assert tracking.ui_url(settings, "3") == "http://127.0.0.1:5001/#/experiments/3"


def test_expagent_ui_serves_the_workspace_store_on_localhost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from agent import cli

    calls: list[list[str]] = []
    monkeypatch.setenv("EXPAGENT_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr("os.execvp", lambda path, args: calls.append(args))
    result = CliRunner().invoke(cli.app, ["ui", "--port", "5123"])
    assert result.exit_code == 0, result.output
    (command,) = calls
    assert command[1] == "ui" and command[-4:] == ["--host", "127.0.0.1", "--port", "5123"]
    assert command[command.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert (
        command[command.index("--default-artifact-root") + 1] == (tmp_path / "artifacts").resolve().as_uri()
    )
