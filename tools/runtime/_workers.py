"""Warm workers: processes forked once from the fork server that each run training jobs one at a time.

A process forked per job pays ~60 ms per job that a warm process does not (measured: fork and reap,
copy-on-write page faults, SQLAlchemy's per-engine statement cache and MLflow's first-use work redone in
every child). A worker keeps that warm across jobs, like a hand-written in-process loop, while every job
still runs outside the agent process:

- a worker runs one job at a time in its own session (process group), output redirected to the job's
  ``output.log``; the job's pid is the worker's pid, so cancelling the job stops the worker;
- a worker is reused only after a job that ended cleanly (exit 0); after a failure, a stop or a crash it
  exits and the pool forks a fresh one for the next job, so a crash costs only the job it ran;
- the pool retires a worker after ``MAX_JOBS`` jobs or ``IDLE_SECONDS`` without one, and on ``close``
  (an idle worker also exits by itself a minute later); a worker whose agent process is gone finishes
  its current job (its files record the outcome, so a restarted agent adopts it) and exits.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from multiprocessing import Pipe
from multiprocessing.connection import Connection, wait
from pathlib import Path

from tools.core.settings import Settings
from tools.core.specs import TrainingSpec
from tools.runtime.forkserver import JobProcess, detach, job_environment, run_job_here, start_fork_server

#: jobs a worker runs before it is replaced (bounds memory growth and state kept between jobs).
MAX_JOBS = 100
#: an idle worker older than this is retired at the next job (each holds a warm interpreter's memory).
IDLE_SECONDS = 120.0
#: a worker idle this long exits by itself; later than the pool's limit, so the pool never hands a job
#: to a worker that is just exiting.
_SELF_EXIT_SECONDS = IDLE_SECONDS + 60.0


def _quiet_output() -> None:
    """Point fds 1 and 2 at /dev/null (between jobs nothing may land in a finished job's log)."""
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.close(null)


def _run_one(
    spec_json: str, settings: Settings, directory: Path, job_id: str, environment: dict[str, str]
) -> int:
    """Run one job inside a worker; return its exit code (the trainer writes ``status.json``)."""
    try:
        return run_job_here(spec_json, settings, directory, job_id, environment)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        _quiet_output()


def _serve(conn: Connection) -> None:
    """A worker's main loop: take a job, run it, report its exit code; exit after anything but 0."""
    os.setsid()
    _quiet_output()
    while True:
        try:
            if not conn.poll(_SELF_EXIT_SECONDS):
                return
            request = conn.recv()
        except (EOFError, OSError):  # the agent process is gone
            return
        if request is None:  # retired by the pool
            return
        spec_json, settings, job_dir, job_id, environment = request
        code = _run_one(spec_json, settings, Path(job_dir), job_id, environment)
        try:
            conn.send(code)
        except OSError:  # the agent process is gone; the job's files hold its outcome
            return
        if code != 0:
            sys.exit(code)  # a failed or stopped job may have left state behind: never reuse


class Worker:
    """The agent's handle on one worker process."""

    def __init__(self, settings: Settings) -> None:
        start_fork_server(
            settings.resolved_tracking_uri, settings.resolved_catalog_path, settings.data_dir, rehearse=False
        )
        self.conn, child = Pipe()
        self.process = JobProcess(target=_serve, args=(child,), name="expagent-worker")
        self.process.start()
        detach(self.process)
        child.close()
        assert self.process.pid is not None
        self.pid: int = self.process.pid
        self.jobs = 0
        self.idle_since = time.monotonic()
        self.current: str | None = None  # the job it runs, until its exit code arrives

    def start(self, spec: TrainingSpec, settings: Settings, directory: Path, job_id: str) -> None:
        """Hand the worker a job (it must be idle)."""
        self.jobs += 1
        self.current = job_id
        self.conn.send((spec.model_dump_json(), settings, str(directory), job_id, job_environment()))

    def wait(self, timeout: float | None) -> int | None:
        """Wait for the running job to end; return its exit code, or None if ``timeout`` passed first.

        The exit code is the one the worker reported, or the worker's own if it died mid-job.
        """
        ready = wait([self.conn, self.process.sentinel], timeout)
        if not ready:
            return None
        self.current = None
        if self.conn in ready:
            try:
                return int(self.conn.recv())
            except (EOFError, OSError):
                pass  # it died while reporting: fall through to its exit code
        self.process.join()
        return self.process.exitcode

    def retire(self) -> None:
        """Ask an idle worker to exit and let go of it."""
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.conn.close()


class WorkerPool:
    """Idle workers of one local runtime, reused for the next job."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._idle: list[Worker] = []
        self._by_pid: dict[int, Worker] = {}  # every worker forked and not known to be gone
        self._lock = threading.Lock()
        self._closed = False

    def running(self, pid: int, job_id: str) -> bool | None:
        """Whether worker ``pid`` still runs ``job_id`` (None: not one of this pool's live workers)."""
        with self._lock:
            worker = self._by_pid.get(pid)
        return None if worker is None else worker.current == job_id

    def acquire(self) -> Worker:
        """Return an idle, live worker (forking a new one if there is none)."""
        now = time.monotonic()
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.process.is_alive() and now - worker.idle_since < IDLE_SECONDS:
                    return worker
                self._forget(worker)
                worker.retire()
        worker = Worker(self.settings)
        with self._lock:
            self._by_pid[worker.pid] = worker
        return worker

    def _forget(self, worker: Worker) -> None:
        self._by_pid.pop(worker.pid, None)

    def release(self, worker: Worker, exit_code: int | None) -> None:
        """Take a worker back after its job ended with ``exit_code`` (it exits by itself unless 0)."""
        with self._lock:
            if exit_code == 0 and not self._closed and worker.jobs < MAX_JOBS:
                worker.idle_since = time.monotonic()
                self._idle.append(worker)
                return
            self._forget(worker)
        if exit_code != 0:
            worker.conn.close()  # it exits by itself
        else:
            worker.retire()

    def close(self) -> None:
        """Retire every idle worker; busy ones are retired when their job ends."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            for worker in idle:
                self._forget(worker)
        for worker in idle:
            worker.retire()
