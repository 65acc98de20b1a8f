"""MLflow tracking: the client, run creation and closing, cancellation records, and the run tools.

Every text expagent writes to MLflow (params, tags, notes, error logs) passes ``tools.core.redact`` first.
mlflow is imported inside functions so that listing tools stays cheap.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol
from urllib.parse import unquote, urlparse

from tools.core import provenance
from tools.core import tags as tag_keys
from tools.core.create_once import create_run_once, end_extra_runs
from tools.core.liveness import owner_tags
from tools.core.outbox import KeptWrite, Outbox, keep_if_unreachable
from tools.core.redact import redact, redact_text
from tools.core.settings import Settings
from tools.core.specs import CancellationRecord, TrainingSpec
from tools.core.sqlite_uri import sqlite_store_path
from tools.core.store_seed import seed_new_store
from tools.core.text import normalize
from tools.core.unreachable import is_unreachable

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

    from tools.core.registry import DatasetRegistry

log = logging.getLogger(__name__)

MANAGED_TAG = tag_keys.MANAGED
NOTE_TAG = "mlflow.note.content"
RunRole = Literal["baseline", "trial", "single", "tuning", "session"]
TerminalStatus = Literal["FINISHED", "FAILED", "KILLED"]
#: user-supplied tag keys may not start with these (they carry expagent's and MLflow's own meaning).
RESERVED_TAG_PREFIXES = ("mlflow.", "expagent.")
_RUN_ID_RE = re.compile(r"^[0-9a-f]{32}$")
METRIC_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-/ ]+$")
#: MLflow limits (param values 6000 chars, tag values 8000); longer text is cut with a marker.
_MAX_PARAM_CHARS = 6000
_MAX_TAG_CHARS = 5000
#: what MLflow answers when a run is created in a deleted (not active) or purged experiment.
_EXPERIMENT_GONE_CODES = frozenset({"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST"})


class RunOwner(Protocol):
    """Who creates runs and with what: a tracking client, the workspace and the session's facts.

    ``tools.context.ToolContext`` is one; the trainer, which has no tool context, builds a
    :class:`RunOwnerRecord`.
    """

    settings: Settings
    session_id: str
    requester: str

    @property
    def experiment_ids(self) -> dict[tuple[str, str], str]:
        """(tracking URI, experiment name) -> experiment ID, shared by whoever creates runs for the owner."""
        ...

    @property
    def tracking(self) -> MlflowClient: ...

    @property
    def registry(self) -> DatasetRegistry: ...


class RunOwnerRecord:
    """A plain :class:`RunOwner`: the given client, settings and session facts."""

    def __init__(self, settings: Settings, client: MlflowClient, session_id: str, requester: str) -> None:
        self.settings, self.session_id, self.requester = settings, session_id, requester
        self._experiment_ids: dict[tuple[str, str], str] = {}
        self._client = client
        self._registry: DatasetRegistry | None = None

    @property
    def experiment_ids(self) -> dict[tuple[str, str], str]:
        return self._experiment_ids

    @property
    def tracking(self) -> MlflowClient:
        return self._client

    @property
    def registry(self) -> DatasetRegistry:
        if self._registry is None:
            from tools.core.registry import DatasetRegistry

            self._registry = DatasetRegistry.open(self.settings)
        return self._registry


# ---- client and experiments -----------------------------------------------------------------------


def make_client(settings: Settings) -> MlflowClient:
    """Return an MLflow client for the workspace's tracking store; every text it writes is redacted."""
    from tools.core._redacting_client import RedactingMlflowClient

    bound_mlflow_http(settings)
    settings.home.mkdir(parents=True, exist_ok=True)
    if urlparse(settings.resolved_tracking_uri).scheme.split("+")[0] in _DATABASE_SCHEMES:
        _remember_schema_head()
        seed_new_store(settings.resolved_tracking_uri)  # a new SQLite store: a copy, not 60 migrations
    client = RedactingMlflowClient(tracking_uri=settings.resolved_tracking_uri)
    client.outbox = Outbox(settings.home / "outbox")
    return client


#: tracking URIs MLflow serves with its SQLAlchemy store (which checks the schema on every new store).
_DATABASE_SCHEMES = frozenset({"sqlite", "postgresql", "mysql", "mssql"})


