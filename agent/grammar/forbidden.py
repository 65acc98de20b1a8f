"""Does a message ask the agent to deploy, promote, stage, register or serve a model? Read the sentence.

A forbidden word is not a forbidden request. The words are a request only when they are an action the
user asks *the agent* to take: an imperative ("deploy it", "please promote run X"), a request put as a
question ("can you deploy …?"), an instruction inside a sentence ("… and don't forget to deploy it",
"make sure to register it", "I want you to serve it"). The same words as the topic of a question
("which run could I deploy later?"), the user's own plan ("we will decide about staging later"), a name
or a noun ("the serving team", "the production model's metrics") or a negation ("don't deploy it") are
not. In other languages a deploy verb is always taken as a request: the agent explains its policy
rather than answering "not understood".

Text is compared after ``tools.core.text.normalize`` (NFKC, no invisible characters, look-alikes folded).
This detector runs on every turn, whatever the chat model classified (two opinions on forbidden intent).
"""

from __future__ import annotations

import re
from typing import Literal

from tools.core.text import normalize

ForbiddenVerb = Literal["deploy", "promote", "stage", "serve", "register_model"]

# The English verbs (and verb phrases) of each forbidden action, as the start of an instruction.
_OBJ = r"(?:it|them|this|that|the|our|my|a|an|run|model|best|champion|\w{32})"
_VERBS: tuple[tuple[ForbiddenVerb, str], ...] = (
    ("stage", rf"stage\s+{_OBJ}|(?:transition|move)\s+.{{0,40}}?\s+to\s+staging"),
    ("deploy", rf"(?:re)?deploy|roll\s*out\s+{_OBJ}|ship\s+{_OBJ}|release\s+{_OBJ}"
               rf"|push\s+.{{0,40}}?\s+to\s+prod(?:uction)?|put\s+.{{0,40}}?\s+(?:in|into)\s+prod(?:uction)?"
               rf"|make\s+.{{0,40}}?\s+available\s+(?:in|to|for)\s+prod(?:uction)?|go\s+live\s+with"
               rf"|make\s+.{{0,40}}?\s+live\b"),
    ("promote", rf"promote|transition\s+.{{0,40}}?\s+to|move\s+.{{0,40}}?\s+to\s+prod(?:uction)?"
                rf"|set\s+(?:the\s+|an?\s+)?(?:[\w-]+\s+){{0,2}}alias|alias\s+{_OBJ}"
                rf"|(?:tag|mark|label)\s+.{{0,40}}?\s+as\s+(?:the\s+)?(?:champion|production|prod)"
                rf"|make\s+.{{0,40}}?\s+(?:the\s+)?(?:champion|production\s+model)"),
    ("serve", rf"serve\s+{_OBJ}|host\s+{_OBJ}"
              rf"|expose\s+.{{0,40}}?\s+(?:as|behind)\s+an?\s+(?:rest\s+)?(?:api|endpoint)"
              rf"|(?:put|wrap)\s+.{{0,60}}?\s+(?:behind|as|into)\s+an?\s+(?:rest\s+|http\s+|web\s+)?"
              rf"(?:api|endpoint|service)"
              rf"|make\s+.{{0,60}}?\s+available\s+(?:to|for)\s+(?:our\s+|the\s+)?(?:customers|users|clients|callers"
              rf"|the\s+public|everyone|traffic)|make\s+.{{0,60}}?\s+available\s+(?:behind|via|through|as)\s+an?\s+"
              rf"(?:rest\s+|http\s+|web\s+)?(?:api|endpoint|service)"
              rf"|create\s+an?\s+(?:serving\s+)?endpoint"),
    ("register_model", rf"register\s+{_OBJ}|publish\s+(?:the\s+|this\s+|that\s+|our\s+|my\s+)?(?:best\s+)?"
                       rf"(?:model|run|it)\b"),
)  # fmt: skip
# What may precede an instruction at the start of a clause.
_LEAD = (
    r"(?:(?:please|pls|kindly|now|then|also|and|just|ok|okay|finally|afterwards|after\s+that"
    r"|go\s+ahead\s+and|next)\s+)*"
)
# Phrases that make what follows an instruction to the agent, anywhere in a clause.
_ASK = (
    r"(?:can|could|would|will)\s+you\s+(?:please\s+|kindly\s+)?|what\s+would\s+it\s+take\s+to\s+|(?:i|we)\s+(?:want|need|would\s+like|'d\s+like)\s+you\s+to\s+"
    r"|(?:don'?t|do\s+not|never)\s+forget\s+to\s+|make\s+sure\s+(?:you\s+)?(?:to\s+)?|remember\s+to\s+"
    r"|you\s+(?:should|must|need\s+to|have\s+to)\s+|let'?s\s+|(?:and|then|,)\s+(?:please\s+)?(?:also\s+)?"
)  # fmt: skip
#: words in the matched lead that make it an instruction to the agent even inside a question or a plan.
_TELLING = ("forget", "make sure", "remember", "would it take")
_NEGATED = re.compile(
    r"(?:\bdon'?t|\bdo\s+not|\bnever|\bwithout|\bnot|\bno\s+need\s+to|\bshouldn'?t|\bwon'?t|\bno)\s+(?:\w+\s+){0,2}$"
)
# The user speaking of their own plans or asking about something, not instructing the agent.
_OWN_PLAN = re.compile(
    r"\b(?:we|i|they|the\s+\w+\s+team)(?:'ll|\s+(?:will|shall|might|may|could|can|plan\s+to|are\s+going\s+to"
    r"|am\s+going\s+to|intend\s+to|want\s+to|would\s+like\s+to|need\s+to|have\s+to|should))\b"
)
_QUESTION_OPENING = re.compile(
    r"^(?:which|what|when|where|why|who|whose|how|is|are|was|were|does|do|did|should|could\s+i|can\s+i|"
    r"could\s+we|can\s+we|would\s+it|has|have)\b"
)
# Deploy verbs in other languages (always taken as a request: the policy is explained).
_FOREIGN = re.compile(
    r"\b(?:despleg\w*|desplieg\w*|implementa(?:r|lo|la)?|pon(?:er|lo|la)?\s+en\s+producci[oó]n|promuev\w*|promover"
    r"|déploi\w*|déploy\w*|deployez|deployons|mett(?:re|ez|s)\s+en\s+production|promouv\w*"
    r"|bereitstell\w*|stelle?\s+.{0,40}?\s+bereit|deployen|ausroll\w*|rolle?\s+.{0,40}?\s+aus|in\s+produktion\s+(?:nehmen|bringen)"
    r"|implant\w*|coloque\s+em\s+produ[cç][aã]o|distribuisc\w*|metti\s+in\s+produzione|rilascia\w*)"
)  # fmt: skip
_CLAUSES = re.compile(r"[.;!\n]+|\?(?=\s|$)|\b(?:but|however)\b")


def requested_forbidden_action(text: str) -> ForbiddenVerb | None:
    """Return the forbidden action ``text`` asks the agent to take, or None if it asks for none."""
    clean = normalize(text)
    if _FOREIGN.search(clean):
        return "deploy"
    for clause in (c.strip(" ,") for c in _CLAUSES.split(clean)):
        action = _clause_request(clause)
        if action is not None:
            return action
    return None


def _clause_request(clause: str) -> ForbiddenVerb | None:
    if not clause:
        return None
    asked_as_question = _QUESTION_OPENING.match(clause) is not None
    for action, verb in _VERBS:
        for match in re.finditer(rf"(?:^{_LEAD}|{_ASK})(?:{verb})\b", clause):
            said = match.group(0)
            told = "you" in said or any(
                w in said for w in ("forget", "make sure", "remember", "would it take")
            )
            if _NEGATED.search(clause[: match.start()]) and not told:
                continue  # "don't deploy it", "without registering"
            if asked_as_question and not told:
                continue  # "which run could I deploy?" is about deploying, not a request to
            if _OWN_PLAN.search(clause[: match.start()]) and not told:
                continue  # "we will train it and deploy it ourselves"
            return action
    return None
