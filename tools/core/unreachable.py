"""Telling "the tracking server could not be reached" apart from every other MLflow error.

Cheap to import (no mlflow): the agent's turn failure, the outbox and the client's breaker share it.
"""

from __future__ import annotations

_CONNECTION_SIGNS = (
    "Max retries exceeded", "Connection refused", "NewConnectionError", "Read timed out", "ConnectTimeout",
    "RemoteDisconnected", "Connection aborted", "Failed to establish",
)  # fmt: skip


class TrackingUnavailable(ConnectionError):
    """The tracking server could not be reached a moment ago; calls fail fast until the hold ends."""


def is_unreachable(exc: BaseException | str) -> bool:
    """Whether an error (or an error text) means the tracking server could not be reached."""
    if isinstance(exc, TrackingUnavailable):
        return True
    text = str(exc)
    return any(sign in text for sign in _CONNECTION_SIGNS)
