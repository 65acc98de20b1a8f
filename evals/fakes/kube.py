"""A fake Kubernetes API server on 127.0.0.1 that the official ``kubernetes`` client talks to unchanged.

It serves discovery, namespaces, ``batch/v1`` Jobs (create/get/list/watch/delete with propagation),
pods (list/get/watch/delete by label selector, logs) and secrets, with real JSON shapes and ``Status``
errors. Its kubelet runs pods as local processes (see ``kube_cluster.py``), and faults can be injected
(``kube_faults.py``; ``POST /_fake/faults`` at runtime). Use it in tests as::

    with FakeKube() as kube:
        settings = Settings(home=tmp, k8s_kubeconfig=kube.kubeconfig_path)
        runtime = KubernetesRuntime.from_settings(settings)

or on its own: ``python -m evals.fakes.kube --port 8001 --kubeconfig /tmp/fake.kubeconfig``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from evals.fakes._http import QuietHTTPServer
from evals.fakes.kube_cluster import REPO_ROOT, FakeCluster
from evals.fakes.kube_faults import Faults, PodFault
from evals.fakes.kube_store import ApiError, Gone, Obj, ObjectStore, now_rfc3339, status_object

DEFAULT_NAMESPACES = ("ml-experiments",)
CONTEXT_NAME = "expagent-fake"
_CORE = {"pods", "secrets", "namespaces"}
_BATCH = {"jobs"}
_DISCOVERY: dict[str, Obj] = {
    "/version": {
        "major": "1",
        "minor": "31",
        "gitVersion": "v1.31.0-expagent-fake",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2024-08-13T07:28:49Z",
        "goVersion": "go1.22.5",
        "compiler": "gc",
        "platform": "linux/amd64",
    },
    "/api": {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []},
    "/apis": {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [
            {
                "name": "batch",
                "versions": [{"groupVersion": "batch/v1", "version": "v1"}],
                "preferredVersion": {"groupVersion": "batch/v1", "version": "v1"},
            }
        ],
    },
    "/api/v1": {
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [
            {
                "name": "namespaces",
                "singularName": "namespace",
                "namespaced": False,
                "kind": "Namespace",
                "verbs": ["create", "get", "list"],
            },
            {
                "name": "pods",
                "singularName": "pod",
                "namespaced": True,
                "kind": "Pod",
                "verbs": ["delete", "get", "list", "watch"],
            },
            {"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod", "verbs": ["get"]},
            {
                "name": "secrets",
                "singularName": "secret",
                "namespaced": True,
                "kind": "Secret",
                "verbs": ["create", "get", "list"],
            },
        ],
    },
    "/apis/batch/v1": {
        "kind": "APIResourceList",
        "groupVersion": "batch/v1",
        "resources": [
            {
                "name": "jobs",
                "singularName": "job",
                "namespaced": True,
                "kind": "Job",
                "verbs": ["create", "delete", "get", "list", "watch"],
            }
        ],
    },
}


class _Route:
    """A parsed resource path: ``/api/v1/namespaces/{ns}/pods/{name}/log`` and friends."""

    def __init__(self, path: str) -> None:
        parts = [p for p in path.split("/") if p]
        self.group = (
            "core" if parts[:2] == ["api", "v1"] else "batch" if parts[:3] == ["apis", "batch", "v1"] else ""
        )
        rest = parts[2:] if self.group == "core" else parts[3:]
        self.namespace: str | None = None
        self.name: str | None = None
        self.sub: str | None = None
        if rest[:1] == ["namespaces"] and len(rest) >= 3:
            self.namespace, self.resource = rest[1], rest[2]
            self.name = rest[3] if len(rest) > 3 else None
            self.sub = rest[4] if len(rest) > 4 else None
            self.valid = len(rest) <= 5
        else:
            self.resource = rest[0] if rest else ""
            self.name = rest[1] if len(rest) > 1 else None
            self.valid = len(rest) <= 2
        allowed = _CORE if self.group == "core" else _BATCH if self.group == "batch" else set()
        self.valid = self.valid and self.resource in allowed


class _Server(QuietHTTPServer):
    allow_reuse_address = True
    fake: FakeKube


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet by default
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    # ---- plumbing -----------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        body = self._read_body()
        fake = self.server.fake
        if url.path.startswith("/_fake/"):
            self._admin(method, url.path, body)
            return
        discovery = _DISCOVERY.get(url.path.rstrip("/"))
        if discovery is not None and method == "GET":
            fake.count("GET", url.path.rstrip("/"))
            self._send_json(200, discovery)
            return
        route = _Route(url.path)
        verb = _verb(method, route, query)
        fake.count(verb, route.resource + (f"/{route.sub}" if route.sub else ""))
        try:
            if not route.valid:
                raise ApiError(
                    404, "NotFound", f"the server could not find the requested resource ({url.path})"
                )
            if verb == "watch":
                self._watch(route, query)
                return
            code, payload = fake.handle(verb, route, query, body)
        except ApiError as err:
            self._maybe_slow()
            self._send_json(err.code, err.status())
            return
        except Exception as err:  # noqa: BLE001 - a fake bug must reach the client as a 500, not a hang
            self._send_json(
                500, status_object(500, "InternalError", f"fake API server error: {err!r}", failure=True)
            )
            return
        self._maybe_slow()
        if isinstance(payload, str):
            self._send(code, payload.encode(), "text/plain")
        else:
            self._send_json(code, payload)

    def _read_body(self) -> Obj | None:
        length = int(self.headers.get("Content-Length") or 0)
        if not length:
            return None
        raw = self.rfile.read(length)
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError:
            return None
        return parsed if isinstance(parsed, dict) else None

    def _maybe_slow(self) -> None:
        faults = self.server.fake.faults
        if faults.slow_seconds > 0 and faults.take("slow_requests"):
            time.sleep(faults.slow_seconds)

    def _send(self, code: int, data: bytes, content_type: str) -> None:
        try:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _send_json(self, code: int, payload: Obj) -> None:
        self._send(code, json.dumps(payload).encode(), "application/json")

    def _admin(self, method: str, path: str, body: Obj | None) -> None:
        fake = self.server.fake
        if path == "/_fake/faults":
            if method == "POST":
                try:
                    fake.faults.update(body or {})
                except (ValueError, TypeError) as err:
                    self._send_json(400, {"error": str(err)})
                    return
            self._send_json(200, fake.faults.as_dict())
        elif path == "/_fake/requests":
            if method == "DELETE":
                fake.reset_requests()
            self._send_json(200, dict(fake.requests))
        else:
            self._send_json(404, {"error": f"unknown admin path {path}"})

    # ---- watch --------------------------------------------------------------------------------

    def _watch(self, route: _Route, query: dict[str, str]) -> None:
        fake = self.server.fake
        selector = query.get("labelSelector")
        since = query.get("resourceVersion") or "0"
        timeout = float(query.get("timeoutSeconds") or 1800)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        drop = fake.faults.take("drop_watches")
        budget = fake.faults.drop_after_events if drop else -1
        try:
            if since != "0" and fake.faults.take("expire_watches"):
                self._chunk(_expired(f"too old resource version: {since}"))
            else:
                self._stream_events(route, selector, since, timeout, budget)
            self._chunk(b"")
        except Gone as err:
            self._chunk(_expired(str(err)))
            self._chunk(b"")
        except _Dropped:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _stream_events(
        self, route: _Route, selector: str | None, since: str, timeout: float, budget: int
    ) -> None:
        store = self.server.fake.store
        sent = 0
        if since == "0":
            items, rv = store.select(route.resource, route.namespace, selector)
            for item in items:
                if sent == budget:
                    raise _Dropped
                self._chunk(json.dumps({"type": "ADDED", "object": item}).encode() + b"\n")
                sent += 1
            start = rv
        else:
            start = int(since)
        if sent == budget:
            raise _Dropped
        deadline = time.monotonic() + timeout
        for event in store.events(route.resource, route.namespace, selector, start, deadline):
            self._chunk(event.line)
            sent += 1
            if sent == budget:
                raise _Dropped

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


class _Dropped(Exception):
    """The injected fault: cut this watch connection."""


def _expired(message: str) -> bytes:
    status = status_object(410, "Expired", message, failure=True)
    return json.dumps({"type": "ERROR", "object": status}).encode() + b"\n"


def _verb(method: str, route: _Route, query: dict[str, str]) -> str:
    if method == "GET":
        if route.sub == "log":
            return "log"
        if route.name:
            return "get"
        return "watch" if query.get("watch") in ("true", "1") else "list"
    return {"POST": "create", "DELETE": "delete"}.get(method, method.lower())


def _list_kind(resource: str) -> tuple[str, str]:
    return {
        "jobs": ("batch/v1", "JobList"),
        "pods": ("v1", "PodList"),
        "secrets": ("v1", "SecretList"),
        "namespaces": ("v1", "NamespaceList"),
    }[resource]


class FakeKube:
    """The fake API server: start it, point a kubeconfig at it, inject faults, count requests.

    Args:
        namespaces: Namespaces that exist at start (``ml-experiments`` by default).
        port: TCP port on 127.0.0.1 (0 picks a free one).
        faults: Faults to inject (see :class:`Faults`); change later via ``kube.faults.update({...})``.
        kubeconfig_path: Where to write the kubeconfig (default: a temp file).
        workdir: Working directory (and PYTHONPATH) of pod processes; default the repository root.
        command_override: Run this argv in every pod instead of the container's command.
        grace_seconds: Termination grace period before SIGKILL when a pod is deleted.
        secrets: Secrets to create, ``{"ns/name": {"key": "value"}}``.
    """

    def __init__(
        self,
        namespaces: tuple[str, ...] | list[str] = DEFAULT_NAMESPACES,
        port: int = 0,
        faults: Faults | None = None,
        kubeconfig_path: Path | str | None = None,
        workdir: Path = REPO_ROOT,
        command_override: list[str] | None = None,
        grace_seconds: float = 2.0,
        secrets: dict[str, dict[str, str]] | None = None,
    ) -> None:
        self.faults = faults or Faults()
        self.store = ObjectStore()
        self._tmp = Path(tempfile.mkdtemp(prefix="fake-kube-"))
        self.cluster = FakeCluster(
            self.store, self.faults, self._tmp, workdir, command_override, grace_seconds
        )
        self.kubeconfig_path = Path(kubeconfig_path) if kubeconfig_path else self._tmp / "kubeconfig"
        self.requests: Counter[str] = Counter()
        self._requests_lock = threading.Lock()
        self._port = port
        self._server: _Server | None = None
        for ns in namespaces:
            self.store.create(
                "namespaces", "", {"metadata": {"name": ns}, "spec": {}, "status": {"phase": "Active"}}
            )
        for ref, data in (secrets or {}).items():
            namespace, _, name = ref.partition("/")
            self.add_secret(namespace, name, data)

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> FakeKube:
        """Start serving in a background thread and write the kubeconfig."""
        self._server = _Server(("127.0.0.1", self._port), _Handler)
        self._server.fake = self
        threading.Thread(target=self._server.serve_forever, name="fake-kube", daemon=True).start()
        self.write_kubeconfig(self.kubeconfig_path)
        return self

    def stop(self) -> None:
        """Stop serving, kill pod processes and remove temporary files."""
        self.store.close()
        self.cluster.shutdown()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> FakeKube:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeKube is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def write_kubeconfig(self, path: Path) -> Path:
        """Write a kubeconfig whose current context (``expagent-fake``) points at this server."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [
                {
                    "name": CONTEXT_NAME,
                    "context": {"cluster": "fake", "user": "fake", "namespace": DEFAULT_NAMESPACES[0]},
                }
            ],
            "current-context": CONTEXT_NAME,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config, indent=2))  # JSON is valid YAML
        return path

    # ---- state helpers for tests --------------------------------------------------------------

    def count(self, verb: str, resource: str) -> None:
        with self._requests_lock:
            self.requests[f"{verb} {resource}"] += 1

    def reset_requests(self) -> None:
        with self._requests_lock:
            self.requests.clear()

    @property
    def total_requests(self) -> int:
        with self._requests_lock:
            return sum(self.requests.values())

    def add_secret(self, namespace: str, name: str, data: dict[str, str]) -> None:
        """Create a Secret (values are base64-encoded as the API stores them)."""
        import base64

        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        self.store.create(
            "secrets", namespace, {"metadata": {"name": name}, "type": "Opaque", "data": encoded}
        )

    def jobs(self, namespace: str = DEFAULT_NAMESPACES[0], selector: str | None = None) -> list[Obj]:
        """Return the Jobs stored in ``namespace``."""
        return self.store.select("jobs", namespace, selector)[0]

    def pods(self, namespace: str = DEFAULT_NAMESPACES[0], selector: str | None = None) -> list[Obj]:
        """Return the pods stored in ``namespace``."""
        return self.store.select("pods", namespace, selector)[0]

    # ---- request handling ---------------------------------------------------------------------

    def handle(
        self, verb: str, route: _Route, query: dict[str, str], body: Obj | None
    ) -> tuple[int, Obj | str]:
        """Serve one non-watch request; raise ApiError for API failures."""
        resource, ns, name = route.resource, route.namespace, route.name
        if resource == "namespaces":
            return self._handle_namespaces(verb, name, body)
        if verb == "list":
            items, rv = self.store.select(resource, ns, query.get("labelSelector"))
            api_version, kind = _list_kind(resource)
            return 200, {
                "apiVersion": api_version,
                "kind": kind,
                "metadata": {"resourceVersion": str(rv)},
                "items": items,
            }
        if ns is None:
            raise ApiError(405, "MethodNotAllowed", f"{verb} {resource} needs a namespace")
        if verb == "create":
            return 201, self._create(resource, ns, body)
        if name is None:
            raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method on {resource}")
        if verb == "get":
            return 200, self.store.get(resource, ns, name)
        if verb == "log":
            tail = query.get("tailLines")
            return 200, self.cluster.pod_log(ns, name, int(tail) if tail else None)
        if verb == "delete":
            return self._delete(resource, ns, name, query, body)
        raise ApiError(405, "MethodNotAllowed", f"{verb} is not supported by the fake API server")

    def _handle_namespaces(self, verb: str, name: str | None, body: Obj | None) -> tuple[int, Obj]:
        if verb == "list":
            items, rv = self.store.select("namespaces", None)
            return 200, {
                "apiVersion": "v1",
                "kind": "NamespaceList",
                "metadata": {"resourceVersion": str(rv)},
                "items": items,
            }
        if verb == "get" and name:
            return 200, self.store.get("namespaces", "", name)
        if verb == "create" and body:
            body.setdefault("status", {"phase": "Active"})
            return 201, self.store.create("namespaces", "", body)
        raise ApiError(405, "MethodNotAllowed", f"{verb} namespaces is not supported by the fake")

    def _create(self, resource: str, ns: str, body: Obj | None) -> Obj:
        if body is None:
            raise ApiError(400, "BadRequest", "the request body is not a JSON object")
        if resource != "jobs":
            if resource == "pods":
                raise ApiError(405, "MethodNotAllowed", "the fake only creates pods through Jobs")
            return self.store.create(resource, ns, body)
        if self.faults.take("create_errors"):
            raise ApiError(500, "InternalError", "Internal error occurred: injected fault (nothing stored)")
        created = self.cluster.create_job(ns, body)
        name = created["metadata"]["name"]
        if self.faults.take("create_errors_after_commit"):
            raise ApiError(500, "InternalError", "Internal error occurred: injected fault (Job was stored)")
        if self.faults.take("create_conflicts"):
            raise ApiError(409, "AlreadyExists", f'jobs.batch "{name}" already exists', name, "jobs")
        return created

    def _delete(
        self, resource: str, ns: str, name: str, query: dict[str, str], body: Obj | None
    ) -> tuple[int, Obj]:
        propagation = query.get("propagationPolicy") or (body or {}).get("propagationPolicy") or "Orphan"
        if resource == "jobs":
            obj = self.cluster.delete_job(ns, name, propagation)
        elif resource == "pods":
            obj = self.cluster.delete_pod(ns, name)
        else:
            obj = self.store.get(resource, ns, name)
            self.store.remove(resource, ns, name)
        if obj["metadata"].get("deletionTimestamp"):
            return 200, obj
        details = {
            "name": name,
            "group": "batch" if resource == "jobs" else "",
            "kind": resource,
            "uid": obj["metadata"]["uid"],
        }
        return 200, status_object(200, "", "", details)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Fake Kubernetes API server for expagent tests.")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: pick a free one)")
    parser.add_argument(
        "--kubeconfig", type=Path, required=True, help="write a kubeconfig for this server here"
    )
    parser.add_argument("--namespace", action="append", default=[], help="extra namespace (repeatable)")
    parser.add_argument("--fail-creates", type=int, default=0, help="next N Job creates answer 500")
    parser.add_argument("--fail-creates-after-commit", type=int, default=0, help="N creates store, then 500")
    parser.add_argument("--conflict-creates", type=int, default=0, help="N creates store, then answer 409")
    parser.add_argument(
        "--slow-requests", type=int, default=0, help="N requests answered after --slow-seconds"
    )
    parser.add_argument("--slow-seconds", type=float, default=0.0)
    parser.add_argument("--drop-watches", type=int, default=0, help="cut the next N watch streams")
    parser.add_argument("--expire-watches", type=int, default=0, help="N watches answer 410 Expired")
    parser.add_argument(
        "--pod-fault", action="append", default=[], help="KIND[:EXIT][@MATCH][*COUNT] (repeatable)"
    )
    parser.add_argument("--command-override", help="run this shell-split command in every pod instead")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Serve until killed (``python -m evals.fakes.kube --port PORT --kubeconfig PATH``)."""
    import shlex

    args = _parse_args(argv)
    faults = Faults(
        create_errors=args.fail_creates,
        create_errors_after_commit=args.fail_creates_after_commit,
        create_conflicts=args.conflict_creates,
        slow_requests=args.slow_requests,
        slow_seconds=args.slow_seconds,
        drop_watches=args.drop_watches,
        expire_watches=args.expire_watches,
        pod_faults=[PodFault.parse(text) for text in args.pod_fault],
    )
    namespaces = list(dict.fromkeys([*DEFAULT_NAMESPACES, *args.namespace]))
    override = shlex.split(args.command_override) if args.command_override else None
    kube = FakeKube(namespaces, args.port, faults, args.kubeconfig, command_override=override).start()
    print(
        f"fake kube-apiserver at {kube.url}; kubeconfig {kube.kubeconfig_path} ({now_rfc3339()})", flush=True
    )
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        while not stopping.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        kube.stop()  # kills pod processes too


if __name__ == "__main__":
    main()
