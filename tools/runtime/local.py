"""Local runtime: each training job is its own process, in its own process group, with logs on disk.

Launch modes (``settings.local_launch`` or the constructor's ``mode``):
- ``forkserver`` (default): jobs fork from a warm multiprocessing fork server that has already imported
  mlflow, scikit-learn, LightGBM and the trainer (~2.5 s per fresh process otherwise). Each job is still
  a fresh process: a crash kills only that job.
- ``subprocess``: ``python -m tools.trainer --spec spec.json`` — slower to start, no shared parent.

State lives in ``settings.jobs_dir/<job_id>/`` so any process can observe a job, e.g. after the agent
restarts: ``spec.json``, ``job.json`` (pid and its start time, deadline), ``output.log`` (combined
stdout/stderr), ``status.json`` (outcome: state, exit code, wall and CPU seconds; written by the job
itself on exit, or by whoever observes it die), ``cancel_request.json`` (who asked to stop it, and why).
"""

from __future__ import annotations

import io
import multiprocessing.process
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from multiprocessing import forkserver, popen_forkserver, reduction, spawn, util
from multiprocessing.context import ForkServerProcess, set_spawning_popen
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from agent.config import Settings
from tools.specs import CancellationRecord, JobInfo, JobState, Resources, TrainingSpec

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from tools.trainer import TrainingResult

LaunchMode = Literal["forkserver", "subprocess"]
CancelKind = Literal["cancelled", "pruned", "timeout", "budget", "orphan"]
#: imported once by the fork server; every job forked from it starts with these loaded.
WARM_MODULES = ["tools.trainer", "tools.runtime.local"]  # the trainer warms MLflow's caches on import
#: set only in the fork server's environment: importing this module there rehearses a training and
#: opens the workspace's tracking store, so jobs fork with hot caches (see ``rehearse``).
REHEARSE_ENV = "EXPAGENT_FORKSERVER_REHEARSE"
STORE_ENV = "EXPAGENT_FORKSERVER_TRACKING_URI"
_SERVER_ENV_LOCK = threading.Lock()
#: seconds between SIGTERM and SIGKILL when stopping a job.
DEFAULT_GRACE_SECONDS = 10.0
#: a job directory without job.json older than this was abandoned mid-submit.
_SUBMIT_STALE_SECONDS = 60.0
_POLL_SECONDS = 0.05


def job_id_for(run_id: str) -> str:
    """Return the job ID of a run (deterministic, so a resubmission finds the existing job)."""
    return f"local-{run_id}"


def _now() -> datetime:
    return datetime.now(UTC)


def _write_json(path: Path, data: str) -> None:
    """Write ``data`` to ``path`` atomically (temp file + rename): readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(data)
    os.replace(tmp, path)


class JobOutcome(BaseModel):
    """``status.json``: how a job ended."""

    state: JobState
    exit_code: int | None = None
    reason: str | None = None
    finished_at: datetime = Field(default_factory=_now)
    wall_seconds: float | None = None
    cpu_seconds: float | None = None
    run_status: str | None = Field(default=None, description="The MLflow run's status when the job ended.")
    cancellation_recorded: bool = Field(default=False, description="cancellation.json is already on the run.")

    @classmethod
    def from_result(cls, result: TrainingResult, exit_code: int, wall: float, cpu: float) -> JobOutcome:
        """Return the outcome of a job that ran the trainer to its end."""
        states: dict[str, JobState] = {"FINISHED": "succeeded", "KILLED": "cancelled"}
        return cls(
            state=states.get(result.status, "failed"), exit_code=exit_code, reason=result.error,
            wall_seconds=wall, cpu_seconds=cpu, run_status=result.status,
            cancellation_recorded=result.stopped_by == "timeout",
        )  # fmt: skip


def write_outcome(path: Path, outcome: JobOutcome) -> None:
    """Write ``status.json`` atomically."""
    _write_json(path, outcome.model_dump_json(indent=2))


class JobRecord(BaseModel):
    """``job.json``: the process running a job."""

    job_id: str
    run_id: str
    mode: LaunchMode
    pid: int
    pid_start: int | None = Field(
        default=None, description="Process start time (clock ticks) to detect pid reuse."
    )
    submitted_at: datetime
    deadline: datetime
    session_id: str | None = None
    trial_number: int | None = None
    resources: Resources | None = None


class CancelRequest(BaseModel):
    """``cancel_request.json``: who asked to stop a job, and why."""

    cancelled_by: str
    reason: str
    kind: CancelKind = "cancelled"
    requested_at: datetime = Field(default_factory=_now)


# ---- processes ---------------------------------------------------------------------------------------


def _proc_stat(pid: int) -> list[str] | None:
    """Return /proc/<pid>/stat fields after the command name, or None if there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rindex(")") + 2 :].split()


