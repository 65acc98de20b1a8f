"""The HTTP path to an OpenAI-compatible model: bounded, visible, counted, and failing in one line.

``ModelWire`` is an ``httpx`` transport the ``openai`` client sends through (its own retries are off):

- every attempt is counted (``attempts``, ``turn_attempts``: what ``usage.http_attempts`` reports);
- each attempt gets ``call_timeout`` seconds, never more than what is left of the turn's model-time
  budget (``start_turn`` opens a turn's budget); when the budget is spent the wire raises
  ``ModelUnavailable`` instead of sending;
- 429, 5xx and connection errors are retried up to ``retries`` times, waiting what ``Retry-After``
  asks (or an exponential backoff) but only while the budget lasts; ``x-should-retry: false`` is obeyed;
- while a request waits longer than a few seconds, a line goes to ``progress`` (stderr by default):
  "waiting for the model at … 12 s".

``model_failure(exc)`` turns any exception raised by a model call into one line naming the endpoint
and the cause (or None when the error did not come from the model), and ``invoke_model`` makes a
reply the client could not read (empty ``choices``, a truncated body) such an error too.
"""

from __future__ import annotations

import email.utils
import functools
import os
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import Runnable

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
PROGRESS_AFTER_S = 5.0


def tls_context() -> ssl.SSLContext:
    """Return httpx's default TLS context (certifi's CAs, or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``), built
    once per process for each value of those variables.

    Each ``httpx`` transport or client built without one loads the CA bundle again (~10 ms of CPU); a
    model client needs two (its wire and the async client), and a process that builds a service per
    conversation (Slack, the eval harness) paid that every time: 8 % of a question scenario's CPU.
    """
    return _tls_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.cache
