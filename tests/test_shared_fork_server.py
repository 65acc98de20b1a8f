"""Eval workers share the fork server their parent started (one server to import and warm, not one each),
and a worker whose inherited server has gone starts its own. Real processes: a real fork server, a real
forked worker, real jobs forked from the server."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

_PROGRAM = textwrap.dedent(
    """
    import json, multiprocessing, os, signal, sys, time
    from multiprocessing import forkserver as mp_forkserver
    from tools.runtime import forkserver

    def job(queue):
        queue.put(os.getppid())  # a job's parent is the server that forked it

    def worker(kill_first, out):
        forkserver.use_inherited_server()
        server = mp_forkserver._forkserver._forkserver_pid
        if kill_first:
            os.kill(server, signal.SIGKILL)
            time.sleep(0.5)
        ctx = multiprocessing.get_context("forkserver")
        queue = ctx.SimpleQueue()
        process = ctx.Process(target=job, args=(queue,))
        process.start()
        process.join(30)
        out.put({"inherited": server, "job_parent": queue.get(), "exit": process.exitcode,
                 "now": mp_forkserver._forkserver._forkserver_pid})

    if __name__ == "__main__":
        mp_forkserver.set_forkserver_preload(["json"])
        mp_forkserver.ensure_running()
        server = mp_forkserver._forkserver._forkserver_pid
        fork = multiprocessing.get_context("fork")
        results = []
        for kill_first in (False, True):
            out = fork.Queue()
            child = fork.Process(target=worker, args=(kill_first, out))
            child.start()
            results.append(out.get(timeout=30))  # a worker that failed raises Empty here
            child.join(30)
        print(json.dumps({"server": server, "results": results}))
    """
)


def test_a_forked_worker_launches_jobs_through_its_parents_server_and_starts_its_own_if_it_has_gone(
    tmp_path: Path,
) -> None:
    program = tmp_path / "shared_server.py"  # a file: the server's jobs import their target from it
    program.write_text(_PROGRAM)
    done = subprocess.run([sys.executable, str(program)], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    shared, own = report["results"]
    # before: ChildProcessError from multiprocessing's liveness check, in the worker
    assert shared == {"inherited": report["server"], "job_parent": report["server"], "exit": 0,
                      "now": report["server"]}  # fmt: skip
    assert own["exit"] == 0 and own["now"] not in (None, report["server"])
    assert own["job_parent"] == own["now"]  # the job came from the worker's own new server
