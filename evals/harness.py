"""Run scenarios against the real agent service, each in its own workspace, in parallel processes.

A scenario run drives ``agent.service.AgentService`` exactly as the CLI does (send, then resume with the
scripted approval answer, cancel from another thread on a progress event, rebuild the service to
simulate a killed process), then reads the world back and scores it. Workers are forked from a parent
that has already imported the heavy libraries, so each one starts warm.
"""

from __future__ import annotations

import gc
import multiprocessing
import random
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals.loader import load_model_replies, render_scenario
from evals.metrics import GateRecord, RunResult
from evals.observe import Observation, TurnRecord
from evals.schema import Scenario, ScriptedReply
from evals.scorers import passed, refused, score
from evals.world import (
    HARNESS_ENV,
    PreparedWorld,
    Templates,
    jobs_cpu_seconds,
    observe_world,
    prepared_world,
    scrubbed_environment,
)
from tools.core.settings import Settings
from tools.core.sqlite_uri import sqlite_uri

APPROVER = "eval-approver"
#: how often one turn may ask for approval again after being answered (then the harness gives up).
_MAX_APPROVAL_ROUNDS = 3
#: heavy modules imported before forking workers, so no worker pays for them.
WARM_MODULES = (
    "agent.service",
    "agent.chat_models",
    "tools.core.tracking",
    "tools.training.trainer",
    "tools.guard.policy",
    "mlflow",
    "sklearn.ensemble",
    "lightgbm",
    "langchain_openai",
    "agent.model_wire",
    "evals.fakes.openai_server",
)


@dataclass(frozen=True)
class Unit:
    """One run to do: a scenario, a trial number and how to run it."""

    scenario: Scenario
    trial: int
    model: str
    seed: int
    templates: Templates
    work_root: Path
    keep_workspace: bool = False


# ---- the model for a scenario -------------------------------------------------------------------------


def _reply_payload(reply: str | ScriptedReply) -> str | dict[str, Any]:
    if isinstance(reply, str):
        return reply
    return {
        "content": reply.content,
        "tool_calls": [{"name": c.name, "args": c.args} for c in reply.tool_calls],
    }


@contextmanager
def scenario_model(scenario: Scenario, default: str, settings: Settings, obs: Observation) -> Iterator[Any]:
    """Yield what to pass as ``AgentService(model=...)``: a scripted model, the real OpenAI client
    against the fake server (``kind: openai``), or the model under test.

    Requests the fake server refused for breaking OpenAI's message-sequence rules fail the run.
    """
    if scenario.model is None:
        yield default
        return
    if scenario.model.kind == "openai":
        from agent.chat_models import openai_model
        from evals.fakes.openai_server import OpenAIReplayServer

        with OpenAIReplayServer(scenario.model.wire or [], api_key=_FAKE_KEY) as server:
            yield openai_model("gpt-4o-mini", settings, server.base_url, _FAKE_KEY)
            if server.protocol_errors:
                obs.error = "model protocol: the real API would answer HTTP 400: " + "; ".join(
                    server.protocol_errors
                )
        return
    from agent.chat_models import ScriptedChatModel

    yield ScriptedChatModel([_reply_payload(r) for r in load_model_replies(scenario)])


_FAKE_KEY = "sk-eval-fake-openai-key"


# ---- playing the turns --------------------------------------------------------------------------------


@dataclass
class _Session:
    """The service under test plus what the harness needs to cancel and restart it."""

    world: PreparedWorld
    model: Any
    thread_id: str
    cancel_on: str | None = None
    cancelled: bool = False
    service: Any = None
    events: list[str] = field(default_factory=list)
    cancel_thread: threading.Thread | None = None

    def start(self) -> None:
        from agent.service import AgentService

        self.service = AgentService(self.world.settings, model=self.model, on_progress=self._on_progress)

    def restart(self) -> None:
        """Replace the service with a new one on the same workspace, as a restarted process would."""
        # Everything the new service knows comes from disk (checkpoints, MLflow, the runtime's
        # records). The old one is closed only to release its files; it keeps no state in memory
        # that the new one could rely on.
        if self.service is not None:
            self.service.close()
        self.start()

    def _on_progress(self, event: Any) -> None:
        self.events.append(f"{event.kind}: {event.message}")
        if self.cancel_on and event.kind == self.cancel_on and not self.cancelled:
            self.cancelled = True
            self.cancel_thread = threading.Thread(
                target=self.service.cancel, args=(self.thread_id, "eval-user"), daemon=True
            )
            self.cancel_thread.start()

    def settle(self) -> None:
        """Wait for a cancel call started by a progress event to return (it outlives the turn)."""
        if self.cancel_thread is not None:
            self.cancel_thread.join(60)
            self.cancel_thread = None


def _record(turn_index: int, user: str | None, approve: bool | None, result: Any) -> TurnRecord:
    data = result.model_dump(mode="json")
    return TurnRecord(
        index=turn_index, user=user, approve=approve, status=data.get("status", "?"),
        answer=data.get("answer") or "", sections=data.get("sections") or {},
        asked_for=list(data.get("asked_for") or []), policy_events=list(data.get("policy_events") or []),
        runs=list(data.get("runs") or []), approval=data.get("approval"), usage=dict(data.get("usage") or {}),
    )  # fmt: skip


