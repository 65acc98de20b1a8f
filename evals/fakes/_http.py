"""The HTTP server the fakes share: threaded, and quiet about clients that hang up.

``socketserver`` prints a traceback to stderr for every error in a request handler, including a client
that closed its connection before the reply (what a timed-out or cancelled SDK call does, and what the
fault scenarios cause on purpose). Here those go to the log: a hang-up at debug, anything else with its
traceback at warning.
"""

from __future__ import annotations

import logging
import sys
from http.server import ThreadingHTTPServer
from typing import Any

_LOG = logging.getLogger("evals.fakes")


class QuietHTTPServer(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` whose handler errors go to the log instead of stderr."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):  # BrokenPipe, ConnectionReset, ConnectionAborted
            _LOG.debug("client %s hung up: %s", client_address, error)
            return
        _LOG.warning("fake server error serving %s", client_address, exc_info=True)
