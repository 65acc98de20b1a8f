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
    """A registered tool: its name, function, argument model and whether it changes anything."""

    name: str
    func: Callable[..., BaseModel]
    args_model: type[BaseModel]
    read_only: bool

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
_TOOL_MODULES = ("tools.datasets", "tools.runs", "tools.jobs")


def tool(*, read_only: bool) -> Callable[[Callable[..., BaseModel]], Callable[..., BaseModel]]:
    """Register ``func(ctx, args)`` as a tool; ``args``' annotation is its input model."""

    def register(func: Callable[..., BaseModel]) -> Callable[..., BaseModel]:
        hints = typing.get_type_hints(func)
        params = list(inspect.signature(func).parameters)
        if len(params) != 2:
            raise TypeError(f"tool {func.__name__} must take (ctx, args)")
        args_model = hints[params[1]]
        TOOLS[func.__name__] = ToolDef(func.__name__, func, args_model, read_only)
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
