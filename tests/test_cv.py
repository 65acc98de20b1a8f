"""K-fold cross-validation end to end (issue #13): a 2-trial tuning request with "cv 3 folds" through
`expagent run` (embedded offline model, real MLflow on sqlite in a temp workspace, real training), and
the per-fold intermediate values a pruned CV trial reports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from graph_support import all_runs, make_settings
from mlflow.tracking import MlflowClient
from tuning_support import EXPERIMENT, make_ctx

from tools.core.registry import DatasetRegistry
from tools.core.tracking import create_parent_run
from tools.guard.policy import guarded_call
from tools.training.dataset_cache import load_verified_frame
from tools.training.holdout import cv_folds, rows_sha256, split_rows

EXPAGENT = str(Path(sys.executable).with_name("expagent"))
REQUEST = (
    "Tune lightgbm on breast_cancer version 1 optimizing roc_auc, 2 trials, cv 3 folds, experiment cv-e2e"
)


def test_a_two_trial_cv_request_finishes_selected_on_the_cv_mean(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    env = {**os.environ, "EXPAGENT_HOME": str(tmp_path), "EXPAGENT_TRACE": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(
        [EXPAGENT, "run", "--yes", "--json", REQUEST],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert out["status"] == "answered"
    runs = {r.info.run_id: r for r in all_runs(settings)}
    roles = sorted(r["role"] for r in out["runs"])
    assert roles == ["baseline", "session", "trial", "trial", "tuning"]
    assert {r.info.status for r in runs.values()} == {"FINISHED"}
    plan, summary = out["sections"]["Plan"], out["sections"]["Summary"]
    assert "3-fold cross-validation" in plan and "cv_val_roc_auc_mean" in plan
    # "best vs baseline" names the CV mean ± std of both runs.
    assert "selected on cv_val_roc_auc_mean" in summary and "±" in summary and "noise" in summary

    # The split and folds, recomputed from the registered data: every trained run logged these hashes.
    registry = DatasetRegistry.open(settings)
    record = registry.get("breast_cancer", "1")
    frame = load_verified_frame(registry, record)
    y = frame[record.schema.target]
    split = split_rows(y, 0.25, 0.2, 42, stratify=True)
    folds = cv_folds(split, y, 3, stratify=True)
    test_rows = set(frame.index[split.test])
    fold_rows = [set(frame.index[out]) for out in folds.held_out]
    assert all(not rows & test_rows for rows in fold_rows)  # no test row is ever in a fold
    trained = [r for r in runs.values() if r.data.tags.get("expagent.role") in ("baseline", "trial")]
    assert len(trained) == 3, [r.data.tags.get("expagent.role") for r in runs.values()]
    for run in trained:
        tags, metrics = run.data.tags, run.data.metrics
        assert tags["split.test_sha256"] == rows_sha256(test_rows)
        assert [tags[f"cv.fold{k}_val_sha256"] for k in range(3)] == [rows_sha256(r) for r in fold_rows]
        assert run.data.params["cv_folds"] == "3"
        assert run.data.params["selection_metric"] == "cv_val_roc_auc_mean"
        assert 0.5 < metrics["cv_val_roc_auc_mean"] <= 1.0 and metrics["cv_val_roc_auc_std"] > 0.0
        assert "test_roc_auc" in metrics
    tuning = next(r for r in runs.values() if r.data.tags.get("expagent.role") == "tuning")
    assert tuning.data.tags["expagent.selected_on"] == "cv_val_roc_auc_mean"
    best = out["best_run_id"]
    trials = [r for r in trained if r.data.tags.get("expagent.role") == "trial"]
    assert best == max(trials, key=lambda r: r.data.metrics["cv_val_roc_auc_mean"]).info.run_id


def test_a_pruned_cv_run_reports_the_running_mean_after_each_fold(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path / "ws")
    session = create_parent_run(ctx, EXPERIMENT, "session", run_name="session")
    args = {"dataset": "breast_cancer", "version": "1", "model_family": "lightgbm", "metric": "roc_auc",
            "experiment": EXPERIMENT, "params": {"n_estimators": 10}, "role": "baseline",
            "parent_run_id": session, "cv_folds": 4, "report_intermediate": True}  # fmt: skip
    outcome = guarded_call("start_training_run", args, ctx)
    assert outcome.ok and outcome.result, outcome.to_model_message()
    job = ctx.runtime.wait([outcome.result["job_id"]], timeout=120)[0]
    assert job.state == "succeeded", job.reason
    client: MlflowClient = ctx.tracking
    history = client.get_metric_history(job.run_id, "cv_val_roc_auc_mean")
    assert [m.step for m in history] == [1, 2, 3, 4]  # one intermediate value per fold, nothing else
    assert history[-1].value == client.get_run(job.run_id).data.metrics["cv_val_roc_auc_mean"]
    # No boosting-round curve of the final model (fitted on train, scored on val): the pruner sees folds.
    assert [m.step for m in client.get_metric_history(job.run_id, "val_roc_auc")] == [0]
    ctx.close()
