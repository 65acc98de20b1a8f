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
from collections.abc import Generator
from typing import Any

from optuna.storages.journal import JournalFileBackend


class JournalLost(RuntimeError):
    """The study's journal file vanished, shrank or was replaced while the study was open.

    Continuing would replay the study from a different history (and launch trials it already ran), so
    the study stops instead.
    """


class FlockJournalBackend(JournalFileBackend):
    """Optuna's journal file backend with ``append_logs`` under ``flock`` and without fsync.

    It also notices the file being deleted, truncated or replaced under it (``JournalLost``).
    """

    def __init__(self, file_path: str) -> None:
        super().__init__(file_path)
        self._identity: tuple[int, int] | None = None  # (device, inode) once the file exists
        self._size = 0  # bytes this process knows the file holds at least

    def _check_file(self) -> None:
        try:
            stat = os.stat(self._file_path)
        except FileNotFoundError:
            if self._identity is None:  # not created yet
                return
            raise JournalLost(
                f"the study journal {self._file_path} was deleted while the study ran"
            ) from None
        identity = (stat.st_dev, stat.st_ino)
        if self._identity is not None and identity != self._identity:
            raise JournalLost(f"the study journal {self._file_path} was replaced while the study ran")
        if stat.st_size < self._size:
            raise JournalLost(
                f"the study journal {self._file_path} shrank from {self._size} to {stat.st_size} bytes"
            )
        self._identity, self._size = identity, stat.st_size

    def read_logs(self, log_number_from: int) -> Generator[dict[str, Any], None, None]:
        """Read the journal (Optuna's reader) after checking it is still the file this study wrote."""
        self._check_file()
        yield from super().read_logs(log_number_from)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        """Append ``logs`` as JSON lines in one write, under an exclusive lock on the file."""
        self._check_file()
        data = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs).encode("utf-8")
        fd = os.open(self._file_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            view = memoryview(data)
            while view:  # a regular file takes it in one write; loop only if the kernel says otherwise
                view = view[os.write(fd, view) :]
            stat = os.fstat(fd)
            self._identity, self._size = (stat.st_dev, stat.st_ino), stat.st_size
        finally:
            os.close(fd)  # releases the lock
