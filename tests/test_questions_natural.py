"""The questions people ask about their runs (issue #14), against a real MLflow sqlite store.

Tools: short run IDs, why a run failed, its training log, what is running, which experiments exist,
comparing runs (with dataset/split warnings), notes. Then the offline model end to end through
``AgentService``, and search-space edits in plain words.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest
from graph_support import all_runs, make_settings
from mlflow.entities import Metric, Param, RunTag
from mlflow.store.tracking import sqlalchemy_store

from agent.grammar import parse_message, parse_question
from agent.grammar.notes import note_request
from tools.context import ToolContext, build_context
from tools.core import tracking
from tools.core.run_refs import resolve_run_id
from tools.guard.policy import guarded_call
from tools.tuning.space import SearchSpaceError, load_search_space

TRACEBACK = (
    'Traceback (most recent call last):\n  File "trainer.py", line 1, in run\n'
    "ValueError: the target has a single class\n"
)
SPLIT = {"split.train_sha256": "a" * 64, "split.val_sha256": "b" * 64, "split.test_sha256": "c" * 64}


@pytest.fixture
def ctx(tmp_path: Path) -> ToolContext:
    return build_context(make_settings(tmp_path / "ws"), requester="alice", session_id="s-q")


def _run(
    ctx: ToolContext, experiment: str, status: str = "FINISHED", params: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None, tags: dict[str, str] | None = None,
    artifacts: dict[str, str] | None = None,
) -> str:  # fmt: skip
    client = ctx.tracking
    experiment_id = tracking.ensure_experiment(client, experiment)
    run_id = client.create_run(experiment_id).info.run_id
    all_tags = {"expagent.managed": "true", "dataset.name": "breast_cancer", "dataset.version": "1", **SPLIT}
    client.log_batch(
        run_id,
        metrics=[Metric(k, v, 0, 0) for k, v in (metrics or {}).items()],
        params=[Param(k, str(v)) for k, v in (params or {}).items()],
        tags=[RunTag(k, v) for k, v in {**all_tags, **(tags or {})}.items()],
    )
    for path, text in (artifacts or {}).items():
        client.log_text(run_id, text, path)
    if status != "RUNNING":
        client.set_terminated(run_id, status)
    return run_id


def _call(ctx: ToolContext, name: str, args: dict[str, Any]) -> dict[str, Any]:
    outcome = guarded_call(name, args, ctx)
    assert outcome.allowed and outcome.error is None and outcome.result is not None, outcome
    return outcome.result


def _error(ctx: ToolContext, name: str, args: dict[str, Any]) -> str:
    outcome = guarded_call(name, args, ctx)
    assert outcome.error, outcome.result
    return outcome.error


# ---- short run IDs ----------------------------------------------------------------------------------


def test_a_unique_prefix_names_a_run_and_an_ambiguous_one_lists_the_candidates(ctx: ToolContext) -> None:
    first, second = _run(ctx, "ids"), _run(ctx, "ids")
    assert resolve_run_id(ctx.tracking, first[:6]) == first
    assert resolve_run_id(ctx.tracking, first.upper()) == first
    # Give the two runs IDs that share their first 8 characters (the store is ours: rewrite it).
    twin_a, twin_b = "abcdef12" + "0" * 24, "abcdef12" + "1" * 24
    with sqlite3.connect(ctx.settings.home / "mlflow.db") as db:
        for old, new in ((first, twin_a), (second, twin_b)):
            for table in ("tags", "params", "metrics", "latest_metrics"):
                db.execute(f"UPDATE {table} SET run_uuid = ? WHERE run_uuid = ?", (new, old))  # noqa: S608
            db.execute("UPDATE runs SET run_uuid = ? WHERE run_uuid = ?", (new, old))
    with pytest.raises(LookupError, match="matches 2 runs") as err:
        resolve_run_id(ctx.tracking, "abcdef12")
    assert twin_a in str(err.value) and twin_b in str(err.value)
    assert resolve_run_id(ctx.tracking, "abcdef121") == twin_b
    with pytest.raises(LookupError, match="no run ID .* starts with"):
        resolve_run_id(ctx.tracking, "fedcba98")
    with pytest.raises(LookupError, match="at least 6"):
        resolve_run_id(ctx.tracking, "abc12")
    assert "matches 2 runs" in _error(ctx, "get_run", {"run_id": "abcdef12"})


# ---- failures and logs ------------------------------------------------------------------------------


def test_why_a_run_failed_reads_the_traceback_and_the_cancellation_record(ctx: ToolContext) -> None:
    failed = _run(ctx, "f", "FAILED", artifacts={"traceback.txt": TRACEBACK})
    report = _call(ctx, "get_run_failure", {"run_id": failed[:8]})
    assert report["failed"] and report["status"] == "FAILED" and report["source"] == "traceback.txt"
    assert report["exception"] == "ValueError: the target has a single class"
    killed = _run(ctx, "f", "KILLED", artifacts={"cancellation.json": json.dumps(
        {"kind": "budget", "cancelled_by": "expagent", "reason": "the CPU budget ran out"})})  # fmt: skip
    assert (
        "Budget by expagent: the CPU budget ran out"
        in _call(ctx, "get_run_failure", {"run_id": killed})["exception"]
    )
    fine = _call(ctx, "get_run_failure", {"run_id": _run(ctx, "f")})
    assert not fine["failed"] and fine["exception"] is None


def test_training_log_comes_from_the_job_files_else_from_the_logged_artifact(ctx: ToolContext) -> None:
    job_run = _run(ctx, "logs", tags={"expagent.job_id": "local-test-job"})
    job_dir = ctx.settings.jobs_dir / "local-test-job"
    job_dir.mkdir(parents=True)
    (job_dir / "output.log").write_text(
        "".join(f"round {i}\n" for i in range(100)) + "token sk-abcdef0123456789abcdef\n"
    )
    logs = _call(ctx, "get_run_logs", {"run_id": job_run, "tail_lines": 5})
    assert logs["source"] == "job output" and logs["text"].splitlines()[0] == "round 96"
    assert "sk-abcdef0123456789abcdef" not in logs["text"]  # redacted
    kept = _run(ctx, "logs", "FAILED", artifacts={"output.log": "loading data\nboom\n"})
    logs = _call(ctx, "get_run_logs", {"run_id": kept})
    assert logs["source"] == "output.log" and logs["text"] == "loading data\nboom"
    none = _call(ctx, "get_run_logs", {"run_id": _run(ctx, "logs")})
    assert none["text"] == "" and none["source"] is None


# ---- running, experiments, comparison ----------------------------------------------------------------


def test_running_runs_and_experiments_with_counts(ctx: ToolContext) -> None:
    live = _run(ctx, "busy", "RUNNING", tags={"expagent.job_id": "local-x", "expagent.requester": "carol"})
    _run(ctx, "busy")
    _run(ctx, "quiet")
    running = _call(ctx, "list_running", {})["runs"]
    assert [(r["run_id"], r["experiment"], r["requester"]) for r in running] == [(live, "busy", "carol")]
    listed = {e["name"]: e for e in _call(ctx, "list_experiments", {})["experiments"]}
    assert (listed["busy"]["runs"], listed["busy"]["running"]) == (2, 1)
    assert (listed["quiet"]["runs"], listed["quiet"]["running"]) == (1, 0)
    tracking_client = ctx.tracking
    tracking_client.set_terminated(live, "FINISHED")
    assert _call(ctx, "list_running", {})["runs"] == []


def test_compare_runs_shows_differing_params_and_warns_on_other_data_or_splits(ctx: ToolContext) -> None:
    a = _run(ctx, "cmp", params={"model_family": "lightgbm", "num_leaves": 31}, metrics={"roc_auc": 0.9})
    b = _run(ctx, "cmp", params={"model_family": "lightgbm", "num_leaves": 63}, metrics={"roc_auc": 0.95})
    same = _call(ctx, "compare_runs", {"run_ids": [a[:8], b[:8]]})
    assert same["differing_params"] == {"num_leaves": {a: "31", b: "63"}}
    assert same["same_params"] == {"model_family": "lightgbm"} and same["warnings"] == []
    assert same["metrics"]["roc_auc"] == {a: 0.9, b: 0.95}
    other_split = _run(ctx, "cmp", tags={"split.test_sha256": "d" * 64})
    assert "different test splits" in _call(ctx, "compare_runs", {"run_ids": [a, other_split]})["warnings"][0]
    other_data = _run(ctx, "cmp", tags={"dataset.version": "2"})
    warnings = _call(ctx, "compare_runs", {"run_ids": [a, other_data]})["warnings"]
    assert "different datasets" in warnings[0] and "breast_cancer@2" in warnings[0]


# ---- the offline model end to end ---------------------------------------------------------------------


def _service(ctx: ToolContext) -> Any:
    from agent.service import AgentService

    return AgentService(ctx.settings, model="offline")


def test_offline_questions_answer_from_mlflow_and_change_nothing(ctx: ToolContext) -> None:
    failed = _run(
        ctx, "mine", "FAILED", params={"model_family": "lightgbm"}, artifacts={"traceback.txt": TRACEBACK}
    )
    before = len(all_runs(ctx.settings))
    service = _service(ctx)
    try:
        why = service.send(None, f"why did run {failed[:8]} fail?")
        assert "single class" in why.answer and why.answer.startswith(f"Run `{failed}`")
        experiments = service.send(None, "what experiments do I have?")
        assert "| mine | 1 |" in experiments.answer
        running = service.send(None, "is anything running right now?")
        assert "Nothing is running" in running.answer
        best = service.send(None, "what's the best run so far?")  # one experiment has runs: it is used
        assert "experiment `mine`" in best.sections["Summary"]
    finally:
        service.close()
    assert len(all_runs(ctx.settings)) == before


def test_a_bare_run_id_of_digits_only_is_answered_from_mlflow(ctx: ToolContext, monkeypatch) -> None:
    digits = uuid.UUID("06265619" + "ab" * 12)
    monkeypatch.setattr(sqlalchemy_store.uuid, "uuid4", lambda: digits)  # MLflow's own run ID source
    failed = _run(ctx, "mine", "FAILED", artifacts={"traceback.txt": TRACEBACK})
    monkeypatch.undo()
    assert failed.startswith("06265619")
    service = _service(ctx)
    try:
        why = service.send(None, "what went wrong with 06265619?")
    finally:
        service.close()
    assert "single class" in why.answer and why.answer.startswith(f"Run `{failed}`"), why.answer


def test_a_note_request_adds_the_note_and_trains_nothing(ctx: ToolContext) -> None:
    target = _run(
        ctx, "mine", params={"model_family": "random_forest"}, tags={"mlflow.note.content": "Baseline."}
    )
    service = _service(ctx)
    try:
        result = service.send(None, f"add a note to run {target[:8]}: rf baseline looks fine")
        refused = service.send(None, "add a note to the best run: rf baseline looks fine")
    finally:
        service.close()
    description = ctx.tracking.get_run(target).data.tags["mlflow.note.content"]
    assert description.startswith("Baseline.\n\n**Note** (") and description.endswith(
        "rf baseline looks fine"
    )
    assert "note added" in result.sections["Changes"] and result.runs == []
    assert "add a note to run" in refused.answer and len(all_runs(ctx.settings)) == 1
    audit = [json.loads(line) for line in ctx.settings.audit_log_path.read_text().splitlines()]
    assert [(a["tool"], a["verdict"]) for a in audit if a["tool"] == "log_note"] == [("log_note", "allow")]


@pytest.mark.parametrize(
    ("text", "run", "note"),
    [
        ("add a note to run 8788935a: rf baseline looks fine", "8788935a", "rf baseline looks fine"),
        ('pls leave a comment on run 1234abcd saying "check the split"', "1234abcd", "check the split"),
        ("annotate run 0a1b2c3d with: for the Q3 report", "0a1b2c3d", "for the Q3 report"),
        ("note on 99aa88bb - looks overfit", "99aa88bb", "looks overfit"),
    ],
)
def test_note_phrasings(text: str, run: str, note: str) -> None:
    found = note_request(text)
    assert found is not None and (found.run, found.text) == (run, note)
    assert parse_message(text)[0].intent == "question" and parse_question(text).kind == "note"


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("why did run 8788935a fail?", "why_failed"),
        ("what went wrong with run 8788935a", "why_failed"),
        ("show me the training logs for the last run in experiment mine", "run_logs"),
        ("whats runing rn", "running"),
        ("which experiemnts exist?", "list_experiments"),
        ("compare the last two runs in tune-smoke", "compare"),
        ("8788935a vs 1234abcd", "compare"),
        ("last 3 runs in mine", "list_runs"),
    ],
)
def test_question_phrasings(text: str, kind: str) -> None:
    assert parse_message(text)[0].intent == "question"
    assert parse_question(text).kind == kind


# ---- search-space edits ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "space"),
    [
        (
            "tune lgbm on wine@1, search learning_rate in [0.01, 0.1]",
            {"learning_rate": {"low": 0.01, "high": 0.1}},
        ),
        (
            "tune lgbm on wine@1, learning rate 1e-3..1e-1 log",
            {"learning_rate": {"low": 0.001, "high": 0.1, "log": True}},
        ),
        ("tune lgbm on wine@1, num_leaves between 16 and 64", {"num_leaves": {"low": 16, "high": 64}}),
        (
            "tune lgbm on wine@1, n_estimators in [100, 200, 400]",
            {"n_estimators": {"choices": [100, 200, 400]}},
        ),
        ("tune rf on wine@1, max depth one of 3, 5 or 8", {"max_depth": {"choices": [3, 5, 8]}}),
    ],
)
def test_search_space_edits_in_plain_words_load(text: str, space: dict[str, Any]) -> None:
    decision, _ = parse_message(text)
    assert decision.intent == "experiment" and decision.request.search_space == space
    family = "random_forest" if " rf " in text else "lightgbm"
    loaded = load_search_space(family, decision.request.search_space)
    for name, override in space.items():
        assert loaded[name].get(
            "choices", [loaded[name].get("low"), loaded[name].get("high")]
        ) == override.get("choices", [override.get("low"), override.get("high")])
        if override.get("log"):
            assert loaded[name]["log"] is True


def test_a_bad_search_space_edit_names_the_valid_forms() -> None:
    with pytest.raises(SearchSpaceError, match=r"low > 0.*learning_rate in \[0.01, 0.1\]"):
        load_search_space(
            "lightgbm", parse_message("tune lgbm on wine@1, learning rate 0..0.1 log")[0].request.search_space
        )
    unread = parse_message("tune lgbm on wine@1, learning_rate in [0.1]")[0]
    assert unread.request.search_space == {}
    assert any("not a search range I can read" in n for n in unread.not_understood)


# ---- where the answer is read --------------------------------------------------------------------------


def test_run_into_a_pipe_prints_plain_markdown_with_headings_and_full_links(ctx: ToolContext) -> None:
    import os
    import subprocess
    import sys

    failed = _run(ctx, "mine", "FAILED", artifacts={"traceback.txt": TRACEBACK})
    env = {**os.environ, "EXPAGENT_HOME": str(ctx.settings.home), "EXPAGENT_TRACE": "false"}
    env.update(EXPAGENT_MLFLOW_UI_BASE="http://mlflow.test")
    env.pop("MLFLOW_TRACKING_URI", None)
    expagent = str(Path(sys.executable).with_name("expagent"))
    done = subprocess.run(
        [expagent, "run", f"why did run {failed[:8]} fail?"], capture_output=True, text=True, env=env,
        timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Run `{failed}`")  # the answer first
    assert "\n### Plan\n" in done.stdout and "\n### Summary\n" in done.stdout
    assert "(http://mlflow.test/#/experiments/" in done.stdout and "\x1b[" not in done.stdout


def test_the_plan_reaches_the_front_end_before_training_starts(tmp_path: Path) -> None:
    from agent.service import AgentService, ProgressEvent

    events: list[ProgressEvent] = []
    service = AgentService(make_settings(tmp_path), model="offline", on_progress=events.append)
    try:
        service.send(
            None,
            "Train a logistic regression baseline on breast_cancer version 1 for roc_auc in experiment p",
        )
    finally:
        service.close()
    kinds = [e.kind for e in events]
    assert "plan" in kinds and "run_started" in kinds and kinds.index("plan") < kinds.index("run_started")
    assert "logistic_regression" in events[kinds.index("plan")].message


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("12345678 vs 9a8b7c6d - which is better?", ("12345678", "9a8b7c6d")),
        ("9a8b7c6d vs 1234567890", ("9a8b7c6d", "1234567890")),
        ("compare 12345678 and 87654321", ("12345678", "87654321")),
        ("compare 8788935a, 1234abcd", ("8788935a", "1234abcd")),
    ],
)
def test_a_short_id_of_digits_only_counts_beside_another_id(text: str, ids: tuple[str, ...]) -> None:
    plan = parse_question(text)
    assert plan.kind == "compare" and plan.run_ids == ids


def test_a_lone_number_is_not_a_run_id() -> None:
    assert parse_question("show runs with 20000000 rows").run_ids == ()
    assert parse_question("which run used seed 12345678?").run_ids == ()
    assert parse_question("list runs since 20261203").run_ids == ()
    assert parse_question("best run with n_estimators=12345678?").run_ids == ()


@pytest.mark.parametrize(
    "text",
    ["tail the logs of 06265619", "what killed 06265619", "what went wrong with 06265619?",
     "why did 06265619 fail", "06265619 logs"],
)  # fmt: skip
def test_a_prefix_of_digits_only_names_the_run_asked_about(text: str) -> None:
    # ~2% of 8-character prefixes are digits only: the eval's bare-ID questions failed that often
    assert parse_question(text).run_ids == ("06265619",), text
