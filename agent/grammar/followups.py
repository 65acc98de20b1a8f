"""Follow-ups to the thread's last request, and yes/no answers to what the agent offered.

A follow-up changes only what it says and reuses everything else the thread asked for: "rerun with
seed 7", "bump n_estimators to 500 and retrain", "same but with random forest", "try max_depth=5",
"3 more trials" (continues the study: no new baseline). ``read_followup`` recognises the cue, rewrites
the change into the request grammar ("bump n_estimators to 500" -> "n_estimators=500") and returns the
text the ordinary request rules then parse; whatever they leave over is reported, never guessed.

``answer_word`` reads a whole message that only says yes or no ("ok go ahead", "sure", "nope").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from agent.grammar.relative import read_relative
from agent.grammar.vocabulary import ADVICE
from agent.references import LATEST_KINDS, NAMED_KINDS, phrases_of

FollowUpKind = Literal["rerun", "change", "more_trials"]
Answer = Literal["yes", "no"]

_YES = frozenset(
    "y yes yeah yep yup ok okay k sure fine go ahead proceed approve approved please do it that "
    "sounds good great perfect lgtm let's lets go run confirm confirmed correct right absolutely works "
    "for me with thanks thank you".split()
)
_YES_CORE = frozenset(
    "y yes yeah yep yup ok okay sure go proceed approve approved lgtm confirm confirmed absolutely".split()
    + "good great perfect fine".split()
    + ["do"]
)
_NO = frozenset("n no nope nah deny denied reject don't dont not cancel abort stop".split())
_NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "a couple": 2, "a couple of": 2, "a few": 3, "few": 3, "twenty": 20, "fifteen": 15,
}  # fmt: skip
_NUM = r"(?P<n>\d+|one|two|three|four|five|six|seven|eight|nine|ten|fifteen|twenty|a couple(?: of)?|a few)"


def answer_word(text: str) -> Answer | None:
    """Return "yes"/"no" when the whole message only accepts or declines ("yes go ahead", "nope")."""
    words = re.sub(r"[^a-z' ]+", " ", text.lower().replace("’", "'")).split()
    if not words or len(words) > 8:
        return None
    if all(
        w in _NO or w in {"thanks", "please", "i", "do", "dont", "don't", "want", "that", "it"} for w in words
    ) and (set(words) & {"n", "no", "nope", "nah", "deny", "denied", "reject"}):
        return "no"
    if all(w in _YES for w in words) and set(words) & _YES_CORE:
        return "yes"
    return None


@dataclass(frozen=True)
class FollowUp:
    """A message read as a change to the thread's last request."""

    kind: FollowUpKind
    text: str  # what is left for the request rules to parse (cues removed, changes rewritten)
    more_trials: int | None = None
    accept_defaults: bool = False  # "yes, ..." / "whatever model is fastest": the offered defaults stand
    decline_defaults: bool = False  # "no, ...": the offered defaults do not stand
    names_run: bool = False  # "rerun the best one", "same as run X": that run's request is the base


# A leading yes/no before the rest of the message ("ok give it 3 more trials", "no, use rf").
_LEAD_YES = re.compile(
    r"^\s*(?:(?:yes|yeah|yep|ok(?:ay)?|sure|great|cool|perfect|fine|alright|right|k)\b[\s,.!;:-]*)+"
    r"(?:(?:go ahead|sounds good|thanks|thank you)\b[\s,.!;:-]*)?",
    re.I,
)
# "no" is a leading answer only when it stands apart ("no, use rf", "nope - try rf", "no thanks.") or goes
# straight on to the replacement ("no use rf"): in "no need to rerun it" or "no rerun please" it negates
# the rest, which is then not a follow-up to act on.
_LEAD_NO = re.compile(
    r"^\s*(?:no|nope|nah)(?:\s+thanks|\s+thank\s+you)?"
    r"(?:\s*[,.!;:-]+\s*|\s+(?=(?:use|try|switch|go\s+with|pick|take|let'?s|make\s+it)\b))",
    re.I,
)

