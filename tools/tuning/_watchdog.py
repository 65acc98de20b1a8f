"""The runaway-trial watchdog: decides when a running trial has run too long and must be cancelled."""

from __future__ import annotations

import statistics


class Watchdog:
    """Flags a trial past its hard deadline, or past ``factor`` x the median finished-trial time.

    The median rule applies only once ``min_trials`` trials finished, and never before ``floor_seconds``
    (tiny trials have noisy times). Times are wall seconds since the trial's job started.
    """

    def __init__(self, deadline_seconds: float, factor: float, floor_seconds: float, min_trials: int) -> None:
        self.deadline_seconds = deadline_seconds
        self.factor = factor
        self.floor_seconds = floor_seconds
        self.min_trials = min_trials
        self._finished: list[float] = []

    def record(self, wall_seconds: float) -> None:
        """Add the wall time of a trial that finished normally."""
        self._finished.append(wall_seconds)

    @property
    def median_limit(self) -> float | None:
        """Return the current median-rule limit in seconds, or None while it does not apply."""
        if len(self._finished) < self.min_trials:
            return None
        return max(self.factor * statistics.median(self._finished), self.floor_seconds)

    def overdue(self, elapsed_seconds: float) -> str | None:
        """Return why a trial running for ``elapsed_seconds`` must be stopped, or None if it may go on."""
        if elapsed_seconds > self.deadline_seconds:
            return f"ran {elapsed_seconds:.1f}s, past its deadline of {self.deadline_seconds:g}s"
        limit = self.median_limit
        if limit is not None and elapsed_seconds > limit:
            median = statistics.median(self._finished)
            return (
                f"ran {elapsed_seconds:.1f}s, more than {self.factor:g}x the median trial time "
                f"({median:.1f}s; limit {limit:.1f}s)"
            )
        return None
