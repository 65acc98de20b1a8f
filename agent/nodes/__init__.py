"""The graph's nodes, one module each; ``agent/graph.py`` wires them."""

from agent.nodes.answer_question import answer_question
from agent.nodes.approve import approve
from agent.nodes.execute import execute
from agent.nodes.intake import intake
from agent.nodes.plan import plan
from agent.nodes.refuse import refuse
from agent.nodes.respond import respond
from agent.nodes.rollback import rollback
from agent.nodes.verify import verify

__all__ = [
    "answer_question",
    "approve",
    "execute",
    "intake",
    "plan",
    "refuse",
    "respond",
    "rollback",
    "verify",
]
