"""``sqlite:///`` tracking URIs and the files they name, read the way SQLAlchemy reads them.

SQLAlchemy splits a URL's query at the first ``?`` and percent-decodes the database path
(``sqlite:////tmp/a%20b/x.db`` opens ``/tmp/a b/x.db``). A path written into a URI as it is would open
another file when it holds ``%`` (``%20`` is read as a space) or ``?`` (the rest is read as options),
and ``#`` confuses every ``urlparse`` that reads the URI later. :func:`sqlite_uri` escapes exactly
those three characters, so an ordinary path gives the URI it always gave; :func:`sqlite_store_path`
reads any ``sqlite:///`` URI back to the file SQLAlchemy opens. Every place that builds or reads a
SQLite store's URI goes through these two.

MLflow itself creates the store's parent directory from the URI without decoding it
(``mlflow.store.db.utils._make_parent_dirs_if_sqlite``): for a path holding one of the three
characters it also leaves an empty directory named with the escapes beside the real one.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

_PREFIX = "sqlite:///"
_ESCAPES = str.maketrans({"%": "%25", "?": "%3F", "#": "%23"})


def sqlite_uri(path: Path | str) -> str:
    """Return the ``sqlite:///`` URI of the SQLite file ``path`` (an absolute path gives ``sqlite:////…``)."""
    return _PREFIX + str(path).translate(_ESCAPES)


def sqlite_store_path(tracking_uri: str) -> Path | None:
    """Return the file a plain ``sqlite:///<path>`` URI opens (None: not SQLite, in-memory, URI options)."""
    if not tracking_uri.startswith(_PREFIX):
        return None
    rest = tracking_uri.removeprefix(_PREFIX)
    if not rest or rest == ":memory:" or "?" in rest:
        return None
    return Path(unquote(rest))
