"""Request rule for the user's own training code: a registered project (an MLflow Project entry point).

"train my project churn-model@3 entry point main", "use my project mlp-tabular@1", "run entry point main
of xgboost-tabular@1", "my repo churn-model@3 (entry train)". The reference is kept exactly as written:
"my project churn-model" (no version) or "churn-model@latest" reach the intake node, which answers that
an explicit registered version is needed; nothing here guesses a version or an entry point's params.
"""

from __future__ import annotations

import re

from agent.grammar.scanner import Findings, Scanner, strip_trailing_punct
from agent.grammar.vocabulary import FLAGS, PROJECT_NAME, RESERVED

_REF = rf"['\"`]?(?P<name>{PROJECT_NAME})(?:@(?P<ver>[\w.-]+)|\s+(?:version|v)\s*(?P<ver2>\d+)\b)?['\"`]?"
_ENTRY = rf"(?P<entry>{PROJECT_NAME})"
_LEAD = r"(?:(?:my|our|the|a)\s+)?(?:own\s+)?(?:training\s+)?(?:project|repo(?:sitory)?|mlflow\s+project)"
_PROJECTS = tuple(
    re.compile(pattern, FLAGS)
    for pattern in (
        # "entry point main of (my project) xgboost-tabular@1"
        rf"\b(?:the\s+)?entry[\s-]?point\s+{_ENTRY}\s+(?:of|in|from)\s+(?:{_LEAD}\s+)?{_REF}",
        # "my project churn-model@3", "project churn-model"
        rf"\b{_LEAD}\s+{_REF}",
        # "entry point xgboost-tabular@1" (a version makes it a project, not an entry name)
        rf"\b(?:the\s+)?entry[\s-]?point\s+['\"`]?(?P<name>{PROJECT_NAME})@(?P<ver>[\w.-]+)['\"`]?",
    )
)
# The entry point inside the project, said after it: "entry point main", "(entry train)", "main entry point".
_ENTRY_PHRASES = tuple(
    re.compile(pattern, FLAGS)
    for pattern in (
        rf"\b(?:(?:with|using|at|via)\s+)?(?:the\s+|its\s+)?entry[\s-]?point\s*[=:]?\s*['\"`]?{_ENTRY}['\"`]?",
        rf"\(\s*entry\s*[=:]?\s*{_ENTRY}\s*\)",
        rf"\bentry\s*=\s*{_ENTRY}",
        rf"\b(?:the\s+|its\s+)?{_ENTRY}\s+entry[\s-]?point\b",
    )
)

_NOT_AN_ENTRY = frozenset("a an the its my our of on in with for to from and or".split())


def take_project(sc: Scanner, p: Findings) -> None:
    """Read the registered project to train ("my project churn-model@3 entry point main")."""
    for pattern in _PROJECTS:
        for match in sc.find(pattern):
            if match["name"].lower() in RESERVED:
                continue  # "my project on wine@1": no name given; "project" is left not understood
            sc.take(match)
            version = match["ver"] or (match.groupdict().get("ver2"))
            ref = match["name"] + (f"@{strip_trailing_punct(version)}" if version else "")
            entry = match.groupdict().get("entry") or _take_entry(sc) or "main"
            _set_project(p, ref, entry)
            return


def _take_entry(sc: Scanner) -> str | None:
    for pattern in _ENTRY_PHRASES:
        for match in sc.find(pattern):
            if match["entry"].lower() not in _NOT_AN_ENTRY:  # "train" and "main" are entry names
                sc.take(match)
                return strip_trailing_punct(match["entry"])
    return None


def _set_project(p: Findings, ref: str, entry: str) -> None:
    p.set("entry_point", {"ref": ref, "entry": entry})
