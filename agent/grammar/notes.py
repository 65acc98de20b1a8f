"""A request to add a note to a named run ("add a note to run 8788935a: rf baseline looks fine").

``note_request`` reads it: which run (a run ID or a unique prefix of >= 6 hex characters) and what
the note says (after a colon, a dash, "saying", "that says" or in quotes). Only such a request is a
note the agent writes (``log_note``); a note without a run or without text stays a change it does
not make (``grammar.unsupported``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.grammar.vocabulary import FLAGS, NEGATION

_VERB = (
    r"(?:add|write|leave|put|attach|log|append|jot(?:\s+down)?|make|drop|stick)\s+"
    r"(?:a\s+|an\s+|the\s+|this\s+|my\s+|some\s+|one\s+)?(?:quick\s+|short\s+|little\s+)?"
    r"(?:note|comment|remark|annotation)s?"
    r"|annotate|note\s+(?=(?:on|for|to)\b)|comment\s+(?=on\b)"
)
_RUN = r"(?:the\s+)?(?:run\s+)?(?:(?:with\s+)?id\s+)?`?(?P<run>[0-9a-f]{6,32})`?"
_SAID = (
    r"\s*(?::|\s-+\s|\s—\s|,?\s+saying\b|,?\s+that\s+says\b|,?\s+which\s+says\b|\s+with\s+(?:the\s+)?"
    r"(?:text|note|comment)\b:?|\s+with\b:?|,?\s+that\b|,)\s*(?P<text>.+)$"
)
_NOTE = re.compile(
    rf"\b(?:{_VERB})\s*(?:(?:to|on|for|in|onto|at|about)\s+)?{_RUN}\b{_SAID}", FLAGS | re.DOTALL
)
# "note: run 8788935a looks fine", "note - rf baseline looks fine on run 8788935a": a note label first,
# then the text, with the run ID before or inside it.
_LABELLED = re.compile(
    r"^\s*(?:note|nb|comment|annotation)\s*(?::|\s-+\s|\s—\s)\s*(?P<before>.*?)"
    r"(?:\b(?:on|for|re|about|in)\s+)?(?:the\s+)?(?:run\s+)?(?:id\s+)?`?(?P<run>(?=[0-9a-f]*\d)[0-9a-f]{6,32})`?"
    r"(?![0-9a-z])\s*[:,\-—]?\s*(?P<after>.*)$",
    FLAGS | re.DOTALL,
)
_QUOTED = re.compile(r"^[\"'“‘`](?P<inner>.+)[\"'”’`][.!]?$", re.DOTALL)


@dataclass(frozen=True)
class NoteRequest:
    """A note the user asked to add: the run (as written) and the text."""

    run: str
    text: str


def note_request(text: str) -> NoteRequest | None:
    """Return the run and the text of a request to add a note to a named run, or None."""
    match = _NOTE.search(text.strip())
    if match is not None and NEGATION.search(text.strip()[: match.start()]):
        return None  # "please don't add a note to run X: …" asks for no note
    if match is None or not re.search(r"\d", match["run"]):
        return _labelled(text)
    note = match["text"].strip().lstrip(":-—– ").strip()
    quoted = _QUOTED.match(note)
    note = (quoted["inner"] if quoted else note).strip()
    if not note:
        return None
    return NoteRequest(run=match["run"].lower(), text=note)


def _labelled(text: str) -> NoteRequest | None:
    """Read "note: run X looks fine" / "note: looks fine on run X" (text before or after the ID)."""
    match = _LABELLED.match(text.strip())
    if match is None:
        return None
    note = " ".join(
        part.strip(" ,;:-—") for part in (match["before"], match["after"]) if part.strip(" ,;:-—")
    )
    quoted = _QUOTED.match(note)
    note = (quoted["inner"] if quoted else note).strip()
    return NoteRequest(run=match["run"].lower(), text=note) if note else None
