"""A list-then-watch cache of Kubernetes objects: one shared watch per namespace and label selector.

Status questions are answered from this cache, so following N jobs costs one long-lived watch, not N
polls. A dropped watch is resumed from the last ``resourceVersion`` it saw; a 410 Gone (the version was
compacted away) triggers a fresh list, whose differences are replayed as events so nothing is missed.
``JobWatches`` keeps one pair of such caches (Jobs, pods) per namespace the runtime uses.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import urllib3
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

#: Called with ("ADDED" | "MODIFIED" | "DELETED", object) for every change, on the watch thread.
EventHandler = Callable[[str, Any], None]


class WatchCache:
    """Keep the objects matching ``selector`` in ``namespace`` up to date from a background watch.

    Args:
        list_func: The client's namespaced list method, e.g. ``BatchV1Api.list_namespaced_job``.
        namespace: Namespace to watch.
        selector: Label selector, e.g. ``app.kubernetes.io/managed-by=expagent``.
        on_event: Callback for every change (runs on the watch thread; keep it short).
        watch_seconds: Server-side timeout of one watch request before it is renewed.
    """

    def __init__(
        self,
        list_func: Callable[..., Any],
        namespace: str,
        selector: str,
        on_event: EventHandler,
        watch_seconds: int = 240,
    ) -> None:
        self._list, self.namespace, self.selector = list_func, namespace, selector
        self._on_event = on_event
        self._watch_seconds = watch_seconds
        self._objects: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._watch: watch.Watch | None = None
        self._thread: threading.Thread | None = None
        self.resource_version: str | None = None
        self.relists = 0
        self.rewatches = 0

    def start(self) -> None:
        """List once (raising if the API is unreachable or forbidden), then watch in the background."""
        self._relist(request_timeout=(5, 30))
        self._thread = threading.Thread(target=self._run, name=f"watch-{self.namespace}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop watching and close the stream."""
        self._stopped.set()
        deadline = time.monotonic() + timeout
        # A watch request still waiting for its response headers cannot be interrupted, so keep
        # closing until the thread is out (headers arrive at once from an API server).
        while self._thread is not None and self._thread.is_alive() and time.monotonic() < deadline:
            if self._watch is not None:
                self._watch.stop()
            self._thread.join(0.05)

    def get(self, name: str) -> Any | None:
        """Return the cached object called ``name`` (None if unknown)."""
        with self._lock:
            return self._objects.get(name)

    def items(self) -> list[Any]:
        """Return every cached object."""
        with self._lock:
            return list(self._objects.values())

    def put(self, obj: Any) -> None:
        """Insert an object we just created (the watch will bring newer versions)."""
        with self._lock:
            current = self._objects.get(obj.metadata.name)
            if current is None or _rv(current) < _rv(obj):
                self._objects[obj.metadata.name] = obj

    # ---- the watch loop -------------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stopped.is_set():
            try:
                if self.resource_version is None:
                    self._relist(request_timeout=(5, 30))
                self._watch_once()
                failures = 0
            except ApiException as err:
                if err.status == 410:
                    log.info("watch on %s expired (410); listing again", self.namespace)
                    self.resource_version = None
                    continue
                failures += 1
                log.warning("watch on %s failed: %s %s", self.namespace, err.status, err.reason)
            except (urllib3.exceptions.HTTPError, OSError, ValueError) as err:
                if self._stopped.is_set():
                    return
                failures += 1
                log.info(
                    "watch on %s dropped (%s); resuming from %s", self.namespace, err, self.resource_version
                )
            if failures and not self._stopped.is_set():
                self._stopped.wait(min(10.0, 0.05 * 2**failures) * (0.5 + random.random()))

    def _watch_once(self) -> None:
        if self._stopped.is_set():
            return
        self.rewatches += 1
        self._watch = watch.Watch()
        stream = self._watch.stream(
            self._list,
            self.namespace,
            label_selector=self.selector,
            resource_version=self.resource_version,
            timeout_seconds=self._watch_seconds,
            allow_watch_bookmarks=True,
            _request_timeout=(5, self._watch_seconds + 30),
        )
        for event in stream:
            if event["type"] != "BOOKMARK":
                self._apply(event["type"], event["object"])
            self.resource_version = self._watch.resource_version or self.resource_version
            if self._stopped.is_set():
                break

    def _relist(self, request_timeout: tuple[float, float]) -> None:
        self.relists += 1
        listing = self._list(self.namespace, label_selector=self.selector, _request_timeout=request_timeout)
        fresh = {obj.metadata.name: obj for obj in listing.items}
        with self._lock:
            vanished = [obj for name, obj in self._objects.items() if name not in fresh]
        for obj in vanished:
            self._apply("DELETED", obj)
        for obj in fresh.values():
            self._apply("MODIFIED", obj)
        self.resource_version = listing.metadata.resource_version

    def _apply(self, event_type: str, obj: Any) -> None:
        name = obj.metadata.name
        with self._lock:
            if event_type == "DELETED":
                self._objects.pop(name, None)
            else:
                current = self._objects.get(name)
                if current is not None and _rv(current) > _rv(obj):
                    return  # an older version than one we already have (e.g. after put())
                self._objects[name] = obj
        self._on_event(event_type, obj)


