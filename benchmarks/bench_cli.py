"""Time ``expagent --help`` against ``mlflow --help`` (median of fresh processes).

Also checks that ``expagent --help`` imports none of the heavy libraries.
Run: ``make bench-cli``.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
HEAVY = ("mlflow", "lightgbm", "sklearn", "langchain_core", "langgraph", "pandas")
REPEATS = 7


def median_seconds(cmd: list[str]) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def heavy_imports() -> list[str]:
    code = (
        "import sys; from typer.testing import CliRunner; from agent.cli import app; "
        "CliRunner().invoke(app, ['--help']); "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return [m for m in out.stdout.strip().split(",") if m]


def main() -> None:
    expagent = median_seconds([str(BIN / "expagent"), "--help"])
    mlflow = median_seconds([str(BIN / "mlflow"), "--help"])
    heavy = heavy_imports()
    print(f"expagent --help: {expagent:.3f} s (median of {REPEATS})")
    print(f"mlflow --help:   {mlflow:.3f} s (median of {REPEATS})")
    print(f"heavy modules imported by expagent --help: {heavy or 'none'}")
    print(f"help_ratio={expagent / mlflow:.2f}")


if __name__ == "__main__":
    main()
