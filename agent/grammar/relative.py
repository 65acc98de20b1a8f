"""Relative changes in a follow-up: "double the trees", "halve the learning rate", "a bit deeper".

``read_relative`` finds them in the user's words and returns each as a factor or a step on one
parameter, plus the text without them (so the request rules do not report them). ``resolve`` turns a
change into an exact value from a base value: the parameter as the thread's last request set it, else
the model family's documented default (``FAMILY_DEFAULTS``). With no base value known (a family whose
default is "no limit", a parameter the family does not have) it returns a question instead — never a
guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.grammar.vocabulary import FLAGS

# The library defaults of the parameters a relative change may name (None: no numeric default).
FAMILY_DEFAULTS: dict[str, dict[str, float | int | None]] = {
    "lightgbm": {"n_estimators": 100, "learning_rate": 0.1, "num_leaves": 31, "max_depth": None,
                 "min_child_samples": 20},
    "xgboost": {"n_estimators": 100, "learning_rate": 0.3, "max_depth": 6, "min_child_weight": 1},
    "random_forest": {"n_estimators": 100, "max_depth": None, "min_samples_leaf": 1},
    "hist_gradient_boosting": {"max_iter": 100, "learning_rate": 0.1, "max_leaf_nodes": 31,
                               "max_depth": None},
    "logistic_regression": {"C": 1.0},
}  # fmt: skip
_INTEGER = frozenset(
    {"n_estimators", "num_leaves", "max_depth", "min_child_samples", "min_samples_leaf", "max_iter",
     "max_leaf_nodes", "min_child_weight"}
)  # fmt: skip
# What a plain word names, per family where the name differs ("trees" of hist gradient boosting).
_WORDS = {
    "trees": "n_estimators", "estimators": "n_estimators", "number of trees": "n_estimators",
    "n_estimators": "n_estimators",
    "learning rate": "learning_rate", "learning_rate": "learning_rate", "lr": "learning_rate",
    "eta": "learning_rate", "step size": "learning_rate", "depth": "max_depth", "max depth": "max_depth",
    "max_depth": "max_depth", "tree depth": "max_depth", "leaves": "num_leaves", "num leaves": "num_leaves",
    "num_leaves": "num_leaves", "regularization": "C",
}  # fmt: skip
_FAMILY_NAMES = {"hist_gradient_boosting": {"n_estimators": "max_iter", "num_leaves": "max_leaf_nodes"}}
_PARAM = (
    r"(?P<p>number\s+of\s+trees|learning[\s_]rate|max[\s_]depth|tree\s+depth|num[\s_]leaves|n_estimators"
    r"|step\s+size|trees|estimators|lr|eta|depth|leaves|regularization)"
)
_THE = r"(?:the\s+|its\s+|our\s+|my\s+)?"
_NO_VALUE = r"(?!\s*(?:=|:|->|(?:to|of|at|by)\s+-?\.?\d))"  # "bump n_estimators to 500" states the value
_AMOUNT = r"\d+(?:\.\d+)?(?:e-?\d+)?"
_TIMES = rf"(?P<n>{_AMOUNT})\s*(?:x|×|times)"
_DIRECTIONS = r"smaller|lower|less|fewer|larger|bigger|higher|more|greater"
_UP = frozenset({"more", "extra", "additional", "increase", "raise", "bump", "bump up", "larger", "bigger",
                 "higher", "greater"})  # fmt: skip
_A_BIT = r"(?P<bit>(?:a\s+)?(?:bit|little|touch|tad)\s+|slightly\s+|somewhat\s+)?"
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p, FLAGS), kind)
    for p, kind in (
        # "learning rate 10x smaller", "make the learning rate 10 times smaller", "a 3x bigger num_leaves"
        (rf"(?<![\w-])(?:make\s+)?{_THE}{_PARAM}\s+{_TIMES}\s+(?P<dir>{_DIRECTIONS})(?![\w-])", "times"),
        (rf"(?<![\w-])(?:use\s+)?(?:an?\s+)?{_TIMES}\s+(?P<dir>{_DIRECTIONS})\s+{_PARAM}\b", "times"),
        # "add 50 more trees", "50 fewer trees", "increase n_estimators by 50", "lower the lr by 0.01"
        (rf"(?<![\w-])(?:add\s+|use\s+|with\s+)?(?P<n>{_AMOUNT})\s+(?P<dir>more|fewer|extra|additional|less)"
         r"\s+(?P<p>trees|estimators|leaves)\b", "step"),
        (rf"(?<![\w-])add\s+(?:another\s+)?(?P<n>{_AMOUNT})\s+(?P<p>trees|estimators|leaves)\b", "step"),
        (rf"(?<![\w-])(?P<dir>increase|raise|bump(?:\s+up)?|lower|decrease|reduce|cut|drop)\s+{_THE}{_PARAM}"
         rf"\s+by\s+(?P<n>{_AMOUNT})(?![\w.%-])", "step"),
        (rf"(?<![\w-])(?P<verb>double|triple|quadruple|halve|half)\s+{_THE}{_PARAM}\b{_NO_VALUE}", "verb"),
        (rf"(?<![\w-]){_THE}{_PARAM}\s+(?P<verb>doubled|tripled|halved)(?![\w-])", "verb"),
        (rf"(?<![\w-])(?:use\s+)?(?:a\s+)?{_A_BIT}(?P<verb>higher|lower|smaller|bigger|larger|more|fewer|less)"
         rf"\s+{_PARAM}\b", "verb"),
        (rf"(?<![\w-])(?P<verb>lower|decrease|reduce|cut|drop|shrink|raise|increase|bump(?:\s+up)?|up)\s+{_THE}"
         rf"{_PARAM}\b{_NO_VALUE}(?:\s+(?:a\s+)?(?:bit|little|touch|tad))?", "verb"),
        (rf"(?<![\w-])(?:make\s+(?:it|them|the\s+trees)\s+|go\s+)?{_A_BIT}(?P<verb>deeper|shallower)"
         r"(?:\s+trees)?(?![\w-])", "depth"),
        # "… and add 50 more": the parameter the change before it named
        (rf"(?<![\w-])(?:and\s+|then\s+)?add\s+(?:another\s+)?(?P<n>{_AMOUNT})(?:\s+more)?"
         r"(?!\s*(?:[\w.%]|x\b))", "step_same"),
    )
)  # fmt: skip
_FACTORS = {
    "double": 2.0, "doubled": 2.0, "triple": 3.0, "tripled": 3.0, "quadruple": 4.0, "halve": 0.5, "half": 0.5,
    "halved": 0.5, "lower": 0.5, "decrease": 0.5, "reduce": 0.5, "cut": 0.5, "drop": 0.5, "shrink": 0.5,
    "smaller": 0.5, "fewer": 0.5, "less": 0.5, "raise": 2.0, "increase": 2.0, "bump": 2.0, "bump up": 2.0,
    "up": 2.0, "higher": 2.0, "bigger": 2.0, "larger": 2.0, "more": 2.0,
}  # fmt: skip


@dataclass(frozen=True)
class RelativeChange:
    """One relative change: a factor or a step on a parameter, and the words that asked for it."""

    param: str  # the name as in LightGBM/scikit-learn forests ("n_estimators"); see ``param_for``
    phrase: str
    factor: float | None = None
    step: float | None = None


def read_relative(text: str) -> tuple[list[RelativeChange], str]:
    """Return the relative changes ``text`` asks for (in the order written) and the text without them.

    "… and add 50 more" changes the parameter the change before it named; with none before it, it is
    left in the text (not understood: "add 50 more" alone could as well mean trials).
    """
    found: list[tuple[int, RelativeChange | None, re.Match[str]]] = []
    rest = text
    for pattern, kind in _PATTERNS:
        for match in list(pattern.finditer(rest)):
            found.append((match.start(), None if kind == "step_same" else _change(match, kind), match))
        rest = pattern.sub(lambda m: " " * len(m.group(0)), rest)  # offsets stay those of ``text``
    changes: list[RelativeChange] = []
    for _, change, match in sorted(found, key=lambda item: item[0]):
        if change is None:
            if not changes:
                rest = rest[: match.start()] + match.group(0) + rest[match.end() :]
                continue
            change = RelativeChange(changes[-1].param, " ".join(match.group(0).split()),
                                    step=float(match["n"]))  # fmt: skip
        changes.append(change)
    return changes, rest


def _change(match: re.Match[str], kind: str) -> RelativeChange:
    phrase = " ".join(match.group(0).split())
    if kind in ("times", "step"):
        word = " ".join(match["p"].lower().replace("_", " ").split())
        param = _WORDS.get(word) or _WORDS.get(word.replace(" ", "_"), word.replace(" ", "_"))
        amount = float(match["n"])
        up = " ".join(match["dir"].lower().split()) in _UP
        if kind == "times":
            return RelativeChange(param, phrase, factor=amount if up else 1 / amount)
        return RelativeChange(param, phrase, step=amount if up else -amount)
    verb = " ".join(match["verb"].lower().split())
    bit = bool(match.groupdict().get("bit")) or re.search(
        r"\b(?:bit|little|touch|tad|slightly)\b", phrase, FLAGS
    )
    if kind == "depth":
        return RelativeChange("max_depth", phrase, step=(1 if bit else 2) * (1 if verb == "deeper" else -1))
    word = " ".join(match["p"].lower().replace("_", " ").split())
    param = _WORDS.get(word) or _WORDS.get(word.replace(" ", "_"), word.replace(" ", "_"))
    factor = _FACTORS[verb]
    if bit:  # "a bit lower": a quarter down or up, not half
        factor = 0.75 if factor < 1 else 1.25
    if param == "max_depth":
        return RelativeChange(param, phrase, step=(1 if bit else 2) * (1 if factor > 1 else -1))
    return RelativeChange(param, phrase, factor=factor)


def param_for(family: str | None, param: str) -> str:
    """Return the family's own name of ``param`` ("n_estimators" is ``max_iter`` for hist GB)."""
    return _FAMILY_NAMES.get(family or "", {}).get(param, param)


