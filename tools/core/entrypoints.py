"""The entry point registry: user training code as versioned MLflow Projects (like the dataset registry).

An entry point is a directory with an ``MLproject`` file (entry points with typed parameters and
defaults; parsed with ``mlflow.projects``' own loader), pinned by the sha256 of its file tree, plus an
optional ``expagent.yaml`` beside it (search space, primary metric and direction, whether it reports
intermediate values). ``register`` adds ``name@N`` (N = 1, 2, … per name) with status ``registered``;
a dry run that passes the contract sets ``validated``; a run that touched the model registry sets
``blocked``. The catalog is one JSON file under the workspace (``settings.home/entrypoints.json``),
written under a file lock and replaced atomically.

``problem(record)`` is the one-line reason a record may not be trained from (the guard's rule); the
tree is hashed again every time, so an edited file is caught before any run exists.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field

from tools.core.settings import Settings

Status = Literal["registered", "validated", "blocked"]
ParamType = Literal["float", "int", "string", "path", "uri"]
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
#: never part of a project's tree hash: caches and version-control metadata.
_SKIPPED = {".git", "__pycache__", ".pytest_cache", "mlruns", ".venv", ".mypy_cache"}
CONFIG_FILE = "expagent.yaml"


class EntryPointError(Exception):
    """A bad entry point request; the message is one line that says what to do."""


class ParamSpec(BaseModel):
    """One typed MLproject parameter."""

    type: str = Field("string", description="MLproject type: float, int, string, path or uri.")
    default: Any = Field(None, description="Default value (None: the parameter is required).")


class ProjectConfig(BaseModel):
    """``expagent.yaml``: how expagent tunes and checks the project."""

    primary_metric: str = Field(
        description="The metric the run must log (the contract) and tuning optimises."
    )
    direction: Literal["maximize", "minimize"] = Field("maximize", description="Better is higher or lower.")
    reports_intermediate: bool = Field(False, description="Logs per-epoch step metrics (pruning reads them).")
    search_space: dict[str, Any] = Field(default_factory=dict, description="Tuning space over params.")
    model_required: bool = Field(True, description="False: the run may finish without a logged model.")
    image_project_dir: str = Field(
        "/project", description="Where the project's image (MLproject docker_env) holds the project tree."
    )


class EntryPointRecord(BaseModel):
    """One registered version of a project."""

    name: str
    version: str
    path: str = Field(description="Absolute directory of the project.")
    tree_sha256: str = Field(description="sha256 of the directory tree at registration.")
    git_commit: str | None = Field(None, description="Commit SHA when the directory is a clean git checkout.")
    entry_points: dict[str, dict[str, ParamSpec]] = Field(description="Entry point -> its parameters.")
    config: ProjectConfig
    docker_image: str | None = Field(None, description="MLproject docker_env image (Kubernetes runs).")
    source: str | None = Field(None, description="Git source it was checked out from: URL@SHA[#subdir].")
    status: Status = "registered"
    status_reason: str = ""
    registered_at: str = ""
    validate_on: str | None = Field(
        None, description="Dataset (name@V) a demo project is validated on the first time a request uses it."
    )

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


def split_ref(ref: str) -> tuple[str, str]:
    """Split ``name@version``; an explicit version is required (no 'latest')."""
    name, sep, version = str(ref).strip().partition("@")
    if not sep or not version.isdigit():
        raise EntryPointError(f"entry point {ref!r} needs an explicit version: name@N (e.g. churn-model@3)")
    return name, version


def tree_sha256(directory: Path) -> str:
    """Return the sha256 over every file's relative path and bytes (sorted; caches skipped)."""
    digest = hashlib.sha256()
    root = Path(directory)
    for path in sorted(_files(root)):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _files(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIPPED]
        for name in filenames:
            if not name.endswith(".pyc"):
                yield Path(dirpath) / name


