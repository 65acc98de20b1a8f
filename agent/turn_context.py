"""What a graph turn runs with but never checkpoints: clients, the chat model, progress and cancel.

LangGraph passes this to every node as ``runtime.context`` (``graph.invoke(..., context=turn)``). The
service builds one per turn; LangGraph Studio, which cannot pass one, gets a default from the
environment's settings.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.state import ProgressEvent

_KINDS = frozenset({"plan", "run_started", "run_finished", "trial_finished", "status"})

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from langgraph.runtime import Runtime

    from tools.context import ToolContext


@dataclass
class TurnContext:
    """Runtime dependencies of one graph turn on one thread."""

    tools: ToolContext
    model: BaseChatModel
    thread_id: str
    #: set (from any thread) to stop running work; execute then routes to rollback.
    cancel_event: threading.Event = field(default_factory=threading.Event)
    #: who asked for the cancellation (the service sets it together with ``cancel_event``).
    cancelled_by: str | None = None
    on_progress: Callable[[ProgressEvent], None] | None = None

    def progress(self, kind: str, message: str, run_id: str | None = None) -> None:
        """Send a progress event to the front end, if it listens; a failing listener is ignored."""
        if self.on_progress is None:
            return
        known = kind if kind in _KINDS else "status"
        event = ProgressEvent(thread_id=self.thread_id, kind=known, message=message, run_id=run_id)  # type: ignore[arg-type]
        try:
            self.on_progress(event)
        except Exception:  # noqa: BLE001 - a broken display must not break the turn
            pass

    def progress_from(self, event: dict[str, Any]) -> None:
        """Forward a tool-side progress dict (``{"kind", "message", "run_id"}``, e.g. from tuning)."""
        self.progress(str(event.get("kind", "status")), str(event.get("message", "")), event.get("run_id"))

    def cancel(self, by: str) -> None:
        """Ask running work to stop; safe to call from another thread."""
        self.cancelled_by = by
        self.cancel_event.set()


def turn_context(runtime: Runtime[TurnContext]) -> TurnContext:
    """Return the node's turn context, or a default one when the graph runs without (Studio)."""
    if runtime.context is not None:
        return runtime.context
    return _default_context()


_STUDIO_CONTEXTS: dict[str, TurnContext] = {}


def _default_context() -> TurnContext:
    from langgraph.config import get_config

    from agent.chat_models import make_chat_model
    from tools.context import build_context
    from tools.core.settings import load_settings

    thread_id = str(get_config().get("configurable", {}).get("thread_id", "studio"))
    if thread_id not in _STUDIO_CONTEXTS:
        settings = load_settings()
        tools = build_context(settings, session_id=thread_id)
        model = make_chat_model(settings.model, settings)
        _STUDIO_CONTEXTS[thread_id] = TurnContext(tools=tools, model=model, thread_id=thread_id)
    return _STUDIO_CONTEXTS[thread_id]
