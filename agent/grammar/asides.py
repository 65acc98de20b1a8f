"""Asides: what a sentence of its own beside a request may say without asking for anything.

"Train … in experiment x. Thanks a lot!" or "… If anything goes wrong, my e-mail is …" carry no
instruction: the request can go ahead. "… Don't log anything to MLflow." or "… actually never mind"
do, and expagent did not map them to an action: acting on the rest would be acting on half an
understanding. So the test is an allowlist, not a list of instruction words: a left-over part of
another sentence is an aside only when every word of it is courtesy, or (when the message held contact
details or a key, which are ignored and never repeated) the words around such details. Anything else
is treated as an instruction that was not understood, and the agent asks.
"""

from __future__ import annotations

import re

#: courtesy and sign-off words ("thanks a lot", "much appreciated", "have a nice day", "cheers").
COURTESY = frozenset(
    """much many lot lots appreciated appreciate cheers nice great good lovely awesome amazing wonderful
    star hero legend kind very so really hope well day morning afternoon evening weekend have
    advance regards best warm wishes cool perfect brilliant excellent""".split()
)
#: the words around contact details or a key the user pasted ("my e-mail is …", "in case you need it").
CONTACT = frozenset(
    """if anything something goes go went wrong fails fail breaks problem problems issue issues e-mail
    email mail address phone number mobile cell reach contact call text key keys token api openai
    secret password credentials case needed needs here""".split()
)
#: words with no meaning of their own (a smaller set than the grammar's FILLER, which holds "log", "run").
NEUTRAL = frozenset(
    """a an the this that it its my our your me us i i'm im we you you're youre he she they them is are
    be been was were am to of for in on at by and or with as from all just also too again thanks thank
    ty thx""".split()
)
#: the notes the grammar writes about details it removed from the message ("ignored an email address …").
_PASTED_DETAILS = re.compile(r"^ignored (?:an email address|a phone number|a secret-looking token)\b")
#: what redaction left where a detail was (a message may reach the grammar already redacted).
_PLACEHOLDER = re.compile(r"\[REDACTED:([A-Za-z0-9_]+)\]")


def pasted_details(notes: list[str], text: str) -> frozenset[str] | None:
    """Return the words a pasted detail left in the message, or None when it held no contact details or key.

    The grammar's own notes say it removed one; a message that arrived redacted holds
    ``[REDACTED:<kind>]``, whose words ("redacted", the kind) are then no instruction either.
    """
    kinds = _PLACEHOLDER.findall(text)
    if not kinds and not any(_PASTED_DETAILS.match(n) for n in notes):
        return None
    words = {"redacted"} | {w for kind in kinds for w in re.split(r"[_\W]+", kind.lower()) if w}
    return frozenset(words)


def is_grammar_note(part: str) -> bool:
    """Return whether ``part`` is the grammar's own note about something it ignored (not user words)."""
    return part.startswith("ignored ")


def is_aside(part: str, details: frozenset[str] | None) -> bool:
    """Return whether a left-over part of a sentence beside the request asks for nothing.

    ``details``: what :func:`pasted_details` returned for the message.
    """
    words = re.findall(r"[a-z0-9][a-z0-9'-]*", part.lower())
    allowed = COURTESY if details is None else COURTESY | CONTACT | details
    return bool(words) and all(w in allowed or w in NEUTRAL for w in words)
