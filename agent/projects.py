"""What a request naming the user's own training project (a registered entry point) may use of it.

Read before the plan: the project must be registered at an explicit version, validated, with its files
unchanged (the guard's rule, asked here so the answer can say what to do), the params given must be ones
it declares, and its primary metric (``expagent.yaml``) fills in the metric and direction the user did
not state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

from pydantic import BaseModel

from agent.state import ExperimentRequestDraft
from tools.core.entrypoints import EntryPointError, EntryPointRecord, EntryPointRegistry
from tools.core.settings import Settings
from tools.core.specs import Metric

_METRICS: tuple[str, ...] = get_args(Metric)


class ProjectFacts(BaseModel):
    """The request completed from its project, or why the project cannot be used."""

    draft: ExperimentRequestDraft
    direction: Literal["maximize", "minimize"] | None = None
    problem: str | None = None


def project_facts(
    settings: Settings, draft: ExperimentRequestDraft, status: Callable[[str], None] | None = None
) -> ProjectFacts:
    """Return the draft with the project's metric filled in, or the one-line reason it cannot run.

    A demo project (``validate_on`` set by the demo catalog) is validated here the first time a request
    names it, with its files as registered; ``status`` hears that this takes a while.
    """
    call = draft.entry_point
    assert call is not None
    registry = EntryPointRegistry.open(settings)
    try:
        record = registry.resolve(call.ref)
    except EntryPointError as exc:
        return ProjectFacts(draft=draft, problem=f"{exc}. {_registered_hint(registry, call.ref)}")
    declared = record.entry_points.get(call.entry, {})
    unknown = sorted((set(draft.params) | set(draft.search_space)) - set(declared))
    if call.entry in record.entry_points and unknown:  # checked first: it needs no dry run
        return ProjectFacts(
            draft=draft,
            problem=f"{record.ref} entry {call.entry!r} declares no param {', '.join(unknown)} "
            f"(declared: {', '.join(declared) or 'none'})",
        )
    if (
        record.status == "registered"
        and record.validate_on
        and registry.tree_problem(record, call.entry) is None
    ):
        record = _validate_demo(settings, registry, record, call.entry, status)
    problem = registry.problem(record, call.entry)
    if problem is not None:
        if record.status != "validated" and "changed since" not in problem:
            problem += (
                f" (`expagent entrypoints validate {record.ref} --dataset {draft.dataset or 'NAME'}@"
                f"{draft.version or 'V'}`)"
            )
        return ProjectFacts(draft=draft, problem=problem)
    return _with_metric(draft, record)


def _validate_demo(
    settings: Settings,
    registry: EntryPointRegistry,
    record: EntryPointRecord,
    entry: str,
    status: Callable[[str], None] | None,
) -> EntryPointRecord:
    from tools.training.entrypoint_validation import validate_entry_point

    assert record.validate_on is not None
    dataset, _, version = record.validate_on.partition("@")
    if status is not None:
        status(f"validating demo project {record.ref} on {record.validate_on} (first use, one dry run)")
    failed = validate_entry_point(settings, record.ref, dataset, version, entry)
    if failed is not None:
        return record.model_copy(update={"status_reason": failed})
    return registry.resolve(record.ref)


def _with_metric(draft: ExperimentRequestDraft, record: EntryPointRecord) -> ProjectFacts:
    primary = record.config.primary_metric
    metric = primary.removeprefix("val_")
    if metric not in _METRICS or metric == primary:
        return ProjectFacts(
            draft=draft,
            problem=f"{record.ref} logs {primary!r} as its primary metric; expagent selects on "
            f"val_<metric> with a metric of {', '.join(_METRICS)} (set primary_metric in its expagent.yaml)",
        )
    if draft.metric is not None and draft.metric != metric:
        return ProjectFacts(
            draft=draft,
            problem=f"{record.ref} reports {primary} (its expagent.yaml primary metric), not "
            f"val_{draft.metric}; ask for metric {metric} or leave the metric out",
        )
    completed = draft.model_copy(update={"metric": metric})
    return ProjectFacts(draft=completed, direction=record.config.direction)


def _registered_hint(registry: EntryPointRegistry, ref: str) -> str:
    name = ref.partition("@")[0]
    versions = [f"{r.ref} ({r.status})" for r in registry.list() if r.name == name]
    if versions:
        return f"Registered versions of {name}: {', '.join(versions)}. Nothing was launched."
    return (
        f"No project {name!r} is registered; register it with `expagent entrypoints register PATH --name "
        f"{name} --validate-on DATASET@V`. Nothing was launched."
    )
