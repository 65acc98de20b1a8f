"""What the Slack bot keeps between events: thread ids, the delivery ledger, posting, progress.

- ``SlackThread`` maps a Slack thread to a graph thread id and back (button values carry it).
- ``DeliveryLedger`` remembers processed event ids and the threads the bot is in, in SQLite under the
  workspace, so Slack's retries are processed once even across restarts.
- ``SlackPoster`` is the only way the bot writes to Slack; it redacts every text it sends.
- ``ProgressMessage`` is one message per turn, updated in place at most once per interval.
"""

from __future__ import annotations

import copy
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from agent.slack_blocks import ProgressState, SlackMessage, escape, progress_message
from tools.core.redact import redact_text

if TYPE_CHECKING:
    from agent.service import ProgressEvent

logger = logging.getLogger(__name__)

_THREAD_PREFIX = "slack-"
_LEDGER_DAYS = 7


@dataclass(frozen=True)
class SlackThread:
    """A Slack thread: the channel and the ``ts`` of its first message."""

    channel: str
    thread_ts: str

    @property
    def thread_id(self) -> str:
        """The graph thread id; stable, so a restarted bot finds the same checkpoint."""
        return f"{_THREAD_PREFIX}{self.channel}-{self.thread_ts}"

    @classmethod
    def parse(cls, thread_id: str) -> SlackThread:
        """Invert ``thread_id``; raises ValueError for ids the bot did not make."""
        channel, _, thread_ts = thread_id.removeprefix(_THREAD_PREFIX).partition("-")
        if not thread_id.startswith(_THREAD_PREFIX) or not channel or not thread_ts:
            raise ValueError(f"not a Slack thread id: {thread_id!r}")
        return cls(channel, thread_ts)


class DeliveryLedger:
    """Processed deliveries and known threads, in one SQLite file (safe across threads and restarts)."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.execute("CREATE TABLE IF NOT EXISTS deliveries (key TEXT PRIMARY KEY, seen_at REAL NOT NULL)")
            db.execute("CREATE TABLE IF NOT EXISTS threads (thread_id TEXT PRIMARY KEY, since REAL NOT NULL)")
            db.execute("DELETE FROM deliveries WHERE seen_at < ?", (clock() - _LEDGER_DAYS * 86400,))

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def first_delivery(self, key: str) -> bool:
        """Record ``key``; return True only the first time it is ever seen."""
        with closing(self._connect()) as db, db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO deliveries (key, seen_at) VALUES (?, ?)", (key, self._clock())
            )
            return cursor.rowcount == 1

    def remember_thread(self, thread_id: str) -> None:
        """Mark a thread as one the bot takes part in (plain replies there reach the bot)."""
        with closing(self._connect()) as db, db:
            db.execute(
                "INSERT OR IGNORE INTO threads (thread_id, since) VALUES (?, ?)", (thread_id, self._clock())
            )

    def knows_thread(self, thread_id: str) -> bool:
        """Return whether the bot takes part in ``thread_id``."""
        with closing(self._connect()) as db:
            row = db.execute("SELECT 1 FROM threads WHERE thread_id = ?", (thread_id,)).fetchone()
        return row is not None


def redact_blocks(node: Any) -> Any:
    """Return a copy of a Block Kit tree with every ``text`` string redacted."""
    if isinstance(node, dict):
        return {
            key: redact_text(value) if key == "text" and isinstance(value, str) else redact_blocks(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [redact_blocks(item) for item in node]
    return copy.copy(node)


class SlackPoster:
    """Posts to Slack through the Web API client; every text and block is redacted first."""

    def __init__(self, client: WebClient) -> None:
        self.client = client

    def post(self, thread: SlackThread, message: SlackMessage) -> str:
        """Post ``message`` into the thread and return its ``ts``."""
        response = self.client.chat_postMessage(
            channel=thread.channel,
            thread_ts=thread.thread_ts,
            text=redact_text(message.text),
            blocks=redact_blocks(message.blocks),
        )
        return str(response["ts"])

    def update(self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]]) -> None:
        """Replace the text and blocks of a message the bot posted."""
        self.client.chat_update(channel=channel, ts=ts, text=redact_text(text), blocks=redact_blocks(blocks))

    def ephemeral(self, thread: SlackThread, user: str, message: SlackMessage) -> None:
        """Show ``message`` to ``user`` only (refusals); failures are logged, not raised."""
        try:
            self.client.chat_postEphemeral(
                channel=thread.channel,
                user=user,
                thread_ts=thread.thread_ts,
                text=redact_text(message.text),
                blocks=redact_blocks(message.blocks),
            )
        except SlackApiError as error:
            logger.warning("ephemeral to %s failed: %s", user, error.response.get("error"))


def describe(event: ProgressEvent) -> str:
    """Return one escaped mrkdwn progress line for a service progress event."""
    line = escape(event.message)
    if event.run_id and event.run_id not in event.message:
        line += f" (run `{event.run_id}`)"
    return line


class ProgressMessage:
    """One progress message per turn, edited in place at most once per ``interval`` seconds.

    ``add`` never blocks the caller on Slack: updates are sent from a timer thread, and events that
    arrive within the interval are coalesced into the next update.
    """

    def __init__(
        self,
        poster: SlackPoster,
        thread: SlackThread,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._poster = poster
        self._thread = thread
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._lines: list[str] = []
        self._state: ProgressState = "running"
        self._timer: threading.Timer | None = None
        self._closed = False
        self.ts = poster.post(thread, progress_message(thread.thread_id, [], "running"))
        self._last = clock()

    @property
    def lines(self) -> list[str]:
        """Every line added so far (the message shows the latest ones)."""
        with self._lock:
            return list(self._lines)

    def add(self, line: str) -> None:
        """Add an escaped mrkdwn line; the message is updated within ``interval`` seconds."""
        with self._lock:
            if self._closed:
                return
            self._lines.append(line)
            self._schedule()

    def set_state(self, state: ProgressState, line: str | None = None) -> None:
        """Change the title (e.g. to cancelling) and optionally add a line."""
        with self._lock:
            if self._closed:
                return
            self._state = state
            if line:
                self._lines.append(line)
            self._schedule()

    def finish(self, state: ProgressState, line: str | None = None) -> None:
        """Send the final state (without the Cancel button), respecting the interval."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._state = state
            if line:
                self._lines.append(escape(line))
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            delay = max(0.0, self._last + self._interval - self._clock())
        time.sleep(delay)
        self._send(final=True)

    def _schedule(self) -> None:
        """Arrange one update at the earliest allowed time (caller holds the lock)."""
        if self._timer is not None:
            return
        delay = max(0.0, self._last + self._interval - self._clock())
        self._timer = threading.Timer(delay, self._send)
        self._timer.daemon = True
        self._timer.start()

    def _send(self, final: bool = False) -> None:
        with self._lock:
            self._timer = None
            if self._closed and not final:
                return
            message = progress_message(self._thread.thread_id, self._lines, self._state)
            try:
                self._poster.update(self._thread.channel, self.ts, message.text, message.blocks)
            except SlackApiError as error:
                logger.warning("progress update failed: %s", error.response.get("error"))
            self._last = self._clock()