# Rewrites into the request grammar; each (pattern, replacement) is applied in order.
_REWRITES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p, re.I), r)
    for p, r in (
        # "bump n_estimators to 500", "set max_depth to 5", "change learning_rate to 0.1", "max_depth -> 5"
        (
            r"\b(?:bump|set|change|increase|raise|lower|decrease|reduce|drop|make|put|use)\s+(?:the\s+)?"
            r"(?P<k>[a-z][a-z0-9_]*_[a-z0-9_]+|max_depth|[a-z]+_[a-z]+)\s+(?:up\s+|down\s+)?(?:to|=|at|of)\s*"
            r"(?P<v>-?[0-9][0-9.e+-]*)",
            r"\g<k>=\g<v>",
        ),
        (r"\b(?P<k>[a-z][a-z0-9]*_[a-z0-9_]+)\s+(?:to|->|of|at)\s+(?P<v>-?[0-9][0-9.e+-]*)", r"\g<k>=\g<v>"),
        (r"\b(?P<k>[a-z][a-z0-9]*_[a-z0-9_]+)\s*:\s*(?P<v>-?[0-9][0-9.e+-]*)", r"\g<k>=\g<v>"),
        # "call the experiment X", "name it X", "experiment called X", "log it to X"
        (r"\b(?:call|name)\s+(?:the\s+|that\s+|this\s+)?experiment\s+", "experiment "),
        (r"\b(?:call|name)\s+it\s+(?=[A-Za-z0-9])", "experiment "),
        (r"\bexperiment\s+(?:called|named)\s+", "experiment "),
        # "<metric> is fine", "accuracy works", "... sounds good"
        (r"\s+(?:is|are|'s)\s+(?:fine|ok|okay|good|great|perfect)\b", ""),
        (r"\s+(?:works|will do|sounds good)\b", ""),
        # "a seed of 7", "with seed = 7"
        (r"\bseed\s+of\s+", "seed "),
        # chat shorthand: "rerun w/ seed 7"
        (r"(?<![\w/])w/(?=\s|\w)", "with "),
    )
)

# What says "use your default model": accepted as taking the offered family.
_ANY_MODEL = re.compile(
    r"\b(?:whatever|any|whichever)\s+(?:model|family|algorithm)(?:\s+(?:is|'s)\s+(?:fastest|quickest|"
    r"cheapest|fine|best|ok|okay|default))?|\b(?:the\s+)?(?:fastest|quickest|cheapest|default)\s+"
    r"(?:model|family|one|algorithm)|\byour\s+(?:call|choice|pick)|\bdefaults?\s+(?:are|is)\s+fine|"
    r"\b(?:use|keep)\s+(?:the\s+|your\s+)?defaults?\b|\bwhatever\s+you\s+(?:think|suggest|recommend)\b",
    re.I,
)

# "3 more trials", "give it 3 more trials", "another 5 trials", "a few more trials", "keep tuning for 3 more"
_MORE_TRIALS = re.compile(
    r"\b(?:(?:ok(?:ay)?|so|now|then|and)\s+)?(?:(?:please\s+)?(?:give\s+it|run|do|try|add|launch|keep\s+"
    r"(?:tuning|going)(?:\s+for)?|continue(?:\s+(?:the\s+)?(?:study|tuning|search|sweep))?(?:\s+(?:with|for))?|"
    r"tune(?:\s+for)?)\s+)?(?:"
    + _NUM
    + r"\s+more|another\s+"
    + _NUM.replace("?P<n>", "?P<n2>")
    + r"|"
    + _NUM.replace("?P<n>", "?P<n3>")
    + r"\s+additional|"
    + _NUM.replace("?P<n>", "?P<n4>")
    + r"\s+extra)\s+(?:tuning\s+|optuna\s+|hpo\s+)?(?:trials?|rounds?\s+of\s+tuning|iterations?)\b"
    r"(?:\s+(?:on|in|of|for)\s+(?:it|that|the\s+(?:study|same\s+study|sweep|search)|this))?",
    re.I,
)

