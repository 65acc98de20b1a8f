"""Run trainer jobs as Kubernetes ``batch/v1`` Jobs through the official client.

- submit: the guard checks every manifest; the Job name is derived from the MLflow run, so retries
  (5xx, timeouts) and resumes never create a second Job — a 409 means "already there" and is adopted.
- namespaces: each Job goes to ``spec.namespace`` (else ``settings.k8s_namespace``); a namespace is
  watched from its first Job on. The guard rejects namespaces outside ``settings.namespaces``.
- status/wait/list: answered from one shared watch per namespace (jobs and pods), not per-job polls. A
  Job this runtime knew that is gone from the API (deleted by the start-grace rule, a cancel, or someone
  else) is reported failed/cancelled with the recorded reason, never as unknown.
- failures: pod reasons (OOMKilled, DeadlineExceeded, ImagePullBackOff, Error + exit code) land in
  ``JobInfo.reason``; pod logs become an MLflow artifact and the run ends FAILED if the trainer did not.
- cancel: delete with foreground propagation (pods go too); the run ends KILLED with a cancellation record.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tools.core.specs import CancellationRecord, JobInfo, Resources, TrainingSpec
from tools.core.verdicts import unapproved
from tools.runtime._kube_finalizer import JobFinalizer
from tools.runtime._kube_runs import RunRecorder
from tools.runtime._kube_status import (
    job_info,
    latest_pod,
    session_of,
)
from tools.runtime._kube_watch import JobWatches
from tools.runtime.job_manifest import (
    CONTAINER_NAME,
    MANAGED_SELECTOR,
    RUN_ID_ANNOTATION,
    job_manifest,
    job_name,
    label_value,
)
from tools.runtime.kube_client import load_api_client, tracking_reachability_warning
from tools.runtime.kube_errors import KubernetesSubmitError, KubernetesUnavailable, ManifestRejected, describe
from tools.runtime.manifest_checks import manifest_findings

if TYPE_CHECKING:
    from tools.core.settings import Settings

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
ORPHAN_GRACE_SECONDS = 60.0
#: how long status() waits for the finalizer to record a Job that vanished before reporting it anyway.
VANISHED_WAIT_SECONDS = 30.0


class KubernetesRuntime(JobFinalizer):
    """Runs trainer jobs as Kubernetes Jobs in ``spec.namespace`` (default ``settings.k8s_namespace``).

    Args:
        settings: expagent settings (namespace, image, budget, tracking URI...).
        api_client: A configured client (see :func:`tools.runtime.kube_client.load_api_client`).
        max_attempts: Create/delete attempts on 5xx answers and timeouts.
        backoff_seconds: First retry delay (doubles each attempt, with jitter).
        request_timeout: (connect, read) seconds for each API request.
    """

    name = "kubernetes"

    def __init__(
        self,
        settings: Settings,
        api_client: client.ApiClient,
        max_attempts: int = 5,
        backoff_seconds: float = 0.2,
        request_timeout: tuple[float, float] = (5.0, 30.0),
    ) -> None:
        self.settings, self.namespace = settings, settings.k8s_namespace
        self.batch, self.core = client.BatchV1Api(api_client), client.CoreV1Api(api_client)
        self._api_client = api_client
        self.max_attempts, self.backoff_seconds, self.request_timeout = (
            max_attempts,
            backoff_seconds,
            request_timeout,
        )
        self.runs = RunRecorder(settings)
        self.notices: list[str] = []
        self._changed = threading.Condition()
        self._version = 0
        self._outcomes: dict[str, JobInfo] = {}
        self._finalizing: set[str] = set()
        self._cancelling: set[str] = set()
        self._stuck_since: dict[str, float] = {}
        self._sessions: dict[str, str | None] = {}
        self._captured_logs: dict[str, str] = {}
        #: the last version of every Job seen, kept after the Job is deleted (its run, labels, spec).
        self._last_seen: dict[str, Any] = {}
        #: why this runtime deleted a Job itself (start grace, cancel), set before the delete is sent.
        self._deleted_by_us: dict[str, JobInfo] = {}
        self._tasks: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._worker = threading.Thread(target=self._work, name="k8s-finalizer", daemon=True)
        self._watches = JobWatches(
            self.batch.list_namespaced_job, self.core.list_namespaced_pod, MANAGED_SELECTOR,
            self._on_job, self._on_pod,
        )  # fmt: skip
        warning = tracking_reachability_warning(settings, api_client)
        if warning:
            log.warning(warning)
            self.notices.append(warning)
        self._worker.start()
        try:
            self._watch_namespace(self.namespace)
        except KubernetesUnavailable:
            self.close()
            raise
        self._tasks.put(self._reconcile_all)

    @classmethod
    def from_settings(cls, settings: Settings) -> KubernetesRuntime:
        """Connect with the configured kubeconfig/context (or in-cluster config) and start watching."""
        return cls(settings, load_api_client(settings))

    def _watch_namespace(self, namespace: str) -> None:
        """Watch ``namespace``'s expagent Jobs and pods from now on (KubernetesUnavailable if it cannot)."""
        try:
            self._watches.watch(namespace)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as err:
            detail = describe(err) if isinstance(err, ApiException) else str(err)
            host = self._api_client.configuration.host
            raise KubernetesUnavailable(
                f"cannot list Jobs and pods in namespace {namespace!r} at {host}: {detail}"
            ) from err

    # ---- submit -------------------------------------------------------------------------------

    def submit(self, spec: TrainingSpec, approvals: Collection[str] = ()) -> JobInfo:
        """Create the Job for ``spec`` (once per run: an existing Job for the run is adopted).

        The manifest is checked first (``manifest_checks``); ``approvals`` are the keys the user granted.
        """
        if not spec.run_id:
            raise ValueError("spec.run_id is not set: create the MLflow run before submitting the job")
        name = job_name(spec.run_id)
        if name in self._outcomes:
            return self._outcomes[name]
        try:
            existing = self._watches.job(name)
            if existing is not None:
                return self._adopt(existing, spec.run_id)
            manifest = job_manifest(spec, self.settings)
            self._check_policy(manifest, approvals)  # before anything is watched or created in its namespace
            self._watch_for_submit(manifest["metadata"]["namespace"])
            job = self._create(manifest, spec.run_id)
        except KubernetesSubmitError as err:
            self.runs.record_submit_failure(spec.run_id, str(err))
            raise
        self._seen(job)
        self._watches.put(job)
        self._notify()
        return self.status(name)

    def _watch_for_submit(self, namespace: str) -> None:
        try:
            self._watch_namespace(namespace)
        except KubernetesUnavailable as err:
            raise KubernetesSubmitError(str(err)) from err

    def _check_policy(self, manifest: dict[str, Any], approvals: Collection[str]) -> None:
        left = unapproved(manifest_findings(manifest, self.settings), approvals)
        if left:
            raise ManifestRejected(left[0].rule, left[0].reason)

    def _create(self, manifest: dict[str, Any], run_id: str) -> Any:
        name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
        last_error = ""
        for attempt in range(1, self.max_attempts + 1):
            try:
                body = cast(Any, manifest)  # send exactly the dict the guard checked
                return self.batch.create_namespaced_job(
                    namespace, body, _request_timeout=self.request_timeout
                )
            except ApiException as err:
                if err.status == 409:
                    return self._adopt_by_name(name, run_id, namespace)
                if err.status not in RETRYABLE_STATUS:
                    raise KubernetesSubmitError(f"creating Job {name} failed: {describe(err)}") from err
                last_error = describe(err)
            except (urllib3.exceptions.HTTPError, OSError) as err:
                last_error = f"{type(err).__name__}: {err}"  # the Job may or may not have been stored
            log.info("creating Job %s failed (attempt %d): %s", name, attempt, last_error)
            self._pause(attempt)
            existing = self._find(name, namespace)
            if existing is not None:
                return self._adopt_obj(existing, run_id)
        raise KubernetesSubmitError(
            f"creating Job {name} failed after {self.max_attempts} attempts: {last_error}"
        )

    def _pause(self, attempt: int) -> None:
        time.sleep(self.backoff_seconds * 2 ** (attempt - 1) * (0.5 + random.random()))

    def _find(self, name: str, namespace: str | None = None) -> Any | None:
        """Return the Job from the watch caches, else from a GET in ``namespace`` (or each namespace it
        may be in); None if absent or unreachable. A Job found by GET has its namespace watched."""
        cached = self._watches.job(name)
        if cached is not None:
            return cached
        for candidate in [namespace] if namespace else self._candidate_namespaces(name):
            job = self._read(name, candidate)
            if job is not None:
                self._adopt_namespace(job)
                return job
        return None

    def _candidate_namespaces(self, name: str) -> list[str]:
        last = self._last_seen.get(name)
        known = [last.metadata.namespace] if last is not None else []
        return list(dict.fromkeys([*known, *self._watches.namespaces, *self.settings.namespaces]))

    def _read(self, name: str, namespace: str) -> Any | None:
        try:
            return self.batch.read_namespaced_job(name, namespace, _request_timeout=self.request_timeout)
        except ApiException as err:
            if err.status != 404:
                log.info("reading Job %s in %s failed: %s", name, namespace, describe(err))
            return None
        except (urllib3.exceptions.HTTPError, OSError) as err:
            log.info("reading Job %s in %s failed: %s", name, namespace, err)
            return None

    def _adopt_namespace(self, job: Any) -> None:
        """Watch the namespace of a Job found by GET, so its changes reach the cache from now on."""
        self._seen(job)
        try:
            self._watch_namespace(job.metadata.namespace)
        except KubernetesUnavailable as err:
            log.warning("%s; Job %s is followed by GET only", err, job.metadata.name)
        self._watches.put(job)

    def _adopt_by_name(self, name: str, run_id: str, namespace: str) -> Any:
        existing = self._find(name, namespace)
        if existing is None:
            raise KubernetesSubmitError(f"the API said Job {name} already exists, but it cannot be read")
        return self._adopt_obj(existing, run_id)

    def _adopt_obj(self, job: Any, run_id: str) -> Any:
        owner = (job.metadata.annotations or {}).get(RUN_ID_ANNOTATION)
        if owner != run_id:
            raise KubernetesSubmitError(f"Job {job.metadata.name} already exists for another run ({owner})")
        log.info("adopting existing Job %s for run %s", job.metadata.name, run_id)
        return job

    def _adopt(self, job: Any, run_id: str) -> JobInfo:
        self._adopt_obj(job, run_id)
        return self.status(job.metadata.name)

    # ---- status -------------------------------------------------------------------------------

    def status(self, job_id: str) -> JobInfo:
        """Return the job's state from the watch cache (one GET only for a Job the watch never saw).

        A Job this runtime submitted or saw that is gone from the API is reported as it ended (failed or
        cancelled, with the reason); only a Job it never knew raises KeyError.
        """
        with self._changed:
            outcome = self._outcomes.get(job_id)
        if outcome is not None:
            return outcome
        job = self._find(job_id)
        if job is None:
            return self._vanished(job_id)
        info = job_info(job, self._job_pods(job_id))
        if info.state == "failed":
            return self._recorded(job_id, info)
        return info

    def _recorded(self, name: str, provisional: JobInfo) -> JobInfo:
        """Return a failed Job's recorded outcome, waiting (bounded) while it is being finalized.

        The pod watch can lag the Job's: the cache may still show the pod running when the Job has
        failed, and the reason (OOMKilled, exit code) comes from the pod. Finalizing reads the pods
        from the API, so its outcome is the one to report.
        """
        if threading.current_thread() is self._worker:  # the worker records it: never wait there
            return provisional
        with self._changed:
            if name in self._finalizing:
                self._changed.wait_for(lambda: name in self._outcomes, VANISHED_WAIT_SECONDS)
            return self._outcomes.get(name, provisional)

    def _job_pods(self, name: str) -> list[Any]:
        return self._watches.pods_of(name)

    def _seen(self, job: Any) -> None:
        with self._changed:
            self._last_seen[job.metadata.name] = job

    def _vanished(self, name: str) -> JobInfo:
        """Return the outcome of a known Job that is gone from the API, once it is recorded in MLflow."""
        with self._changed:
            last = self._last_seen.get(name)
            if last is None:
                namespaces = ", ".join(self._candidate_namespaces(name))
                raise KeyError(f"no Kubernetes Job {name!r} in namespaces {namespaces}")
            busy = name in self._outcomes or name in self._finalizing or name in self._cancelling
            if not busy:  # deleted behind our back and the watch has not told us yet
                self._finalizing.add(name)
                self._tasks.put(lambda: self._finalize_lost(last))
            if threading.current_thread() is not self._worker:  # the worker records it: never wait there
                self._changed.wait_for(lambda: name in self._outcomes, VANISHED_WAIT_SECONDS)
            outcome = self._outcomes.get(name)
        return outcome if outcome is not None else self._provisional(name, last)

    def _provisional(self, name: str, last: Any) -> JobInfo:
        """Return how a vanished Job ended while its outcome is still being recorded."""
        with self._changed:
            decided = self._deleted_by_us.get(name)
        if decided is not None:
            return decided
        info = job_info(last, [])
        status = self.runs.run_status(info.run_id) if info.run_id else None
        state = "failed" if status == "FAILED" else "cancelled"
        reason = f"the Job was deleted before it finished (MLflow run status: {status or 'unknown'})"
        return info.model_copy(update={"state": state, "reason": reason, "finished_at": datetime.now(UTC)})

    def wait(self, job_ids: list[str], timeout: float | None = None) -> list[JobInfo]:
        """Block until one of ``job_ids`` is done (and recorded in MLflow) or ``timeout`` passes."""
        for job_id in job_ids:
            self.status(job_id)  # unknown ids raise KeyError now, not after the timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while not any(j in self._outcomes for j in job_ids):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._changed.wait(1.0 if remaining is None else min(1.0, remaining))
        return [self.status(j) for j in job_ids]

    def list_jobs(self, session_id: str | None = None) -> list[JobInfo]:
        """List the expagent Jobs in the namespace (only ``session_id``'s when given)."""
        wanted = label_value(session_id) if session_id else None
        with self._changed:
            names = {j.metadata.name for j in self._watches.jobs()} | set(self._outcomes)
            names = {n for n in names if wanted is None or self._sessions.get(n) == wanted}
        infos = []
        for name in sorted(names):
            try:
                infos.append(self.status(name))
            except KeyError:
                continue  # deleted between the listing and now
        return infos

    # ---- logs and cancel ----------------------------------------------------------------------

    def logs(self, job_id: str, tail_lines: int = 200) -> str:
        """Return the last ``tail_lines`` lines the job's (latest) pod wrote."""
        pod = latest_pod(self._job_pods(job_id))
        known = self._watches.job(job_id) or self._last_seen.get(job_id)
        if pod is None and known is not None:  # the pod watch can lag the Job's: ask the API first
            pod = latest_pod(self._fresh_pods(job_id, known.metadata.namespace))
        if pod is None:
            captured = self._captured_logs.get(job_id)
            if captured is not None:
                return "\n".join(captured.splitlines()[-tail_lines:])
            self.status(job_id)  # KeyError for an unknown job
            return f"(job {job_id} has no pods: they have not been created yet or were already deleted)"
        return self._read_log(pod, tail_lines)

    def _read_log(self, pod: Any, tail_lines: int | None = None) -> str:
        pod_name = pod.metadata.name
        try:
            text: str = self.core.read_namespaced_pod_log(
                pod_name,
                pod.metadata.namespace,
                container=CONTAINER_NAME,
                tail_lines=tail_lines,
                _request_timeout=self.request_timeout,
            )
            return text
        except ApiException as err:
            if err.status in (400, 404):
                return f"(no logs from pod {pod_name}: {describe(err)})"
            raise

    def cancel(self, job_id: str, reason: str, cancelled_by: str) -> JobInfo:
        """Delete the Job and its pods; the run ends KILLED with a cancellation record."""
        return self._stop(job_id, reason, cancelled_by, "cancelled")

    def _stop(self, job_id: str, reason: str, cancelled_by: str, kind: Any) -> JobInfo:
        info = self.status(job_id)
        now = datetime.now(UTC)
        final = info.model_copy(update={"state": "cancelled", "reason": reason, "finished_at": now})
        with self._changed:
            if info.done:
                return info
            if job_id in self._cancelling:  # another caller (e.g. the start-up reconcile) is stopping it:
                return self._deleted_by_us.get(job_id, info)  # report that cancellation, not the old state
            self._cancelling.add(job_id)
            self._deleted_by_us[job_id] = final
            job = self._last_seen.get(job_id)
        try:
            self._delete_job(job_id, info.namespace or self.namespace, "Foreground")
        except Exception:
            with self._changed:  # not deleted: a later cancel must try again
                self._cancelling.discard(job_id)
                self._deleted_by_us.pop(job_id, None)
            raise
        record = CancellationRecord(
            run_id=info.run_id,
            job_id=job_id,
            cancelled_by=cancelled_by,
            reason=reason,
            cancelled_at=now,
            wall_seconds=info.wall_seconds,
            resources=_resources_of(job),
            kind=kind,
        )
        try:
            if job is None or self._tracked(job):
                self.runs.record_cancellation(record)
        finally:
            self._record_outcome(final)
        return final

    def _delete_job(self, name: str, namespace: str, propagation: str) -> None:
        body = client.V1DeleteOptions(propagation_policy=propagation)
        for attempt in range(1, self.max_attempts + 1):
            try:
                self.batch.delete_namespaced_job(
                    name, namespace, body=body, _request_timeout=self.request_timeout
                )
                return
            except ApiException as err:
                if err.status == 404:
                    return
                if err.status not in RETRYABLE_STATUS or attempt == self.max_attempts:
                    raise
            except (urllib3.exceptions.HTTPError, OSError):
                if attempt == self.max_attempts:
                    raise
            self._pause(attempt)

    # ---- reconcile ------------------------------------------------------------------------------

    def reconcile(self, session_id: str | None = None) -> list[JobInfo]:
        """Reconcile Jobs (of ``session_id``, else all) with MLflow after a start or resume.

        Running Jobs are adopted (the watch follows them), finished ones are recorded (failed runs get
        their logs and end FAILED), and Jobs still alive past their deadline are cancelled as orphans.
        """
        wanted = label_value(session_id) if session_id else None
        infos = []
        for job in self._watches.jobs():
            if wanted is not None and session_of(job) != wanted:
                continue
            name = job.metadata.name
            info = self.status(name)
            if not info.done and self._tracked(job) and _past_deadline(job):
                info = self._stop(name, "orphaned: still alive past its deadline", "reconcile", "orphan")
            infos.append(info)
        return infos

    def _reconcile_all(self) -> None:
        self.reconcile()

    def close(self) -> None:
        """Stop the watches and the finalizer (pending finalizations finish first)."""
        self._tasks.put(None)
        self._worker.join(timeout=30)
        self._watches.stop()
        self._api_client.close()

    def __enter__(self) -> KubernetesRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _resources_of(job: Any | None) -> Resources | None:
    """Return the TrainingSpec resources embedded in the Job's trainer command, if readable."""
    if job is None or job.spec is None:
        return None
    command = job.spec.template.spec.containers[0].command or []
    if "--spec-json" not in command:
        return None
    try:
        return TrainingSpec.model_validate_json(command[command.index("--spec-json") + 1]).resources
    except (IndexError, ValueError):
        return None


def _past_deadline(job: Any) -> bool:
    deadline = job.spec.active_deadline_seconds if job.spec else None
    created = job.metadata.creation_timestamp
    if not deadline or created is None:
        return False
    return (datetime.now(UTC) - created).total_seconds() > deadline + ORPHAN_GRACE_SECONDS
