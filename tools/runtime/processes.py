"""Job processes seen from outside: liveness (with pid-reuse detection), CPU time, stopping a group.

Reads ``/proc/<pid>/stat`` on Linux and falls back to a signal-0 probe elsewhere. Every job runs in its
own session, so its pid is also its process group ID.
"""

from __future__ import annotations

import os
import signal
import time

from tools.core.liveness import _proc_stat, process_alive, process_start

__all__ = ["process_alive", "process_start", "process_cpu_seconds", "signal_group", "terminate_group"]

#: seconds between liveness checks while waiting for a process to go.
POLL_SECONDS = 0.05


def process_cpu_seconds(pid: int) -> float | None:
    """Return user+system CPU seconds of a live process (and its reaped children)."""
    fields = _proc_stat(pid)
    if fields is None:
        return None
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    return ticks / os.sysconf("SC_CLK_TCK")


def signal_group(pid: int, signum: int) -> None:
    """Send ``signum`` to the job's process group (its own session), or to the pid if none exists yet."""
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
    except PermissionError:
        os.kill(pid, signum)


def terminate_group(pid: int, start: int | None, grace_seconds: float) -> float | None:
    """SIGTERM the group, SIGKILL it after ``grace_seconds``; return the last CPU sample of ``pid``."""
    cpu = process_cpu_seconds(pid)
    signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while process_alive(pid, start) and time.monotonic() < deadline:
        cpu = process_cpu_seconds(pid) or cpu
        time.sleep(POLL_SECONDS)
    if process_alive(pid, start):
        signal_group(pid, signal.SIGKILL)
        while process_alive(pid, start) and time.monotonic() < deadline + 5:
            time.sleep(POLL_SECONDS)
    return cpu
