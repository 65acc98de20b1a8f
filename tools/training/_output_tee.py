"""Capturing a job's output: a tee of file descriptors 1 and 2 that keeps a bounded tail in memory.

The tail becomes the ``output.log`` artifact of a failed run; the output still reaches the job log.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: bytes of combined stdout/stderr kept for the failure artifact (the tail).
OUTPUT_TAIL_BYTES = 256_000


class OutputTee:
    """Copy everything written to file descriptors 1 and 2 (Python and C code) into a bounded buffer.

    The output still reaches the original descriptors (the job log), so live logs keep working.
    """

    def __init__(self, limit: int = OUTPUT_TAIL_BYTES) -> None:
        self.limit = limit
        self._buffer = bytearray()
        self._lock = threading.Lock()
        self._saved: list[int] = []
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> OutputTee:
        _flush_std()
        for fd in (1, 2):
            saved = os.dup(fd)
            read_end, write_end = os.pipe()
            os.dup2(write_end, fd)
            os.close(write_end)
            thread = threading.Thread(target=self._pump, args=(read_end, saved), daemon=True)
            thread.start()
            self._saved.append(saved)
            self._threads.append(thread)
        return self

    def _pump(self, read_end: int, target: int) -> None:
        while chunk := os.read(read_end, 65536):
            os.write(target, chunk)
            with self._lock:
                self._buffer.extend(chunk)
                del self._buffer[: max(0, len(self._buffer) - self.limit)]
        os.close(read_end)

    def __exit__(self, *exc: object) -> None:
        _flush_std()
        for fd, saved in zip((1, 2), self._saved, strict=True):
            os.dup2(saved, fd)  # closes the pipe's write end, so the pump sees end of file
        for thread in self._threads:
            thread.join(timeout=2)  # a forked grandchild may still hold the pipe open
        for saved in self._saved:
            os.close(saved)

    def text(self) -> str:
        with self._lock:
            return self._buffer.decode("utf-8", errors="replace")


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


@contextmanager
def maybe_tee(enabled: bool) -> Iterator[OutputTee | None]:
    """Tee fds 1/2 for the block when ``enabled`` (yields the tee, or None)."""
    if not enabled:
        yield None
        return
    with OutputTee() as tee:
        yield tee