def load_project(directory: Path) -> tuple[dict[str, dict[str, ParamSpec]], ProjectConfig]:
    """Parse ``MLproject`` (with mlflow.projects' loader) and ``expagent.yaml``; raise EntryPointError."""
    from mlflow.projects._project_spec import load_project as mlflow_load_project

    if not (directory / "MLproject").is_file():
        raise EntryPointError(f"{directory} has no MLproject file")
    try:
        project = mlflow_load_project(str(directory))
    except Exception as exc:
        raise EntryPointError(f"{directory}/MLproject is not a valid MLflow Project: {exc}") from exc
    points = {
        name: {p: ParamSpec(type=spec.type, default=spec.default) for p, spec in point.parameters.items()}
        for name, point in project._entry_points.items()
    }
    config_path = directory / CONFIG_FILE
    try:
        raw = yaml.safe_load(config_path.read_text()) if config_path.is_file() else {}
        config = ProjectConfig.model_validate(raw or {"primary_metric": "val_accuracy"})
    except Exception as exc:
        raise EntryPointError(f"{config_path} is not valid: {str(exc).splitlines()[0]}") from exc
    return points, config


def docker_image(directory: Path) -> str | None:
    """Return the image the project's ``MLproject`` declares (``docker_env: image:``), or None."""
    from mlflow.projects._project_spec import load_project as mlflow_load_project

    docker_env = mlflow_load_project(str(directory)).docker_env or {}
    image = docker_env.get("image")
    return str(image) if image else None


def command_for(record: EntryPointRecord, entry: str, params: dict[str, Any]) -> str:
    """Return the shell command of ``entry`` with ``params`` (MLflow's own substitution and quoting)."""
    from mlflow.projects._project_spec import load_project as mlflow_load_project

    project = mlflow_load_project(record.path)
    point = project.get_entry_point(entry)
    with tempfile.TemporaryDirectory() as storage:
        return str(point.compute_command({k: str(v) for k, v in params.items()}, storage))


def _git_commit(directory: Path) -> str | None:
    import subprocess

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=10
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    if git("status", "--porcelain", "--", ".") or not git("rev-parse", "--is-inside-work-tree"):
        return None
    return git("rev-parse", "HEAD") or None