@functools.cache
def _remember_schema_head() -> None:
    """Make MLflow compute the newest schema revision of its installed migrations once per process.

    Every new SQLAlchemy store (one per tracking URI and process: each agent turn's workspace, each
    job) compares the database's alembic revision with the newest one among the installed MLflow's
    ~60 migration scripts, which MLflow finds by loading every script again: ~0.07 s a store. The
    newest revision cannot change while the process runs, so its answer is kept; the database's own
    revision is still read and compared every time. Private MLflow API, used only here: if it is
    renamed, nothing is kept and stores are checked as before.
    """
    from mlflow.store.db import utils as db_utils

    latest = getattr(db_utils, "_get_latest_schema_revision", None)
    if callable(latest):
        db_utils._get_latest_schema_revision = functools.cache(latest)  # type: ignore[attr-defined]


def bound_mlflow_http(settings: Settings) -> None:
    """Bound MLflow's HTTP retries (its defaults wait ~4 minutes per failing call); env wins if set.

    urllib3 sleeps ``factor * 2**n`` before retry n (n = 1, 2, ...): MLflow's defaults (7 retries,
    factor 2) wait 4 + 8 + ... + 256 s. Ours (5 retries, factor 1: 2 + 4 + 8 + 16 + 32 s) keep one call
    that cannot connect under ~62 s of waiting: long enough to ride out a server restart, short
    enough that a turn on a store that is gone for good ends within ~90 s (``RedactingMlflowClient``
    stops calling after one call has failed to connect, for ``BREAKER_HOLD_S``; a job's report of the
    same failure opens the agent's breaker too). Measured with factor 2: one call took ~124 s.

    Set in the environment, so job processes started from here inherit the same bounds.
    """
    import os

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", f"{settings.mlflow_http_timeout:g}")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(settings.mlflow_http_retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0.5")
    # MLflow writes "🏃 View run … at: <url>" to stdout when a run ends against a server: stdout belongs
    # to the front end (``--json``, the MCP stdio channel), never to a library.
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"


def _default_artifact_root(client: MlflowClient) -> Path | None:
    """Return ``<dir of the sqlite file>/artifacts`` for a sqlite store (``settings.artifact_root``)."""
    store = sqlite_store_path(str(client.tracking_uri))
    if store is None:
        return None  # a tracking server chooses its own artifact store
    return store.resolve().parent / "artifacts"


def _artifact_location(root: Path, name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")[:60] or "experiment"
    digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:8]
    return (root / f"{slug}-{digest}").as_uri()


def ensure_experiment(client: MlflowClient, name: str, artifact_root: Path | None = None) -> str:
    """Return the ID of experiment ``name``, creating it with artifacts under the workspace.

    Args:
        client: MLflow client.
        name: Experiment name.
        artifact_root: Directory for the experiment's artifacts; defaults to ``artifacts/`` next to a
            sqlite store (which is ``settings.artifact_root`` for the default workspace layout).
    """
    from mlflow.exceptions import MlflowException

    if not name or not name.strip():
        raise ValueError("experiment name must not be empty")
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        root = artifact_root or _default_artifact_root(client)
        location = _artifact_location(root, name) if root else None
        try:
            return client.create_experiment(name, artifact_location=location, tags=experiment_tags(name))
        except MlflowException:  # another process created it first
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        raise ValueError(f"experiment {name!r} was deleted in MLflow; restore it or choose another name")
    root = artifact_root or _default_artifact_root(client)
    if root is not None and not _inside(experiment.artifact_location, root):
        raise ValueError(
            f"experiment {name!r} keeps its artifacts at {experiment.artifact_location}, outside the "
            "workspace; choose another experiment name (expagent creates experiments inside it)"
        )
    missing = {k: v for k, v in experiment_tags(name).items() if k not in experiment.tags}
    for key, value in missing.items():  # an experiment made before expagent described its experiments
        client.set_experiment_tag(experiment.experiment_id, key, value)
    return str(experiment.experiment_id)


#: MLflow's experiment kind: "custom model development" files runs as training runs. Without it, the UI
#: infers a GenAI experiment from the agent's traces and lists the runs under "Evaluation runs".
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"