def play_turn(session: _Session, index: int, scenario: Scenario) -> TurnRecord:
    """Send one turn's message and answer its approval requests as the scenario says."""
    turn = scenario.turns[index]
    if turn.restart:
        session.restart()
    session.cancel_on, session.cancelled = turn.cancel_on, False
    service = session.service
    requester = turn.requester or session.world.settings.requester
    record = TurnRecord(index=index, user=turn.user, approve=turn.approve, restarted=turn.restart)
    result = None
    if turn.user is not None:
        result = service.send(session.thread_id, turn.user, requester=requester)
        session.settle()
        record = _record(index, turn.user, turn.approve, result)
    elif service.pending_approval(session.thread_id) is None:
        record.error = "the scenario answers an approval, but none is pending"
        return record
    asked = 0
    while turn.approve is not None and asked < _MAX_APPROVAL_ROUNDS:
        if result is not None and result.status != "awaiting_approval":
            break
        asked += 1
        # The state of a turn spans its interrupt: the resumed result holds the whole turn's events
        # and usage, so it replaces the record rather than adding to it.
        result = service.resume(session.thread_id, approve=turn.approve, approver=APPROVER)
        record = _record(index, turn.user, turn.approve, result)
    if result is not None and result.status == "awaiting_approval" and asked < _MAX_APPROVAL_ROUNDS:
        asked += 1  # left pending (no answer in this turn, or asked again after the answer)
    record.approvals_requested = asked
    record.cancelled, record.restarted = session.cancelled, turn.restart
    return record


def play(scenario: Scenario, world: PreparedWorld, model: Any, thread_id: str, obs: Observation) -> None:
    """Play every turn in order into ``obs``; an exception ends the scenario and is recorded."""
    session = _Session(world=world, model=model, thread_id=thread_id)
    try:
        session.start()
        for index in range(len(scenario.turns)):
            try:
                obs.turns.append(play_turn(session, index, scenario))
            except Exception as exc:  # noqa: BLE001 - the agent crashing is a result, not a harness error
                error = f"{type(exc).__name__}: {exc}\n{_short_traceback(exc)}"
                obs.turns.append(
                    TurnRecord(index=index, user=scenario.turns[index].user, approve=None, error=error)
                )
                break
    finally:
        if session.service is not None:
            _close_quietly(session.service, obs)


def _close_quietly(service: Any, obs: Observation) -> None:
    try:
        service.close()
    except Exception as exc:  # noqa: BLE001
        obs.error = f"service.close() raised {type(exc).__name__}: {exc}"


def _short_traceback(exc: BaseException, lines: int = 12) -> str:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return "\n".join(text.strip().splitlines()[-lines:])


def play_with_deadline(scenario: Scenario, world: PreparedWorld, model: Any, thread_id: str) -> Observation:
    """Play the turns in a thread; past ``scenario.timeout_seconds`` record a timeout and move on."""
    obs = Observation()
    worker = threading.Thread(target=play, args=(scenario, world, model, thread_id, obs), daemon=True)
    worker.start()
    worker.join(scenario.timeout_seconds)
    if worker.is_alive():
        obs.error = (
            f"scenario timed out after {scenario.timeout_seconds:.0f} s (turns done: {len(obs.turns)})"
        )
        worker.join(10)  # let a cancel or the runtime's own deadlines finish what they can
    return obs


# ---- one unit, in a worker ------------------------------------------------------------------------------


@contextmanager
def _workspace(unit: Unit) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"{unit.scenario.id}-t{unit.trial}-", dir=unit.work_root))
    try:
        yield path
    finally:
        if not unit.keep_workspace:
            shutil.rmtree(path, ignore_errors=True)


def run_unit(unit: Unit) -> RunResult:
    """Set up the world, play the scenario, observe and score it; never raises."""
    from evals.report import render_transcript

    started, cpu_started = time.perf_counter(), time.process_time()
    freeze_survivors()
    job_cpu = 0.0
    random.seed(f"{unit.seed}:{unit.scenario.id}:{unit.trial}")
    scenario = unit.scenario
    obs = Observation()
    refs: dict[str, str] = {}
    try:
        with _workspace(unit) as home, prepared_world(scenario, home, unit.templates, unit.model) as world:
            refs = world.refs
            scenario = render_scenario(scenario, world.refs)
            thread_id = f"eval-{scenario.id}-{unit.trial}"
            wire_obs = Observation()
            with scenario_model(scenario, unit.model, world.settings, wire_obs) as model:
                obs = play_with_deadline(scenario, world, model, thread_id)
            obs.error = obs.error or wire_obs.error
            observe_world(world, scenario, obs)
            job_cpu = jobs_cpu_seconds(world.settings)
    except Exception as exc:  # noqa: BLE001 - a broken world is reported as this run's failure
        obs.error = f"harness: {type(exc).__name__}: {exc}\n{_short_traceback(exc)}"
    gates = score(scenario, obs)
    for gate in gates:  # "${runs.best}" reads better than a random run ID, and is the same every run
        gate.reasons = [_unrender(reason, refs) for reason in gate.reasons]
    result = RunResult(
        id=scenario.id, trial=unit.trial, passed=passed(gates),
        gates=[GateRecord(name=g.name, passed=g.passed, in_basis=g.in_basis, safety=g.safety,
                          reasons=g.reasons) for g in gates],
        tags=sorted(scenario.tags), twin=scenario.twin, expects_refusal=scenario.expects_refusal,
        refused=refused(obs), model_calls=obs.usage["model_calls"], prompt_tokens=obs.usage["prompt_tokens"],
        completion_tokens=obs.usage["completion_tokens"], tool_calls=len(obs.audit),
        wall_seconds=round(time.perf_counter() - started, 3), transcript="",
        cpu_seconds=round(time.process_time() - cpu_started, 3), job_cpu_seconds=job_cpu,
    )  # fmt: skip
    result.transcript = render_transcript(scenario, unit.trial, obs, result)
    return result


