"""The files of a local job in ``settings.jobs_dir/<job_id>/``: what each holds and how it is written.

``spec.json`` (the TrainingSpec), ``job.json`` (``JobRecord``: the process and its deadline),
``output.log`` (combined stdout/stderr), ``status.json`` (``JobOutcome``: how the job ended; written by
the job itself on exit, or by whoever observes it die) and ``cancel_request.json`` (``CancelRequest``).
Every JSON file is written atomically, so any process can read a job's state at any time.
"""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from tools.core.redact import redact_text
from tools.core.specs import JobState, Resources

RunStatus = Literal["FINISHED", "FAILED", "KILLED"]


class TrainingResult(BaseModel):
    """What one training run produced (also printed as the job's last stdout line)."""

    run_id: str
    status: RunStatus
    metric: str = Field(description="The spec's primary metric.")
    value: float | None = Field(default=None, description="The primary metric on the held-out split.")
    metrics: dict[str, float] = Field(default_factory=dict)
    model_uri: str | None = None
    wall_seconds: float = 0.0
    error: str | None = Field(default=None, description="Why the run failed or was stopped.")
    stopped_by: Literal["sigterm", "timeout"] | None = None


LaunchMode = Literal["worker", "forkserver", "subprocess"]
CancelKind = Literal["cancelled", "pruned", "timeout", "budget", "orphan"]


def job_id_for(run_id: str) -> str:
    """Return the job ID of a run (deterministic, so a resubmission finds the existing job)."""
    return f"local-{run_id}"


def utc_now() -> datetime:
    """Return the current time in UTC (the timestamps in the job files)."""
    return datetime.now(UTC)


def write_json(path: Path, data: str) -> None:
    """Write ``data`` to ``path`` atomically (temp file + rename): readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(redact_text(data))  # job files are a sink too: never a secret on disk
    os.replace(tmp, path)


class JobOutcome(BaseModel):
    """``status.json``: how a job ended."""

    state: JobState
    exit_code: int | None = None
    reason: str | None = None
    finished_at: datetime = Field(default_factory=utc_now)
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
    write_json(path, outcome.model_dump_json(indent=2))


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
    cpu_offset: float = Field(
        default=0.0, description="The process's CPU seconds when the job started (a worker runs many jobs)."
    )


class CancelRequest(BaseModel):
    """``cancel_request.json``: who asked to stop a job, and why."""

    cancelled_by: str
    reason: str
    kind: CancelKind = "cancelled"
    requested_at: datetime = Field(default_factory=utc_now)


def read_tail(path: Path, count: int) -> str:
    """Return the last ``count`` lines of a text file (reads backwards in blocks; "" if it is missing)."""
    if not path.exists() or count <= 0:
        return ""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size, block, data = handle.tell(), 65536, b""
        while size > 0 and data.count(b"\n") <= count:
            step = min(block, size)
            size -= step
            handle.seek(size)
            data = handle.read(step) + data
    lines = data.decode("utf-8", errors="replace").splitlines()
    return "\n".join(lines[-count:])