def experiment_tags(name: str) -> dict[str, str]:
    """Return the tags of an experiment expagent creates: its kind and its description."""
    description = (
        f"{name}: training and tuning runs launched by expagent. Each request has a session run (the "
        "request, plan and answer in its description) with its baseline, tuning run and trials nested "
        "under it. Trials are selected on val_<metric>; test_<metric> is the held-out estimate."
    )
    return {EXPERIMENT_KIND_TAG: "custom_model_development", NOTE_TAG: description}


def _inside(location: str, root: Path) -> bool:
    """Whether an artifact location is a local path under ``root`` (remote stores are not judged)."""
    parsed = urlparse(location)
    if parsed.scheme not in ("", "file"):
        return True
    path = Path(unquote(parsed.path) if parsed.scheme == "file" else location)
    if not path.is_absolute():
        return False  # e.g. ./mlruns: relative to whatever directory a process runs in
    return path.resolve().is_relative_to(root.resolve())


def cached_experiment_id(ctx: RunOwner, name: str) -> str:
    """Return the ID of experiment ``name`` (created if needed), looked up once per context."""
    key = (ctx.tracking.tracking_uri, name)
    found = ctx.experiment_ids.get(key)
    if found is None:
        # A tracking server keeps the artifacts in its own store (proxied mlflow-artifacts:); a local
        # store keeps them under the workspace, never ./mlruns of the working directory.
        root = None if ctx.settings.remote_tracking else ctx.settings.artifact_root
        found = ensure_experiment(ctx.tracking, name, root)
        ctx.experiment_ids[key] = found
    return found


def _create_in_experiment(ctx: RunOwner, experiment: str, tags: dict[str, str], run_name: str | None) -> Run:
    """Create a RUNNING run in ``experiment``; a cached experiment deleted since is looked up again.

    Created once even if MLflow's client retries the create on a tracking server (``create_once``).
    """
    from mlflow.exceptions import MlflowException

    key = (ctx.tracking.tracking_uri, experiment)
    cached = key in ctx.experiment_ids
    try:
        return create_run_once(ctx.tracking, cached_experiment_id(ctx, experiment), tags, run_name)
    except MlflowException as exc:
        if not cached or exc.error_code not in _EXPERIMENT_GONE_CODES:
            raise
    # The cached experiment was deleted (not active) or purged: look it up afresh, so a deleted one gets
    # ensure_experiment's clear error and a purged one is created again.
    ctx.experiment_ids.pop(key, None)
    return create_run_once(ctx.tracking, cached_experiment_id(ctx, experiment), tags, run_name)


def ui_url(settings: Settings, experiment_id: str, run_id: str | None = None) -> str:
    """Return the MLflow UI link of an experiment, or of one of its runs."""
    base = settings.ui_base.rstrip("/")
    if run_id is None:
        return f"{base}/#/experiments/{experiment_id}"
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


# ---- writing runs ---------------------------------------------------------------------------------


def clip(text: str, limit: int) -> str:
    """Return ``text`` cut to ``limit`` characters with a visible marker."""
    return text if len(text) <= limit else text[: limit - 14] + " …[truncated]"


def clean_param(value: object) -> str:
    """Return a param value as redacted text within MLflow's length limit."""
    return clip(redact_text(str(value)), _MAX_PARAM_CHARS)


def clean_tags(tags: Mapping[str, object]) -> dict[str, str]:
    """Return tags as redacted strings within MLflow's length limit."""
    return {key: clip(redact_text(str(value)), _MAX_TAG_CHARS) for key, value in tags.items()}


def check_user_tags(tags: Mapping[str, str]) -> None:
    """Raise ValueError if a user-supplied tag key is reserved for MLflow or expagent."""
    reserved = sorted(
        k
        for k in tags
        if normalize(k).startswith(RESERVED_TAG_PREFIXES) and k not in tag_keys.USER_SETTABLE_RESERVED
    )
    if reserved:
        raise ValueError(
            f"tag keys starting with 'mlflow.' or 'expagent.' are reserved: {', '.join(reserved)}; "
            "choose other keys"
        )


#: ``mlflow.source.name`` of the runs expagent creates: the program that trains them, or the agent.
TRAINER_SOURCE = "expagent: tools.training.trainer"
AGENT_SOURCE = "expagent agent"


def source_tags(name: str) -> dict[str, str]:
    """Return MLflow's source tags (what the UI shows as a run's source) for program ``name``."""
    return {"mlflow.source.name": name, "mlflow.source.type": "JOB"}


def _params_text(params: Mapping[str, object]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items())) or "the family's defaults"


