"""Serve a slack-bolt app's HTTP endpoint (Events API and interactivity) with the standard library.

The same as bolt's development server, but threaded, bindable to port 0 and stoppable, so tests can
POST real signed requests to it and ``expagent slack --mode http`` can serve with it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from slack_bolt import App, BoltRequest

logger = logging.getLogger(__name__)


class SlackHTTPServer:
    """Serve a bolt app's Events API / interactivity endpoint over HTTP (threaded ``http.server``)."""

    def __init__(self, app: App, host: str = "127.0.0.1", port: int = 0, path: str = "/slack/events") -> None:
        self._server = ThreadingHTTPServer((host, port), _bolt_handler(app, path))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None
        self.path = path

    @property
    def url(self) -> str:
        """The endpoint URL to configure as the Request URL."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{self.path}"

    def start(self) -> SlackHTTPServer:
        """Serve in a daemon thread and return self."""
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted."""
        self._server.serve_forever(0.5)

    def close(self) -> None:
        """Stop serving and release the port."""
        if self._thread is not None:
            self._server.shutdown()
        self._server.server_close()


def _bolt_handler(app: App, path: str) -> type[BaseHTTPRequestHandler]:
    class BoltHandler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
            logger.debug("slack http: " + format, *args)

        def do_POST(self) -> None:  # noqa: N802 - stdlib name
            request_path, _, query = self.path.partition("?")
            if request_path != path:
                self._reply(404, {}, "")
                return
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode("utf-8")
            headers: dict[str, str | Sequence[str]] = {k.lower(): v for k, v in self.headers.items()}
            response = app.dispatch(BoltRequest(body=body, query=query, headers=headers))
            self._reply(response.status, response.headers, response.body)

        def _reply(self, status: int, headers: dict[str, Any], body: str) -> None:
            data = body.encode("utf-8")
            self.send_response(status)
            for key, values in headers.items():
                for value in values if isinstance(values, list | tuple) else [values]:
                    if key.lower() != "content-length":
                        self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return BoltHandler
