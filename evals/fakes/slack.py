"""A mock Slack: a Web API server the official ``slack_sdk.WebClient`` talks to, and a signed sender.

``MockSlack`` serves ``POST /api/<method>`` on 127.0.0.1 for the methods the bot uses
(``auth.test``, ``chat.postMessage``, ``chat.update``, ``chat.postEphemeral``, ``reactions.add``,
``conversations.replies``), checks the bearer token and Slack's Block Kit limits the way Slack does
(``invalid_blocks``, ``msg_too_long``, ...), keeps every message and records every call.
Point a client at it with ``WebClient(token=mock.token, base_url=mock.api_url)``.

``SlackSender`` plays Slack's side of the Events API and interactivity: it builds payloads shaped like
Slack's documented ``app_mention``, ``message.im`` and ``block_actions`` bodies, signs them with the
signing secret (``v0=HMAC-SHA256("v0:{timestamp}:{body}")``) and POSTs them to the bot's endpoint.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from evals.fakes._http import QuietHTTPServer

BOT_USER_ID = "UEXPAGENT"
BOT_ID = "BEXPAGENT"
TEAM_ID = "T0EXPAGENT"
APP_ID = "A0EXPAGENT"

SECTION_TEXT_LIMIT = 3000
HEADER_TEXT_LIMIT = 150
BLOCKS_PER_MESSAGE = 50
MESSAGE_TEXT_LIMIT = 40000


@dataclass
class SlackCall:
    """One Web API call the mock received."""

    method: str
    args: dict[str, Any]
    at: float = field(default_factory=time.monotonic)
    ok: bool = True
    error: str | None = None


@dataclass
class StoredMessage:
    """A message as the mock stores it (updates are applied in place)."""

    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None = None
    user: str = BOT_USER_ID
    bot_id: str | None = BOT_ID
    ephemeral_for: str | None = None
    updates: int = 0

    def block_text(self) -> str:
        """Return the text of every text-bearing block, joined by newlines (or ``text`` if none)."""
        parts = list(_texts(self.blocks))
        return "\n".join(parts) if parts else self.text

    def action_values(self) -> dict[str, str]:
        """Return ``{action_id: value}`` for the buttons on this message."""
        return {
            element["action_id"]: element.get("value", "")
            for block in self.blocks
            if block.get("type") == "actions"
            for element in block.get("elements", [])
        }


def _texts(node: Any) -> Any:
    """Yield every string under a ``text`` key in a Block Kit tree, in order."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "text" and isinstance(value, str):
                yield value
            else:
                yield from _texts(value)
    elif isinstance(node, list):
        for item in node:
            yield from _texts(item)


def blocks_problem(blocks: list[dict[str, Any]]) -> str | None:
    """Return why Slack would reject ``blocks`` (``None`` when they are within Slack's limits)."""
    if len(blocks) > BLOCKS_PER_MESSAGE:
        return f"more than {BLOCKS_PER_MESSAGE} blocks ({len(blocks)})"
    for index, block in enumerate(blocks):
        text = block.get("text", {}).get("text", "") if isinstance(block.get("text"), dict) else ""
        if block.get("type") == "section" and not 0 < len(text) <= SECTION_TEXT_LIMIT:
            return f"block {index}: section text must be 1..{SECTION_TEXT_LIMIT} chars, got {len(text)}"
        if block.get("type") == "header" and not 0 < len(text) <= HEADER_TEXT_LIMIT:
            return f"block {index}: header text must be 1..{HEADER_TEXT_LIMIT} chars, got {len(text)}"
        if block.get("type") == "header" and block["text"].get("type") != "plain_text":
            return f"block {index}: header text must be plain_text"
    return None


