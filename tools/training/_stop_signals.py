"""Stopping a training job cleanly: SIGTERM and the job's own deadline become ``Interrupted``.

``stop_signals`` installs the handlers for the duration of a job (main thread only); ``STOP.armed_block``
marks the part of a run where a signal interrupts training. Outside it (while the run is being closed)
a signal is only remembered, so closing the run is never cut short.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Literal


class Interrupted(BaseException):
    """Raised inside training when the job is told to stop (BaseException: not caught as a failure)."""

    def __init__(self, kind: Literal["sigterm", "timeout"]) -> None:
        super().__init__("terminated by SIGTERM" if kind == "sigterm" else "the run's deadline passed")
        self.kind: Literal["sigterm", "timeout"] = kind


class _StopSwitch:
    """Turns SIGTERM/SIGALRM into ``Interrupted`` while training, and into a no-op while closing a run."""

    def __init__(self) -> None:
        self.armed = False
        self.pending: Literal["sigterm", "timeout"] | None = None

    def handler(self, signum: int, frame: FrameType | None) -> None:
        kind: Literal["sigterm", "timeout"] = "timeout" if signum == signal.SIGALRM else "sigterm"
        self.pending = self.pending or kind
        if self.armed:
            self.armed = False  # raise once; the run is being closed from here on
            raise Interrupted(kind)

    @contextmanager
    def armed_block(self) -> Iterator[None]:
        if self.pending:
            raise Interrupted(self.pending)
        self.armed = True
        try:
            yield
        finally:
            self.armed = False


STOP = _StopSwitch()


@contextmanager
def stop_signals(timeout_seconds: float | None) -> Iterator[None]:
    """Route SIGTERM (and SIGALRM after ``timeout_seconds``) to a clean KILLED end of the run.

    Main thread only; the previous handlers are restored on exit, and a signal remembered during the
    block is forgotten then: it stopped this job, not whatever the process runs next.
    """
    STOP.pending = None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGALRM)}
    signal.signal(signal.SIGTERM, STOP.handler)
    signal.signal(signal.SIGALRM, STOP.handler)
    if timeout_seconds:
        signal.setitimer(signal.ITIMER_REAL, timeout_seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        STOP.pending = None
