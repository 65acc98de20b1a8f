"""The agent graph: wiring only. Each node's routing is in its return annotation (``Command[...]``).

intake -> plan -> approve? -> execute -> verify -> rollback? -> respond     (experiment)
intake -> answer_question -> respond                                       (question)
intake -> refuse -> respond                                                (deploy, raw data)
intake -> rollback -> respond                                              (cancel)
intake -> respond                                                          (missing inputs, unknown)
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from langgraph.graph import END, START, StateGraph

from agent.nodes import (
    answer_question,
    approve,
    execute,
    intake,
    plan,
    refuse,
    respond,
    rollback,
    verify,
)
from agent.state import AgentState
from agent.turn_context import TurnContext

if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.graph.state import CompiledStateGraph


def build_graph(
    checkpointer: BaseCheckpointSaver | None = None,
) -> CompiledStateGraph[AgentState, TurnContext, AgentState, AgentState]:
    """Return the compiled agent graph, checkpointed by ``checkpointer`` (None: in memory only per run).

    The graph is compiled once per process (~14 ms: LangGraph inspects every node function); each
    caller gets its own copy bound to its own checkpointer.
    """
    return _compiled().copy(update={"checkpointer": checkpointer})


@functools.cache
def _compiled() -> CompiledStateGraph[AgentState, TurnContext, AgentState, AgentState]:
    graph = StateGraph(AgentState, context_schema=TurnContext)
    graph.add_node("intake", intake)
    graph.add_node("plan", plan)
    graph.add_node("approve", approve)
    graph.add_node("execute", execute)
    graph.add_node("verify", verify)
    graph.add_node("rollback", rollback)
    graph.add_node("answer_question", answer_question)
    graph.add_node("refuse", refuse)
    graph.add_node("respond", respond)
    graph.add_edge(START, "intake")
    graph.add_edge("rollback", "respond")
    graph.add_edge("answer_question", "respond")
    graph.add_edge("refuse", "respond")
    graph.add_edge("respond", END)
    return graph.compile(name="expagent")


def make_graph() -> CompiledStateGraph[AgentState, TurnContext, AgentState, AgentState]:
    """Return the graph for LangGraph Studio / ``langgraph dev`` (which supplies the checkpointer)."""
    return build_graph()
