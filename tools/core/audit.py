"""The append-only audit log: one JSON line per policy verdict, redacted, safe for concurrent writers."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from tools.core.redact import redact


class AuditLog:
    """Append-only JSONL file of guard verdicts. Entries are redacted before they are written."""

    def __init__(self, path: Path | str, fsync: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync

    def write(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Append one redacted entry as a single line (under an exclusive lock); return what was written."""
        clean = redact(entry)
        line = json.dumps(clean, sort_keys=True, default=str, ensure_ascii=False) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # O_APPEND + one write() per line + flock: lines from concurrent processes never interleave.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, line.encode("utf-8"))
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)  # closing the descriptor releases the lock
        return clean

    def read(self) -> list[dict[str, Any]]:
        """Return every entry, oldest first (a torn last line from a crash is skipped)."""
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        entries = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                if number != len(lines):
                    raise ValueError(
                        f"{self.path}:{number} is not valid JSON; the audit log is damaged"
                    ) from None
        return entries
