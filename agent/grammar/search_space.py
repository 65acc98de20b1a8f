"""Search-space edits in plain words, read by ``fields.take_search_space``.

| You write | Override |
|---|---|
| `search learning_rate in [0.01, 0.1]`, `lr over (0.01, 0.1)` | `{low: 0.01, high: 0.1}` (keeps the scale) |
| `num_leaves between 16 and 64`, `num leaves from 16 to 64`, `num_leaves 16-64` | `{low: 16, high: 64}` |
| `learning rate 1e-3..1e-1 log`, `lr 0.001 to 0.1 (log scale)` | `{low: 0.001, high: 0.1, log: true}` |
| `n_estimators in [100, 200, 400]`, `max_depth in {3, 5, 8}`, `max_depth one of 3, 5 or 8` | `{choices}` |

Names may be written with spaces ("learning rate", "num leaves", "max depth") or as common short
names (lr, eta, leaves, trees, depth). Whether a value fits the parameter is checked when the plan is
built (``tools.tuning.space``), with an error that names the valid forms. A range the grammar cannot
read ("learning_rate in [0.1]") is reported, with the valid forms, instead of being guessed.
"""

from __future__ import annotations

import re
from typing import Any

from agent.grammar.scanner import Findings, Scanner
from agent.grammar.vocabulary import NUMBER, parse_number, parse_value

_ALIASES = {
    "lr": "learning_rate", "eta": "learning_rate", "learning_rate": "learning_rate",
    "leaves": "num_leaves", "number_of_leaves": "num_leaves",
    "trees": "n_estimators", "estimators": "n_estimators", "number_of_trees": "n_estimators",
    "number_of_estimators": "n_estimators", "n_trees": "n_estimators", "num_trees": "n_estimators",
    "depth": "max_depth", "tree_depth": "max_depth",
}  # fmt: skip
_LEAD = r"(?:(?:search|tune|tuning|vary|explore|sweep|try)(?:\s+(?:over|across|on))?\s+(?:the\s+)?)?"
_KEY = rf"\b{_LEAD}(?P<key>(?:(?:learning|max|num|n|min|number\s+of|tree)\s+)?[a-z_][a-z0-9_]*)"
_VALUE = rf"(?:-?(?:\d+(?:\.\d+)?|\.\d+)(?:e[-+]?\d+)?|{NUMBER})"
_LOG = r"(?P<log>\s*,?\s*\(?\s*(?:on\s+a\s+|in\s+)?log(?:[\s-]?(?:scale|uniform|space|scaled))?\s*\)?)?"
_BETWEEN = r"\s*(?:\.\.\.?|…|\bto\b|-)\s*"
_RANGES = (
    rf"{_KEY}\s*(?:in|over|within|from|between|:|=)?\s*[\[(]\s*(?P<a>{_VALUE})\s*,\s*(?P<b>{_VALUE})\s*[\])]{_LOG}",
    rf"{_KEY}\s+(?:between|from)\s+(?P<a>{_VALUE})\s+(?:and|to|-)\s+(?P<b>{_VALUE})\b{_LOG}",
    rf"{_KEY}\s*(?:in|over|from|:|=)?\s*(?P<a>{_VALUE}){_BETWEEN}(?P<b>{_VALUE})\b{_LOG}",
)
_ITEMS = rf"(?P<choices>{_VALUE}|[a-z_]\w*)(?:\s*,\s*(?:{_VALUE}|[a-z_]\w*))"
_CHOICES = (
    rf"{_KEY}\s*(?:in|among|from|one\s+of|:|=)?\s*[\[(]\s*{_ITEMS}{{2,}}\s*[\])]",
    rf"{_KEY}\s*(?:in|among|from|one\s+of|:|=)?\s*\{{(?P<set>[^}}]*)\}}",
    rf"{_KEY}\s+(?:one\s+of|among)\s+(?P<list>{_VALUE}(?:\s*(?:,|,?\s*or|,?\s*and)\s*{_VALUE})+)\b",
)
#: a range or list the rules above did not read: reported, never guessed.
_UNREAD = rf"{_KEY}\s+(?:in|over|between|within)\s*[\[({{][^\])}}]*[\])}}]"
VALID_FORMS = (
    "write a range as `learning_rate in [0.01, 0.1]`, `num_leaves between 16 and 64` or "
    "`learning rate 1e-3..1e-1 log`, and choices as `n_estimators in [100, 200, 400]`"
)


def param_name(words: str, as_written: bool = False) -> str:
    """Return the parameter a name written in words means ("learning rate" -> learning_rate).

    ``as_written``: the request names the user's own project, whose MLproject params are the names (no
    built-in family's aliases: "lr" stays "lr").
    """
    key = re.sub(r"\s+", "_", words.strip().lower())
    return key if as_written else _ALIASES.get(key, key)


def number(text: str) -> Any:
    """Return a number written as digits, scientific notation or words; else the text."""
    value = parse_value(text.strip())
    return parse_number(value) if isinstance(value, str) and re.fullmatch(NUMBER, value, re.I) else value


def read_search_space(sc: Scanner, p: Findings) -> None:
    """Consume search-space edits; record them in ``p.draft['search_space']``, report unreadable ones."""
    space = p.draft["search_space"]
    own = p.draft.get("entry_point") is not None
    for pattern in _CHOICES:
        for match in sc.find(pattern):
            sc.consume(match.start("key"), match.end())  # a lead verb ("sweep over") stays a verb
            text = match.group(0)[match.end("key") - match.start() :]
            items = re.findall(rf"{_VALUE}|[a-z_]\w*", re.sub(r"^\W*(?:in|among|from|one\s+of)\b", "", text))
            choices = [number(i) for i in items if i.lower() not in ("or", "and")]
            space[param_name(match["key"], own)] = {"choices": choices}
    for i, pattern in enumerate(_RANGES):
        for match in sc.find(pattern):
            if i == len(_RANGES) - 1 and "_" not in param_name(match["key"]):
                continue  # "a..b" after a plain word ("on 2024-01") is not a parameter's range
            sc.consume(match.start("key"), match.end())
            low, high = sorted((number(match["a"]), number(match["b"])))
            spec: dict[str, Any] = {"low": low, "high": high}
            if match["log"]:
                spec["log"] = True
            space[param_name(match["key"], own)] = spec
    for match in sc.find(_UNREAD):
        sc.consume(match.start("key"), match.end())
        p.notes.append(f"`{match.group(0).strip()}` is not a search range I can read; {VALID_FORMS}")
