"""A new SQLite tracking store starts as a copy of a migrated empty one, migrated once per MLflow schema.

MLflow creates a SQLite store by running its ~60 schema migrations: ~1 CPU-s per new store in a warm
process (measured 0.9-1.4 s), paid by every new workspace, every test's store and every eval scenario's.
Here the first new store of an MLflow version and schema revision is migrated as before, once, into a
cache file (``$XDG_CACHE_HOME/expagent/mlflow-stores/<version>-<revision>.db``: MLflow's tables only,
no experiment); every later new store is a copy of it (~0.05 s). MLflow then opens the copy as it opens
any store: it checks the schema revision and creates the Default experiment, with the time and the
artifact location of that moment and working directory, exactly as on a store it migrated itself.

Never replaces a file: a store that exists (even an empty file) is left to MLflow, and the copy is linked
into place only while no file has that name (``os.link`` refuses otherwise), so two processes creating
the same store end with one, never with one's runs overwritten. Whatever goes wrong (no writable cache,
a cache file that is not a migrated empty store of this revision, private MLflow API renamed) leaves
the store to MLflow, which migrates it as before.
"""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
import tempfile
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

from tools.core.sqlite_uri import sqlite_store_path, sqlite_uri

_LOG = logging.getLogger(__name__)


def seed_new_store(tracking_uri: str) -> bool:
    """Create the SQLite store of ``tracking_uri`` as a copy of a migrated empty store, if it does not exist.

    Returns whether it did; if not, MLflow creates the store itself when it first opens it.
    """
    path = sqlite_store_path(tracking_uri)
    if path is None or os.path.lexists(path) or not path.parent.is_dir():
        return False
    template = migrated_template()
    if template is None:
        return False
    try:
        return _link_copy(template, path)
    except (OSError, sqlite3.Error) as exc:
        _LOG.debug("new store %s left to MLflow: %s", path, exc)
        return False


def cache_dir() -> Path:
    """Return where migrated empty stores are kept (``$XDG_CACHE_HOME/expagent/mlflow-stores``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "expagent" / "mlflow-stores"


@functools.cache
def migrated_template() -> Path | None:
    """Return this MLflow's migrated empty store in the cache, building it once; None if it cannot be had."""
    try:
        import mlflow
        from mlflow.store.db import utils as db_utils

        head = db_utils._get_latest_schema_revision()
        initialize = db_utils._initialize_tables
    except (ImportError, AttributeError) as exc:  # private MLflow API renamed: MLflow migrates each store
        _LOG.debug("no store template: %s", exc)
        return None
    template = cache_dir() / f"{mlflow.__version__}-{head}.db"
    try:
        if template.is_file() and _is_migrated_empty(template, head):
            return template
        template.parent.mkdir(parents=True, exist_ok=True)
        _build(template, head, initialize)
        return template
    except Exception as exc:  # noqa: BLE001 - a cache that cannot be made only means MLflow migrates
        _LOG.debug("no store template at %s: %s", template, exc)
        return None


def _build(template: Path, head: str, initialize: Callable[[Any], None]) -> None:
    """Migrate an empty store next to ``template``, check it, then move it into place (atomically)."""
    import sqlalchemy

    fd, name = tempfile.mkstemp(dir=template.parent, prefix=f".{template.name}.", suffix=".tmp")
    os.close(fd)
    scratch = Path(name)
    try:
        engine = sqlalchemy.create_engine(sqlite_uri(scratch))
        try:
            initialize(engine)
        finally:
            engine.dispose()
        if not _is_migrated_empty(scratch, head):
            raise RuntimeError("the migrated store is not at the newest schema revision, or not empty")
        os.replace(scratch, template)  # same bytes whoever wins: replacing another builder's copy is fine
    finally:
        scratch.unlink(missing_ok=True)


#: the only tables a freshly migrated store has rows in: the schema revision and MLflow's default workspace.
_BOOKKEEPING = frozenset({"alembic_version", "workspaces"})


def _is_migrated_empty(path: Path, head: str) -> bool:
    """Whether ``path`` is a sound SQLite store at schema revision ``head`` with no row of anyone's."""
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)) as db:
            if db.execute("PRAGMA quick_check").fetchall() != [("ok",)]:
                return False
            if db.execute("SELECT version_num FROM alembic_version").fetchall() != [(head,)]:
                return False
            tables = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
            for (table,) in tables:
                quoted = '"' + str(table).replace('"', '""') + '"'
                if table in _BOOKKEEPING or str(table).startswith("sqlite_"):
                    continue
                if db.execute(f"SELECT 1 FROM {quoted} LIMIT 1").fetchone():
                    return False  # a store somebody used is never copied into a new one
            return True
    except sqlite3.Error:
        return False


def _link_copy(template: Path, path: Path) -> bool:
    """Copy ``template`` to a scratch file beside ``path``, then link it there unless ``path`` exists."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".seed")
    os.close(fd)
    scratch = Path(name)
    try:
        with (
            closing(sqlite3.connect(f"{template.resolve().as_uri()}?mode=ro", uri=True, timeout=5)) as src,
            closing(sqlite3.connect(scratch)) as dst,
        ):
            src.backup(dst)
        os.chmod(scratch, 0o666 & ~_umask())  # what SQLite gives a file it creates
        try:
            os.link(scratch, path)
        except FileExistsError:
            return False  # another process created the store meanwhile: it is theirs
        return True
    finally:
        scratch.unlink(missing_ok=True)


def _umask() -> int:
    """Return the process's umask without changing it (``os.umask`` sets it, racing other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022
