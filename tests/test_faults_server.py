"""Faults against a real ``mlflow server`` subprocess (issue #12): the agent as a real subprocess on it.

Run by ``make test-faults`` (CI runs it after ``make test``; the cases take minutes, mostly waiting
out the outages). One server (SQLite backend, ``--serve-artifacts``) is shared by the module; the
outage cases stop and restart it on the same port and store. Judged by the world afterwards:
MLflow's runs, the artifact store, exit codes, stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow_server import MlflowServer

pytestmark = [pytest.mark.timeout(400), pytest.mark.server_faults]

EXPAGENT = str(Path(sys.executable).with_name("expagent"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    srv = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    srv.start()
    yield srv
    srv.stop()


def _env(home: Path, server: MlflowServer, **extra: str) -> dict[str, str]:
    return {
        **os.environ, "EXPAGENT_HOME": str(home), "EXPAGENT_TRACE": "false",
        "MLFLOW_TRACKING_URI": server.uri, **extra,
    }  # fmt: skip


def _client(server: MlflowServer):  # type: ignore[no-untyped-def]
    from mlflow.tracking import MlflowClient

    return MlflowClient(server.uri)


def _runs(server: MlflowServer, experiment: str) -> list:  # type: ignore[type-arg]
    client = _client(server)
    found = client.get_experiment_by_name(experiment)
    return list(client.search_runs([found.experiment_id], max_results=500)) if found else []


def _start_study(
    tmp_path: Path, server: MlflowServer, request: str, experiment: str, finished_trials: int
) -> subprocess.Popen[str]:
    """Start ``expagent run --json request`` and return once ``finished_trials`` trials FINISHED."""
    env = _env(tmp_path, server, EXPAGENT_LOCAL_LAUNCH="subprocess")
    proc = subprocess.Popen(
        [EXPAGENT, "run", "--yes", "--json", request], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 200
    while time.monotonic() < deadline:
        trials = [r for r in _runs(server, experiment) if r.data.tags.get("expagent.role") == "trial"]
        if sum(r.info.status == "FINISHED" for r in trials) >= finished_trials:
            return proc
        assert proc.poll() is None, proc.stderr.read()[-3000:]  # type: ignore[union-attr]
        time.sleep(0.5)
    proc.kill()
    raise AssertionError(f"fewer than {finished_trials} trials of {experiment} finished in 200 s")


def _no_traceback(text: str) -> None:
    assert "Traceback (most recent call last)" not in text, text[-3000:]


def test_a_tuning_request_against_the_server_keeps_json_clean_and_models_on_the_server(
    tmp_path: Path, server: MlflowServer
) -> None:
    request = (
        "Train a logistic_regression baseline on breast_cancer version 1 optimizing roc_auc, then tune "
        "2 trials, experiment srv-json"
    )
    done = subprocess.run(
        [EXPAGENT, "run", "--yes", "--json", request], capture_output=True, text=True, timeout=300,
        env=_env(tmp_path, server), check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    _no_traceback(done.stderr)
    result = json.loads(done.stdout)  # stdout is one JSON document: nothing MLflow prints reaches it
    assert result["status"] == "answered" and result["best_run_id"]
    runs = _runs(server, "srv-json")
    assert runs and all(r.info.status == "FINISHED" for r in runs)
    baseline = next(r for r in runs if r.data.tags.get("expagent.role") == "baseline")
    assert baseline.info.artifact_uri.startswith("mlflow-artifacts:"), baseline.info.artifact_uri
    client = _client(server)
    [model] = [
        m
        for m in client.search_logged_models([baseline.info.experiment_id], max_results=100)
        if m.source_run_id == baseline.info.run_id
    ]
    assert model.artifact_location.startswith("mlflow-artifacts:"), model.artifact_location
    from mlflow.artifacts import download_artifacts

    downloaded = Path(
        download_artifacts(model.artifact_location, dst_path=str(tmp_path / "dl"), tracking_uri=server.uri)
    )
    assert list(downloaded.rglob("MLmodel")), "the model is in the server's artifact store"
    assert str(server.uri) in result["answer"]  # links point at the server's UI, not :5000


def test_a_permanent_outage_mid_study_ends_in_bounded_time_and_nothing_stays_running(
    tmp_path: Path, server: MlflowServer
) -> None:
    request = (
        "Train a logistic_regression baseline on breast_cancer version 1 optimizing roc_auc, then tune "
        "8 trials, experiment srv-outage"
    )
    proc = _start_study(tmp_path, server, request, "srv-outage", finished_trials=1)
    server.stop()  # the tracking server goes away for good (for this turn)
    stopped_at = time.monotonic()
    try:
        rc = proc.wait(timeout=150)
    finally:
        took = time.monotonic() - stopped_at
        if proc.poll() is None:
            proc.kill()
        server.start()  # the rest of the module needs it again
    stdout, stderr = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    print(f"permanent outage: the turn ended {took:.1f} s after the server stopped (rc {rc})")
    assert took <= 90, took
    assert rc == 5, (rc, stdout[-2000:], stderr[-2000:])  # a failed turn, answered: not a crash (1)
    _no_traceback(stderr)
    assert "error" in stderr.lower()
    answer = json.loads(stdout)  # --json still prints one document
    assert answer["status"] == "failed"
    assert "could not be reached" in answer["answer"] and "outbox" in answer["answer"]
    session_id = next(r["run_id"] for r in answer["runs"] if r["role"] == "session")
    # Whoever opens the workspace next reconciles: nothing of the turn stays RUNNING.
    done = subprocess.run(
        [EXPAGENT, "run", "--json", "list the datasets"], capture_output=True, text=True, timeout=200,
        env=_env(tmp_path, server), check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    runs = _runs(server, "srv-outage")
    assert [r.info.run_id for r in runs if r.info.status == "RUNNING"] == []
    finished = [
        r for r in runs if r.data.tags.get("expagent.role") == "trial" and r.info.status == "FINISHED"
    ]
    assert finished and all("roc_auc" in r.data.metrics for r in finished)
    # The session run's ending waited in the outbox and was written with its real outcome (not as an
    # orphan, KILLED); the outbox is empty afterwards.
    session = _client(server).get_run(session_id)
    assert session.info.status == "FAILED", session.info.status
    assert not list((tmp_path / "outbox").glob("*.json"))


def test_a_short_outage_mid_study_loses_nothing_and_leaves_nothing_running(
    tmp_path: Path, server: MlflowServer
) -> None:
    request = (
        "Train a logistic_regression baseline on breast_cancer version 1 optimizing roc_auc, then tune "
        "8 trials, experiment srv-blip"
    )
    proc = _start_study(tmp_path, server, request, "srv-blip", finished_trials=2)
    before = {r.info.run_id for r in _runs(server, "srv-blip") if r.info.status == "FINISHED"}
    server.stop()
    time.sleep(20)  # the tracking server is away for ~30 s, counting its restart
    server.start()
    try:
        rc = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    stdout, stderr = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    _no_traceback(stderr)
    assert rc in (0, 5), stderr[-3000:]  # answered, or failed and said so: never a crash
    if rc == 0:
        json.loads(stdout)
    done = subprocess.run(
        [EXPAGENT, "run", "--json", "list the datasets"], capture_output=True, text=True, timeout=200,
        env=_env(tmp_path, server), check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    runs = _runs(server, "srv-blip")
    assert [r.info.run_id for r in runs if r.info.status == "RUNNING"] == []
    finished = {r.info.run_id for r in runs if r.info.status == "FINISHED"}
    assert before <= finished  # what had finished before the outage is still there, with its metric
    trials = [r for r in runs if r.data.tags.get("expagent.role") == "trial"]
    numbers = [r.data.tags.get("expagent.trial_number") for r in trials]
    assert len(numbers) == len(set(numbers))
    assert all("roc_auc" in r.data.metrics for r in trials if r.info.status == "FINISHED")
