"""A run is created once even when MLflow's client retries a create whose answer was lost.

A real ``mlflow server`` (one per module) behind a small HTTP proxy that forwards every call and, when
told to, drops the answer to ``runs/create`` *after* the server has committed the run: what a server
that dies mid-answer, or a dropped connection, does. Judged by the runs the server holds.
"""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import pytest
from mlflow_server import MlflowServer

from tools.core import tags as tag_keys
from tools.core import tracking
from tools.core._redacting_client import BREAKER
from tools.core.create_once import create_run_once
from tools.core.settings import Settings

pytestmark = pytest.mark.timeout(300)

CREATE_PATH = "/api/2.0/mlflow/runs/create"


class LosingProxy:
    """Forwards HTTP calls to ``upstream``; drops the answer of the next ``drop_creates`` run creates."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urlparse(upstream)
        self.drop_creates = 0
        self.creates = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                reply = conn.getresponse()
                payload = reply.read()
                conn.close()
                if self.command == "POST" and self.path.startswith(CREATE_PATH):
                    proxy.creates += 1
                    if proxy.drop_creates > 0:  # the server made the run; its answer never arrives
                        proxy.drop_creates -= 1
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                self.send_response(reply.status)
                for key, value in reply.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _forward

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LosingProxy]:
    srv = MlflowServer(tmp_path_factory.mktemp("create-once-server"))
    srv.start()
    losing = LosingProxy(srv.uri)
    yield losing
    losing.close()
    srv.stop()


def _owner(tmp_path: Path, proxy: LosingProxy, monkeypatch: pytest.MonkeyPatch, retries: int):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(retries))
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    settings = Settings(home=tmp_path, tracking_uri=proxy.uri)
    BREAKER.open_until = 0.0
    return tracking.RunOwnerRecord(settings, tracking.make_client(settings), "sess-create-once", "alice")


@pytest.fixture(autouse=True)
def _breaker_closed() -> Iterator[None]:
    BREAKER.open_until = 0.0
    yield
    BREAKER.open_until = 0.0


def _runs(owner, experiment: str) -> list:  # type: ignore[no-untyped-def,type-arg]
    """The experiment's runs as the server holds them (a plain client: not through the breaker)."""
    from mlflow.tracking import MlflowClient

    plain = MlflowClient(owner.tracking.tracking_uri)
    found = plain.get_experiment_by_name(experiment)
    return list(plain.search_runs([found.experiment_id], max_results=100))


def test_a_retried_create_leaves_one_running_run_and_ends_the_duplicate(  # type: ignore[no-untyped-def]
    tmp_path: Path, proxy: LosingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = _owner(tmp_path, proxy, monkeypatch, retries=2)
    before = proxy.creates
    proxy.drop_creates = 1
    run_id = tracking.create_parent_run(owner, "create-once-retried", "session")
    assert proxy.creates - before == 2  # the client really created the run twice
    runs = {r.info.run_id: r for r in _runs(owner, "create-once-retried")}
    assert len(runs) == 2
    kept = runs.pop(run_id)
    [dup] = runs.values()
    assert kept.info.status == "RUNNING" and tag_keys.ROLE in kept.data.tags
    assert kept.data.tags[tag_keys.ROLE] == "session"
    assert dup.info.status == "KILLED"
    assert dup.data.tags[tag_keys.ROLE] == "duplicate"  # no search for sessions/trials counts it
    assert dup.data.tags[tag_keys.DUPLICATE_OF] == run_id
    assert dup.data.tags[tag_keys.CREATE_ID] == kept.data.tags[tag_keys.CREATE_ID]
    assert run_id in dup.data.tags[tag_keys.NOTE]
    assert tag_keys.DUPLICATE_OF not in kept.data.tags


def test_a_failed_create_whose_run_the_server_made_ends_that_run_once_the_server_answers(  # type: ignore[no-untyped-def]
    tmp_path: Path, proxy: LosingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = _owner(tmp_path, proxy, monkeypatch, retries=0)  # no retry: the create call itself fails
    experiment_id = tracking.ensure_experiment(owner.tracking, "create-once-unclaimed")
    before = proxy.creates
    proxy.drop_creates = 1
    with pytest.raises(Exception, match="Connection aborted|RemoteDisconnected"):
        create_run_once(owner.tracking, experiment_id, {tag_keys.ROLE: "trial"}, "trial-03")
    assert proxy.creates - before == 1
    [run] = _runs(owner, "create-once-unclaimed")  # the server made it; the caller was told it failed
    assert run.info.status == "RUNNING"
    # The lost answer opened the breaker, so the lookup waits in the outbox, redacted like every entry.
    [(_, kept)] = owner.tracking.outbox.pending()
    assert kept.op == "end_extra_runs" and kept.args["keep"] is None
    BREAKER.open_until = 0.0
    written, waiting = tracking.replay_outbox(owner.tracking)
    assert [w.op for w in written] == ["end_extra_runs"] and waiting == 0
    assert owner.tracking.outbox.pending() == []
    ended = owner.tracking.get_run(run.info.run_id)
    assert ended.info.status == "KILLED"
    assert ended.data.tags[tag_keys.ROLE] == "unclaimed"
    assert "told the create failed" in ended.data.tags[tag_keys.NOTE]


def test_a_create_the_server_never_made_raises_its_own_error(  # type: ignore[no-untyped-def]
    tmp_path: Path, proxy: LosingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = _owner(tmp_path, proxy, monkeypatch, retries=0)
    experiment_id = tracking.ensure_experiment(owner.tracking, "create-once-refused")
    owner.tracking.delete_experiment(experiment_id)  # the server refuses runs in a deleted experiment
    with pytest.raises(Exception, match="(?i)active|deleted|exist"):
        create_run_once(owner.tracking, experiment_id, {"a": "b"}, None)
    assert _runs(owner, "create-once-refused") == []


def test_an_ordinary_create_on_a_server_makes_one_run(  # type: ignore[no-untyped-def]
    tmp_path: Path, proxy: LosingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = _owner(tmp_path, proxy, monkeypatch, retries=2)
    run_id = tracking.create_parent_run(owner, "create-once-plain", "session")
    [run] = _runs(owner, "create-once-plain")
    assert run.info.run_id == run_id and run.info.status == "RUNNING"
    assert len(run.data.tags[tag_keys.CREATE_ID]) == 32


def test_a_local_store_gets_no_create_id(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    owner = tracking.RunOwnerRecord(settings, tracking.make_client(settings), "sess-local", "alice")
    run_id = tracking.create_parent_run(owner, "create-once-local", "session")
    assert tag_keys.CREATE_ID not in owner.tracking.get_run(run_id).data.tags
