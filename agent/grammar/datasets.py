"""Request rules for the dataset and its version ("breast_cancer@1", "v2 of wine", "version 1")."""

from __future__ import annotations

import re

from agent.grammar.scanner import Findings, Scanner, strip_trailing_punct
from agent.grammar.vocabulary import (
    ANY_FAMILY,
    FLAGS,
    IDENT,
    KNOWN_DATASETS,
    UNSUPPORTED_FAMILIES,
    WORD_NUMBERS,
    may_be_name,
    parse_number,
)

_AT_VERSION = re.compile(rf"(?:\bdataset\s+)?(?P<name>{IDENT})@(?P<ver>v?\d[\w.-]*|latest|newest)\b", FLAGS)
_VERSION_AFTER_NAME = r"(?P<ver>\d[\w.]*|v\d+|one|two|three|latest|newest)"
_NAMED_VERSIONS = tuple(
    re.compile(pattern, FLAGS)
    for pattern in (
        rf"\b(?:the\s+)?(?:v|version\s+)(?P<ver>\d[\w.]*)\s+of\s+(?:the\s+)?(?:dataset\s+)?(?P<name>{IDENT})(?:\s+dataset)?",
        rf"\b(?:the\s+)?(?P<ver>latest|newest|current|most\s+recent)\s+(?:version\s+of\s+)?(?:the\s+)?(?:dataset\s+)?(?P<name>{IDENT})(?:\s+dataset)?",
        rf"\b(?:dataset\s+)?(?P<name>{IDENT})(?:\s+(?:dataset|data))?\s*,?\s*\(?\s*(?:version|ver\.?|v)\s*[:=#]?\s*{_VERSION_AFTER_NAME}\s*\)?",
        rf"\b(?:dataset\s+)?(?P<name>{IDENT})(?:\s+(?:dataset|data))?\s*,?\s*\(?\s*(?P<ver>latest|newest)(?:\s+version)?\s*\)?",
    )
)
_NAMES_ONLY = tuple(
    re.compile(pattern, FLAGS)
    for pattern in (
        rf"\b(?:on|dataset|using|from)\s+(?:the\s+)?(?:dataset\s+)?(?P<name>{IDENT})(?:\s+(?:dataset|data))?\b",
        rf"\b(?:the\s+)?(?P<name>{IDENT})\s+(?:dataset|data)\b",
        rf"\b(?P<name>{'|'.join(KNOWN_DATASETS)})\b",
    )
)
_LATEST = re.compile(r"\b(?:the\s+)?(?:latest|newest|most\s+recent)(?:\s+version)?\b", FLAGS)
_BARE_VERSION_NUMBER = r"(?P<ver>v?\d[\w.]*|one|two|three|four|five|six|seven|eight|nine|ten)\b"
_BARE_VERSIONS = tuple(
    re.compile(pattern, FLAGS)
    for pattern in (
        rf"(?<![\w.-])(?:(?:the\s+)?(?:dataset|data)(?:'s)?\s+)?(?:dataset_)?(?:version|ver\.?)"
        rf"\s*(?:[:=#]|is|should\s+be|number|no\.?)?\s*{_BARE_VERSION_NUMBER}",
        r"(?<![\w.@/-])v\s?(?P<ver>\d[\w.]*)",
        r"(?<![\w.@/-])@\s?(?P<ver>v?\d[\w.-]*)",
    )
)
# Text just before "version N" that makes it the version of something other than the dataset.
_OTHER_VERSION = re.compile(
    rf"\b(?:models?|python|package|library|lib|api|schema|code|git|sklearn|scikit-learn|mlflow|image|docker"
    rf"|{ANY_FAMILY}|{UNSUPPORTED_FAMILIES})(?:'s)?\s*$",
    FLAGS,
)


def take_dataset_at_version(sc: Scanner, p: Findings) -> None:
    """Read ``name@version`` references ("breast_cancer@1", "wine@latest")."""
    for match in sc.find(_AT_VERSION):
        sc.take(match)
        _set_dataset(p, match["name"], strip_trailing_punct(match["ver"]))


def take_dataset_words(sc: Scanner, p: Findings) -> None:
    """Read datasets named in words ("v1 of wine", "wine version 2", "the latest iris"), then bare names."""
    for pattern in _NAMED_VERSIONS:
        for match in sc.find(pattern):
            if not may_be_name(match["name"]):
                continue
            sc.take(match)
            _set_dataset(p, match["name"], match["ver"].lower().replace("most recent", "latest"))
    _take_dataset_name(sc, p)


def _take_dataset_name(sc: Scanner, p: Findings) -> None:
    for pattern in _NAMES_ONLY:
        for match in sc.find(pattern):
            name = match["name"]
            if not may_be_name(name) or p.draft.get("dataset"):
                continue
            sc.take(match)
            _set_dataset(p, name, None)
    if sc.first(_LATEST):
        p.latest = True


def take_bare_version(sc: Scanner, p: Findings) -> None:
    """Read a version with no dataset name in front ("version 1", "v 2", "@3", "version=1")."""
    # The version of the dataset this message names, or (merged by ``agent.offline``) of the one the
    # conversation still lacks a version for. A version never moves to a different dataset
    # (``agent.request.merge_drafts``).
    for pattern in _BARE_VERSIONS:
        for match in sc.find(pattern):
            if _OTHER_VERSION.search(sc.text[: match.start()]):
                continue  # "model version 3", "python version 3.11": not a dataset version
            sc.take(match)
            p.set("version", _plain_version(strip_trailing_punct(match["ver"].lower())))


def _set_dataset(p: Findings, name: str, version: str | None) -> None:
    p.set("dataset", name)
    if version is None or version.lower() in ("latest", "newest", "current"):
        p.latest = p.latest or version is not None
        return
    p.set("version", _plain_version(version))


def _plain_version(version: str) -> str:
    """Return a version as registered: number words as digits, "v2" as "2"."""
    if version in WORD_NUMBERS:
        version = str(int(parse_number(version)))
    return version[1:] if version[:1] in "vV" and version[1:].isdigit() else version