def process_start(pid: int) -> int | None:
    """Return the process's start time in clock ticks since boot (None when unknown)."""
    fields = _proc_stat(pid)
    return int(fields[19]) if fields else None


def process_alive(pid: int, start: int | None) -> bool:
    """Return whether ``pid`` is the same, still running (not zombie) process."""
    fields = _proc_stat(pid)
    if fields is None:
        if Path("/proc/self/stat").exists():
            return False
        try:  # no /proc (not Linux): fall back to a signal-0 probe
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return fields[0] not in ("Z", "X") and (start is None or int(fields[19]) == start)


def process_cpu_seconds(pid: int) -> float | None:
    """Return user+system CPU seconds of a live process (and its reaped children)."""
    fields = _proc_stat(pid)
    if fields is None:
        return None
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    return ticks / os.sysconf("SC_CLK_TCK")


def signal_group(pid: int, signum: int) -> None:
    """Send ``signum`` to the job's process group (its own session), or to the pid if none exists yet."""
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
    except PermissionError:
        os.kill(pid, signum)


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
        self.sentinel, w = forkserver.connect_to_new_process(self._fds)  # type: ignore[attr-defined]
        _parent_w = os.dup(w)  # the child watches this as its parent sentinel
        self.finalizer = util.Finalize(self, util.close_fds, (_parent_w, self.sentinel))  # type: ignore[attr-defined]
        with open(w, "wb", closefd=True) as f:
            f.write(buf.getbuffer())
        self.pid = forkserver.read_signed(self.sentinel)


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
            forkserver.ensure_running()  # spawns synchronously: the environment is captured here
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


# ---- the runtime -------------------------------------------------------------------------------------


