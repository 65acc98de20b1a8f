"""Translate Kubernetes Job and Pod objects into expagent's :class:`JobInfo` (state, reason, times)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tools.core.specs import JobInfo, JobState
from tools.runtime.job_manifest import RUN_ID_ANNOTATION, SESSION_LABEL, TRIAL_LABEL

#: Waiting reasons after which a container will not start without someone fixing the image or config.
FATAL_WAITING_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
    }
)


def _true_conditions(job: Any) -> dict[str, Any]:
    return {c.type: c for c in (job.status.conditions or []) if c.status == "True"} if job.status else {}


def is_finished(job: Any) -> bool:
    """Return whether the Job has a terminal condition (Complete or Failed)."""
    conditions = _true_conditions(job)
    return "Complete" in conditions or "Failed" in conditions


def latest_pod(pods: list[Any]) -> Any | None:
    """Return the most recently created pod (the one that decides the Job's fate)."""
    dated = [p for p in pods if p.metadata is not None]
    epoch = datetime.min.replace(tzinfo=UTC)
    return max(dated, key=lambda p: p.metadata.creation_timestamp or epoch, default=None)


def _container_state(pod: Any | None) -> Any | None:
    if pod is None or pod.status is None or not pod.status.container_statuses:
        return None
    return pod.status.container_statuses[0].state


def pod_termination(pod: Any | None) -> tuple[str | None, int | None]:
    """Return (reason, exit code) of the pod's terminated trainer container, if it terminated."""
    state = _container_state(pod)
    if state is None or state.terminated is None:
        return None, None
    return state.terminated.reason, state.terminated.exit_code


def pod_waiting(pod: Any | None) -> tuple[str | None, str | None]:
    """Return (reason, message) of a container that is waiting to start, if it is."""
    state = _container_state(pod)
    if state is None or state.waiting is None:
        return None, None
    return state.waiting.reason, state.waiting.message


def failure_reason(job: Any, pod: Any | None) -> str:
    """Return a one-line reason for a failed Job: DeadlineExceeded, OOMKilled, Error with exit code…"""
    condition = _true_conditions(job).get("Failed")
    job_reason = condition.reason if condition is not None else None
    if job_reason == "DeadlineExceeded":
        deadline = job.spec.active_deadline_seconds if job.spec else None
        return f"DeadlineExceeded: the Job ran longer than its {deadline} s deadline and was stopped"
    reason, code = pod_termination(pod)
    if reason is not None:
        return f"{reason} (exit code {code})"
    waiting, message = pod_waiting(pod)
    if waiting is not None:
        return f"{waiting}: {message or 'container never started'}"
    if condition is not None:
        return f"{job_reason}: {condition.message}"
    return "failed (no reason reported)"


def _state(job: Any, pod: Any | None) -> tuple[JobState, str | None]:
    conditions = _true_conditions(job)
    if "Complete" in conditions:
        return "succeeded", None
    if "Failed" in conditions:
        return "failed", failure_reason(job, pod)
    waiting, message = pod_waiting(pod)
    if waiting in FATAL_WAITING_REASONS:
        return "pending", f"{waiting}: {message}"
    status = job.status
    running = status is not None and (status.ready or 0) > 0
    if not running and pod is not None and pod.status is not None:
        running = pod.status.phase == "Running"
    return ("running" if running else "pending"), None


def _finished_at(job: Any) -> datetime | None:
    if job.status is None:
        return None
    if job.status.completion_time is not None:
        return job.status.completion_time
    failed = _true_conditions(job).get("Failed")
    return failed.last_transition_time if failed is not None else None


def _started_at(job: Any, pod: Any | None) -> datetime | None:
    state = _container_state(pod)
    if state is not None and state.running is not None:
        return state.running.started_at
    if state is not None and state.terminated is not None and state.terminated.started_at is not None:
        return state.terminated.started_at
    return job.status.start_time if job.status else None


def job_info(job: Any, pods: list[Any], now: datetime | None = None) -> JobInfo:
    """Return the :class:`JobInfo` for a ``V1Job`` and its pods."""
    pod = latest_pod(pods)
    state, reason = _state(job, pod)
    meta = job.metadata
    labels, annotations = meta.labels or {}, meta.annotations or {}
    started, finished = _started_at(job, pod), _finished_at(job) if state in ("succeeded", "failed") else None
    end = (finished or now or datetime.now(UTC)) if started else None
    trial = labels.get(TRIAL_LABEL)
    return JobInfo(
        job_id=meta.name,
        run_id=annotations.get(RUN_ID_ANNOTATION, ""),
        runtime="kubernetes",
        state=state,
        namespace=meta.namespace,
        exit_code=0 if state == "succeeded" else pod_termination(pod)[1],
        reason=reason,
        submitted_at=meta.creation_timestamp,
        started_at=started,
        finished_at=finished,
        wall_seconds=(end - started).total_seconds() if started and end else None,
        trial_number=int(trial) if trial and trial.isdigit() else None,
    )


def session_of(job: Any) -> str | None:
    """Return the (label-safe) session a Job was launched by."""
    return (job.metadata.labels or {}).get(SESSION_LABEL)
