"""Results an ML engineer can trust and read (issue #13): selection on validation, test with an interval,
tuning progress on the tuning run, and a description, user and source on every run.

Real local MLflow (sqlite in a temp dir), real subprocess/warm-worker training of tiny LightGBM models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from tuning_support import EXPERIMENT, assert_nothing_running, make_ctx, real_baseline, study

from tools.context import ToolContext
from tools.core.registry import DatasetRegistry
from tools.core.tracking import create_parent_run
from tools.training._modeling import frame_scorer
from tools.training.dataset_cache import load_verified_frame
from tools.training.holdout import (
    PREDICTIONS_ARTIFACT,
    paired_bootstrap,
    predictions_frame,
    rows_sha256,
    split_rows,
)
from tools.tuning.records import StudyResult, TestComparison
from tools.tuning.study import run_study
from tools.tuning.warm_start import describe as warm_start_text
from tools.tuning.warm_start import find_warm_start


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> Any:
    ctx = make_ctx(tmp_path_factory.mktemp("trust") / "ws")
    session = create_parent_run(ctx, EXPERIMENT, "session", run_name="session")
    baseline = real_baseline(ctx, session)
    settings = study(ctx, n_trials=4, parallelism=2, parent_run_id=session, prune=True)
    result = run_study(ctx, settings, baseline)
    ctx.tracking.set_terminated(session)
    yield ctx, result
    ctx.close()


def _runs(ctx: ToolContext, result: StudyResult) -> dict[str, Any]:
    ids = [t.run_id for t in result.trials if t.run_id] + [result.baseline.run_id]  # type: ignore[union-attr]
    return {run_id: ctx.tracking.get_run(run_id) for run_id in ids}


def _test_rows(ctx: ToolContext, run_id: str, tmp: Path) -> set[int]:
    path = ctx.tracking.download_artifacts(run_id, PREDICTIONS_ARTIFACT, str(tmp))
    return set(pd.read_csv(path)["row"])


def test_trials_are_selected_on_validation_rows_disjoint_from_the_test_rows(
    tuned: Any, tmp_path: Path
) -> None:
    ctx, result = tuned
    runs = _runs(ctx, result)
    hashes = {(r.data.tags["split.val_sha256"], r.data.tags["split.test_sha256"]) for r in runs.values()}
    assert len(hashes) == 1  # the baseline and every trial share one split
    val_hash, test_hash = hashes.pop()
    # Recompute the split from the registered data: the logged hashes are of these rows.
    registry = DatasetRegistry.open(ctx.settings)
    record = registry.get("breast_cancer", "1")
    frame = load_verified_frame(registry, record)
    split = split_rows(frame[record.schema.target], 0.25, 0.2, 42, stratify=True)
    val_rows, test_rows = set(frame.index[split.val]), set(frame.index[split.test])
    assert rows_sha256(val_rows) == val_hash and rows_sha256(test_rows) == test_hash
    assert not val_rows & test_rows
    assert _test_rows(ctx, result.baseline.run_id, tmp_path) == test_rows
    for trial in result.trials:
        run = runs[trial.run_id]
        if trial.state == "COMPLETE":
            assert trial.value == run.data.metrics["val_roc_auc"]  # what the study was told
            assert run.data.metrics["test_roc_auc"] == run.data.metrics["roc_auc"]
        assert run.data.params["selection_metric"] == "val_roc_auc"
        assert float(run.data.params["split.val_fraction"]) == pytest.approx(0.15, abs=0.01)
        assert float(run.data.params["split.test_fraction"]) == pytest.approx(0.25, abs=0.01)
    # What the pruner read (the per-round history) ends at the validation value, not the test one.
    best = runs[result.best.run_id]
    history = ctx.tracking.get_metric_history(result.best.run_id, "val_roc_auc")
    assert history[-1].value == pytest.approx(best.data.metrics["val_roc_auc"])
    tuning = ctx.tracking.get_run(result.tuning_run_id)
    assert tuning.data.tags["expagent.selected_on"] == "val_roc_auc"


def test_best_vs_baseline_is_compared_on_test_with_an_interval(tuned: Any) -> None:
    ctx, result = tuned
    found = result.test_comparison
    assert found is not None and found.low <= found.difference <= found.high
    runs = _runs(ctx, result)
    assert found.best_value == pytest.approx(runs[result.best.run_id].data.metrics["test_roc_auc"])
    assert found.baseline_value == pytest.approx(runs[result.baseline.run_id].data.metrics["test_roc_auc"])
    tuning = ctx.tracking.get_run(result.tuning_run_id)
    assert tuning.data.metrics["test_roc_auc_gain_low"] == pytest.approx(found.low)
    assert tuning.data.tags["expagent.test_gain_within_noise"] == str(found.within_noise).lower()
    note = tuning.data.tags["mlflow.note.content"]
    assert "paired bootstrap interval" in note and ("within noise" in note) == found.within_noise


def test_the_tuning_run_shows_best_so_far_and_the_study_plots(tuned: Any) -> None:
    ctx, result = tuned
    history = ctx.tracking.get_metric_history(result.tuning_run_id, "best_val_roc_auc")
    complete = sorted(t.number for t in result.trials if t.state == "COMPLETE")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == complete
    values = [m.value for m in sorted(history, key=lambda m: m.step)]
    assert values == sorted(values) and values[-1] == result.best.value
    artifacts = {a.path for a in ctx.tracking.list_artifacts(result.tuning_run_id, "plots")}
    assert {"plots/optimization_history.png", "plots/parallel_coordinate.png"} <= artifacts
    assert set(result.plots) <= artifacts
    png = ctx.tracking.download_artifacts(result.tuning_run_id, "plots/optimization_history.png")
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_run_has_a_description_a_user_and_a_source(tuned: Any) -> None:
    ctx, result = tuned
    client = ctx.tracking
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert "expagent" in experiment.tags["mlflow.note.content"]
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    assert len(runs) == len(result.trials) + 3  # session, baseline, tuning, trials
    for run in runs:
        tags = run.data.tags
        assert tags["mlflow.user"] == "alice", run.info.run_name
        assert tags["mlflow.source.name"].startswith("expagent"), run.info.run_name
        assert tags.get("mlflow.note.content"), run.info.run_name
    names = {r.info.run_name for r in runs}
    assert {f"trial-{t.number:02d}" for t in result.trials} <= names
    trial = next(r for r in runs if r.data.tags.get("expagent.role") == "trial")
    assert trial.data.tags["mlflow.note.content"].startswith(
        f"Trial {trial.data.tags['expagent.trial_number']} of study"
    )
    baseline = client.get_run(result.baseline.run_id)
    assert baseline.data.tags["mlflow.note.content"].startswith("Baseline lightgbm on breast_cancer@1")
    assert_nothing_running(ctx)


# ---- the interval itself ---------------------------------------------------------------------------


def _predictions(scores: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    proba = np.column_stack([1 - scores, scores])
    return predictions_frame(pd.RangeIndex(len(labels)), labels, (scores > 0.5).astype(int), proba, [0, 1])


def test_an_equal_model_is_within_noise_and_a_better_one_is_not() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 200)
    good = np.clip(labels * 0.6 + rng.normal(0.2, 0.2, 200), 0, 1)
    noisy = rng.uniform(0, 1, 200)
    scorer = frame_scorer("roc_auc")
    same = paired_bootstrap(
        _predictions(noisy, labels), _predictions(noisy[::-1].copy(), labels), "roc_auc", scorer
    )
    assert same.within_noise
    better = paired_bootstrap(_predictions(good, labels), _predictions(noisy, labels), "roc_auc", scorer)
    assert not better.within_noise and better.low > 0
    claim = TestComparison(metric="roc_auc", best_value=0.5, baseline_value=0.5, difference=same.difference,
                           low=same.low, high=same.high, rows=200, resamples=same.resamples)  # fmt: skip
    assert claim.sentence().endswith("within noise.")


# ---- warm start ------------------------------------------------------------------------------------


def test_a_new_study_starts_from_the_best_earlier_trials_and_the_plan_names_them(tuned: Any) -> None:
    ctx, earlier = tuned
    session = create_parent_run(ctx, EXPERIMENT, "session", run_name="session-2")
    settings = study(ctx, name="again", n_trials=2, parallelism=1, parent_run_id=session)
    found = find_warm_start(ctx.tracking, settings, limit=2)
    complete = sorted(
        (t for t in earlier.trials if t.state == "COMPLETE"), key=lambda t: t.value, reverse=True
    )
    assert [t.run_id for t in found] == [t.run_id for t in complete[:2]]
    assert found[0].params["n_estimators"] == earlier.best.params["n_estimators"]
    text = warm_start_text(found, "roc_auc")
    assert all(f"`{t.run_id}`" in text for t in found)

    result = run_study(ctx, settings.model_copy(update={"warm_start_trials": found}))
    ctx.tracking.set_terminated(session)
    for trial, source in zip(result.trials, found, strict=True):
        for name in ("n_estimators", "num_leaves"):
            assert trial.params[name] == source.params[name]


def test_without_earlier_trials_the_plan_says_there_were_none(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path / "empty")
    try:
        settings = study(ctx, name="first")
        assert find_warm_start(ctx.tracking, settings) == []
        assert "Warm start: none" in warm_start_text([], "roc_auc")
        assert "off" in warm_start_text([], "roc_auc", enabled=False)
    finally:
        ctx.close()


def test_a_request_can_turn_warm_start_off() -> None:
    from agent.grammar.intake import parse_message

    decision, _ = parse_message("tune lightgbm on breast_cancer@1 for 10 trials, no warm start")
    assert decision.request.warm_start is False and not decision.not_understood
    decision, _ = parse_message("tune lightgbm on breast_cancer@1 for 10 trials")
    assert decision.request.warm_start is None
