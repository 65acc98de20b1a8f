"""Warm start: the best parameter sets earlier finished trials found for the same problem.

Before a study starts, MLflow is searched (every experiment the tracking store lets the user read) for
FINISHED trial runs on the same dataset@version, model family and metric that were selected on
``val_<metric>``; the best few whose params lie inside the study's search space are enqueued as the
first trials (``optuna.Study.enqueue_trial``). The search space itself is never narrowed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tools.core import tags as tag_keys
from tools.tuning.records import WarmStartTrial
from tools.tuning.space import ParamSpec, parse_space

if TYPE_CHECKING:
    import optuna
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

    from tools.tuning.records import StudySettings

#: earlier trial runs read per search (the best ``limit`` inside the space are kept).
_CANDIDATES = 200


def _quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _code_filter(settings: StudySettings) -> str:
    """Return the filter on what trained the runs: the same entry point version, or the same family."""
    if settings.entry_point is not None:
        return (
            f"tags.`{tag_keys.ENTRY_POINT}` = {_quoted(settings.entry_point.ref)} and "
            f"tags.`{tag_keys.ENTRY_POINT_NAME}` = {_quoted(settings.entry_point.entry)}"
        )
    return f"tags.`model_family` = {_quoted(settings.model_family or '')}"


def find_warm_start(client: MlflowClient, settings: StudySettings, limit: int = 3) -> list[WarmStartTrial]:
    """Return up to ``limit`` earlier finished trials' params, best ``val_<metric>`` first."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    key = f"val_{settings.metric}"
    query = " and ".join(
        [
            f"tags.`{tag_keys.ROLE}` = 'trial'",
            "attributes.status = 'FINISHED'",
            f"tags.`dataset.name` = {_quoted(settings.dataset)}",
            f"tags.`dataset.version` = {_quoted(settings.version)}",
            _code_filter(settings),
            f"params.`metric` = {_quoted(settings.metric)}",
        ]
    )
    order = "DESC" if settings.direction != "minimize" else "ASC"
    runs = client.search_runs(
        experiments, filter_string=query, max_results=_CANDIDATES, order_by=[f"metrics.`{key}` {order}"]
    )
    space = parse_space(settings.search_space)
    found: list[WarmStartTrial] = []
    seen: set[str] = set()
    for run in runs:
        value = run.data.metrics.get(key)
        params = _params_in_space(run, space)
        if value is None or params is None or repr(sorted(params.items())) in seen:
            continue
        seen.add(repr(sorted(params.items())))
        found.append(WarmStartTrial(run_id=run.info.run_id, value=float(value), params=params))
        if len(found) >= limit:
            break
    return found


def _params_in_space(run: Run, space: dict[str, ParamSpec]) -> dict[str, Any] | None:
    """Return the run's searched params typed by ``space``, or None if one is missing or outside it."""
    params: dict[str, Any] = {}
    for name, spec in space.items():
        if spec.type == "fixed":
            continue
        text = run.data.params.get(name)
        if text is None:
            return None
        value = _typed(text, spec)
        if value is None:
            return None
        params[name] = value
    return params


def _typed(text: str, spec: ParamSpec) -> Any:
    if spec.type == "categorical":
        return next((c for c in spec.choices or [] if str(c) == text), None)
    try:
        number = float(text)
    except ValueError:
        return None
    assert spec.low is not None and spec.high is not None
    if not spec.low <= number <= spec.high:
        return None
    if spec.type == "int":
        return int(number) if number.is_integer() else None
    return number


def enqueue(study: optuna.Study, trials: list[WarmStartTrial]) -> None:
    """Enqueue the warm-start params as the study's next trials (a fresh study only)."""
    for trial in trials:
        study.enqueue_trial(trial.params, user_attrs={"warm_start_from": trial.run_id}, skip_if_exists=True)


def describe(trials: list[WarmStartTrial], metric: str, enabled: bool = True) -> str:
    """Return the plan's warm-start sentence."""
    if not enabled:
        return "Warm start: off (as requested); the study starts from the sampler alone."
    if not trials:
        return "Warm start: none — no earlier finished trial on this dataset@version, family and metric."
    runs = ", ".join(f"`{t.run_id}` (val_{metric} {t.value:.4f})" for t in trials)
    return f"Warm start: the first {len(trials)} trial(s) re-run the params of earlier trials {runs}."
