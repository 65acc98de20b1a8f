"""K-fold cross-validation on the training part (issue #13): "cv 5 folds" in a request, mean ± std per
metric, selection on the CV mean, and the test rows never in a fold.

Real local MLflow (sqlite in a temp dir), real local training of tiny LightGBM models.
"""

from __future__ import annotations

from typing import Any

import pytest
from tuning_support import EXPERIMENT, make_ctx, study

from agent.grammar.intake import parse_message
from agent.sections import _cv_spread
from agent.state import RunRecord
from tools.core.registry import DatasetRegistry
from tools.core.tracking import create_parent_run
from tools.guard.policy import guarded_call
from tools.training.dataset_cache import load_verified_frame
from tools.training.holdout import cv_folds, rows_sha256, split_rows
from tools.tuning.records import TrialResult
from tools.tuning.study import run_study

FOLDS = 3


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> Any:
    ctx = make_ctx(tmp_path_factory.mktemp("cv") / "ws")
    session = create_parent_run(ctx, EXPERIMENT, "session", run_name="session")
    args = {"dataset": "breast_cancer", "version": "1", "model_family": "lightgbm", "metric": "roc_auc",
            "experiment": EXPERIMENT, "params": {"n_estimators": 10}, "role": "baseline",
            "parent_run_id": session, "cv_folds": FOLDS}  # fmt: skip
    outcome = guarded_call("start_training_run", args, ctx)
    assert outcome.ok and outcome.result, outcome.to_model_message()
    job = ctx.runtime.wait([outcome.result["job_id"]], timeout=120)[0]
    assert job.state == "succeeded", job.reason
    value = ctx.tracking.get_run(job.run_id).data.metrics["cv_val_roc_auc_mean"]
    baseline = TrialResult(run_id=job.run_id, job_id=job.job_id, state="COMPLETE", value=value)
    settings = study(ctx, n_trials=3, parent_run_id=session, prune=True, cv_folds=FOLDS)
    result = run_study(ctx, settings, baseline)
    ctx.tracking.set_terminated(session)
    yield ctx, result
    ctx.close()


def test_cv_folds_are_disjoint_from_the_test_rows_by_their_logged_hashes(tuned: Any) -> None:
    ctx, result = tuned
    registry = DatasetRegistry.open(ctx.settings)
    record = registry.get("breast_cancer", "1")
    frame = load_verified_frame(registry, record)
    y = frame[record.schema.target]
    split = split_rows(y, 0.25, 0.2, 42, stratify=True)
    folds = cv_folds(split, y, FOLDS, stratify=True)
    test_rows = set(frame.index[split.test])
    fold_rows = [set(frame.index[out]) for out in folds.held_out]
    assert all(not rows & test_rows for rows in fold_rows)
    assert set().union(*fold_rows) == set(frame.index[split.train]) | set(frame.index[split.val])
    assert sum(len(rows) for rows in fold_rows) == len(set().union(*fold_rows))  # folds do not overlap
    runs = [ctx.tracking.get_run(t.run_id) for t in result.trials if t.run_id] + [
        ctx.tracking.get_run(result.baseline.run_id)
    ]
    assert len(runs) == 4
    for run in runs:
        tags = run.data.tags
        assert tags["split.test_sha256"] == rows_sha256(test_rows)
        assert tags["cv.rows_sha256"] == rows_sha256(set().union(*fold_rows))
        for k, rows in enumerate(fold_rows):
            assert tags[f"cv.fold{k}_val_sha256"] == rows_sha256(rows)
        assert f"cv.fold{FOLDS}_val_sha256" not in tags
        assert run.data.params["cv_folds"] == str(FOLDS)


def test_trials_are_selected_on_the_cv_mean_and_log_its_std(tuned: Any) -> None:
    ctx, result = tuned
    complete = [t for t in result.trials if t.state == "COMPLETE"]
    assert complete
    for trial in complete:
        metrics = ctx.tracking.get_run(trial.run_id).data.metrics
        assert trial.value == metrics["cv_val_roc_auc_mean"]  # what the study was told
        assert trial.value != metrics["val_roc_auc"]  # not the single validation split
        for name in ("roc_auc", "accuracy", "f1", "log_loss"):
            assert metrics[f"cv_val_{name}_std"] >= 0.0 and f"cv_val_{name}_mean" in metrics
        assert metrics["cv_val_roc_auc_std"] > 0.0
        assert ctx.tracking.get_run(trial.run_id).data.params["selection_metric"] == "cv_val_roc_auc_mean"
    assert result.best.value == max(t.value for t in complete)
    tuning = ctx.tracking.get_run(result.tuning_run_id)
    assert tuning.data.tags["expagent.selected_on"] == "cv_val_roc_auc_mean"


