"""Request rules for every field but the dataset and the data location.

Secrets, the objective, experiment, namespace, search space, params, budget, parallelism, stopping,
trials, runtime, model family and metric: one ``take_*`` rule each, in ``agent.grammar.intake``'s order.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable

from agent.grammar.scanner import Findings, Scanner, strip_trailing_punct
from agent.grammar.search_space import read_search_space
from agent.grammar.vocabulary import (
    ANY_FAMILY,
    ANY_METRIC,
    FLAGS,
    METRIC_SYNONYMS,
    NUMBER,
    OBJECTIVE,
    RESERVED,
    SUPPORTED_FAMILIES,
    UNSUPPORTED_FAMILIES,
    UNSUPPORTED_METRICS,
    VERSION_KEYS,
    family_of,
    metric_of,
    parse_number,
    parse_value,
)

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
_QUOTED_NAME = r"['\"“‘`](?P<name>[^'\"”’`]+)['\"”’`]"
_EXPERIMENT_LEAD = r"(?<![\w-])(?:mlflow\s+)?experiment(?:\s+name)?(?:\s*[=:]\s*|\s+(?:named\s+|called\s+)?)"
_EXPERIMENT_NAMES = (
    _EXPERIMENT_LEAD + _QUOTED_NAME,
    _EXPERIMENT_LEAD + r"(?P<name>[\w][\w.\-/]*)",
    r"\b(?:in|to|under)\s+(?:the\s+)?(?P<name>[\w][\w.-]*)\s+(?:mlflow\s+)?experiment\b",
)
_NAMESPACE = r"(?P<name>[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)"
_NAMESPACE_NAMES = (
    rf"\b(?:(?:k8s|kubernetes)\s+)?namespace\s*(?:named\s+|called\s+|=\s*|:\s*)?['\"]?{_NAMESPACE}['\"]?",
    rf"\b(?:in\s+)?(?:the\s+)?['\"]?{_NAMESPACE}['\"]?\s+namespace\b",
)
_PER_RUN = r"(?:\s+(?:per|each|a)\s+(?:run|trial|job))?"
_PARALLELISM = (
    rf"\b(?P<n>{NUMBER})\s+(?:(?:trials?|jobs?|runs?|workers?)\s+)?(?:in\s+parallel|at\s+(?:a|one)\s+time|at\s+once|concurrent(?:ly)?|simultaneous(?:ly)?|parallel(?:\s+(?:jobs?|trials?|runs?|workers?))?)\b",
    rf"\b(?:parallelism|concurrency|max[\s_]concurrent(?:[\s_]jobs)?|n_jobs|workers)\s*(?:of|=|:|is)?\s*(?P<n>{NUMBER})\b",
)
_PATIENCE = (
    rf"\bstop(?:ping)?\s+(?:early\s+)?(?:after|if|when|once)\s+(?:there\s+(?:are|is|have\s+been)\s+)?(?P<n>{NUMBER})\s+(?:consecutive\s+)?(?:trials?|rounds?|iterations?)\s+(?:with(?:out)?\s+(?:any\s+)?improvement|without\s+improving|of\s+no\s+improvement|w/o\s+improvement)",
    rf"\bpatience\s*(?:of|=|:|is)?\s*(?P<n>{NUMBER})(?:\s+trials?)?",
    rf"\b(?P<n>{NUMBER})\s+trials?\s+(?:without|with\s+no|of\s+no)\s+improvement",
)
_TARGET = (
    rf"\b(?:until|till|once|when|as\s+soon\s+as|(?:early[\s-]?)?stop(?:ping)?\s+(?:early\s+)?(?:at|when|once|if|as\s+soon\s+as)|if)\s+"
    rf"(?:the\s+)?(?:(?P<metric>{ANY_METRIC})\s+|(?:it|score|metric)\s+)?"
    rf"(?:reaches|hits|is\s+(?:at\s+least|above|over)|>=?|exceeds|gets\s+(?:to|above))\s*(?P<v>{NUMBER})"
    r"(?:\s*,?\s*(?:then\s+|and\s+)?stop\b)?",  # "if roc_auc is above 0.99, stop" is a target, not a cancel
    rf"\btarget(?:\s+(?:of|value|score))?\s*(?:(?P<metric>{ANY_METRIC})\s*)?(?:=|:|of)?\s*(?P<v>\d*\.\d+|\d+)\b",
)
_WALL_CLOCK = (
    rf"\b(?:at\s+most|max(?:imum)?|within|under|no\s+more\s+than|up\s+to|limit(?:ed)?\s+(?:to|of)|"
    rf"wall[\s-]?clock(?:\s+(?:limit|time|budget))?(?:\s+of)?|time\s+(?:limit|budget)(?:\s+of)?|for)\s*"
    rf"(?P<n>{NUMBER})\s*(?P<unit>minutes?|mins?|m|hours?|hrs?|h|seconds?|secs?|s)\b"
)
_TRIAL_KIND = r"(?:optuna\s+|tuning\s+|hyperparameter\s+|hpo\s+|random\s+search\s+|tpe\s+)?"
# "20 trials", "a 5-trial sweep", "10-trial study" (a hyphenated count names the study it sizes).
_TRIAL_COUNT = (
    rf"\b(?:(?:max(?:imum)?|at\s+most|up\s+to)\s+)?(?P<n>{NUMBER})(?:\s+|\s*-\s*)(?:more\s+)?{_TRIAL_KIND}"
    r"trials?\b(?:\s+(?:study|studies|hpo)\b)?"
)
_NO_TUNING = (
    r"\b(?:(?:a\s+)?baseline\s+only|only\s+(?:a\s+|the\s+)?baseline|just\s+(?:a\s+|the\s+)?baseline|no\s+tuning"
    r"|without\s+tuning|skip\s+(?:the\s+)?tuning|don'?t\s+tune|do\s+not\s+tune|zero\s+trials)\b"
)
_RUNTIMES = (
    (
        "kubernetes",
        r"\b(?:on\s+|in\s+|via\s+|using\s+|as\s+(?:a\s+)?)?(?:the\s+|a\s+)?"
        r"(?:kubernetes|k8s|eks|cluster)(?:\s+(?:jobs?|cluster))?\b",
    ),
    (
        "local",
        r"\blocally\b|\b(?:on|in)\s+(?:my\s+|this\s+|the\s+)?(?:machine|laptop|local\s*host|workstation)\b"
        r"|\blocal(?:\s+(?:runtime|process(?:es)?))?\b",
    ),
)


def take_sensitive(sc: Scanner, p: Findings) -> None:
    """Drop secrets and personal data so no later rule (or the not-understood list) repeats them."""
    for label, pattern in _SENSITIVE:
        for match in sc.find(pattern):
            sc.take(match)
            p.redactions.append((*match.span(), "[redacted]"))
            p.note_once(f"ignored {label} in the message (never needed for training, not repeated)")


def take_objective(sc: Scanner, p: Findings) -> None:
    """Consume what the model predicts: "to predict deployment failures" is not a request to deploy."""
    sc.take_all(OBJECTIVE)


def take_experiment(sc: Scanner, p: Findings) -> None:
    """Read the MLflow experiment name ("experiment 'churn'", "in the smoke experiment")."""
    name = _first_name(sc, _EXPERIMENT_NAMES)
    if name:
        p.set("experiment", name)


def take_namespace(sc: Scanner, p: Findings) -> None:
    """Read the Kubernetes namespace ("namespace ml-team", "in the ml-team namespace")."""
    name = _first_name(sc, _NAMESPACE_NAMES)
    if name:
        p.set("namespace", name)


def _first_name(sc: Scanner, patterns: tuple[str, ...]) -> str | None:
    """Consume and return the first usable ``name`` group of ``patterns`` (tried in order)."""
    for pattern in patterns:
        for match in sc.find(pattern):
            name = strip_trailing_punct(match["name"])
            if name and name.lower() not in RESERVED:
                sc.take(match)
                return name
    return None


def take_search_space(sc: Scanner, p: Findings) -> None:
    """Read search-space overrides: ranges ("lr in [0.01, 0.1]", "learning rate 1e-3..1e-1 log") and
    choices ("n_estimators in [100, 200, 400]"); the phrasings are in ``grammar.search_space``."""
    read_search_space(sc, p)


def take_seed_and_params(sc: Scanner, p: Findings) -> None:
    """Read the seed, ``n_trials=N`` and ``key=value`` training parameters."""
    seed = sc.first(r"\b(?:random[\s_]?)?seed\s*(?:of|=|:|is|to)?\s*(?P<n>\d+)\b")
    if seed:
        p.set("seed", int(seed["n"]))
    trials = sc.first(r"\bn_trials\s*=\s*(?P<n>\d+)\b")
    if trials:
        p.set("trials", int(trials["n"]))
    for match in sc.find(r"\b(?P<key>[a-z_][a-z0-9_]*)\s*=\s*(?P<value>[^\s,;\x00]+)"):
        if match["key"].lower() in VERSION_KEYS:
            continue  # "version=2" is the dataset version (``agent.grammar.datasets``)
        sc.take(match)
        p.draft["params"][match["key"]] = parse_value(strip_trailing_punct(match["value"]))
    for match in sc.find(_BARE_PAIR):
        if match["key"] in _named_hyperparameters():  # "n_estimators 50": a name the allowlist knows
            sc.take(match)
            p.draft["params"][match["key"]] = parse_value(match["value"])


# "with n_estimators 50" (no "=" or "to"): one number after a hyperparameter name, not a range.
_BARE_PAIR = re.compile(
    r"\b(?P<key>[a-z][a-z0-9]*_[a-z0-9_]+)\s+(?:of\s+)?(?P<value>-?\d+(?:\.\d+)?(?:e-?\d+)?)"
    r"(?![\w.]|\s*(?:-|\.\.|to\b|and\s+-?\d|,\s*-?\d))",
    re.I,
)


@functools.cache
def _named_hyperparameters() -> frozenset[str]:
    """Return the hyperparameter names with an underscore that some built-in family has (the allowlist)."""
    from tools.guard.allowlists import allowed_hyperparameters

    return frozenset(name for names in allowed_hyperparameters().values() for name in names if "_" in name)


def take_budget(sc: Scanner, p: Findings) -> None:
    """Read compute budget (CPU/GPU hours) and per-run resources (GPUs, CPUs, memory)."""
    lead = (
        r"(?:(?:a\s+|total\s+|compute\s+)?budget\s+(?:of\s+|is\s+|=\s*|:\s*)?"
        r"|within\s+|up\s+to\s+|at\s+most\s+|max(?:imum)?\s+|under\s+)?"
    )
    unit = r"(?P<kind>cpu|gpu|core)s?[\s-]?(?P<unit>hours?|hrs?|h|minutes?|mins?)\b"
    for match in sc.find(rf"\b{lead}(?P<n>{NUMBER})\s*{unit}"):
        sc.take(match)
        hours = parse_number(match["n"]) / (60 if match["unit"].lower().startswith("m") else 1)
        p.set("gpu_hours" if match["kind"].lower() == "gpu" else "cpu_hours", hours)
    for match in sc.find(rf"\b(?:with\s+|using\s+|on\s+)?(?P<n>{NUMBER})\s*(?:x\s*)?gpus?\b{_PER_RUN}"):
        sc.take(match)
        p.set("gpus_per_run", int(parse_number(match["n"])))
    for match in sc.find(rf"\b(?:with\s+|using\s+)?(?P<n>{NUMBER})\s*(?:v?cpus?|cores?)\b{_PER_RUN}"):
        sc.take(match)
        p.set("cpus_per_run", parse_number(match["n"]))
    memory = rf"(?P<n>\d+(?:\.\d+)?)\s*(?:gb|gib|g)\b(?:\s+(?:of\s+)?(?:memory|ram|mem))?{_PER_RUN}"
    for match in sc.find(rf"\b(?:(?:memory|ram|mem)\s*(?:of|=|:)?\s*)?{memory}"):
        sc.take(match)
        p.set("memory_gb_per_run", parse_number(match["n"]))


def take_parallelism(sc: Scanner, p: Findings) -> None:
    """Read how many trials may run at once ("3 in parallel", "concurrency 2")."""
    _take_counts(sc, p, "parallelism", _PARALLELISM)


_NO_WARM_START = (
    r"\b(?:no|without(?:\s+a)?|skip(?:\s+the)?|disable(?:\s+the)?)\s+warm[\s-]?start(?:ing)?\b"
    r"|\bcold[\s-]start\b"
)


def take_stopping(sc: Scanner, p: Findings) -> None:
    """Read stopping rules: patience, a target score and a wall-clock limit."""
    _take_counts(sc, p, "patience", _PATIENCE)
    for pattern in _TARGET:
        match = sc.first(pattern)
        if match:
            p.set("target", parse_number(match["v"]))
            if match["metric"]:
                p.set("metric", metric_of(match["metric"]))
    if sc.first(_NO_WARM_START):
        p.set("warm_start", False)
    match = sc.first(_WALL_CLOCK)
    if match:
        unit = match["unit"].lower()
        scale = 60.0 if unit.startswith("h") else (1 / 60 if unit.startswith("s") else 1.0)
        p.set("wall_minutes", parse_number(match["n"]) * scale)


def _take_counts(sc: Scanner, p: Findings, key: str, patterns: tuple[str, ...]) -> None:
    """Set ``key`` to the whole number in group ``n`` of the first match of each pattern."""
    for pattern in patterns:
        match = sc.first(pattern)
        if match:
            p.set(key, int(parse_number(match["n"])))


def take_trials(sc: Scanner, p: Findings) -> None:
    """Read the number of tuning trials ("20 trials"), or zero for "baseline only" / "no tuning"."""
    match = sc.first(_TRIAL_COUNT)
    if match:
        p.set("trials", int(parse_number(match["n"])))
    if sc.first(_NO_TUNING):
        p.set("trials", 0)


def take_runtime(sc: Scanner, p: Findings) -> None:
    """Read where jobs run: Kubernetes ("on the cluster", "k8s") or locally."""
    for runtime, pattern in _RUNTIMES:
        for match in sc.find(pattern):
            sc.take(match)
            p.set("runtime", runtime)


def take_family_and_metric(sc: Scanner, p: Findings) -> None:
    """Read the model family and the primary metric; name unsupported ones back with the supported list."""
    family_pattern = rf"\b(?:{ANY_FAMILY})\b(?:\s+(?:model|classifier|regressor))?"
    suffix = r"\s+(?:model|classifier|regressor)$"
    _take_single(sc, p, family_pattern, "model_family", "only one model family",
                 lambda text: family_of(re.sub(suffix, "", text, flags=FLAGS)))  # fmt: skip
    _name_unsupported(sc, p, UNSUPPORTED_FAMILIES, "model family", SUPPORTED_FAMILIES)
    _take_single(sc, p, rf"\b(?:{ANY_METRIC})\b", "metric", "one primary metric", metric_of)
    _name_unsupported(sc, p, UNSUPPORTED_METRICS, "metric", METRIC_SYNONYMS)


def _take_single(
    sc: Scanner, p: Findings, pattern: str, key: str, conflict: str, normalize: Callable[[str], str | None]
) -> None:
    """Set ``key`` from the first match; later different matches are noted, not silently dropped."""
    for match in sc.find(pattern):
        value = normalize(sc.take(match))
        if p.draft.get(key) not in (None, value):
            p.notes.append(f"{conflict} per request: kept {p.draft[key]}, not {value}")
        else:
            p.set(key, value)


def _name_unsupported(sc: Scanner, p: Findings, pattern: str, label: str, supported: Iterable[str]) -> None:
    """Note every unsupported name with the supported list, so the user learns what to ask for."""
    for match in sc.find(rf"\b(?:{pattern})\b"):
        p.notes.append(f"{sc.take(match)} is not a supported {label} (supported: {', '.join(supported)})")


def baseline_means_no_tuning(sc: Scanner, p: Findings) -> None:
    """Set zero trials for "a lightgbm baseline" with no trial count and no word of tuning."""
    mentions_tuning = re.search(r"\btun(?:e|ing)\b|\bsweep\b|\bsearch\b", sc.text, FLAGS)
    if p.draft.get("trials") is None and re.search(r"\bbaseline\b", sc.work, FLAGS) and not mentions_tuning:
        p.draft["trials"] = 0


_CV_FOLDS = (
    rf"\b(?:cv|cross[\s-]?validat(?:e|ion|ed))\s*(?:with\s+|over\s+|on\s+|=\s*|:\s*)?(?P<n>{NUMBER})[\s-]*folds?\b",
    rf"\b(?P<n>{NUMBER})[\s-]*folds?\s+(?:cv|cross[\s-]?validation|cross[\s-]?validated)\b",
    rf"\b(?P<n>{NUMBER})[\s-]*folds?\b",
)
_NO_CV = r"\b(?:no|without)\s+(?:cv|cross[\s-]?validation)\b"


def take_cv(sc: Scanner, p: Findings) -> None:
    """Read k-fold cross-validation on the training part ("cv 5 folds", "5-fold cross-validation")."""
    if sc.first(_NO_CV):
        p.set("cv_folds", 0)
        return
    for pattern in _CV_FOLDS:
        match = sc.first(pattern)
        if match:
            folds = parse_number(match["n"])
            if folds != int(folds) or not 2 <= folds <= 20:
                p.note_once(f"cross-validation needs 2 to 20 folds, not {match['n']}")
                return
            p.set("cv_folds", int(folds))
            return