def _tls_context(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    # the variables are the cache key: httpx reads them itself when it builds the context
    return httpx.create_ssl_context()


class ModelUnavailable(RuntimeError):
    """The model could not be asked (budget spent) or its reply could not be read."""


class ModelWire(httpx.BaseTransport):
    """An ``httpx`` transport that bounds, retries, reports and counts requests to the model."""

    def __init__(
        self,
        endpoint: str,
        call_timeout: float,
        turn_budget: float,
        retries: int,
        progress: Callable[[str], None] | None = None,
        inner: httpx.BaseTransport | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.call_timeout = call_timeout
        self.turn_budget = turn_budget
        self.retries = retries
        self.progress = progress
        self.attempts = 0
        self.turn_attempts = 0
        self._inner = inner or httpx.HTTPTransport(verify=tls_context())
        self._deadline = time.monotonic() + turn_budget
        self._lock = threading.Lock()

    def start_turn(self) -> None:
        """Open a new turn: a full model-time budget and a fresh attempt count."""
        with self._lock:
            self._deadline = time.monotonic() + self.turn_budget
            self.turn_attempts = 0

    def remaining(self) -> float:
        """Seconds of the turn's model-time budget that are left."""
        return self._deadline - time.monotonic()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(self.retries + 1):
            response, error = self._attempt(request)
            last = attempt == self.retries
            if response is not None and (response.status_code not in RETRY_STATUSES or last):
                return response
            if response is not None and response.headers.get("x-should-retry", "").lower() == "false":
                return response
            wait = _retry_after(response) if response is not None else None
            wait = min(wait if wait is not None else 0.5 * 2**attempt, 60.0)
            if last or wait >= self.remaining() - 0.5:
                if response is not None:
                    return response
                assert error is not None
                raise error
            if response is not None:
                response.close()
            self._say(f"the model at {self.endpoint} asked to retry; waiting {wait:.0f} s")
            time.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempt(self, request: httpx.Request) -> tuple[httpx.Response | None, Exception | None]:
        left = self.remaining()
        if left <= 0:
            raise ModelUnavailable(
                f"the model at {self.endpoint} used up this turn's model-time budget "
                f"({self.turn_budget:.0f} s, EXPAGENT_MODEL_TURN_BUDGET_S)"
            )
        timeout = max(0.1, min(self.call_timeout, left))
        request.extensions["timeout"] = httpx.Timeout(timeout).as_dict()
        with self._lock:
            self.attempts += 1
            self.turn_attempts += 1
        done = threading.Event()
        ticker = threading.Thread(target=self._tick, args=(done,), daemon=True, name="model-wait")
        ticker.start()
        try:
            response = self._inner.handle_request(request)
            response.read()  # the whole body inside the timeout, so a stalled stream is a timeout
            return response, None
        except httpx.TimeoutException:
            return None, ModelUnavailable(
                f"the model at {self.endpoint} did not answer within {timeout:.0f} s"
            )
        except httpx.TransportError as exc:
            return None, ModelUnavailable(f"the model at {self.endpoint} could not be reached ({exc})")
        finally:
            done.set()

    def _tick(self, done: threading.Event) -> None:
        started = time.monotonic()
        while not done.wait(PROGRESS_AFTER_S):
            self._say(f"waiting for the model at {self.endpoint}… {time.monotonic() - started:.0f} s")

    def _say(self, line: str) -> None:
        if self.progress is not None:
            try:
                self.progress(line)
            except Exception:  # noqa: BLE001, S110 - progress is best effort; a closed stderr must not fail
                pass

    def close(self) -> None:
        self._inner.close()


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds the server asks to wait (``retry-after-ms``, ``Retry-After`` seconds or HTTP date)."""
    headers = response.headers
    try:
        if "retry-after-ms" in headers:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        return None


def model_failure(exc: BaseException) -> str | None:
    """Return one line naming the model endpoint and the cause, if ``exc`` came from a model call."""
    import openai

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ModelUnavailable):
            return str(current)
        if isinstance(current, openai.APIStatusError):
            where = _where(current)
            message = _short(getattr(current, "message", "") or str(current))
            return f"the model at {where} answered HTTP {current.status_code}: {message}"
        if isinstance(current, openai.APITimeoutError):
            return f"the model at {_where(current)} did not answer in time"
        if isinstance(current, openai.APIConnectionError):
            inner = current.__cause__ or current.__context__
            if isinstance(inner, ModelUnavailable):
                return str(inner)
            return f"the model at {_where(current)} could not be reached ({_short(str(inner or current))})"
        current = current.__cause__ or current.__context__
    return None


def _where(exc: Any) -> str:
    request = getattr(exc, "request", None)
    url = getattr(request, "url", None)
    if url is None:
        return "the configured endpoint"
    return f"{url.scheme}://{url.host}{f':{url.port}' if url.port else ''}{url.path}"


def _short(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[:limit] + "…"


def endpoint_of(model: Any) -> str:
    """The endpoint a chat model made by ``agent.chat_models`` talks to ("" when it is local)."""
    wire = getattr(model, "_wire", None)
    return str(getattr(wire, "endpoint", "") or "")


def invoke_model(model: Runnable[Any, Any], messages: Sequence[BaseMessage], endpoint: str = "") -> AIMessage:
    """Call the chat model; a reply it could not read becomes ``ModelUnavailable`` with one clear line.

    Errors of the HTTP path itself (``openai`` errors, ``ModelUnavailable``) pass through unchanged.
    """
    import openai

    try:
        reply = model.invoke(list(messages))
    except (openai.OpenAIError, ModelUnavailable):
        raise
    except (TypeError, KeyError, ValueError, AttributeError, IndexError) as exc:
        where = f" at {endpoint}" if endpoint else ""
        raise ModelUnavailable(
            f"the model{where} sent a reply that could not be read ({_short(str(exc))})"
        ) from exc
    if not isinstance(reply, AIMessage):
        raise ModelUnavailable(f"the model sent {type(reply).__name__}, not an assistant message")
    return reply
