"""The offline model's request grammar, now the ``agent.grammar`` package (kept for older imports)."""

from agent.grammar import QuestionKind, QuestionPlan, parse_message, parse_question

__all__ = ["QuestionKind", "QuestionPlan", "parse_message", "parse_question"]
