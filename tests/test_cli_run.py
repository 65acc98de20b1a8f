"""`expagent run` end to end in a subprocess, on the embedded offline model and a temp workspace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from graph_support import all_runs, make_settings

EXPAGENT = [str(Path(sys.executable).with_name("expagent"))]
DONE_WHEN = "Train a lightgbm baseline on breast_cancer version 1 optimizing roc_auc in experiment smoke"


def _run(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "EXPAGENT_HOME": str(home), "EXPAGENT_TRACE": "false", **env}
    environment.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [*EXPAGENT, "run", *args], capture_output=True, text=True, env=environment, timeout=240, check=False
    )


def test_run_yes_json_trains_a_baseline_and_cites_it(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)  # seeds the workspace with a migrated MLflow store
    done = _run(tmp_path, "--yes", "--json", DONE_WHEN)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert list(out["sections"]) == ["Plan", "Changes", "Verification", "Rollback", "Summary"]
    statuses = {r.info.run_id: r.info.status for r in all_runs(settings)}
    baseline = out["baseline_run_id"]
    assert statuses[baseline] == "FINISHED" and baseline in out["sections"]["Summary"]
    assert {r["run_id"]: r["status"] for r in out["runs"]} == statuses
    assert out["usage"]["model_calls"] == 1 and out["usage"]["prompt_tokens"] > 0
    assert out["asked_for"] == [] and out["policy_events"] == []
    assert out["runs"][1]["metrics"]["roc_auc"] > 0.9


def test_run_without_yes_exits_4_and_resumes_on_the_thread(tmp_path: Path) -> None:
    make_settings(tmp_path)
    cap = {"EXPAGENT_BUDGET_MAX_CPU_PER_RUN": "0.5"}
    waiting = _run(tmp_path, "--json", "--thread", "cli-approval", "--new-thread", DONE_WHEN, **cap)
    assert waiting.returncode == 4, waiting.stderr
    assert "expagent run --thread cli-approval --yes" in waiting.stderr
    assert json.loads(waiting.stdout)["approval"]["approval_keys"] == ["budget:cpu"]
    done = _run(tmp_path, "--json", "--thread", "cli-approval", "--yes", "approve", **cap)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["status"] == "answered" and out["baseline_run_id"]
