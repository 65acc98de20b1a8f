"""Tuning overhead: expagent's baseline + N LightGBM trials vs a hand-written Optuna + MLflow script.

Each side runs in a fresh Python process (imports included) on its own workspace with the same demo
dataset (breast_cancer@1), the same search space, the same seeded TPE sampler and the same logging per
run (params, tags, dataset input, metrics, the model with signature, input example and explicit
pip_requirements, and the lock file). expagent goes through everything the agent uses: the guard,
MLflow runs created before submission, the local runtime's warm worker processes (every trial runs
outside the agent process), the Optuna study's journal storage, the watchdog and budget accounting.

    .venv/bin/python benchmarks/bench_tuning.py [--trials 30] [--repeat 1] [--parallel 2] [--samplers]

The last line is ``overhead_ratio=X.XX`` (expagent sequential / script; target <= 1.15). Before it,
``benchmarks/bench_project.py`` prints ``project_overhead_ratio=X.XX``: a user-code (entry point) trial
through expagent vs the same ``python train.py`` by hand (goal <= 1.2; ``--no-project`` skips it).

Time to target: both sides select on the same validation rows (``tools.training.holdout.split_rows``:
train / val / test). The target is the best ``val_roc_auc`` the script reaches in ``--trials`` trials; the
script's time is from its start to the trial that first reached it. expagent's time is a fresh process
(imports, baseline, warm-start lookup, study) on a workspace that already holds one earlier study of the
same dataset (another seed, not timed), warm-starting from its best trials and stopping at the target.
``time_to_target_ratio=X.XX`` is expagent / script (goal <= 0.5).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATASET, VERSION, METRIC, SEED = "breast_cancer", "1", "roc_auc", 42


# ---- the hand-written script ---------------------------------------------------------------------


def run_script(home: Path, trials: int) -> dict[str, Any]:
    """Baseline + ``trials`` trials in-process with Optuna and MLflow's fluent API."""
    started = time.perf_counter()
    import lightgbm as lgb
    import mlflow
    import numpy as np
    import optuna
    from mlflow.data.pandas_dataset import from_pandas
    from mlflow.models import infer_signature
    from sklearn import metrics as skm

    from tools.core import provenance
    from tools.core.registry import DatasetRegistry
    from tools.core.settings import Settings
    from tools.training.holdout import split_rows
    from tools.tuning.space import load_search_space, parse_space, suggest_params

    settings = Settings(home=home)
    mlflow.set_tracking_uri(settings.resolved_tracking_uri)
    mlflow.set_experiment("bench-script")
    registry = DatasetRegistry.open(settings)
    record = registry.get(DATASET, VERSION)
    frame = registry.load_frame(record)
    y = frame[record.schema.target]
    x = frame.drop(columns=[record.schema.target])
    split = split_rows(y, 0.25, 0.2, SEED, stratify=True)  # the same rows as expagent: select on val
    x_train, y_train = x.iloc[split.train], y.iloc[split.train]
    x_val, y_val = x.iloc[split.val], y.iloc[split.val]
    x_test, y_test = x.iloc[split.test], y.iloc[split.test]
    dataset = from_pandas(frame, source=record.uri, targets=record.schema.target, name=record.ref)
    requirements = provenance.pip_requirements(provenance.LIGHTGBM_MODEL_PACKAGES)
    tags = {"dataset.name": DATASET, "dataset.version": VERSION, "dataset.sha256": record.sha256,
            "seed": str(SEED), "python_version": provenance.python_version(),
            **provenance.code_version().tags()}  # fmt: skip

    reached: list[tuple[float, float]] = []  # (seconds since start, val value) per trial

    def train(params: dict[str, Any], name: str) -> float:
        with mlflow.start_run(run_name=name, nested=True, tags=tags):
            model = lgb.LGBMClassifier(deterministic=True, force_col_wise=True, verbose=-1,
                                       random_state=SEED, n_jobs=1, **params)  # fmt: skip
            mlflow.log_params({"dataset": record.ref, "model_family": "lightgbm", "metric": METRIC,
                               **{k: str(v) for k, v in model.get_params().items()}})  # fmt: skip
            mlflow.log_input(dataset, context="training")
            t0 = time.monotonic()
            model.fit(x_train, y_train)
            values: dict[str, float] = {"fit_seconds": time.monotonic() - t0}
            for prefix, xs, ys in (("val_", x_val, y_val), ("test_", x_test, y_test)):
                proba = np.asarray(model.predict_proba(xs))
                predicted = model.predict(xs)
                values[f"{prefix}roc_auc"] = skm.roc_auc_score(ys, proba[:, 1])
                values[f"{prefix}accuracy"] = skm.accuracy_score(ys, predicted)
                values[f"{prefix}f1"] = skm.f1_score(ys, predicted)
                values[f"{prefix}log_loss"] = skm.log_loss(ys, proba)
            example = x_test.head(5)
            mlflow.lightgbm.log_model(
                model, name="model", signature=infer_signature(example, model.predict(example)),
                input_example=example, pip_requirements=requirements,
            )  # fmt: skip
            mlflow.log_metrics(values)
            mlflow.log_artifact(str(provenance.LOCK_PATH), "environment")
            reached.append((time.perf_counter() - started, float(values[f"val_{METRIC}"])))
            return float(values[f"val_{METRIC}"])

    space = parse_space(load_search_space("lightgbm"))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with mlflow.start_run(run_name="session"):
        baseline = train({}, "baseline")
        with mlflow.start_run(run_name="tuning", nested=True):
            study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=SEED))
            study.optimize(lambda trial: train(suggest_params(trial, space), f"trial-{trial.number}"), trials)
            mlflow.log_metrics({f"best_val_{METRIC}": study.best_value, f"baseline_val_{METRIC}": baseline})
    target_seconds = next(t for t, value in reached[1:] if value >= study.best_value)
    return {"wall_seconds": time.perf_counter() - started, "best": study.best_value, "baseline": baseline,
            "complete": len(study.trials), "target_seconds": target_seconds}  # fmt: skip


