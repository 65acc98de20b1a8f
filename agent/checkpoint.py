"""The SQLite checkpointer threads are saved in, so a turn (or a pending approval) survives a restart."""

from __future__ import annotations

import inspect
import sqlite3
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

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
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
    from langgraph.checkpoint.sqlite import SqliteSaver

    path.parent.mkdir(parents=True, exist_ok=True)
    # One connection shared by the service's threads; SqliteSaver serialises access with its own lock.
    conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
    serde = JsonPlusSerializer(allowed_msgpack_modules=checkpoint_types())
    saver = SqliteSaver(conn, serde=serde)
    saver.setup()
    return saver
