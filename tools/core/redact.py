"""Redaction of secrets and personal data from any text or JSON-able value before it is written or shown.

Token formats come from a maintained engine: the token-format plugins of ``detect-secrets`` (AWS, GitLab,
GitHub, Slack, Stripe, Twilio, npm, PyPI, SendGrid, Azure storage, JWT, private keys, …; its
``KeywordDetector`` finds ``password = "…"`` assignments). Our own patterns cover what it has no plugin
for (Google and Hugging Face keys, Azure connection strings, HTTP Basic headers, PEM blocks in any
layout, "my password is …", and personal data: e-mail, Luhn-valid card numbers, IBANs, national IDs,
phones). Every match becomes ``[REDACTED:<kind>]`` (a password inside a URI becomes ``***`` so the URI
stays readable). Run IDs (32 hex), sha256 hashes, floats, timestamps, dataset refs like
``breast_cancer@1`` and file paths pass unchanged; the corpus test holds both promises.
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


def iban_valid(text: str) -> bool:
    """Return whether ``text`` (spaces allowed) passes the IBAN mod-97 check."""
    compact = text.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    digits = "".join(str(int(c, 36)) for c in moved)
    return int(digits) % 97 == 1


def _basic_auth(match: re.Match[str]) -> str:
    """Redact ``Basic <base64>`` only when the value decodes to ``user:password`` (not "basic baseline")."""
    import base64
    import binascii

    encoded = match.group(2)
    try:
        decoded = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return match.group(0)
    return f"{match.group(1)} {placeholder('token')}" if ":" in decoded else match.group(0)


def _iban(match: re.Match[str]) -> str:
    return placeholder("iban") if iban_valid(match.group(0)) else match.group(0)


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
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----.*?"
            r"(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\Z)",
            re.S,
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
    # A bare AWS secret access key: exactly 40 base64 characters mixing upper case, lower case and digits
    # (a git SHA is 40 hex digits in one case and passes; the keyword form is the 'secret' pattern below).
    Pattern(
        "aws_secret_key",
        re.compile(
            r"(?<![A-Za-z0-9/+])(?=[A-Za-z0-9/+]{0,39}[A-Z])(?=[A-Za-z0-9/+]{0,39}[a-z])"
            r"(?=[A-Za-z0-9/+]{0,39}[0-9])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"
        ),
        placeholder("aws_secret_key"),
    ),
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
    # HTTP Basic credentials in a header ("Authorization: Basic dXNlcjpwYXNz")
    Pattern("basic_auth", re.compile(r"(?i)\b(basic)\s+([A-Za-z0-9+/]{8,}={0,2})"), _basic_auth),
    Pattern("npm_token", re.compile(r"\bnpm_[A-Za-z0-9]{36}\b"), placeholder("api_key")),
    Pattern("pypi_token", re.compile(r"\bpypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{30,}"), placeholder("api_key")),
    Pattern("square_token", re.compile(r"\bsq0(?:csp|atp)-[0-9A-Za-z_-]{22,50}"), placeholder("api_key")),
    Pattern("google_api_key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"), placeholder("api_key")),
    Pattern("hugging_face_token", re.compile(r"\bhf_[A-Za-z0-9]{30,}\b"), placeholder("api_key")),
    Pattern(
        "stripe_key", re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z]{16,}\b"), placeholder("api_key")
    ),
    Pattern(
        "slack_webhook",
        re.compile(r"https://hooks\.slack\.com/(?:services|workflows)/[A-Za-z0-9_/]+"),
        placeholder("slack_webhook"),
    ),
    # Azure storage / service bus connection strings: AccountKey=…, SharedAccessKey=…, sig=…
    Pattern(
        "azure_key",
        re.compile(r"(?i)\b(AccountKey|SharedAccessKey|SharedAccessSignature|sig)=([A-Za-z0-9+/%=]{16,})"),
        r"\1=" + placeholder("secret"),
    ),
    # "my password is hunter2", "the api key is: abc123", "passcode: 1234"
    Pattern(
        "said_secret",
        re.compile(
            r"(?i)\b((?:password|passwd|passphrase|passcode|pin|secret|api key|token)"
            r"\s+(?:is|was|=|:)\s*:?\s*)"
            r"(?!\[REDACTED)[\"']?([^\s\"',;]{3,})"
        ),
        r"\1" + placeholder("secret"),
    ),
    Pattern("iban", re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?\b"), _iban),
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
#: longer texts up to this length are remembered too, fewer of them: the same messages, plans and answers
#: are redacted again at every checkpoint, trace span and audit write of a turn (measured: 85 % of the
#: redaction of texts over 512 characters was of a text already redacted, ~15 % of a training turn's
#: CPU). At most ``_LONG_TEXTS`` x 64 K characters are held.
_CACHED_LONG_TEXT_CHARS = 65_536
_LONG_TEXTS = 256


def redact_text(text: str) -> str:
    """Return ``text`` with every secret and piece of personal data replaced by a placeholder."""
    if len(text) <= _CACHED_TEXT_CHARS:
        return _redact_short_text(text)
    if len(text) <= _CACHED_LONG_TEXT_CHARS:
        return _redact_long_text(text)
    return _apply_patterns(text)


def _apply_patterns(text: str) -> str:
    for pattern in PATTERNS:  # ours first: they take whole tokens (PEM blocks, JWT signatures) and keep URIs
        text = pattern.regex.sub(pattern.replace, text)
    for kind, regex in _engine_patterns():
        text = regex.sub(placeholder(kind), text)
    for value in _keyword_values(text):
        text = text.replace(value, placeholder("secret"))
    return text


#: detect-secrets plugins that are not token formats (entropy guesses flag run IDs and hashes; a public
#: IP is not a secret; keywords are handled by ``_keyword_values``; Basic auth by our URI rule).
_ENGINE_SKIP = frozenset({
    "Base64 High Entropy String", "Hex High Entropy String", "Public IP (ipv4)", "Secret Keyword",
    "Basic Auth Credentials",
})  # fmt: skip


#: detect-secrets types named as the rest of expagent names them (placeholders are part of the output).
_ENGINE_KINDS = {
    "JSON Web Token": "token", "AWS Access Key": "aws_access_key", "GitHub Token": "github_token",
    "Slack Token": "slack_token", "OpenAI Token": "api_key", "Private Key": "private_key",
    "Stripe Access Key": "api_key",
}  # fmt: skip


@functools.cache
def _engine_patterns() -> tuple[tuple[str, re.Pattern[str]], ...]:
    """Return the token-format regexes of detect-secrets' plugins, as (kind, regex)."""
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class

    found: list[tuple[str, re.Pattern[str]]] = []
    mapping: dict[str, Any] = dict(get_mapping_from_secret_type_to_class())
    for secret_type, plugin in sorted(mapping.items()):
        if secret_type in _ENGINE_SKIP:
            continue
        kind = _ENGINE_KINDS.get(secret_type) or re.sub(r"[^a-z0-9]+", "_", secret_type.lower()).strip("_")
        found += [(kind, regex) for regex in getattr(plugin, "denylist", ())]
    return tuple(found)


