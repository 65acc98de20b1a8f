"""End a turn whose graph raised: nothing left RUNNING, the traceback on the session run, an answer.

A node that raises (a bug, a service that went away) must not leave the thread half done. ``fail_turn``
cancels the job of every run of the thread still RUNNING (ending the run KILLED when there is no job to
stop), ends the turn's session run FAILED with the traceback as ``turn_error.txt``, and writes a
five-section answer describing the error into the thread as if ``respond`` had run, so the next message
starts a new turn instead of retrying the failed one.
"""

from __future__ import annotations

import logging
import traceback
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage
from pydantic import BaseModel, Field

from agent.answer import render_answer
from agent.logs import current_log_path
from agent.model_wire import model_failure
from agent.state import RunRecord
from tools.cleanup import RunToStop, stop_runs
from tools.core.redact import redact_text
from tools.core.tags import job_id_of, role_of, running_session_runs
from tools.core.tracking import end_run, outbox_of
from tools.core.unreachable import is_unreachable

if TYPE_CHECKING:
    from langgraph.graph.state import CompiledStateGraph
    from mlflow.tracking import MlflowClient

    from agent.experiment_plan import ExperimentPlan
    from tools.context import ToolContext

log = logging.getLogger(__name__)

ERROR_ARTIFACT = "turn_error.txt"
_CANCELLED_BY = "expagent (turn failed)"


class TurnFailure(BaseModel):
    """What went wrong in a turn and what was done about it."""

    node: str = Field(description="The node(s) that were running when the error happened.")
    error: str = Field(description="Exception type and message, redacted.")
    session_run_id: str | None = Field(None, description="The turn's session run, ended FAILED.")
    stopped: list[RunRecord] = Field(default_factory=list, description="Runs that were still RUNNING.")
    still_running: list[str] = Field(
        default_factory=list, description="Runs of the thread that could not be stopped (still RUNNING)."
    )
    trace_kept: bool = Field(True, description="Whether the traceback was attached to the session run.")
    log_path: str | None = Field(None, description="The agent's log file, which holds the traceback.")
    store_unreachable: bool = Field(False, description="The tracking server could not be reached.")
    jobs_cancelled: list[str] = Field(
        default_factory=list, description="Jobs cancelled without MLflow (the store was unreachable)."
    )
    kept: str = Field("", description="What waits in the workspace's outbox for the tracking server.")


def fail_turn(
    graph: CompiledStateGraph[Any, Any, Any, Any], config: dict[str, Any], tools: ToolContext, exc: Exception
) -> TurnFailure:
    """Stop the failed turn's runs, end its session run FAILED and store its answer in the thread."""
    snapshot = graph.get_state(config)  # type: ignore[arg-type]
    state: dict[str, Any] = dict(snapshot.values)
    failure = TurnFailure(
        node=", ".join(snapshot.next) or "the graph",
        error=redact_text(model_failure(exc) or f"{type(exc).__name__}: {exc}"),
        log_path=str(current_log_path() or tools.settings.log_path),
    )
    plan: ExperimentPlan | None = state.get("plan")
    session_run_id = plan.session_run_id if plan is not None else None
    thread_id = str(config["configurable"]["thread_id"])
    try:
        failure.stopped = stop_running_runs(tools, thread_id, session_run_id, failure)
    except Exception as listing:  # noqa: BLE001 - the store cannot be read: stop what runs here, say so
        log.exception("could not list the runs of thread %s after the turn failed", thread_id)
        failure.store_unreachable = is_unreachable(listing) or is_unreachable(exc)
        failure.jobs_cancelled = _cancel_jobs_without_store(tools, thread_id, failure)
    trace = redact_text("".join(traceback.format_exception(exc)))
    if session_run_id is not None and _end_session_run(tools.tracking, session_run_id, failure, trace):
        failure.session_run_id = session_run_id
    failure.still_running = _still_running(tools, thread_id)
    box = outbox_of(tools.tracking)
    failure.kept = box.describe() if box is not None else ""
    answer = render_answer(failure_sections(state, failure))
    update = {"answer": answer, "messages": [AIMessage(answer)], "runs": _records(failure)}
    graph.update_state(config, update, as_node="respond")  # type: ignore[arg-type]
    return failure


def _records(failure: TurnFailure) -> list[RunRecord]:
    runs = list(failure.stopped)
    if failure.session_run_id:
        session = {"run_id": failure.session_run_id, "role": "session", "status": "FAILED"}
        runs.append(RunRecord.model_validate({**session, "note": failure.error}))
    return runs


# ---- runs ------------------------------------------------------------------------------------------


def stop_running_runs(
    tools: ToolContext, thread_id: str, session_run_id: str | None, failure: TurnFailure
) -> list[RunRecord]:
    """Cancel the job of every RUNNING run of the thread (but its session run); return them as ended."""
    running = [r for r in running_session_runs(tools.tracking, thread_id) if r.info.run_id != session_run_id]
    targets = [RunToStop(r.info.run_id, role_of(r), job_id_of(r)) for r in running]
    reason = f"the agent turn failed in {failure.node} ({failure.error})"
    stopped = []
    for target in targets:  # one at a time: one run that cannot be stopped must not hide the others
        try:
            (done,) = stop_runs(tools, [target], reason, _CANCELLED_BY)
        except Exception:  # noqa: BLE001
            log.exception("could not stop run %s after the turn failed", target.run_id)
            continue
        record = {"run_id": done.run_id, "role": done.role, "status": done.final_status}
        stopped.append(RunRecord.model_validate({**record, "job_id": done.job_id, "note": reason}))
    return stopped


