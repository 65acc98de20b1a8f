"""Read the world after a scenario: MLflow runs and registry, Kubernetes objects, the audit log, texts.

Scorers judge an :class:`Observation` only, so they are pure functions of what really happened: the
runs MLflow holds, the Jobs the fake API server holds and the verdicts the guard wrote.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from tools.core import tags as tag_keys
from tools.core.sqlite_uri import sqlite_store_path

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

#: files larger than this are scanned only in their first part (model binaries, big lock files).
_MAX_SCAN_BYTES = 2_000_000
_RUN_PAGE = 1000


@dataclass
class AuditEntry:
    """One guard verdict from ``audit.jsonl``."""

    tool: str
    verdict: str
    args: dict[str, Any] = field(default_factory=dict)
    rule: str | None = None
    reason: str | None = None


@dataclass
class RunSnapshot:
    """One MLflow run as the tracking store returned it."""

    run_id: str
    experiment: str
    status: str
    name: str = ""
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    artifacts: list[str] = field(default_factory=list)
    preexisting: bool = False
    start_ms: int | None = None
    end_ms: int | None = None
    #: MLflow 3 logged models whose source is this run: "<name>" -> its artifact paths (MLmodel, ...).
    models: dict[str, list[str]] = field(default_factory=dict)

    @property
    def role(self) -> str | None:
        return self.tags.get(tag_keys.ROLE)


@dataclass
class TurnRecord:
    """What one turn sent and what the service returned (the TurnResult as plain data)."""

    index: int
    user: str | None
    approve: bool | None
    status: str = "error"
    answer: str = ""
    sections: dict[str, str] = field(default_factory=dict)
    asked_for: list[str] = field(default_factory=list)
    policy_events: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    approval: dict[str, Any] | None = None
    usage: dict[str, int] = field(default_factory=dict)
    approvals_requested: int = 0
    cancelled: bool = False
    restarted: bool = False
    error: str | None = None


@dataclass
class Observation:
    """Everything a scorer may look at after a scenario ran."""

    turns: list[TurnRecord] = field(default_factory=list)
    audit: list[AuditEntry] = field(default_factory=list)
    runs: list[RunSnapshot] = field(default_factory=list)
    registry_before: list[str] = field(default_factory=list)
    registry_after: list[str] = field(default_factory=list)
    k8s_objects: list[dict[str, str]] = field(default_factory=list)
    allowed_namespaces: list[str] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)
    canaries: dict[str, str] = field(default_factory=dict)
    agent_experiment: str = "expagent-agent"
    error: str | None = None

    @property
    def answers(self) -> list[str]:
        return [t.answer for t in self.turns if t.answer]

    @property
    def final(self) -> TurnRecord | None:
        return self.turns[-1] if self.turns else None

    @property
    def new_runs(self) -> list[RunSnapshot]:
        """Return runs created during the scenario outside the agent's own (trace) experiment."""
        return [r for r in self.runs if not r.preexisting and r.experiment != self.agent_experiment]

    @property
    def training_runs(self) -> list[RunSnapshot]:
        """Return new runs that trained something (baseline, trial or single)."""
        return [r for r in self.new_runs if r.role in ("baseline", "trial", "single")]

    def max_concurrent_training(self) -> int:
        """Return the most training runs that were open (started, not ended) at the same moment."""
        edges: list[tuple[int, int]] = []
        for run in self.training_runs:
            if run.start_ms is not None:
                edges += [(run.start_ms, 1), (run.end_ms if run.end_ms is not None else 2**62, -1)]
        open_runs = peak = 0
        for _, step in sorted(edges, key=lambda e: (e[0], e[1])):  # an end before a start at the same ms
            open_runs += step
            peak = max(peak, open_runs)
        return peak

    @property
    def usage(self) -> dict[str, int]:
        total = {"model_calls": 0, "prompt_tokens": 0, "completion_tokens": 0}
        for turn in self.turns:
            for key in total:
                total[key] += int(turn.usage.get(key, 0) or 0)
        return total


# ---- the audit log -----------------------------------------------------------------------------------


def read_audit(path: Path) -> list[AuditEntry]:
    """Parse ``audit.jsonl`` in order; a line that is not JSON becomes an ``unparseable`` entry."""
    if not path.exists():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError:
            entries.append(AuditEntry(tool="?", verdict="unparseable", reason=line[:200]))
            continue
        entries.append(_audit_entry(raw))
    return entries


def _audit_entry(raw: dict[str, Any]) -> AuditEntry:
    verdict = raw.get("verdict")
    if isinstance(verdict, dict):  # tolerate a nested {"kind": ..., "rule": ...} verdict shape
        raw = {**raw, **{k: v for k, v in verdict.items() if k in ("rule", "reason")}}
        verdict = verdict.get("kind") or verdict.get("verdict")
    args = raw.get("args", raw.get("arguments", {}))
    return AuditEntry(
        tool=str(raw.get("tool", "?")),
        verdict=str(verdict or "?").lower(),
        args=args if isinstance(args, dict) else {"value": args},
        rule=raw.get("rule"),
        reason=raw.get("reason"),
    )


# ---- MLflow --------------------------------------------------------------------------------------


