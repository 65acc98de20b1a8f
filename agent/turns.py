"""A turn running in the background that any thread may cancel: the one cancellable-turn mechanism.

The terminal (``expagent chat``/``run``: Ctrl-C), the Slack bot (a cancel message or button) and any
other front end start a turn with :class:`BackgroundTurn` and stop it with :meth:`BackgroundTurn.cancel`,
which goes through ``AgentService.cancel`` (the rollback path: jobs cancelled, runs ended KILLED with a
cancellation record).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from agent.service import TurnResult


class CancelsTurns(Protocol):
    """What a background turn needs of the service: its thread-safe cancel (``AgentService.cancel``)."""

    def cancel(self, thread_id: str, by: str) -> TurnResult: ...


class BackgroundTurn:
    """Run ``work`` (one service call) in its own thread; wait for it, or cancel it through the service."""

    def __init__(
        self,
        service: CancelsTurns,
        thread_id: str,
        work: Callable[[], TurnResult],
        name: str = "expagent-turn",
    ) -> None:
        self.service, self.thread_id = service, thread_id
        self._result: TurnResult | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._target, args=(work,), name=name, daemon=True)
        self._thread.start()

    def _target(self, work: Callable[[], TurnResult]) -> None:
        try:
            self._result = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread by result()
            self._error = exc

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds; return True once the turn has ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def result(self) -> TurnResult:
        """Wait for the turn and return its result (re-raising what the turn raised)."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def cancel(self, by: str) -> TurnResult:
        """Stop the turn through the service's rollback path and return the rolled-back result."""
        cancelled = self.service.cancel(self.thread_id, by=by)
        self._thread.join()
        if self._error is None and self._result is not None:
            return self._result
        return cancelled


def run_until_interrupted(
    service: CancelsTurns,
    thread_id: str,
    work: Callable[[], TurnResult],
    by: str,
    on_cancel: Callable[[], None] | None = None,
) -> TurnResult:
    """Run ``work`` as a background turn; Ctrl-C (KeyboardInterrupt) cancels it as ``by``."""
    turn = BackgroundTurn(service, thread_id, work)
    try:
        while not turn.wait(0.2):
            pass
    except KeyboardInterrupt:
        if on_cancel is not None:
            on_cancel()
        return turn.cancel(by)
    return turn.result()


class Stopped(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP arrived: the turn is cancelled and answered."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def signals_cancel_turns(received: list[int]) -> Iterator[None]:
    """Turn SIGINT, SIGTERM and SIGHUP into :class:`Stopped` in the main thread for the block.

    ``received`` collects the signal numbers, so the caller can exit with 128 + the signal number
    after the cancelled turn has been answered.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: object) -> None:
        received.append(signum)
        raise Stopped(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