class EntryPointRegistry:
    """The JSON catalog of registered entry points (``settings.home/entrypoints.json``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def open(cls, settings: Settings) -> EntryPointRegistry:
        """Open the workspace's catalog; a new one starts with the demo projects (``demo_catalog``)."""
        registry = cls(Path(settings.home) / "entrypoints.json")
        if not registry.path.exists():
            from tools.core.demo_catalog import DEMO_PROJECTS

            with registry._locked():
                if not registry.path.exists():  # another process may have just created it
                    registry._save(registry._demo_records(DEMO_PROJECTS))
        return registry

    def _demo_records(
        self, projects: tuple[tuple[str, Path, str], ...]
    ) -> dict[tuple[str, str], EntryPointRecord]:
        """Return ``name@1`` of each demo project that is present, to be validated on first use."""
        records = {}
        for name, directory, dataset in projects:
            if (directory / "MLproject").is_file():
                points, config = load_project(directory)
                records[(name, "1")] = EntryPointRecord(
                    name=name, version="1", path=str(directory), tree_sha256=tree_sha256(directory),
                    git_commit=None, entry_points=points, config=config, validate_on=dataset,
                    status_reason=f"demo project: validated on {dataset} the first time a request uses it",
                    registered_at=datetime.now(UTC).isoformat(timespec="seconds"),
                )  # fmt: skip
        return records

    def list(self) -> list[EntryPointRecord]:
        return sorted(self._load().values(), key=lambda r: (r.name, int(r.version)))

    def get(self, name: str, version: str) -> EntryPointRecord:
        record = self._load().get((name, str(version)))
        if record is None:
            known = ", ".join(r.ref for r in self.list() if r.name == name) or "none"
            raise EntryPointError(f"no entry point {name}@{version} (registered versions of {name}: {known})")
        return record

    def resolve(self, ref: str) -> EntryPointRecord:
        return self.get(*split_ref(ref))

    def register(self, directory: Path, name: str, source: str | None = None) -> EntryPointRecord:
        """Add ``name@N`` for ``directory`` at its current tree; nothing is written on a bad project."""
        if not _NAME_RE.match(name):
            raise EntryPointError(f"invalid entry point name {name!r}: letters, digits, '_', '-', '.'")
        directory = Path(directory).expanduser().resolve()
        if not directory.is_dir():
            raise EntryPointError(f"{directory} is not a directory")
        points, config = load_project(directory)
        with self._locked():
            records = self._load()
            version = str(1 + max((int(v) for n, v in records if n == name), default=0))
            record = EntryPointRecord(
                name=name, version=version, path=str(directory), tree_sha256=tree_sha256(directory),
                git_commit=_git_commit(directory), entry_points=points, config=config,
                docker_image=docker_image(directory), source=source,
                registered_at=datetime.now(UTC).isoformat(timespec="seconds"),
            )  # fmt: skip
            records[(name, version)] = record
            self._save(records)
        return record

    def set_status(self, ref: str, status: Status, reason: str = "") -> EntryPointRecord:
        with self._locked():
            records = self._load()
            record = records.get(split_ref(ref))
            if record is None:
                raise EntryPointError(f"no entry point {ref}")
            records[split_ref(ref)] = record.model_copy(update={"status": status, "status_reason": reason})
            self._save(records)
        return records[split_ref(ref)]

    def problem(self, record: EntryPointRecord, entry: str | None = None) -> str | None:
        """Return why ``record`` may not be trained from now (None: it may); re-hashes the tree."""
        if record.status == "blocked":
            return f"entry point {record.ref} is blocked: {record.status_reason}; validate it again"
        if record.status != "validated":
            return f"entry point {record.ref} has status {record.status!r}; run a validation dry run first"
        return self.tree_problem(record, entry)

    def tree_problem(self, record: EntryPointRecord, entry: str | None = None) -> str | None:
        """Return why the project's files are not the registered ones (None: they are)."""
        if entry is not None and entry not in record.entry_points:
            return f"entry point {record.ref} has no entry {entry!r} (has: {', '.join(record.entry_points)})"
        if not Path(record.path).is_dir():
            return f"entry point {record.ref}: {record.path} no longer exists"
        if tree_sha256(Path(record.path)) != record.tree_sha256:
            return (
                f"entry point {record.ref}: files in {record.path} changed since registration "
                "(tree sha256 differs); register a new version"
            )
        return None

    def _load(self) -> dict[tuple[str, str], EntryPointRecord]:
        if not self.path.exists():
            return {}
        data = json.loads(self.path.read_text())
        return {(r["name"], r["version"]): EntryPointRecord.model_validate(r) for r in data["entry_points"]}

    def _save(self, records: dict[tuple[str, str], EntryPointRecord]) -> None:
        payload = {"entry_points": [r.model_dump(mode="json") for r in records.values()]}
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
        os.replace(tmp, self.path)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def contract_findings(client: Any, run_id: str, params: dict[str, Any], config: ProjectConfig) -> list[str]:
    """Return what the finished run misses of the contract (params, primary metric, model, dataset input)."""
    run = client.get_run(run_id)
    missing = [f"param {k}" for k in params if k not in run.data.params]
    if config.primary_metric not in run.data.metrics:
        missing.append(f"metric {config.primary_metric}")
    if config.model_required and not _has_model(client, run):
        missing.append("a logged model")
    if not (run.inputs and run.inputs.dataset_inputs):
        missing.append("a dataset input (mlflow.log_input)")
    return missing


def _has_model(client: Any, run: Any) -> bool:
    models = client.search_logged_models(
        [run.info.experiment_id], filter_string=f"source_run_id='{run.info.run_id}'"
    )
    return bool(models) or bool(run.outputs and run.outputs.model_outputs)


def registry_touches(client: Any, run_id: str) -> list[str]:
    """Return the model registry versions (with their aliases or stages) the run created."""
    touched = []
    for version in client.search_model_versions(f"run_id='{run_id}'"):
        extra = [f"alias {a}" for a in getattr(version, "aliases", []) or []]
        if version.current_stage and version.current_stage != "None":
            extra.append(f"stage {version.current_stage}")
        touched.append(f"{version.name} v{version.version}" + (f" ({', '.join(extra)})" if extra else ""))
    return touched
