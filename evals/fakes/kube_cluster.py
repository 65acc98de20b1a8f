"""The fake cluster's controllers: a Job controller and a "kubelet" that runs pods as local processes.

Each pod's container command runs on this machine (the image is ignored; a leading ``python`` becomes
this interpreter) with only the pod's environment, so a submitted training Job really trains and logs
to MLflow. Pod and Job status move as a cluster's would: Pending -> Running -> Succeeded/Failed, Job
conditions Complete/Failed (BackoffLimitExceeded, DeadlineExceeded), deletion with propagation, and
``ttlSecondsAfterFinished``.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from evals.fakes.kube_faults import Faults, PodFault
from evals.fakes.kube_store import ApiError, Obj, ObjectStore, now_rfc3339

REPO_ROOT = Path(__file__).resolve().parents[2]
_SUFFIX_CHARS = "bcdfghjklmnpqrstvwxz2456789"
_BASE_ENV_KEYS = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")
#: what an ``oom`` pod runs instead of its command: a process that sits at its memory limit until the OOM
#: killer fires. Running the real command raced the kill: a warm pod can train a small model and end its
#: MLflow run FINISHED within ``oom_after_seconds``, so the scenario passed or failed on machine speed.
_OOM_HOG = [sys.executable, "-c", "import time; time.sleep(3600)"]


def _condition(kind: str, reason: str, message: str) -> Obj:
    stamp = now_rfc3339()
    return {
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastProbeTime": stamp,
        "lastTransitionTime": stamp,
    }


def _container_status(pod: Obj, state: Obj, ready: bool = False) -> list[Obj]:
    container = pod["spec"]["containers"][0]
    return [
        {
            "name": container["name"],
            "image": container.get("image", ""),
            "imageID": "",
            "ready": ready,
            "restartCount": 0,
            "started": "running" in state,
            "state": state,
        }
    ]


class FakeCluster:
    """Job controller + kubelet over an :class:`ObjectStore`."""

    def __init__(
        self,
        store: ObjectStore,
        faults: Faults,
        log_dir: Path,
        workdir: Path = REPO_ROOT,
        command_override: list[str] | None = None,
        grace_seconds: float = 2.0,
    ) -> None:
        self.store, self.faults, self.log_dir, self.workdir = store, faults, log_dir, workdir
        self.command_override = command_override
        self.grace_seconds = grace_seconds
        self._procs: dict[tuple[str, str], subprocess.Popen[bytes]] = {}
        self._kill_cause: dict[tuple[str, str], str] = {}
        self._timers: list[threading.Timer] = []
        self._lock = threading.Lock()

    # ---- Job controller ---------------------------------------------------------------------

    def create_job(self, namespace: str, body: Obj) -> Obj:
        """Validate, default and store a Job, then start its first pod."""
        _validate_job(namespace, body)
        uid = str(uuid.uuid4())
        body["metadata"]["uid"] = uid
        spec = body["spec"]
        for key, value in (("parallelism", 1), ("completions", 1), ("backoffLimit", 6)):
            spec.setdefault(key, value)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
        template_meta = spec["template"].setdefault("metadata", {})
        template_meta.setdefault("labels", {}).update(
            self._pod_selector_labels(body["metadata"]["name"], uid)
        )
        body["status"] = {}
        created = self.store.create("jobs", namespace, body)
        threading.Thread(target=self._start_job, args=(namespace, created), daemon=True).start()
        return created

    @staticmethod
    def _pod_selector_labels(job: str, uid: str) -> dict[str, str]:
        return {
            "batch.kubernetes.io/controller-uid": uid,
            "batch.kubernetes.io/job-name": job,
            "controller-uid": uid,
            "job-name": job,
        }

    def _start_job(self, namespace: str, job: Obj) -> None:
        name = job["metadata"]["name"]

        def started(obj: Obj) -> None:
            obj["status"].update(startTime=now_rfc3339(), active=1, ready=0)

        if self.store.update("jobs", namespace, name, started) is None:
            return
        deadline = job["spec"].get("activeDeadlineSeconds")
        if deadline:
            self._schedule(float(deadline), self._deadline_exceeded, namespace, name)
        self._spawn_pod(namespace, job)

    def _schedule(self, delay: float, func: Any, *args: Any) -> None:
        timer = threading.Timer(delay, func, args)
        timer.daemon = True
        with self._lock:
            self._timers = [t for t in self._timers if t.is_alive()] + [timer]
        timer.start()

    def _spawn_pod(self, namespace: str, job: Obj) -> None:
        meta, template = job["metadata"], job["spec"]["template"]
        suffix = "".join(random.choices(_SUFFIX_CHARS, k=5))
        pod = {
            "metadata": {
                "name": f"{meta['name']}-{suffix}",
                "labels": dict(template["metadata"]["labels"]),
                "annotations": dict(template["metadata"].get("annotations") or {}),
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {**template["spec"], "nodeName": "fake-node"},
            "status": {"phase": "Pending", "conditions": [_condition("PodScheduled", "", "")]},
        }
        pod["status"]["containerStatuses"] = _container_status(
            pod, {"waiting": {"reason": "ContainerCreating"}}
        )
        created = self.store.create("pods", namespace, pod)
        threading.Thread(target=self._run_pod, args=(namespace, created, meta["name"]), daemon=True).start()

    def _job_finished(self, job: Obj) -> bool:
        return any(c["type"] in ("Complete", "Failed") for c in job["status"].get("conditions", []))

    def _pod_finished(self, namespace: str, job_name: str, exit_code: int) -> None:
        retry: list[Obj] = []

        def record(job: Obj) -> None:
            status = job["status"]
            if self._job_finished(job) or job["metadata"].get("deletionTimestamp"):
                return
            status.update(active=0, ready=0)
            if exit_code == 0:
                status["succeeded"] = status.get("succeeded", 0) + 1
                status["completionTime"] = now_rfc3339()
                status["conditions"] = [
                    _condition(
                        "SuccessCriteriaMet",
                        "CompletionsReached",
                        "Reached expected number of succeeded pods",
                    ),
                    _condition("Complete", "CompletionsReached", "Reached expected number of succeeded pods"),
                ]
                return
            status["failed"] = status.get("failed", 0) + 1
            if status["failed"] > job["spec"].get("backoffLimit", 6):
                status["conditions"] = [
                    _condition(
                        "FailureTarget", "BackoffLimitExceeded", "Job has reached the specified backoff limit"
                    ),
                    _condition(
                        "Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit"
                    ),
                ]
            else:
                status["active"] = 1
                retry.append(job)

        job = self.store.update("jobs", namespace, job_name, record)
        if retry:
            self._spawn_pod(namespace, retry[0])
        elif job is not None and self._job_finished(job):
            self._schedule_ttl(namespace, job)

    def _schedule_ttl(self, namespace: str, job: Obj) -> None:
        ttl = job["spec"].get("ttlSecondsAfterFinished")
        if ttl is not None:
            self._schedule(float(ttl), self.delete_job, namespace, job["metadata"]["name"], "Background")

    def _deadline_exceeded(self, namespace: str, name: str) -> None:
        try:
            job = self.store.get("jobs", namespace, name)
        except ApiError:
            return
        if self._job_finished(job) or job["metadata"].get("deletionTimestamp"):
            return
        pods = self._job_pods(namespace, name)
        for pod in pods:
            self._terminate_pod(namespace, pod["metadata"]["name"], cause="deadline")
        message = "Job was active longer than specified deadline"

        def failed(obj: Obj) -> None:
            obj["status"]["failed"] = obj["status"].get("failed", 0) + len(pods)
            obj["status"].update(active=0, ready=0)
            obj["status"]["conditions"] = [
                _condition("FailureTarget", "DeadlineExceeded", message),
                _condition("Failed", "DeadlineExceeded", message),
            ]

        updated = self.store.update("jobs", namespace, name, failed)
        if updated is not None:
            self._schedule_ttl(namespace, updated)

    def _job_pods(self, namespace: str, job_name: str) -> list[Obj]:
        return self.store.select("pods", namespace, f"job-name={job_name}")[0]

    def delete_job(self, namespace: str, name: str, propagation: str = "Orphan") -> Obj:
        """Delete a Job: Orphan keeps its pods, Background removes them after, Foreground before."""
        job = self.store.get("jobs", namespace, name)
        if propagation == "Foreground":

            def mark(obj: Obj) -> None:
                obj["metadata"]["deletionTimestamp"] = now_rfc3339()
                obj["metadata"]["deletionGracePeriodSeconds"] = 0
                obj["metadata"]["finalizers"] = ["foregroundDeletion"]

            marked = self.store.update("jobs", namespace, name, mark) or job
            threading.Thread(target=self._collect, args=(namespace, name, True), daemon=True).start()
            return marked
        self.store.remove("jobs", namespace, name)
        if propagation == "Background":
            threading.Thread(target=self._collect, args=(namespace, name, False), daemon=True).start()
        else:
            for pod in self._job_pods(namespace, name):
                self.store.update("pods", namespace, pod["metadata"]["name"], _drop_owner)
        return job

    def _collect(self, namespace: str, job_name: str, then_remove_job: bool) -> None:
        pods = self._job_pods(namespace, job_name)
        threads = [
            threading.Thread(target=self._terminate_pod, args=(namespace, p["metadata"]["name"], "deleted"))
            for p in pods
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if then_remove_job:
            self.store.remove("jobs", namespace, job_name)

    # ---- kubelet ------------------------------------------------------------------------------

    def delete_pod(self, namespace: str, name: str) -> Obj:
        """Delete a pod (graceful: SIGTERM, then SIGKILL after the grace period)."""
        pod = self.store.get("pods", namespace, name)
        threading.Thread(target=self._terminate_pod, args=(namespace, name, "deleted"), daemon=True).start()
        return pod

    def _terminate_pod(self, namespace: str, name: str, cause: str) -> None:
        key = (namespace, name)

        def mark(obj: Obj) -> None:
            obj["metadata"]["deletionTimestamp"] = now_rfc3339()
            obj["metadata"]["deletionGracePeriodSeconds"] = int(self.grace_seconds)

        self.store.update("pods", namespace, name, mark)
        with self._lock:
            proc = self._procs.get(key)
            self._kill_cause[key] = cause
        if proc is not None:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(self.grace_seconds)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        self.store.remove("pods", namespace, name)

    def _run_pod(self, namespace: str, pod: Obj, job_name: str) -> None:
        name = pod["metadata"]["name"]
        fault = self.faults.take_pod_fault(job_name)
        if fault is not None and fault.kind == "never_start":
            self._never_start(namespace, pod)
            return
        env = self._pod_env(namespace, pod)
        if env is None:
            return
        log_path = self.log_dir / f"{namespace}_{name}.log"
        if fault is not None and fault.kind == "fail":
            log_path.write_text(f"fake kubelet: injected failure, exit code {fault.exit_code}\n")
            self._terminated(namespace, name, fault.exit_code, "Error", now_rfc3339())
            self._pod_finished(namespace, job_name, fault.exit_code)
            return
        code, reason, started = self._run_process(namespace, pod, env, log_path, fault)
        if reason is None:
            return  # deleted or killed at the deadline: whoever killed it updates the Job
        self._terminated(namespace, name, code, reason, started)
        self._pod_finished(namespace, job_name, code)

    def _run_process(
        self, namespace: str, pod: Obj, env: dict[str, str], log_path: Path, fault: PodFault | None
    ) -> tuple[int, str | None, str]:
        name = pod["metadata"]["name"]
        key = (namespace, name)
        with open(log_path, "wb") as log, self._lock:
            if key in self._kill_cause or not self.store.exists("pods", namespace, name):
                return 137, None, ""
            oom = fault is not None and fault.kind == "oom"
            if oom:
                log.write(b"fake kubelet: the container is over its memory limit\n")
                log.flush()
            proc = subprocess.Popen(
                _OOM_HOG if oom else self._command(pod), env=env, cwd=self.workdir, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
            self._procs[key] = proc
        started = now_rfc3339()
        self._set_running(namespace, pod, started)
        if oom:
            self._schedule(self.faults.oom_after_seconds, self._oom_kill, key)
        raw = proc.wait()
        with self._lock:
            self._procs.pop(key, None)
            cause = self._kill_cause.pop(key, None)
        code = raw if raw >= 0 else 128 - raw
        if cause == "oom":
            return 137, "OOMKilled", started
        if cause is not None:
            return code, None, started
        return code, ("Completed" if code == 0 else "Error"), started

    def _oom_kill(self, key: tuple[str, str]) -> None:
        with self._lock:
            proc = self._procs.get(key)
            if proc is None or key in self._kill_cause:
                return
            self._kill_cause[key] = "oom"
        _signal_group(proc, signal.SIGKILL)

    def _command(self, pod: Obj) -> list[str]:
        container = pod["spec"]["containers"][0]
        argv = list(self.command_override or [*container.get("command", []), *container.get("args", [])])
        if argv and argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        return argv

    def _pod_env(self, namespace: str, pod: Obj) -> dict[str, str] | None:
        env = {k: os.environ[k] for k in _BASE_ENV_KEYS if k in os.environ}
        env.update(HOSTNAME=pod["metadata"]["name"], PYTHONPATH=str(self.workdir))
        for var in pod["spec"]["containers"][0].get("env", []):
            value = self._env_value(namespace, pod, var)
            if value is None:
                return None
            env[var["name"]] = value
        return env

    def _env_value(self, namespace: str, pod: Obj, var: Obj) -> str | None:
        if "value" in var:
            return str(var["value"])
        source = var.get("valueFrom", {})
        if "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            return {"metadata.name": pod["metadata"]["name"], "metadata.namespace": namespace}.get(path, "")
        ref = source.get("secretKeyRef")
        if ref is None:
            return ""
        try:
            secret = self.store.get("secrets", namespace, ref["name"])
        except ApiError:
            self._waiting(namespace, pod, "CreateContainerConfigError", f'secret "{ref["name"]}" not found')
            return None
        import base64

        data = secret.get("data", {})
        if ref["key"] not in data:
            self._waiting(
                namespace, pod, "CreateContainerConfigError",
                f"couldn't find key {ref['key']} in Secret {namespace}/{ref['name']}",
            )  # fmt: skip
            return None
        return base64.b64decode(data[ref["key"]]).decode()

    # ---- pod status updates ---------------------------------------------------------------------

    def _never_start(self, namespace: str, pod: Obj) -> None:
        image = pod["spec"]["containers"][0].get("image", "")
        self._waiting(namespace, pod, "ErrImagePull", f'failed to pull and unpack image "{image}": not found')
        time.sleep(0.05)
        self._waiting(namespace, pod, "ImagePullBackOff", f'Back-off pulling image "{image}"')

    def _waiting(self, namespace: str, pod: Obj, reason: str, message: str) -> None:
        def waiting(obj: Obj) -> None:
            obj["status"]["containerStatuses"] = _container_status(
                obj, {"waiting": {"reason": reason, "message": message}}
            )

        self.store.update("pods", namespace, pod["metadata"]["name"], waiting)

    def _set_running(self, namespace: str, pod: Obj, started: str) -> None:
        def running(obj: Obj) -> None:
            obj["status"].update(phase="Running", startTime=started, podIP="10.0.0.1", hostIP="127.0.0.1")
            obj["status"]["conditions"].append(_condition("Ready", "", ""))
            obj["status"]["containerStatuses"] = _container_status(
                obj, {"running": {"startedAt": started}}, True
            )

        if self.store.update("pods", namespace, pod["metadata"]["name"], running) is not None:
            job_name = pod["metadata"]["labels"]["job-name"]
            self.store.update("jobs", namespace, job_name, _mark_ready)

    def _terminated(self, namespace: str, name: str, code: int, reason: str, started: str) -> None:
        def terminated(obj: Obj) -> None:
            state = {
                "terminated": {
                    "exitCode": code,
                    "reason": reason,
                    "startedAt": started,
                    "finishedAt": now_rfc3339(),
                }
            }
            obj["status"]["phase"] = "Succeeded" if code == 0 else "Failed"
            obj["status"]["containerStatuses"] = _container_status(obj, state)

        self.store.update("pods", namespace, name, terminated)

    def pod_log(self, namespace: str, name: str, tail_lines: int | None) -> str:
        """Return a pod's log (400 while its container has not started, as the kubelet answers)."""
        pod = self.store.get("pods", namespace, name)
        path = self.log_dir / f"{namespace}_{name}.log"
        if not path.exists():
            container = pod["spec"]["containers"][0]["name"]
            state = pod["status"]["containerStatuses"][0]["state"]
            reason = state.get("waiting", {}).get("reason", "ContainerCreating")
            raise ApiError(
                400, "BadRequest", f'container "{container}" in pod "{name}" is waiting to start: {reason}'
            )
        lines = path.read_text(errors="replace").splitlines(keepends=True)
        return "".join(lines[-tail_lines:] if tail_lines else lines)

    def shutdown(self) -> None:
        """Kill every pod process and cancel timers."""
        with self._lock:
            timers, procs = list(self._timers), list(self._procs.items())
            for key, _ in procs:
                self._kill_cause.setdefault(key, "deleted")
        for timer in timers:
            timer.cancel()
        for _, proc in procs:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()


