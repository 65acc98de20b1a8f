"""Trainer overhead per run: warm fork-server jobs vs plain subprocess jobs vs in-process training.

Each timed run is a LightGBM run on breast_cancer@1 launched like the agent does (``start_training_run``:
create the MLflow run, submit, tag) and waited for until its job is done. The in-process figure is
``run_training`` called directly in an already-warm process: the floor a job cannot beat.

Usage: ``.venv/bin/python benchmarks/bench_trainer.py [--runs 5] [--n-estimators 100]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from tools.context import build_context
from tools.core.settings import Settings
from tools.jobs import StartTrainingRunArgs, start_training_run
from tools.runtime.local import LaunchMode, LocalRuntime


def _args(n_estimators: int) -> StartTrainingRunArgs:
    return StartTrainingRunArgs(
        dataset="breast_cancer", version="1", model_family="lightgbm", metric="roc_auc",
        experiment="bench-trainer", params={"n_estimators": n_estimators},
    )  # fmt: skip


def time_jobs(settings: Settings, mode: LaunchMode, runs: int, n_estimators: int) -> list[float]:
    """Return the wall seconds of ``runs`` jobs (after one untimed warm-up job) in ``mode``."""
    runtime = LocalRuntime(settings, mode=mode)
    ctx = build_context(settings, _runtime=runtime)
    timings = []
    for index in range(runs + 1):
        begin = time.perf_counter()
        started = start_training_run(ctx, _args(n_estimators))
        (info,) = runtime.wait([started.job_id], timeout=600)
        elapsed = time.perf_counter() - begin
        if info.state != "succeeded":
            raise RuntimeError(f"{mode} job {info.job_id} ended {info.state}: {info.reason}")
        if index:  # the first job pays for starting the fork server (or warming the disk cache)
            timings.append(elapsed)
    runtime.close()
    return timings


def time_in_process(settings: Settings, runs: int, n_estimators: int) -> list[float]:
    """Return the wall seconds of ``runs`` in-process trainings (after one untimed warm-up)."""
    from tools.core.specs import TrainingSpec
    from tools.training.trainer import run_training

    spec = TrainingSpec(**_args(n_estimators).model_dump(exclude={"run_id", "session_id", "requester"}))
    timings = []
    for index in range(runs + 1):
        begin = time.perf_counter()
        result = run_training(spec, settings)
        if result.status != "FINISHED":
            raise RuntimeError(f"in-process run failed: {result.error}")
        if index:
            timings.append(time.perf_counter() - begin)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="Timed runs per mode.")
    parser.add_argument("--n-estimators", type=int, default=100, help="LightGBM boosting rounds.")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-trainer-") as home:
        settings = Settings(home=Path(home))
        settings.ensure_home()
        results = {
            "forkserver": time_jobs(settings, "forkserver", options.runs, options.n_estimators),
            "subprocess": time_jobs(settings, "subprocess", options.runs, options.n_estimators),
            "in-process": time_in_process(settings, options.runs, options.n_estimators),
        }
    floor = statistics.median(results["in-process"])
    print(f"lightgbm on breast_cancer@1, n_estimators={options.n_estimators}, {options.runs} timed runs each")
    print(f"{'mode':<12}{'median s':>10}{'min s':>8}{'max s':>8}{'overhead s':>12}")
    for mode, timings in results.items():
        median = statistics.median(timings)
        print(f"{mode:<12}{median:>10.3f}{min(timings):>8.3f}{max(timings):>8.3f}{median - floor:>12.3f}")
    warm, cold = statistics.median(results["forkserver"]), statistics.median(results["subprocess"])
    print(f"overhead_forkserver_s={warm - floor:.3f} overhead_subprocess_s={cold - floor:.3f}")
    print(f"speedup_forkserver_vs_subprocess={cold / warm:.2f}")


if __name__ == "__main__":
    main()
