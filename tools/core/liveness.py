"""Is a process still the one we started? Liveness with pid-reuse detection, and who owns a run.

Reads ``/proc/<pid>/stat`` on Linux and falls back to a signal-0 probe elsewhere. A run records its
owner (host, pid, process start time) when it is created, so whoever opens the workspace next can tell
a run whose agent died (an orphan) from one that is still being worked on.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

OWNER_HOST = "expagent.owner.host"
OWNER_PID = "expagent.owner.pid"
OWNER_START = "expagent.owner.start"


def _proc_stat(pid: int) -> list[str] | None:
    """Return /proc/<pid>/stat fields after the command name, or None if there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rindex(")") + 2 :].split()


def process_start(pid: int) -> int | None:
    """Return the process's start time in clock ticks since boot (None when unknown)."""
    fields = _proc_stat(pid)
    return int(fields[19]) if fields else None


def process_alive(pid: int, start: int | None) -> bool:
    """Return whether ``pid`` is the same, still running (not zombie) process."""
    fields = _proc_stat(pid)
    if fields is None:
        if Path("/proc/self/stat").exists():
            return False
        try:  # no /proc (not Linux): fall back to a signal-0 probe
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return fields[0] not in ("Z", "X") and (start is None or int(fields[19]) == start)


def owner_tags() -> dict[str, str]:
    """Return the tags that name this process as a run's owner."""
    pid = os.getpid()
    start = process_start(pid)
    return {OWNER_HOST: socket.gethostname(), OWNER_PID: str(pid), OWNER_START: str(start or "")}


def owner_alive(tags: dict[str, str]) -> bool | None:
    """Return whether the run's owner process still lives (None: unknown, e.g. another host)."""
    host, pid = tags.get(OWNER_HOST), tags.get(OWNER_PID)
    if not host or not pid or not pid.isdigit() or host != socket.gethostname():
        return None
    start = tags.get(OWNER_START) or ""
    return process_alive(int(pid), int(start) if start.isdigit() else None)
