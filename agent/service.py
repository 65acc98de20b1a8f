"""AgentService: the one entry every front end (run, chat, Slack, evals) uses to drive the graph.

A turn runs the checkpointed graph on one thread; the result is a ``TurnResult`` (the five-section
answer plus what the JSON output and the front ends show). Approvals are ``resume``; ``cancel`` may be
called from any thread while a turn runs (it signals the turn and waits for its rolled-back answer).
A node that raises ends the turn through ``agent.turn_failure.fail_turn``: its runs are stopped, the
session run ends FAILED with the traceback, and the answer describes the error.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from agent.answer import parse_sections, render_answer
from agent.chat_models import model_wire
from agent.grammar.followups import answer_word
from agent.state import AgentState, ApprovalRequest, PolicyEvent, ProgressEvent, RunRecord, Usage
from tools.core.redact import redact_text
from tools.core.settings import Settings

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from langgraph.graph.state import CompiledStateGraph
    from langgraph.types import StateSnapshot

    from agent.turn_context import TurnContext
    from agent.turn_failure import TurnFailure
    from tools.context import ToolContext

__all__ = [
    "AgentService",
    "NoPendingApproval",
    "ProgressEvent",
    "ThreadBusy",
    "TurnResult",
    "new_thread_id",
]

_APPROVE_WORDS = frozenset({"y", "yes", "approve", "approved", "ok", "go", "go ahead", "proceed"})
_DENY_WORDS = frozenset({"n", "no", "deny", "denied", "reject", "stop", "cancel", "abort"})
_CANCEL_WAIT_SECONDS = 300.0
log = logging.getLogger(__name__)


class TurnResult(BaseModel):
    """What one turn produced, as every front end shows it."""

    thread_id: str
    status: Literal["answered", "awaiting_approval", "failed"] = Field(
        description="answered; awaiting_approval (a plan waits); failed (the turn stopped with an error: "
        "its runs were stopped and the answer says what finished and what did not)."
    )
    resumed: str | None = Field(
        None, description="The message of an interrupted turn that was finished before this one."
    )
    answer: str = Field(description="Markdown with the five sections.")
    sections: dict[str, str] = Field(description="Plan, Changes, Verification, Rollback, Summary.")
    approval: ApprovalRequest | None = None
    runs: list[RunRecord] = Field(default_factory=list)
    baseline_run_id: str | None = None
    best_run_id: str | None = None
    policy_events: list[PolicyEvent] = Field(default_factory=list)
    asked_for: list[str] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    error: str | None = Field(None, description="Why a failed turn failed, in one line (redacted).")

    def to_json(self) -> dict[str, Any]:
        """Return the ``expagent run --json`` document."""
        return {
            "thread_id": self.thread_id,
            "status": self.status,
            "resumed": self.resumed,
            "answer": self.answer,
            "sections": self.sections,
            "runs": [
                {"run_id": r.run_id, "role": r.role, "status": r.status, "metrics": r.metrics}
                for r in self.runs
            ],
            "baseline_run_id": self.baseline_run_id,
            "best_run_id": self.best_run_id,
            "policy_events": [e.model_dump() for e in self.policy_events],
            "asked_for": self.asked_for,
            "usage": self.usage.model_dump(),
            "error": self.error,
            "approval": self.approval.model_dump() if self.approval else None,
        }


class ThreadBusy(RuntimeError):
    """A turn is already running on this thread; wait for it or cancel it."""


class NoPendingApproval(LookupError):
    """``resume`` was called on a thread that is not waiting for approval."""


def _same_words(a: str, b: str) -> bool:
    return " ".join(a.lower().split()) == " ".join(b.lower().split())


def new_thread_id() -> str:
    """Return a fresh thread ID."""
    return uuid.uuid4().hex[:12]


@dataclasses.dataclass
class _ActiveTurn:
    turn: TurnContext
    done: threading.Event = dataclasses.field(default_factory=threading.Event)


class AgentService:
    """Drive the agent graph: one turn per call, threads checkpointed in SQLite."""

    def __init__(
        self,
        settings: Settings,
        model: str | BaseChatModel | None = None,
        on_progress: Callable[[ProgressEvent], None] | None = None,
    ) -> None:
        from agent.chat_models import make_chat_model
        from agent.checkpoint import open_checkpointer
        from agent.graph import build_graph
        from tools.context import build_context

        self.settings = settings
        self.on_progress = on_progress
        self._model = (
            model
            if model is not None and not isinstance(model, str)
            else make_chat_model(model or settings.model, settings)
        )
        from tools.core.workspace import open_workspace

        checkpointers: list[Any] = []
        open_workspace(settings, lambda: checkpointers.append(open_checkpointer(settings.checkpoint_path)))
        self._tools = build_context(settings)
        self._checkpointer = checkpointers[0]
        self._end_orphans()
        self._graph: CompiledStateGraph[AgentState, TurnContext, AgentState, AgentState] = build_graph(
            self._checkpointer
        )
        self._lock = threading.Lock()
        self._active: dict[str, _ActiveTurn] = {}
        from agent.tracing import disable_tracing, enable_tracing

        # Tracing is process-wide (MLflow's autolog): it follows the newest service, so a service built
        # with trace=False after a traced one does not go on tracing into the first one's store.
        if settings.trace:
            enable_tracing(settings)
        else:
            disable_tracing()

    # ---- the four calls --------------------------------------------------------------------------

    def send(self, thread_id: str | None, text: str, requester: str | None = None) -> TurnResult:
        """Run one turn for the user's message ``text`` on ``thread_id`` (a new thread when None).

        If the thread waits for approval, a yes/no answer decides it; any other text leaves the
        approval pending and returns it again.
        """
        from langchain_core.messages import HumanMessage

        thread_id = thread_id or new_thread_id()
        interrupted = self._interrupted_message(thread_id)
        finished = self.resume_interrupted(thread_id)
        if finished is not None and interrupted is not None and _same_words(interrupted, text):
            # The same request again after a crash: finishing the interrupted turn is the answer; running
            # it once more would repeat its baseline and study.
            return finished.model_copy(update={"resumed": interrupted})
        if self.pending_approval(thread_id) is not None:
            word = " ".join(text.lower().strip(" .!").split())
            answer = answer_word(text)  # "yes go ahead", "sure", "nope" as well as the single words
            if word in _APPROVE_WORDS or word in _DENY_WORDS or answer is not None:
                approve = word in _APPROVE_WORDS if answer is None else answer == "yes"
                return self.resume(thread_id, approve, requester)
            return self._result(thread_id)
        requester = requester or self.settings.requester
        # The user's words are redacted before anything stores them or sends them to a model.
        turn_input = {
            "messages": [HumanMessage(redact_text(text))],
            "directive": None,
            "requester": requester,
        }
        result = self._run(thread_id, turn_input, requester)
        return result.model_copy(update={"resumed": interrupted}) if finished is not None else result

    def thread_exists(self, thread_id: str) -> bool:
        """Return whether ``thread_id`` has any checkpointed turn."""
        return bool(self._snapshot(thread_id).values)

    def _interrupted_message(self, thread_id: str) -> str | None:
        """Return the user message of the turn a crashed process left half done, if there is one."""
        snapshot = self._snapshot(thread_id)
        if not snapshot.next or snapshot.interrupts:
            return None
        for message in reversed(snapshot.values.get("messages", [])):
            if getattr(message, "type", "") == "human":
                return str(message.content)
        return ""

    def resume(self, thread_id: str, approve: bool, approver: str | None = None) -> TurnResult:
        """Approve or deny the thread's pending approval and finish the turn."""
        from langgraph.types import Command

        if self.pending_approval(thread_id) is None:
            raise NoPendingApproval(f"thread {thread_id} is not waiting for approval")
        who = approver or self.settings.requester
        # Runs launched after the approval are still the asker's: the approver is recorded separately.
        asker = self._snapshot(thread_id).values.get("requester") or who
        return self._run(thread_id, Command(resume={"approve": approve, "approver": who}), asker)

    def cancel(self, thread_id: str, by: str) -> TurnResult:
        """Stop the thread's work: signal a running turn (and wait for it), deny a pending approval,
        or run a cancel turn that stops anything of the thread still running. Thread-safe."""
        with self._lock:
            active = self._active.get(thread_id)
        if active is not None:
            active.turn.cancel(by)
            active.done.wait(_CANCEL_WAIT_SECONDS)
            return self._result(thread_id)
        if self.pending_approval(thread_id) is not None:
            return self.resume(thread_id, False, by)
        from langchain_core.messages import HumanMessage

        return self._run(thread_id, {"messages": [HumanMessage("cancel")], "directive": "cancel"}, by)

    def resume_interrupted(self, thread_id: str) -> TurnResult | None:
        """Finish a turn a crashed process left half done (from its last checkpoint); None if none.

        Work already launched is adopted, not repeated (execute finds its baseline in MLflow, the
        tuning study resumes from its storage).
        """
        snapshot = self._snapshot(thread_id)
        if not snapshot.next or snapshot.interrupts:
            return None
        with self._lock:
            if thread_id in self._active:
                return None
        plan = snapshot.values.get("plan")
        if plan is not None and plan.session_run_id:
            # The orphan check at start-up ended the session run of the dead process; the turn goes on.
            from tools.tuning.runs import reopen_if_ended

            reopen_if_ended(self._tools.tracking, plan.session_run_id)
        return self._run(thread_id, None, None)

    def pending_approval(self, thread_id: str) -> ApprovalRequest | None:
        """Return what the thread waits to have approved, or None."""
        snapshot = self._snapshot(thread_id)
        for interrupt in snapshot.interrupts:
            return ApprovalRequest.model_validate(interrupt.value)
        return None

    def close(self) -> None:
        """Release the runtime and the checkpoint database (after writing pending traces)."""
        if self.settings.trace:
            from agent.tracing import flush_traces

            flush_traces()
        self._tools.close()
        self._checkpointer.conn.close()

    # ---- internals -------------------------------------------------------------------------------

    def _end_orphans(self) -> None:
        """End the runs that dead agent processes left RUNNING (a start-up chore; never fatal)."""
        from tools.cleanup import reconcile_orphans

        try:
            ended = reconcile_orphans(self._tools)
        except Exception:  # noqa: BLE001 - an unreachable store is reported by the turn itself
            log.exception("the orphan check at start-up failed")
            return
        for run in ended:
            log.warning("ended orphaned run %s (%s): %s", run.run_id, run.role, run.final_status)

    def _config(self, thread_id: str) -> dict[str, Any]:
        return {"configurable": {"thread_id": thread_id}, "recursion_limit": 40}

    def _snapshot(self, thread_id: str) -> StateSnapshot:
        return self._graph.get_state(self._config(thread_id))  # type: ignore[arg-type]

    def _run(self, thread_id: str, turn_input: Any, requester: str | None) -> TurnResult:
        from agent.turn_context import TurnContext

        tools = self._turn_tools(thread_id, requester)
        active = _ActiveTurn(
            TurnContext(tools=tools, model=self._model, thread_id=thread_id, on_progress=self.on_progress)
        )
        with self._lock:
            if thread_id in self._active:
                raise ThreadBusy(f"thread {thread_id} is already running a turn; wait for it or cancel it")
            self._active[thread_id] = active
        wire = model_wire(self._model)
        if wire is not None:
            wire.start_turn()
        try:
            failure = self._invoke(thread_id, turn_input, active.turn)
        finally:
            with self._lock:
                self._active.pop(thread_id, None)
            active.done.set()
        result = self._result(thread_id)
        usage = result.usage
        if wire is not None:  # every HTTP attempt counts, the failed ones too
            usage = usage.model_copy(update={"http_attempts": wire.turn_attempts})
        if failure is None:
            return result.model_copy(update={"usage": usage})
        return result.model_copy(update={"status": "failed", "error": failure.error, "usage": usage})

    def _invoke(self, thread_id: str, turn_input: Any, turn: TurnContext) -> TurnFailure | None:
        """Run the graph; if a node raises, end the turn cleanly (no run left RUNNING, an answer).

        Returns what went wrong when the turn failed (and was ended by ``fail_turn``), else None.
        """
        from agent.turn_failure import fail_turn

        config = self._config(thread_id)
        try:
            self._graph.invoke(turn_input, config, context=turn)  # type: ignore[arg-type,call-overload]
        except Exception as exc:
            log.exception("the turn on thread %s failed", thread_id)
            try:
                return fail_turn(self._graph, config, turn.tools, exc)
            except Exception as cleanup:
                raise cleanup from exc  # the thread could not even be closed: the caller must know
        return None

    def _turn_tools(self, thread_id: str, requester: str | None) -> ToolContext:
        # The copy shares the service's clients (``ToolContext.clients``); session facts are per turn.
        return dataclasses.replace(
            self._tools, session_id=thread_id, requester=requester or self.settings.requester, approvals=set()
        )

    def _result(self, thread_id: str) -> TurnResult:
        snapshot = self._snapshot(thread_id)
        state: dict[str, Any] = dict(snapshot.values)
        approval = self.pending_approval(thread_id)
        if approval is not None:
            from agent.sections import awaiting_approval_sections

            answer = render_answer(awaiting_approval_sections(state, approval))
        else:
            answer = state.get("answer") or ""
        return TurnResult(
            thread_id=thread_id,
            status="awaiting_approval" if approval is not None else "answered",
            answer=answer,
            sections=parse_sections(answer),
            approval=approval,
            runs=state.get("runs", []),
            baseline_run_id=state.get("baseline_run_id"),
            best_run_id=state.get("best_run_id"),
            policy_events=state.get("policy_events", []),
            asked_for=state.get("asked_for", []),
            usage=state.get("usage") or Usage(),
        )
