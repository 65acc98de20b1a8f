"""Plans estimate runs from earlier baselines of the same dataset and family (real MLflow store)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.entities import Metric, Param, RunTag

from tools.core.settings import Settings
from tools.core.tracking import make_client
from tools.tuning.budget import TrialCost, estimate_plan
from tools.tuning.cost_history import typical_baseline_cost
from tools.tuning.records import StudySettings
from tools.tuning.space import load_search_space


def _run(client, experiment_id: str, seconds: float, family: str = "lightgbm", role: str = "baseline",
         status: str = "FINISHED", dataset: str = "wine@1") -> None:  # fmt: skip
    run = client.create_run(experiment_id)
    client.log_batch(
        run.info.run_id, metrics=[Metric("run_seconds", seconds, 0, 0)],
        params=[Param("dataset", dataset), Param("model_family", family)],
        tags=[RunTag("expagent.role", role)],
    )  # fmt: skip
    client.set_terminated(run.info.run_id, status)


def test_the_median_of_recent_finished_baselines_of_the_same_dataset_and_family(tmp_path: Path) -> None:
    client = make_client(Settings(home=tmp_path))
    assert typical_baseline_cost(client, "wine@1", "lightgbm", 1.0) is None  # no history: the default
    first, second = client.create_experiment("a"), client.create_experiment("b")
    for seconds in (0.2, 0.4):
        _run(client, first, seconds)
    _run(client, second, 0.3)
    _run(client, second, 50.0, family="random_forest")  # another family
    _run(client, second, 60.0, role="trial")  # not a baseline
    _run(client, second, 70.0, status="FAILED")
    _run(client, second, 80.0, dataset="wine@2")  # another version
    cost = typical_baseline_cost(client, "wine@1", "lightgbm", 2.0)
    assert cost is not None
    assert (cost.wall_seconds, cost.cpu_seconds) == (pytest.approx(0.3), pytest.approx(0.6))
    assert typical_baseline_cost(client, "it's@1", "lightgbm", 1.0) is None  # never built into a query


def test_a_plan_made_before_the_baseline_uses_earlier_baselines() -> None:
    study = StudySettings(
        study_name="s", session_id="t", dataset="wine", version="1", model_family="lightgbm",
        metric="accuracy", experiment="e", search_space=load_search_space("lightgbm"), n_trials=20,
        parallelism=1, cpu_hours=10 / 3600,
    )  # fmt: skip
    estimate = estimate_plan(None, study, prior=TrialCost(cpu_seconds=0.3, wall_seconds=0.3))
    assert estimate.basis == "earlier baselines" and "from the earlier baselines" in estimate.summary
    assert estimate.per_trial_cpu_seconds == pytest.approx(0.45)  # lightgbm cost_factor 1.5
    assert estimate.trials_that_fit == 20  # (10 - 0.3) / 0.45 = 21 >= 20
    assert estimate_plan(None, study).basis == "default"


def _cv_run(client, experiment_id: str, seconds: float, folds: int) -> None:
    run = client.create_run(experiment_id)
    params = [Param("dataset", "wine@1"), Param("model_family", "lightgbm")]
    params += [Param("cv_folds", str(folds))] if folds else []
    client.log_batch(
        run.info.run_id, metrics=[Metric("run_seconds", seconds, 0, 0)], params=params,
        tags=[RunTag("expagent.role", "baseline")],
    )  # fmt: skip
    client.set_terminated(run.info.run_id, "FINISHED")


def test_cross_validated_runs_cost_one_fit_per_fold_plus_the_final_one(tmp_path: Path) -> None:
    client = make_client(Settings(home=tmp_path))
    experiment = client.create_experiment("cv")
    for seconds in (1.0, 1.2, 1.1):
        _cv_run(client, experiment, seconds, folds=0)
    _cv_run(client, experiment, 9.0, folds=5)
    plain = typical_baseline_cost(client, "wine@1", "lightgbm", 1.0)
    same_folds = typical_baseline_cost(client, "wine@1", "lightgbm", 1.0, cv_folds=5)
    scaled = typical_baseline_cost(client, "wine@1", "lightgbm", 1.0, cv_folds=3)
    assert plain is not None and plain.wall_seconds == pytest.approx(1.1)  # the 5-fold run is not mixed in
    assert same_folds is not None and same_folds.wall_seconds == pytest.approx(9.0)
    assert scaled is not None and scaled.wall_seconds == pytest.approx(1.1 * 4)  # 3 folds + final fit
    study = StudySettings(
        study_name="s", session_id="t", dataset="wine", version="1", model_family="lightgbm",
        metric="accuracy", experiment="e", search_space=load_search_space("lightgbm"), n_trials=4,
        parallelism=1, cv_folds=5,
    )  # fmt: skip
    without = study.model_copy(update={"cv_folds": 0})
    assert estimate_plan(None, study).per_trial_cpu_seconds == pytest.approx(
        6 * estimate_plan(None, without).per_trial_cpu_seconds
    )
