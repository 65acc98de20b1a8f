"""The MLflow client every expagent process writes through: redaction at the sink, and a breaker.

Whatever code path writes to MLflow (a tool, a node, the trainer, the tuning loop, a future feature),
params, tags, run names, notes and text artifacts pass ``tools.core.redact`` on their way out, so no
caller can forget it.

The breaker: MLflow's own HTTP retries ride out a short outage (``tools.core.tracking.bound_mlflow_http``).
Once one call has still failed to reach the server, every call of this process fails at once with
``TrackingUnavailable`` for ``BREAKER_HOLD_S`` seconds instead of waiting its own minute: a store that
is gone ends the turn in bounded time. The next call after the hold tries the server again.
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from tools.core.outbox import Outbox
from tools.core.redact import redact, redact_text
from tools.core.unreachable import TrackingUnavailable, is_unreachable

BREAKER_HOLD_S = 45.0


class _Breaker:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open_until = 0.0
        self.cause = ""

    def check(self, uri: str) -> None:
        with self.lock:
            left = self.open_until - time.monotonic()
            cause = self.cause
        if left > 0:
            raise TrackingUnavailable(
                f"the tracking server {uri} is unreachable ({cause}); not retrying for another {left:.0f} s"
            )

    def trip(self, exc: BaseException | str) -> None:
        """Open the breaker if ``exc`` (an error, or another process's error text) says "unreachable"."""
        if not is_unreachable(exc):
            return
        with self.lock:
            self.open_until = time.monotonic() + BREAKER_HOLD_S
            self.cause = "connection failed after retries"


BREAKER = _Breaker()


def note_job_error(tracking_uri: str, text: str, reported_at: datetime | None = None) -> None:
    """Open this process's breaker when a job process reports that *this* tracking server was unreachable.

    The job waited out its own retries already; waiting them out again here would double the time a
    turn needs to notice an outage. Only errors that name the tracking server count, and only recent
    ones: a report older than ``BREAKER_HOLD_S`` (a job that ended in an earlier outage, read by the
    next command once the server is back) says nothing about the server now.
    """
    if reported_at is not None and (datetime.now(UTC) - reported_at).total_seconds() > BREAKER_HOLD_S:
        return
    host = urlparse(tracking_uri).netloc
    if host and host in text and is_unreachable(text):
        BREAKER.trip(text)


def _through_breaker(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(self: MlflowClient, *args: Any, **kwargs: Any) -> Any:
        if not str(self.tracking_uri).startswith("http"):
            return method(self, *args, **kwargs)
        BREAKER.check(str(self.tracking_uri))
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:
            BREAKER.trip(exc)
            raise

    return call


def _text(value: Any) -> Any:
    return redact_text(value) if isinstance(value, str) else redact(value)


class RedactingMlflowClient(MlflowClient):
    """``MlflowClient`` whose writes of text are redacted (metrics are numbers and pass unchanged).

    ``outbox`` (set by ``tools.core.tracking.make_client``) keeps run-state writes the server could not
    take (``tools.core.tracking.end_run``).
    """

    outbox: Outbox | None = None

    def create_run(
        self,
        experiment_id: str,
        start_time: int | None = None,
        tags: dict[str, Any] | None = None,
        run_name: str | None = None,
    ) -> Any:
        clean = {redact_text(str(k)): _text(v) for k, v in (tags or {}).items()}
        return super().create_run(experiment_id, start_time, clean, _text(run_name) if run_name else run_name)

    def set_tag(self, run_id: str, key: str, value: Any, synchronous: bool | None = None) -> Any:
        return super().set_tag(run_id, redact_text(key), _text(str(value)), synchronous=synchronous)

    def log_param(self, run_id: str, key: str, value: Any, synchronous: bool | None = None) -> Any:
        return super().log_param(run_id, redact_text(key), _text(value), synchronous=synchronous)

    def log_batch(self, run_id: str, metrics: Sequence[Metric] = (), params: Sequence[Param] = (),
                  tags: Sequence[RunTag] = (), synchronous: bool | None = None) -> Any:  # fmt: skip
        params = [Param(redact_text(p.key), redact_text(str(p.value))) for p in params]
        tags = [RunTag(redact_text(t.key), redact_text(str(t.value))) for t in tags]
        return super().log_batch(run_id, metrics, params, tags, synchronous=synchronous)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        super().log_text(run_id, redact_text(text), artifact_file)

    def log_dict(self, run_id: str, dictionary: dict[str, Any], artifact_file: str) -> None:
        super().log_dict(run_id, redact(dictionary), artifact_file)

    def update_run(self, run_id: str, status: str | None = None, name: str | None = None) -> None:
        super().update_run(run_id, status, redact_text(name) if name else name)

    def set_experiment_tag(self, experiment_id: str, key: str, value: Any) -> None:
        super().set_experiment_tag(experiment_id, redact_text(key), _text(str(value)))

    def create_experiment(
        self,
        name: str,
        artifact_location: str | None = None,
        tags: dict[str, Any] | None = None,
    ) -> str:
        clean = {redact_text(str(k)): _text(str(v)) for k, v in (tags or {}).items()} or None
        return super().create_experiment(redact_text(name), artifact_location, clean)

    def get_experiment_by_name(self, name: str) -> Any:
        # Names are stored redacted, so they are looked up redacted: one request, one experiment.
        return super().get_experiment_by_name(redact_text(name))


for _name in dir(MlflowClient):  # every public call of the client goes through the breaker
    _raw = inspect.getattr_static(RedactingMlflowClient, _name, None)
    if not _name.startswith("_") and inspect.isfunction(_raw):
        setattr(RedactingMlflowClient, _name, _through_breaker(_raw))
