"""Redaction of secrets and personal data from any text or JSON-able value before it is written or shown.

Patterns are data (``PATTERNS``), applied in order; each match becomes ``[REDACTED:<kind>]`` (a password
inside a URI becomes ``***`` so the URI stays readable). They are written so that run IDs (32 hex),
sha256 hashes, floats, timestamps, dataset refs like ``breast_cancer@1`` and file paths pass unchanged.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel


def placeholder(kind: str) -> str:
    """Return the text that replaces a redacted value of ``kind``."""
    return f"[REDACTED:{kind}]"


def luhn_valid(digits: str) -> bool:
    """Return whether a digit string passes the Luhn checksum (as every payment card number does)."""
    total = 0
    for i, char in enumerate(reversed(digits)):
        value = int(char) * (2 if i % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return placeholder("card_number") if 13 <= len(digits) <= 19 and luhn_valid(digits) else match.group(0)


@dataclass(frozen=True)
class Pattern:
    """One redaction rule: what it finds and what it puts instead."""

    kind: str
    regex: re.Pattern[str]
    replace: str | Callable[[re.Match[str]], str]


_SECRET_KEY = (
    r"[A-Za-z0-9_.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key)"
)
# A value boundary: not preceded/followed by a word character or a dot (keeps floats and hex IDs whole).
_L, _R = r"(?<![\w.])", r"(?![\w]|\.\d)"

PATTERNS: tuple[Pattern, ...] = (
    Pattern(
        "private_key",
        re.compile(
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)", re.S
        ),
        placeholder("private_key"),
    ),
    # scheme://user:password@host -> scheme://user:***@host
    Pattern("uri_password", re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]+):[^\s@/]+@"), r"\1:***@"),
    Pattern(
        "api_key", re.compile(r"\bsk-(?:proj-|ant-|live-|test-)?[A-Za-z0-9_-]{20,}"), placeholder("api_key")
    ),
    Pattern("slack_token", re.compile(r"\bxox[abposre]-[A-Za-z0-9-]{10,}"), placeholder("slack_token")),
    Pattern("aws_access_key", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), placeholder("aws_access_key")),
    Pattern(
        "github_token",
        re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})"),
        placeholder("github_token"),
    ),
    Pattern(
        "jwt",
        re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
        placeholder("token"),
    ),
    Pattern("bearer", re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/-]{8,}=*"), r"\1 " + placeholder("token")),
    # password=..., "api_key": "...", AWS_SECRET_ACCESS_KEY=... (the key is kept, the value goes)
    Pattern(
        "secret",
        re.compile(rf"(?i)\b({_SECRET_KEY})([\"']?\s*[=:]\s*[\"']?)(?!\[REDACTED)(?!\*\*\*)([^\s\"',;&}}]+)"),
        r"\1\2" + placeholder("secret"),
    ),
    Pattern(
        "email",
        re.compile(
            r"(?<![\w.%+-])(?!git@)[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"
        ),
        placeholder("email"),
    ),
    # Visa, Mastercard, Amex, Discover prefixes, digits optionally grouped by spaces or dashes; Luhn-checked.
    Pattern(
        "card_number",
        re.compile(rf"{_L}(?:4|5[1-5]|2[2-7]|3[47]|6(?:011|5))\d(?:[ -]?\d){{11,17}}{_R}"),
        _card,
    ),
    Pattern(
        "national_id",
        re.compile(r"(?<![\w-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\w-])"),
        placeholder("national_id"),
    ),
    Pattern(
        "phone",
        re.compile(
            rf"{_L}(?:\+\d{{1,3}}[\s.-]?)?(?:\(\d{{3}}\)\s?|\d{{3}}[\s.-])\d{{3}}[\s.-]\d{{4}}{_R}"
            rf"|(?<![\w.+])\+\d{{1,3}}(?:[\s-]\d{{2,4}}){{2,4}}{_R}"
            rf"|(?<![\w.+])\+[1-9]\d{{9,14}}{_R}"
        ),
        placeholder("phone"),
    ),
)

#: dict keys whose string values are secrets in full, whatever they look like.
SECRET_KEYS = re.compile(
    r"(?i)(^|[_.-])(password|passwd|pwd|secret|client_secret|api_?key|access_?key|private_?key|token|"
    r"auth_?token|authorization|credentials?)$"
)


#: texts up to this length are remembered (the same keys and values are redacted again on every call).
_CACHED_TEXT_CHARS = 512


def redact_text(text: str) -> str:
    """Return ``text`` with every secret and piece of personal data replaced by a placeholder."""
    if len(text) <= _CACHED_TEXT_CHARS:
        return _redact_short_text(text)
    return _apply_patterns(text)


def _apply_patterns(text: str) -> str:
    for pattern in PATTERNS:
        text = pattern.regex.sub(pattern.replace, text)
    return text


# A pure function of its argument (the patterns are constants), so a cached answer is always the answer.
_redact_short_text = functools.lru_cache(maxsize=4096)(_apply_patterns)


def redact(value: Any) -> Any:
    """Return a redacted copy of a JSON-able value (dicts, lists, pydantic models, strings).

    Strings are passed through :func:`redact_text`; a string stored under a secret-sounding key
    (``password``, ``api_key``, ``token`` …) is replaced entirely. Numbers, booleans and None pass unchanged.
    """
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {redact_text(str(k)): _redact_item(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v) for v in value]
    return value


def _redact_item(key: str, value: Any) -> Any:
    if isinstance(value, str) and value and SECRET_KEYS.search(key) and not value.startswith("[REDACTED"):
        return placeholder("secret")
    return redact(value)


def redacted_paths(original: Any, redacted: Any, prefix: str = "") -> list[str]:
    """Return the dotted paths where ``redacted`` differs from ``original`` (for audit and outcomes)."""
    if isinstance(original, dict) and isinstance(redacted, dict):
        paths: list[str] = []
        for (key, value), new in zip(original.items(), redacted.values(), strict=False):
            paths += redacted_paths(value, new, f"{prefix}.{key}" if prefix else str(key))
        return paths
    if isinstance(original, list | tuple) and isinstance(redacted, list):
        pairs = enumerate(zip(original, redacted, strict=False))
        return [p for i, (old, new) in pairs for p in redacted_paths(old, new, f"{prefix}[{i}]")]
    return [prefix or "<value>"] if original != redacted else []
