"""``expagent mcp --http``: the MCP server over streamable HTTP at ``/mcp``.

Bound to 127.0.0.1 by default; any other address needs a bearer token (``EXPAGENT_MCP_TOKEN``), and when a
token is set every request must carry it. Request bodies are capped; the SDK answers malformed JSON-RPC
with a JSON-RPC error and keeps DNS-rebinding protection on for loopback hosts.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any

from agent.mcp_server import McpFrontEnd
from tools.core.settings import Settings

__all__ = ["TOKEN_ENV", "McpConfigError", "check_http_host", "http_app", "serve_http"]

TOKEN_ENV = "EXPAGENT_MCP_TOKEN"
#: the largest HTTP request body accepted (a request in words is at most a few KB).
MAX_REQUEST_BYTES = 256 * 1024


class McpConfigError(ValueError):
    """The server cannot start as configured (e.g. a public address without a bearer token)."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_UNAUTHORIZED = (
    b'{"jsonrpc":"2.0","id":null,"error":{"code":-32001,"message":"missing or wrong bearer token"}}'
)


class BearerToken:
    """ASGI wrapper: each HTTP request needs ``Authorization: Bearer <token>`` (constant-time compare)."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                body = _UNAUTHORIZED
                headers = [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]
                await send({"type": "http.response.start", "status": 401, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def check_http_host(host: str, token: str | None) -> None:
    """Raise McpConfigError when ``host`` is not loopback and no bearer token is set."""
    if not _is_loopback(host) and not token:
        raise McpConfigError(
            f"--host {host} is reachable from other machines: set a bearer token in {TOKEN_ENV}"
        )


def http_app(front: McpFrontEnd, host: str, token: str | None) -> Any:
    """Return the streamable-HTTP ASGI app (at /mcp), behind the bearer token when one is set."""
    check_http_host(host, token)
    app = front.server().streamable_http_app(host=host, max_request_body_size=MAX_REQUEST_BYTES)
    return BearerToken(app, token) if token else app


def serve_http(settings: Settings, host: str, port: int, token: str | None, model: str | None = None) -> None:
    """Serve MCP over streamable HTTP at http://HOST:PORT/mcp until interrupted."""
    import uvicorn

    check_http_host(host, token)
    front = McpFrontEnd(settings, model)
    try:
        app = http_app(front, host, token)
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        front.close()
