"""What a message asks for once its request fields are read: forbidden, cancel, question, experiment.

Benign twins of forbidden requests stay benign: a negated action ("don't deploy it") is consumed
without counting, and what the model predicts ("predict deployment failures") was consumed earlier
by ``take_objective``.
"""

from __future__ import annotations

import re
from typing import Literal

from agent.grammar.forbidden import requested_forbidden_action
from agent.grammar.locations import place_locations
from agent.grammar.notes import note_request
from agent.grammar.scanner import Findings, Scanner
from agent.grammar.vocabulary import (
    ADVICE,
    ANY_METRIC,
    CANCEL,
    DIGITS_ID,
    EXPERIMENT_VERBS,
    FLAGS,
    FORBIDDEN_PHRASES,
    ID_PAIR,
    NEGATION,
    RAW_DATA,
    SHORT_ID,
)
from agent.state import ForbiddenAction, Intent

# An intent, or "fields_only": the message only supplied request fields (merged by ``agent.offline``).
Reading = Intent | Literal["fields_only"]

_QUESTION_OPENING = re.compile(
    r"^\s*(?:(?:what|how)\b(?!\s+about\b)|(?:whats|hows|wat|wats|which|who|when|where|why|diff)\b"
    r"|(?:show(?:ing)?|list(?:ing)?|describ(?:e|ing)|compar(?:e|ing)|summari[sz](?:e|ing)|display(?:ing)?"
    r"|explain(?:ing)?|(?:tell|give)(?:ing)?\s+(?:me|us)|let\s+(?:me|us)\s+(?:know|see))\b)",
    FLAGS,
)
# A yes/no question about what happened ("did tuning beat the baseline?", "is the best trial better
# than ...?") even when it names an experiment verb; "are you able to train ...?" is a request.
_YES_NO_OPENING = re.compile(
    r"^\s*(?:did|does|has|have|had|was|were|(?:is|are)\s+(?!you\b|u\b|it\s+possible\b))\b", FLAGS
)
# Asking to see something only counts after a polite lead ("I'd like to see run X", "can we look at").
_ASK_TO_SEE = re.compile(r"^\s*(?:see|know|look\s+(?:at|up)|pull\s+up|find\s+out)\b", FLAGS)
# Courtesy around a request: greetings, "please", "could you", "would you mind", "I'd like to", "do you
# know". Stripped (repeatedly) from the start of a sentence before looking for a question opening.
_POLITE_LEAD = re.compile(
    r"^\s*(?:(?:hi|hey|hello|thanks|thank\s+you|ok(?:ay)?|so|also|quick\s+question|one\s+more\s+thing)\b[\s,!.:;-]*"
    r"|(?:please|pls|plz|kindly|just|maybe|perhaps|possibly|quickly)\b[\s,]*"
    r"|(?:could|can|would|will)\s+(?:you|u|someone|we|i)(?:\s+(?:mind|be\s+able\s+to|help\s+me(?:\s+to)?))?\b"
    r"|do\s+you\s+mind\b|is\s+it\s+possible\s+to\b"
    r"|(?:i'?d|i\s+would|we'?d|we\s+would)\s+(?:like|love)\s+(?:you\s+)?to\b"
    r"|(?:i|we)\s+(?:want|need|wanted)\s+(?:you\s+)?to\b"
    r"|(?:i'?m|i\s+am|we'?re)\s+(?:curious|wondering)(?:\s+(?:about|if|whether))?\b"
    r"|i\s+wonder(?:\s+(?:if|whether))?\b|(?:do|would)\s+you\s+(?:happen\s+to\s+)?know(?:\s+(?:if|whether))?\b"
    r"|help\s+me(?:\s+to)?\b)",
    FLAGS,
)
_QUESTION_CUES = re.compile(
    r"^\s*(?:is|are|did|does|do|was|were|find|get|check|fetch|look|any|anything|last|latest|recent|previous"
    r"|logs?|errors?|tracebacks?|output|tail|runs|failures|failed)\b"
    r"|\b(?:best|highest|lowest|top|worst|compare|versus|vs|today|yesterday)\b",
    FLAGS,
)
_DOMAIN_NOUNS = re.compile(
    rf"\b(?:runs?|experiments?|datasets?|data|models?|trials?|baseline|results?|scores?|catalog|metrics?"
    rf"|running|runing|ran|jobs?|logs?|exps|expts|exp[a-z]{{3,8}}nts|in\s+progress|in\s+flight|fail\w*|crash\w*|params?|parameters|hyperparameters)\b"
    rf"|\b[0-9a-f]{{32}}\b|\b(?:{SHORT_ID})\b|{DIGITS_ID}|{ID_PAIR.pattern}|\b(?:{ANY_METRIC})\b",
    FLAGS,
)
_CLAUSE_SPLIT = re.compile(r"(?<=[.!?;:,])\s+|\n+|\s+[—–-]+\s+")