# ---- expagent ---------------------------------------------------------------------------------------


def run_expagent(home: Path, trials: int, parallelism: int, prune: bool, seed: int = SEED,
                 target: float | None = None, warm_start: bool = False) -> dict[str, Any]:  # fmt: skip
    """Baseline + ``trials`` trials through the guard, the local runtime and ``run_study``.

    With ``warm_start`` the study enqueues the best earlier trials found in MLflow first (as a plan does);
    with ``target`` it stops once the best ``val_<metric>`` reaches it.
    """
    started = time.perf_counter()
    from tools.context import build_context
    from tools.core.settings import Settings

    settings = Settings(home=home)
    settings.budget.max_concurrent_jobs = max(parallelism, settings.budget.max_concurrent_jobs)
    ctx = build_context(settings, session_id="bench")
    # Opening the local runtime starts its fork server in the background. Opened when a turn starts, it
    # warms up during intake and planning; here, while this process imports the rest.
    ctx.runtime  # noqa: B018
    from tools.core.tracking import create_parent_run
    from tools.guard.policy import guarded_call
    from tools.tuning.records import StudySettings, TrialResult
    from tools.tuning.space import load_search_space
    from tools.tuning.study import run_study
    from tools.tuning.warm_start import find_warm_start

    session = create_parent_run(ctx, "bench-expagent", "session", run_name="session")
    args = {"dataset": DATASET, "version": VERSION, "model_family": "lightgbm", "metric": METRIC,
            "experiment": "bench-expagent", "seed": seed, "role": "baseline",
            "parent_run_id": session}  # fmt: skip
    outcome = guarded_call("start_training_run", args, ctx)
    assert outcome.ok and outcome.result, outcome.to_model_message()
    job = ctx.runtime.wait([outcome.result["job_id"]], timeout=None)[0]
    run = ctx.tracking.get_run(outcome.result["run_id"])
    baseline = TrialResult(run_id=run.info.run_id, job_id=job.job_id, state="COMPLETE",
                           value=run.data.metrics.get(f"val_{METRIC}"), wall_seconds=job.wall_seconds,
                           cpu_seconds=job.cpu_seconds)  # fmt: skip
    baseline_done = time.perf_counter()
    name = f"bench-{seed}" + ("-warm" if warm_start else "")  # one workspace may hold two studies
    study = StudySettings(
        study_name=name, session_id="bench", parent_run_id=session, dataset=DATASET, version=VERSION,
        model_family="lightgbm", metric=METRIC, experiment="bench-expagent",
        search_space=load_search_space("lightgbm"), n_trials=trials, parallelism=parallelism, seed=seed,
        prune=prune, target=target, warm_start=warm_start,
    )  # fmt: skip
    if warm_start:
        study.warm_start_trials = find_warm_start(ctx.tracking, study)
    result = run_study(ctx, study, baseline)
    ctx.close()
    return {
        "wall_seconds": time.perf_counter() - started, "baseline_seconds": baseline_done - started,
        "best": result.best.value if result.best else None, "baseline": baseline.value,
        "complete": result.count("COMPLETE"), "pruned": result.count("PRUNED"),
        "trial_cpu_seconds": [t.cpu_seconds for t in result.trials],
        "trial_wall_seconds": [t.wall_seconds for t in result.trials],
        "problems": [f"trial {t.number} {t.state}: {t.note}" for t in result.trials if t.state == "FAIL"],
        "stop": f"{result.stop_reason}: {result.stop_detail}", "stop_reason": result.stop_reason,
        "warm_started": len(study.warm_start_trials),
    }  # fmt: skip


# ---- driver ------------------------------------------------------------------------------------------


def _prepare(home: Path) -> None:
    """Create the workspace and its demo catalog (setup, not part of the timing)."""
    from tools.core.registry import DatasetRegistry
    from tools.core.settings import Settings

    settings = Settings(home=home)
    settings.ensure_home()
    DatasetRegistry.open(settings).get(DATASET, VERSION)


