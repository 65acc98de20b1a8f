"""The five-section answer: rendering, parsing and validation.

Every answer the agent gives has exactly these sections, in this order, each non-empty. What goes
into them is decided in ``agent/sections.py``; this module only owns the format.
"""

from __future__ import annotations

import re

from tools.core.redact import redact_text

SECTIONS: tuple[str, ...] = ("Plan", "Changes", "Verification", "Rollback", "Summary")

#: what a section says when there is nothing to report.
NOTHING: dict[str, str] = {
    "Plan": "No plan: nothing was planned in this turn.",
    "Changes": "None. Nothing was launched or changed in MLflow.",
    "Verification": "Nothing to verify: no runs were launched.",
    "Rollback": "Nothing to roll back.",
    "Summary": "Nothing to summarise.",
}

_HEADING = re.compile(r"^###[ \t]+(.+?)[ \t]*$", re.MULTILINE)


class AnswerFormatError(ValueError):
    """An answer does not have the five sections in order."""


def render_answer(sections: dict[str, str], lead: str | None = None) -> str:
    """Render the five sections as markdown, filling empty or missing ones with their default.

    Args:
        sections: Section name -> markdown body; unknown names raise ``AnswerFormatError``.
        lead: A short answer shown first, above the sections (questions are answered first).
    """
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise AnswerFormatError(f"unknown answer sections: {', '.join(sorted(unknown))}")
    parts = []
    for name in SECTIONS:
        body = (sections.get(name) or "").strip() or NOTHING[name]
        parts.append(f"### {name}\n{body}")
    if lead and lead.strip():
        parts.insert(0, _HEADING.sub("", lead.strip()))
    return redact_text("\n\n".join(parts) + "\n")  # the answer is a sink: shown, stored, posted


def parse_sections(markdown: str) -> dict[str, str]:
    """Split a five-section answer into ``{section: body}`` in the order the headings appear.

    Only ``###`` headings that name one of the five sections start a section; other text before the
    first of them is ignored. The first heading of a name wins: a later copy (which only quoted text
    could carry) stays inside the section it appears in.
    """
    found: dict[str, str] = {}
    matches: list[re.Match[str]] = []
    for match in _HEADING.finditer(markdown):
        if match.group(1) in SECTIONS and match.group(1) not in {m.group(1) for m in matches}:
            matches.append(match)
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(markdown)
        found[match.group(1)] = markdown[match.end() : end].strip()
    return found


def answer_problems(markdown: str) -> list[str]:
    """Return what is wrong with an answer's format (empty when it is valid)."""
    headings = [m.group(1) for m in _HEADING.finditer(markdown) if m.group(1) in SECTIONS]
    problems = []
    if headings != list(SECTIONS):
        problems.append(f"sections must be {', '.join(SECTIONS)} in order, got {', '.join(headings)}")
    for name, body in parse_sections(markdown).items():
        if not body:
            problems.append(f"section {name} is empty")
    return problems


def validate_answer(markdown: str) -> None:
    """Raise ``AnswerFormatError`` naming every format problem of ``markdown``."""
    problems = answer_problems(markdown)
    if problems:
        raise AnswerFormatError("; ".join(problems))
