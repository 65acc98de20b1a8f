"""Misspelled cue words ("giv it 3 more trails", "rerun w/ sed 7", "retrian", "basline").

Only words nothing else understood are candidates, and they are matched only against the grammar's
own cue vocabulary below, never against dataset, experiment or parameter names (those are the
user's names: a misspelled one stays misspelled and is reported). A word one edit away (insert,
delete, substitute or swap two neighbours; two edits for words of eight letters or more) from
exactly one cue word is read as that word; a word as close to two cue words is ambiguous and is
reported with both, so the agent asks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Cue words, each with what must follow it for the reading to make sense (None = anything).
_NUMBER_NEXT = r"\s*(?:\d|of\b|=|to\b|is\b)"
CUE_WORDS: dict[str, str | None] = {
    "give": None, "more": None, "trials": None, "trial": None, "seed": _NUMBER_NEXT, "rerun": None,
    "retrain": None, "again": None, "same": None, "instead": None, "baseline": None, "train": None,
    "tune": None, "tuning": None, "optimize": None, "optimise": None, "optimizing": None,
    "optimising": None, "maximize": None, "minimize": None, "sweep": None, "another": None,
    "additional": None, "experiment": None, "version": None, "dataset": None, "random": None,
    "forest": None, "logistic": None, "regression": None, "accuracy": None, "switch": None,
    "please": None, "lightgbm": None, "double": None, "halve": None, "deeper": None,
    "shallower": None, "learning": None, "rate": None, "trees": None, "xgboost": None,
    "gradient": None, "boosting": None, "histogram": None, "logloss": None,
}  # fmt: skip
_WORD = re.compile(r"(?<![\w@./=-])[A-Za-z]{3,}(?![\w@/=-])")


@dataclass(frozen=True)
class CueReading:
    """The message with misspelled cue words replaced, and what was read or left ambiguous."""

    text: str
    fixes: list[tuple[str, str]] = field(default_factory=list)
    ambiguous: list[tuple[str, list[str]]] = field(default_factory=list)

    def describe(self) -> list[str]:
        """Return one line per corrected word ("read 'trails' as 'trials'")."""
        return [f"read '{typo}' as '{word}'" for typo, word in self.fixes]


def read_cue_typos(text: str, suspects: set[str]) -> CueReading:
    """Return ``text`` with the misspelled cue words among ``suspects`` (lower-case words) corrected."""
    fixes: list[tuple[str, str]] = []
    ambiguous: list[tuple[str, list[str]]] = []
    parts: list[str] = []
    done = 0
    for match in _WORD.finditer(text):
        word = match.group(0)
        if word.lower() not in suspects or word.lower() in CUE_WORDS:
            continue
        candidates = _candidates(word.lower(), text[match.end() :])
        if len(candidates) == 1:
            fixes.append((word, candidates[0]))
            parts += [text[done : match.start()], candidates[0]]
            done = match.end()
        elif candidates:
            ambiguous.append((word, candidates))
    return CueReading("".join(parts) + text[done:], fixes, ambiguous)


def _candidates(word: str, rest: str) -> list[str]:
    limit = 2 if len(word) >= 8 else 1
    scored = [
        (edits(word, cue, limit), cue) for cue, nxt in CUE_WORDS.items() if nxt is None or re.match(nxt, rest)
    ]
    best = min((d for d, _ in scored), default=limit + 1)
    if best > limit:
        return []
    return sorted(cue for d, cue in scored if d == best)


def edits(a: str, b: str, limit: int) -> int:
    """Return the optimal-string-alignment distance of ``a`` and ``b`` (``limit + 1`` when above it)."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        row = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            row[j] = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                row[j] = min(row[j], previous2[j - 2] + 1)
        previous2, previous = previous, row
    return min(previous[-1], limit + 1)
