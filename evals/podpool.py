"""Warm pod processes for the fake cluster: a pod's ``python -m MODULE`` forks from a preloaded server.

A fresh trainer process pays ~2.5 s of imports (mlflow, scikit-learn, LightGBM) before it trains a
model in a fraction of that, and the eval suite runs many Kubernetes scenarios. The pod pool keeps one
single-threaded server per harness worker with those modules imported; each pod's command becomes a tiny
shim that hands its argv, environment, working directory and stdout/stderr (the pod log) to the server,
which forks a child that runs the module as ``__main__`` with exactly that environment. The shim relays
the exit code and SIGTERM, and the child is killed if the shim dies (SIGKILL, deleted pod), so the fake
kubelet sees a pod process that behaves like the real command. Commands other than ``python -m`` run
unchanged.

Run the server with ``python -m evals.podpool SOCKET PARENT_PID``; it exits when its parent does.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import json
import os
import runpy
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

#: modules the server imports before forking pods (the trainer imports mlflow, sklearn, LightGBM).
PRELOAD = ("tools.training.trainer",)
_LENGTH = 8
_SHIM = r"""
import json, os, signal, socket, sys
conn = socket.socket(socket.AF_UNIX)
conn.connect(sys.argv[1])
def forward(signum, frame):
    try:
        conn.sendall(b"T")
    except OSError:
        pass
signal.signal(signal.SIGTERM, forward)
signal.signal(signal.SIGINT, forward)
body = json.dumps({"argv": sys.argv[2:], "env": dict(os.environ), "cwd": os.getcwd()}).encode()
socket.send_fds(conn, [len(body).to_bytes(8, "big")], [1, 2])
conn.sendall(body)
reply = b""
while True:
    try:
        chunk = conn.recv(64)
    except InterruptedError:
        continue
    if not chunk:
        break
    reply += chunk
sys.exit(int(reply or b"137"))
"""


def shim_command(socket_path: Path, argv: list[str]) -> list[str]:
    """Return the pod command that runs ``argv`` through the pool at ``socket_path``."""
    if len(argv) < 3 or argv[1] != "-m":
        return argv
    return [sys.executable, "-c", _SHIM, str(socket_path), *argv]


# ---- the server (its own process) -------------------------------------------------------------------


def _read_request(conn: socket.socket) -> tuple[dict, list[int]]:
    head, fds, _, _ = socket.recv_fds(conn, _LENGTH, 2)
    while len(head) < _LENGTH:
        head += conn.recv(_LENGTH - len(head))
    size, body = int.from_bytes(head, "big"), b""
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            raise ConnectionError("the shim closed the connection mid-request")
        body += chunk
    return json.loads(body), fds


def _run_child(request: dict, fds: list[int], inherited: list[socket.socket]) -> None:
    """In the forked child: become the pod's process and run its module as __main__ (never returns)."""
    code = 1
    try:
        for sock in inherited:  # other pods' shims must see EOF when the server closes their connection
            sock.close()
        for target, fd in zip((1, 2), fds, strict=False):
            os.dup2(fd, target)
        for fd in fds:
            os.close(fd)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        argv = request["argv"]
        sys.argv = [argv[2], *argv[3:]]
        runpy.run_module(argv[2], run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException:  # noqa: BLE001 - a crashing pod exits non-zero with its traceback in the log
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def rehearse() -> None:
    """Train a tiny run in a scratch store, so pods fork with MLflow's and LightGBM's first use done.

    The same rehearsal the training fork server does (``tools.runtime.forkserver.rehearse``): without
    it every pod pays that work again (~0.3 s quiet, several seconds on a loaded machine). Output goes
    to /dev/null (the server shares the harness's terminal); a failed rehearsal only costs speed.
    """
    from tools.runtime.forkserver import rehearse as rehearse_training

    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        rehearse_training(None, train=True)
    except Exception:  # noqa: BLE001, S110 - pods still run, only slower
        pass
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


def serve(socket_path: Path, parent_pid: int) -> None:
    """Accept pods until the parent process goes away."""
    for name in PRELOAD:
        importlib.import_module(name)
    rehearse()
    gc.collect()
    gc.freeze()  # pods fork with the preloaded heap out of their garbage collector's reach
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(socket_path))
    listener.listen(64)
    pods: dict[socket.socket, int] = {}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while os.getppid() == parent_pid:
            ready, _, _ = select.select([listener, *pods], [], [], 0.05)
            for sock in ready:
                if sock is listener:
                    _accept(listener, pods)
                else:
                    _control(sock, pods)
            _reap(pods)
    finally:  # no pod outlives the pool
        for pid in pods.values():
            _kill(pid, signal.SIGKILL)
        socket_path.unlink(missing_ok=True)


def _accept(listener: socket.socket, pods: dict[socket.socket, int]) -> None:
    conn, _ = listener.accept()
    try:
        request, fds = _read_request(conn)
    except (OSError, ValueError):
        conn.close()
        return
    pid = os.fork()
    if pid == 0:
        _run_child(request, fds, [listener, conn, *pods])
    for fd in fds:
        os.close(fd)
    pods[conn] = pid


def _control(conn: socket.socket, pods: dict[socket.socket, int]) -> None:
    try:
        data = conn.recv(16)
    except OSError:
        data = b""
    pid = pods[conn]
    if data:
        _kill(pid, signal.SIGTERM)  # the kubelet asked the pod to stop
    else:
        _kill(pid, signal.SIGKILL)  # the pod process is gone (killed): its child must go too
        pods.pop(conn)
        conn.close()


def _reap(pods: dict[socket.socket, int]) -> None:
    while pods:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = os.waitstatus_to_exitcode(status)
        for conn, child in list(pods.items()):
            if child == pid:
                try:
                    conn.sendall(str(code if code >= 0 else 128 - code).encode())
                except OSError:
                    pass
                conn.close()
                pods.pop(conn)


def _kill(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


# ---- the client side (in the harness worker) ------------------------------------------------------

#: the pool's socket path, set by whoever started it; forked harness workers inherit and share it.
_POOL: Path | None = None
_WAIT_SECONDS = 180.0


def start_pool(directory: Path) -> Path:
    """Start the pod pool in the background (it preloads for a few seconds); return its socket path.

    Call it in the harness parent before forking workers: they all share this one pool.
    """
    global _POOL
    if _POOL is not None and _POOL.exists():
        return _POOL
    path = directory / f"podpool-{os.getpid()}.sock"
    path.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXPAGENT_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "evals.podpool", str(path), str(os.getpid())],
        env=env, cwd=Path(__file__).resolve().parents[1], stdin=subprocess.DEVNULL,
    )  # fmt: skip
    atexit.register(process.terminate)
    atexit.register(path.unlink, missing_ok=True)
    _POOL = path
    return path


def ensure_pool(directory: Path) -> Path:
    """Return the socket of a running pod pool (starting one if needed), waiting until it accepts pods."""
    path = _POOL if _POOL is not None else start_pool(directory)
    deadline = time.monotonic() + _WAIT_SECONDS
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the pod pool at {path} did not start within {_WAIT_SECONDS:.0f} s")
        time.sleep(0.05)
    return path


if __name__ == "__main__":  # pragma: no cover - the server process
    serve(Path(sys.argv[1]), int(sys.argv[2]))