def describe_run(spec: TrainingSpec, role: str) -> str:
    """Return the run's description (``mlflow.note.content``): what it is and why it exists."""
    code = f"entry point {spec.entry_point.ref}" if spec.entry_point else spec.model_family
    data = f"{code} on {spec.dataset}@{spec.version}, metric {spec.metric}"
    if role == "trial":
        return (
            f"Trial {spec.trial_number} of the tuning run {spec.parent_run_id}: {data}. "
            f"Params: {_params_text(spec.params)}. Selected on {spec.selection_metric}; "
            f"test_{spec.metric} is reported, never selected on."
        )
    if role == "baseline":
        return (
            f"Baseline {data}, params: {_params_text(spec.params)}. The reference the tuned runs are "
            f"compared with on the test split (test_{spec.metric})."
        )
    return f"Training run ({role}) {data}. Params: {_params_text(spec.params)}."


def run_tags(spec: TrainingSpec, role: str, session_id: str, requester: str) -> dict[str, str]:
    """Return the tags every run expagent launches carries (see ARCHITECTURE.md, "Runs and jobs")."""
    check_user_tags(spec.tags)
    tags: dict[str, object] = {
        NOTE_TAG: describe_run(spec, role),
        **source_tags(TRAINER_SOURCE),
        **spec.tags,
        MANAGED_TAG: "true",
        tag_keys.SESSION: session_id,
        tag_keys.ROLE: role,
        tag_keys.REQUESTER: requester,
        "mlflow.user": requester,
        **owner_tags(),
        "dataset.name": spec.dataset,
        "dataset.version": spec.version,
        "model_family": spec.model_family,
        "seed": spec.seed,
        "python_version": provenance.python_version(),
        **provenance.code_version().tags(),
    }
    if spec.trial_number is not None:
        tags[tag_keys.TRIAL_NUMBER] = spec.trial_number
    if spec.parent_run_id:
        tags["mlflow.parentRunId"] = spec.parent_run_id
    if spec.data_source is not None:  # the S3 object version the job reads
        tags["dataset.uri"] = spec.data_source.uri
        tags["dataset.s3_version_id"] = spec.data_source.version_id
    if spec.entry_point is not None:  # user code: which registered project version ran (no family)
        tags[tag_keys.ENTRY_POINT] = spec.entry_point.ref
        tags[tag_keys.ENTRY_POINT_NAME] = spec.entry_point.entry
        del tags["model_family"]
    return clean_tags(tags)


def create_mlflow_run(ctx: RunOwner, spec: TrainingSpec, role: RunRole | None = None) -> Run:
    """Create the MLflow run for ``spec`` (status RUNNING, expagent tags, nested under its parent)."""
    from tools.core.registry import RegistryError

    session = spec.session_id or ctx.session_id
    if spec.parent_run_id:
        check_parent(ctx.tracking, spec.parent_run_id, session)
    tags = run_tags(spec, role or spec.role, session, spec.requester or ctx.requester)
    try:
        tags["dataset.sha256"] = ctx.registry.get(spec.dataset, spec.version).sha256
    except RegistryError:
        pass  # the guard rejects unknown datasets; the trainer reports it clearly if one gets here
    return _create_in_experiment(ctx, spec.experiment, tags, spec.run_name)


def check_parent(client: MlflowClient, parent_run_id: str, session_id: str) -> None:
    """Raise ValueError unless ``parent_run_id`` is a run of this session (its session or tuning run).

    ``mlflow.parentRunId`` is provenance: a made-up or foreign parent would file a run under someone
    else's work.
    """
    try:
        parent = get_run_or_error(client, parent_run_id)
    except LookupError as exc:
        raise ValueError(f"parent_run_id: {exc}") from None
    if parent.data.tags.get(tag_keys.SESSION) != session_id:
        raise ValueError(
            f"parent_run_id {parent_run_id} is not a run of this session; a run can only be nested under "
            "this conversation's own session or tuning run"
        )


def create_run(ctx: RunOwner, spec: TrainingSpec, role: RunRole | None = None) -> str:
    """Create the MLflow run for ``spec`` (see :func:`create_mlflow_run`); return its run ID."""
    return str(create_mlflow_run(ctx, spec, role).info.run_id)