# Cues that the message is about the thread's last request.
#: the verbs that ask to run something again (also read by ``agent.run_bases``).
RERUN_VERB = r"re-?run|re-?train|re-?fit|re-?do"
_THAT = r"(?:it|(?:that|this)(?:\s+(?:one|run|model))?)"  # "it", "that one", "this run"
_RERUN = re.compile(
    rf"(?<![\w-])(?:{RERUN_VERB}|(?:run|train|fit|do)\s+{_THAT}\s+again|"
    rf"(?:run|do)\s+again|again|one\s+more\s+time|repeat\s+(?:{_THAT}|the\s+run))"
    rf"(?:\s+(?:{_THAT}|the\s+(?:run|baseline|model|experiment|same)))?"
    r"(?:\s+(?:again))?(?:\s*,?\s*but)?(?![\w-])",
    re.I,
)
_SAME = re.compile(
    r"(?<![\w-])(?:(?:the\s+)?same\s+(?:thing|again|setup|config(?:uration)?|request|as\s+before|run|experiment)?"
    r"(?:\s*,?\s*(?:but|except|only))?|like\s+before\s*,?\s*(?:but)?|instead(?:\s+of\s+that)?|"
    r"this\s+time)(?![\w-])",
    re.I,
)
_TRY = re.compile(
    r"^\s*(?:(?:let's|lets|can\s+you|could\s+you|please|and|now|ok(?:ay)?|also)\s+)*"
    r"(?:try|switch\s+to|swap\s+(?:in|to)|go\s+with|change\s+(?:it|the\s+model|the\s+family)\s+to)\b(?:\s+(?:it\s+)?with)?",
    re.I,
)
# "n_estimators 50" (no "=" or "to"): a parameter name with "_" and one number, not a range.
_BARE_PAIR = re.compile(
    r"\b(?P<k>[a-z][a-z0-9]*_[a-z0-9_]+)\s+(?P<v>-?\d+(?:\.\d+)?(?:e-?\d+)?)"
    r"(?![\w.]|\s*(?:-|\.\.|to\b|and\s+-?\d|,\s*-?\d))",
    re.I,
)
_ONLY_PAIRS = re.compile(
    r"^\s*(?:(?:and|also|then|now|ok(?:ay)?|with|use|try|set|,)\s*)*"
    r"(?:[a-z][a-z0-9]*_[a-z0-9_]+\s+-?[0-9][0-9.e-]*(?:\s*(?:,|and)\s*)?)+[\s.!]*$",
    re.I,
)
_AND_RETRAIN = re.compile(r"\s*,?\s*\b(?:and|then)\s+(?=re-?(?:run|train|fit)\b)", re.I)


# A follow-up on a run other than the thread's last: "rerun the best one", "rerun the baseline", "same as
# run 8788935a but …", or on the last one by a phrase ("rerun the last one with seed 7").
# Removed here (the intake node resolves it through ``agent.references`` and MLflow, which provides these
# phrases: one vocabulary); "same as"/"like" before it make it a follow-up on its own.
_OTHER_RUN = re.compile(
    r"(?<![\w-])(?P<same>(?:the\s+)?same\s+(?:thing\s+)?as\s+|just\s+like\s+|like\s+)?(?:(?:on|of|from|for)\s+)?"
    rf"(?:(?P<named>{phrases_of(NAMED_KINDS)})|(?P<latest>{phrases_of(LATEST_KINDS)}))(?![\w-])",
    re.I,
)
# A polite wrapper around a follow-up ("could you …, please?") is not a question.
_POLITE = re.compile(
    r"^\s*(?:(?:hi|hey|hello|ok(?:ay)?|so|thanks|great)\b[\s,.!]*)*(?:(?:could|can|would|will)\s+you\s+"
    r"(?:please\s+|kindly\s+|maybe\s+)?|please\s+|pls\s+|kindly\s+)",
    re.I,
)
_POLITE_END = re.compile(r"[\s,]*(?:please|pls|thanks|thank you|thx)?\s*[?!.]*\s*$", re.I)