def classify(sc: Scanner, p: Findings) -> Reading:
    """Return the intent of the message after the request rules consumed their fields.

    Precedence: forbidden > training on raw data > cancel > question opening ("what/which/show ...",
    also inside polite wrappers) > experiment verb > question asked later or other question cues >
    bare request fields > unknown.
    """
    forbidden = _forbidden_action(sc)
    if forbidden is not None:
        p.draft["forbidden_action"] = forbidden
        return "forbidden"
    if note_request(sc.text) is not None:
        return "question"  # a note on a named run: answered with log_note, never a training request
    stops = list(sc.find(CANCEL))
    # "stop training", "cancel the tuning": the experiment word names what to stop, it is no request
    requests = [v for v in sc.find(EXPERIMENT_VERBS) if not any(_stopped(sc.text, s, v) for s in stops)]
    experiment_verb = sc.take_all(EXPERIMENT_VERBS)
    # "killed runs", "cancelled jobs": a past participle describes runs, it asks to stop nothing
    imperative_cancel = any(not m.group(0).lower().endswith("ed") for m in stops)
    # "don't stop it", "no, do not cancel", "never kill runs": every stop word is negated
    negated_cancel = bool(stops) and all(NEGATION.search(sc.work[: m.start()]) for m in stops)
    # "stop training after 10 trials", "kill it if it takes 5 min": a stop later, not now. "cancel the
    # study and train rf": two actions in one message. Neither is taken: the stop words stay unread, so
    # the answer names them and asks.
    later = any(_LATER.match(sc.text[m.end() :]) for m in stops)
    if stops and imperative_cancel and not negated_cancel and (later or requests):
        cancel = False
    else:
        cancel = sc.take_all(CANCEL)
    raw = sc.take_all(RAW_DATA)
    about_runs = _DOMAIN_NOUNS.search(sc.text) is not None or bool(p.draft.get("dataset"))
    advice = ADVICE.match(sc.text) is not None  # "should I stop it?" asks, it orders nothing
    asking = asks_question(sc.text, sc.work, experiment_verb) or advice
    question = about_runs and asking
    place_locations(sc, p, training=not (question or cancel))
    has_fields = any(v not in (None, {}, []) for v in p.draft.values())
    raw_request = p.draft.get("dataset_uri") or (raw and not question)
    if raw_request and (experiment_verb or (has_fields and not cancel)):
        p.draft["forbidden_action"] = "raw_data"
        return "forbidden"
    if cancel and negated_cancel:
        return "unknown"  # nothing is stopped, and the answer quotes what it did not act on
    asks_about_a_stop = (
        _opens_question(sc.text)
        or advice
        or _YES_NO_OPENING.match(without_polite_lead(sc.text)[0]) is not None  # "did you kill it?"
        or not imperative_cancel
    )
    if cancel and not (asking and asks_about_a_stop):
        return "cancel"  # "what killed it?" / "why did you stop it?" ask about a stop, they stop nothing
    if question or cancel:  # a question about a stop is about a run even without a noun ("why did it stop?")
        return "question"
    if experiment_verb and not advice:
        return "experiment"
    return "fields_only" if has_fields and not advice else "unknown"


_STOP_OBJECT = re.compile(r"\s+(?:(?:the|my|our|this|that|all|current|running|ongoing)\s+){0,2}", FLAGS)
# A condition on the future; "if it is still running", "if you can" are about now.
_LATER = re.compile(
    r"^\W*(?:[\w'-]+\W+){0,4}?(?:after|when|whenever|once|unless|as\s+soon\s+as|until|by\s+the\s+time"
    r"|if(?!\s+(?:you\s+can|possible|(?:[\w'-]+\s+){1,2}(?:is|are|'s)\s+(?:still\s+)?(?:running|going|active|"
    r"in\s+progress|busy))))\b",
    FLAGS,
)


def _stopped(text: str, stop: re.Match[str], verb: re.Match[str]) -> bool:
    """Whether ``verb`` is what ``stop`` stops ("stop training", "cancel the tuning")."""
    return stop.end() <= verb.start() and _STOP_OBJECT.fullmatch(text[stop.end() : verb.start()]) is not None


def _forbidden_action(sc: Scanner) -> ForbiddenAction | None:
    """Return the forbidden action the message asks the agent to take (``grammar.forbidden`` reads the
    sentence); the forbidden phrases are consumed either way, so a mention is not "not understood"."""
    for _action, pattern in FORBIDDEN_PHRASES:
        for match in sc.find(pattern):
            negation = NEGATION.search(sc.work[: match.start()])
            sc.take(match)
            if negation is not None:
                sc.take(negation)
    return requested_forbidden_action(sc.text)


def asks_question(text: str, unconsumed: str, experiment_verb: bool) -> bool:
    """Return whether a message asks a question (whether it is about runs is checked elsewhere).

    A question opening at the start, after any polite lead ("Could you please show me ...", "Hi! Which
    run ..."), wins over an experiment verb; a question asked in a later sentence, a cue word (best,
    top, vs, ...) or a question mark counts only when the message does not ask to train.
    """
    if _opens_question(text) or ("?" in text and _YES_NO_OPENING.match(without_polite_lead(text)[0])):
        return True
    if experiment_verb:
        return False
    clauses = [c for c in _CLAUSE_SPLIT.split(text) if c.strip()]
    cued = any(_QUESTION_CUES.search(without_polite_lead(c)[0]) for c in clauses)
    return cued or "?" in unconsumed or any(_opens_question(c) for c in clauses[1:])


def without_polite_lead(text: str) -> tuple[str, bool]:
    """Return ``text`` without leading courtesy ("hi, could you please ...") and whether there was any."""
    rest = text
    while lead := _POLITE_LEAD.match(rest):
        if not lead.group(0):
            break
        rest = rest[lead.end() :]
    return rest, rest != text


def _opens_question(text: str) -> bool:
    rest, polite = without_polite_lead(text)
    return _QUESTION_OPENING.match(rest) is not None or (polite and _ASK_TO_SEE.match(rest) is not None)