def _cancel_jobs_without_store(tools: ToolContext, thread_id: str, failure: TurnFailure) -> list[str]:
    """Cancel the thread's jobs that still run, knowing them from the runtimes rather than MLflow.

    The runs' endings are kept in the outbox (``tools.core.tracking.end_run``); runs no job closes are
    ended as orphans by whoever opens the workspace next.
    """
    reason = f"the agent turn failed in {failure.node} ({failure.error})"[:500]
    cancelled = []
    for runtime in list(tools.runtimes.values()):
        try:
            jobs = [job for job in runtime.list_jobs(thread_id) if not job.done]
        except Exception:  # noqa: BLE001
            log.exception("could not list the jobs of thread %s", thread_id)
            continue
        for job in jobs:
            try:
                runtime.cancel(job.job_id, reason, _CANCELLED_BY)
            except Exception:  # noqa: BLE001 - one job that cannot be cancelled must not hide the others
                log.exception("could not cancel job %s after the turn failed", job.job_id)
                continue
            cancelled.append(job.job_id)
    return cancelled


def _still_running(tools: ToolContext, thread_id: str) -> list[str]:
    """Return the thread's runs that are RUNNING after the cleanup (each is named in the answer)."""
    try:
        return [r.info.run_id for r in running_session_runs(tools.tracking, thread_id)]
    except Exception:  # noqa: BLE001 - the store cannot say: claim nothing
        log.exception("could not check the runs of thread %s after the turn failed", thread_id)
        return ["(unknown: the tracking store could not be read)"]


def _end_session_run(client: MlflowClient, run_id: str, failure: TurnFailure, trace: str) -> bool:
    """End the session run FAILED with the traceback (unless it already ended); False if it cannot."""
    try:
        try:
            status = str(client.get_run(run_id).info.status)
        except Exception as exc:
            if not is_unreachable(exc):
                raise
            status = "RUNNING"  # unknown: end_run keeps the ending in the outbox (replayed if still RUNNING)
        if status not in ("RUNNING", "SCHEDULED"):
            return False
        # Status first: an artifact store that fails must not leave the run RUNNING.
        end_run(client, run_id, "FAILED", note=f"The turn failed in {failure.node}: {failure.error}")
    except Exception:  # noqa: BLE001 - the answer still has to be written
        log.exception("could not end session run %s after the turn failed", run_id)
        return False
    try:
        client.log_text(run_id, trace, ERROR_ARTIFACT)
    except Exception:  # noqa: BLE001 - the traceback stays in the agent's log
        log.exception("could not attach %s to session run %s", ERROR_ARTIFACT, run_id)
        failure.trace_kept = False
    return True


# ---- the answer ------------------------------------------------------------------------------------


def failure_sections(state: dict[str, Any], failure: TurnFailure) -> dict[str, str]:
    """Return the five sections describing a turn that stopped with an error."""
    session = f"session run `{failure.session_run_id}`" if failure.session_run_id else None
    kept = session is not None and failure.trace_kept
    log = f"the agent's log `{failure.log_path}`" if failure.log_path else "the agent's log"
    where = f"the traceback is on the {session} (`{ERROR_ARTIFACT}`) and in {log}" if kept else f"see {log}"
    if failure.store_unreachable:
        jobs = ", ".join(f"`{j}`" for j in failure.jobs_cancelled)
        cancelled = f"cancelled job(s) {jobs}; " if jobs else ""
        waiting = failure.kept or "nothing kept"
        left = (
            f"The tracking server could not be reached: {cancelled}{waiting}. The next expagent command that "
            "reaches the server writes them and ends the runs this turn left RUNNING"
        )
    elif failure.still_running:
        left = "Still RUNNING (could not be stopped): " + ", ".join(f"`{r}`" for r in failure.still_running)
    else:
        left = "Nothing of this turn is left running"
    return {
        "Plan": _plan_text(state, failure),
        "Changes": _changes_text(state, failure),
        "Verification": f"Not verified: the turn stopped with an error in {failure.node} before "
        "verification.",
        "Rollback": _rollback_text(failure),
        "Summary": f"The turn stopped with an internal error in {failure.node}: {failure.error}. "
        f"{left}; {where}. You can ask again.",
    }


def _plan_text(state: dict[str, Any], failure: TurnFailure) -> str:
    from agent.sections import plan_text

    plan = state.get("plan")
    if plan is None:
        return f"No plan: the turn failed in {failure.node} before a plan was made."
    return plan_text(plan, state)  # type: ignore[arg-type]


def _changes_text(state: dict[str, Any], failure: TurnFailure) -> str:
    final = {r.run_id: r for r in [*state.get("runs", []), *failure.stopped]}
    lines = [f"- {r.role} run `{r.run_id}`: {r.status}" for r in final.values() if r.role != "session"]
    if failure.session_run_id:
        lines.append(
            f"- The session run `{failure.session_run_id}` ended FAILED; "
            + (
                f"the traceback is attached as `{ERROR_ARTIFACT}`."
                if failure.trace_kept
                else "the traceback could not be attached (it is in the agent's log)."
            )
        )
    return "\n".join(lines) or "None. Nothing was launched or changed in MLflow."


def _rollback_text(failure: TurnFailure) -> str:
    if not failure.stopped:
        return "Nothing to roll back: no run of this conversation was left running."
    lines = ["Stopped because the turn failed:"]
    for r in failure.stopped:
        job = f" (job `{r.job_id}`)" if r.job_id else ""
        lines.append(f"- {r.role} run `{r.run_id}`{job}: stopped → {r.status}.")
    return "\n".join(lines)
