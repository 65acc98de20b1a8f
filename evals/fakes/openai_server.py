"""A local HTTP server speaking the OpenAI Chat Completions API, replaying scripted replies.

The official ``openai`` client (and ``langchain_openai.ChatOpenAI`` on top of it) talks to it
unchanged: point ``OPENAI_BASE_URL`` at ``srv.base_url``. Endpoints: ``POST /v1/chat/completions``
(JSON, or Server-Sent Events when ``stream: true``) and ``GET /v1/models``. Every request is recorded
(path, headers, JSON body) so tests can assert the tool schemas and the Authorization header sent.

Script entries:
- ``"text"`` — an assistant text reply;
- ``{"content": str | None, "tool_calls": [{"name", "args": dict | JSON str, "id"?}],
  "finish_reason"?, "usage"?: {"prompt_tokens", "completion_tokens"}}``;
- ``{"error": {"status": 429, "message": "...", "type"?, "retry_after"?: s, "retryable"?: bool}}`` —
  answer with that HTTP error (``retryable`` drops ``x-should-retry: false``; ``retry_after`` sends
  ``Retry-After``);
- ``{"raw": "...", "status"?: 200}`` — send these bytes as the body (a truncated body, empty
  ``choices``, not JSON at all);
- ``"repeat": n`` — the ``content`` repeated n times (a huge reply without a huge script);
- ``"delay": seconds`` on any entry — wait that long before answering (a server that never answers).

The server enforces OpenAI's message-sequence rules, as the real API does: an assistant message with
``tool_calls`` must be followed by one ``tool`` message per call ID, and a ``tool`` message must answer a
call of the assistant message before it. A request that breaks them gets HTTP 400 (the real error text)
without using up a scripted reply, and is counted in ``protocol_errors``.

When the script runs out the server answers 500 with ``code: script_exhausted`` and
``x-should-retry: false`` (so the client does not retry), and ``assert_complete`` reports it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from evals.fakes._http import QuietHTTPServer

ScriptEntry = str | dict[str, Any]


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None


def _count_tokens(text: str) -> int:
    # Usage the server reports when the script gives none: tiktoken, like the real API.
    from agent.tokens import count_tokens

    return count_tokens(text)


class OpenAIReplayServer:
    """Serve scripted Chat Completions on 127.0.0.1 (a free port); use as a context manager."""

    def __init__(
        self, responses: Sequence[ScriptEntry], *, api_key: str | None = None, model: str = "gpt-4o-mini"
    ) -> None:
        self.responses = [validate_entry(entry, i) for i, entry in enumerate(responses)]
        self.api_key = api_key
        self.model = model
        self.requests: list[RecordedRequest] = []
        self.exhausted_calls = 0
        self.protocol_errors: list[str] = []
        self._position = 0
        self._lock = threading.Lock()
        self._server: QuietHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """The URL to give the client as ``base_url`` / ``OPENAI_BASE_URL`` (ends in ``/v1``)."""
        if self._server is None:
            raise RuntimeError(
                "OpenAIReplayServer is not running; use it as a context manager or call start()"
            )
        return f"http://127.0.0.1:{self._server.server_port}/v1"

    @property
    def chat_requests(self) -> list[dict[str, Any]]:
        """The JSON bodies of the chat completion requests, in order."""
        return [r.body for r in self.requests if r.path.endswith("/chat/completions") and r.body is not None]

    @property
    def remaining(self) -> int:
        return len(self.responses) - self._position

    def start(self) -> OpenAIReplayServer:
        """Start serving in a daemon thread."""
        self._server = QuietHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="openai-replay",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> OpenAIReplayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def assert_complete(self) -> None:
        """Raise AssertionError if replies were left unused or the script ran out."""
        if self.remaining or self.exhausted_calls or self.protocol_errors:
            raise AssertionError(
                f"OpenAIReplayServer: {self.remaining} scripted replies unused, "
                f"{self.exhausted_calls} requests arrived after the script ran out, "
                f"protocol errors: {self.protocol_errors}"
            )

    def next_entry(self) -> tuple[int, dict[str, Any] | None]:
        """Return (request number, the next scripted entry or None when the script is exhausted)."""
        with self._lock:
            number = self._position + self.exhausted_calls + 1
            if self._position >= len(self.responses):
                self.exhausted_calls += 1
                return number, None
            self._position += 1
            return number, self.responses[self._position - 1]


_ENTRY_KEYS = frozenset(
    {"content", "tool_calls", "finish_reason", "usage", "error", "raw", "status", "delay", "repeat"}
)


def validate_entry(entry: ScriptEntry, index: int) -> dict[str, Any]:
    if isinstance(entry, str):
        return {"content": entry}
    if not isinstance(entry, dict):
        raise ValueError(f"script entry #{index + 1}: expected str or dict, got {type(entry).__name__}")
    unknown = set(entry) - _ENTRY_KEYS
    if unknown:
        raise ValueError(f"script entry #{index + 1}: unknown keys {sorted(unknown)}")
    for j, call in enumerate(entry.get("tool_calls") or []):
        if not isinstance(call, dict) or "name" not in call:
            raise ValueError(f"script entry #{index + 1}, tool call #{j + 1}: needs 'name' and 'args'")
    return entry


def _wire_tool_calls(entry: dict[str, Any], number: int) -> list[dict[str, Any]]:
    calls = []
    for j, call in enumerate(entry.get("tool_calls") or []):
        args = call.get("args", {})
        calls.append(
            {
                "id": call.get("id") or f"call_{number}_{j + 1}",
                "type": "function",
                "function": {
                    "name": call["name"],
                    "arguments": args if isinstance(args, str) else json.dumps(args),
                },
            }
        )
    return calls


def _usage(entry: dict[str, Any], request: dict[str, Any], message: dict[str, Any]) -> dict[str, int]:
    given = entry.get("usage") or {}
    prompt = given.get("prompt_tokens")
    if prompt is None:
        prompt = _count_tokens(json.dumps(request.get("messages", [])) + json.dumps(request.get("tools", [])))
    completion = given.get("completion_tokens")
    if completion is None:
        completion = _count_tokens(
            (message.get("content") or "") + json.dumps(message.get("tool_calls") or [])
        )
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion_body(
    entry: dict[str, Any], request: dict[str, Any], number: int, model: str
) -> dict[str, Any]:
    """Return the Chat Completions JSON for one scripted entry."""
    tool_calls = _wire_tool_calls(entry, number)
    content = entry.get("content")
    if content is not None and entry.get("repeat"):
        content = str(content) * int(entry["repeat"])
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    elif message["content"] is None:
        message["content"] = ""
    finish = entry.get("finish_reason") or ("tool_calls" if tool_calls else "stop")
    return {
        "id": f"chatcmpl-replay-{number}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model") or model,
        "system_fingerprint": "fp_replay",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": _usage(entry, request, message),
    }


def stream_chunks(body: dict[str, Any], include_usage: bool) -> list[dict[str, Any]]:
    """Return the ``chat.completion.chunk`` events that stream ``body`` (one delta per part)."""
    base = {k: body[k] for k in ("id", "created", "model", "system_fingerprint")} | {
        "object": "chat.completion.chunk"
    }
    message, finish = body["choices"][0]["message"], body["choices"][0]["finish_reason"]

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return base | {
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
        }

    chunks = [chunk({"role": "assistant", "content": ""})]
    if message.get("content"):
        chunks.append(chunk({"content": message["content"]}))
    for i, call in enumerate(message.get("tool_calls") or []):
        fn = call["function"]
        chunks.append(
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": i,
                            "id": call["id"],
                            "type": "function",
                            "function": {"name": fn["name"], "arguments": ""},
                        }
                    ]
                }
            )
        )
        chunks.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": fn["arguments"]}}]}))
    chunks.append(chunk({}, finish))
    if include_usage:
        chunks.append(base | {"choices": [], "usage": body["usage"]})
    return chunks


def sequence_problem(messages: list[Any]) -> str | None:
    """Return the 400 message the real API gives for a broken tool-call sequence, or None."""
    pending: list[str] = []
    answerable: set[str] = set()
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in answerable:
                return (
                    "Invalid parameter: messages with role 'tool' must be a response to a preceeding "
                    f"message with 'tool_calls' (messages.[{i}], tool_call_id {call_id!r})."
                )
            pending = [p for p in pending if p != call_id]
            continue
        if pending:
            return (
                "An assistant message with 'tool_calls' must be followed by tool messages responding to "
                "each 'tool_call_id'. The following tool_call_ids did not have response messages: "
                + ", ".join(pending)
            )
        answerable = set()
        if role == "assistant":
            ids = [str(c.get("id")) for c in message.get("tool_calls") or [] if isinstance(c, dict)]
            pending, answerable = list(ids), set(ids)
    return None


def _error(status: int, message: str, kind: str, code: str | None = None) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _handler_for(server: OpenAIReplayServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
            return

        def do_GET(self) -> None:  # noqa: N802 - http.server naming
            self._record(None)
            if self.path.rstrip("/") != "/v1/models":
                return self._send(*_error(404, f"no route GET {self.path}", "invalid_request_error"))
            if self._unauthorised():
                return None
            models = [{"id": server.model, "object": "model", "created": 0, "owned_by": "expagent-replay"}]
            return self._send(200, {"object": "list", "data": models})

        def do_POST(self) -> None:  # noqa: N802 - http.server naming
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError as exc:
                self._record(None)
                return self._send(*_error(400, f"request body is not JSON: {exc}", "invalid_request_error"))
            self._record(body)
            if self.path.rstrip("/") != "/v1/chat/completions":
                return self._send(*_error(404, f"no route POST {self.path}", "invalid_request_error"))
            if self._unauthorised():
                return None
            if not isinstance(body.get("messages"), list) or not body.get("model"):
                return self._send(
                    *_error(400, "'model' and 'messages' are required", "invalid_request_error")
                )
            return self._reply(body)

        def _reply(self, request: dict[str, Any]) -> None:
            problem = sequence_problem(request["messages"])
            if problem is not None:
                server.protocol_errors.append(problem)
                return self._send(*_error(400, problem, "invalid_request_error"), {"x-should-retry": "false"})
            number, entry = server.next_entry()
            if entry is None:
                status, payload = _error(
                    500,
                    f"OpenAIReplayServer: request #{number} but the script has only {len(server.responses)} "
                    "replies (script exhausted)",
                    "server_error",
                    "script_exhausted",
                )
                return self._send(status, payload, {"x-should-retry": "false"})
            if entry.get("delay"):
                time.sleep(float(entry["delay"]))
            if "error" in entry:
                spec = entry["error"]
                headers = {} if spec.get("retryable") else {"x-should-retry": "false"}
                if spec.get("retry_after") is not None:
                    headers["retry-after"] = str(spec["retry_after"])
                return self._send(
                    *_error(
                        int(spec.get("status", 500)),
                        spec.get("message", "scripted error"),
                        spec.get("type", "server_error"),
                    ),
                    headers,
                )
            if "raw" in entry:
                return self._send_raw(int(entry.get("status", 200)), str(entry["raw"]).encode())
            body = completion_body(entry, request, number, server.model)
            if request.get("stream"):
                include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
                return self._stream(stream_chunks(body, include_usage))
            return self._send(200, body)

        def _unauthorised(self) -> bool:
            if server.api_key is None or self.headers.get("Authorization") == f"Bearer {server.api_key}":
                return False
            self._send(
                *_error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
            )
            return True

        def _record(self, body: dict[str, Any] | None) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            server.requests.append(RecordedRequest(self.command, self.path, headers, body))

        def _send(self, status: int, payload: dict[str, Any], extra: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def _send_raw(self, status: int, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _stream(self, chunks: list[dict[str, Any]]) -> None:
            data = b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
