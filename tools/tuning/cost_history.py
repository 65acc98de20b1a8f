"""What earlier runs cost: the plan's per-run estimate before this request's baseline has run.

The measured baseline is the best estimate of a trial's cost, but the plan (and its approval) comes
before the baseline. Earlier FINISHED baselines of the same dataset version and model family in the
tracking store are the next best thing; without any, the budget module's default applies.
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

from tools.core import tags as tag_keys
from tools.tuning.budget import TrialCost, cv_fit_factor

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

#: earlier baselines whose median wall time is the estimate.
_SAMPLES = 5
#: runs read per sample wanted (baselines with another fold count are skipped).
_SCAN = 4
#: experiments searched for them (the most recently created ones first).
_MAX_EXPERIMENTS = 50


def typical_baseline_cost(
    client: MlflowClient, dataset_ref: str, model_family: str, cpu: float, cv_folds: int = 0
) -> TrialCost | None:
    """Return the median cost of recent FINISHED baselines of ``model_family`` on ``dataset_ref``.

    Baselines with ``cv_folds`` folds count as they are; without any, those with another number of
    folds are scaled by ``cv_fit_factor`` (a run with K folds fits K+1 models).

    A run's cost is its ``run_seconds`` metric (the trainer's wall time from loading the data to
    logging the model; not the MLflow run's start-to-end time, which includes waiting for a worker)
    and that time ``cpu`` cores as CPU-seconds (an upper bound: runs log no CPU time). None when there
    are none, or the store cannot be searched (the caller falls back to its default).
    """
    from mlflow.exceptions import MlflowException

    quote = "'"
    if quote in dataset_ref or quote in model_family:
        return None
    query = (
        f"params.dataset = '{dataset_ref}' and params.model_family = '{model_family}' "
        f"and attributes.status = 'FINISHED' and tags.`{tag_keys.ROLE}` = 'baseline' "
        "and metrics.run_seconds > 0"
    )
    try:
        experiments = client.search_experiments(max_results=_MAX_EXPERIMENTS, order_by=["creation_time DESC"])
        if not experiments:
            return None
        runs = client.search_runs(
            [e.experiment_id for e in experiments], filter_string=query, max_results=_SAMPLES * _SCAN,
            order_by=["attributes.start_time DESC"],
        )  # fmt: skip
    except (MlflowException, OSError):
        return None
    by_folds: dict[int, list[float]] = {}
    for run in runs:
        folds = _folds(run.data.params.get("cv_folds"))
        if run.data.metrics.get("run_seconds") and folds is not None:
            by_folds.setdefault(folds, []).append(float(run.data.metrics["run_seconds"]))
    if not by_folds:
        return None
    if cv_folds in by_folds:
        wall = statistics.median(by_folds[cv_folds][:_SAMPLES])
    else:  # scale the most common fold count's runs to this one
        folds, walls = max(by_folds.items(), key=lambda item: len(item[1]))
        wall = statistics.median(walls[:_SAMPLES]) / cv_fit_factor(folds) * cv_fit_factor(cv_folds)
    return TrialCost(cpu_seconds=wall * cpu, wall_seconds=wall)


def _folds(value: str | None) -> int | None:
    """The run's fold count (no ``cv_folds`` param: 0); None when the param is not a number."""
    if value is None:
        return 0
    try:
        return int(value)
    except ValueError:
        return None
