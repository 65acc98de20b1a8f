"""The study journal: concurrent writers from several processes, readable by Optuna's stock backend."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from tools.tuning.study import study_storage

_WRITER = """
import sys, optuna
from tools.tuning.study import study_storage
optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.load_study(study_name="shared", storage=study_storage(sys.argv[1]))
for _ in range(40):
    trial = study.ask()
    study.tell(trial, trial.suggest_float("x", 0, 1) + trial.suggest_int("n", 1, 9))
"""


def test_concurrent_processes_append_whole_records_readable_by_optuna(tmp_path: Path) -> None:
    path = str(tmp_path / "optuna.journal")
    optuna.create_study(study_name="shared", storage=study_storage(path), direction="maximize")
    writers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, path], cwd=Path(__file__).resolve().parents[1])
        for _ in range(3)
    ]
    assert [w.wait(timeout=120) for w in writers] == [0, 0, 0]

    stock = JournalStorage(JournalFileBackend(path))  # the stock reader sees the same, whole study
    study = optuna.load_study(study_name="shared", storage=stock)
    assert len(study.trials) == 120
    assert {t.state for t in study.trials} == {optuna.trial.TrialState.COMPLETE}
    assert len({t.number for t in study.trials}) == 120
    assert all(line.endswith("}") for line in Path(path).read_text().splitlines())
