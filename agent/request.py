"""From what the user said (drafts, possibly over several turns) to a complete ``ExperimentRequest``.

Pure functions: no I/O. The intake node looks the dataset up through the guard and passes the facts in.
"""

from __future__ import annotations

from typing import Literal, TypeVar

from agent.experiment_plan import ExperimentRequest
from agent.state import ExperimentRequestDraft
from tools.core.settings import Settings
from tools.core.specs import CLASSIFICATION_METRICS, REGRESSION_METRICS, Resources, metric_direction

#: inputs the user must state (the spec: "ask only if missing"); in the order they are asked for.
REQUIRED: tuple[str, ...] = ("dataset", "version", "model_family", "metric", "experiment")
DEFAULT_SEED = 42
T = TypeVar("T")
_TASK_METRICS = {"classification": CLASSIFICATION_METRICS, "regression": REGRESSION_METRICS}


def merge_drafts(
    earlier: ExperimentRequestDraft | None, latest: ExperimentRequestDraft
) -> ExperimentRequestDraft:
    """Return ``earlier`` completed by ``latest`` (the latest turn wins where both say something).

    Naming a different dataset (or a raw URI) drops the earlier version: a version belongs to the
    dataset it was stated for and is never carried over to another one.
    """
    if earlier is None:
        return latest
    stated = latest.model_dump(exclude_unset=True, exclude_defaults=True)
    merged = earlier.model_dump()
    merged.update({k: v for k, v in stated.items() if v is not None})
    if latest.dataset_uri or (latest.dataset and latest.dataset != earlier.dataset):
        merged["version"] = latest.version
    if latest.dataset and not latest.dataset_uri:
        merged["dataset_uri"] = None
    if latest.model_family and not latest.entry_point:
        merged["entry_point"] = None  # "same but with lightgbm": a family replaces the project
    elif latest.entry_point and not latest.model_family:
        merged["model_family"] = None
    return ExperimentRequestDraft.model_validate(merged)


def missing_inputs(draft: ExperimentRequestDraft) -> list[str]:
    """Return the required inputs the draft lacks, in asking order.

    A request naming the user's own project (an entry point) needs no family, and its metric may come
    from the project's ``expagent.yaml``.
    """
    exempt = {"model_family", "metric"} if draft.entry_point is not None else set()
    return [name for name in REQUIRED if not getattr(draft, name) and name not in exempt]


def metric_problem(metric: str, task: str | None) -> str | None:
    """Return why ``metric`` does not fit ``task`` (None when it does or the task is unknown)."""
    allowed = _TASK_METRICS.get(task or "")
    if allowed is None or metric in allowed:
        return None
    return f"{metric} is not a {task} metric; for a {task} dataset choose one of {', '.join(sorted(allowed))}"


def complete_request(
    draft: ExperimentRequestDraft,
    settings: Settings,
    task: Literal["classification", "regression"] | None,
    sha256: str | None,
    direction: Literal["maximize", "minimize"] | None = None,
) -> ExperimentRequest:
    """Build the complete request from a draft with every required input, listing the defaults used."""
    missing = missing_inputs(draft)
    if missing:
        raise ValueError(f"the request still lacks: {', '.join(missing)}")
    assert draft.dataset and draft.version and draft.metric and draft.experiment
    assert draft.model_family or draft.entry_point
    assumptions: list[str] = []
    return ExperimentRequest(
        dataset=draft.dataset,
        version=draft.version,
        dataset_sha256=sha256,
        task=task,
        model_family=None if draft.entry_point else draft.model_family,
        entry_point=draft.entry_point,
        metric=draft.metric,
        direction=direction or metric_direction(draft.metric),
        experiment=draft.experiment,
        runtime=_default(draft.runtime, settings.runtime, "runtime {} (configured default)", assumptions),
        namespace=_namespace(draft, settings, assumptions),
        cpu_hours=_default(
            draft.cpu_hours,
            settings.budget.cpu_hours,
            "budget {:g} CPU-hours (configured default)",
            assumptions,
        ),
        gpu_hours=draft.gpu_hours if draft.gpu_hours is not None else settings.budget.gpu_hours,
        resources=_resources(draft, assumptions),
        trials=_default(draft.trials, 0, "{} tuning trials (baseline only; none asked for)", assumptions),
        parallelism=draft.parallelism,
        wall_minutes=draft.wall_minutes,
        patience=draft.patience,
        target=draft.target,
        warm_start=draft.warm_start is not False,
        cv_folds=draft.cv_folds or 0,
        seed=_default(draft.seed, DEFAULT_SEED, "seed {}", assumptions),
        params=draft.params,
        search_space=draft.search_space,
        assumptions=assumptions,
    )


def _default(value: T | None, default: T, text: str, assumptions: list[str]) -> T:
    if value is not None:
        return value
    assumptions.append(text.format(default))
    return default


def _namespace(draft: ExperimentRequestDraft, settings: Settings, assumptions: list[str]) -> str | None:
    runtime = draft.runtime or settings.runtime
    if runtime != "kubernetes":
        return None
    return _default(draft.namespace, settings.k8s_namespace, "namespace {} (configured default)", assumptions)


def _resources(draft: ExperimentRequestDraft, assumptions: list[str]) -> Resources:
    defaults = Resources()
    cpu = _default(draft.cpus_per_run, defaults.cpu, "{:g} CPU per run", assumptions)
    memory = _default(draft.memory_gb_per_run, defaults.memory_gb, "{:g} GiB memory per run", assumptions)
    return Resources(cpu=cpu, memory_gb=memory, gpu=draft.gpus_per_run or 0)
