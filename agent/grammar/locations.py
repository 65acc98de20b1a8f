"""Paths and URIs in a message: found first, stripped of credentials, then judged as training data.

The request rules ``take_uris`` and ``take_paths`` only record locations; ``place_locations`` runs
once the intent is known and keeps as ``dataset_uri`` only the location the user wants to train on.
"""

from __future__ import annotations

import re

from agent.grammar.scanner import Findings, Scanner, strip_trailing_punct
from agent.grammar.vocabulary import EXPERIMENT_VERBS, FLAGS

_URI = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", FLAGS)
_PATHS = (
    re.compile(r"(?<![\w@])(?:~|\.{1,2})?/[\w.~/-]+", FLAGS),
    re.compile(r"\b[\w./-]+\.(?:csv|parquet|json|jsonl|tsv|feather|arrow|xlsx?|txt|orc|avro|pq)\b", FLAGS),
)
# A location mentioned in passing: where things are stored or written, docs, a tracking server, a DB.
_IN_PASSING = re.compile(
    r"\b(?:db|database|server|hosts?|hosted|tracking|backend|store|stored|registry|mlflow|connection|endpoint"
    r"|password|credentials?|creds|dashboard|ui|outputs?|results?|artifacts?|logs?|reports?|docs?|wiki"
    r"|documentation|ticket|writ(?:e|es|ing|ten)|wrote|sav(?:e|es|ed|ing)|upload\w*|send\w*|sent|email\w*"
    r"|notify|link|dump(?:s|ed)?\s+(?:to|into)|export(?:s|ed)?\s+(?:to|into))\b",
    FLAGS,
)
_DATA_SLOT = re.compile(
    r"\b(?:on|from|using|use|with|in|at|of|read|load|ingest|data|dataset|file|table|path|csv|parquet)\b",
    FLAGS,
)
_CONNECTION_SCHEME = re.compile(
    r"^(?:postgres\w*|mysql\w*|mariadb|mssql|sqlserver|oracle|sqlite|mongodb\w*|redis\w*|jdbc:\w+|amqps?"
    r"|kafka)://|^[^/\s]+://[^/@\s]*@",
    FLAGS,
)
_CREDENTIALS = re.compile(r"^([a-z][a-z0-9+.-]*://)(?:[^/@\s]*@|[^@\s]*:[^@\s]*@)", FLAGS)
_CLAUSE_BOUNDARY = re.compile(r"[.;!?,\n]\s|\s[—–-]+\s")
_CLAUSE_JOIN = re.compile(r"\b(?:and|then|but|so|also|plus|while)\b", FLAGS)
_IGNORED_NOTE = "ignored a link or path that is not the training data (not repeated)"


def take_uris(sc: Scanner, p: Findings) -> None:
    """Record every URI (runs before ``take_sensitive``, so credentials are not taken for an email)."""
    for match in sc.find(_URI):
        _add_location(sc, p, match)


def take_paths(sc: Scanner, p: Findings) -> None:
    """Record every file path and file name with a data extension."""
    for pattern in _PATHS:
        for match in sc.find(pattern):
            _add_location(sc, p, match)


def _add_location(sc: Scanner, p: Findings, match: re.Match[str]) -> None:
    text = strip_trailing_punct(sc.take(match))
    shown = without_credentials(text)
    p.locations.append((match.start(), match.start() + len(text), shown))
    if shown != text:
        p.redactions.append((match.start(), match.start() + len(text), shown))


def without_credentials(location: str) -> str:
    """Return a path or URI without its user:password part, query string and fragment."""
    bare = _CREDENTIALS.sub(r"\1", location)
    return re.split(r"[?#]", bare, maxsplit=1)[0]


def place_locations(sc: Scanner, p: Findings, training: bool) -> None:
    """Record the path/URI the user wants to train on as ``dataset_uri``; note the others as ignored.

    A location is training data only in a message that asks to train (or supplies request fields),
    in a clause that names data ("on", "from", "using", "dataset", a training verb) and does not say
    it is something else (a tracking DB, where results are saved, a docs link). A connection string
    or a URI with credentials counts only in a clause with a training verb.
    """
    if not training:
        return
    for start, end, location in p.locations:
        if _is_training_data(sc.text, start, end):
            p.set("dataset_uri", location)
            continue
        p.note_once(_IGNORED_NOTE)
        _consume_passing_phrase(sc, start)


def _consume_passing_phrase(sc: Scanner, start: int) -> None:
    # "our tracking db is <uri>", "and save the results to <uri>": the note explains the phrase.
    clause_start = _clause_start(sc.text, start)
    joins = list(_CLAUSE_JOIN.finditer(sc.text[clause_start:start]))
    begin = clause_start + joins[-1].start() if joins else clause_start
    if not EXPERIMENT_VERBS.search(sc.text[begin:start]):
        sc.consume(begin, start)


def _clause_start(text: str, position: int) -> int:
    """Return where the clause holding ``position`` starts (after the last , ; . ! ? or dash)."""
    boundaries = list(_CLAUSE_BOUNDARY.finditer(text[:position]))
    return boundaries[-1].end() if boundaries else 0


def _is_training_data(text: str, start: int, end: int) -> bool:
    clause = text[_clause_start(text, start) : start]
    verb = EXPERIMENT_VERBS.search(clause) is not None
    if _CONNECTION_SCHEME.match(text[start:end]) and not verb:
        return False
    if not clause.strip():  # the message opens with the location: judge it by the rest of the message
        return _IN_PASSING.search(text[end:]) is None
    return _IN_PASSING.search(clause) is None and (verb or _DATA_SLOT.search(clause) is not None)
