"""Per-project environments: a uv virtualenv built once per environment hash, atomically, offline here.

The project's requirement is a tiny wheel written by the test into ``tmp_path`` and found through uv's
own configuration (``UV_NO_INDEX`` + ``UV_FIND_LINKS``), so nothing reaches a package index. One
environment is built for the whole module (by two concurrent builders); the runs reuse it.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import threading
import zipfile
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from tools.core.entrypoints import EntryPointRegistry
from tools.core.settings import Settings
from tools.training import project_env
from tools.training.entrypoint_validation import validate_entry_point
from tools.training.project_env import MARKER, ProjectEnvError, ensure_project_env

MLPROJECT = """\
name: envproj
python_env: python_env.yaml
entry_points:
  main:
    parameters:
      lr: {type: float, default: 0.1}
    command: "python train.py --lr {lr}"
"""
# Imports the project's own dependency and mlflow (from the agent's venv, layered under the project's).
SCRIPT = """\
import argparse, os, sys
import mlflow, pandas as pd
import tinydep
from sklearn.dummy import DummyClassifier
parser = argparse.ArgumentParser(); parser.add_argument("--lr", type=float)
args = parser.parse_args()
frame = pd.read_csv(os.environ["EXPAGENT_DATASET_PATH"])
target = os.environ["EXPAGENT_DATASET_TARGET"]
with mlflow.start_run():
    mlflow.log_params({"lr": args.lr, "tinydep": tinydep.VALUE, "interpreter": sys.executable})
    mlflow.log_input(mlflow.data.from_pandas(frame, name="d"), context="training")
    mlflow.log_metric("val_accuracy", 0.9)
    model = DummyClassifier().fit(frame.drop(columns=[target]), frame[target])
    mlflow.sklearn.log_model(model, name="model", serialization_format="cloudpickle",
                             pip_requirements=["scikit-learn"])
"""


def _wheel(directory: Path, name: str = "tinydep", version: str = "0.1") -> Path:
    """Write a minimal pure-Python wheel (what a team's internal package would be) into ``directory``."""
    files = {
        f"{name}/__init__.py": f"VALUE = '{name} {version}'\n",
        f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{name}-{version}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = [
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b'=').decode()},"
        f"{len(text.encode())}"
        for path, text in files.items()
    ] + [f"{name}-{version}.dist-info/RECORD,,"]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in files.items():
            archive.writestr(member, text)
        archive.writestr(f"{name}-{version}.dist-info/RECORD", "\n".join(record) + "\n")
    return path


def _project(root: Path, requirement: str = "tinydep==0.1", python: str = "3.11") -> Path:
    root.mkdir(parents=True)
    (root / "MLproject").write_text(MLPROJECT)
    (root / "python_env.yaml").write_text(f'python: "{python}"\ndependencies:\n  - {requirement}\n')
    (root / "expagent.yaml").write_text("primary_metric: val_accuracy\n")
    (root / "train.py").write_text(SCRIPT)
    return root


@pytest.fixture(scope="module")
def offline_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _wheel(tmp_path_factory.mktemp("wheels")).parent


@pytest.fixture(scope="module")
def home(demo_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("envs-home") / "home"
    shutil.copytree(demo_home, home)
    return home


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, offline_index: Path) -> None:
    monkeypatch.setenv("UV_NO_INDEX", "1")
    monkeypatch.setenv("UV_FIND_LINKS", str(offline_index))
    monkeypatch.setenv("UV_OFFLINE", "1")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _project(tmp_path_factory.mktemp("proj") / "envproj")


def _settled(envs: Path) -> list[str]:
    return sorted(p.name for p in envs.iterdir() if not p.name.endswith(".lock"))


def test_two_concurrent_builders_build_one_environment(
    home: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    builds: list[Path] = []
    real_build = project_env._build

    def counted(*args: Any) -> None:
        builds.append(args[2])
        real_build(*args)

    monkeypatch.setattr(project_env, "_build", counted)
    results: list[project_env.ProjectEnv] = []
    threads = [
        threading.Thread(target=lambda: results.append(ensure_project_env(project, home / "envs")))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert len(builds) == 1 and len(results) == 2
    assert results[0].env_hash == results[1].env_hash and len(results[0].env_hash) == 64
    assert _settled(home / "envs") == [results[0].env_hash]  # no staging directory left behind
    assert (home / "envs" / results[0].env_hash / MARKER).is_file()
    again = ensure_project_env(project, home / "envs")
    assert again.env_hash == results[0].env_hash and again.built_seconds == 0.0 and len(builds) == 1


def test_project_runs_with_its_environment_and_records_the_hash(home: Path, project: Path) -> None:
    settings = Settings(home=home, trace=False)
    registry = EntryPointRegistry.open(settings)
    record = registry.register(project, "envproj")
    problem = validate_entry_point(settings, record.ref, "breast_cancer", "1")
    assert problem is None, problem
    client = MlflowClient(settings.resolved_tracking_uri)
    experiment = client.get_experiment_by_name("expagent-entrypoint-validation")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    env_hash = run.data.tags["expagent.entry_point.env"]
    assert run.info.status == "FINISHED" and _settled(home / "envs") == [env_hash]  # reused, not rebuilt
    assert run.data.params["tinydep"] == "tinydep 0.1"  # importable only inside the project's env
    assert run.data.params["interpreter"].startswith(str(home / "envs" / env_hash))
    assert run.data.tags["expagent.entry_point.tree_sha256"] == record.tree_sha256
    assert "env_build_seconds" not in run.data.metrics


def test_unsatisfiable_requirement_fails_in_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    project = _project(tmp_path / "bad", requirement="no-such-package-xyz==1.0")
    with pytest.raises(ProjectEnvError) as caught:
        ensure_project_env(project, tmp_path / "envs")
    message = str(caught.value)
    assert "\n" not in message and "no-such-package-xyz" in message, message
    assert _settled(tmp_path / "envs") == []


def test_other_python_version_is_refused_before_building(tmp_path: Path) -> None:
    project = _project(tmp_path / "old", python="3.8")
    with pytest.raises(ProjectEnvError, match="asks for Python 3.8 but this runtime has Python 3.11"):
        ensure_project_env(project, tmp_path / "envs")
    assert not (tmp_path / "envs").exists()


def test_project_without_python_env_uses_the_current_interpreter(tmp_path: Path) -> None:
    import sys

    project = _project(tmp_path / "plain")
    (project / "python_env.yaml").unlink()
    (project / "MLproject").write_text(MLPROJECT.replace("python_env: python_env.yaml\n", ""))
    env = ensure_project_env(project, tmp_path / "envs")
    assert env.env_hash == "current" and env.python == sys.executable
