"""Benchmark the Kubernetes API path: 200 trials at 20 concurrent against the fake API server.

The fake runs as its own process (so its CPU is not counted as the agent's) and replaces every pod's
command with the stand-in ``true`` (exits 0 at once), so this measures the agent's API path — guard
check, Job create, watch-driven status — not training. MLflow is not involved: on success the runtime
leaves the run to the trainer. Reported: API requests per trial (everything the runtime sent, including
its initial lists and watches) and agent CPU seconds per trial. The last line is
``requests_per_trial=X.X`` (target ≤ 4).

Run: ``make bench-k8s`` or ``.venv/bin/python benchmarks/bench_k8s.py [--trials 200 --concurrency 20]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tools.core.settings import Settings  # noqa: E402
from tools.core.specs import JobInfo, TrainingSpec  # noqa: E402
from tools.runtime.kubernetes import KubernetesRuntime  # noqa: E402


def start_fake(kubeconfig: Path) -> tuple[subprocess.Popen[str], str]:
    """Start ``python -m evals.fakes.kube`` with the stand-in pod command; return it and its URL."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "evals.fakes.kube",
            "--kubeconfig",
            str(kubeconfig),
            "--command-override",
            "true",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "fake kube-apiserver at" not in line:
        proc.kill()
        raise RuntimeError(f"the fake API server did not start: {line!r}")
    return proc, line.split(" at ", 1)[1].split(";", 1)[0]


def request_counts(url: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{url}/_fake/requests") as response:
        counts: dict[str, int] = json.load(response)
    return counts


def one_trial(runtime: KubernetesRuntime, number: int) -> JobInfo:
    spec = TrainingSpec(
        dataset="breast_cancer",
        version="1",
        model_family="lightgbm",
        metric="roc_auc",
        experiment="bench-k8s",
        role="trial",
        trial_number=number,
        session_id="bench",
        run_id=uuid.uuid4().hex,
    )
    info = runtime.submit(spec)
    return runtime.wait([info.job_id], timeout=300)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-k8s-") as tmp:
        kubeconfig = Path(tmp) / "kubeconfig"
        proc, url = start_fake(kubeconfig)
        try:
            settings = Settings(home=Path(tmp) / "home", k8s_kubeconfig=kubeconfig)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            runtime = KubernetesRuntime.from_settings(settings)
            with ThreadPoolExecutor(args.concurrency) as pool:
                results = list(pool.map(lambda n: one_trial(runtime, n), range(args.trials)))
            runtime.close()
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            counts = request_counts(url)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    states = {s: sum(r.state == s for r in results) for s in {r.state for r in results}}
    total = sum(counts.values())
    print(f"trials={args.trials} concurrency={args.concurrency} states={states}")
    print(f"wall_seconds={wall:.1f} trials_per_second={args.trials / wall:.1f}")
    print(f"api_requests={total} by_kind={json.dumps(dict(sorted(counts.items())))}")
    print(f"agent_cpu_seconds={cpu:.2f} agent_cpu_ms_per_trial={1000 * cpu / args.trials:.1f}")
    if states.get("succeeded") != args.trials:
        raise SystemExit(f"not every trial succeeded: {states}")
    print(f"requests_per_trial={total / args.trials:.1f}")


if __name__ == "__main__":
    main()
