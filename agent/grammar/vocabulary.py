"""The words the request grammar knows: numbers, model families, metrics, datasets and action phrases.

Tables are data; the lookups below them (``family_of``, ``metric_of``, ``parse_number``) are the only
way other grammar modules read them, so a new synonym is added in one place.
"""

from __future__ import annotations

import re
from typing import Any, get_args

from agent.state import ForbiddenAction
from tools.core.specs import ModelFamily

FLAGS = re.IGNORECASE

# --- numbers
WORD_NUMBERS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "twelve": 12, "fifteen": 15, "twenty": 20, "thirty": 30, "forty": 40,
    "fifty": 50, "hundred": 100, "a": 1, "an": 1, "a single": 1, "single": 1,
}  # fmt: skip
NUMBER = r"(?:\d+(?:\.\d+)?|\.\d+|" + "|".join(sorted(WORD_NUMBERS, key=len, reverse=True)) + r")"
# A dataset, experiment or run name: starts with a letter, no trailing hyphen.
IDENT = r"[A-Za-z][\w-]*[A-Za-z0-9]|[A-Za-z]"
# A registered training project's name (``expagent entrypoints register --name``): dots allowed too.
PROJECT_NAME = r"[A-Za-z][\w.-]*[A-Za-z0-9]|[A-Za-z]"

# --- model families
FAMILY_SYNONYMS: dict[str, str] = {
    "lightgbm": r"light[\s_-]?gbm|lgbm|lgb|gbm",
    "xgboost": r"xg[\s_-]?boost|xgb",
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
    r"catboost|neural[\s-]?net(?:work)?s?|deep[\s-]learning|multi[\s-]?layer\s+perceptrons?|mlps?"
    r"|perceptrons?|transformers?|bert|cnns?|rnns?|lstms?|svms?|svc|svr|support[\s-]vector(?:\s+machines?)?"
    r"|knn|k[\s-]?nearest[\s-]neighbou?rs?|nearest[\s-]neighbou?rs?|naive[\s-]?bayes|decision[\s-]trees?"
    r"|extra[\s-]?trees|adaboost|linear[\s-]regression|ridge|lasso|elastic[\s-]?net|gaussian[\s-]process(?:es)?"
    r"|tabnet|prophet|arima"
)

# --- metrics
METRIC_SYNONYMS: dict[str, str] = {
    "roc_auc": r"roc[\s_-]?auc|au[\s-]?roc|auc(?:[\s_-]roc)?|area\s+under\s+(?:the\s+)?(?:roc\s+)?curve",
    "accuracy": r"accuracy|acc",
    "f1": r"f1(?:[\s_-]?score)?|f-1|f[\s-]score|f[\s-]measure",
    "log_loss": r"log[\s_-]?loss|neg_log_loss|cross[\s_-]?entropy",
    "rmse": r"rmse|root[\s_-]mean[\s_-]squared[\s_-]error",
    "mae": r"mae|mean[\s_-]absolute[\s_-]error",
    "r2": r"r2|r[\s_-]?squared|r\^2|r²|coefficient\s+of\s+determination",
}
# Metrics users ask for that the trainer does not report; named back with the supported list.
UNSUPPORTED_METRICS = r"mse|mape|precision|recall|pr[\s_-]?auc|average\s+precision"


def _any_of(synonyms: dict[str, str]) -> str:
    return "|".join(f"(?:{pattern})" for pattern in synonyms.values())


#: a short run ID standing alone ("a1b2c3d4 vs e5f6a7b8"): 8-31 hex characters with a letter and a digit.
SHORT_ID = r"(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{8,31}"
#: a short ID of digits only where a run is asked about: at the end or before "fail", "logs", "vs"…
#: ("what killed 12345678", "12345678 logs"); ``questions.run_ids_in`` also drops values ("seed 12345678").
DIGITS_ID = (
    r"(?<![\w.=@:/-])\d{8,31}(?=\s*(?:$|[?!,;)\]]|[.-](?!\w)|(?:fail|failed|crash|crashed|die|died|"
    r"stop|stopped|get\s+killed|logs?|vs\.?|versus|and|or)\b))"
)
#: two short IDs side by side ("X vs Y", "X and Y", "X, Y"): either may be digits only.
ID_PAIR = re.compile(
    r"(?<![\w.])(?P<a>(?=[0-9a-f]*\d)[0-9a-f]{8,31})\s*(?:,|and|vs\.?|versus|with|to)\s*"
    r"(?P<b>(?=[0-9a-f]*\d)[0-9a-f]{8,31})(?![\w.])"
)