def _rv(obj: Any) -> int:
    try:
        return int(obj.metadata.resource_version or 0)
    except ValueError:  # resourceVersion is opaque; a real server's values are integers in practice
        return 0


class JobWatches:
    """The expagent Jobs and pods of every namespace the runtime uses: one pair of watches each.

    A namespace is watched from the first time a Job is created or looked up in it; Job names are unique
    across namespaces (they derive from the MLflow run ID), so lookups by name need no namespace.

    Args:
        list_jobs: ``BatchV1Api.list_namespaced_job``.
        list_pods: ``CoreV1Api.list_namespaced_pod``.
        selector: Label selector of expagent's objects.
        on_job: Callback for every Job change.
        on_pod: Callback for every pod change.
    """

    def __init__(
        self,
        list_jobs: Callable[..., Any],
        list_pods: Callable[..., Any],
        selector: str,
        on_job: EventHandler,
        on_pod: EventHandler,
    ) -> None:
        self._list_jobs, self._list_pods, self._selector = list_jobs, list_pods, selector
        self._on_job, self._on_pod = on_job, on_pod
        self._lock = threading.Lock()  # guards _caches; never held while calling the API
        self._starting = threading.Lock()  # one namespace starts at a time
        self._caches: dict[str, tuple[WatchCache, WatchCache]] = {}

    def watch(self, namespace: str) -> None:
        """Start watching ``namespace`` unless it is watched already (raises if it cannot be listed)."""
        with self._starting:
            with self._lock:
                if namespace in self._caches:
                    return
                jobs = WatchCache(self._list_jobs, namespace, self._selector, self._on_job)
                pods = WatchCache(self._list_pods, namespace, self._selector, self._on_pod)
                # Registered before the first list, so the Job events it replays can see the pods.
                self._caches[namespace] = (jobs, pods)
            try:
                pods.start()
                jobs.start()
            except Exception:
                with self._lock:
                    del self._caches[namespace]
                pods.stop()
                jobs.stop()
                raise

    @property
    def namespaces(self) -> list[str]:
        """The watched namespaces, in the order they were first watched."""
        with self._lock:
            return list(self._caches)

    def jobs_cache(self, namespace: str) -> WatchCache:
        """Return the Job cache of a watched namespace."""
        with self._lock:
            return self._caches[namespace][0]

    def pods_cache(self, namespace: str) -> WatchCache:
        """Return the pod cache of a watched namespace."""
        with self._lock:
            return self._caches[namespace][1]

    def _pairs(self) -> list[tuple[WatchCache, WatchCache]]:
        with self._lock:
            return list(self._caches.values())

    def job(self, name: str) -> Any | None:
        """Return the cached Job called ``name`` in any watched namespace (None if unknown)."""
        return next((j for jobs, _ in self._pairs() if (j := jobs.get(name)) is not None), None)

    def jobs(self) -> list[Any]:
        """Return every cached Job."""
        return [job for jobs, _ in self._pairs() for job in jobs.items()]

    def pods_of(self, job_name: str) -> list[Any]:
        """Return the cached pods of the Job called ``job_name``."""
        return [
            pod
            for _, pods in self._pairs()
            for pod in pods.items()
            if (pod.metadata.labels or {}).get("job-name") == job_name
        ]

    def put(self, job: Any) -> None:
        """Insert a Job we just created or read into its namespace's cache (if that is watched)."""
        with self._lock:
            pair = self._caches.get(job.metadata.namespace)
        if pair is not None:
            pair[0].put(job)

    def stop(self) -> None:
        """Stop every watch."""
        for jobs, pods in self._pairs():
            jobs.stop()
            pods.stop()
