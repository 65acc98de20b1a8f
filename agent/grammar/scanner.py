"""The message being parsed and what the rules have found in it so far.

Rules run in a fixed order over a working copy of the text; each rule *consumes* what it matched
(replaces it with NUL characters), so later rules cannot reuse it and whatever no rule consumed can
be reported honestly in ``IntakeDecision.not_understood``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from agent.grammar.vocabulary import FILLER, FLAGS

_GONE = "\x00"


class Scanner:
    """The message being parsed: rules search the unconsumed text and consume what they match."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.work = text

    def find(self, pattern: str | re.Pattern[str]) -> Iterator[re.Match[str]]:
        """Yield matches in the unconsumed text (consumed text never matches)."""
        compiled = pattern if isinstance(pattern, re.Pattern) else re.compile(pattern, FLAGS)
        yield from compiled.finditer(self.work)

    def take(self, match: re.Match[str], group: int | str = 0) -> str:
        """Consume ``match`` (or one group of it) and return its original text."""
        start, end = match.span(group)
        self.consume(start, end)
        return self.text[start:end]

    def consume(self, start: int, end: int) -> None:
        """Consume the text between two offsets."""
        self.work = self.work[:start] + _GONE * (end - start) + self.work[end:]

    def first(self, pattern: str | re.Pattern[str]) -> re.Match[str] | None:
        """Return and consume the first match of ``pattern``, if any."""
        for match in self.find(pattern):
            self.take(match)
            return match
        return None

    def take_all(self, pattern: str | re.Pattern[str]) -> bool:
        """Consume every match of ``pattern``; return whether there was one."""
        matches = list(self.find(pattern))
        for match in matches:
            self.take(match)
        return bool(matches)

    def leftovers(self) -> list[str]:
        """Return the unconsumed phrases that contain at least one meaningful word."""
        phrases = []
        for chunk in re.split(r"[\x00,.;:!?()\[\]{}\n]+", self.work):
            words = [w.strip("'\"`") for w in chunk.split()]
            while words and words[0].lower() in FILLER:
                words.pop(0)
            while words and words[-1].lower() in FILLER:
                words.pop()
            if any(re.search(r"[^\W_]", w) and w.lower() not in FILLER for w in words):
                phrases.append(" ".join(words))
        return phrases


@dataclass
class Findings:
    """Everything one message yields, before it becomes an ``IntakeDecision``."""

    draft: dict[str, Any] = field(default_factory=lambda: {"params": {}, "search_space": {}})
    notes: list[str] = field(default_factory=list)
    latest: bool = False
    # Raw paths/URIs found, as (start, end, text without credentials); intent classification decides
    # which one, if any, is the data the user wants to train on.
    locations: list[tuple[int, int, str]] = field(default_factory=list)
    # Spans of the message never to be repeated (secrets, credentials), with what to show instead.
    redactions: list[tuple[int, int, str]] = field(default_factory=list)

    def set(self, key: str, value: Any) -> None:
        """Record a field once; a second, different value is reported instead of overwriting."""
        if self.draft.get(key) is None:
            self.draft[key] = value
        elif self.draft[key] != value:
            self.notes.append(f"{key} given twice ({self.draft[key]!r} and {value!r}); kept the first")

    def note_once(self, note: str) -> None:
        """Add ``note`` unless the same note was already made."""
        if note not in self.notes:
            self.notes.append(note)


# A request rule reads (and consumes) one kind of field from the message.
Rule = Callable[[Scanner, Findings], None]


def strip_trailing_punct(text: str) -> str:
    """Return ``text`` without the sentence punctuation or quotes a match picked up at its end."""
    return text.rstrip(".,;:!?)'\"")


def redacted(text: str, redactions: list[tuple[int, int, str]]) -> str:
    """Return ``text`` with each (start, end) span replaced by its stand-in."""
    parts, done = [], 0
    for start, end, stand_in in sorted(redactions):
        if end > done:  # an overlapping span hides what the previous one left
            parts += [text[done : max(start, done)], stand_in]
            done = end
    return "".join(parts) + text[done:]