ANY_FAMILY = _any_of(FAMILY_SYNONYMS)
ANY_METRIC = _any_of(METRIC_SYNONYMS)

# --- datasets and names
KNOWN_DATASETS = ("breast_cancer", "wine", "diabetes", "digits", "iris", "california_housing")
# ``key=value`` keys that name the dataset version, not a training parameter.
VERSION_KEYS = frozenset({"version", "ver", "dataset_version"})
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
    possibly hpo search searches wall clock u ur pls plz thx ty""".split()
)
RESERVED = FILLER | {"kubernetes", "k8s", "eks", "cluster", "locally", "local", "namespace", "optuna", "raw"}
RESERVED |= {"today", "yesterday", "tonight", "week"}  # "runs from yesterday" names no dataset

# --- action phrases
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
# Phrases asking for an action expagent never takes, in the order they are checked.
FORBIDDEN_PHRASES: tuple[tuple[ForbiddenAction, re.Pattern[str]], ...] = tuple(
    (action, re.compile(pattern, FLAGS)) for action, pattern in _FORBIDDEN_PATTERNS
)
# A negation just before a forbidden phrase ("don't deploy", "no need to register it").
NEGATION = re.compile(
    r"(?:\bdon'?t|\bdo\s+not|\bnever|\bwithout|\bnot|\bno\s+need\s+to|\bshouldn'?t|\bwon'?t|\bno)\s+(?:\w+\s+){0,3}$",
    FLAGS,
)
# What the model is to predict ("predict deployment failures"): never a request to act.
OBJECTIVE = re.compile(
    r"\b(?:predict|forecast|classify|detect|estimate|flag|identify|score)(?:s|es|ed|ing)?\s+"
    r"(?:[\w'-]+\s*){1,5}?(?=\s+(?:on|using|from|with|in|for|dataset|and|then|but|so|via)\b|[,.;:!?\x00]|$)",
    FLAGS,
)
#: asking for advice about an action is not the action ("should I stop the study?", "should we retrain?").
ADVICE = re.compile(r"^\s*(?:should|shall|ought|must)\s+(?:i|we)\b", FLAGS)
CANCEL = re.compile(r"\b(?:cancel|abort|kill|terminate|halt)\w*\b|\bstop\b", FLAGS)
EXPERIMENT_VERBS = re.compile(
    r"\b(?:re)?train(?:s|ed|ing)?\b|\bfit(?:s|ting)?\b|\btun(?:e|es|ed|ing)\b|\bsweep\b|\bbaseline\b|\bhpo\b"
    r"|\bhyper[\s-]?param(?:eter)?s?\s+(?:search|tuning|optimi[sz]ation)\b|\bbenchmark\b"
    r"|\b(?:launch|start|kick\s+off|run|do|execute|set\s+up)\s+(?:(?:a|an|the|some|new|quick)\s+)*"
    r"(?:experiment|training|study|trials?|job)s?\b|\bbuild\s+(?:a\s+|an\s+)?(?:model|classifier|regressor)\b",
    FLAGS,
)
RAW_DATA = re.compile(r"\b(?:raw|unvalidated|unversioned|uncurated)\b", FLAGS)


def parse_number(text: str) -> float:
    """Return the value of a numeral or number word ('20', '0.5', 'twenty')."""
    key = " ".join(text.lower().split())
    return float(WORD_NUMBERS[key]) if key in WORD_NUMBERS else float(key)


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


def family_of(text: str) -> str | None:
    """Return the model family a phrase names ('lgbm' -> 'lightgbm'), or None."""
    return _synonym_of(FAMILY_SYNONYMS, text)


def metric_of(text: str) -> str | None:
    """Return the metric a phrase names ('AUROC' -> 'roc_auc'), or None."""
    return _synonym_of(METRIC_SYNONYMS, text)


def _synonym_of(synonyms: dict[str, str], text: str) -> str | None:
    for canonical, pattern in synonyms.items():
        if re.fullmatch(pattern, text.strip(), FLAGS):
            return canonical
    return None


def may_be_name(word: str) -> bool:
    """Return whether ``word`` may name a dataset or experiment (not filler, a family or a metric)."""
    return word.lower() not in RESERVED and family_of(word) is None and metric_of(word) is None
