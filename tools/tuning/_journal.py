"""The tuning study's journal file: Optuna's journal format, appended under ``flock``, without fsync.

Optuna's ``JournalFileBackend`` takes a symlink lock and fsyncs every record, ~1 ms each, and a trial
writes about eleven (ask, one per parameter, the launch and result attributes, tell). Surviving a killed
agent process needs neither: a record written by one ``write()`` under an exclusive ``flock`` is in the
page cache, visible to every reader, the moment ``write`` returns, and the kernel releases an ``flock``
when its holder dies, so no stale lock is left to break. Only an OS crash could lose the last records,
the trade-off SQLite makes with ``synchronous=NORMAL``.

Reading is Optuna's own (``read_logs``): the format and the file are unchanged, so a study written here
opens with a stock ``JournalFileBackend`` and the other way round.
"""

from __future__ import annotations

import fcntl
import json
import os
from typing import Any

from optuna.storages.journal import JournalFileBackend


class FlockJournalBackend(JournalFileBackend):
    """Optuna's journal file backend with ``append_logs`` under ``flock`` and without fsync."""

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        """Append ``logs`` as JSON lines in one write, under an exclusive lock on the file."""
        data = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs).encode("utf-8")
        fd = os.open(self._file_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            view = memoryview(data)
            while view:  # a regular file takes it in one write; loop only if the kernel says otherwise
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)  # releases the lock
