"""Text as a check must see it: NFKC, no invisible characters, look-alike letters folded to Latin.

``d\u0435ploy`` (a Cyrillic e) and ``env: pro\u200bduction`` (a zero-width space) are the same words as
``deploy`` and ``production`` to a person and to a CD pipeline; every allowlist and word check compares
``normalize(text)``.
"""

from __future__ import annotations

import re
import unicodedata

#: zero-width, joiners, bidi controls, soft hyphen, word joiner, BOM.
_INVISIBLE = re.compile("[\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff]")
#: Cyrillic and Greek letters that look like Latin ones (lower case after casefold).
_CONFUSABLES = str.maketrans({
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
    "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ј": "j", "ԁ": "d", "ԛ": "q", "ԝ": "w", "ɡ": "g",
    "α": "a", "β": "b", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u",
    "χ": "x", "ℓ": "l",
})  # fmt: skip


def strip_invisible(text: str) -> str:
    """Return ``text`` in NFKC without zero-width and bidi control characters (case kept)."""
    return _INVISIBLE.sub("", unicodedata.normalize("NFKC", text))


def normalize(text: str) -> str:
    """Return ``text`` as checks compare it: NFKC, invisible characters removed, case-folded, look-alike
    letters folded to Latin."""
    return strip_invisible(text).casefold().translate(_CONFUSABLES)
