"""``expagent run``: one non-interactive turn over ``AgentService``, for scripts and CI.

Exit codes: 0 answered (a refusal or a question for missing inputs is an answer), 4 a plan waits for
approval (run again with ``--yes`` on the same thread, or use ``expagent chat --thread``), 1 error.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markdown import Markdown

from tools.core.settings import Settings

if TYPE_CHECKING:
    from agent.service import AgentService, ProgressEvent, TurnResult

EXIT_OK = 0
EXIT_AWAITING_APPROVAL = 4
_DENY_WORDS = frozenset({"no", "n", "deny", "reject"})


def run_request(
    settings: Settings, text: str, yes: bool = False, as_json: bool = False, thread_id: str | None = None,
    model: str | None = None,
) -> int:  # fmt: skip
    """Run one turn and print it (Markdown, or JSON with ``as_json``); return the exit code."""
    from agent.chat import run_cancellable
    from agent.service import AgentService, new_thread_id

    err = Console(stderr=True)
    service = AgentService(settings, model=model, on_progress=lambda e: _progress(err, e))
    thread = thread_id or new_thread_id()
    if not as_json:
        err.print(f"[dim]thread {thread}[/]", highlight=False)
    try:
        result = run_cancellable(
            service,
            thread,
            lambda: one_turn(service, thread, text, yes, settings.requester),
            settings.requester,
            err,
        )
    finally:
        service.close()
    _print(result, as_json)
    if result.status == "awaiting_approval":
        approve = f'expagent run --thread {thread} --yes "approve"'
        deny = f'expagent run --thread {thread} "deny"'
        err.print(
            f"[bold yellow]Waiting for approval.[/] Approve with: {approve}  (or deny: {deny}; "
            f"or decide in: expagent chat --thread {thread})",
            highlight=False,
        )
        return EXIT_AWAITING_APPROVAL
    return EXIT_OK


def one_turn(service: AgentService, thread_id: str, text: str, yes: bool, requester: str) -> TurnResult:
    """Send ``text`` (or decide a pending approval); with ``yes`` approve what the turn asks for."""
    if service.pending_approval(thread_id) is not None:
        if text.strip().lower() in _DENY_WORDS:
            return service.resume(thread_id, False, requester)
        if yes:
            return service.resume(thread_id, True, f"{requester} (--yes)")
        return service.send(thread_id, text, requester)
    result = service.send(thread_id, text, requester)
    if result.status == "awaiting_approval" and yes:
        result = service.resume(thread_id, True, f"{requester} (--yes)")
    return result


def _progress(err: Console, event: ProgressEvent) -> None:
    err.print(f"[dim]• {event.message}[/]", highlight=False)


def _print(result: TurnResult, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(result.to_json(), indent=2, default=str) + "\n")
        return
    Console().print(Markdown(result.answer))
