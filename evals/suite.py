"""Run a whole suite: load and select scenarios, run every (scenario, trial), compute metrics, report.

This is what ``expagent eval`` calls; :mod:`evals.harness` runs the units, :mod:`evals.report` writes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals.harness import Unit, run_units
from evals.metrics import RunResult
from evals.podpool import start_pool
from evals.schema import Scenario
from tools.core.sqlite_uri import sqlite_uri


@dataclass
class EvalOptions:
    """What ``expagent eval`` was asked to do."""

    paths: list[Path]
    model: str = "offline"
    trials: int = 1
    tags: list[str] = field(default_factory=list)
    report_dir: Path = Path("out/eval")
    baseline: Path | None = None
    min_success: float = 0.0
    jobs: int = 2
    seed: int = 0
    keep_workspaces: bool = False
    tracking_uri: str | None = None  # where the evaluation run is logged; default the report's own store
    log_to_mlflow: bool = True


@dataclass
class SuiteOutcome:
    """The written report and whether the suite passed."""

    report: dict[str, Any]
    report_path: Path
    results: list[RunResult]
    min_success: float
    eval_run_id: str | None = None

    @property
    def safe(self) -> bool:
        return self.report["metrics"]["safety_violations"] == 0

    @property
    def ok(self) -> bool:
        """Return whether there was no safety violation and success reached the minimum."""
        return self.safe and self.report["metrics"]["success_rate"] >= self.min_success


#: a RAM-backed directory for the scenarios' throw-away workspaces, when the machine has one.
SHM = Path("/dev/shm")
#: used only when at least this much of it is free (Docker's default /dev/shm is 64 MiB).
SHM_MIN_FREE_BYTES = 2 * 1024**3


def scratch_parent(keep_workspaces: bool, shm: Path = SHM) -> str | None:
    """Return where the suite's workspaces go: a RAM-backed directory if there is room, else the default.

    Every scenario writes a fresh MLflow store, checkpoints, audit log and job files and throws them away;
    on disk, SQLite's commits wait for the disk and the kernel's writeback (measured on 2 cores, same code:
    the suite took 175 s of wall clock and 297 machine CPU-s with workspaces on ext4, 157 s and 280 CPU-s
    in /dev/shm).
    An explicit TMPDIR wins, and kept workspaces (--keep-workspaces) stay on disk for later reading.
    """
    if keep_workspaces or os.environ.get("TMPDIR"):
        return None
    try:
        stats = os.statvfs(shm)
    except OSError:
        return None
    if stats.f_bavail * stats.f_frsize < SHM_MIN_FREE_BYTES or not os.access(shm, os.W_OK | os.X_OK):
        return None
    return str(shm)


def _mode(scenarios: list[Scenario], model: str) -> str:
    kinds = {"scripted" if s.model is not None else model.split(":", 1)[0] for s in scenarios}
    live = sorted(k for k in kinds if k not in ("scripted", "offline"))
    return "live" if live else "+".join(sorted(kinds))


def manifest(options: EvalOptions, scenarios: list[Scenario]) -> dict[str, Any]:
    """Return what identifies this suite run: code, scenarios, model, seed, trials, mode."""
    from datetime import UTC, datetime

    from evals.loader import suite_hash
    from tools.core.provenance import code_version, python_version

    code = code_version()
    return {
        "git_sha": code.sha, "git_dirty": code.dirty, "scenario_set_hash": suite_hash(scenarios),
        "scenario_count": len(scenarios), "model": options.model, "model_parameters": {},
        "seed": options.seed, "trials": options.trials, "mode": _mode(scenarios, options.model),
        "tags": list(options.tags), "jobs": options.jobs, "python": python_version(),
        "created_at": datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
    }  # fmt: skip


def run_suite(options: EvalOptions, on_result: Callable[[RunResult], None] | None = None) -> SuiteOutcome:
    """Load, run, score and report a suite; raise ScenarioError for invalid scenario files."""
    from evals.loader import ScenarioError, load_suite, select
    from evals.metrics import suite_metrics, suite_timings
    from evals.report import build_report, load_baseline, log_to_mlflow, write_report
    from evals.world import build_templates

    scenarios = select(load_suite(options.paths), options.tags)
    if not scenarios:
        raise ScenarioError([f"no scenario has any of the tags {', '.join(options.tags)}"])
    baseline = load_baseline(options.baseline) if options.baseline else None
    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="expagent-eval-", dir=scratch_parent(options.keep_workspaces)))
    try:
        if any(s.world.runtime == "kubernetes" for s in scenarios):
            start_pool(Path(tempfile.gettempdir()))  # warms up while the templates are built
        templates = build_templates(root / "template", scenarios)
        units = [Unit(s, t, options.model, options.seed, templates, root, options.keep_workspaces)
                 for s in scenarios for t in range(options.trials)]  # fmt: skip
        results = run_units(units, options.jobs, on_result)
    finally:
        if not options.keep_workspaces:
            shutil.rmtree(root, ignore_errors=True)
    metrics = suite_metrics(results, options.trials)
    timings = suite_timings(results, time.perf_counter() - started)
    report = build_report(manifest(options, scenarios), metrics, timings, results, baseline)
    path = write_report(options.report_dir, report, results)
    outcome = SuiteOutcome(report, path, results, options.min_success)
    if options.log_to_mlflow:
        uri = options.tracking_uri or sqlite_uri((options.report_dir / "mlflow.db").resolve())
        outcome.eval_run_id = log_to_mlflow(options.report_dir, report, uri)
    return outcome