def _mark_ready(job: Obj) -> None:
    if job["status"].get("active"):
        job["status"]["ready"] = 1


def _drop_owner(pod: Obj) -> None:
    pod["metadata"].pop("ownerReferences", None)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _validate_job(namespace: str, body: Obj) -> None:
    if body.get("apiVersion") != "batch/v1" or body.get("kind") != "Job":
        raise ApiError(
            400, "BadRequest", f"expected batch/v1 Job, got {body.get('apiVersion')} {body.get('kind')}"
        )
    meta = body.setdefault("metadata", {})
    if meta.get("namespace", namespace) != namespace:
        raise ApiError(
            400,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the request",
        )
    name = meta.get("name", "")
    pod_spec = (body.get("spec") or {}).get("template", {}).get("spec") or {}
    if pod_spec.get("restartPolicy") not in ("Never", "OnFailure"):
        raise ApiError(
            422, "Invalid",
            f'Job.batch "{name}" is invalid: spec.template.spec.restartPolicy: Required value: '
            'valid values: "OnFailure", "Never"',
            name, "jobs",
        )  # fmt: skip
    containers = pod_spec.get("containers") or []
    if not containers or not all(c.get("name") and c.get("image") for c in containers):
        raise ApiError(
            422,
            "Invalid",
            f'Job.batch "{name}" is invalid: spec.template.spec.containers: Required value',
            name,
            "jobs",
        )
