"""Canary sweep: secrets of every kind go in through every door; none may be found anywhere afterwards.

A tuning request whose message carries the canaries, direct tool calls whose params, tags and run name
carry them, and a dataset whose description carries them (read back by the agent). Then every file of the
workspace (SQLite stores and checkpoints byte for byte, artifacts, the audit log, job files, traces,
logs) and everything the commands printed is searched for each canary.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from graph_support import make_settings

from tools.core.registry import DatasetRegistry

pytestmark = pytest.mark.timeout(300)

EXPAGENT = str(Path(sys.executable).with_name("expagent"))
CANARIES = {
    "aws": "AKIACANARYZZ00000001",
    "github": "ghp_CANARYcanaryCANARYcanaryCANARYcanary12",
    "slack": "xoxb-123456789012-CANARYslackTOKEN9",
    "google": "AIzaCANARYcanaryCANARYcanaryCANARYcan01",
    "huggingface": "hf_CANARYcanaryCANARYcanaryCANARYcan",
    "stripe": "sk_live_CANARYcanaryCANARY0001",
    "email": "canary.person@example.com",
    "card": "4111111111111111",
    "password": "CanaryPass1234",
}
SENTENCE = (
    f"my password is {CANARIES['password']}, key {CANARIES['aws']}, token {CANARIES['github']}, "
    f"slack {CANARIES['slack']}, google {CANARIES['google']}, hf {CANARIES['huggingface']}, "
    f"stripe {CANARIES['stripe']}, mail {CANARIES['email']}, card {CANARIES['card']}"
)


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, "EXPAGENT_HOME": str(home), "EXPAGENT_TRACE": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXPAGENT, *args], capture_output=True, text=True, env=_env(home), timeout=240, check=False
    )


def _found(home: Path, outputs: list[str]) -> dict[str, list[str]]:
    """Return {canary kind: places it was found} over every file under ``home`` and ``outputs``."""
    hits: dict[str, list[str]] = {}
    for path in home.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        for kind, canary in CANARIES.items():
            forms = {canary.encode(), canary.encode("utf-16-le")}
            if any(form in data for form in forms):
                hits.setdefault(kind, []).append(str(path.relative_to(home)))
    for i, text in enumerate(outputs):
        for kind, canary in CANARIES.items():
            if canary in text:
                hits.setdefault(kind, []).append(f"output #{i}")
    return hits


def test_no_canary_survives_anywhere(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, trace=True)
    registry = DatasetRegistry.open(settings)
    source = registry.local_path(registry.get("breast_cancer", "1"))
    registry.register(source, "canary_data", "1", target="target", description=f"Curated. {SENTENCE}")
    outputs: list[str] = []

    request = (
        "Train a lightgbm baseline on breast_cancer version 1 optimizing roc_auc, then tune 2 trials, "
        f"experiment canary. {SENTENCE}"
    )
    for done in (
        _cli(tmp_path, "run", "--yes", "--json", request),
        _cli(tmp_path, "run", "--json", "Which datasets are registered?"),
        _cli(tmp_path, "run", "--json", "describe dataset canary_data version 1"),
    ):
        outputs += [done.stdout, done.stderr]
    args = {
        "dataset": "breast_cancer", "version": "1", "model_family": "lightgbm", "metric": "roc_auc",
        "experiment": "canary-tools", "params": {"n_estimators": 5, "boosting": CANARIES["stripe"]},
        "tags": {"team.owner": CANARIES["email"], "note.text": SENTENCE},
        "run_name": f"run {CANARIES['aws']}",
    }  # fmt: skip
    call = _cli(tmp_path, "tool", "call", "start_training_run", json.dumps(args), "--home", str(tmp_path))
    outputs += [call.stdout, call.stderr]
    card_as_number = {**args, "params": {"n_estimators": int(CANARIES["card"])}, "run_name": "card"}
    call = _cli(
        tmp_path, "tool", "call", "start_training_run", json.dumps(card_as_number), "--home", str(tmp_path)
    )
    outputs += [call.stdout, call.stderr]
    note = {"run_id": "0" * 32, "text": SENTENCE}
    call = _cli(tmp_path, "tool", "call", "log_note", json.dumps(note), "--home", str(tmp_path))
    outputs += [call.stdout, call.stderr]

    assert any("[REDACTED" in text for text in outputs)  # the canaries did flow through
    assert _found(tmp_path, outputs) == {}
