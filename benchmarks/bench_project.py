"""User-code overhead: one entry point trial through expagent vs the same script run by hand.

The project is ``examples/xgboost-tabular`` copied into a temporary directory with a ``python_env.yaml``
(so trials run in a uv virtualenv of the workspace, built by the first trial and not timed; no
dependencies are declared, so the build needs no package index). expagent's trial is the whole path a
tuning trial takes: ``guarded_call("start_training_run")`` (the guard re-hashes the tree, the MLflow run
is created first), the local runtime's warm worker, the project's command in its environment, the
contract and model-registry checks, until ``wait`` returns. By hand is ``python train.py --n-estimators
… `` in the project directory with the same params, the dataset environment and the same tracking
store (the script creates its own run). Each side runs ``--trials`` times, alternating; medians compared.

    .venv/bin/python benchmarks/bench_project.py [--trials 5]

The last line is ``project_overhead_ratio=X.XX`` (goal <= 1.2).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATASET, VERSION = "breast_cancer", "1"
PARAMS = {"n_estimators": 50, "learning_rate": 0.1, "max_depth": 4}


def _project(tmp: Path) -> Path:
    project = tmp / "xgboost-tabular"
    shutil.copytree(ROOT / "examples" / "xgboost-tabular", project)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    (project / "python_env.yaml").write_text(f'python: "{version}"\ndependencies: []\n')
    return project


def _by_hand(project: Path, settings: Any) -> float:
    """Run the project's script as a person would (same params, data and tracking store); seconds."""
    from tools.core.registry import DatasetRegistry

    datasets = DatasetRegistry.open(settings)
    record = datasets.get(DATASET, VERSION)
    env = {
        **os.environ, "MLFLOW_TRACKING_URI": settings.resolved_tracking_uri,
        "MLFLOW_EXPERIMENT_NAME": "bench-by-hand", "EXPAGENT_DATASET_PATH": str(datasets.local_path(record)),
        "EXPAGENT_DATASET_SHA256": record.sha256, "EXPAGENT_DATASET_NAME": record.ref,
        "EXPAGENT_DATASET_TARGET": record.schema.target, "EXPAGENT_SEED": "42",
    }  # fmt: skip
    flags = {"--n-estimators": "n_estimators", "--learning-rate": "learning_rate", "--max-depth": "max_depth"}
    command = [sys.executable, "train.py", *(x for f, k in flags.items() for x in (f, str(PARAMS[k])))]
    started = time.perf_counter()
    subprocess.run(command, cwd=project, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def _through_expagent(ctx: Any, ref: str) -> tuple[float, str]:
    """Launch one guarded entry point trial and wait for it; return (seconds, the run's status)."""
    from tools.guard.policy import guarded_call

    args = {"dataset": DATASET, "version": VERSION, "model_family": "logistic_regression",
            "metric": "roc_auc", "experiment": "bench-project", "params": PARAMS,
            "entry_point": {"ref": ref, "entry": "main"}}  # fmt: skip
    started = time.perf_counter()
    outcome = guarded_call("start_training_run", args, ctx)
    assert outcome.ok and outcome.result, outcome.to_model_message()
    ctx.runtime.wait([outcome.result["job_id"]], timeout=None)
    seconds = time.perf_counter() - started
    return seconds, ctx.tracking.get_run(outcome.result["run_id"]).info.status


def measure(trials: int) -> dict[str, Any]:
    """Return the medians of both sides and their ratio (first, environment-building trial excluded)."""
    from tools.context import build_context
    from tools.core.entrypoints import EntryPointRegistry
    from tools.core.settings import Settings

    with tempfile.TemporaryDirectory(prefix="bench-project-") as tmp:
        settings = Settings(home=Path(tmp) / "home", trace=False)
        settings.ensure_home()
        project = _project(Path(tmp))
        registry = EntryPointRegistry.open(settings)
        ref = registry.register(project, "xgb").ref
        registry.set_status(ref, "validated", "benchmark")
        ctx = build_context(settings, session_id="bench-project")
        try:
            first, status = _through_expagent(ctx, ref)  # builds the project's environment
            assert status == "FINISHED", status
            _by_hand(project, settings)  # warms the OS file cache for the script's imports too
            ours, hand = [], []
            for _ in range(trials):
                seconds, status = _through_expagent(ctx, ref)
                assert status == "FINISHED", status
                ours.append(seconds)
                hand.append(_by_hand(project, settings))
        finally:
            ctx.close()
    return {"first": first, "expagent": statistics.median(ours), "by_hand": statistics.median(hand),
            "ratio": statistics.median(ours) / statistics.median(hand)}  # fmt: skip


def report(trials: int) -> float:
    """Print the comparison and ``project_overhead_ratio=X.XX``; return the ratio."""
    found = measure(trials)
    print(f"user-code trial, xgboost-tabular {PARAMS} on {DATASET}@{VERSION} ({os.cpu_count()} cores, "
          f"median of {trials}):", flush=True)  # fmt: skip
    print(f"  {'first trial (builds the env)':34} {found['first']:7.2f}s")
    print(f"  {'through expagent':34} {found['expagent']:7.2f}s")
    print(f"  {'python train.py by hand':34} {found['by_hand']:7.2f}s")
    print(f"project_overhead_ratio={found['ratio']:.2f}")
    return float(found["ratio"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=5)
    report(parser.parse_args().trials)


if __name__ == "__main__":
    main()
