"""TPE vs random search on LightGBM / breast_cancer@1: best roc_auc after 10/20/30 trials, 5 seeds.

In-process (no MLflow, no runtime): this compares samplers, not infrastructure. Both samplers use
the same search space as expagent (prompts/search_spaces.yaml) and the same fixed data split.

    .venv/bin/python benchmarks/bench_tpe_vs_random.py [--trials 30] [--seeds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CHECKPOINTS = (10, 20, 30)


def load_split(home: Path, seed: int = 42) -> tuple[Any, Any, Any, Any]:
    """Return X_train, X_test, y_train, y_test of breast_cancer@1 from the demo registry."""
    from sklearn.model_selection import train_test_split

    from tools.core.registry import DatasetRegistry
    from tools.core.settings import Settings

    registry = DatasetRegistry.open(Settings(home=home))
    record = registry.get("breast_cancer", "1")
    frame = registry.load_frame(record)
    y = frame.pop(record.schema.target)
    return train_test_split(frame, y, test_size=0.25, random_state=seed, stratify=y)


def make_objective(split: tuple[Any, Any, Any, Any]) -> Callable[[Any], float]:
    """Return an Optuna objective training LightGBM on the expagent search space."""
    import lightgbm as lgb
    from sklearn.metrics import roc_auc_score

    from tools.tuning.space import load_search_space, parse_space, suggest_params

    space = parse_space(load_search_space("lightgbm"))
    x_train, x_test, y_train, y_test = split

    def objective(trial: Any) -> float:
        params = suggest_params(trial, space)
        model = lgb.LGBMClassifier(**params, random_state=42, n_jobs=1, verbose=-1)
        model.fit(x_train, y_train)
        return float(roc_auc_score(y_test, model.predict_proba(x_test)[:, 1]))

    return objective


def best_after(values: list[float], n: int) -> float:
    return max(values[:n])


def run_sampler(name: str, seed: int, trials: int, objective: Callable[[Any], float]) -> list[float]:
    import optuna

    sampler = optuna.samplers.TPESampler(seed=seed) if name == "tpe" else optuna.samplers.RandomSampler(seed)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=trials)
    return [t.value for t in study.trials if t.value is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore")
    checkpoints = [c for c in CHECKPOINTS if c <= args.trials]
    with tempfile.TemporaryDirectory() as home:
        objective = make_objective(load_split(Path(home)))
    started = time.perf_counter()
    table: dict[str, dict[int, list[float]]] = {}
    for sampler in ("tpe", "random"):
        table[sampler] = {c: [] for c in checkpoints}
        for seed in range(args.seeds):
            values = run_sampler(sampler, seed, args.trials, objective)
            for c in checkpoints:
                table[sampler][c].append(best_after(values, c))
    print(f"best roc_auc (mean ± sd over {args.seeds} seeds; min..max), lightgbm on breast_cancer@1")
    print(f"{'sampler':8} " + " ".join(f"{'after ' + str(c):>26}" for c in checkpoints))
    for sampler, row in table.items():
        cells = [
            f"{statistics.mean(v):.4f}±{statistics.pstdev(v):.4f} ({min(v):.4f}..{max(v):.4f})"
            for v in row.values()
        ]
        print(f"{sampler:8} " + " ".join(f"{c:>26}" for c in cells))
    wins = sum(
        t > r for t, r in zip(table["tpe"][checkpoints[-1]], table["random"][checkpoints[-1]], strict=True)
    )
    print(f"tpe beats random at {checkpoints[-1]} trials in {wins}/{args.seeds} seeds")
    print(f"elapsed={time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
