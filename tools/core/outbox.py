"""Run-state writes that could not reach the tracking server, kept under the workspace until they can.

When the tracking server is unreachable, ending a run (its status, its note, its cancellation record)
cannot wait: the turn must end in bounded time, and a FINISHED trial must not be lost or left RUNNING.
``tools.core.tracking.end_run`` and ``write_cancellation`` (the sinks for run state) keep such a write
here as one JSON file per write (written to a temporary name, then renamed: a reader never sees half
an entry; several processes can add at once). Whoever opens the workspace next replays the entries in
the order they were kept (``tools.core.tracking.replay_outbox``) before reconciling orphans, so a run
ends with its real outcome rather than as an orphan. An entry is deleted only after it was written.
``tools.core.create_once`` keeps one more kind: ending the extra runs a retried create made, when the
server went away before it could look them up.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from tools.core.redact import redact_text
from tools.core.unreachable import is_unreachable

log = logging.getLogger(__name__)

#: ``end_extra_runs``: end the runs a create made that its caller does not hold (``tools.core.create_once``).
Operation = Literal["end_run", "write_cancellation", "end_extra_runs"]


class KeptWrite(BaseModel):
    """One run-state write that waits for the tracking server."""

    op: Operation
    run_id: str
    status: str = Field(description="The status the write ends the run with.")
    args: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of the write.")
    kept_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    cause: str = Field("", description="Why it could not be written at once.")


class Outbox:
    """A directory of kept writes (``<workspace>/outbox``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def keep(self, write: KeptWrite) -> Path:
        """Add ``write``; return its file. Raises OSError when the workspace cannot be written."""
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        temporary = self.directory / f".{name}.tmp"
        temporary.write_text(write.model_dump_json(), encoding="utf-8")
        final = self.directory / f"{name}.json"
        os.replace(temporary, final)
        return final

    def pending(self) -> list[tuple[Path, KeptWrite]]:
        """Return the kept writes, oldest first (unreadable files are skipped and left in place)."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                found.append((path, KeptWrite.model_validate(json.loads(path.read_text(encoding="utf-8")))))
            except (OSError, ValueError):
                continue
        return found

    def done(self, path: Path) -> None:
        """Drop an entry that has been written (another process may have dropped it already)."""
        path.unlink(missing_ok=True)

    def describe(self) -> str:
        """One line for an answer: how many writes wait and where."""
        count = len(self.pending())
        return f"{count} run-state write(s) kept in `{self.directory}`" if count else ""


def keep_if_unreachable(box: Outbox | None, exc: BaseException, write: KeptWrite) -> bool:
    """Keep ``write`` in ``box`` if ``exc`` means the tracking server is unreachable; True if kept."""
    if box is None or not is_unreachable(exc):
        return False
    write.cause = redact_text(f"{type(exc).__name__}: {exc}")[:500]
    try:
        path = box.keep(write)
    except OSError:
        log.exception("could not keep the %s of run %s in the outbox", write.op, write.run_id)
        return False
    log.warning("tracking server unreachable: %s of run %s (%s) kept in %s", write.op, write.run_id,
                write.status, path)  # fmt: skip
    return True
