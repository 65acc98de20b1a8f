"""The runtime interface every backend (local processes, Kubernetes Jobs) implements."""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from tools.core.specs import JobInfo, TrainingSpec


class Runtime(Protocol):
    """Runs trainer jobs. ``spec.run_id`` is always set: the MLflow run exists before submission."""

    name: str

    def submit(self, spec: TrainingSpec, approvals: Collection[str] = ()) -> JobInfo:
        """Start a job for ``spec``; idempotent per ``spec.run_id`` (never starts it twice).

        ``approvals`` are the keys the user granted this session (a runtime that re-checks what it
        creates, like the Kubernetes one, applies them).
        """
        ...

    def status(self, job_id: str) -> JobInfo:
        """Return the job's current state (raises KeyError for an unknown job)."""
        ...

    def wait(self, job_ids: list[str], timeout: float | None = None) -> list[JobInfo]:
        """Block until at least one of ``job_ids`` is done or ``timeout`` passes; return all states."""
        ...

    def logs(self, job_id: str, tail_lines: int = 200) -> str:
        """Return the last ``tail_lines`` lines of the job's combined stdout/stderr."""
        ...

    def cancel(self, job_id: str, reason: str, cancelled_by: str) -> JobInfo:
        """Stop the job and its children; the trainer's run ends KILLED with a cancellation record."""
        ...

    def list_jobs(self, session_id: str | None = None) -> list[JobInfo]:
        """List known jobs, optionally only those launched by ``session_id``."""
        ...

    def close(self) -> None:
        """Release resources (worker processes, watches)."""
        ...
