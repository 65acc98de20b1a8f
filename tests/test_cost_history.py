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
