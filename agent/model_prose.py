"""The chat model's words, made safe to quote in an answer: the model is untrusted input.

Model text only ever appears inside the Summary (the answer to a question) or as a one-line quote; the
other sections are written by code. Before it is shown, ``quote_prose``:

- strips markdown headings (a reply cannot open its own ``### Changes`` section) and horizontal rules;
- caps the length (``MAX_PROSE_CHARS``, then "…truncated");
- redacts secrets and personal data;
- checks every 32-hex run ID against MLflow: an ID MLflow does not have is marked "(not found)";
- marks a claim of an action the audit log does not show ("I registered the model", "the run has been
  deployed") as not done.

``quote_line`` does the same for a short phrase (a question the model restates, a part it did not
understand): one line, capped, no markup that could open a section.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection

from tools.core.redact import redact_text
from tools.core.text import strip_invisible

MAX_PROSE_CHARS = 4000
MAX_LINE_CHARS = 200
#: at most this many distinct run IDs are looked up per answer; the rest are marked unchecked.
MAX_ID_LOOKUPS = 40

_HEADING = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]*", re.MULTILINE)
_SETEXT = re.compile(r"^[ \t]{0,3}(?:=+|-{3,}|\*{3,}|_{3,})[ \t]*$", re.MULTILINE)
_RUN_ID = re.compile(r"(?<![0-9a-fA-F])([0-9a-fA-F]{32})(?![0-9a-fA-F])(`?)")
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]*")

# Actions no tool of the toolset can take: any claim of them is false.
_NEVER = (
    r"regist(?:er|ered)\s+(?:the\s+|a\s+|it\b|model|run|version)|deployed|promoted|staged|served|aliased|published"
    r"|transitioned|released|set\s+(?:the\s+|an?\s+)?(?:model\s+)?alias|rolled\s+out|put\s+.{0,30}\s+in\s+prod"
)
# State changes the agent can make, claimed in the first person: true only if a tool did it this turn.
_STATE_CHANGE: dict[str, str] = {
    "start_training_run": r"trained|launched|started|kicked\s+off|ran\s+(?:a|the|another|new)",
    "tune": r"tuned|ran\s+(?:a\s+)?(?:study|sweep|trials)",
    "cancel_job": r"cancell?ed|killed|terminated|stopped\s+(?:the\s+|your\s+|run|job|it\b|them\b)",
    "log_note": r"(?:added|logged|wrote|left)\s+(?:a\s+)?note",
    "set_tag": r"tagged|(?:added|set)\s+(?:a\s+|the\s+)?tag",
    "delete": r"deleted|removed|purged|archived|renamed|edited",
}
_FIRST_PERSON = r"\b(?:i|we)(?:'ve|'ll|\s+have|\s+had|\s+just|\s+already|\s+successfully|\s+now)*\s+"
_PASSIVE = r"\b(?:has|have|was|were|is\s+now|are\s+now)\s+(?:been\s+)?(?:successfully\s+)?"
_NOT_DONE = " *(not done: the audit log shows no such action)*"


def quote_prose(
    text: str,
    run_exists: Callable[[str], bool],
    done_tools: Collection[str] = (),
    limit: int = MAX_PROSE_CHARS,
) -> str:
    """Return the model's ``text`` as prose that is safe to put in the Summary.

    Args:
        text: What the model said.
        run_exists: Answers whether MLflow has a run with this ID (exceptions count as "not found").
        done_tools: Tools that ran and were allowed this turn (from the audit); claims of state changes
            no such tool made are marked as not done.
        limit: Maximum characters kept.
    """
    text = strip_invisible(text).replace("\r\n", "\n").replace("\r", "\n")
    text = _SETEXT.sub("", _HEADING.sub("", text)).strip()
    if len(text) > limit:
        text = text[:limit].rstrip() + " …truncated"
    text = redact_text(text)
    text = _mark_claims(text, set(done_tools))
    return _mark_run_ids(text, run_exists)


def quote_line(text: str, limit: int = MAX_LINE_CHARS) -> str:
    """Return ``text`` as one redacted line without headings, capped at ``limit`` characters."""
    line = " ".join(_HEADING.sub("", strip_invisible(text)).split())
    line = line.replace("`", "'")
    if len(line) > limit:
        line = line[:limit].rstrip() + " …truncated"
    return redact_text(line)


def _mark_claims(text: str, done: set[str]) -> str:
    # "I registered …", "the model has been promoted …", or a sentence opening with the verb
    # ("Registered model prod-model …", "- Deployed run X"): the subject left out is the speaker.
    said = rf"(?:{_FIRST_PERSON}|{_PASSIVE})(?:\w+\s+){{0,2}}?"
    opening = r"^[\s*_>-]*(?:successfully\s+|also\s+|then\s+|just\s+)?"
    never = re.compile(rf"(?:{said}|{opening})(?:{_NEVER})", re.IGNORECASE)
    undone = [pattern for tool, pattern in _STATE_CHANGE.items() if tool not in done]
    first = rf"{_FIRST_PERSON}(?:\w+\s+){{0,2}}?"
    claimed = re.compile(rf"(?:{first}|{opening})(?:{'|'.join(undone)})\b", re.IGNORECASE)

    def mark(match: re.Match[str]) -> str:
        sentence = match.group(0)
        if never.search(sentence) or (undone and claimed.search(sentence)):
            stripped = sentence.rstrip()
            return stripped + _NOT_DONE + sentence[len(stripped) :]
        return sentence

    return _SENTENCE.sub(mark, text)


def _mark_run_ids(text: str, run_exists: Callable[[str], bool]) -> str:
    verdicts: dict[str, bool | None] = {}

    def check(run_id: str) -> bool | None:
        key = run_id.lower()
        if key not in verdicts:
            if len(verdicts) >= MAX_ID_LOOKUPS:
                return None
            try:
                verdicts[key] = bool(run_exists(key))
            except Exception:  # noqa: BLE001 - an unreadable run is not a verified run
                verdicts[key] = False
        return verdicts[key]

    def mark(match: re.Match[str]) -> str:
        found = check(match.group(1))
        if found:
            return match.group(0)
        suffix = " (not checked)" if found is None else " (not found in MLflow)"
        return match.group(0) + suffix  # after a closing backtick, so the mark is read as prose

    return _RUN_ID.sub(mark, text)
