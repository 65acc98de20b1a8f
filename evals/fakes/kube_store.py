"""The fake API server's object store: versioned objects, label selectors and a watch event log.

Objects are plain dicts in Kubernetes JSON shape. Every change bumps one cluster-wide
``resourceVersion`` and appends an event that watches replay from any version still retained
(older versions answer 410 Gone, as etcd compaction does).
"""

from __future__ import annotations

import copy
import json
import re
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]

# resource -> (apiVersion, kind, API group for Status details)
KINDS: dict[str, tuple[str, str, str]] = {
    "namespaces": ("v1", "Namespace", ""),
    "pods": ("v1", "Pod", ""),
    "secrets": ("v1", "Secret", ""),
    "jobs": ("batch/v1", "Job", "batch"),
}
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def now_rfc3339() -> str:
    """Return the current UTC time as Kubernetes writes timestamps (second precision)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    """An API failure rendered as a Kubernetes ``Status`` object."""

    def __init__(self, code: int, reason: str, message: str, name: str = "", resource: str = "") -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.details = {"name": name, "group": KINDS.get(resource, ("", "", ""))[2], "kind": resource}

    def status(self) -> Obj:
        """Return the ``Status`` JSON body for this error."""
        return status_object(self.code, self.reason, self.message, self.details, failure=True)


def status_object(
    code: int, reason: str, message: str, details: Obj | None = None, failure: bool = False
) -> Obj:
    """Return a ``v1 Status`` object."""
    body: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "code": code}
    body["status"] = "Failure" if failure else "Success"
    if message:
        body["message"] = message
    if reason:
        body["reason"] = reason
    if details:
        body["details"] = details
    return body


def not_found(resource: str, name: str) -> ApiError:
    group = KINDS[resource][2]
    qualified = f"{resource}.{group}" if group else resource
    return ApiError(404, "NotFound", f'{qualified} "{name}" not found', name, resource)


def already_exists(resource: str, name: str) -> ApiError:
    group = KINDS[resource][2]
    qualified = f"{resource}.{group}" if group else resource
    return ApiError(409, "AlreadyExists", f'{qualified} "{name}" already exists', name, resource)


# ---- label selectors ----------------------------------------------------------------------------

Requirement = Callable[[dict[str, str]], bool]


def _requirement(term: str) -> Requirement:
    term = term.strip()
    set_match = re.match(r"^([^\s!=]+)\s+(in|notin)\s+\((.*)\)$", term)
    if set_match:
        key, op, raw = set_match.groups()
        values = {v.strip() for v in raw.split(",") if v.strip()}
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    for op in ("!=", "==", "="):
        if op in term:
            key, value = (part.strip() for part in term.split(op, 1))
            if op == "!=":
                return lambda labels: labels.get(key) != value
            return lambda labels: labels.get(key) == value
    if term.startswith("!"):
        return lambda labels: term[1:].strip() not in labels
    return lambda labels: term in labels


def parse_selector(selector: str | None) -> Requirement:
    """Return a predicate for a label selector (``a=b``, ``a!=b``, ``a in (x,y)``, ``a``, ``!a``)."""
    if not selector:
        return lambda labels: True
    terms = re.split(r",(?![^()]*\))", selector)
    requirements = [_requirement(t) for t in terms if t.strip()]
    return lambda labels: all(r(labels) for r in requirements)


# ---- the store ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One watch event: the object as it was at ``rv``, serialised once."""

    rv: int
    resource: str
    namespace: str
    type: str
    labels: dict[str, str]
    line: bytes


class Gone(Exception):
    """The requested resourceVersion is older than the retained event log."""