def _child(mode: str, home: Path, trials: int, parallelism: int, prune: bool, *extra: str) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", mode, "--home", str(home), "--trials", str(trials),
               "--parallel", str(parallelism), *extra] + (["--prune"] if prune else [])  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - started
    return result


def _measure(label: str, mode: str, trials: int, parallelism: int, prune: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-tuning-") as tmp:
        home = Path(tmp)
        _prepare(home)
        result = _child(mode, home, trials, parallelism, prune)
    if result["best"] is None:
        raise RuntimeError(f"{label}: no trial completed ({result.get('stop')}): {result.get('problems')}")
    extra = f", pruned {result['pruned']}" if "pruned" in result else ""
    print(f"  {label:34} {result['process_seconds']:7.2f}s  best {result['best']:.4f} "
          f"(baseline {result['baseline']:.4f}){extra}", flush=True)  # fmt: skip
    return result


def _time_to_target(trials: int, target: float) -> dict[str, Any]:
    """Time a warm-started expagent study to ``target`` on a workspace holding one earlier study."""
    with tempfile.TemporaryDirectory(prefix="bench-tuning-") as tmp:
        home = Path(tmp)
        _prepare(home)
        earlier = _child("expagent", home, trials, 1, False, "--seed", "7")  # another seed; not timed
        result = _child("expagent", home, trials, 1, False, "--target", repr(target), "--warm-start")
    reached = result["stop_reason"] == "target" or (result["best"] or 0) >= target
    print(f"  {'expagent, warm start, to target':34} {result['process_seconds']:7.2f}s  best "
          f"{result['best']:.4f} (earlier study best {earlier['best']:.4f}; "
          f"{result['warm_started']} enqueued, {result['complete']} trials, stop {result['stop']})",
          flush=True)  # fmt: skip
    result["reached"] = reached
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=1, help="Alternating repetitions of each side.")
    parser.add_argument("--parallel", type=int, default=2, help="Also time expagent with this many at once.")
    parser.add_argument("--samplers", action="store_true", help="Also run TPE vs random (about a minute).")
    parser.add_argument("--child", choices=["script", "expagent"], help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--prune", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=SEED, help=argparse.SUPPRESS)
    parser.add_argument("--target", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--warm-start", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-target", action="store_true", help="Skip the time-to-target figure.")
    parser.add_argument("--no-project", action="store_true", help="Skip the user-code trial overhead.")
    args = parser.parse_args()
    if args.child == "script":
        print(json.dumps(run_script(args.home, args.trials)))
        return
    if args.child == "expagent":
        found = run_expagent(
            args.home, args.trials, args.parallel, args.prune, args.seed, args.target, args.warm_start
        )
        print(json.dumps(found))
        return
    if args.samplers:
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_tpe_vs_random.py")], check=True)
    print(f"baseline + {args.trials} LightGBM trials on {DATASET}@{VERSION} (fresh process each, "
          f"{os.cpu_count()} cores):", flush=True)  # fmt: skip
    script, sequential = [], []
    for _ in range(args.repeat):
        script.append(_measure("hand-written Optuna+MLflow script", "script", args.trials, 1, False))
        sequential.append(_measure("expagent, 1 at a time", "expagent", args.trials, 1, False))
    pruned = _measure("expagent, 1 at a time, pruning", "expagent", args.trials, 1, True)
    parallel = None
    if args.parallel > 1:
        parallel = _measure(
            f"expagent, {args.parallel} at a time", "expagent", args.trials, args.parallel, False
        )
    base = statistics.median(r["process_seconds"] for r in script)
    ours = statistics.median(r["process_seconds"] for r in sequential)
    per_trial = (ours - base) / (args.trials + 1)
    print(f"expagent overhead per run: {per_trial * 1000:.0f} ms "
          f"(median trial CPU {statistics.median(sequential[0]['trial_cpu_seconds']):.2f}s, "
          f"wall {statistics.median(sequential[0]['trial_wall_seconds']):.2f}s)")  # fmt: skip
    print(f"pruning_ratio={pruned['process_seconds'] / base:.2f}")
    if parallel is not None:
        print(f"parallel_ratio={parallel['process_seconds'] / base:.2f}")
    if not args.no_target:
        target = script[0]["best"]
        script_seconds = statistics.median(r["target_seconds"] for r in script)
        print(f"time to target val_{METRIC} >= {target:.4f} (the script's best of {args.trials}):")
        print(f"  {'hand-written script':34} {script_seconds:7.2f}s  (its whole run: {base:.2f}s)")
        warm = _time_to_target(args.trials, target)
        if warm["reached"]:
            print(f"time_to_target_ratio={warm['process_seconds'] / script_seconds:.2f}")
        else:
            print(f"time_to_target_ratio=inf (not reached in {args.trials} trials)")
    if not args.no_project:
        project = [sys.executable, str(ROOT / "benchmarks" / "bench_project.py"), "--trials", "3"]
        subprocess.run(project, check=True)
    print(f"overhead_ratio={ours / base:.2f}")


if __name__ == "__main__":
    main()