def test_the_pruner_reads_the_running_cv_mean_per_fold_never_test_rows(tuned: Any) -> None:
    ctx, result = tuned
    for trial in result.trials:
        if not trial.run_id:
            continue
        run = ctx.tracking.get_run(trial.run_id)
        history = ctx.tracking.get_metric_history(trial.run_id, "cv_val_roc_auc_mean")
        steps = [m.step for m in history]
        assert steps == sorted(set(steps)) and set(steps) <= set(range(1, FOLDS + 1)), steps
        if trial.state == "COMPLETE":  # one value per fold; the last is the CV mean the study selected on
            assert steps == list(range(1, FOLDS + 1))
            assert history[-1].value == pytest.approx(run.data.metrics["cv_val_roc_auc_mean"])
            assert trial.value == pytest.approx(history[-1].value)
            assert run.data.metrics["test_roc_auc"] == run.data.metrics["roc_auc"]
        # With folds the final model reports no per-round curve: val_roc_auc is one final value.
        assert [m.step for m in ctx.tracking.get_metric_history(trial.run_id, "val_roc_auc")] in ([], [0])


def test_a_request_chooses_cv_in_words() -> None:
    decision, _ = parse_message("tune lightgbm on breast_cancer@1 for roc_auc, 10 trials, cv 5 folds")
    assert decision.request.cv_folds == 5 and decision.request.trials == 10
    assert not decision.not_understood
    decision, _ = parse_message("train lightgbm on breast_cancer@1 with 3-fold cross-validation")
    assert decision.request.cv_folds == 3
    decision, _ = parse_message("train lightgbm on breast_cancer@1, cv 1 fold")
    assert decision.request.cv_folds is None
    assert decision.not_understood == ["cross-validation needs 2 to 20 folds, not 1"]


def test_one_fold_is_a_one_line_error_and_nothing_runs(tmp_path: Any) -> None:
    ctx = make_ctx(tmp_path / "ws")
    args = {"dataset": "breast_cancer", "version": "1", "model_family": "lightgbm", "metric": "roc_auc",
            "experiment": EXPERIMENT, "cv_folds": 1}  # fmt: skip
    outcome = guarded_call("start_training_run", args, ctx)
    assert not outcome.ok
    assert "at least 2 folds" in outcome.to_model_message()
    assert ctx.tracking.search_experiments(filter_string=f"name = '{EXPERIMENT}'") == []
    ctx.close()


def test_the_answer_says_when_the_cv_difference_is_within_one_fold_std() -> None:
    def run(mean: float, std: float) -> RunRecord:
        metrics = {"cv_val_roc_auc_mean": mean, "cv_val_roc_auc_std": std}
        return RunRecord(run_id="r", role="trial", status="FINISHED", metrics=metrics)

    close = _cv_spread(run(0.95, 0.02), run(0.94, 0.01), "roc_auc")
    assert "0.9500 ± 0.0200" in close and "within noise" in close
    assert "outside noise" in _cv_spread(run(0.99, 0.002), run(0.90, 0.01), "roc_auc")
    assert _cv_spread(RunRecord(run_id="r", role="trial", status="FINISHED"), run(0.9, 0.1), "roc_auc") == ""


def test_a_run_with_only_a_validation_score_reports_it_under_its_own_name() -> None:
    from agent.sections import primary_metric

    assert primary_metric({"test_roc_auc": 0.9, "val_roc_auc": 0.95}, "roc_auc") == ("test_roc_auc", 0.9)
    assert primary_metric({"val_roc_auc": 0.95}, "roc_auc") == ("val_roc_auc", 0.95)
    assert primary_metric({"val_accuracy": 0.95}, "roc_auc") is None