class ObjectStore:
    """Thread-safe versioned storage of namespaced objects with a bounded watch event log."""

    def __init__(self, max_events: int = 20000) -> None:
        self.cond = threading.Condition(threading.RLock())
        self._rv = 1
        self._objects: dict[str, dict[tuple[str, str], Obj]] = {r: {} for r in KINDS}
        self._events: deque[Event] = deque(maxlen=max_events)
        self.closed = False

    @property
    def resource_version(self) -> int:
        return self._rv

    def _emit(self, resource: str, event_type: str, obj: Obj) -> None:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        meta = obj["metadata"]
        line = json.dumps({"type": event_type, "object": obj}).encode() + b"\n"
        event = Event(
            self._rv, resource, meta.get("namespace", ""), event_type, dict(meta.get("labels") or {}), line
        )
        self._events.append(event)
        self.cond.notify_all()

    def create(self, resource: str, namespace: str, obj: Obj) -> Obj:
        """Store a new object (fills uid, resourceVersion, creationTimestamp) and return a copy."""
        meta = obj.setdefault("metadata", {})
        name = meta.get("name") or ""
        if not _DNS1123.match(name) or len(name) > 63:
            raise ApiError(
                422, "Invalid", f'{KINDS[resource][1]} "{name}" is invalid: metadata.name', name, resource
            )
        api_version, kind, _ = KINDS[resource]
        obj["apiVersion"], obj["kind"] = api_version, kind
        with self.cond:
            if resource != "namespaces" and ("", namespace) not in self._objects["namespaces"]:
                raise not_found("namespaces", namespace)
            key = (namespace, name)
            if key in self._objects[resource]:
                raise already_exists(resource, name)
            if namespace:
                meta["namespace"] = namespace
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.update(creationTimestamp=now_rfc3339(), generation=1)
            self._objects[resource][key] = obj
            self._emit(resource, "ADDED", obj)
            return copy.deepcopy(obj)

    def get(self, resource: str, namespace: str, name: str) -> Obj:
        """Return a copy of one object or raise NotFound."""
        with self.cond:
            obj = self._objects[resource].get((namespace, name))
            if obj is None:
                raise not_found(resource, name)
            return copy.deepcopy(obj)

    def exists(self, resource: str, namespace: str, name: str) -> bool:
        with self.cond:
            return (namespace, name) in self._objects[resource]

    def select(
        self, resource: str, namespace: str | None, selector: str | None = None
    ) -> tuple[list[Obj], int]:
        """Return matching objects (all namespaces when ``namespace`` is None) and the list version."""
        match = parse_selector(selector)
        with self.cond:
            items = [
                copy.deepcopy(o)
                for (ns, _), o in self._objects[resource].items()
                if (namespace is None or ns == namespace) and match(o["metadata"].get("labels") or {})
            ]
            return items, self._rv

    def update(self, resource: str, namespace: str, name: str, mutate: Callable[[Obj], None]) -> Obj | None:
        """Apply ``mutate`` to a stored object and emit MODIFIED; None if the object is gone."""
        with self.cond:
            obj = self._objects[resource].get((namespace, name))
            if obj is None:
                return None
            mutate(obj)
            self._emit(resource, "MODIFIED", obj)
            return copy.deepcopy(obj)

    def remove(self, resource: str, namespace: str, name: str) -> Obj | None:
        """Delete an object now and emit DELETED; None if it was already gone."""
        with self.cond:
            obj = self._objects[resource].pop((namespace, name), None)
            if obj is not None:
                self._emit(resource, "DELETED", obj)
            return obj

    def events(
        self, resource: str, namespace: str | None, selector: str | None, since: int, deadline: float
    ) -> Iterator[Event]:
        """Yield matching events after version ``since`` until ``deadline`` (monotonic) or close."""
        import time

        match = parse_selector(selector)
        cursor = since
        while not self.closed:
            with self.cond:
                if self._events and cursor < self._events[0].rv - 1:
                    raise Gone(f"too old resource version: {since} ({self._events[0].rv - 1})")
                pending = self._newer_than(cursor)
                if not pending:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return
                    self.cond.wait(min(remaining, 0.5))
                    continue
            for event in pending:
                cursor = event.rv
                if (
                    event.resource == resource
                    and namespace in (None, event.namespace)
                    and match(event.labels)
                ):
                    yield event

    def _newer_than(self, cursor: int) -> list[Event]:
        newer: list[Event] = []
        for event in reversed(self._events):
            if event.rv <= cursor:
                break
            newer.append(event)
        newer.reverse()
        return newer

    def close(self) -> None:
        """Wake every watcher so it can finish."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()
