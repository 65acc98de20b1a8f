"""Warm job processes: jobs fork from a multiprocessing fork server that has already done the slow part.

A fresh Python process pays ~2.5 s importing mlflow, scikit-learn, LightGBM and the trainer, and
~0.3 s more of first-use work on its first run. The fork server (one per agent process) imports
``WARM_MODULES`` once; importing this module there also opens the workspace's tracking store and, for
fork-per-job launches, rehearses a tiny training in a throwaway workspace (``rehearse``), then reads and
verifies the workspace's small datasets (``tools.training.dataset_cache``), so every process forked from it
starts hot. The local runtime starts the server when it is constructed; it warms up in the background
and the first job launched waits for it.

``launch_job`` starts one job as a fresh process in its own session (a crash kills only that job); the
caller watches the returned process and the job's files. ``tools.runtime._workers`` forks longer-lived
workers from the same server.
"""

from __future__ import annotations

import gc
import io
import multiprocessing.process
import os
import sqlite3
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from multiprocessing import forkserver as mp_forkserver
from multiprocessing import popen_forkserver, reduction, spawn, util
from multiprocessing.context import ForkServerProcess, set_spawning_popen
from pathlib import Path
from typing import Any

from tools.core.liveness import process_alive, process_start
from tools.core.settings import Settings
from tools.core.specs import TrainingSpec
from tools.core.sqlite_uri import sqlite_store_path, sqlite_uri

#: imported once by the fork server; every job forked from it starts with these loaded (the trainer
#: warms MLflow's caches on import).
WARM_MODULES = ["tools.training.trainer", "tools.runtime.forkserver", "tools.runtime._workers"]
#: set only in the fork server's environment: importing this module there rehearses a training and
#: opens the workspace's tracking store, so jobs fork with hot caches (see ``rehearse``).
REHEARSE_ENV = "EXPAGENT_FORKSERVER_REHEARSE"
STORE_ENV = "EXPAGENT_FORKSERVER_TRACKING_URI"
#: the workspace's catalog and data directory, whose small datasets the fork server preloads.
CATALOG_ENV, DATA_ENV = "EXPAGENT_FORKSERVER_CATALOG", "EXPAGENT_FORKSERVER_DATA_DIR"
_SERVER_ENV_LOCK = threading.Lock()
#: environment variables a job takes from the agent at launch rather than from the fork server, which
#: may have started long before (credentials rotated, a profile chosen, an endpoint set since then).
JOB_ENV_PREFIXES = ("AWS_",)


def job_environment() -> dict[str, str]:
    """The agent's current values of the ``JOB_ENV_PREFIXES`` variables, handed to a job at launch.

    They travel through the launch pipe only (never into a job's files); the job replaces every
    inherited variable with those prefixes by these, so one the agent has since unset is gone there too.
    """
    return {k: v for k, v in os.environ.items() if k.startswith(JOB_ENV_PREFIXES)}


def _apply_job_environment(environment: dict[str, str]) -> None:
    for key in [k for k in os.environ if k.startswith(JOB_ENV_PREFIXES)]:
        os.environ.pop(key, None)
    os.environ.update(environment)


def use_preload(modules: list[str] | None) -> None:
    """Choose what the fork server imports (default ``WARM_MODULES``); effective only before it starts."""
    mp_forkserver.set_forkserver_preload(modules or WARM_MODULES)


def launch_job(spec: TrainingSpec, settings: Settings, directory: Path, job_id: str) -> ForkServerProcess:
    """Fork a job that trains ``spec`` with its output in ``directory``; return its started process."""
    start_fork_server(
        settings.resolved_tracking_uri, settings.resolved_catalog_path, settings.data_dir, rehearse=True
    )
    args = (spec.model_dump_json(), settings, str(directory), job_id, job_environment())
    process = JobProcess(target=_job_process, args=args, name=job_id)
    process.start()
    detach(process)
    return process


def detach(process: ForkServerProcess) -> None:
    """Keep multiprocessing from joining ``process`` when this interpreter exits."""
    # CPython internals (multiprocessing.process._children), used only here. Why: jobs outlive the
    # agent process (another one adopts them after a restart), but multiprocessing's exit handler joins
    # every child it knows, so exiting would wait for all running jobs; there is no public way to
    # detach a child. The process object keeps working for the caller's watcher. If CPython renames
    # the set, this does nothing and an exiting agent waits for its running jobs; nothing fails.
    children = getattr(multiprocessing.process, "_children", None)
    if children is not None:
        children.discard(process)


