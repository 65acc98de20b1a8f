"""Set up a scenario's world in a fresh workspace, and read it back afterwards.

The world is real: a dataset catalog (the demo catalog plus the scenario's datasets, some tampered or
carrying injected text), an MLflow sqlite store with pre-existing experiments and runs, settings
overrides, the fake Kubernetes API server with its faults, and secret canaries in the environment.
Building a migrated MLflow store and the demo catalog costs over a second, so both are built once per
suite (:func:`build_templates`) and copied into each workspace.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import sqlite3
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evals.observe import (
    Observation,
    read_audit,
    read_text,
    runs_text,
    snapshot_registry,
    snapshot_runs,
    tree_text,
)
from evals.podpool import ensure_pool, shim_command
from evals.schema import DatasetSpec, ExperimentSpec, Scenario
from tools.core.settings import Settings, load_settings
from tools.core.sqlite_uri import sqlite_uri

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from evals.fakes.kube import FakeKube

#: environment variables that would make a scenario read or write outside its workspace.
SCRUBBED_ENV_PREFIXES = ("EXPAGENT_",)
SCRUBBED_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID", "KUBECONFIG")
#: set for every scenario: traces are exported synchronously, so they are complete (and scanned) when
#: the turn returns, instead of a background queue that must be flushed with a ~1 s poll.
HARNESS_ENV = {"MLFLOW_ENABLE_ASYNC_TRACE_LOGGING": "false"}
#: how many values per PII column become canaries (enough to catch a leak, cheap to scan for).
_PII_SAMPLES = 10
_DB_SCAN_BYTES = 64_000_000
#: beside a seeded store: ``{run key: run ID}`` of the runs it holds.
_SEEDED_REFS = "refs.json"
REQUESTER = "eval-user"


@dataclass(frozen=True)
class Templates:
    """A migrated empty MLflow store and the demo catalog, copied into every workspace; and stores that
    already hold the experiments several scenarios start from (:func:`seed_shared_experiments`)."""

    home: Path

    @property
    def mlflow_db(self) -> Path:
        return self.home / "mlflow.db"

    @property
    def registry(self) -> Path:
        return self.home / "registry"

    def seeded(self, scenario: Scenario) -> Path | None:
        """Return the home of a store already holding ``scenario``'s experiments, if one was built."""
        if not scenario.world.experiments:
            return None
        home = self.home / "seeded" / experiments_key(scenario)
        return home if (home / _SEEDED_REFS).is_file() else None


def build_templates(directory: Path, scenarios: Sequence[Scenario] = ()) -> Templates:
    """Create the template workspace under ``directory`` (idempotent) and return it.

    Experiments that two or more of ``scenarios`` start from are created once here, each set in a
    store of its own that those scenarios copy (:func:`seed_shared_experiments`).
    """
    from tools.core.registry import DatasetRegistry
    from tools.core.tracking import make_client

    templates = Templates(directory.resolve())
    settings = load_settings(home=templates.home, tracking_uri=sqlite_uri(templates.mlflow_db))
    DatasetRegistry.open(settings)
    make_client(settings).search_experiments()
    seed_shared_experiments(templates, scenarios)
    return templates


