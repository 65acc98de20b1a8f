"""The offline model's request grammar: turn one user message into an ``IntakeDecision``.

Rules run in a fixed order over a working copy of the text; each rule *consumes* what it matched
(replaces it with NUL characters), so later rules cannot reuse it and whatever no rule consumed can
be reported honestly in ``IntakeDecision.not_understood``. The grammar is documented, with examples,
in ``docs/offline-grammar.md``; keep the two in step.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from agent.state import ExperimentRequestDraft, ForbiddenAction, IntakeDecision, Intent
from tools.specs import ModelFamily

_F = re.IGNORECASE
_GONE = "\x00"
_WORD_NUMBERS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "twelve": 12, "fifteen": 15, "twenty": 20, "thirty": 30, "forty": 40,
    "fifty": 50, "hundred": 100, "a": 1, "an": 1, "a single": 1, "single": 1,
}  # fmt: skip
_NUM = r"(?:\d+(?:\.\d+)?|\.\d+|" + "|".join(sorted(_WORD_NUMBERS, key=len, reverse=True)) + r")"
_IDENT = r"[A-Za-z][\w-]*[A-Za-z0-9]|[A-Za-z]"

FAMILY_SYNONYMS: dict[str, str] = {
    "lightgbm": r"light[\s_-]?gbm|lgbm|lgb|gbm",
    "random_forest": r"random[\s_-]?forests?|randomforest(?:classifier|regressor)?|rf",
    "logistic_regression": r"logistic[\s_-]?regression|log[\s_-]?reg|logit|lr",
    "hist_gradient_boosting": (
        r"hist(?:ogram)?[\s_-]?(?:based[\s_-])?gradient[\s_-]?boost(?:ing|ed)?(?:[\s_-](?:trees?|classifier|regressor))?"
        r"|histgb|hgbt?|hist[\s_-]?gbm?|gradient[\s_-]?boost(?:ing|ed)?(?:\s+(?:trees?|machines?))?|gbdt"
    ),
}
# The families the trainer implements, in the order they are offered to the user.
SUPPORTED_FAMILIES: tuple[str, ...] = get_args(ModelFamily)
# Families users ask for that expagent does not train; named back to the user with the supported list.
UNSUPPORTED_FAMILIES = (
    r"xgboost|xgb|catboost|neural[\s-]?net(?:work)?s?|deep[\s-]learning|multi[\s-]?layer\s+perceptrons?|mlps?"
    r"|perceptrons?|transformers?|bert|cnns?|rnns?|lstms?|svms?|svc|svr|support[\s-]vector(?:\s+machines?)?"
    r"|knn|k[\s-]?nearest[\s-]neighbou?rs?|nearest[\s-]neighbou?rs?|naive[\s-]?bayes|decision[\s-]trees?"
    r"|extra[\s-]?trees|adaboost|linear[\s-]regression|ridge|lasso|elastic[\s-]?net|gaussian[\s-]process(?:es)?"
    r"|tabnet|prophet|arima"
)
METRIC_SYNONYMS: dict[str, str] = {
    "roc_auc": r"roc[\s_-]?auc|au[\s-]?roc|auc(?:[\s_-]roc)?|area\s+under\s+(?:the\s+)?(?:roc\s+)?curve",
    "accuracy": r"accuracy|acc",
    "f1": r"f1(?:[\s_-]?score)?|f-1|f[\s-]score|f[\s-]measure",
    "log_loss": r"log[\s_-]?loss|neg_log_loss|cross[\s_-]?entropy",
    "rmse": r"rmse|root[\s_-]mean[\s_-]squared[\s_-]error",
    "mae": r"mae|mean[\s_-]absolute[\s_-]error",
    "r2": r"r2|r[\s_-]?squared|r\^2|r²|coefficient\s+of\s+determination",
}
_ANY_METRIC = "|".join(f"(?:{p})" for p in METRIC_SYNONYMS.values())
KNOWN_DATASETS = ("breast_cancer", "wine", "diabetes", "digits", "iris", "california_housing")

# Words that are never a dataset, experiment or namespace name, and that carry no meaning of their
# own when left over (so they are not reported as "not understood").
FILLER = frozenset(
    """a an the this that these those it its my our your their me us i we you he she they them
    please kindly could would can will should shall may might you'd i'd let's lets just also then
    and or but so with without on in into at to of for from by as via using use about over under
    is are be been being was were do does did have has had get got want wanted need needs like
    model models classifier classifiers regressor estimator new some any each all both per every
    train trained training run runs experiment experiments dataset datasets data version latest
    optimize optimise optimizing optimising optimization maximize maximise maximizing minimize
    minimise minimizing metric metrics primary objective target score scoring measure evaluate
    evaluated evaluating report track tracked tracking log logged logging mlflow tuning tune trials
    trial baseline budget compute hyperparameter hyperparameters hyperparams params parameters
    go ahead now first after afterwards next quick quickly simple small few there here hi hello hey
    thanks thank ok okay sure yes launch start kick off execute sweep able mind maybe perhaps
    possibly""".split()
)
_RESERVED = FILLER | {"kubernetes", "k8s", "eks", "cluster", "locally", "local", "namespace", "optuna", "raw"}

ForbiddenRule = tuple[ForbiddenAction, re.Pattern[str]]
_FORBIDDEN_PATTERNS: tuple[tuple[ForbiddenAction, str], ...] = (
    ("promote", r"\bpromot(?:e|es|ed|ing|ion)\b|\b(?:champion|challenger)\b|\balias(?:es)?\b"),
    ("stage", r"\bstag(?:e|es|ed|ing)\b|\btransition(?:s|ed|ing)?\b"),
    ("register_model", r"\bregist(?:er|ers|ered|ering)\b(?:\s+\w+){0,3}?\s+(?:models?|runs?|versions?|it)\b"),
    ("register_model", r"\bmodel\s+regist(?:ry|ration)\b|\bregistered\s+models?\b"),
    ("serve", r"\bserv(?:e|es|ed|ing)\b|\bendpoints?\b|\bexpos(?:e|es|ed|ing)\b"),
    ("serve", r"\b(?:inference|prediction|rest|scoring)\s+(?:api|service|server)\b"),
    ("serve", r"\bkserve\b|\bsagemaker\b|\bseldon\b"),
    ("deploy", r"\b(?:re)?deploy\w*\b|\bship(?:s|ped|ping)?\b"),
    ("deploy", r"\broll(?:s|ed|ing)?[\s-]?out\b|\brollout\b"),
    ("deploy", r"\brelease\b|\bprod(?:uction)?\b|\bgo(?:es|ing)?\s+live\b|\blive\s+traffic\b"),
    ("deploy", r"\bmake\s+(?:it|this|that|them|the\s+\w+(?:\s+\w+)?)\s+live\b"),
    ("deploy", r"\bavailable\s+to\s+(?:users|customers|clients)\b"),
)  # fmt: skip
_FORBIDDEN: tuple[ForbiddenRule, ...] = tuple((a, re.compile(p, _F)) for a, p in _FORBIDDEN_PATTERNS)
_NEGATION = re.compile(
    r"(?:\bdon'?t|\bdo\s+not|\bnever|\bwithout|\bnot|\bno\s+need\s+to|\bshouldn'?t|\bwon'?t|\bno)\s+(?:\w+\s+){0,3}$",
    _F,
)
_OBJECTIVE = re.compile(
    r"\b(?:predict|forecast|classify|detect|estimate|flag|identify|score)(?:s|es|ed|ing)?\s+"
    r"(?:[\w'-]+\s*){1,5}?(?=\s+(?:on|using|from|with|in|for|dataset|and|then|but|so|via)\b|[,.;:!?\x00]|$)",
    _F,
)
_CANCEL = re.compile(r"\b(?:cancel|abort|kill|terminate|halt)\w*\b|\bstop\b", _F)
_EXPERIMENT_VERBS = re.compile(
    r"\b(?:re)?train(?:s|ed|ing)?\b|\bfit(?:s|ting)?\b|\btun(?:e|es|ed|ing)\b|\bsweep\b|\bbaseline\b"
    r"|\bhyper[\s-]?param(?:eter)?s?\s+(?:search|tuning|optimi[sz]ation)\b|\bbenchmark\b"
    r"|\b(?:launch|start|kick\s+off|run|do|execute|set\s+up)\s+(?:(?:a|an|the|some|new|quick)\s+)*"
    r"(?:experiment|training|study|trials?|job)s?\b|\bbuild\s+(?:a\s+|an\s+)?(?:model|classifier|regressor)\b",
    _F,
)
_QUESTION_OPENING = re.compile(
    r"^\s*(?:(?:what|how)\b(?!\s+about\b)|(?:which|who|when|where|why)\b"
    r"|(?:show(?:ing)?|list(?:ing)?|describ(?:e|ing)|compar(?:e|ing)|summari[sz](?:e|ing)|display(?:ing)?"
    r"|explain(?:ing)?|(?:tell|give)(?:ing)?\s+(?:me|us)|let\s+(?:me|us)\s+(?:know|see))\b)",
    _F,
)
# Asking to see something only counts after a polite lead ("I'd like to see run X", "can we look at").
_ASK_TO_SEE = re.compile(r"^\s*(?:see|know|look\s+(?:at|up)|pull\s+up|find\s+out)\b", _F)
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
    _F,
)
_RAW_DATA = re.compile(r"\b(?:raw|unvalidated|unversioned|uncurated)\b", _F)
_SENSITIVE: tuple[tuple[str, str], ...] = (
    ("a password or key", r"\b(?:password|passwd|pwd|token|secret|api[_-]?key)\s*(?:=|:|is)\s*[^\s\x00]+"),
    ("an email address", r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"),
    (
        "a secret-looking token",
        r"\b(?:sk|pk|rk)-[\w-]{10,}|\bAKIA[0-9A-Z]{12,}\b|\bgh[pousr]_\w{20,}|\bxox[abpr]-[\w-]{10,}",
    ),
    ("a card number", r"\b(?:\d{4}[\s-]){3}\d{4}\b|\b\d{16}\b"),
    ("a phone number", r"\+\d[\d\s().-]{7,}\d|\(\d{3}\)\s*\d{3}[\s.-]\d{4}\b|\b\d{3}[.-]\d{3}[.-]\d{4}\b"),
)
_QUESTION_CUES = re.compile(
    r"^\s*(?:is|are|did|does|do|was|were|find|get|check|fetch|look)\b|\b(?:best|highest|lowest|top|worst|compare"
    r"|versus|vs)\b",
    _F,
)
_DOMAIN_NOUNS = re.compile(
    rf"\b(?:runs?|experiments?|datasets?|data|models?|trials?|baseline|results?|scores?|catalog|metrics?)\b|\b[0-9a-f]{{32}}\b|\b(?:{_ANY_METRIC})\b",
    _F,
)


def parse_number(text: str) -> float:
    """Return the value of a numeral or number word ('20', '0.5', 'twenty')."""
    key = " ".join(text.lower().split())
    return float(_WORD_NUMBERS[key]) if key in _WORD_NUMBERS else float(key)


def parse_value(text: str) -> Any:
    """Return ``text`` as bool, int, float or the string itself (for ``key=value`` params)."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip("'\"")


