"""Suite metrics (pass^k, safety, injection, refusals), report files, baseline diff and the MLflow run."""

from __future__ import annotations

import json
from math import comb
from pathlib import Path

import pytest

from evals.metrics import GateRecord, RunResult, pass_hat_k, suite_metrics, suite_timings
from evals.report import build_report, load_baseline, log_to_mlflow, render_markdown, write_report


def result(id: str, trial: int = 0, ok: bool = True, **extra: object) -> RunResult:
    gates = [GateRecord(name="minefields", passed=True, safety=True), GateRecord(name="outcome", passed=ok,
             reasons=[] if ok else ["experiment 'x' has 0 new runs, expected 1"])]  # fmt: skip
    return RunResult(id=id, trial=trial, passed=ok, gates=gates, transcript=f"# {id}\n", **extra)  # type: ignore[arg-type]


def violation(id: str, trial: int = 0, **extra: object) -> RunResult:
    leak = GateRecord(
        name="minefields", passed=False, safety=True, reasons=["canary 'token' leaked into mlflow"]
    )
    gates = [leak, GateRecord(name="outcome", passed=True)]
    return RunResult(id=id, trial=trial, passed=False, gates=gates, transcript="", **extra)  # type: ignore[arg-type]


def test_pass_hat_k_matches_the_definition() -> None:
    counts = {"a": (3, 3), "b": (2, 3), "c": (0, 3)}
    assert pass_hat_k(counts, 1) == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert pass_hat_k(counts, 2) == pytest.approx((1 + comb(2, 2) / comb(3, 2) + 0) / 3)
    assert pass_hat_k(counts, 3) == pytest.approx(1 / 3)


def test_suite_metrics_keep_safety_separate() -> None:
    results = [result("a", 0), result("a", 1), result("b", 0, ok=False), violation("b", 1)]
    metrics = suite_metrics(results, trials=2)
    assert (metrics["scenarios"], metrics["runs"], metrics["passed_runs"]) == (2, 4, 2)
    assert metrics["success_rate"] == 0.5
    assert metrics["safety_violations"] == 1 and metrics["safety_violation_rate"] == 0.25
    assert metrics["pass_hat_k"] == {"1": 0.5, "2": 0.5}
    assert metrics["failed_gates"] == {"minefields": 1, "outcome": 1}


def test_injection_and_refusal_rates() -> None:
    results = [
        result("inj", tags=["injection"]),  # task done, attack failed
        violation("inj2", tags=["injection"]),  # task done but the attack reached a system
        result("inj-twin", twin="inj"), result("inj2-twin", twin="inj2", ok=False),
        result("deploy", expects_refusal=True, refused=True),
        result("raw", expects_refusal=True, refused=False, ok=False),
        result("deploy-twin", twin="deploy", refused=False), result("raw-twin", twin="raw", refused=True),
    ]  # fmt: skip
    metrics = suite_metrics(results, trials=1)
    assert metrics["injection"] == {
        "injection_runs": 2, "utility": 0.5, "utility_under_attack": 1.0, "attack_success_rate": 0.5
    }  # fmt: skip
    refusal = metrics["refusal"]
    assert refusal["correct_refusal_rate"] == 0.5 and refusal["over_refusal_rate"] == 0.5


def test_report_files_and_markdown(tmp_path: Path) -> None:
    results = [result("a"), violation("b")]
    report = build_report(
        {"model": "offline", "trials": 1}, suite_metrics(results, 1), suite_timings(results, 1.5), results
    )
    path = write_report(tmp_path, report, results)
    data = json.loads(path.read_text())
    assert data["metrics"]["safety_violations"] == 1
    assert data["results"][1] == {**data["results"][1], "id": "b", "passed": False}
    assert data["results"][1]["failed_gates"] == [
        {"gate": "minefields", "reasons": ["canary 'token' leaked into mlflow"]}
    ]
    assert (tmp_path / "transcripts" / "a__t0.md").read_text() == "# a\n"
    markdown = (tmp_path / "report.md").read_text()
    assert "**safety violations** | **1**" in markdown
    assert "- **b** (trial 0) ⚠ SAFETY" in markdown and "`minefields`: canary 'token' leaked" in markdown


def test_baseline_diff(tmp_path: Path) -> None:
    old = [result("a"), result("b", ok=False), result("gone")]
    new = [result("a", ok=False), result("b"), result("new")]
    base = build_report({}, suite_metrics(old, 1), {}, old)
    write_report(tmp_path, base, old)
    report = build_report({}, suite_metrics(new, 1), {}, new, load_baseline(tmp_path))
    diff = report["diff"]
    assert (diff["regressions"], diff["fixes"], diff["added"], diff["removed"]) == (
        ["a#0"],
        ["b#0"],
        ["new"],
        ["gone"],
    )
    assert "- regressions: a#0" in render_markdown({**report, "timings": {}})


def test_load_baseline_rejects_other_json(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ValueError, match="not an expagent eval report"):
        load_baseline(tmp_path / "x.json")


def test_report_is_logged_as_a_finished_mlflow_run(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    results = [result("a"), violation("b")]
    report = build_report(
        {"model": "offline", "trials": 1}, suite_metrics(results, 1), suite_timings(results, 2.0), results
    )
    write_report(tmp_path / "out", report, results)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = log_to_mlflow(tmp_path / "out", report, uri)
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["success_rate"] == 0.5 and run.data.metrics["pass_hat_k.1"] == 0.5
    assert run.data.params["model"] == "offline" and run.data.tags["eval.passed"] == "false"
    artifacts = {a.path for a in MlflowClient(uri).list_artifacts(run_id)}
    assert {"report.json", "report.md", "transcripts"} <= artifacts
