"""Plan the read-only tool calls a question about runs or datasets needs (``parse_question``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from agent.grammar.intake import parse_message
from agent.grammar.notes import note_request
from agent.grammar.scanner import strip_trailing_punct
from agent.grammar.vocabulary import (
    DIGITS_ID,
    FLAGS,
    ID_PAIR,
    NUMBER,
    RESERVED,
    SHORT_ID,
    may_be_name,
    parse_number,
)
from agent.state import IntakeDecision
from tools.core.specs import metric_direction

QuestionKind = Literal[
    "runs",
    "best_run",
    "latest_run",
    "list_runs",
    "list_datasets",
    "describe_dataset",
    "unclear",
    "why_failed",
    "run_logs",
    "running",
    "list_experiments",
    "compare",
    "note",
]
_RUN_ID = r"[0-9a-f]{32}|(?=[\w-]*\d)[A-Za-z0-9][\w-]{3,}"


@dataclass(frozen=True)
class RunWindow:
    """A time window on run start times, in epoch milliseconds, with the words that named it."""

    label: str
    since_ms: int
    until_ms: int | None = None

    def filter(self) -> str:
        """Return the MLflow filter clause for the window."""
        clause = f"attributes.start_time >= {self.since_ms}"
        return clause + (f" and attributes.start_time < {self.until_ms}" if self.until_ms else "")


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
    baseline: bool = False  # also compare with the experiment's baseline run
    note: str | None = None  # the text of a note to add ("note")
    failed_only: bool = False  # look only at FAILED runs ("why did the last run fail?")
    status: str | None = None  # list only runs with this MLflow status ("list failed runs in mine")
    window: RunWindow | None = None  # list only runs started in this time window ("today")

    @property
    def needs_experiment(self) -> bool:
        """Whether the tool calls need an experiment the question did not name."""
        if self.experiment or self.run_ids:
            return False
        return self.kind in (
            "best_run",
            "latest_run",
            "list_runs",
            "compare",
            "why_failed",
            "run_logs",
        )


_FAILURE = re.compile(
    r"\b(?:why\b.{0,80}\b(?:fail|crash|die|died|error|break|broke|blow|blew|k[i]ll|stop|abort)\w*"
    r"|what\s+(?:went|goes)\s+wrong|what\s+(?:killed|stopped|crashed|broke|happened\s+to)\b|(?:the\s+)?(?:error|traceback|stack\s*trace|exception)s?\b(?!\s+rate)"
    r"|fail(?:ed|ure)\s+reason|reason\s+(?:it|for|why)\b.{0,40}\bfail)",
    FLAGS | re.DOTALL,
)
_FAILED_WORD = re.compile(r"\b(?:crash|fail|died|die|broke|error)\w*", FLAGS)
_LOGS = re.compile(r"\b(?:logs?|output|stdout|stderr|console|printed)\b", FLAGS)
_RUNNING = re.compile(
    r"\b(?:running|runing|runnning|in\s+progress|in\s+flight|still\s+going|going\s+on|under\s+way|busy"
    r"|status\s+of\s+(?:my\s+|the\s+|our\s+)?jobs)\b",
    FLAGS,
)
_EXPERIMENTS = re.compile(r"\b(?:exp[a-z]{3,8}nts|expts|exps)\b", FLAGS)
_RECENT_N = re.compile(
    rf"\b(?:last|latest|most\s+recent|newest|recent|previous)\s+(?P<n>{NUMBER}|couple(?:\s+of)?|few)?\s*"
    r"(?:runs|trials|ones)\b",
    FLAGS,
)


def parse_question(text: str) -> QuestionPlan:
    """Return which read-only tools a question about runs or datasets needs."""
    note = note_request(text)
    if note is not None:
        return QuestionPlan("note", run_ids=(note.run,), note=note.text)
    decision, _ = parse_message(text)
    ids = run_ids_in(text)
    request = decision.request
    special = _run_question(text, ids, request.experiment or _question_experiment(text, decision, ids))
    if special is not None:
        return special
    if ids:
        return QuestionPlan("runs", run_ids=ids, metric=request.metric)
    if re.search(r"\bdatasets\b|\bcatalog\b|\bwhat\s+data\b", text, FLAGS) and not request.dataset:
        return QuestionPlan("list_datasets")
    mentions_runs = re.search(r"\b(?:runs?|trials?|models?|results?|experiments?)\b", text, FLAGS)
    if request.dataset and not mentions_runs:
        return QuestionPlan("describe_dataset", dataset=request.dataset, version=request.version)
    experiment = _question_experiment(text, decision, ids)
    top = re.search(rf"\btop\s+(?P<n>{NUMBER})\b", text, FLAGS)
    limit = int(parse_number(top["n"])) if top else 1
    if re.search(r"\b(?:last|latest|most\s+recent|newest|previous)\b", text, FLAGS):
        return QuestionPlan("latest_run", experiment=experiment, metric=request.metric)
    baseline = re.search(r"\bbaselines?\b", text, FLAGS) is not None
    against = re.search(r"\bcompar\w*|\bvs\.?(?!\w)|\bversus\b|\bagainst\b|\bimprov\w*|\bbeat", text, FLAGS)
    if re.search(r"\b(?:best|highest|lowest|top|worst|winner|winning|which\s+run)\b", text, FLAGS) or (
        baseline and against
    ):
        reverse = _asks_for_reverse(text, request.metric)
        return QuestionPlan(
            "best_run", experiment, request.metric, limit=limit, reverse=reverse, baseline=baseline
        )
    if experiment or mentions_runs:
        return QuestionPlan("list_runs", experiment=experiment, metric=request.metric, limit=10)
    return QuestionPlan("unclear")


_STATUS_WORDS = (
    ("FAILED", r"fail(?:ed|ures?|ing)?|crash(?:ed|es)?|errored|broken"),
    ("KILLED", r"killed|cancell?ed|stopped|aborted"),
    ("FINISHED", r"finished|successful|succeeded|completed|done"),
)
_WINDOW = re.compile(
    r"\b(?:(?P<today>today|this\s+morning|so\s+far\s+today)|(?P<yesterday>yesterday)"
    r"|(?:since|from|in)\s+(?:the\s+)?(?:last|past)\s+(?P<n>\d+|one|two|three|24|48)\s*(?P<unit>hours?|hrs?|h|days?)"
    r"|(?:the\s+)?(?:last|past)\s+(?P<n2>\d+|one|two|three)\s*(?P<unit2>hours?|hrs?|h|days?)"
    r"|(?P<week>this\s+week))\b",
    FLAGS,
)


def run_window(text: str, now: datetime | None = None) -> RunWindow | None:
    """Return the start-time window a question names ("today", "yesterday", "last 3 hours"), if any."""
    match = _WINDOW.search(text)
    if match is None:
        return None
    now = now or datetime.now().astimezone()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    ms = lambda moment: int(moment.timestamp() * 1000)  # noqa: E731
    if match["today"]:
        return RunWindow(f"today (since {midnight:%Y-%m-%d %H:%M %Z})", ms(midnight))
    if match["yesterday"]:
        start = midnight - timedelta(days=1)
        return RunWindow(f"yesterday ({start:%Y-%m-%d}, {start:%Z})", ms(start), ms(midnight))
    if match["week"]:
        start = midnight - timedelta(days=midnight.weekday())
        return RunWindow(f"this week (since {start:%Y-%m-%d})", ms(start))
    count = int(parse_number(match["n"] or match["n2"]))
    unit = (match["unit"] or match["unit2"]).lower()
    span = timedelta(days=count) if unit.startswith("d") else timedelta(hours=count)
    return RunWindow(f"the last {count} {'day' if unit.startswith('d') else 'hour'}(s)", ms(now - span))


def _listing(text: str, ids: tuple[str, ...], experiment: str | None) -> QuestionPlan | None:
    """Return a filtered listing ("any failures today?", "list failed runs in mine", "runs from
    yesterday") when the question names a status or a time window and no run."""
    window = run_window(text)
    status = next((s for s, words in _STATUS_WORDS if re.search(rf"\b(?:{words})\b", text, FLAGS)), None)
    if ids or (window is None and status is None):
        return None
    if re.search(r"\b(?:best|worst|top|highest|lowest|winner|winning|compar\w*|vs|versus)\b", text, FLAGS):
        return None  # "thanks for yesterday. can you check the best run in smoke": a ranking, not a listing
    if window is None and not re.search(r"\b(?:list|show|any|all|which|runs)\b", text, FLAGS):
        return None
    return QuestionPlan("list_runs", experiment, limit=20, status=status, window=window)


def _run_question(text: str, ids: tuple[str, ...], experiment: str | None) -> QuestionPlan | None:
    """Return the plan for a question about failures, logs, what runs now, experiments or recent runs."""
    failed = _FAILURE.search(text) is not None or bool(ids and _FAILED_WORD.search(text))
    listing = None if failed and not run_window(text) else _listing(text, ids, experiment)
    if listing is not None and not _LOGS.search(text) and not _RECENT_N.search(text):
        return listing
    if failed:
        failed_only = not ids and re.search(r"fail|crash|error|exception|traceback|die|broke", text, FLAGS)
        return QuestionPlan("why_failed", experiment, run_ids=ids[:1], failed_only=bool(failed_only))
    if _LOGS.search(text):
        return QuestionPlan("run_logs", experiment, run_ids=ids[:1])
    if not ids and _RUNNING.search(text) and not re.search(r"\b(?:best|compare|worst)\b", text, FLAGS):
        return QuestionPlan("running")
    if not ids and not experiment and _EXPERIMENTS.search(text):
        return QuestionPlan("list_experiments")
    recent = _RECENT_N.search(text)
    if recent and not ids:
        count = recent["n"] or ""
        limit = (
            2
            if count.startswith("couple") or not count
            else 3
            if count == "few"
            else int(parse_number(count))
        )
        if re.search(r"\bcompar\w*|\bvs\.?(?!\w)|\bversus\b|\bdiff\w*", text, FLAGS) and limit >= 2:
            return QuestionPlan("compare", experiment, limit=min(limit, 10))
        return QuestionPlan("list_runs", experiment, limit=max(1, min(limit, 100)))
    if len(ids) >= 2:
        return QuestionPlan("compare", run_ids=ids[:10])
    return None


def run_ids_in(text: str) -> tuple[str, ...]:
    """Return run IDs named in ``text``: 32-hex IDs anywhere, and IDs after 'run'/'runs' (and lists).

    A short prefix of digits only ("12345678": about 2% of the 8-character prefixes MLflow's IDs have)
    is one too where a run is being asked about: at the end of the question or before "fail", "logs",
    "vs"… ("what killed 12345678", "tail the logs of 12345678"), and not as the value of something (a
    parameter, seed, version, experiment or date: "seed 12345678", "runs since 20261203") or a count
    ("20000000 rows"). It is only ever read: ``get_run`` resolves the prefix in MLflow and says so when
    no run has it.
    """
    found = [(m.start(), m.group(0)) for m in re.finditer(rf"\b(?:[0-9a-f]{{32}}|{SHORT_ID})\b", text)]
    found += [
        (m.start(), m.group(1)) for m in _DIGITS_ID.finditer(text) if not _is_a_value(text[: m.start()])
    ]
    for pair in ID_PAIR.finditer(text):
        found += [(pair.start("a"), pair["a"]), (pair.start("b"), pair["b"])]
    ids = [token for _, token in sorted(found)]
    for match in re.finditer(rf"\bruns?\s+(?:id\s+)?(?P<first>{_RUN_ID})\b", text, FLAGS):
        ids.append(match["first"])
        rest = text[match.end() :]
        while more := re.match(
            rf"\s*(?:,|and|vs\.?|versus|with|to)\s*(?:run\s+)?(?P<id>{_RUN_ID})\b", rest, FLAGS
        ):
            ids.append(more["id"])
            rest = rest[more.end() :]
    return tuple(dict.fromkeys(i for i in ids if i.lower() not in RESERVED))


_DIGITS_ID = re.compile(rf"({DIGITS_ID})", FLAGS)
#: words whose value a number after them is, not a run: "seed 12345678", "experiment 20240101".
_VALUE_OF = re.compile(
    r"(?:\b(?:seeds?|experiments?|version|v|since|from|after|before|until|on|at|in|epochs?|steps?|rows?|"
    r"samples?|trials?|leaves|depth|estimators|rounds?|iterations?|of\s+size)|[\w]*_[\w]*|[=:@])\s*$",
    FLAGS,
)


def _is_a_value(before: str) -> bool:
    return _VALUE_OF.search(before) is not None


def _question_experiment(text: str, decision: IntakeDecision, run_ids: tuple[str, ...]) -> str | None:
    if decision.request.experiment:
        return decision.request.experiment
    for match in reversed(
        list(re.finditer(r"\b(?:in|for|of|from|within)\s+(?:the\s+)?(?P<name>[\w][\w.-]*)", text, FLAGS))
    ):
        name = strip_trailing_punct(match["name"])
        if may_be_name(name) and name not in run_ids:
            return name
    return None


def _asks_for_reverse(text: str, metric: str | None) -> bool:
    """Return whether the question wants the opposite of 'best' (worst, or lowest AUC)."""
    if re.search(r"\bworst\b", text, FLAGS):
        return True
    direction = metric_direction(metric) if metric else "maximize"
    if re.search(r"\blowest\b", text, FLAGS):
        return direction == "maximize"
    if re.search(r"\bhighest\b", text, FLAGS):
        return direction == "minimize"
    return False