@functools.cache
def _keyword_detector() -> Any:
    from detect_secrets.plugins.keyword import KeywordDetector

    return KeywordDetector()


def _keyword_values(text: str) -> set[str]:
    """Return the values detect-secrets' keyword detector sees assigned to secret-sounding names."""
    if not _KEYWORD_HINT.search(text):
        return set()
    values: set[str] = set()
    for line in text.splitlines():
        for secret in _keyword_detector().analyze_line(filename="config.env", line=line):
            value = secret.secret_value or ""
            if len(value) >= 3 and not value.startswith("[REDACTED"):
                values.add(value)
    return values


_KEYWORD_HINT = re.compile(r"(?i)pass|secret|token|key|pwd|auth|cred")


# A pure function of its argument (the patterns are constants), so a cached answer is always the answer.
_redact_short_text = functools.lru_cache(maxsize=4096)(_apply_patterns)
_redact_long_text = functools.lru_cache(maxsize=_LONG_TEXTS)(_apply_patterns)


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
    if isinstance(value, int) and not isinstance(value, bool) and _identifier_number(value):
        return placeholder("card_number")
    return value


def _identifier_number(value: int) -> bool:
    """Whether an integer is a payment card number (13-19 digits, Luhn-valid): sent as a JSON number, it
    would otherwise pass every text rule."""
    digits = str(abs(value))
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


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