def redirect_output(log_path: Path) -> None:
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)


def run_job_here(
    spec_json: str, settings: Settings, directory: Path, job_id: str, environment: dict[str, str]
) -> int:
    """Run one job in this (forked) process: output to its log, the trainer charged from now on.

    ``environment`` is the agent's ``job_environment()`` at launch.
    """
    from tools.training import trainer  # preloaded by the fork server: no import cost here

    redirect_output(directory / "output.log")
    _apply_job_environment(environment)
    os.environ["EXPAGENT_JOB_ID"] = job_id
    spec = TrainingSpec.model_validate_json(spec_json)
    return trainer.run_job(spec, settings, directory / "status.json", job_id, trainer.cpu_seconds())


def _job_process(
    spec_json: str, settings: Settings, job_dir: str, job_id: str, environment: dict[str, str]
) -> None:
    """Entry point of a forked job: own process group, run the job, exit with its code."""
    os.setsid()
    sys.exit(run_job_here(spec_json, settings, Path(job_dir), job_id, environment))


class _JobPopen(popen_forkserver.Popen):
    """Fork-server launch that does not re-run the parent's ``__main__`` in the job."""

    # CPython internals, used only here. Why: multiprocessing re-runs the parent's main script (or
    # module) in every child. A job needs only ``tools.*``; re-running the main costs each job 0.02 s
    # for the expagent CLI or a benchmark script, ~0.1 s for evals.harness and ~1.2 s for a module that
    # imports the agent service (measured), and re-runs a script that has no __main__ guard.
    # This is popen_forkserver.Popen._launch of CPython 3.11 with the two main-module keys dropped. On
    # any other Python version the stock launch runs instead: jobs re-run the main, nothing fails.
    def _launch(self, process_obj: Any) -> None:
        if sys.version_info[:2] != (3, 11):
            super()._launch(process_obj)
            return
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


class JobProcess(ForkServerProcess):
    """A fork-server process launched with :class:`_JobPopen`."""

    @staticmethod
    def _Popen(process_obj: Any) -> _JobPopen:
        return _JobPopen(process_obj)


def start_fork_server(
    tracking_uri: str, catalog_path: Path | None = None, data_dir: Path | None = None, rehearse: bool = True
) -> None:
    """Start the process-wide fork server (if not running), warmed for ``tracking_uri``.

    It does not wait for the server's imports and rehearsal: the first job launched waits for them.
    ``rehearse`` trains a tiny run there first: worth it when every job is forked from the server, not
    for workers that each warm up on their first job (it would only delay that job). With
    ``catalog_path`` and ``data_dir`` the server also preloads that workspace's small datasets
    (``tools.training.dataset_cache``). Its environment (inherited by every job) also disables MLflow
    telemetry, whose threads must not be running across fork(). Only the first call's arguments count.
    """
    server_env = {
        REHEARSE_ENV: "train" if rehearse else "open", STORE_ENV: tracking_uri,
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }  # fmt: skip
    if catalog_path is not None and data_dir is not None:
        server_env |= {CATALOG_ENV: str(catalog_path), DATA_ENV: str(data_dir)}
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


def use_inherited_server() -> None:
    """In a process forked from the one that started the fork server, launch jobs through that server.

    multiprocessing checks that its server is alive with ``os.waitpid``, which works only in the process
    that spawned it: a forked child (an eval worker) raised ``ChildProcessError`` there, so each worker
    had to start (import, warm, rehearse: ~8 CPU-s) a server of its own. Here the check asks the kernel
    whether the inherited server still runs; if it has gone, this process starts its own as before. Jobs
    reach the server through its socket and report through their status pipe, from any process.
    """
    server: Any = mp_forkserver._forkserver  # type: ignore[attr-defined]  # CPython 3.11's private state
    inherited = server._forkserver_pid
    if inherited is None:
        return
    spawn_own = type(server).ensure_running.__get__(server)
    started = process_start(inherited)  # the same process, not another that reused its pid

    def ensure_running() -> None:
        if server._forkserver_pid == inherited:
            if process_alive(inherited, started):
                return
            os.close(server._forkserver_alive_fd)  # gone: forget it, start this process's own
            server._forkserver_pid = server._forkserver_address = server._forkserver_alive_fd = None
        spawn_own()

    server.ensure_running = ensure_running
    mp_forkserver.ensure_running = ensure_running  # the module's name is bound at import