def _count(match: re.Match[str]) -> int:
    raw = next(v for k, v in match.groupdict().items() if k.startswith("n") and v)
    raw = raw.lower()
    return int(raw) if raw.isdigit() else _NUMBER_WORDS.get(raw, 3)


def rewrite(text: str) -> str:
    """Return ``text`` with changes written in the request grammar ("bump x_y to 5" -> "x_y=5")."""
    for pattern, replacement in _REWRITES:
        text = pattern.sub(replacement, text)
    return text


def read_followup(text: str) -> FollowUp | None:
    """Return the follow-up ``text`` asks for, or None when it is not one (a new request, a question).

    Only messages with a follow-up cue are follow-ups: "rerun/retrain/again", "same but …",
    "try …"/"switch to …", "N more trials", or a change written as "bump/set X to N".
    """
    body = text.strip()
    if ADVICE.match(body):
        return None  # "should I retrain it with seed 3?" asks for advice: it is not a follow-up to run
    unwrapped = _POLITE_END.sub("", _POLITE.sub("", body, count=1))
    if unwrapped != body and (_RERUN.search(unwrapped) or _MORE_TRIALS.search(unwrapped)):
        body = unwrapped
    accept = decline = False
    if m := _LEAD_YES.match(body):
        rest = body[m.end() :]
        if rest.strip():
            body, accept = rest, True
    elif m := _LEAD_NO.match(body):
        rest = body[m.end() :]
        if rest.strip():
            body, decline = rest, True
    if _ANY_MODEL.search(body):
        body, accept = _ANY_MODEL.sub(" ", body), True
    if m := _MORE_TRIALS.search(body):
        rest = (body[: m.start()] + " " + body[m.end() :]).strip(" ,.!?;")
        return FollowUp("more_trials", rewrite(rest), more_trials=_count(m), accept_defaults=accept)
    other = _OTHER_RUN.search(body)
    if other is not None and (other["same"] or any(p.search(body) for p in (_RERUN, _TRY))):
        body = (body[: other.start()] + " " + body[other.end() :]).strip()
    else:
        other = None
    rewritten = rewrite(body)
    if _ONLY_PAIRS.match(body) or any(p.search(body) for p in (_RERUN, _SAME, _TRY)):
        rewritten = _BARE_PAIR.sub(r"\g<k>=\g<v>", rewritten)
    relative, rewritten = read_relative(rewritten)  # resolved against the thread by the intake node
    changed = rewritten != body
    kind: FollowUpKind | None = "change" if relative else ("rerun" if other is not None else None)
    for pattern, cue_kind in ((_RERUN, "rerun"), (_SAME, "change"), (_TRY, "change")):
        if pattern.search(rewritten):
            kind = kind or cue_kind  # type: ignore[assignment]
            rewritten = _AND_RETRAIN.sub(" ", rewritten)
            rewritten = pattern.sub(" ", rewritten)
    if kind == "rerun" and changed:
        kind = "change"  # "bump x to 5 and retrain": a change, then the rerun
    if kind is None and changed and re.search(r"\b[a-z][a-z0-9_]*=", rewritten):
        kind = "change"
    if kind is None:
        if accept or decline:
            return FollowUp("change", rewritten, accept_defaults=accept, decline_defaults=decline)
        return None
    return FollowUp(
        kind, rewritten.strip(" ,.!?;"), accept_defaults=accept, decline_defaults=decline,
        names_run=other is not None and other["named"] is not None,
    )  # fmt: skip