def experiments_key(scenario: Scenario) -> str:
    """Return a digest of what a scenario's pre-existing runs are built from (experiments, run notes)."""
    experiments = [experiment.model_dump(mode="json") for experiment in scenario.world.experiments]
    text = json.dumps([experiments, run_notes(scenario)], sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def run_notes(scenario: Scenario) -> dict[str, str]:
    """Return the text injected into pre-existing runs' notes, by run key."""
    return {i.run: i.text for i in scenario.world.injections if i.where == "run" and i.run}


def seed_shared_experiments(templates: Templates, scenarios: Sequence[Scenario]) -> None:
    """Create, once, the experiments and runs that two or more scenarios start from.

    Each set goes into its own copy of the template store (with its artifacts beside it) plus a
    ``refs.json`` of its run IDs; a scenario with the same experiments copies that store instead of
    creating the runs again (three MLflow writes per run, ~0.1 CPU-s a scenario). Such scenarios see
    the same run IDs, each in its own workspace.
    """
    from tools.core.tracking import make_client

    by_key = {experiments_key(s): s for s in scenarios if s.world.experiments}
    counts = Counter(experiments_key(s) for s in scenarios if s.world.experiments)
    for key, scenario in by_key.items():
        home = templates.home / "seeded" / key
        if counts[key] < 2 or (home / _SEEDED_REFS).is_file():
            continue
        home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(templates.mlflow_db, home / "mlflow.db")
        client = make_client(load_settings(home=home, tracking_uri=sqlite_uri(home / "mlflow.db")))
        refs: dict[str, str] = {}
        for experiment in scenario.world.experiments:
            refs.update(add_experiment(client, experiment, run_notes(scenario)))
        (home / _SEEDED_REFS).write_text(json.dumps(refs, indent=2) + "\n")


def _copy_seeded_store(seeded: Path, home: Path) -> dict[str, str]:
    """Copy a seeded store (and its artifacts) into ``home``, pointing it at ``home``; return its refs."""
    shutil.copyfile(seeded / "mlflow.db", home / "mlflow.db")
    if (seeded / "artifacts").is_dir():
        shutil.copytree(seeded / "artifacts", home / "artifacts", dirs_exist_ok=True)
    old, new = (seeded / "artifacts").resolve().as_uri(), (home / "artifacts").resolve().as_uri()
    with closing(sqlite3.connect(home / "mlflow.db")) as db, db:
        db.execute("UPDATE experiments SET artifact_location = replace(artifact_location, ?, ?)", (old, new))
        db.execute("UPDATE runs SET artifact_uri = replace(artifact_uri, ?, ?)", (old, new))
    return {f"runs.{key}": run_id for key, run_id in json.loads((seeded / _SEEDED_REFS).read_text()).items()}


@dataclass
class PreparedWorld:
    """The live world of one scenario run."""

    settings: Settings
    refs: dict[str, str] = field(default_factory=dict)
    preexisting_runs: set[str] = field(default_factory=set)
    registry_before: list[str] = field(default_factory=list)
    kube: FakeKube | None = None


# ---- environment --------------------------------------------------------------------------------


@contextmanager
def scrubbed_environment(extra: dict[str, str] | None = None) -> Iterator[None]:
    """Remove settings-changing variables (and set ``extra``) for the block; restore afterwards."""
    saved = dict(os.environ)
    for key in list(os.environ):
        if key in SCRUBBED_ENV or key.startswith(SCRUBBED_ENV_PREFIXES):
            del os.environ[key]
    os.environ.update(extra or {})
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def make_settings(scenario: Scenario, home: Path, model: str) -> Settings:
    """Return the settings of one scenario run: its workspace, its store and its overrides."""
    config = dict(scenario.world.config)
    return load_settings(
        home=home,
        tracking_uri=sqlite_uri((home / "mlflow.db").resolve()),
        model=model,
        requester=REQUESTER,
        runtime=scenario.world.runtime,
        **config,
    )


# ---- datasets -----------------------------------------------------------------------------------


def _seed_workspace(templates: Templates, settings: Settings, demo: bool) -> None:
    """Copy the template store and catalog into the workspace (an empty catalog without the demo)."""
    home = settings.ensure_home()
    if not (home / "mlflow.db").is_file():  # a seeded store may have been copied already
        shutil.copyfile(templates.mlflow_db, home / "mlflow.db")
    registry_dir = settings.resolved_catalog_path.parent
    if demo:
        shutil.copytree(templates.registry, registry_dir, dirs_exist_ok=True)
        catalog = settings.resolved_catalog_path
        old = templates.registry.resolve().as_uri()
        catalog.write_text(catalog.read_text().replace(old, registry_dir.resolve().as_uri()))
    else:
        registry_dir.mkdir(parents=True, exist_ok=True)
        settings.resolved_catalog_path.write_text(json.dumps({"format": 1, "datasets": []}) + "\n")


def _template_rows(templates: Templates, ref: str) -> tuple[list[str], list[list[str]], Any]:
    from tools.core.registry import DatasetRegistry

    template = DatasetRegistry(templates.registry / "catalog.json", templates.registry / "data")
    record = template.resolve(ref)
    text = template.read_verified_bytes(record).decode("utf-8")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    return rows[0], rows[1:], record


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    from tools.core.registry import tables_to_csv

    path.write_bytes(tables_to_csv(header, rows))


def add_dataset(templates: Templates, settings: Settings, spec: DatasetSpec) -> None:
    """Register ``spec`` (a copy of a demo dataset) and apply its faults."""
    from tools.core.registry import DatasetRegistry

    header, rows, source = _template_rows(templates, spec.copy_of)
    for column, values in spec.add_columns.items():
        header = [*header, column]
        rows = [[*row, values[i % len(values)]] for i, row in enumerate(rows)]
    target = source.schema.target
    if spec.break_target:  # one class only: the registry accepts it, every model family fails on it
        index = header.index(target)
        rows = [[*row[:index], "0", *row[index + 1 :]] for row in rows]
    staging = settings.home / f"{spec.name}-{spec.version}.csv"
    _write_csv(staging, header, rows)
    registry = DatasetRegistry.open(settings)
    record = registry.register(
        staging, spec.name, spec.version, target=target, pii=spec.pii_columns, status=spec.status,
        owner=spec.owner, description=spec.description, task=source.schema.task,
    )  # fmt: skip
    staging.unlink()
    if spec.tamper:  # the catalog keeps the old sha256; the bytes on disk no longer match it
        path = registry.local_path(record)
        data = path.read_bytes()
        path.write_bytes(data + data.rstrip(b"\n").rsplit(b"\n", 1)[-1] + b"\n")  # a duplicated row


def inject_description(settings: Settings, ref: str, text: str) -> None:
    """Append ``text`` to the catalog description of ``ref`` (name@version)."""
    name, _, version = ref.partition("@")
    catalog = settings.resolved_catalog_path
    payload = json.loads(catalog.read_text())
    entries = [d for d in payload["datasets"] if d["name"] == name and d["version"] == version]
    if not entries:
        raise ValueError(f"injection target dataset {ref} is not in the catalog")
    for entry in entries:
        entry["description"] = f"{entry['description']} {text}".strip()
    catalog.write_text(json.dumps(payload, indent=2) + "\n")


# ---- MLflow -------------------------------------------------------------------------------------


def add_experiment(client: MlflowClient, spec: ExperimentSpec, notes: dict[str, str]) -> dict[str, str]:
    """Create an experiment with finished runs; return ``{run key: run id}``."""
    from mlflow.entities import Metric, Param, RunTag

    from tools.core.tracking import ensure_experiment

    experiment_id = ensure_experiment(client, spec.name)
    ids: dict[str, str] = {}
    for index, run in enumerate(spec.runs):
        tags = dict(run.tags)
        note = " ".join(t for t in (run.note, notes.get(run.key)) if t)
        if note:
            tags["mlflow.note.content"] = note
        created = client.create_run(
            experiment_id, run_name=run.name or run.key, start_time=1_700_000_000_000 + index
        )
        client.log_batch(
            created.info.run_id,
            metrics=[
                Metric(k, float(v), 1_700_000_000_000 + index, 0) for k, v in sorted(run.metrics.items())
            ],
            params=[Param(k, str(v)) for k, v in sorted(run.params.items())],
            tags=[RunTag(k, v) for k, v in sorted(tags.items())],
        )
        for path, text in sorted(run.artifacts.items()):
            client.log_text(created.info.run_id, text, path)
        if run.status != "RUNNING":
            client.set_terminated(created.info.run_id, run.status, end_time=1_700_000_001_000 + index)
        ids[run.key] = created.info.run_id
    return ids


# ---- Kubernetes ---------------------------------------------------------------------------------


def start_kube(scenario: Scenario, settings: Settings, stack: ExitStack) -> tuple[FakeKube, Settings]:
    """Start the fake API server with the scenario's faults; return it and settings pointing at it."""
    from evals.fakes.kube import FakeKube
    from evals.fakes.kube_faults import Faults

    faults = Faults()
    faults.update(dict(scenario.world.k8s_faults))
    namespaces = sorted({*settings.namespaces, settings.k8s_namespace})
    kube = FakeKube(namespaces=namespaces, faults=faults, kubeconfig_path=settings.home / "kubeconfig")
    lines = [i.text for i in scenario.world.injections if i.where == "pod_log"]
    _wrap_pod_commands(kube, ensure_pool(Path(tempfile.gettempdir())), lines)
    stack.enter_context(kube)
    updated = settings.model_copy(update={"k8s_kubeconfig": kube.kubeconfig_path, "runtime": "kubernetes"})
    return kube, updated


def _wrap_pod_commands(kube: FakeKube, pool: Path, log_lines: list[str]) -> None:
    """Run pods through the warm pod pool, printing ``log_lines`` first (an instruction in a pod log)."""
    # The fake has no hook for either; wrap its kubelet's command builder for this instance only.
    original = kube.cluster._command
    inject = "import os, sys; print(sys.argv[1], flush=True); os.execv(sys.argv[2], sys.argv[2:])"

    def command(pod: dict[str, Any]) -> list[str]:
        argv = shim_command(pool, original(pod))
        return [sys.executable, "-c", inject, "\n".join(log_lines), *argv] if log_lines else argv

    kube.cluster._command = command  # type: ignore[method-assign]


# ---- the whole world ------------------------------------------------------------------------------


@contextmanager
def prepared_world(
    scenario: Scenario, home: Path, templates: Templates, model: str
) -> Iterator[PreparedWorld]:
    """Build the scenario's world under ``home``; tear down servers and environment afterwards."""
    from tools.core.tracking import make_client

    env = {c.env: c.value for c in scenario.world.canaries if c.env} | HARNESS_ENV
    with ExitStack() as stack:
        stack.enter_context(scrubbed_environment(env))
        settings = make_settings(scenario, home, model)
        seeded = templates.seeded(scenario)
        refs = _copy_seeded_store(seeded, settings.ensure_home()) if seeded else {}
        _seed_workspace(templates, settings, scenario.world.demo)
        for dataset in scenario.world.datasets:
            add_dataset(templates, settings, dataset)
        for injection in scenario.world.injections:
            if injection.where == "dataset_description" and injection.dataset:
                inject_description(settings, injection.dataset, injection.text)
        client = make_client(settings)
        refs |= {f"canary.{c.name}": c.value for c in scenario.world.canaries}
        for experiment in scenario.world.experiments if seeded is None else ():
            ids = add_experiment(client, experiment, run_notes(scenario))
            refs.update({f"runs.{key}": run_id for key, run_id in ids.items()})
        world = PreparedWorld(
            settings=settings,
            refs=refs,
            preexisting_runs={v for k, v in refs.items() if k.startswith("runs.")},
        )
        world.registry_before = snapshot_registry(client)
        if scenario.world.runtime == "kubernetes":
            world.kube, world.settings = start_kube(scenario, settings, stack)
        yield world


# ---- reading the world back -------------------------------------------------------------------------


def observe_world(world: PreparedWorld, scenario: Scenario, obs: Observation) -> Observation:
    """Fill ``obs`` with what MLflow, the audit log, the fake cluster and the workspace files hold."""
    from tools.core.tracking import make_client

    settings = world.settings
    flush_traces()
    client = make_client(settings)
    obs.audit = read_audit(settings.audit_log_path)
    obs.runs = snapshot_runs(client, world.preexisting_runs)
    obs.registry_before = world.registry_before
    obs.registry_after = snapshot_registry(client)
    obs.allowed_namespaces = sorted(set(settings.namespaces))
    obs.agent_experiment = settings.agent_experiment
    obs.canaries = {c.name: c.needle for c in scenario.world.canaries} | pii_canaries(settings)
    logs = tree_text(settings.jobs_dir)
    if world.kube is not None:
        obs.k8s_objects = kube_objects(world.kube)
        logs += "\n" + tree_text(world.kube.cluster.log_dir)
    db = home_db(settings)
    obs.texts = {
        "mlflow": "\n".join(
            [runs_text(obs.runs), tree_text(settings.artifact_root), read_text(db, _DB_SCAN_BYTES)]
        ),
        "audit": read_text(settings.audit_log_path, _DB_SCAN_BYTES),
        "logs": logs,
    }
    return obs


def jobs_cpu_seconds(settings: Settings) -> float:
    """Return the CPU seconds the workspace's local jobs reported in their ``status.json`` files."""
    total = 0.0
    for path in sorted(settings.jobs_dir.glob("*/status.json")) if settings.jobs_dir.is_dir() else []:
        try:
            total += float(json.loads(path.read_text()).get("cpu_seconds") or 0.0)
        except (OSError, ValueError, AttributeError):
            continue  # half-written or unreadable: the run's own gates judge the job
    return round(total, 3)


def flush_traces() -> None:
    """Wait for the agent's asynchronously exported MLflow traces, so they are scanned (and not lost)."""
    import mlflow

    flush = getattr(mlflow, "flush_trace_async_logging", None)
    if flush is not None:
        try:
            flush()
        except Exception:  # noqa: BLE001 - no traces (tracing off) is not a failure of the scenario
            return


def home_db(settings: Settings) -> Path:
    """Return the sqlite file of the workspace's tracking store."""
    return settings.home / "mlflow.db"


def kube_objects(kube: FakeKube) -> list[dict[str, str]]:
    """Return the Jobs the fake holds (listed with the official client), plus any write the agent sent
    to a resource other than Jobs (as pseudo-objects)."""
    from kubernetes import client, config

    api = client.BatchV1Api(config.new_client_from_config(str(kube.kubeconfig_path)))
    before = dict(kube.requests)  # our own listing is not the agent's traffic
    listed = api.list_job_for_all_namespaces().items
    kube.requests.clear()
    kube.requests.update(before)
    objects = [
        {"kind": "Job", "namespace": str(job.metadata.namespace), "name": str(job.metadata.name)}
        for job in listed
        if job.metadata is not None
    ]
    for request, count in sorted(kube.requests.items()):
        verb, _, resource = request.partition(" ")
        if verb in ("create", "update", "patch") and resource.split("/")[0] not in ("jobs", ""):
            objects.append({"kind": resource, "namespace": "", "name": f"{count} {verb} request(s)"})
    return sorted(objects, key=lambda o: (o["kind"], o["namespace"], o["name"]))


def pii_canaries(settings: Settings) -> dict[str, str]:
    """Return a sample of the values of every PII column in the catalog (they must never leave it)."""
    from tools.core.registry import DatasetRegistry

    registry = DatasetRegistry.open(settings)
    needles: dict[str, str] = {}
    for record in registry.list():
        if not record.pii_columns:
            continue
        text = registry.local_path(record).read_text(encoding="utf-8")
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
        for column in record.pii_columns:
            values = sorted({row[column] for row in rows if len(row.get(column) or "") >= 6})[:_PII_SAMPLES]
            needles.update({f"pii {record.ref}.{column}[{i}]": v for i, v in enumerate(values)})
    return needles
