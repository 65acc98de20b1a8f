"""``expagent run``: one non-interactive turn over ``AgentService``, for scripts and CI.

Exit codes (also in the README):
- 0 answered (a refusal or a question for missing inputs is an answer);
- 1 error before or outside a turn (a store that cannot be opened, bad input), one line on stderr;
- 2 usage error (e.g. an unknown ``--thread`` without ``--new-thread``);
- 4 a plan waits for approval (the command that approves is printed);
- 5 the turn failed: its runs were stopped and the answer says what finished and what did not;
- 130 / 143 / 129 the turn was cancelled by SIGINT (Ctrl-C) / SIGTERM / SIGHUP and answered.
"""

from __future__ import annotations

import json
import sys
from contextlib import redirect_stdout
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markdown import Markdown

from agent.logs import current_log_path
from tools.core.settings import Settings

if TYPE_CHECKING:
    from agent.service import AgentService, ProgressEvent, TurnResult

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_AWAITING_APPROVAL = 4
EXIT_TURN_FAILED = 5


class UnknownThread(ValueError):
    """``--thread`` names a thread this workspace has never seen."""


_DENY_WORDS = frozenset({"no", "n", "deny", "reject"})


def run_request(
    settings: Settings, text: str, yes: bool = False, as_json: bool = False, thread_id: str | None = None,
    model: str | None = None, new_thread: bool = False,
) -> int:  # fmt: skip
    """Run one turn and print it (Markdown, or JSON with ``as_json``); return the exit code.

    Nothing but the answer reaches stdout: whatever a library prints while the turn runs goes to
    stderr, so ``--json`` output is always one JSON document.
    """
    from agent.chat import run_cancellable
    from agent.service import AgentService, new_thread_id
    from agent.turns import signals_cancel_turns

    err = Console(stderr=True)
    signals: list[int] = []
    with redirect_stdout(sys.stderr):  # opening the workspace ends orphans: MLflow may print then too
        service = AgentService(settings, model=model, on_progress=lambda e: _progress(err, e))
    try:
        if thread_id and not new_thread and not service.thread_exists(thread_id):
            raise UnknownThread(
                f"unknown thread {thread_id!r} in workspace {settings.home}; leave out --thread to start "
                "a new conversation, or add --new-thread to start one with this ID"
            )
        thread = thread_id or new_thread_id()
        err.print(f"[dim]thread {thread}[/]", highlight=False)  # before any work: a kill still leaves it
        with redirect_stdout(sys.stderr), signals_cancel_turns(signals):
            result = run_cancellable(
                service,
                thread,
                lambda: one_turn(service, thread, text, yes, settings.requester),
                settings.requester,
                err,
            )
    finally:
        with redirect_stdout(sys.stderr):
            service.close()
    if result.resumed is not None:
        err.print(f"[yellow]Finished the interrupted turn first:[/] {result.resumed!r}", highlight=False)
    _print(result, as_json)
    return _exit_code(result, signals, thread, err)


def _exit_code(result: TurnResult, signals: list[int], thread: str, err: Console) -> int:
    if signals:
        return 128 + signals[0]
    if result.status == "failed":
        log = current_log_path()
        where = f"; details in {log}" if log else ""
        err.print(
            f"[bold red]error:[/] the turn failed: {result.error or 'see the answer'}{where}",
            highlight=False,
            soft_wrap=True,
        )
        return EXIT_TURN_FAILED
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
    if not sys.stdout.isatty():  # a pipe or a file: plain Markdown, `### ` headings and full links kept
        sys.stdout.write(result.answer if result.answer.endswith("\n") else result.answer + "\n")
        return
    Console().print(Markdown(result.answer))