#: descriptions of the runs that group others, until their creator writes a fuller one.
_GROUP_NOTES: dict[str, str] = {
    "session": "Session {session} requested by {requester}: holds the plan and the answer of one request.",
    "tuning": "Tuning study of session {session}: its trials are nested under this run.",
    "baseline": "Baseline run of session {session}.",
    "trial": "Trial run of session {session}.",
    "single": "Run of session {session}.",
}


def create_parent_run(
    ctx: RunOwner,
    experiment: str,
    role: RunRole,
    run_name: str | None = None,
    params: Mapping[str, object] | None = None,
    tags: Mapping[str, str] | None = None,
    parent_run_id: str | None = None,
) -> str:
    """Create a RUNNING run that groups others (a tuning study or an agent session)."""
    from mlflow.entities import Param

    check_user_tags(tags or {})
    default_note = _GROUP_NOTES[role].format(session=ctx.session_id, requester=ctx.requester)
    all_tags: dict[str, object] = {
        NOTE_TAG: default_note,
        **source_tags(AGENT_SOURCE),
        **(tags or {}),
        MANAGED_TAG: "true",
        tag_keys.SESSION: ctx.session_id,
        tag_keys.ROLE: role,
        tag_keys.REQUESTER: ctx.requester,
        **owner_tags(),
        "mlflow.user": ctx.requester,
        "python_version": provenance.python_version(),
        **provenance.code_version().tags(),
    }
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = _create_in_experiment(ctx, experiment, clean_tags(all_tags), run_name)
    if params:
        batch = [Param(k, clean_param(v)) for k, v in params.items()]
        ctx.tracking.log_batch(run.info.run_id, params=batch)
    return str(run.info.run_id)


def _client_of(target: RunOwner | MlflowClient) -> MlflowClient:
    owner = getattr(target, "tracking", None)
    return owner if owner is not None else target  # type: ignore[return-value]


def end_run(
    target: RunOwner | MlflowClient,
    run_id: str,
    status: TerminalStatus,
    note: str | None = None,
    artifacts: Mapping[str, str] | None = None,
    only_if_running: bool = True,
) -> bool:
    """End a run with ``status``: its note first, then the status, then text artifacts (all redacted).

    Returns False (and writes nothing) when ``only_if_running`` and the run has already ended, so an
    observer never overwrites the trainer's own outcome. The status is written before the artifacts:
    an artifact store that fails must not leave the run RUNNING (the artifact failure is logged).

    When the tracking server cannot be reached, the write is kept in the workspace's outbox
    (``tools.core.outbox``) and replayed by whoever opens the workspace next; True is returned (the
    run will end with ``status``), and the breaker makes the caller's next MLflow call fail fast.
    """
    client = _client_of(target)
    note = redact_text(note) if note else note
    texts = {name: redact_text(text) for name, text in (artifacts or {}).items()}
    try:
        return _end_run_now(client, run_id, status, note, texts, only_if_running)
    except Exception as exc:
        args = {"note": note, "artifacts": texts, "only_if_running": only_if_running}
        if not _keep_for_later(client, exc, KeptWrite(op="end_run", run_id=run_id, status=status, args=args)):
            raise
        return True


def _end_run_now(
    client: MlflowClient, run_id: str, status: str, note: str | None, texts: Mapping[str, str],
    only_if_running: bool,
) -> bool:  # fmt: skip
    from mlflow.entities import RunTag

    if only_if_running and client.get_run(run_id).info.status != "RUNNING":
        return False
    if note:
        client.log_batch(run_id, tags=[RunTag(NOTE_TAG, clip(note, _MAX_TAG_CHARS))])
    client.set_terminated(run_id, status)
    _attach_texts(client, run_id, status, texts)
    return True


def _attach_texts(client: MlflowClient, run_id: str, status: str, texts: Mapping[str, str]) -> None:
    """Attach text artifacts to an ended run; a failure is logged (and kept when the server is away)."""
    for index, (name, text) in enumerate(texts.items()):
        try:
            client.log_text(run_id, text, name)
        except Exception as exc:  # noqa: BLE001 - the run has ended; an artifact must not undo that
            left = dict(list(texts.items())[index:])
            args = {"note": None, "artifacts": left, "only_if_running": False}
            kept = KeptWrite(op="end_run", run_id=run_id, status=status, args=args)
            if not _keep_for_later(client, exc, kept):
                log.warning("could not attach %s to run %s: %s", name, run_id, exc)
            return


