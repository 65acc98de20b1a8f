"""Open the workspace: create its folders and stores once, under an inter-process lock.

Two expagent processes starting on a fresh ``EXPAGENT_HOME`` used to race inside MLflow's schema
migrations ("table _alembic_tmp_metrics already exists") and could leave the store half-migrated.
Every front end opens the workspace through :func:`open_workspace` first: the first process creates and
migrates the stores while holding ``<home>/.workspace.lock``; the others wait, then find them ready.
A store that cannot be opened raises :class:`WorkspaceError` with one sentence: what, why, what to do.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tools.core.settings import Settings
from tools.core.sqlite_uri import sqlite_store_path
from tools.core.store_seed import seed_new_store

_LOCK_NAME = ".workspace.lock"


class WorkspaceError(Exception):
    """The workspace or one of its stores cannot be used; the message says what, why and what to do."""


@contextmanager
def workspace_lock(home: Path) -> Iterator[None]:
    """Hold the workspace's inter-process lock for the block (blocking until it is free)."""
    fd = os.open(home / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def open_workspace(settings: Settings, *extra_stores: Callable[[], object]) -> Path:
    """Create the workspace and its tracking store (and ``extra_stores``) once; return the home.

    Args:
        settings: The workspace's settings.
        extra_stores: Callables that create or open further stores (e.g. the checkpoint database);
            they run under the same lock.

    Raises:
        WorkspaceError: A folder is not writable or a store is corrupt, with what to do about it.
    """
    home = settings.home
    try:
        home = settings.ensure_home()
        _check_writable(home)
    except OSError as exc:
        raise WorkspaceError(
            f"the workspace {settings.home.resolve()} cannot be written ({exc.strerror or exc}); "
            "set EXPAGENT_HOME to a writable directory"
        ) from exc
    with workspace_lock(home):
        _open_tracking_store(settings)
        for open_store in extra_stores:
            _open_store(open_store)
    return home


def _check_writable(home: Path) -> None:
    fd, name = tempfile.mkstemp(dir=home, prefix=".write-check-")
    os.close(fd)
    os.unlink(name)


def _open_tracking_store(settings: Settings) -> None:
    uri = settings.resolved_tracking_uri
    if not uri.startswith("sqlite:///"):
        return  # a tracking server (or another database) manages its own schema
    path = sqlite_store_path(uri) or uri  # the file SQLAlchemy opens (in-memory or with options: the URI)
    try:
        from mlflow.tracking import MlflowClient

        from tools.core.tracking import bound_mlflow_http

        bound_mlflow_http(settings)
        seed_new_store(uri)  # a new store starts as a copy of a migrated empty one (tools.core.store_seed)
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)  # creates (or checks) and migrates
    except Exception as exc:  # noqa: BLE001 - any failure here means the store cannot be used
        raise WorkspaceError(
            f"the MLflow tracking store {path} cannot be opened ({_cause(exc)}); if the file is damaged, "
            "move it aside (runs in it are then no longer listed) or restore it from a backup, or set "
            "MLFLOW_TRACKING_URI to another store"
        ) from exc


def _open_store(open_store: Callable[[], object]) -> None:
    try:
        open_store()
    except WorkspaceError:
        raise
    except (sqlite3.Error, OSError) as exc:
        raise WorkspaceError(
            f"a workspace store cannot be opened ({_cause(exc)}); move the damaged file aside or set "
            "EXPAGENT_HOME to another directory"
        ) from exc


def _cause(exc: BaseException) -> str:
    """Return the innermost cause of ``exc`` in one line (no traceback)."""
    seen: set[int] = set()
    while (exc.__cause__ or exc.__context__) is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"
