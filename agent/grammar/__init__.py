"""The offline model's request grammar: turn one user message into an ``IntakeDecision``.

Rules run in a fixed order over a working copy of the text; each rule *consumes* what it matched, so
later rules cannot reuse it and whatever no rule consumed is reported in
``IntakeDecision.not_understood``. The grammar is documented, with examples, in
``docs/offline-grammar.md``; keep the two in step.

Modules, in the order a message meets them:

- ``vocabulary``: the tables (numbers, model families, metrics, datasets, filler words, action
  phrases) and their lookups;
- ``scanner``: the message being consumed (``Scanner``) and what was found so far (``Findings``);
- ``locations``, ``datasets``, ``fields``: the request rules, one per kind of field;
- ``intent``: forbidden / cancel / question / experiment / unknown, once the fields are consumed;
- ``intake``: ``parse_message``, the rules in order and the resulting ``IntakeDecision``;
- ``questions``: ``parse_question``, the read-only tool calls a question needs (``QuestionPlan``).
"""

from agent.grammar.intake import parse_message
from agent.grammar.questions import QuestionKind, QuestionPlan, parse_question

__all__ = ["QuestionKind", "QuestionPlan", "parse_message", "parse_question"]
