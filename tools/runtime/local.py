"""Local runtime: each training job is its own process, in its own process group, with logs on disk.

Launch modes (``settings.local_launch`` or the constructor's ``mode``):
- ``worker`` (default): warm worker processes, forked once from the fork server, run jobs one at a time
  (``tools.runtime._workers``). A job runs outside the agent in the worker's process group; a worker is
  reused only after a clean job, so a crash or a cancel costs only that job and its worker.
- ``forkserver``: each job is a fresh process forked from a warm fork server that has already imported
  mlflow, scikit-learn, LightGBM and the trainer (``tools.runtime.forkserver``); ~60 ms slower per job.
- ``subprocess``: ``python -m tools.training.trainer --spec spec.json`` — slower to start, no shared parent.

State lives in ``settings.jobs_dir/<job_id>/`` (``tools.training.job_files``) so any process can observe
a job, e.g. after the agent restarts: ``spec.json``, ``job.json`` (pid and its start time, deadline),
``output.log`` (combined stdout/stderr), ``status.json`` (outcome: state, exit code, wall and CPU
seconds; written by the job itself on exit, or by whoever observes it die), ``cancel_request.json`` (who
asked to stop it, and why).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tools.core._redacting_client import note_job_error
from tools.core.settings import Settings
from tools.core.specs import CancellationRecord, JobInfo, JobState, TrainingSpec
from tools.runtime import forkserver
from tools.runtime._workers import Worker, WorkerPool
from tools.runtime.processes import (
    POLL_SECONDS,
    process_alive,
    process_cpu_seconds,
    process_start,
    terminate_group,
)
from tools.training.job_files import (  # JobOutcome, JobRecord, job_id_for: also imported from here
    CancelKind,
    CancelRequest,
    JobOutcome,
    JobRecord,
    LaunchMode,
    job_id_for,
    read_tail,
    utc_now,
    write_json,
    write_outcome,
)

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

#: seconds between SIGTERM and SIGKILL when stopping a job.
DEFAULT_GRACE_SECONDS = 10.0
#: a job directory without job.json older than this was abandoned mid-submit.
_SUBMIT_STALE_SECONDS = 60.0
#: ``LocalRuntime._owner`` of a job directory whose job.json is not written yet.
_NOT_STARTED = object()


class LocalRuntime:
    """Runs trainer jobs as local processes (see the module docstring for the layout on disk)."""

    name = "local"

    def __init__(
        self,
        settings: Settings,
        mode: LaunchMode = "worker",
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
        # session of every started job seen so far, by job ID (see ``_owner``)
        self._owners: dict[str, str | None] = {}
        self._client: MlflowClient | None = None
        self._workers = WorkerPool(self._job_settings)
        if mode != "subprocess":
            # Process-wide, and only effective before the fork server first starts.
            forkserver.use_preload(preload)
            # Started now, not at the first submit: its imports and rehearsal (several seconds) run in
            # the background while the agent does intake, planning and model calls.
            self.warm_up()

    @classmethod
    def from_settings(cls, settings: Settings, mode: LaunchMode | None = None) -> LocalRuntime:
        """Return a runtime for ``settings`` (launch mode from ``settings.local_launch`` by default)."""
        return cls(settings, mode=mode or settings.local_launch)

    def warm_up(self) -> None:
        """Start the fork server if it is not running (non-blocking; the first submit waits for it)."""
        if self.mode != "subprocess":
            settings = self._job_settings
            forkserver.start_fork_server(
                settings.resolved_tracking_uri, settings.resolved_catalog_path, settings.data_dir,
                rehearse=self.mode == "forkserver",
            )  # fmt: skip

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            from tools.core.tracking import make_client

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
        if not path.exists():
            return None
        outcome = JobOutcome.model_validate_json(path.read_text())
        if outcome.reason:  # a job that could not reach the tracking server: so will this process
            note_job_error(str(self.client.tracking_uri), outcome.reason, outcome.finished_at)
        return outcome

    def _cancel_request(self, job_id: str) -> CancelRequest | None:
        path = self._dir(job_id) / "cancel_request.json"
        return CancelRequest.model_validate_json(path.read_text()) if path.exists() else None

    # -- submit --

    def submit(self, spec: TrainingSpec, approvals: Collection[str] = ()) -> JobInfo:
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
            self._owners[job_id] = record.session_id
            self._watch(record)
        return self._info(record, "running")

    def _start(self, spec: TrainingSpec, job_id: str, directory: Path) -> JobRecord:
        spec_path = directory / "spec.json"
        spec_path.write_text(spec.model_dump_json(indent=2))
        submitted = utc_now()
        cpu_offset = 0.0
        if self.mode == "worker":
            pid, cpu_offset = self._launch_in_worker(spec, job_id, directory)
        elif self.mode == "forkserver":
            pid = self._launch_forked(spec, job_id, directory)
        else:
            pid = self._launch_subprocess(spec_path, job_id, directory)
        record = JobRecord(
            job_id=job_id, run_id=spec.run_id or "", mode=self.mode, pid=pid, pid_start=process_start(pid),
            submitted_at=submitted, deadline=submitted + timedelta(seconds=spec.timeout_seconds),
            session_id=spec.session_id, trial_number=spec.trial_number, resources=spec.resources,
            cpu_offset=cpu_offset,
        )  # fmt: skip
        write_json(directory / "job.json", record.model_dump_json(indent=2))
        return record

    def _launch_in_worker(self, spec: TrainingSpec, job_id: str, directory: Path) -> tuple[int, float]:
        """Start the job in an idle worker; return its pid and its CPU seconds before the job."""
        worker = self._workers.acquire()
        cpu_offset = process_cpu_seconds(worker.pid) or 0.0  # the worker is idle: its total so far
        try:
            worker.start(spec, self._job_settings, directory, job_id)
        except BaseException:
            self._workers.release(worker, None)
            raise
        self._processes[job_id] = worker
        return worker.pid, cpu_offset

    def _launch_forked(self, spec: TrainingSpec, job_id: str, directory: Path) -> int:
        process = forkserver.launch_job(spec, self._job_settings, directory, job_id)
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
            sys.executable, "-m", "tools.training.trainer", "--spec", str(spec_path),
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
        limit = (record.deadline - utc_now()).total_seconds() + self.grace_seconds
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

    def _waiter(self, process: Any) -> Callable[[float | None], int | None]:
        if isinstance(process, Worker):

            def wait_worker(timeout: float | None) -> int | None:
                exit_code = process.wait(timeout)
                if exit_code is not None:
                    self._workers.release(process, exit_code)
                return exit_code

            return wait_worker

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
            overdue = utc_now() > record.deadline + timedelta(seconds=self.grace_seconds)
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
        wall = outcome.wall_seconds if outcome else (utc_now() - record.submitted_at).total_seconds()
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
        from tools.core.tracking import write_cancellation

        if outcome is not None and outcome.cancellation_recorded:
            return outcome
        wall = outcome.wall_seconds if outcome and outcome.wall_seconds else (
            (utc_now() - record.submitted_at).total_seconds()
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
        from tools.core.tracking import end_run

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
            wall_seconds=(utc_now() - record.submitted_at).total_seconds(), run_status="FAILED",
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
                self._changed.wait(min(POLL_SECONDS, remaining) if remaining is not None else POLL_SECONDS)

    def logs(self, job_id: str, tail_lines: int = 200) -> str:
        """Return the last ``tail_lines`` lines of the job's combined stdout/stderr (not redacted)."""
        if not self._dir(job_id).is_dir():
            raise KeyError(f"no local job {job_id!r} in {self.jobs_dir}")
        return read_tail(self._dir(job_id) / "output.log", tail_lines)

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
        write_json(self._dir(job_id) / "cancel_request.json", request.model_dump_json(indent=2))
        cpu = self._terminate(record)
        outcome = self._settle(record, None, cpu)
        return self._info(record, outcome.state, outcome)

    def _terminate(self, record: JobRecord) -> float | None:
        """SIGTERM the group, SIGKILL it after the grace period; return the job's last CPU sample."""
        if self._workers.running(record.pid, record.job_id) is False:
            return None  # it has just ended: the signal must not reach its worker's next job
        cpu = terminate_group(record.pid, record.pid_start, self.grace_seconds)
        return None if cpu is None else max(cpu - record.cpu_offset, 0.0)

    def list_jobs(self, session_id: str | None = None) -> list[JobInfo]:
        """List the jobs in the workspace, optionally only those of ``session_id``, oldest first."""
        infos = []
        with os.scandir(self.jobs_dir) as entries:
            names = [entry.name for entry in entries if entry.is_dir()]
        for name in names:
            owner = self._owner(name)
            if owner is _NOT_STARTED:
                continue
            if session_id is None or owner == session_id:
                infos.append(self.status(name))
        return sorted(infos, key=lambda i: i.submitted_at or utc_now())

    def _owner(self, job_id: str) -> str | None | object:
        """Return the session of a started job (``_NOT_STARTED`` if it has no job.json yet).

        The guard counts a session's jobs on every launch, so this is cached: a job's session never
        changes once its job.json exists. The directory listing stays the source of truth, so jobs
        another process started (or that existed before a restart) are found on the next call.
        """
        if job_id in self._owners:
            return self._owners[job_id]
        record = self._record(job_id)
        if record is None:
            return _NOT_STARTED
        self._owners[job_id] = record.session_id
        return record.session_id

    def close(self) -> None:
        """Stop observing and retire idle workers. Running jobs keep running and can be adopted by
        another runtime instance."""
        self._workers.close()
        with self._changed:
            self._changed.notify_all()