def snapshot_runs(client: MlflowClient, preexisting: set[str]) -> list[RunSnapshot]:
    """Return every run in every experiment (active and deleted), sorted by experiment and start."""
    from mlflow.entities import ViewType

    runs: list[RunSnapshot] = []
    experiments = client.search_experiments(view_type=ViewType.ALL)
    ids = [experiment.experiment_id for experiment in experiments]
    models = logged_models(client, ids) if ids else {}
    found = client.search_runs(
        ids, run_view_type=ViewType.ALL, max_results=_RUN_PAGE, order_by=["attributes.start_time ASC"]
    ) if ids else []  # fmt: skip
    by_experiment: dict[str, list[Run]] = {}
    for run in found:  # one query for all experiments; each keeps its runs in start order
        by_experiment.setdefault(run.info.experiment_id, []).append(run)
    for experiment in experiments:
        for run in by_experiment.get(experiment.experiment_id, []):
            runs.append(
                RunSnapshot(
                    run_id=run.info.run_id, experiment=experiment.name, status=run.info.status,
                    name=run.info.run_name or "", params=dict(run.data.params),
                    metrics=dict(run.data.metrics), tags=dict(run.data.tags),
                    artifacts=list_artifacts(run.info.artifact_uri),
                    preexisting=run.info.run_id in preexisting, start_ms=run.info.start_time,
                    end_ms=run.info.end_time, models=models.get(run.info.run_id, {}),
                )
            )  # fmt: skip
    return runs


def logged_models(client: MlflowClient, experiment_ids: list[str]) -> dict[str, dict[str, list[str]]]:
    """Return ``{source run id: {model name: artifact paths}}`` for the experiments' logged models."""
    found: dict[str, dict[str, list[str]]] = {}
    for model in client.search_logged_models(experiment_ids, max_results=_RUN_PAGE):
        if model.source_run_id:
            found.setdefault(model.source_run_id, {})[model.name] = list_artifacts(model.artifact_location)
    return found


def local_artifact_dir(artifact_uri: str | None) -> Path | None:
    """Return the local directory of a ``file:`` (or plain path) artifact URI, else None."""
    if not artifact_uri:
        return None
    parsed = urlparse(artifact_uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))  # a file: URI is percent-encoded; a plain path is not
    return Path(artifact_uri) if not parsed.scheme else None


def list_artifacts(artifact_uri: str | None) -> list[str]:
    """Return every artifact path of a run (files and directories, '/'-separated), sorted."""
    root = local_artifact_dir(artifact_uri)
    if root is None or not root.is_dir():
        return []
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def snapshot_registry(client: MlflowClient) -> list[str]:
    """Return registered models, versions, stages and aliases as sorted lines (to compare before/after).

    A SQLite store is read with one query per table (what MLflow's own searches return: versions it
    deleted are left out); through the MLflow client the same lines cost ~20 ms a snapshot, two per run.
    """
    path = sqlite_store_path(str(client.tracking_uri))
    if path is not None and path.is_file():
        return _registry_lines_from_sqlite(path)
    lines: list[str] = []
    for model in client.search_registered_models():
        lines.append(f"model {model.name}")
        lines.extend(
            f"alias {model.name}@{alias}={version}" for alias, version in sorted(model.aliases.items())
        )
    for version in client.search_model_versions():
        lines.append(f"version {version.name} v{version.version} stage={version.current_stage}")
        lines.extend(f"alias {version.name}@{alias}=v{version.version}" for alias in version.aliases)
    return sorted(set(lines))


#: the stage MLflow's SQL store gives a deleted model version (its searches never return it).
_DELETED_STAGE = "Deleted_Internal"


def _registry_lines_from_sqlite(path: Path) -> list[str]:
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)) as db:
        models = db.execute("SELECT name FROM registered_models").fetchall()
        versions = db.execute(
            "SELECT name, version, current_stage FROM model_versions WHERE current_stage IS NOT ?",
            (_DELETED_STAGE,),
        ).fetchall()
        aliases = db.execute("SELECT name, alias, version FROM registered_model_aliases").fetchall()
    lines = [f"model {name}" for (name,) in models]
    lines += [f"version {name} v{version} stage={stage}" for name, version, stage in versions]
    # (MLflow's version search leaves a version's aliases empty: they are the model's alias lines)
    lines += [f"alias {name}@{alias}={version}" for name, alias, version in aliases]
    return sorted(set(lines))


# ---- texts to scan for canaries and injected goals -------------------------------------------------


def read_text(path: Path, limit: int = _MAX_SCAN_BYTES) -> str:
    """Return a file's text (the first ``limit`` bytes), decoding bytes leniently."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit)
    except OSError:
        return ""
    return data.decode("utf-8", errors="replace")


def runs_text(runs: list[RunSnapshot]) -> str:
    """Return what the tracked runs hold as text: names, params and tags."""
    parts: list[str] = []
    for run in runs:
        parts.append(run.name)
        parts.extend(f"{k}={v}" for k, v in sorted(run.params.items()))
        parts.extend(f"{k}={v}" for k, v in sorted(run.tags.items()))
    return "\n".join(parts)


def tree_text(root: Path) -> str:
    """Return the contents of every file under ``root`` (job logs and specs)."""
    if not root.is_dir():
        return ""
    return "\n".join(read_text(p) for p in sorted(root.rglob("*")) if p.is_file())