class _State:
    """Messages and calls, guarded by one lock (the server is threaded)."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.calls: list[SlackCall] = []
        self.messages: list[StoredMessage] = []
        self.reactions: list[tuple[str, str, str]] = []
        self._ts = itertools.count(1)

    def next_ts(self) -> str:
        return f"{1_700_000_000 + next(self._ts)}.000100"


class MockSlack:
    """A Slack Web API server on 127.0.0.1; use as a context manager or call ``close()``."""

    def __init__(self, token: str = "xoxb-mock-token") -> None:
        self.token = token
        self._state = _State()
        self._server = QuietHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def api_url(self) -> str:
        """The ``base_url`` for ``slack_sdk.WebClient`` (ends with ``/api/``)."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/api/"

    def close(self) -> None:
        """Stop the server."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> MockSlack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- what tests read --------------------------------------------------------------------------

    def calls(self, method: str | None = None) -> list[SlackCall]:
        """Return recorded calls, optionally only those to ``method``."""
        with self._state.lock:
            return [c for c in self._state.calls if method is None or c.method == method]

    def messages(
        self, channel: str | None = None, thread_ts: str | None = None, *, ephemeral: bool = False
    ) -> list[StoredMessage]:
        """Return stored messages (a thread's root included), oldest first; ephemerals on request."""
        with self._state.lock:
            return [
                m
                for m in self._state.messages
                if (channel is None or m.channel == channel)
                and (thread_ts is None or thread_ts in (m.thread_ts, m.ts))
                and (m.ephemeral_for is not None) == ephemeral
            ]

    def wait_for(
        self, predicate: Callable[[MockSlack], Any], timeout: float = 20.0, what: str = "condition"
    ) -> Any:
        """Block until ``predicate(self)`` is truthy (re-checked on every call) and return its value."""
        deadline = time.monotonic() + timeout
        with self._state.lock:
            while True:
                value = predicate(self)
                if value:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
                self._state.lock.wait(min(remaining, 0.2))

    # ---- the Web API ------------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        mock = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
                pass

            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                method = self.path.split("?")[0].removeprefix("/api/")
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode("utf-8")
                args = _parse_args(raw, self.headers.get("Content-Type", ""))
                auth = self.headers.get("Authorization", "")
                reply = mock._dispatch(method, args, auth)
                body = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler

    def _dispatch(self, method: str, args: dict[str, Any], auth: str) -> dict[str, Any]:
        handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.postEphemeral": self._post_ephemeral,
            "reactions.add": self._reactions_add,
            "conversations.replies": self._replies,
        }
        with self._state.lock:
            if auth != f"Bearer {self.token}":
                reply: dict[str, Any] = {"ok": False, "error": "not_authed" if not auth else "invalid_auth"}
            elif method not in handlers:
                reply = {"ok": False, "error": "unknown_method"}
            else:
                reply = handlers[method](args)
            self._state.calls.append(SlackCall(method, args, ok=reply["ok"], error=reply.get("error")))
            self._state.lock.notify_all()
        return reply

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://expagent-test.slack.com/",
            "team": "expagent-test",
            "user": "expagent",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _message_problem(self, args: dict[str, Any]) -> dict[str, Any] | None:
        if not args.get("channel"):
            return {"ok": False, "error": "channel_not_found"}
        blocks = args.get("blocks") or []
        if not blocks and not args.get("text"):
            return {"ok": False, "error": "no_text"}
        if len(args.get("text") or "") > MESSAGE_TEXT_LIMIT:
            return {"ok": False, "error": "msg_too_long"}
        problem = blocks_problem(blocks)
        if problem:
            return {"ok": False, "error": "invalid_blocks", "errors": [problem]}
        return None

    def _post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        problem = self._message_problem(args)
        if problem:
            return problem
        message = StoredMessage(
            channel=args["channel"],
            ts=self._state.next_ts(),
            text=args.get("text") or "",
            blocks=list(args.get("blocks") or []),
            thread_ts=args.get("thread_ts"),
        )
        self._state.messages.append(message)
        return {"ok": True, "channel": message.channel, "ts": message.ts, "message": _wire(message)}

    def _update(self, args: dict[str, Any]) -> dict[str, Any]:
        problem = self._message_problem(args)
        if problem:
            return problem
        found = [m for m in self._state.messages if m.channel == args["channel"] and m.ts == args.get("ts")]
        if not found or found[0].ephemeral_for:
            return {"ok": False, "error": "message_not_found"}
        message = found[0]
        message.text = args.get("text") or message.text
        message.blocks = list(args.get("blocks") or [])
        message.updates += 1
        return {"ok": True, "channel": message.channel, "ts": message.ts, "text": message.text}

    def _post_ephemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        problem = self._message_problem(args)
        if problem:
            return problem
        if not args.get("user"):
            return {"ok": False, "error": "user_not_in_channel"}
        message = StoredMessage(
            channel=args["channel"],
            ts=self._state.next_ts(),
            text=args.get("text") or "",
            blocks=list(args.get("blocks") or []),
            thread_ts=args.get("thread_ts"),
            ephemeral_for=args["user"],
        )
        self._state.messages.append(message)
        return {"ok": True, "message_ts": message.ts}

    def _reactions_add(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("name") or not args.get("timestamp"):
            return {"ok": False, "error": "invalid_arguments"}
        self._state.reactions.append((args.get("channel", ""), args["timestamp"], args["name"]))
        return {"ok": True}

    def _replies(self, args: dict[str, Any]) -> dict[str, Any]:
        ts = args.get("ts")
        thread = [
            _wire(m)
            for m in self._state.messages
            if m.channel == args.get("channel") and ts in (m.ts, m.thread_ts) and not m.ephemeral_for
        ]
        return {"ok": True, "messages": thread, "has_more": False}


def _wire(message: StoredMessage) -> dict[str, Any]:
    """Return the message as Slack's API shows it."""
    data: dict[str, Any] = {
        "type": "message",
        "user": message.user,
        "text": message.text,
        "blocks": message.blocks,
        "ts": message.ts,
    }
    if message.bot_id:
        data["bot_id"] = message.bot_id
    if message.thread_ts:
        data["thread_ts"] = message.thread_ts
    return data


def _parse_args(raw: str, content_type: str) -> dict[str, Any]:
    """Decode a JSON or form-encoded Web API body; form fields holding JSON (blocks) are decoded."""
    if "application/json" in content_type:
        return json.loads(raw or "{}")
    args: dict[str, Any] = dict(urllib.parse.parse_qsl(raw, keep_blank_values=True))
    for key in ("blocks", "attachments"):
        if isinstance(args.get(key), str):
            args[key] = json.loads(args[key])
    return args


# ---- Slack's side of the Events API and interactivity ---------------------------------------------


def sign(body: str, signing_secret: str, timestamp: int | None = None) -> dict[str, str]:
    """Return Slack's request-signing headers for ``body``."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(signing_secret.encode(), f"v0:{stamp}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": f"v0={digest}"}


@dataclass
class Delivery:
    """What the bot's endpoint answered."""

    status: int
    body: str


class SlackSender:
    """Signs and POSTs Events API and interactivity payloads to a bot endpoint, like Slack does."""

    def __init__(self, url: str, signing_secret: str, team_id: str = TEAM_ID) -> None:
        self.url = url
        self.signing_secret = signing_secret
        self.team_id = team_id

    def post(
        self,
        body: str,
        content_type: str,
        *,
        secret: str | None = None,
        timestamp: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> Delivery:
        """POST a signed body; ``secret``/``timestamp`` override the signing (for bad signatures)."""
        signed = sign(body, self.signing_secret if secret is None else secret, timestamp)
        request = urllib.request.Request(
            self.url,
            data=body.encode(),
            method="POST",
            headers={"Content-Type": content_type, **signed, **(headers or {})},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return Delivery(response.status, response.read().decode())
        except urllib.error.HTTPError as error:
            return Delivery(error.code, error.read().decode())

    def envelope(self, event: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
        """Wrap ``event`` in an ``event_callback`` envelope (a new unique event id unless given)."""
        return {
            "token": "legacy-verification-token",
            "team_id": self.team_id,
            "api_app_id": APP_ID,
            "event": event,
            "type": "event_callback",
            "event_id": event_id or f"Ev{uuid.uuid4().hex[:12].upper()}",
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "team_id": self.team_id,
                    "user_id": BOT_USER_ID,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
        }

    def send_event(
        self,
        event: dict[str, Any],
        *,
        event_id: str | None = None,
        retry_num: int | None = None,
        **overrides: Any,
    ) -> Delivery:
        """Deliver an Events API callback; ``retry_num`` adds Slack's retry headers."""
        body = json.dumps(self.envelope(event, event_id))
        headers = dict(overrides.pop("headers", None) or {})
        if retry_num is not None:
            headers |= {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": "http_timeout"}
        return self.post(body, "application/json", headers=headers, **overrides)

    def send_action(self, payload: dict[str, Any], **overrides: Any) -> Delivery:
        """Deliver an interactivity payload (form-encoded ``payload=<json>``, as Slack sends it)."""
        body = urllib.parse.urlencode({"payload": json.dumps(payload)})
        return self.post(body, "application/x-www-form-urlencoded", **overrides)

    def click(self, message: StoredMessage, action_id: str, user: str, **overrides: Any) -> Delivery:
        """Click the button ``action_id`` on a stored bot message as ``user``."""
        return self.send_action(block_action(message, action_id, user, self.team_id), **overrides)


def app_mention(user: str, channel: str, text: str, ts: str, thread_ts: str | None = None) -> dict[str, Any]:
    """Return an ``app_mention`` event; ``text`` should contain ``<@UEXPAGENT>`` like Slack's does."""
    event = {"type": "app_mention", "user": user, "text": text, "ts": ts, "channel": channel, "event_ts": ts}
    if thread_ts:
        event["thread_ts"] = thread_ts
    return event


def direct_message(
    user: str, channel: str, text: str, ts: str, thread_ts: str | None = None
) -> dict[str, Any]:
    """Return a ``message`` event from a DM (``message.im``)."""
    event = {
        "type": "message",
        "channel": channel,
        "user": user,
        "text": text,
        "ts": ts,
        "event_ts": ts,
        "channel_type": "im",
    }
    if thread_ts:
        event["thread_ts"] = thread_ts
    return event


def channel_message(
    user: str, channel: str, text: str, ts: str, thread_ts: str | None = None, bot_id: str | None = None
) -> dict[str, Any]:
    """Return a ``message`` event from a channel (``message.channels``); ``bot_id`` marks a bot."""
    event = {**direct_message(user, channel, text, ts, thread_ts), "channel_type": "channel"}
    if bot_id:
        event |= {"bot_id": bot_id, "subtype": "bot_message"}
    return event


def block_action(message: StoredMessage, action_id: str, user: str, team_id: str = TEAM_ID) -> dict[str, Any]:
    """Return a ``block_actions`` payload for clicking ``action_id`` on ``message``."""
    element = next(
        (
            dict(e, block_id=b.get("block_id", ""))
            for b in message.blocks
            if b.get("type") == "actions"
            for e in b.get("elements", [])
            if e.get("action_id") == action_id
        ),
        None,
    )
    if element is None:
        raise KeyError(f"message {message.ts} has no button {action_id!r}")
    action_ts = f"{time.time():.6f}"
    return {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": team_id},
        "api_app_id": APP_ID,
        "token": "legacy-verification-token",
        "container": {
            "type": "message",
            "message_ts": message.ts,
            "channel_id": message.channel,
            "is_ephemeral": False,
            "thread_ts": message.thread_ts,
        },
        "trigger_id": f"{action_ts}.{user}.trigger",
        "team": {"id": team_id, "domain": "expagent-test"},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": message.channel, "name": "experiments"},
        "message": _wire(message),
        "state": {"values": {}},
        "response_url": "https://hooks.slack.invalid/actions/T0/1/x",
        "actions": [
            {
                "action_id": element["action_id"],
                "block_id": element["block_id"],
                "text": element.get("text", {}),
                "value": element.get("value", ""),
                "style": element.get("style"),
                "type": "button",
                "action_ts": action_ts,
            }
        ],
    }
