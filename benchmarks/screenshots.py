"""Screenshot what a user sees in the MLflow UI after one small tuning request (headless Chromium).

Runs ``expagent run "<request>" --yes`` from a source checkout (``--source``, default this one; give an
older ``git worktree`` to see what the UI looked like then) on a fresh workspace, serves that workspace's
MLflow UI on 127.0.0.1, and saves four PNGs: the experiments list, the experiment's runs table, one
trial's page and the experiment's chart view.

    .venv/bin/python benchmarks/screenshots.py --label after [--source DIR] [--out docs/screenshots]

Needs Debian's ``chromium`` on PATH. The PNGs are quantised to 64 colours to keep them small.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQUEST = "tune lightgbm on breast_cancer@1 for roc_auc, 4 trials, experiment ui-tour"
WINDOW = "1400,900"
_CLI = "from agent.cli import app; app(prog_name='expagent')"  # agent.cli has no __main__ block


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_request(source: Path, home: Path) -> None:
    """Run the tiny tuning request with the checkout at ``source`` (its modules shadow the installed ones)."""
    env = {**os.environ, "EXPAGENT_HOME": str(home), "PYTHONPATH": str(source)}
    done = subprocess.run(
        [sys.executable, "-c", _CLI, "run", REQUEST, "--yes"],
        cwd=source, env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"the request failed ({done.returncode}): {done.stderr.strip()[-500:]}")


def serve_ui(home: Path, port: int) -> subprocess.Popen[bytes]:
    """Start ``mlflow ui`` on the workspace's store and wait until it answers."""
    mlflow = Path(sys.executable).with_name("mlflow")
    command = [str(mlflow), "ui", "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
               "--default-artifact-root", (home / "artifacts").as_uri(), "--host", "127.0.0.1",
               "--port", str(port), "--workers", "1"]  # fmt: skip
    log = (home / "mlflow-ui.log").open("wb")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600  # ~10-30 s on a quiet machine; minutes on a loaded one
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return server
        except OSError:
            time.sleep(1)
    server.kill()
    raise SystemExit(f"the MLflow UI did not answer within 600 s (see {home / 'mlflow-ui.log'})")


def pages(home: Path, port: int) -> dict[str, str]:
    """Return the four pages to capture, by file stem."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ui-tour")
    if experiment is None:
        raise SystemExit("the request logged no 'ui-tour' experiment")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    trial = next(
        (r for r in runs if r.data.tags.get("expagent.role") == "trial" and r.info.status == "FINISHED"),
        runs[-1],
    )
    base = f"http://127.0.0.1:{port}/#/experiments"
    exp = f"{base}/{experiment.experiment_id}"
    return {
        "1-experiments": base,
        "2-runs-table": f"{exp}/runs",
        "3-trial-page": f"{exp}/runs/{trial.info.run_id}",
        "4-chart-view": f"{exp}/runs?compareRunsMode=CHART",
    }


def capture(url: str, path: Path) -> None:
    """Screenshot ``url`` with headless Chromium and shrink the PNG to a 64-colour palette."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium is not installed (Debian: apt-get install chromium)")
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={WINDOW}",
         "--virtual-time-budget=15000", "--hide-scrollbars", f"--screenshot={path}", url],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=64)
    small.save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--label", required=True, help="File name prefix, e.g. before or after.")
    parser.add_argument("--source", type=Path, default=ROOT, help="Source checkout that runs the request.")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--home", type=Path, help="Keep the workspace here; reuse it if it has runs.")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="expagent-ui-") as tmp:
        home = args.home.resolve() if args.home else Path(tmp)
        if not (home / "mlflow.db").exists():
            run_request(args.source.resolve(), home)
        port = _free_port()
        server = serve_ui(home, port)
        try:
            for stem, url in pages(home, port).items():
                path = args.out / f"{args.label}-{stem}.png"
                capture(url, path)
                print(f"{path} ({path.stat().st_size // 1024} KiB) {url}")
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