def resolve(
    change: RelativeChange, family: str | None, params: dict[str, object]
) -> tuple[str, object] | str:
    """Return (param, new value) for ``change`` on top of ``params`` (else the family default), or
    the question to ask when there is no base value."""
    name = param_for(family, change.param)
    base = params.get(name)
    source = "the last request"
    if not isinstance(base, (int, float)) or isinstance(base, bool):
        defaults = FAMILY_DEFAULTS.get(family or "", {})
        base, source = defaults.get(name), f"{family}'s default"
        if name not in defaults or base is None:
            why = "has no such parameter" if name not in defaults else "sets no numeric default"
            return (
                f"'{change.phrase}': {family or 'this model family'} {why} for {name} and the last request "
                f"did not set it, so I have no value to change; say the value, e.g. '{name}=8'"
            )
    value: float = base * change.factor if change.factor is not None else base + (change.step or 0)
    if value <= 0:
        return f"'{change.phrase}': {name} is {base} ({source}); that would make it {value:g}; say the value"
    if name in _INTEGER:
        new: object = max(1, int(round(value)))
    else:
        new = float(f"{value:.6g}")
    if new == base:
        return f"'{change.phrase}': {name} is {base} ({source}); that change leaves it as it is"
    return name, new


def describe(change: RelativeChange, name: str, old: object, new: object) -> str:
    """Return how a relative change was read ("'double the trees': n_estimators 100 → 200")."""
    return f"'{change.phrase}': {name} {old} → {new}"