def write_cancellation(client: MlflowClient, record: CancellationRecord) -> None:
    """Tag who stopped the run and why, end it KILLED (if still RUNNING), attach ``cancellation.json``.

    Kept in the outbox like ``end_run`` when the tracking server cannot be reached.
    """
    try:
        _write_cancellation_now(client, record)
    except Exception as exc:
        payload = {"record": redact(record.model_dump(mode="json"))}
        kept = KeptWrite(op="write_cancellation", run_id=record.run_id, status="KILLED", args=payload)
        if not _keep_for_later(client, exc, kept):
            raise


def _write_cancellation_now(client: MlflowClient, record: CancellationRecord) -> None:
    from mlflow.entities import RunTag

    payload = redact(record.model_dump(mode="json"))
    note = f"{record.kind.capitalize()} by {record.cancelled_by}: {record.reason}"
    tags = clean_tags(
        {
            tag_keys.CANCELLED_BY: record.cancelled_by,
            tag_keys.CANCEL_KIND: record.kind,
            tag_keys.CANCEL_REASON: record.reason,
            NOTE_TAG: note,
        }
    )
    client.log_batch(record.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    if client.get_run(record.run_id).info.status == "RUNNING":
        client.set_terminated(record.run_id, "KILLED")
    client.log_text(record.run_id, json.dumps(payload, indent=2) + "\n", "cancellation.json")


def outbox_of(client: MlflowClient) -> Outbox | None:
    """Return the outbox of a client made by ``make_client`` (None for a plain client)."""
    return getattr(client, "outbox", None)


def _keep_for_later(client: MlflowClient, exc: BaseException, write: KeptWrite) -> bool:
    """Keep ``write`` in the client's outbox if ``exc`` means the server is unreachable; True if kept."""
    return keep_if_unreachable(outbox_of(client), exc, write)


def replay_outbox(client: MlflowClient) -> tuple[list[KeptWrite], int]:
    """Write what the outbox kept, oldest first; return what was written and how many writes still wait.

    Stops at the first write the server still cannot take (the rest keep their order). A write the
    store refuses for another reason (e.g. the run was deleted) is logged and dropped.
    """
    box = outbox_of(client)
    if box is None:
        return [], 0
    pending = box.pending()
    written: list[KeptWrite] = []
    for index, (path, write) in enumerate(pending):
        try:
            if write.op == "end_run":
                args = write.args
                texts, only = args.get("artifacts") or {}, bool(args.get("only_if_running"))
                _end_run_now(client, write.run_id, write.status, args.get("note"), texts, only)
            elif write.op == "end_extra_runs":
                end_extra_runs(
                    client, write.args["experiment_id"], write.args["create_id"], write.args["keep"]
                )
            else:
                _write_cancellation_now(client, CancellationRecord.model_validate(write.args["record"]))
        except Exception as exc:  # noqa: BLE001
            if is_unreachable(exc):
                return written, len(pending) - index
            log.exception("dropped the kept %s of run %s: the store refused it", write.op, write.run_id)
        else:
            written.append(write)
        box.done(path)
    return written, 0


def get_run_or_error(client: MlflowClient, run_id: str) -> Run:
    """Return the run, or raise LookupError with a message the model can act on."""
    from mlflow.exceptions import MlflowException

    if not _RUN_ID_RE.match(run_id or ""):
        raise LookupError(f"{run_id!r} is not an MLflow run ID (32 lowercase hex characters)")
    try:
        return client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise LookupError(f"no MLflow run with ID {run_id!r} exists in this tracking store") from exc
        raise


def list_artifacts(client: MlflowClient, run_id: str, limit: int = 100) -> list[str]:
    """Return the run's artifact file paths (breadth first, at most ``limit``)."""
    found: list[str] = []
    pending: list[str | None] = [None]
    while pending and len(found) < limit:
        for item in client.list_artifacts(run_id, pending.pop(0)):
            (pending.append(item.path) if item.is_dir else found.append(item.path))
    return found[:limit]


def model_uri(client: MlflowClient, run: Run) -> str | None:
    """Return ``models:/<model_id>`` of the model the run logged, or None."""
    models = client.search_logged_models(
        experiment_ids=[run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'"
    )
    return f"models:/{models[0].model_id}" if models else None