class Scanner:
    """The message being parsed: rules search the unconsumed text and consume what they match."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.work = text

    def find(self, pattern: str | re.Pattern[str]) -> Iterator[re.Match[str]]:
        """Yield matches in the unconsumed text (consumed text never matches)."""
        compiled = pattern if isinstance(pattern, re.Pattern) else re.compile(pattern, _F)
        yield from compiled.finditer(self.work)

    def take(self, match: re.Match[str], group: int | str = 0) -> str:
        """Consume ``match`` (or one group of it) and return its original text."""
        start, end = match.span(group)
        self.consume(start, end)
        return self.text[start:end]

    def consume(self, start: int, end: int) -> None:
        """Consume the text between two offsets."""
        self.work = self.work[:start] + _GONE * (end - start) + self.work[end:]

    def first(self, pattern: str | re.Pattern[str]) -> re.Match[str] | None:
        """Return and consume the first match of ``pattern``, if any."""
        for match in self.find(pattern):
            self.take(match)
            return match
        return None

    def leftovers(self) -> list[str]:
        """Return the unconsumed phrases that contain at least one meaningful word."""
        phrases = []
        for chunk in re.split(r"[\x00,.;:!?()\[\]{}\n]+", self.work):
            words = [w.strip("'\"`") for w in chunk.split()]
            while words and words[0].lower() in FILLER:
                words.pop(0)
            while words and words[-1].lower() in FILLER:
                words.pop()
            if any(re.search(r"[^\W_]", w) and w.lower() not in FILLER for w in words):
                phrases.append(" ".join(words))
        return phrases


@dataclass
class _Parse:
    """Everything one message yields, before it becomes an ``IntakeDecision``."""

    draft: dict[str, Any] = field(default_factory=lambda: {"params": {}, "search_space": {}})
    notes: list[str] = field(default_factory=list)
    latest: bool = False
    # Raw paths/URIs found, as (start, end, text without credentials); ``classify`` decides which one,
    # if any, is the data the user wants to train on.
    locations: list[tuple[int, int, str]] = field(default_factory=list)
    # Spans of the message never to be repeated (secrets, credentials), with what to show instead.
    redactions: list[tuple[int, int, str]] = field(default_factory=list)

    def set(self, key: str, value: Any) -> None:
        """Record a field once; a second, different value is reported instead of overwriting."""
        if self.draft.get(key) is None:
            self.draft[key] = value
        elif self.draft[key] != value:
            self.notes.append(f"{key} given twice ({self.draft[key]!r} and {value!r}); kept the first")


Rule = Callable[[Scanner, _Parse], None]


def _strip_trailing_punct(text: str) -> str:
    return text.rstrip(".,;:!?)'\"")


def _sensitive(sc: Scanner, p: _Parse) -> None:
    # Secrets and personal data are never needed to train; drop them so no later rule (or the
    # not-understood list) repeats them.
    for label, pattern in _SENSITIVE:
        for match in sc.find(pattern):
            sc.take(match)
            p.redactions.append((*match.span(), "[redacted]"))
            note = f"ignored {label} in the message (never needed for training, not repeated)"
            if note not in p.notes:
                p.notes.append(note)


def _uri(sc: Scanner, p: _Parse) -> None:
    # Runs before ``_sensitive`` so a connection string's credentials are not mistaken for an email.
    for match in sc.find(r"\b[a-z][a-z0-9+.-]*://\S+"):
        _add_location(sc, p, match)


def _path(sc: Scanner, p: _Parse) -> None:
    patterns = (
        r"(?<![\w@])(?:~|\.{1,2})?/[\w.~/-]+",
        r"\b[\w./-]+\.(?:csv|parquet|json|jsonl|tsv|feather|arrow|xlsx?|txt|orc|avro|pq)\b",
    )
    for pattern in patterns:
        for match in sc.find(pattern):
            _add_location(sc, p, match)


def _add_location(sc: Scanner, p: _Parse, match: re.Match[str]) -> None:
    text = _strip_trailing_punct(sc.take(match))
    shown = without_credentials(text)
    p.locations.append((match.start(), match.start() + len(text), shown))
    if shown != text:
        p.redactions.append((match.start(), match.start() + len(text), shown))


def without_credentials(location: str) -> str:
    """Return a path or URI without its user:password part, query string and fragment."""
    bare = re.sub(r"^([a-z][a-z0-9+.-]*://)(?:[^/@\s]*@|[^@\s]*:[^@\s]*@)", r"\1", location, flags=_F)
    return re.split(r"[?#]", bare, maxsplit=1)[0]


def _objective(sc: Scanner, p: _Parse) -> None:
    # "to predict deployment failures": what the model predicts is not a request to deploy.
    for match in sc.find(_OBJECTIVE):
        sc.take(match)


def _dataset_at_version(sc: Scanner, p: _Parse) -> None:
    for match in sc.find(rf"(?:\bdataset\s+)?(?P<name>{_IDENT})@(?P<ver>v?\d[\w.-]*|latest|newest)\b"):
        sc.take(match)
        _set_dataset(p, match["name"], _strip_trailing_punct(match["ver"]))


def _set_dataset(p: _Parse, name: str, version: str | None) -> None:
    p.set("dataset", name)
    if version is None or version.lower() in ("latest", "newest", "current"):
        p.latest = p.latest or version is not None
        return
    p.set("version", version[1:] if version[:1] in "vV" and version[1:].isdigit() else version)


def _experiment(sc: Scanner, p: _Parse) -> None:
    quoted = r"['\"“‘`](?P<name>[^'\"”’`]+)['\"”’`]"
    lead = r"(?<![\w-])(?:mlflow\s+)?experiment(?:\s+name)?(?:\s*[=:]\s*|\s+(?:named\s+|called\s+)?)"
    for pattern in (
        lead + quoted,
        lead + r"(?P<name>[\w][\w.\-/]*)",
        r"\b(?:in|to|under)\s+(?:the\s+)?(?P<name>[\w][\w.-]*)\s+(?:mlflow\s+)?experiment\b",
    ):
        for match in sc.find(pattern):
            name = _strip_trailing_punct(match["name"])
            if name.lower() in _RESERVED or not name:
                continue
            sc.take(match)
            p.set("experiment", name)
            return


def _namespace(sc: Scanner, p: _Parse) -> None:
    ns = r"(?P<ns>[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)"
    for pattern in (
        rf"\b(?:(?:k8s|kubernetes)\s+)?namespace\s*(?:named\s+|called\s+|=\s*|:\s*)?['\"]?{ns}['\"]?",
        rf"\b(?:in\s+)?(?:the\s+)?['\"]?{ns}['\"]?\s+namespace\b",
    ):
        for match in sc.find(pattern):
            if match["ns"].lower() in _RESERVED:
                continue
            sc.take(match)
            p.set("namespace", match["ns"])
            return


def _search_space(sc: Scanner, p: _Parse) -> None:
    key = r"(?:(?:search|tune|vary|explore|sweep)\s+)?(?P<key>[a-z_][a-z0-9_]*)"
    ranges = (
        rf"{key}\s+(?:in|over|within|from|between)\s*[\[(]\s*(?P<a>{_NUM})\s*,\s*(?P<b>{_NUM})\s*[\])]",
        rf"{key}\s+(?:between|from)\s+(?P<a>{_NUM})\s+(?:and|to)\s+(?P<b>{_NUM})",
    )
    for pattern in ranges:
        for match in sc.find(pattern):
            sc.take(match)
            low, high = sorted((parse_value(match["a"]), parse_value(match["b"])))
            p.draft["search_space"][match["key"]] = {"low": low, "high": high}
    for match in sc.find(rf"{key}\s+(?:in|among|from)\s*\{{(?P<choices>[^}}]*)\}}"):
        sc.take(match)
        choices = [parse_value(c.strip()) for c in match["choices"].split(",") if c.strip()]
        p.draft["search_space"][match["key"]] = {"choices": choices}


def _seed_and_params(sc: Scanner, p: _Parse) -> None:
    seed = sc.first(r"\b(?:random[\s_]?)?seed\s*(?:of|=|:|is|to)?\s*(?P<n>\d+)\b")
    if seed:
        p.set("seed", int(seed["n"]))
    trials = sc.first(r"\bn_trials\s*=\s*(?P<n>\d+)\b")
    if trials:
        p.set("trials", int(trials["n"]))
    for match in sc.find(r"\b(?P<key>[a-z_][a-z0-9_]*)\s*=\s*(?P<value>[^\s,;\x00]+)"):
        if match["key"].lower() in _VERSION_KEYS:
            continue  # "version=2" is the dataset version (``_dataset_words`` / ``_bare_version``)
        sc.take(match)
        p.draft["params"][match["key"]] = parse_value(_strip_trailing_punct(match["value"]))


_PER_RUN = r"(?:\s+(?:per|each|a)\s+(?:run|trial|job))?"


def _budget(sc: Scanner, p: _Parse) -> None:
    lead = (
        r"(?:(?:a\s+|total\s+|compute\s+)?budget\s+(?:of\s+|is\s+|=\s*|:\s*)?"
        r"|within\s+|up\s+to\s+|at\s+most\s+|max(?:imum)?\s+|under\s+)?"
    )
    unit = r"(?P<kind>cpu|gpu|core)s?[\s-]?(?P<unit>hours?|hrs?|h|minutes?|mins?)\b"
    for match in sc.find(rf"\b{lead}(?P<n>{_NUM})\s*{unit}"):
        sc.take(match)
        hours = parse_number(match["n"]) / (60 if match["unit"].lower().startswith("m") else 1)
        p.set("gpu_hours" if match["kind"].lower() == "gpu" else "cpu_hours", hours)
    for match in sc.find(rf"\b(?:with\s+|using\s+|on\s+)?(?P<n>{_NUM})\s*(?:x\s*)?gpus?\b{_PER_RUN}"):
        sc.take(match)
        p.set("gpus_per_run", int(parse_number(match["n"])))
    for match in sc.find(rf"\b(?:with\s+|using\s+)?(?P<n>{_NUM})\s*(?:v?cpus?|cores?)\b{_PER_RUN}"):
        sc.take(match)
        p.set("cpus_per_run", parse_number(match["n"]))
    memory = rf"(?P<n>\d+(?:\.\d+)?)\s*(?:gb|gib|g)\b(?:\s+(?:of\s+)?(?:memory|ram|mem))?{_PER_RUN}"
    for match in sc.find(rf"\b(?:(?:memory|ram|mem)\s*(?:of|=|:)?\s*)?{memory}"):
        sc.take(match)
        p.set("memory_gb_per_run", parse_number(match["n"]))


def _parallelism(sc: Scanner, p: _Parse) -> None:
    for pattern in (
        rf"\b(?P<n>{_NUM})\s+(?:(?:trials?|jobs?|runs?|workers?)\s+)?(?:in\s+parallel|at\s+(?:a|one)\s+time|at\s+once|concurrent(?:ly)?|simultaneous(?:ly)?|parallel(?:\s+(?:jobs?|trials?|runs?|workers?))?)\b",
        rf"\b(?:parallelism|concurrency|max[\s_]concurrent(?:[\s_]jobs)?|n_jobs|workers)\s*(?:of|=|:|is)?\s*(?P<n>{_NUM})\b",
    ):
        match = sc.first(pattern)
        if match:
            p.set("parallelism", int(parse_number(match["n"])))


def _stopping(sc: Scanner, p: _Parse) -> None:
    for pattern in (
        rf"\bstop(?:ping)?\s+(?:early\s+)?(?:after|if|when|once)\s+(?:there\s+(?:are|is|have\s+been)\s+)?(?P<n>{_NUM})\s+(?:consecutive\s+)?(?:trials?|rounds?|iterations?)\s+(?:with(?:out)?\s+(?:any\s+)?improvement|without\s+improving|of\s+no\s+improvement|w/o\s+improvement)",
        rf"\bpatience\s*(?:of|=|:|is)?\s*(?P<n>{_NUM})(?:\s+trials?)?",
        rf"\b(?P<n>{_NUM})\s+trials?\s+(?:without|with\s+no|of\s+no)\s+improvement",
    ):
        match = sc.first(pattern)
        if match:
            p.set("patience", int(parse_number(match["n"])))
    target = (
        rf"\b(?:until|till|once|when|stop\s+(?:at|when|once))\s+(?:the\s+)?(?:(?P<metric>{_ANY_METRIC})\s+|(?:it|score|metric)\s+)?"
        rf"(?:reaches|hits|is\s+(?:at\s+least|above|over)|>=?|exceeds|gets\s+(?:to|above))\s*(?P<v>{_NUM})",
        rf"\btarget(?:\s+(?:of|value|score))?\s*(?:(?P<metric>{_ANY_METRIC})\s*)?(?:=|:|of)?\s*(?P<v>\d*\.\d+|\d+)\b",
    )
    for pattern in target:
        match = sc.first(pattern)
        if match:
            p.set("target", parse_number(match["v"]))
            if match["metric"]:
                p.set("metric", metric_of(match["metric"]))
    wall = (
        rf"\b(?:at\s+most|max(?:imum)?|within|under|no\s+more\s+than|up\s+to|limit(?:ed)?\s+(?:to|of)|"
        rf"wall[\s-]?clock(?:\s+(?:limit|time|budget))?(?:\s+of)?|time\s+(?:limit|budget)(?:\s+of)?|for)\s*"
        rf"(?P<n>{_NUM})\s*(?P<unit>minutes?|mins?|m|hours?|hrs?|h|seconds?|secs?|s)\b"
    )
    match = sc.first(wall)
    if match:
        unit = match["unit"].lower()
        scale = 60.0 if unit.startswith("h") else (1 / 60 if unit.startswith("s") else 1.0)
        p.set("wall_minutes", parse_number(match["n"]) * scale)


def _trials(sc: Scanner, p: _Parse) -> None:
    kind = r"(?:optuna\s+|tuning\s+|hyperparameter\s+|hpo\s+|random\s+search\s+|tpe\s+)?"
    counted = rf"\b(?:(?:max(?:imum)?|at\s+most|up\s+to)\s+)?(?P<n>{_NUM})\s+(?:more\s+)?{kind}trials?\b"
    match = sc.first(counted)
    if match:
        p.set("trials", int(parse_number(match["n"])))
    none = (
        r"\b(?:(?:a\s+)?baseline\s+only|only\s+(?:a\s+|the\s+)?baseline|just\s+(?:a\s+|the\s+)?baseline|no\s+tuning"
        r"|without\s+tuning|skip\s+(?:the\s+)?tuning|don'?t\s+tune|do\s+not\s+tune|zero\s+trials)\b"
    )
    if sc.first(none):
        p.set("trials", 0)


def _runtime(sc: Scanner, p: _Parse) -> None:
    kube = (
        r"\b(?:on\s+|in\s+|via\s+|using\s+|as\s+(?:a\s+)?)?(?:the\s+|a\s+)?"
        r"(?:kubernetes|k8s|eks|cluster)(?:\s+(?:jobs?|cluster))?\b"
    )
    local = (
        r"\blocally\b|\b(?:on|in)\s+(?:my\s+|this\s+|the\s+)?(?:machine|laptop|local\s*host|workstation)\b"
        r"|\blocal(?:\s+(?:runtime|process(?:es)?))?\b"
    )
    for runtime, pattern in (("kubernetes", kube), ("local", local)):
        for match in sc.find(pattern):
            sc.take(match)
            p.set("runtime", runtime)


def _dataset_words(sc: Scanner, p: _Parse) -> None:
    ver = r"(?P<ver>\d[\w.]*|v\d+|one|two|three|latest|newest)"
    patterns = (
        rf"\b(?:the\s+)?(?:v|version\s+)(?P<ver>\d[\w.]*)\s+of\s+(?:the\s+)?(?:dataset\s+)?(?P<name>{_IDENT})(?:\s+dataset)?",
        rf"\b(?:the\s+)?(?P<ver>latest|newest|current|most\s+recent)\s+(?:version\s+of\s+)?(?:the\s+)?(?:dataset\s+)?(?P<name>{_IDENT})(?:\s+dataset)?",
        rf"\b(?:dataset\s+)?(?P<name>{_IDENT})(?:\s+(?:dataset|data))?\s*,?\s*\(?\s*(?:version|ver\.?|v)\s*[:=#]?\s*{ver}\s*\)?",
        rf"\b(?:dataset\s+)?(?P<name>{_IDENT})(?:\s+(?:dataset|data))?\s*,?\s*\(?\s*(?P<ver>latest|newest)(?:\s+version)?\s*\)?",
    )
    for pattern in patterns:
        for match in sc.find(pattern):
            if match["name"].lower() in _RESERVED or _is_vocabulary(match["name"]):
                continue
            sc.take(match)
            version = match["ver"].lower().replace("most recent", "latest")
            version = str(int(parse_number(version))) if version in _WORD_NUMBERS else version
            _set_dataset(p, match["name"], version)
    _dataset_name_only(sc, p)


_VERSION_KEYS = frozenset({"version", "ver", "dataset_version"})
_OTHER_VERSION = re.compile(
    rf"\b(?:models?|python|package|library|lib|api|schema|code|git|sklearn|scikit-learn|mlflow|image|docker"
    rf"|{'|'.join(f'(?:{x})' for x in FAMILY_SYNONYMS.values())}|{UNSUPPORTED_FAMILIES})(?:'s)?\s*$",
    _F,
)
_VERSION_NUMBER_WORDS = "one|two|three|four|five|six|seven|eight|nine|ten"


def _bare_version(sc: Scanner, p: _Parse) -> None:
    # "version 1", "v 2", "@3", "version=1" with no dataset name in front: the version of the dataset
    # this message names, or (merged by ``agent.offline``) of the one the conversation still lacks a
    # version for. A version never moves to a different dataset (``agent.request.merge_drafts``).
    ver = rf"(?P<ver>v?\d[\w.]*|{_VERSION_NUMBER_WORDS})\b"
    patterns = (
        rf"(?<![\w.-])(?:(?:the\s+)?(?:dataset|data)(?:'s)?\s+)?(?:dataset_)?(?:version|ver\.?)"
        rf"\s*(?:[:=#]|is|should\s+be|number|no\.?)?\s*{ver}",
        r"(?<![\w.@/-])v\s?(?P<ver>\d[\w.]*)",
        r"(?<![\w.@/-])@\s?(?P<ver>v?\d[\w.-]*)",
    )
    for pattern in patterns:
        for match in sc.find(pattern):
            if _OTHER_VERSION.search(sc.text[: match.start()]):
                continue  # "model version 3", "python version 3.11": not a dataset version
            sc.take(match)
            version = _strip_trailing_punct(match["ver"].lower())
            version = str(int(parse_number(version))) if version in _WORD_NUMBERS else version
            p.set("version", version[1:] if version[:1] == "v" and version[1:].isdigit() else version)


def _dataset_name_only(sc: Scanner, p: _Parse) -> None:
    known = "|".join(KNOWN_DATASETS)
    for pattern in (
        rf"\b(?:on|dataset|using|from)\s+(?:the\s+)?(?:dataset\s+)?(?P<name>{_IDENT})(?:\s+(?:dataset|data))?\b",
        rf"\b(?:the\s+)?(?P<name>{_IDENT})\s+(?:dataset|data)\b",
        rf"\b(?P<name>{known})\b",
    ):
        for match in sc.find(pattern):
            name = match["name"]
            if name.lower() in _RESERVED or _is_vocabulary(name) or p.draft.get("dataset"):
                continue
            sc.take(match)
            _set_dataset(p, name, None)
    if sc.first(r"\b(?:the\s+)?(?:latest|newest|most\s+recent)(?:\s+version)?\b"):
        p.latest = True


def _is_vocabulary(word: str) -> bool:
    """Return whether ``word`` names a model family, metric or runtime rather than a dataset."""
    return family_of(word) is not None or metric_of(word) is not None


def family_of(text: str) -> str | None:
    """Return the model family a phrase names ('lgbm' -> 'lightgbm'), or None."""
    for family, pattern in FAMILY_SYNONYMS.items():
        if re.fullmatch(pattern, text.strip(), _F):
            return family
    return None


def metric_of(text: str) -> str | None:
    """Return the metric a phrase names ('AUROC' -> 'roc_auc'), or None."""
    for metric, pattern in METRIC_SYNONYMS.items():
        if re.fullmatch(pattern, text.strip(), _F):
            return metric
    return None


def _family_and_metric(sc: Scanner, p: _Parse) -> None:
    families = "|".join(f"(?:{x})" for x in FAMILY_SYNONYMS.values())
    for match in sc.find(rf"\b(?:{families})\b(?:\s+(?:model|classifier|regressor))?"):
        family = family_of(re.sub(r"\s+(?:model|classifier|regressor)$", "", sc.take(match), flags=_F))
        if p.draft.get("model_family") not in (None, family):
            p.notes.append(f"only one model family per request: kept {p.draft['model_family']}, not {family}")
        else:
            p.set("model_family", family)
    for match in sc.find(rf"\b(?:{UNSUPPORTED_FAMILIES})\b"):
        p.notes.append(
            f"{sc.take(match)} is not a supported model family (supported: {', '.join(SUPPORTED_FAMILIES)})"
        )
    for match in sc.find(rf"\b(?:{_ANY_METRIC})\b"):
        metric = metric_of(sc.take(match))
        if p.draft.get("metric") not in (None, metric):
            p.notes.append(f"one primary metric per request: kept {p.draft['metric']}, not {metric}")
        else:
            p.set("metric", metric)
    for match in sc.find(r"\b(?:mse|mape|precision|recall|pr[\s_-]?auc|average\s+precision)\b"):
        p.notes.append(
            f"{sc.take(match)} is not a supported metric (supported: {', '.join(METRIC_SYNONYMS)})"
        )


REQUEST_RULES: tuple[Rule, ...] = (
    _uri,
    _sensitive,
    _dataset_at_version,
    _experiment,
    _path,
    _namespace,
    _objective,
    _search_space,
    _seed_and_params,
    _budget,
    _parallelism,
    _stopping,
    _trials,
    _runtime,
    _family_and_metric,
    _dataset_words,
    _bare_version,
)


def _forbidden_action(sc: Scanner) -> ForbiddenAction | None:
    """Return the first forbidden action asked for; negated ones ("don't deploy") are consumed."""
    found: ForbiddenAction | None = None
    for action, pattern in _FORBIDDEN:
        for match in sc.find(pattern):
            negation = _NEGATION.search(sc.work[: match.start()])
            sc.take(match)
            if negation is not None:
                sc.take(negation)
            elif found is None:
                found = action
    return found


def _consume_all(sc: Scanner, pattern: re.Pattern[str]) -> bool:
    """Consume every match of ``pattern``; return whether there was one."""
    matches = list(sc.find(pattern))
    for match in matches:
        sc.take(match)
    return bool(matches)


def classify(sc: Scanner, p: _Parse) -> Intent | Literal["fields_only"]:
    """Return the intent of the message after the request rules consumed their fields.

    Precedence: forbidden > training on raw data > cancel > question opening ("what/which/show ...",
    also inside polite wrappers) > experiment verb > question asked later or other question cues >
    bare request fields > unknown.
    """
    forbidden = _forbidden_action(sc)
    if forbidden is not None:
        p.draft["forbidden_action"] = forbidden
        return "forbidden"
    experiment_verb = _consume_all(sc, _EXPERIMENT_VERBS)
    cancel = _consume_all(sc, _CANCEL)
    raw = _consume_all(sc, _RAW_DATA)
    about_runs = _DOMAIN_NOUNS.search(sc.text) is not None or bool(p.draft.get("dataset"))
    question = about_runs and asks_question(sc.text, sc.work, experiment_verb)
    _place_locations(sc, p, training=not (question or cancel))
    has_fields = any(v not in (None, {}, []) for v in p.draft.values())
    raw_request = p.draft.get("dataset_uri") or (raw and not question)
    if raw_request and (experiment_verb or (has_fields and not cancel)):
        p.draft["forbidden_action"] = "raw_data"
        return "forbidden"
    if cancel:
        return "cancel"
    if question:
        return "question"
    if experiment_verb:
        return "experiment"
    return "fields_only" if has_fields else "unknown"


def asks_question(text: str, unconsumed: str, experiment_verb: bool) -> bool:
    """Return whether a message asks a question (whether it is about runs is checked elsewhere).

    A question opening at the start, after any polite lead ("Could you please show me ...", "Hi! Which
    run ..."), wins over an experiment verb; a question asked in a later sentence, a cue word (best,
    top, vs, ...) or a question mark counts only when the message does not ask to train.
    """
    if _opens_question(text):
        return True
    if experiment_verb:
        return False
    clauses = [c for c in re.split(r"(?<=[.!?;:,])\s+|\n+|\s+[—–-]+\s+", text) if c.strip()]
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


# A location mentioned in passing: where things are stored or written, docs, a tracking server, a DB.
_IN_PASSING = re.compile(
    r"\b(?:db|database|server|hosts?|hosted|tracking|backend|store|stored|registry|mlflow|connection|endpoint"
    r"|password|credentials?|creds|dashboard|ui|outputs?|results?|artifacts?|logs?|reports?|docs?|wiki"
    r"|documentation|ticket|writ(?:e|es|ing|ten)|wrote|sav(?:e|es|ed|ing)|upload\w*|send\w*|sent|email\w*"
    r"|notify|link|dump(?:s|ed)?\s+(?:to|into)|export(?:s|ed)?\s+(?:to|into))\b",
    _F,
)
_DATA_SLOT = re.compile(
    r"\b(?:on|from|using|use|with|in|at|of|read|load|ingest|data|dataset|file|table|path|csv|parquet)\b",
    _F,
)
_CONNECTION_SCHEME = re.compile(
    r"^(?:postgres\w*|mysql\w*|mariadb|mssql|sqlserver|oracle|sqlite|mongodb\w*|redis\w*|jdbc:\w+|amqps?"
    r"|kafka)://|^[^/\s]+://[^/@\s]*@",
    _F,
)


def _place_locations(sc: Scanner, p: _Parse, training: bool) -> None:
    """Record the path/URI the user wants to train on as ``dataset_uri``; note the others as ignored.

    A location is training data only in a message that asks to train (or supplies request fields),
    in a clause that names data ("on", "from", "using", "dataset", a training verb) and does not say
    it is something else (a tracking DB, where results are saved, a docs link). A connection string
    or a URI with credentials counts only in a clause with a training verb.
    """
    if not training:
        return
    note = "ignored a link or path that is not the training data (not repeated)"
    for start, end, location in p.locations:
        if _is_training_data(sc.text, start, end):
            p.set("dataset_uri", location)
            continue
        if note not in p.notes:
            p.notes.append(note)
        clause_start = _clause_start(sc.text, start)
        if not _EXPERIMENT_VERBS.search(sc.text[clause_start:start]):
            sc.consume(clause_start, start)  # "our tracking db is": the note explains it


def _clause_start(text: str, position: int) -> int:
    """Return where the clause holding ``position`` starts (after the last , ; . ! ? or dash)."""
    boundaries = list(re.finditer(r"[.;!?,\n]\s|\s[—–-]+\s", text[:position]))
    return boundaries[-1].end() if boundaries else 0


def _is_training_data(text: str, start: int, end: int) -> bool:
    clause = text[_clause_start(text, start) : start]
    verb = _EXPERIMENT_VERBS.search(clause) is not None
    if _CONNECTION_SCHEME.match(text[start:end]) and not verb:
        return False
    if not clause.strip():  # the message opens with the location: judge it by the rest of the message
        return _IN_PASSING.search(text[end:]) is None
    return _IN_PASSING.search(clause) is None and (verb or _DATA_SLOT.search(clause) is not None)


def parse_message(text: str) -> tuple[IntakeDecision, bool]:
    """Parse one user message; return the decision and whether it only supplied request fields.

    A fields-only message ("breast_cancer@1, lightgbm") is recorded as an experiment; the caller may
    merge it with the request it answers (see ``agent.offline``).
    """
    sc = Scanner(text)
    p = _Parse()
    for rule in REQUEST_RULES:
        rule(sc, p)
    _baseline_means_no_tuning(sc, p)
    intent = classify(sc, p)
    if p.draft.get("namespace") and p.draft.get("runtime") is None:
        p.draft["runtime"] = "kubernetes"
    return _decision(text, sc, p, intent), intent == "fields_only"


def _baseline_means_no_tuning(sc: Scanner, p: _Parse) -> None:
    # "a lightgbm baseline" with no trial count and no word of tuning: the user wants only a baseline.
    mentions_tuning = re.search(r"\btun(?:e|ing)\b|\bsweep\b|\bsearch\b", sc.text, _F)
    if p.draft.get("trials") is None and re.search(r"\bbaseline\b", sc.work, _F) and not mentions_tuning:
        p.draft["trials"] = 0


def _decision(text: str, sc: Scanner, p: _Parse, intent: Intent | Literal["fields_only"]) -> IntakeDecision:
    forbidden_action = p.draft.pop("forbidden_action", None)
    request = ExperimentRequestDraft(**p.draft)
    shown = redacted(text, p.redactions).strip()  # secrets and credentials are never repeated
    question = shown if intent == "question" else None
    if intent in ("experiment", "fields_only", "unknown"):
        not_understood = [*p.notes, *sc.leftovers()]
    else:
        not_understood = [] if intent == "question" else p.notes
    if intent == "unknown" and not not_understood:
        not_understood = [shown or "(empty message)"]
    return IntakeDecision(
        intent="experiment" if intent == "fields_only" else intent,
        forbidden_action=forbidden_action,
        request=request,
        question=question,
        not_understood=not_understood,
    )


def redacted(text: str, redactions: list[tuple[int, int, str]]) -> str:
    """Return ``text`` with each (start, end) span replaced by its stand-in."""
    parts, done = [], 0
    for start, end, stand_in in sorted(redactions):
        if end > done:  # an overlapping span hides what the previous one left
            parts += [text[done : max(start, done)], stand_in]
            done = end
    return "".join(parts) + text[done:]


QuestionKind = Literal[
    "runs", "best_run", "latest_run", "list_runs", "list_datasets", "describe_dataset", "unclear"
]
_RUN_ID = r"[0-9a-f]{32}|(?=[\w-]*\d)[A-Za-z0-9][\w-]{3,}"


@dataclass(frozen=True)
class QuestionPlan:
    """What a question about runs or datasets asks, in terms of the read-only tools."""

    kind: QuestionKind
    experiment: str | None = None
    metric: str | None = None
    run_ids: tuple[str, ...] = ()
    dataset: str | None = None
    version: str | None = None
    limit: int = 1
    reverse: bool = False  # "worst"/"lowest <higher-is-better metric>": order opposite to best


def run_ids_in(text: str) -> tuple[str, ...]:
    """Return run IDs named in ``text``: 32-hex IDs anywhere, and IDs after 'run'/'runs' (and lists)."""
    ids = re.findall(r"\b[0-9a-f]{32}\b", text, _F)
    for match in re.finditer(rf"\bruns?\s+(?:id\s+)?(?P<first>{_RUN_ID})\b", text, _F):
        ids.append(match["first"])
        rest = text[match.end() :]
        while more := re.match(
            rf"\s*(?:,|and|vs\.?|versus|with|to)\s*(?:run\s+)?(?P<id>{_RUN_ID})\b", rest, _F
        ):
            ids.append(more["id"])
            rest = rest[more.end() :]
    return tuple(dict.fromkeys(i for i in ids if i.lower() not in _RESERVED))


def _question_experiment(text: str, decision: IntakeDecision, run_ids: tuple[str, ...]) -> str | None:
    if decision.request.experiment:
        return decision.request.experiment
    for match in reversed(
        list(re.finditer(r"\b(?:in|for|of|from|within)\s+(?:the\s+)?(?P<name>[\w][\w.-]*)", text, _F))
    ):
        name = _strip_trailing_punct(match["name"])
        if name.lower() not in _RESERVED and not _is_vocabulary(name) and name not in run_ids:
            return name
    return None


def parse_question(text: str) -> QuestionPlan:
    """Return which read-only tools a question about runs or datasets needs."""
    decision, _ = parse_message(text)
    ids = run_ids_in(text)
    request = decision.request
    if ids:
        return QuestionPlan("runs", run_ids=ids, metric=request.metric)
    if re.search(r"\bdatasets\b|\bcatalog\b|\bwhat\s+data\b", text, _F) and not request.dataset:
        return QuestionPlan("list_datasets")
    mentions_runs = re.search(r"\b(?:runs?|trials?|models?|results?|experiments?)\b", text, _F)
    if request.dataset and not mentions_runs:
        return QuestionPlan("describe_dataset", dataset=request.dataset, version=request.version)
    experiment = _question_experiment(text, decision, ids)
    top = re.search(rf"\btop\s+(?P<n>{_NUM})\b", text, _F)
    limit = int(parse_number(top["n"])) if top else 1
    if re.search(r"\b(?:last|latest|most\s+recent|newest|previous)\b", text, _F):
        return QuestionPlan("latest_run", experiment=experiment, metric=request.metric)
    if re.search(r"\b(?:best|highest|lowest|top|worst|winner|winning|which\s+run)\b", text, _F):
        reverse = _asks_for_reverse(text, request.metric)
        return QuestionPlan("best_run", experiment, request.metric, limit=limit, reverse=reverse)
    if experiment or mentions_runs:
        return QuestionPlan("list_runs", experiment=experiment, metric=request.metric, limit=10)
    return QuestionPlan("unclear")


def _asks_for_reverse(text: str, metric: str | None) -> bool:
    """Return whether the question wants the opposite of 'best' (worst, or lowest AUC)."""
    from tools.specs import metric_direction

    if re.search(r"\bworst\b", text, _F):
        return True
    direction = metric_direction(metric) if metric else "maximize"
    if re.search(r"\blowest\b", text, _F):
        return direction == "maximize"
    if re.search(r"\bhighest\b", text, _F):
        return direction == "minimize"
    return False
