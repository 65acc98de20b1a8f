"""Turn one user message into an ``IntakeDecision``: the request rules in order, then the intent."""

from __future__ import annotations

from agent.grammar.datasets import take_bare_version, take_dataset_at_version, take_dataset_words
from agent.grammar.fields import (
    baseline_means_no_tuning,
    take_budget,
    take_cv,
    take_experiment,
    take_family_and_metric,
    take_namespace,
    take_objective,
    take_parallelism,
    take_runtime,
    take_search_space,
    take_seed_and_params,
    take_sensitive,
    take_stopping,
    take_trials,
)
from agent.grammar.intent import Reading, classify
from agent.grammar.locations import take_paths, take_uris
from agent.grammar.projects import take_project
from agent.grammar.scanner import Findings, Rule, Scanner, redacted
from agent.grammar.unsupported import unsupported_note
from agent.state import ExperimentRequestDraft, IntakeDecision

# The order matters: each rule consumes what it matched, so an earlier rule wins a phrase.
REQUEST_RULES: tuple[Rule, ...] = (
    take_uris,
    take_sensitive,
    take_project,
    take_dataset_at_version,
    take_experiment,
    take_paths,
    take_namespace,
    take_objective,
    take_search_space,
    take_cv,
    take_seed_and_params,
    take_budget,
    take_parallelism,
    take_stopping,
    take_trials,
    take_runtime,
    take_family_and_metric,
    take_dataset_words,
    take_bare_version,
)


def parse_message(text: str) -> tuple[IntakeDecision, bool]:
    """Parse one user message; return the decision and whether it only supplied request fields.

    A fields-only message ("breast_cancer@1, lightgbm") is recorded as an experiment; the caller may
    merge it with the request it answers (see ``agent.offline``).
    """
    sc = Scanner(text)
    p = Findings()
    for rule in REQUEST_RULES:
        rule(sc, p)
    baseline_means_no_tuning(sc, p)
    intent = classify(sc, p)
    if intent not in ("forbidden", "cancel") and (note := unsupported_note(text)) is not None:
        # Never act on half an understanding: a change expagent has no tool for stops the whole message.
        return IntakeDecision(intent="unknown", not_understood=[note]), False
    if p.draft.get("namespace") and p.draft.get("runtime") is None:
        p.draft["runtime"] = "kubernetes"
    return _decision(text, sc, p, intent), intent == "fields_only"


def _decision(text: str, sc: Scanner, p: Findings, intent: Reading) -> IntakeDecision:
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