def rehearse(tracking_uri: str | None, train: bool = True) -> None:
    """Train a tiny run in a throwaway workspace (if ``train``), then open ``tracking_uri``'s store.

    Runs in the fork server: forked jobs inherit whatever the server has already done. Without the
    training every forked job pays ~0.3 s of first-use work: SQLAlchemy building MLflow's ORM loaders,
    the model-logging path, pandas/pyarrow conversions; opening the store (MLflow checks its schema)
    saves another ~0.05 s, and is done only for a store that exists (creating it here could race the
    agent creating it). LightGBM uses one thread here: a fork after an OpenMP thread pool exists is
    unsafe. Every database connection is closed before any fork, so jobs open their own.
    """
    from tools.core.settings import load_settings
    from tools.core.tracking import make_client

    engines = _mlflow_engines()
    if engines is None:  # pooled connections could not be closed before forking: rather not rehearse
        return
    with tempfile.TemporaryDirectory(prefix="expagent-rehearsal-") as home:
        try:
            if train:  # its scratch store is a seeded copy (tools.core.store_seed): no migrations
                _train_tiny_runs(Path(home))
            if tracking_uri and _store_initialised(tracking_uri):
                settings = load_settings(home=Path(home), tracking_uri=tracking_uri)
                make_client(settings).search_experiments(max_results=1)
        finally:
            for engine in list(engines.values()):
                engine.dispose()  # closes pooled connections; jobs reuse the engine and open new ones


def _store_initialised(tracking_uri: str | None) -> bool:
    """Return whether ``tracking_uri`` is an existing SQLite store whose tables MLflow has created."""
    path = sqlite_store_path(tracking_uri or "")
    if path is None or not path.is_file():
        return False
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)) as src:
            return bool(src.execute("SELECT version_num FROM alembic_version").fetchall())
    except sqlite3.Error:  # unreadable, or its tables are not created yet
        return False


def _train_tiny_runs(home: Path) -> None:
    """Train a 3-round LightGBM run into a scratch store under ``home``.

    What it warms is shared by every model family (MLflow's logging and model-saving paths); a second,
    logistic-regression rehearsal took as long as a warm run of its own (measured), so it is not done.
    """
    from tools.core.settings import load_settings
    from tools.training.trainer import run_training

    settings = load_settings(home=home, tracking_uri=sqlite_uri(home / "mlflow.db"))
    base = {"dataset": "breast_cancer", "version": "1", "metric": "roc_auc", "experiment": "rehearsal"}
    spec = {**base, "model_family": "lightgbm", "params": {"n_estimators": 3}, "report_intermediate": True}
    run_training(TrainingSpec.model_validate(spec), settings)


def _mlflow_engines() -> dict[str, Any] | None:
    """Return MLflow's cache of SQLAlchemy engines (one per database URI), or None if it has none."""
    # Private MLflow API (SqlAlchemyStore._engine_map), used only here. Why: MLflow keeps one engine
    # per database URI, with a pool of open connections, and offers no public way to reach it; an SQLite
    # connection must not be used across fork(), so the fork server disposes every pool before jobs
    # fork (jobs keep the engine and the store MLflow already checked). If MLflow renames the map, this
    # returns None and the fork server skips its rehearsal: jobs start ~0.3 s slower, nothing breaks.
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    engines = getattr(SqlAlchemyStore, "_engine_map", None)
    return engines if isinstance(engines, dict) else None


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


_REHEARSAL = os.environ.get(REHEARSE_ENV)
if _REHEARSAL in ("train", "open") and multiprocessing.process.current_process().name == "MainProcess":
    # Only the fork server's environment sets this (see start_fork_server); it imports this module once.
    try:
        with _silenced():
            rehearse(os.environ.get(STORE_ENV), train=_REHEARSAL == "train")
            if os.environ.get(CATALOG_ENV) and os.environ.get(DATA_ENV):
                from tools.training.dataset_cache import preload_workspace

                preload_workspace(Path(os.environ[CATALOG_ENV]), Path(os.environ[DATA_ENV]))
    except Exception:  # a failed rehearsal or preload only costs speed; jobs still work
        pass
    for _key in (REHEARSE_ENV, STORE_ENV, CATALOG_ENV, DATA_ENV):
        os.environ.pop(_key, None)
    # Jobs inherit the server's heap (MLflow, SQLAlchemy, scikit-learn, LightGBM, the rehearsal's
    # caches): frozen, the garbage collector in a job no longer walks it on every full collection.
    gc.collect()
    gc.freeze()
