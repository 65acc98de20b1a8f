"""The terminal chat: a thin Rich shell over ``AgentService``.

Markdown answers, a live status line while runs execute, y/n approval prompts, Ctrl-C cancels the
running turn through the rollback node, ``--thread`` resumes a conversation (a pending approval too).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markdown import Markdown
from rich.prompt import Confirm, Prompt

from agent.turns import run_until_interrupted
from tools.core.settings import Settings

if TYPE_CHECKING:
    from rich.status import Status

    from agent.service import AgentService, ProgressEvent, TurnResult
    from agent.state import ApprovalRequest

EXIT_WORDS = frozenset({"exit", "quit", ":q", "bye"})
_SHOWN_KINDS = frozenset({"run_started", "run_finished", "trial_finished"})


class ProgressDisplay:
    """Show progress events: a live status line, plus one printed line per run event."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.status: Status | None = None

    def __call__(self, event: ProgressEvent) -> None:
        if event.kind == "plan":  # before anything is launched: the user sees what will run
            self.console.print(Markdown("### Plan\n" + event.message))
            return
        if event.kind in _SHOWN_KINDS:
            self.console.print(f"[dim]• {event.message}[/]", highlight=False)
        if self.status is not None:
            self.status.update(f"{event.message}  [dim](Ctrl-C cancels)[/]")


def run_cancellable(
    service: AgentService, thread_id: str, work: Callable[[], TurnResult], by: str, console: Console
) -> TurnResult:
    """Run ``work`` as a background turn; Ctrl-C cancels the turn and returns its rolled-back result."""

    def say_cancelling() -> None:
        console.print("[yellow]Cancelling: stopping running work and documenting it…[/]")

    return run_until_interrupted(service, thread_id, work, by, on_cancel=say_cancelling)


def show_result(console: Console, result: TurnResult) -> None:
    """Print the answer as Markdown."""
    console.print(Markdown(result.answer))


def ask_approval(console: Console, approval: ApprovalRequest) -> bool:
    """Ask the user to approve the pending plan; Ctrl-C or EOF counts as no."""
    console.print(
        f"[bold yellow]Approval needed[/] ({', '.join(approval.approval_keys)}): {approval.summary}"
    )
    for reason in approval.reasons:
        console.print(f"  - {reason}", highlight=False)
    try:
        return Confirm.ask("Approve and run the plan?", console=console, default=False)
    except (KeyboardInterrupt, EOFError):
        return False


class ChatSession:
    """One terminal conversation on one thread."""

    def __init__(self, service: AgentService, thread_id: str, console: Console, requester: str) -> None:
        self.service = service
        self.thread_id = thread_id
        self.console = console
        self.requester = requester

    def turn(self, work: Callable[[], TurnResult]) -> TurnResult:
        """Run one turn with the live status line; settle approvals until the turn is answered."""
        display = self.service.on_progress
        while True:
            with self.console.status("Working…  [dim](Ctrl-C cancels)[/]") as status:
                if isinstance(display, ProgressDisplay):
                    display.status = status
                result = run_cancellable(self.service, self.thread_id, work, self.requester, self.console)
                if isinstance(display, ProgressDisplay):
                    display.status = None
            show_result(self.console, result)
            if result.status != "awaiting_approval":
                return result
            assert result.approval is not None
            approved = ask_approval(self.console, result.approval)

            def work(approved: bool = approved) -> TurnResult:
                return self.service.resume(self.thread_id, approved, self.requester)

    def resume_pending(self) -> None:
        """Finish a turn a crash interrupted; if the thread waits for approval, show it and ask."""
        interrupted = self.service.resume_interrupted(self.thread_id)
        if interrupted is not None:
            self.console.print(
                "[bold]This conversation was interrupted while working; it has been finished.[/]"
            )
            show_result(self.console, interrupted)
        pending = self.service.pending_approval(self.thread_id)
        if pending is None:
            return
        self.console.print("[bold]This conversation is waiting for approval.[/]")
        approved = ask_approval(self.console, pending)
        self.turn(lambda: self.service.resume(self.thread_id, approved, self.requester))

    def loop(self) -> None:
        """Read messages until exit/quit/EOF."""
        while True:
            try:
                text = Prompt.ask("[bold cyan]you[/]", console=self.console).strip()
            except (KeyboardInterrupt, EOFError):
                self.console.print()
                return
            if text.lower() in EXIT_WORDS:
                return
            if text:
                self.turn(lambda text=text: self.service.send(self.thread_id, text, self.requester))  # type: ignore[misc]


def chat(
    settings: Settings, thread_id: str | None = None, model: str | None = None, console: Console | None = None
) -> None:
    """Run the terminal chat until the user exits."""
    from agent.service import AgentService, new_thread_id

    console = console or Console()
    display = ProgressDisplay(console)
    service = AgentService(settings, model=model, on_progress=display)
    thread = thread_id or new_thread_id()
    console.print(
        f"[bold]expagent[/] chat — thread [cyan]{thread}[/] (resume: `expagent chat --thread {thread}`). "
        "Type 'exit' to leave.",
        highlight=False,
    )
    session = ChatSession(service, thread, console, settings.requester)
    try:
        session.resume_pending()
        session.loop()
    finally:
        service.close()