class LocalRuntime:
    """Runs trainer jobs as local processes (see the module docstring for the layout on disk)."""

    name = "local"

    def __init__(
        self,
        settings: Settings,
        mode: LaunchMode = "forkserver",
        grace_seconds: float = DEFAULT_GRACE_SECONDS,
        preload: list[str] | None = None,
    ) -> None:
        self.settings = settings
        self.mode: LaunchMode = mode
        self.grace_seconds = grace_seconds
        self.jobs_dir = settings.jobs_dir
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        # Jobs get the resolved store explicitly: the fork server's environment is frozen at its start.
        self._job_settings = settings.model_copy(
            update={"tracking_uri": settings.resolved_tracking_uri, "home": settings.home.resolve()}
        )
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._watchers: dict[str, threading.Thread] = {}
        # multiprocessing.Process or subprocess.Popen of the jobs this instance launched, by job ID
        self._processes: dict[str, Any] = {}
        # ended jobs (their status never changes again): job ID -> (session, info)
        self._final: dict[str, tuple[str | None, JobInfo]] = {}
        self._client: MlflowClient | None = None
        if mode == "forkserver":
            # Process-wide, and only effective before the fork server first starts.
            forkserver.set_forkserver_preload(preload or WARM_MODULES)

    @classmethod
    def from_settings(cls, settings: Settings, mode: LaunchMode | None = None) -> LocalRuntime:
        """Return a runtime for ``settings`` (launch mode from ``settings.local_launch`` by default)."""
        return cls(settings, mode=mode or settings.local_launch)

    def warm_up(self) -> None:
        """Start the fork server now; it imports and rehearses in the background (first job waits)."""
        if self.mode == "forkserver":
            start_fork_server(self._job_settings.resolved_tracking_uri)

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            from tools.tracking import make_client

            self._client = make_client(self.settings)
        return self._client

    # -- paths and files --

    def _dir(self, job_id: str) -> Path:
        if not job_id or "/" in job_id or job_id.startswith("."):
            raise KeyError(f"invalid job ID {job_id!r}")
        return self.jobs_dir / job_id

    def _record(self, job_id: str) -> JobRecord | None:
        path = self._dir(job_id) / "job.json"
        return JobRecord.model_validate_json(path.read_text()) if path.exists() else None

    def _outcome(self, job_id: str) -> JobOutcome | None:
        path = self._dir(job_id) / "status.json"
        return JobOutcome.model_validate_json(path.read_text()) if path.exists() else None

    def _cancel_request(self, job_id: str) -> CancelRequest | None:
        path = self._dir(job_id) / "cancel_request.json"
        return CancelRequest.model_validate_json(path.read_text()) if path.exists() else None

    # -- submit --

    def submit(self, spec: TrainingSpec) -> JobInfo:
        """Start a job for ``spec`` (whose MLflow run exists); a second submit returns the same job."""
        if not spec.run_id:
            raise ValueError("spec.run_id is not set: create the MLflow run before submitting the job")
        job_id = job_id_for(spec.run_id)
        directory = self._dir(job_id)
        with self._lock:
            try:
                directory.mkdir(parents=True)
            except FileExistsError:
                return self.status(job_id)
            try:
                record = self._start(spec, job_id, directory)
            except BaseException:
                shutil.rmtree(directory, ignore_errors=True)
                raise
            self._watch(record)
        return self._info(record, "running")

    def _start(self, spec: TrainingSpec, job_id: str, directory: Path) -> JobRecord:
        spec_path = directory / "spec.json"
        spec_path.write_text(spec.model_dump_json(indent=2))
        submitted = _now()
        pid = self._launch_forked(spec, job_id, directory) if self.mode == "forkserver" else (
            self._launch_subprocess(spec_path, job_id, directory)
        )  # fmt: skip
        record = JobRecord(
            job_id=job_id, run_id=spec.run_id or "", mode=self.mode, pid=pid, pid_start=process_start(pid),
            submitted_at=submitted, deadline=submitted + timedelta(seconds=spec.timeout_seconds),
            session_id=spec.session_id, trial_number=spec.trial_number, resources=spec.resources,
        )  # fmt: skip
        _write_json(directory / "job.json", record.model_dump_json(indent=2))
        return record

    def _launch_forked(self, spec: TrainingSpec, job_id: str, directory: Path) -> int:
        start_fork_server(self._job_settings.resolved_tracking_uri)
        process = _JobProcess(
            target=_job_process,
            args=(spec.model_dump_json(), self._job_settings, str(directory), job_id),
            name=job_id,
        )
        process.start()
        # Jobs outlive this process (they are adopted after a restart): keep multiprocessing's exit
        # handler from joining them. The process object itself keeps working for our watcher.
        multiprocessing.process._children.discard(process)  # type: ignore[attr-defined]
        self._processes[job_id] = process
        assert process.pid is not None
        return process.pid

    def _launch_subprocess(self, spec_path: Path, job_id: str, directory: Path) -> int:
        env = {
            **os.environ,
            "EXPAGENT_HOME": str(self._job_settings.home),
            "EXPAGENT_TRACKING_URI": self._job_settings.resolved_tracking_uri,
            "EXPAGENT_CATALOG_PATH": str(self.settings.resolved_catalog_path),
            "EXPAGENT_JOB_ID": job_id,
            "PYTHONUNBUFFERED": "1",
        }
        command = [
            sys.executable, "-m", "tools.trainer", "--spec", str(spec_path),
            "--status-file", str(directory / "status.json"), "--job-id", job_id,
        ]  # fmt: skip
        with open(directory / "output.log", "ab") as log:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env=env, cwd=Path(__file__).resolve().parents[2],
            )  # fmt: skip
        self._processes[job_id] = process
        return process.pid

    # -- watching (this process launched the job) --

    def _watch(self, record: JobRecord) -> None:
        thread = threading.Thread(
            target=self._watch_job, args=(record,), daemon=True, name=f"watch-{record.job_id}"
        )
        self._watchers[record.job_id] = thread
        thread.start()

    def _watch_job(self, record: JobRecord) -> None:
        """Reap the job; past its deadline (+ grace, the job stops itself first) stop it as a timeout."""
        wait = self._waiter(self._processes[record.job_id])
        limit = (record.deadline - _now()).total_seconds() + self.grace_seconds
        try:
            exit_code = wait(max(limit, 0.0))
            if exit_code is None:
                timeout = (record.deadline - record.submitted_at).total_seconds()
                self.cancel(
                    record.job_id, f"exceeded timeout_seconds ({timeout:g}s)", "runtime deadline", "timeout"
                )
                exit_code = wait(None)
            self._settle(record, exit_code)
        finally:  # even if settling failed (store unreachable): status() settles it later
            with self._changed:
                self._watchers.pop(record.job_id, None)
                self._processes.pop(record.job_id, None)
                self._changed.notify_all()

    @staticmethod
    def _waiter(process: Any) -> Callable[[float | None], int | None]:
        if isinstance(process, subprocess.Popen):

            def wait_popen(timeout: float | None) -> int | None:
                try:
                    return process.wait(timeout)
                except subprocess.TimeoutExpired:
                    return None

            return wait_popen

        def wait_forked(timeout: float | None) -> int | None:
            process.join(timeout)
            return process.exitcode

        return wait_forked

    # -- observing (any process) --

    def status(self, job_id: str) -> JobInfo:
        """Return the job's state; a job whose process vanished without an outcome is settled here."""
        if job_id in self._final:
            return self._final[job_id][1]
        directory = self._dir(job_id)
        if not directory.is_dir():
            raise KeyError(f"no local job {job_id!r} in {self.jobs_dir}")
        outcome = self._outcome(job_id)
        record = self._record(job_id)
        if record is None:
            return self._unstarted(job_id, directory)
        if outcome is None and (job_id in self._watchers or process_alive(record.pid, record.pid_start)):
            overdue = _now() > record.deadline + timedelta(seconds=self.grace_seconds)
            if overdue and job_id not in self._watchers:  # adopted: nobody else enforces its deadline
                return self.cancel(
                    job_id, "exceeded its timeout while unwatched", "runtime deadline", "timeout"
                )
            return self._info(record, "running")
        if outcome is None:
            outcome = self._settle(record, None)
        info = self._info(record, outcome.state, outcome)
        if outcome.state != "cancelled" or outcome.cancellation_recorded:  # final: never rewritten
            self._final[job_id] = (record.session_id, info)
        return info

    def _unstarted(self, job_id: str, directory: Path) -> JobInfo:
        age = time.time() - directory.stat().st_mtime
        state: JobState = "failed" if age > _SUBMIT_STALE_SECONDS else "pending"
        run_id = job_id.removeprefix("local-")
        reason = "submission was interrupted before the process started" if state == "failed" else None
        return JobInfo(job_id=job_id, run_id=run_id, runtime="local", state=state, reason=reason)

    def _info(self, record: JobRecord, state: JobState, outcome: JobOutcome | None = None) -> JobInfo:
        finished = outcome.finished_at if outcome else None
        wall = outcome.wall_seconds if outcome else (_now() - record.submitted_at).total_seconds()
        return JobInfo(
            job_id=record.job_id, run_id=record.run_id, runtime="local", state=state,
            exit_code=outcome.exit_code if outcome else None, reason=outcome.reason if outcome else None,
            submitted_at=record.submitted_at, started_at=record.submitted_at, finished_at=finished,
            wall_seconds=wall, cpu_seconds=outcome.cpu_seconds if outcome else None,
            trial_number=record.trial_number,
        )  # fmt: skip

    def _settle(
        self, record: JobRecord, exit_code: int | None, cpu_seconds: float | None = None
    ) -> JobOutcome:
        """Write the final outcome of a job whose process is gone, and close its MLflow run."""
        with self._lock:
            outcome = self._outcome(record.job_id)
            request = self._cancel_request(record.job_id)
            if request is not None and (outcome is None or outcome.state != "succeeded"):
                return self._settle_cancelled(record, request, outcome, exit_code, cpu_seconds)
            if outcome is not None:
                return outcome
            return self._settle_vanished(record, exit_code, cpu_seconds)

    def _settle_cancelled(self, record: JobRecord, request: CancelRequest, outcome: JobOutcome | None,
                          exit_code: int | None, cpu_seconds: float | None) -> JobOutcome:  # fmt: skip
        from tools.tracking import write_cancellation

        if outcome is not None and outcome.cancellation_recorded:
            return outcome
        wall = outcome.wall_seconds if outcome and outcome.wall_seconds else (
            (_now() - record.submitted_at).total_seconds()
        )  # fmt: skip
        cpu = outcome.cpu_seconds if outcome and outcome.cpu_seconds is not None else cpu_seconds
        cancellation = CancellationRecord(
            run_id=record.run_id, job_id=record.job_id, cancelled_by=request.cancelled_by,
            reason=request.reason, cancelled_at=request.requested_at, wall_seconds=wall, cpu_seconds=cpu,
            resources=record.resources, kind=request.kind,
        )  # fmt: skip
        write_cancellation(self.client, cancellation)
        final = JobOutcome(
            state="cancelled", exit_code=outcome.exit_code if outcome else exit_code,
            reason=f"{request.kind} by {request.cancelled_by}: {request.reason}", wall_seconds=wall,
            cpu_seconds=cpu, run_status="KILLED", cancellation_recorded=True,
        )  # fmt: skip
        write_outcome(self._dir(record.job_id) / "status.json", final)
        return final

    def _settle_vanished(
        self, record: JobRecord, exit_code: int | None, cpu_seconds: float | None
    ) -> JobOutcome:
        from tools.tracking import end_run

        if exit_code is None:
            reason = "process vanished"
        elif exit_code < 0:
            reason = f"process was killed by signal {signal.Signals(-exit_code).name}"
        else:
            reason = f"process exited with code {exit_code} before reporting an outcome"
        tail = self.logs(record.job_id, 200)
        end_run(self.client, record.run_id, "FAILED", note=f"Training job failed: {reason}",
                artifacts={"output.log": tail} if tail else None)  # fmt: skip
        outcome = JobOutcome(
            state="failed", exit_code=exit_code, reason=reason, cpu_seconds=cpu_seconds,
            wall_seconds=(_now() - record.submitted_at).total_seconds(), run_status="FAILED",
        )  # fmt: skip
        write_outcome(self._dir(record.job_id) / "status.json", outcome)
        return outcome

    def wait(self, job_ids: list[str], timeout: float | None = None) -> list[JobInfo]:
        """Block until at least one of ``job_ids`` is done or ``timeout`` passes; return all states."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            infos = [self.status(job_id) for job_id in job_ids]
            remaining = None if deadline is None else deadline - time.monotonic()
            if not job_ids or any(i.done for i in infos) or (remaining is not None and remaining <= 0):
                return infos
            with self._changed:
                self._changed.wait(min(_POLL_SECONDS, remaining) if remaining is not None else _POLL_SECONDS)

    def logs(self, job_id: str, tail_lines: int = 200) -> str:
        """Return the last ``tail_lines`` lines of the job's combined stdout/stderr (not redacted)."""
        path = self._dir(job_id) / "output.log"
        if not self._dir(job_id).is_dir():
            raise KeyError(f"no local job {job_id!r} in {self.jobs_dir}")
        if not path.exists() or tail_lines <= 0:
            return ""
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size, block, data = handle.tell(), 65536, b""
            while size > 0 and data.count(b"\n") <= tail_lines:
                step = min(block, size)
                size -= step
                handle.seek(size)
                data = handle.read(step) + data
        lines = data.decode("utf-8", errors="replace").splitlines()
        return "\n".join(lines[-tail_lines:])

    def cancel(self, job_id: str, reason: str, cancelled_by: str, kind: CancelKind = "cancelled") -> JobInfo:
        """Stop the job's process group (SIGTERM, then SIGKILL after the grace period); run ends KILLED."""
        record = self._record(job_id)
        if record is None:
            self.status(job_id)  # raises KeyError for an unknown job
            raise KeyError(f"job {job_id!r} has not started yet; try again in a moment")
        outcome = self._outcome(job_id)
        if outcome is not None:
            return self._info(record, outcome.state, outcome)
        request = CancelRequest(cancelled_by=cancelled_by, reason=reason, kind=kind)
        _write_json(self._dir(job_id) / "cancel_request.json", request.model_dump_json(indent=2))
        cpu = self._terminate(record)
        outcome = self._settle(record, None, cpu)
        return self._info(record, outcome.state, outcome)

    def _terminate(self, record: JobRecord) -> float | None:
        """SIGTERM the group, SIGKILL it after the grace period; return the last CPU sample."""
        cpu = process_cpu_seconds(record.pid)
        signal_group(record.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_seconds
        while process_alive(record.pid, record.pid_start) and time.monotonic() < deadline:
            cpu = process_cpu_seconds(record.pid) or cpu
            time.sleep(_POLL_SECONDS)
        if process_alive(record.pid, record.pid_start):
            signal_group(record.pid, signal.SIGKILL)
            while process_alive(record.pid, record.pid_start) and time.monotonic() < deadline + 5:
                time.sleep(_POLL_SECONDS)
        return cpu

    def list_jobs(self, session_id: str | None = None) -> list[JobInfo]:
        """List the jobs in the workspace, optionally only those of ``session_id``, oldest first."""
        infos = []
        for directory in self.jobs_dir.iterdir():
            final = self._final.get(directory.name)
            owner = final[0] if final else None
            if final is None:
                record = self._record(directory.name) if directory.is_dir() else None
                if record is None:
                    continue
                owner = record.session_id
            if session_id is None or owner == session_id:
                infos.append(self.status(directory.name))
        return sorted(infos, key=lambda i: i.submitted_at or _now())

    def close(self) -> None:
        """Stop observing. Running jobs keep running and can be adopted by another runtime instance."""
        with self._changed:
            self._changed.notify_all()


if os.environ.get(REHEARSE_ENV) == "1" and multiprocessing.process.current_process().name == "MainProcess":
    # Only the fork server's environment sets this (see start_fork_server); it imports this module once.
    try:
        with _silenced():
            rehearse(os.environ.get(STORE_ENV))
    except Exception:  # a failed rehearsal only costs speed; jobs still work
        pass
    for _key in (REHEARSE_ENV, STORE_ENV):
        os.environ.pop(_key, None)
