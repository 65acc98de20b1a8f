"""Latency of a read-only MCP tool call over stdio and the server's memory (``expagent mcp``).

Spawns ``expagent mcp`` on a fresh temporary workspace with the SDK's own stdio client, then reports:
start-up to initialized, the median and p90 of 50 ``lookup_dataset`` calls (each through the guard and
the audit log) and of 50 ``list_datasets`` calls, and the server's resident memory when idle (after
``initialize``, and again after the calls). Run: ``make bench-mcp``.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
import mcp_types as types
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

CALLS = 50
EXPAGENT = str(Path(sys.executable).with_name("expagent"))


def rss_mb(pid: int) -> float:
    """Return the resident set size of ``pid`` and its descendants, in MiB (Linux /proc)."""
    total_kb = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(entry.name) == pid or _descends_from(int(entry.name), pid):
            total_kb += int(fields.get("VmRSS", "0 kB").split()[0])
    return total_kb / 1024


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        if pid == ancestor:
            return True
    return False


def server_pid() -> int:
    """Return the pid of the ``expagent mcp`` child of this process."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _descends_from(int(entry.name), os.getpid()):
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            if any(part.endswith(b"expagent") for part in cmdline) and b"mcp" in cmdline:
                return int(entry.name)
    raise RuntimeError("the expagent mcp process was not found")


async def timed_calls(session: ClientSession, name: str, args: dict[str, str]) -> list[float]:
    times = []
    for _ in range(CALLS):
        start = time.perf_counter()
        result = await session.call_tool(name, args)
        times.append(time.perf_counter() - start)
        assert not result.is_error, result.content
    return times


def report(label: str, times: list[float]) -> None:
    ms = sorted(t * 1000 for t in times)
    p90 = ms[int(0.9 * len(ms)) - 1]
    print(f"{label}: median {statistics.median(ms):.1f} ms, p90 {p90:.1f} ms ({len(ms)} calls over stdio)")


async def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="expagent-bench-mcp-"))
    env = {"EXPAGENT_HOME": str(home), "EXPAGENT_TRACE": "false"}
    start = time.perf_counter()
    params = StdioServerParameters(command=EXPAGENT, args=["mcp"], env=env)
    async with stdio_client(params) as (read, write):
        info = types.Implementation(name="bench", version="1")
        async with ClientSession(read, write, client_info=info) as session:
            await session.initialize()
            print(f"start-up to initialized: {time.perf_counter() - start:.2f} s")
            pid = server_pid()
            await anyio.sleep(1.0)
            print(f"idle RSS after initialize: {rss_mb(pid):.0f} MiB")
            await session.call_tool("lookup_dataset", {"name": "breast_cancer", "version": "1"})  # warm-up
            report(
                "lookup_dataset",
                await timed_calls(session, "lookup_dataset", {"name": "wine", "version": "1"}),
            )
            report("list_datasets", await timed_calls(session, "list_datasets", {}))
            await anyio.sleep(1.0)
            children = sum(
                _descends_from(int(e.name), pid) for e in Path("/proc").iterdir() if e.name.isdigit()
            )
            print(f"idle RSS after {2 * CALLS + 1} calls: {rss_mb(pid):.0f} MiB ({children} child processes)")


if __name__ == "__main__":
    anyio.run(main)