# ---- the pool ----------------------------------------------------------------------------------------


def _unrender(text: str, refs: dict[str, str]) -> str:
    for name, value in refs.items():
        if name.startswith("runs."):
            text = text.replace(value, "${" + name + "}")
    return text


def freeze_survivors() -> None:
    """Collect garbage, then move every surviving object out of the garbage collector's reach.

    A warm worker holds a large heap of imported modules (MLflow, SQLAlchemy, LangChain, scikit-learn)
    and caches; every full collection walked all of it again, which cost ~20% of a short scenario's CPU
    (measured: 0.57 -> 0.42 CPU-s for question scenarios). Frozen objects stay alive as they were; only
    cycles among them that become garbage later are not reclaimed, which a worker of one suite can
    afford. Called before forking workers and at the start of every run (measured with the run).
    """
    gc.collect()
    gc.freeze()


def warm_imports() -> None:
    """Import the heavy modules and load the token encoding once (in the parent, before forking workers).

    Each forked worker would otherwise pay them on its first scenario that needs them: the tuning
    loop's plotting libraries (~1 s quiet, 3-10 s loaded) and the tokenizer's tables (~1 s).
    """
    import importlib

    import matplotlib

    matplotlib.use("Agg")  # what the tuning loop's plots use; no display here
    for name in (*WARM_MODULES, "matplotlib.pyplot", "optuna.visualization.matplotlib"):
        try:
            importlib.import_module(name)
        except ImportError:
            continue  # a module that does not exist yet is imported (and fails) in the run itself
    from agent.tokens import get_encoding

    get_encoding()


def _use_parents_fork_server() -> None:
    from tools.runtime import forkserver

    forkserver.use_inherited_server()


def start_fork_server(templates: Templates) -> None:
    """Start the training fork server now, rehearsed, shared by all scenarios (and forked workers).

    The fork server is per process tree and outlives a scenario's service, so every scenario forks its
    training workers from it. Started by the first scenario's runtime it would run in
    that scenario's environment and, in the default ``worker`` launch mode, skip the rehearsal (a tiny
    training in a scratch store): then every scenario's first job pays MLflow's and LightGBM's
    first-use work again (~0.3 s quiet). Here it starts with the scrubbed harness environment, warmed
    on the template store; jobs still run in real forked processes against their scenario's store.
    """
    from tools.runtime import forkserver

    with scrubbed_environment(HARNESS_ENV):
        forkserver.use_preload(None)
        forkserver.start_fork_server(sqlite_uri(templates.mlflow_db), rehearse=True)


def _cost(unit: Unit) -> tuple[int, str, int]:
    """Order units so slow ones (Kubernetes, tuning, several turns) start first."""
    scenario = unit.scenario
    weight = 4 * (scenario.world.runtime == "kubernetes") + 2 * any("tun" in t for t in scenario.tags)
    weight += 6 * ("entry-point" in scenario.tags)  # the user's code: its own fresh processes (~15 s)
    return (-(weight + len(scenario.turns)), scenario.id, unit.trial)


def run_units(
    units: list[Unit], jobs: int, on_result: Callable[[RunResult], None] | None = None
) -> list[RunResult]:
    """Run ``units`` (in-process when ``jobs`` is 1, else in forked workers); return results sorted."""
    ordered = sorted(units, key=_cost)
    results: list[RunResult] = []
    if jobs <= 1:
        for unit in ordered:
            results.append(run_unit(unit))
            if on_result:
                on_result(results[-1])
    else:
        local = [u for u in units if u.scenario.world.runtime == "local"]
        if local:  # one server for every worker, started first: it warms up beside the imports below
            start_fork_server(local[0].templates)
        warm_imports()
        freeze_survivors()  # workers fork with the imported modules already frozen
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        context = multiprocessing.get_context(method)
        starter = _use_parents_fork_server if local else None
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=starter) as pool:
            for future in as_completed([pool.submit(run_unit, unit) for unit in ordered]):
                results.append(future.result())
                if on_result:
                    on_result(results[-1])
    return sorted(results, key=lambda r: (r.id, r.trial))
