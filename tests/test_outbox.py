"""Run-state writes during a tracking-server outage are kept in the outbox and replayed (issue #12).

Uses a real ``mlflow server`` subprocess (one per module), stopped and started again on the same port
and store. Judged by MLflow afterwards and by the outbox files.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow_server import MlflowServer

from tools.core import tracking
from tools.core._redacting_client import BREAKER
from tools.core.settings import Settings
from tools.core.specs import CancellationRecord
from tools.core.unreachable import is_unreachable

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    srv = MlflowServer(tmp_path_factory.mktemp("outbox-server"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture()
def client(tmp_path: Path, server: MlflowServer, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # an outage fails at once here
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    made = tracking.make_client(Settings(home=tmp_path, tracking_uri=server.uri))
    BREAKER.open_until = 0.0
    yield made
    BREAKER.open_until = 0.0


def _new_run(client, name: str) -> str:  # type: ignore[no-untyped-def]
    experiment = client.get_experiment_by_name(name) or client.get_experiment(client.create_experiment(name))
    return str(client.create_run(experiment.experiment_id).info.run_id)


def _outage(server: MlflowServer) -> None:
    server.stop()
    BREAKER.open_until = 0.0


def _back(server: MlflowServer) -> None:
    server.start()
    BREAKER.open_until = 0.0  # the hold would otherwise refuse the replay for 45 s


def test_an_ending_written_during_an_outage_is_kept_then_replayed(client, server) -> None:  # type: ignore[no-untyped-def]
    run_id = _new_run(client, "outbox-end")
    secret = "AKIA" + "ABCDEFGHIJKLMNOP"
    _outage(server)
    try:
        ended = tracking.end_run(
            client, run_id, "FINISHED", note=f"trial done, key {secret}", artifacts={"out.txt": "hello"},
            only_if_running=False,
        )  # fmt: skip
        assert ended  # the caller goes on: the ending waits in the outbox
        [(path, kept)] = client.outbox.pending()
        assert kept.op == "end_run" and kept.run_id == run_id and kept.status == "FINISHED"
        assert secret not in path.read_text()  # the outbox is a sink: redacted on disk
        assert is_unreachable(kept.cause)
        still_down = tracking.replay_outbox(client)
        assert still_down == ([], 1) and len(client.outbox.pending()) == 1
    finally:
        _back(server)
    written, waiting = tracking.replay_outbox(client)
    assert [w.run_id for w in written] == [run_id] and waiting == 0
    assert client.outbox.pending() == []
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert "trial done" in run.data.tags["mlflow.note.content"]
    assert secret not in run.data.tags["mlflow.note.content"]
    assert [a.path for a in client.list_artifacts(run_id)] == ["out.txt"]


def test_a_kept_ending_does_not_overwrite_a_run_that_ended_meanwhile(client, server) -> None:  # type: ignore[no-untyped-def]
    run_id = _new_run(client, "outbox-only-if-running")
    _outage(server)
    try:
        tracking.end_run(client, run_id, "KILLED", note="orphan check")  # only if still RUNNING
    finally:
        _back(server)
    client.set_terminated(run_id, "FINISHED")  # the trainer's own outcome reached the server first
    written, waiting = tracking.replay_outbox(client)
    assert len(written) == 1 and waiting == 0
    assert client.get_run(run_id).info.status == "FINISHED"


def test_a_cancellation_record_is_kept_and_replayed_in_order(client, server) -> None:  # type: ignore[no-untyped-def]
    first, second = _new_run(client, "outbox-cancel"), _new_run(client, "outbox-cancel")
    _outage(server)
    try:
        record = CancellationRecord(
            run_id=first, job_id="local-x", cancelled_by="alice", reason="user cancel", kind="cancelled",
            cancelled_at="2026-12-03T10:00:00Z",
        )  # fmt: skip
        tracking.write_cancellation(client, record)
        tracking.end_run(client, second, "FAILED", note="trial failed")
        assert [k.run_id for _, k in client.outbox.pending()] == [first, second]
    finally:
        _back(server)
    written, _ = tracking.replay_outbox(client)
    assert [w.op for w in written] == ["write_cancellation", "end_run"]
    killed = client.get_run(first)
    assert killed.info.status == "KILLED" and killed.data.tags["expagent.cancelled_by"] == "alice"
    dumped = client.download_artifacts(first, "cancellation.json")
    assert json.loads(Path(dumped).read_text())["reason"] == "user cancel"
    assert client.get_run(second).info.status == "FAILED"


def test_other_store_errors_are_raised_not_kept(client) -> None:  # type: ignore[no-untyped-def]
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException):
        tracking.end_run(client, "0" * 32, "FAILED", note="no such run")
    assert client.outbox.pending() == []


def test_only_a_recent_job_report_of_an_outage_opens_the_breaker() -> None:
    # A job that ended in an earlier outage is read by the next command once the server is back: its old
    # report must not stop that command's calls (CI saw the orphan check refused this way).
    from datetime import UTC, datetime, timedelta

    from tools.core._redacting_client import BREAKER_HOLD_S, note_job_error

    uri = "http://127.0.0.1:45169"
    text = "MlflowException: API request to http://127.0.0.1:45169/api failed: Max retries exceeded"
    BREAKER.open_until = 0.0
    try:
        stale = datetime.now(UTC) - timedelta(seconds=BREAKER_HOLD_S + 30)
        note_job_error(uri, text, stale)
        BREAKER.check(uri)  # still closed
        note_job_error(uri, text, datetime.now(UTC))
        with pytest.raises(ConnectionError):
            BREAKER.check(uri)
    finally:
        BREAKER.open_until = 0.0
