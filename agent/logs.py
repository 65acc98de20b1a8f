"""Where the agent's details go: a log file under the workspace (and the terminal with ``--debug``).

The terminal gets one line per problem; the log keeps the traceback. A workspace whose log cannot be
written still works: the details then go nowhere but ``--debug``.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from tools.core.settings import Settings

_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s"


def log_to_file(settings: Settings, debug: bool = False) -> Path | None:
    """Send INFO and above to ``settings.log_path`` (or, if it cannot be written, a log in the system's
    temp directory); with ``debug`` also to stderr. Return the path, or None when no file works."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    if debug and not any(getattr(h, "_expagent_console", False) for h in root.handlers):
        console = logging.StreamHandler()
        console.setFormatter(logging.Formatter(_FORMAT))
        console._expagent_console = True  # type: ignore[attr-defined]
        root.addHandler(console)
    return log_to_first_writable((settings.log_path, Path(tempfile.gettempdir()) / "expagent.log"))


def log_to_first_writable(paths: tuple[Path, ...]) -> Path | None:
    """Send INFO and above to the first of ``paths`` that can be written; return it (None: nowhere).

    A process that logs nowhere else must not fall back to Python's last-resort handler, which prints
    warnings and tracebacks on the terminal: without a writable file the details are dropped.
    """
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for path in paths:
        if any(getattr(h, "baseFilename", None) == str(path) for h in root.handlers):
            return path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(path, encoding="utf-8")
        except OSError:
            continue
        handler.setFormatter(logging.Formatter(_FORMAT))
        root.addHandler(handler)
        return path
    root.addHandler(logging.NullHandler())  # never fall back to printing tracebacks on the terminal
    return None


def current_log_path() -> Path | None:
    """The file the agent's log goes to in this process (set up by ``log_to_file``), if any."""
    for handler in logging.getLogger().handlers:
        name = getattr(handler, "baseFilename", None)
        if name:
            return Path(name)
    return None
