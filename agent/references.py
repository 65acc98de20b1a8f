"""Run references in a thread: which runs "it", "that run", "the best one", "the last two", "both" or
"8788935a" name.

``resolve_runs(text, thread, lookup)`` reads a message and returns the runs it names, newest last, from
what the thread remembers (its runs, oldest first; its baseline; its best run). A short run ID is
matched first against the thread's own runs, then handed to ``lookup`` (normally
``tools.core.run_refs.resolve_run_id`` bound to a client), which raises ``LookupError`` listing the
candidates when a prefix is ambiguous. A reference the thread cannot satisfy is a ``ReferenceProblem``
with a one-line message for the user — never a guess.

The question intake and the follow-up intake both call this, so "it" means the same run to both.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from tools.core.run_refs import MIN_PREFIX

_FLAGS = re.IGNORECASE
_WORD_NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8}
_NUMBER = r"(?:\d{1,2}|one|two|three|four|five|six|seven|eight|couple(?:\s+of)?)"
#: a run ID or a unique prefix of one as typed: hex with a digit ("deface", "accede" are English).
RUN_ID = rf"(?=[0-9a-f]*\d)[0-9a-f]{{{MIN_PREFIX},32}}"
_HEX = re.compile(rf"(?<![0-9a-z])({RUN_ID})(?![0-9a-z])", _FLAGS)
_LAST_N = re.compile(
    rf"\b(?:the\s+)?(?:last|latest|previous|recent|most\s+recent)\s+(?P<n>{_NUMBER})"
    r"(?:\s+(?:runs?|ones?|models?|trials?))?\b",
    _FLAGS,
)
_BEST = re.compile(r"\b(?:the\s+)?(?:best|winning|top)\s+(?:one|run|model|trial)\b|\bthe\s+winner\b", _FLAGS)
_BASELINE = re.compile(r"\b(?:the|that|my|our)\s+baseline(?:\s+(?:run|model))?\b", _FLAGS)
_LAST_ONE = re.compile(
    r"\b(?:the\s+)?(?:last|latest|previous|most\s+recent)\s+(?:one|run|model|trial)\b", _FLAGS
)
_FIRST = re.compile(r"\b(?:the\s+)?first\s+(?:one|run|model|trial)\b", _FLAGS)
_BEFORE = re.compile(r"\bthe\s+one\s+before(?:\s+(?:that|it|this))?\b", _FLAGS)
# "them", "both", "those two": the last two runs the thread made.
_PAIR = re.compile(
    r"\b(?:both(?:\s+(?:of\s+them|runs|models))?|(?:those|these|the)\s+two(?:\s+(?:runs|models|ones))?|them)\b",
    _FLAGS,
)
_IT = re.compile(r"\b(?:it|that\s+(?:one|run|model)|this\s+(?:one|run)|the\s+run)\b", _FLAGS)


class ThreadRuns(Protocol):
    """What a thread remembers about its runs (``agent.state.ThreadMemory`` has these fields)."""

    run_ids: list[str]
    baseline_run_id: str | None
    best_run_id: str | None


@dataclass(frozen=True)
class RunReference:
    """The runs a message names and the phrase that named them ("the last two", "it", "8788935a")."""

    run_ids: list[str]
    phrase: str
    kinds: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ReferenceProblem:
    """A reference the thread cannot satisfy; ``message`` is shown to the user as is."""

    message: str
    phrase: str
    #: what kind of reference it was ("run_id", "best", "last_n", "it", ...; see ``_WORDS``).
    kind: str = "run_id"


Lookup = Callable[[str], str]


def resolve_runs(
    text: str, thread: ThreadRuns | None, lookup: Lookup | None = None
) -> RunReference | ReferenceProblem | None:
    """Return the runs ``text`` names, a problem with the reference, or None when it names no run.

    Args:
        text: the user's message.
        thread: what the thread remembers (None for a fresh thread).
        lookup: resolves a short run ID outside the thread (raises ``LookupError``); None = thread only.
    """
    runs = list(thread.run_ids) if thread is not None else []
    by_id = _short_ids(text, runs, lookup)
    if by_id is not None:
        return by_id
    found: list[tuple[int, int, str, list[str]]] = []
    for kind, pattern, pick in _WORDS:
        for match in pattern.finditer(text):
            if any(match.start() < end and start < match.end() for start, end, _, _ in found):
                continue  # "the last one" already took these words; "one" is not a second reference
            phrase = match.group(0).strip()
            chosen = pick(match, thread, runs)
            if isinstance(chosen, str):
                return ReferenceProblem(chosen, phrase, kind)
            found.append((match.start(), match.end(), kind, chosen))
    if found:
        found.sort()
        named = list(dict.fromkeys(run for *_, chosen in found for run in chosen))
        phrase = " + ".join(text[start:end].strip() for start, end, _, _ in found)
        return RunReference(named, phrase, [kind for _, _, kind, _ in found])
    return None


def _short_ids(
    text: str, runs: Sequence[str], lookup: Lookup | None
) -> RunReference | ReferenceProblem | None:
    tokens = [m.group(1).lower() for m in _HEX.finditer(text)]
    if not tokens:
        return None
    resolved: list[str] = []
    for token in tokens:
        found = _one_id(token, runs, lookup)
        if isinstance(found, ReferenceProblem):
            return found
        resolved.append(found)
    return RunReference(list(dict.fromkeys(resolved)), " ".join(tokens), ["run_id"] * len(tokens))


def _one_id(token: str, runs: Sequence[str], lookup: Lookup | None) -> str | ReferenceProblem:
    mine = [r for r in runs if r.startswith(token)]
    if len(mine) == 1:
        return mine[0]
    if len(mine) > 1:
        return ReferenceProblem(
            f"run ID prefix {token!r} matches {len(mine)} runs of this thread: {', '.join(mine)}; "
            "give more characters",
            token,
        )
    if lookup is None:
        return ReferenceProblem(f"no run of this thread starts with {token!r}", token)
    try:
        return lookup(token)
    except LookupError as exc:
        return ReferenceProblem(str(exc).strip("'\""), token)


def _count(word: str) -> int:
    word = word.lower().split()[0]
    if word.isdigit():
        return int(word)
    return 2 if word == "couple" else _WORD_NUMBERS[word]


def _last_n(match: re.Match[str], thread: ThreadRuns | None, runs: list[str]) -> list[str] | str:
    n = _count(match.group("n"))
    if n < 1:
        return "ask for at least one run"
    if len(runs) < n:
        have = f"only {len(runs)} run{'s' if len(runs) != 1 else ''}" if runs else "no runs yet"
        return f"{match.group(0).strip()!r}: this thread has {have}"
    return runs[-n:]


def _pair(match: re.Match[str], thread: ThreadRuns | None, runs: list[str]) -> list[str] | str:
    if len(runs) < 2:
        have = f"only {len(runs)} run" if runs else "no runs yet"
        return f"{match.group(0).strip()!r} needs two runs: this thread has {have}; name the run IDs"
    return runs[-2:]


def _best(match: re.Match[str], thread: ThreadRuns | None, runs: list[str]) -> list[str] | str:
    if thread is None or not thread.best_run_id:
        return f"{match.group(0).strip()!r}: this thread has no best run yet; name a run ID or an experiment"
    return [thread.best_run_id]


def _baseline(match: re.Match[str], thread: ThreadRuns | None, runs: list[str]) -> list[str] | str:
    if thread is None or not thread.baseline_run_id:
        return f"{match.group(0).strip()!r}: this thread has trained no baseline yet; name a run ID"
    return [thread.baseline_run_id]


def _latest(match: re.Match[str], thread: ThreadRuns | None, runs: list[str]) -> list[str] | str:
    if not runs:
        return f"{match.group(0).strip()!r}: this thread has not run anything yet; name a run ID"
    return runs[-1:]


def _first(match: re.Match[str], thread: ThreadRuns | None, runs: list[str]) -> list[str] | str:
    if not runs:
        return f"{match.group(0).strip()!r}: this thread has not run anything yet; name a run ID"
    return runs[:1]


def _before(match: re.Match[str], thread: ThreadRuns | None, runs: list[str]) -> list[str] | str:
    if len(runs) < 2:
        return f"{match.group(0).strip()!r}: this thread has fewer than two runs; name a run ID"
    return runs[-2:-1]


_Pick = Callable[[re.Match[str], ThreadRuns | None, list[str]], list[str] | str]
#: most specific first: "the last two" before "the last one", "the best one" before "it".
_WORDS: list[tuple[str, re.Pattern[str], _Pick]] = [
    ("last_n", _LAST_N, _last_n),
    ("best", _BEST, _best),
    ("baseline", _BASELINE, _baseline),
    ("before", _BEFORE, _before),
    ("first", _FIRST, _first),
    ("latest", _LAST_ONE, _latest),
    ("pair", _PAIR, _pair),
    ("it", _IT, _latest),
]
#: kinds of reference that name one run other than the thread's last ("the best one", "8788935a").
NAMED_KINDS = frozenset({"best", "first", "before", "baseline", "run_id"})
#: kinds of reference that name the thread's last run by a phrase ("the last one", "the previous run").
LATEST_KINDS = frozenset({"latest"})


def phrases_of(kinds: frozenset[str]) -> str:
    """Return a regex source matching the phrases that make references of ``kinds`` (case-insensitive).

    The follow-up grammar removes these phrases from a follow-up's text, so the words it strips are the
    words ``resolve_runs`` resolves: one vocabulary. A run ID is written with an optional "run" before it
    and optional backticks around it.
    """
    sources = [pattern.pattern for kind, pattern, _ in _WORDS if kind in kinds]
    if "run_id" in kinds:
        sources.append(rf"(?:run\s+)?`?{RUN_ID}`?")
    return "|".join(f"(?:{source})" for source in sources)
