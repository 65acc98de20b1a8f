"""The Kubernetes runtime's bookkeeping of Job outcomes: watch events in, recorded outcomes out.

A Job that failed, vanished or never started is finalized on a background worker: its pod logs are
captured onto its MLflow run, the run is ended FAILED/KILLED, and the outcome is recorded for
``status()``/``wait()``. ``KubernetesRuntime`` inherits this; the state it shares is declared below.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import urllib3
from kubernetes.client.exceptions import ApiException

from tools.runtime._kube_status import FATAL_WAITING_REASONS, is_finished, job_info, pod_waiting, session_of

if TYPE_CHECKING:
    from kubernetes import client

    from tools.core.settings import Settings
    from tools.core.specs import JobInfo
    from tools.runtime._kube_runs import RunRecorder
    from tools.runtime._kube_watch import JobWatches

log = logging.getLogger("tools.runtime.kubernetes")

_MAX_CAPTURED_LOG = 64_000


class JobFinalizer:
    """Turns watch events into recorded Job outcomes (see the module docstring)."""

    settings: Settings
    core: client.CoreV1Api
    runs: RunRecorder
    request_timeout: tuple[float, float]
    _changed: threading.Condition
    _version: int
    _outcomes: dict[str, JobInfo]
    _finalizing: set[str]
    _cancelling: set[str]
    _stuck_since: dict[str, float]
    _sessions: dict[str, str | None]
    _captured_logs: dict[str, str]
    _last_seen: dict[str, Any]
    _deleted_by_us: dict[str, JobInfo]
    _tasks: queue.Queue[Callable[[], None] | None]
    _watches: JobWatches

    def _job_pods(self, name: str) -> list[Any]:
        raise NotImplementedError

    def _read_log(self, pod: Any, tail_lines: int | None = None) -> str:
        raise NotImplementedError

    def _delete_job(self, name: str, namespace: str, propagation: str) -> None:
        raise NotImplementedError

    def _on_job(self, event_type: str, job: Any) -> None:
        name = job.metadata.name
        with self._changed:
            self._sessions[name] = session_of(job)
            self._last_seen[name] = job
            known = name in self._outcomes or name in self._finalizing or name in self._cancelling
            if not known and event_type == "DELETED" and not is_finished(job):
                self._finalizing.add(name)
                self._tasks.put(lambda: self._finalize_lost(job))
            elif not known and is_finished(job):
                info = job_info(job, self._job_pods(name))
                if info.state == "succeeded":
                    self._outcomes[name] = info  # the trainer ended its run FINISHED itself
                else:
                    self._finalizing.add(name)
                    self._tasks.put(lambda: self._finalize_failed(job))
            self._bump()

    def _on_pod(self, event_type: str, pod: Any) -> None:
        job = (pod.metadata.labels or {}).get("job-name")
        if job is None:
            return
        waiting, _ = pod_waiting(pod)
        with self._changed:
            if event_type != "DELETED" and waiting in FATAL_WAITING_REASONS:
                self._stuck_since.setdefault(job, time.monotonic())
            else:
                self._stuck_since.pop(job, None)
            self._bump()

    def _finalize_failed(self, job: Any) -> None:
        name = job.metadata.name
        pods = self._fresh_pods(name, job.metadata.namespace)
        info = job_info(job, pods)
        try:
            if self._tracked(job) and info.run_id:
                logs = self._collect_logs(name, pods)
                self.runs.record_failure(info.run_id, name, info.reason or "failed", logs)
        finally:
            self._record_outcome(info)

    def _fresh_pods(self, name: str, namespace: str) -> list[Any]:
        """List the Job's pods from the API (the pod watch may lag the Job's); the cache on error."""
        try:
            pods: list[Any] = self.core.list_namespaced_pod(
                namespace, label_selector=f"job-name={name}", _request_timeout=self.request_timeout
            ).items
            return pods or self._job_pods(name)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as err:
            log.warning("listing pods of Job %s failed: %s", name, err)
            return self._job_pods(name)

    def _collect_logs(self, name: str, pods: list[Any]) -> dict[str, str]:
        logs: dict[str, str] = {}
        for pod in pods:
            try:
                logs[pod.metadata.name] = self._read_log(pod)
            except (ApiException, urllib3.exceptions.HTTPError, OSError) as err:
                logs[pod.metadata.name] = f"(could not read the pod log: {err})\n"
        if not logs:
            logs = {name: "(no pod logs: the pods were deleted before they could be read)\n"}
        self._captured_logs[name] = "\n".join(logs.values())[-_MAX_CAPTURED_LOG:]
        return logs

    def _finalize_lost(self, job: Any) -> None:
        name = job.metadata.name
        reason = "the Job was deleted outside expagent before it finished"
        info = job_info(job, []).model_copy(
            update={"state": "cancelled", "reason": reason, "finished_at": datetime.now(UTC)}
        )
        try:
            if self._tracked(job) and info.run_id:
                self.runs.record_lost(info.run_id, name, reason)
                if self.runs.run_status(info.run_id) == "FINISHED":  # it had finished: the trainer said so
                    info = info.model_copy(update={"state": "succeeded", "reason": None})
        finally:
            self._record_outcome(info)

    def _fail_stuck(self, name: str) -> None:
        job = self._watches.job(name)
        if job is None:
            return
        info = job_info(job, self._job_pods(name))
        grace = self.settings.k8s_start_grace_seconds
        reason = f"{info.reason} (the pod did not start within {grace:g} s)"
        final = info.model_copy(
            update={"state": "failed", "reason": reason, "finished_at": datetime.now(UTC)}
        )
        with self._changed:
            self._finalizing.add(name)
            self._deleted_by_us[name] = final  # what status() reports until the outcome is recorded
        try:
            self._delete_job(name, job.metadata.namespace, "Background")
            if self._tracked(job) and info.run_id:
                self.runs.record_failure(info.run_id, name, reason, {})
        finally:
            self._record_outcome(final)

    def _sweep_stuck(self) -> None:
        limit = time.monotonic() - self.settings.k8s_start_grace_seconds
        with self._changed:
            stuck = [
                n
                for n, since in self._stuck_since.items()
                if since <= limit
                and n not in self._outcomes
                and n not in self._finalizing
                and n not in self._cancelling
            ]
        for name in stuck:
            self._fail_stuck(name)

    def _tracked(self, job: Any) -> bool:
        """Return whether the Job logs to our tracking store (only then do we write to its run)."""
        containers = job.spec.template.spec.containers if job.spec else []
        env = {e.name: e.value for c in containers for e in (c.env or [])}
        return env.get("MLFLOW_TRACKING_URI") == self.settings.resolved_tracking_uri

    def _record_outcome(self, info: JobInfo) -> None:
        with self._changed:
            self._outcomes[info.job_id] = info
            self._finalizing.discard(info.job_id)
            self._stuck_since.pop(info.job_id, None)
            self._bump()

    def _bump(self) -> None:
        # Callers hold self._changed.
        self._version += 1
        self._changed.notify_all()

    def _notify(self) -> None:
        with self._changed:
            self._bump()

    def _work(self) -> None:
        while True:
            try:
                task = self._tasks.get(timeout=1.0)
            except queue.Empty:
                self._run_task(self._sweep_stuck)
                continue
            if task is None:
                return
            self._run_task(task)

    @staticmethod
    def _run_task(task: Callable[[], None]) -> None:
        try:
            task()
        except Exception:  # noqa: BLE001 - the worker must survive one bad job; the error is logged
            log.exception("Kubernetes runtime background task failed")
