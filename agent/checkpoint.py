"""The SQLite checkpointer threads are saved in, so a turn (or a pending approval) survives a restart."""

from __future__ import annotations

import inspect
import sqlite3
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from langgraph.checkpoint.sqlite import SqliteSaver


def _models_of(module: ModuleType) -> list[type]:
    return [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj) and issubclass(obj, BaseModel) and obj.__module__ == module.__name__
    ]


def checkpoint_types() -> list[type]:
    """Return the pydantic models graph state may hold (the deserialisation allowlist)."""
    import agent.experiment_plan
    import agent.state
    import tools.core.specs
    import tools.tuning.budget
    import tools.tuning.records

    modules = (
        agent.state,
        agent.experiment_plan,
        tools.core.specs,
        tools.tuning.records,
        tools.tuning.budget,
    )
    return [cls for mod in modules for cls in _models_of(mod)]


def open_checkpointer(path: Path) -> SqliteSaver:
    """Open (creating if needed) the SQLite checkpoint store at ``path``."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    path.parent.mkdir(parents=True, exist_ok=True)
    # One connection shared by the service's threads; SqliteSaver serialises access with its own lock.
    conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
    serde = RedactingSerializer(allowed_msgpack_modules=checkpoint_types())
    saver = SqliteSaver(conn, serde=serde)
    saver.setup()
    return saver


def _scrub(value: Any) -> Any:
    """Return ``value`` with the text of every message and every plain string redacted."""
    from langchain_core.messages import BaseMessage

    from tools.core.redact import redact, redact_text

    if isinstance(value, BaseMessage):
        content = value.content
        clean = redact_text(content) if isinstance(content, str) else redact(content)
        return value.model_copy(update={"content": clean})
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_scrub(v) for v in value)
    return value


def _redacting_serializer_class() -> type:
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    class RedactingSerializer(JsonPlusSerializer):
        """The checkpoint serializer, redacting messages and strings before they are stored (a sink)."""

        def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
            return super().dumps_typed(_scrub(obj))

    return RedactingSerializer


def RedactingSerializer(**kwargs: Any) -> Any:  # noqa: N802 - builds the class lazily (langgraph is heavy)
    """Return a checkpoint serializer that redacts before storing (see ``_scrub``)."""
    return _redacting_serializer_class()(**kwargs)
