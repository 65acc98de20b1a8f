"""Search spaces from data, user overrides, the budget estimate, the budget ledger and the watchdog rule."""

from __future__ import annotations

import optuna
import pytest

from tools.core.settings import Budget
from tools.core.specs import Resources
from tools.tuning._watchdog import Watchdog
from tools.tuning.budget import BudgetLedger, TrialCost, estimate_plan
from tools.tuning.records import StudySettings, default_parallelism
from tools.tuning.space import SearchSpaceError, load_search_space, parse_space, suggest_params


def study_settings(**overrides: object) -> StudySettings:
    base: dict[str, object] = {
        "study_name": "s",
        "session_id": "sess",
        "dataset": "breast_cancer",
        "version": "1",
        "model_family": "lightgbm",
        "metric": "roc_auc",
        "experiment": "e",
        "search_space": load_search_space("lightgbm"),
    }
    return StudySettings.model_validate({**base, **overrides})


@pytest.mark.parametrize(
    "family", ["lightgbm", "random_forest", "hist_gradient_boosting", "logistic_regression"]
)
def test_every_family_has_a_sampleable_space(family: str) -> None:
    space = parse_space(load_search_space(family))
    params = suggest_params(optuna.trial.FixedTrial(_midpoints(space)), space)
    assert set(params) == set(space)


def _midpoints(space: dict) -> dict:
    values = {}
    for name, spec in space.items():
        if spec.type == "categorical":
            values[name] = spec.choices[0]
        elif spec.type == "int":
            values[name] = int(spec.low)
        elif spec.type == "float":
            values[name] = spec.low
    return values


def test_overrides_narrow_fix_drop_and_add() -> None:
    space = load_search_space(
        "lightgbm",
        {"n_estimators": [10, 20], "num_leaves": 15, "reg_alpha": None, "boosting_type": ["gbdt", "dart"]},
    )
    assert space["n_estimators"] == {"type": "int", "low": 10, "high": 20, "log": True}
    assert space["num_leaves"] == {"type": "fixed", "value": 15}
    assert "reg_alpha" not in space
    assert space["boosting_type"]["choices"] == ["gbdt", "dart"]
    assert space["learning_rate"]["log"] is True  # untouched parameters keep the data file's spec


def test_overrides_for_a_new_numeric_parameter_infer_the_type() -> None:
    space = load_search_space("random_forest", {"max_samples": [0.5, 0.9]})
    assert space["max_samples"]["type"] == "float"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"learning_rate": [0.5, 0.1]}, "greater than high"),
        ({"learning_rate": [0.0, 0.1]}, "log-scale range needs low > 0"),
        ({"n_estimators": [1, 2, 3]}, "numeric range is [low, high]"),
        ({"num_leaves": {"type": "int"}}, "needs 'low' and 'high'"),
        ({"max_features": {"type": "categorical", "choices": []}}, "non-empty 'choices'"),
    ],
)
def test_bad_overrides_are_rejected_with_the_reason(overrides: dict, message: str) -> None:
    with pytest.raises(SearchSpaceError, match="bad search-space override") as err:
        load_search_space("lightgbm" if "max_features" not in overrides else "random_forest", overrides)
    assert message in str(err.value)


def test_unknown_family_and_fully_fixed_space_are_errors() -> None:
    with pytest.raises(SearchSpaceError, match="known: "):
        load_search_space("catboost")
    with pytest.raises(SearchSpaceError, match="no parameter left to tune"):
        load_search_space("logistic_regression", {"C": 1.0})


def test_estimate_from_baseline_says_how_many_trials_fit() -> None:
    baseline = TrialCost(cpu_seconds=2.0, wall_seconds=2.5)
    settings = study_settings(n_trials=30, cpu_hours=20 / 3600, parallelism=3)  # 20 CPU-seconds
    estimate = estimate_plan(baseline, settings, Budget(max_concurrent_jobs=2))
    assert estimate.basis == "baseline"
    assert estimate.per_trial_cpu_seconds == pytest.approx(3.0)  # lightgbm cost_factor 1.5
    assert estimate.trials_that_fit == 6  # (20 - 2) // 3
    assert not estimate.within_budget
    assert estimate.approval_keys == ["budget:cpu", "concurrency"]
    assert "Only 6 of 30 trials fit" in estimate.summary


def test_estimate_without_baseline_uses_the_default_and_fits_a_normal_budget() -> None:
    estimate = estimate_plan(None, study_settings(n_trials=20, cpu_hours=2.0, parallelism=2))
    assert estimate.basis == "default"
    assert estimate.within_budget and estimate.approval_keys == []
    assert estimate.wall_seconds_estimated == pytest.approx(10 * estimate.per_trial_wall_seconds)


def test_gpu_budget_limits_trials_requesting_gpus() -> None:
    settings = study_settings(n_trials=10, gpu_hours=1.0, resources=Resources(gpu=1))
    estimate = estimate_plan(TrialCost(cpu_seconds=1, wall_seconds=600, gpu_seconds=600), settings)
    assert estimate.trials_that_fit == 3  # (3600 - 600) // 900
    assert estimate.approval_keys == ["budget:gpu"]


def test_ledger_refuses_a_trial_that_would_pass_the_budget() -> None:
    settings = study_settings(cpu_hours=10 / 3600)
    ledger = BudgetLedger(settings, TrialCost(cpu_seconds=1.0, wall_seconds=1.0))
    assert ledger.shortfall(in_flight=0) is None
    ledger.record(TrialCost(cpu_seconds=4.0, wall_seconds=4.0), completed=True)
    assert ledger.trial_estimate().cpu_seconds == 4.0  # median of completed trials replaces the guess
    assert ledger.shortfall(in_flight=0) is None  # 5 + 4 <= 10
    assert "CPU budget" in (ledger.shortfall(in_flight=1) or "")  # 5 + 2 * 4 > 10


def test_watchdog_deadline_and_median_rule() -> None:
    dog = Watchdog(deadline_seconds=100, factor=3, floor_seconds=5, min_trials=3)
    assert dog.overdue(50) is None  # no median yet
    assert "deadline" in (dog.overdue(101) or "")
    for wall in (2.0, 4.0, 3.0):
        dog.record(wall)
    assert dog.median_limit == 9.0
    assert dog.overdue(8.9) is None
    assert "3x the median" in (dog.overdue(9.5) or "")


def test_watchdog_floor_protects_tiny_trials() -> None:
    dog = Watchdog(deadline_seconds=100, factor=3, floor_seconds=30, min_trials=1)
    dog.record(0.5)
    assert dog.overdue(10) is None


def test_default_parallelism_respects_cap_cores_and_trials() -> None:
    assert default_parallelism(max_concurrent_jobs=8, cpu_per_trial=1.0, n_trials=1) == 1
    assert default_parallelism(max_concurrent_jobs=1, cpu_per_trial=1.0, n_trials=10) == 1
    assert default_parallelism(max_concurrent_jobs=64, cpu_per_trial=1000.0, n_trials=10) == 1


def test_direction_follows_the_metric() -> None:
    assert study_settings(metric="rmse").direction == "minimize"
    assert study_settings(metric="roc_auc").maximize
