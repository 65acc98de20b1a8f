"""Warm job processes: jobs fork from a multiprocessing fork server that has already done the slow part.

A fresh Python process pays ~2.5 s importing mlflow, scikit-learn, LightGBM and the trainer, and ~1 s
more of first-use work on its first run. The fork server (one per agent process) imports
``WARM_MODULES`` once; importing this module there also rehearses two tiny trainings in a throwaway
workspace and opens the workspace's tracking store (``rehearse``), so every job forked from it starts
hot. Each job is still a fresh process in its own session: a crash kills only that job.

``launch_job`` starts one job; the caller watches the returned process and the job's files.
"""

from __future__ import annotations

import io
import multiprocessing.process
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing import forkserver as mp_forkserver
from multiprocessing import popen_forkserver, reduction, spawn, util
from multiprocessing.context import ForkServerProcess, set_spawning_popen
from pathlib import Path
from typing import Any

from agent.config import Settings
from tools.specs import TrainingSpec

#: imported once by the fork server; every job forked from it starts with these loaded.
WARM_MODULES = ["tools.trainer", "tools.runtime.forkserver"]  # the trainer warms MLflow's caches on import
#: set only in the fork server's environment: importing this module there rehearses a training and
#: opens the workspace's tracking store, so jobs fork with hot caches (see ``rehearse``).
REHEARSE_ENV = "EXPAGENT_FORKSERVER_REHEARSE"
STORE_ENV = "EXPAGENT_FORKSERVER_TRACKING_URI"
_SERVER_ENV_LOCK = threading.Lock()


def use_preload(modules: list[str] | None) -> None:
    """Choose what the fork server imports (default ``WARM_MODULES``); effective only before it starts."""
    mp_forkserver.set_forkserver_preload(modules or WARM_MODULES)


def launch_job(spec: TrainingSpec, settings: Settings, directory: Path, job_id: str) -> ForkServerProcess:
    """Fork a job that trains ``spec`` with its output in ``directory``; return its started process."""
    start_fork_server(settings.resolved_tracking_uri)
    process = _JobProcess(
        target=_job_process, args=(spec.model_dump_json(), settings, str(directory), job_id), name=job_id
    )
    process.start()
    # Jobs outlive this process (they are adopted after a restart): keep multiprocessing's exit
    # handler from joining them. The process object itself keeps working for the caller's watcher.
    multiprocessing.process._children.discard(process)  # type: ignore[attr-defined]
    return process


def _redirect_output(log_path: Path) -> None:
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)


def _job_process(spec_json: str, settings: Settings, job_dir: str, job_id: str) -> None:
    """Entry point of a forked job: own process group, output to the log, run the trainer, exit."""
    os.setsid()
    directory = Path(job_dir)
    _redirect_output(directory / "output.log")
    os.environ["EXPAGENT_JOB_ID"] = job_id
    from tools import trainer  # preloaded by the fork server: no import cost here

    spec = TrainingSpec.model_validate_json(spec_json)
    sys.exit(trainer.run_job(spec, settings, directory / "status.json", job_id))


class _JobPopen(popen_forkserver.Popen):
    """Fork-server launch that does not re-import the parent's ``__main__`` in the job.

    multiprocessing normally re-runs the parent's main script (or module) in every child; a job needs
    only ``tools.*``, and re-running e.g. a benchmark script or the CLI would cost time or misbehave.
    This is ``popen_forkserver.Popen._launch`` (CPython 3.11) with the two main-module keys removed.
    """

    def _launch(self, process_obj: Any) -> None:
        prep_data = spawn.get_preparation_data(process_obj._name)
        prep_data.pop("init_main_from_name", None)
        prep_data.pop("init_main_from_path", None)
        buf = io.BytesIO()
        set_spawning_popen(self)
        try:
            reduction.dump(prep_data, buf)
            reduction.dump(process_obj, buf)
        finally:
            set_spawning_popen(None)
        self.sentinel, w = mp_forkserver.connect_to_new_process(self._fds)  # type: ignore[attr-defined]
        _parent_w = os.dup(w)  # the child watches this as its parent sentinel
        self.finalizer = util.Finalize(self, util.close_fds, (_parent_w, self.sentinel))  # type: ignore[attr-defined]
        with open(w, "wb", closefd=True) as f:
            f.write(buf.getbuffer())
        self.pid = mp_forkserver.read_signed(self.sentinel)


class _JobProcess(ForkServerProcess):
    """A fork-server process launched with :class:`_JobPopen`."""

    @staticmethod
    def _Popen(process_obj: Any) -> _JobPopen:
        return _JobPopen(process_obj)


def start_fork_server(tracking_uri: str) -> None:
    """Start the process-wide fork server (if not running), warmed for ``tracking_uri``.

    Its environment (inherited by every job) also disables MLflow telemetry, whose threads must not
    be running across fork().
    """
    server_env = {REHEARSE_ENV: "1", STORE_ENV: tracking_uri, "MLFLOW_DISABLE_TELEMETRY": "true"}
    with _SERVER_ENV_LOCK:
        saved = {key: os.environ.get(key) for key in server_env}
        os.environ.update(server_env)
        try:
            mp_forkserver.ensure_running()  # spawns synchronously: the environment is captured here
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def rehearse(tracking_uri: str | None) -> None:
    """Train two tiny runs in a throwaway workspace, then open ``tracking_uri``'s store (fork server).

    Forked jobs inherit whatever the server has already done. Without this every job pays ~1 s of
    first-use work: SQLAlchemy building MLflow's ORM loaders, MLflow creating the store and checking
    its schema, the model-logging path, pandas/pyarrow conversions. LightGBM uses one thread here: a
    fork after an OpenMP thread pool exists is unsafe. Engines are disposed before any fork, so jobs
    open their own database connections.
    """
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    from agent.config import load_settings
    from tools.tracking import make_client
    from tools.trainer import run_training

    with tempfile.TemporaryDirectory(prefix="expagent-rehearsal-") as home:
        scratch = f"sqlite:///{home}/mlflow.db"
        settings = load_settings(home=Path(home), tracking_uri=scratch)
        base = {"dataset": "breast_cancer", "version": "1", "metric": "roc_auc", "experiment": "rehearsal"}
        for family, params in (("lightgbm", {"n_estimators": 3}), ("logistic_regression", {})):
            spec = TrainingSpec.model_validate(
                {**base, "model_family": family, "params": params, "report_intermediate": True}
            )
            run_training(spec, settings)
        SqlAlchemyStore._engine_map.pop(scratch).dispose()
        if tracking_uri and tracking_uri.startswith("sqlite:"):
            make_client(load_settings(home=Path(home), tracking_uri=tracking_uri)).search_experiments(
                max_results=1
            )
            SqlAlchemyStore._engine_map[tracking_uri].dispose()


@contextmanager
def _silenced() -> Iterator[None]:
    """Send fds 1 and 2 to /dev/null for the block (the fork server shares the agent's terminal)."""
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


if os.environ.get(REHEARSE_ENV) == "1" and multiprocessing.process.current_process().name == "MainProcess":
    # Only the fork server's environment sets this (see start_fork_server); it imports this module once.
    try:
        with _silenced():
            rehearse(os.environ.get(STORE_ENV))
    except Exception:  # a failed rehearsal only costs speed; jobs still work
        pass
    for _key in (REHEARSE_ENV, STORE_ENV):
        os.environ.pop(_key, None)
