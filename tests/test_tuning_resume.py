"""Crash and resume: the agent process running a study is killed with SIGKILL mid-study, then resumed.

Trials 0-1 are tiny; trials 2-3 train long (a real slow job). The test waits until 0-1 completed and
2-3 are running, kills the agent (and, to simulate a lost job, trial 2's process group), and resumes
the study in this process: trial 2 is marked failed, trial 3's still-running job is adopted, and the
study runs its remaining trials without rerunning any finished one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from tuning_support import EXPERIMENT, assert_nothing_running, make_ctx, study

from tools.tuning.study import run_study, study_storage

ROOT = Path(__file__).resolve().parents[1]
# ~6 s of boosting: long enough that trials 2-3 are still running once 0-1 completed, even when the
# second worker's first trial (it warms up on its first job) is slow on a loaded machine.
SLOW = {"n_estimators": 80_000, "learning_rate": 1e-9, "num_leaves": 2}

AGENT = """
import sys
from pathlib import Path
sys.path.insert(0, "tests")
from tools.core.settings import Settings
from tools.context import build_context
from tools.tuning.study import run_study
from tools.tuning.records import StudySettings
from tuning_support import HangingRuntime

home, slow = Path(sys.argv[1]), {slow!r}
settings = Settings(home=home, trace=False)
ctx = build_context(settings, session_id="sess-tune", requester="alice")
ctx._runtime = HangingRuntime(settings, {{2, 3}}, slow)
run_study(ctx, StudySettings.model_validate_json((home / "study.json").read_text()))
"""


def _trials(storage: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name="study", storage=study_storage(storage)).get_trials(
            deepcopy=False
        )
    except KeyError:  # the agent has not created the study yet
        return []


def _wait_for_mid_study(
    storage: str, agent: subprocess.Popen[bytes], timeout: float = 180
) -> dict[int, dict]:
    """Wait until trials 0-1 completed and 2-3 are running; return their launch records by number."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert agent.poll() is None, agent.stderr.read().decode()[-3000:] if agent.stderr else ""
        trials = _trials(storage)
        done = {t.number for t in trials if t.state == optuna.trial.TrialState.COMPLETE}
        running = {t.number: t.user_attrs["launch"] for t in trials if "launch" in t.user_attrs and
                   t.state == optuna.trial.TrialState.RUNNING}  # fmt: skip
        if {0, 1} <= done and {2, 3} <= set(running):
            return running
        time.sleep(0.1)
    raise AssertionError("the study never reached 2 finished + 2 running trials")


def _kill_job(home: Path, job_id: str) -> None:
    record = json.loads((home / "jobs" / job_id / "job.json").read_text())
    os.killpg(record["pid"], signal.SIGKILL)


@pytest.mark.slow
def test_a_study_killed_with_sigkill_resumes_without_rerunning_or_losing_trials(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path / "ws")
    home = ctx.settings.home
    # The slow trial trains ~30 s on a quiet machine: the watchdog's floor is raised so that only the
    # resume is tested here, not whether a loaded machine pushes it past the default 30 s floor.
    settings = study(ctx, n_trials=6, parallelism=2, trial_timeout_seconds=120, watchdog_floor_seconds=90)
    (home / "study.json").write_text(settings.model_dump_json())
    code = AGENT.format(slow=SLOW)
    agent = subprocess.Popen(
        [sys.executable, "-c", code, str(home)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        running = _wait_for_mid_study(ctx.settings.optuna_storage, agent)
    finally:
        agent.send_signal(signal.SIGKILL)
        agent.wait()
    _kill_job(home, running[2]["job_id"])  # trial 2's job dies with the agent; trial 3's keeps running

    try:
        result = run_study(ctx, settings)
    finally:
        ctx.close()

    assert result.resumed and any("adopted" in note for note in result.notes)
    by_number = {t.number: t for t in result.trials}
    assert sorted(by_number) == [0, 1, 2, 3, 4, 5]  # exactly the trials requested, none twice
    assert by_number[2].state == "FAIL" and by_number[2].run_id == running[2]["run_id"]
    assert by_number[3].state == "COMPLETE" and by_number[3].run_id == running[3]["run_id"]  # adopted
    assert {by_number[n].state for n in (0, 1, 4, 5)} == {"COMPLETE"}
    stored = _trials(ctx.settings.optuna_storage)
    assert len(stored) == 6 and not [t for t in stored if not t.state.is_finished()]
    client = ctx.tracking
    experiment = client.get_experiment_by_name(EXPERIMENT)
    trial_runs = client.search_runs(
        [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{result.tuning_run_id}'"
    )
    numbers = sorted(int(r.data.tags["expagent.trial_number"]) for r in trial_runs)
    assert numbers == [0, 1, 2, 3, 4, 5]  # one run per trial: nothing was rerun
    assert client.get_run(running[2]["run_id"]).info.status in ("FAILED", "KILLED")
    assert client.get_run(result.tuning_run_id).info.status == "FINISHED"
    assert_nothing_running(ctx)
