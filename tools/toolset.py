"""The tool registry: every tool the agent can call, by name, with its typed input model.

A tool is ``def name(ctx: ToolContext, args: Args) -> Result``; its docstring is sent to the model.
Forbidden capabilities (deploy, promote, stage, alias) have no tool here at all.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel


@dataclass(frozen=True)
class ToolDef:
    """A registered tool: its name, function, argument model and what a call may change."""

    name: str
    func: Callable[..., BaseModel]
    args_model: type[BaseModel]
    read_only: bool
    #: it stops, ends or overwrites something (only meaningful when not read-only); else it only adds.
    destructive: bool = False
    #: a second call with the same arguments changes nothing more (read-only tools always are).
    idempotent: bool = False

    @property
    def is_idempotent(self) -> bool:
        return self.read_only or self.idempotent

    @property
    def description(self) -> str:
        return inspect.cleandoc(self.func.__doc__ or self.name)

    def json_schema(self) -> dict[str, Any]:
        """Return the OpenAI function-tool schema the model sees."""
        params = self.args_model.model_json_schema()
        params.pop("title", None)
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": params},
        }


TOOLS: dict[str, ToolDef] = {}

# Modules that define tools; imported on first use so that importing the registry stays cheap.
_TOOL_MODULES = ("tools.datasets", "tools.runs", "tools.jobs", "tools.run_history")


def tool(
    *, read_only: bool, destructive: bool = False, idempotent: bool = False
) -> Callable[[Callable[..., BaseModel]], Callable[..., BaseModel]]:
    """Register ``func(ctx, args)`` as a tool; ``args``' annotation is its input model.

    ``destructive`` and ``idempotent`` describe what a call that is not read-only changes (MCP hosts
    show them as tool annotations).
    """

    def register(func: Callable[..., BaseModel]) -> Callable[..., BaseModel]:
        hints = typing.get_type_hints(func)
        params = list(inspect.signature(func).parameters)
        if len(params) != 2:
            raise TypeError(f"tool {func.__name__} must take (ctx, args)")
        args_model = hints[params[1]]
        TOOLS[func.__name__] = ToolDef(func.__name__, func, args_model, read_only, destructive, idempotent)
        return func

    return register


def all_tools() -> dict[str, ToolDef]:
    """Import every tool module and return the registry."""
    import importlib

    for mod in _TOOL_MODULES:
        importlib.import_module(mod)
    return TOOLS


def get_tool(name: str) -> ToolDef:
    """Return a tool by name, or raise KeyError listing the known tools."""
    tools = all_tools()
    if name not in tools:
        raise KeyError(f"unknown tool {name!r}; known tools: {', '.join(sorted(tools))}")
    return tools[name]
