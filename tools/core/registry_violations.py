"""Entry point runs that touched the model registry: found from MLflow, recorded once in the workspace.

User code can call ``mlflow.register_model`` (or set an alias or a stage on what it registered); the
agent itself never writes to the model registry. Such a run is a policy violation: the run ends FAILED
with a note, a ``policy_violation`` line goes to the workspace's audit log and the entry point is
``blocked`` until it is validated again, so no later trial or request trains from it.

Two places look: the job itself right after the project's command (the fastest stop on the local
runtime), and the agent whenever it sees an entry point run's job end (``check_finished_run``). Only
the agent's look is sure to happen where the workspace is: a Kubernetes pod has no workspace (its audit
line and the catalog's ``blocked`` would be written to nowhere), and user code may kill the process that
would have looked. The ``expagent.policy_violation`` tag marks a violation as recorded in the workspace,
so seeing the same run twice writes one audit line.

Found by the versions whose ``run_id`` is the run. An alias or stage moved onto a version that another
run created cannot be told apart from a colleague's change to the registry, so it is not attributed.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from tools.core import tags as tag_keys
from tools.core import tracking
from tools.core.audit import AuditLog
from tools.core.entrypoints import EntryPointError, EntryPointRegistry, registry_touches
from tools.core.settings import Settings

_log = logging.getLogger(__name__)

#: set on the run when the violation is in the workspace's audit log and catalog (value: the reason).
VIOLATION_TAG = "expagent.policy_violation"


def violation_note(ref: str, reason: str) -> str:
    """Return the run note of a registry violation."""
    return f"policy violation: {reason}; entry point {ref} is blocked until validated again"


def find_violation(client: Any, run_id: str) -> str | None:
    """Return why the run broke the no-registry rule (the versions it created), or None."""
    touched = registry_touches(client, run_id)
    return f"run {run_id} touched the model registry ({'; '.join(touched)})" if touched else None


def record_violation(settings: Settings, client: Any, run_id: str, ref: str, reason: str) -> str:
    """Write the audit line, block ``ref`` and end the run FAILED with the note; return the note."""
    AuditLog(settings.audit_log_path).write({
        "timestamp": time.time(), "kind": "policy_violation", "rule": "no_deployment",
        "entry_point": ref, "run_id": run_id, "reason": reason,
    })  # fmt: skip
    try:
        EntryPointRegistry.open(settings).set_status(ref, "blocked", reason)
    except EntryPointError:  # an entry point registered in another workspace: the audit line remains
        pass
    note = violation_note(ref, reason)
    tracking.end_run(client, run_id, "FAILED", note=note, only_if_running=False)
    client.set_tag(run_id, VIOLATION_TAG, reason)
    return note


def check_finished_run(settings: Settings, client: Any, run_id: str) -> str | None:
    """Record a registry violation of an ended entry point run once; return its note (None: none).

    Runs of built-in families are not looked at (they run no user code). A run already recorded in
    this workspace returns its note again without a second audit line. A store that cannot be read now
    is logged, not raised: the job's own check stands, and no later launch gets past an unreachable store.
    """
    try:
        return _check(settings, client, run_id)
    except Exception:  # noqa: BLE001 - an unreadable store also stops the next launch
        _log.warning("could not check run %s for model registry changes", run_id, exc_info=True)
        return None


def _check(settings: Settings, client: Any, run_id: str) -> str | None:
    run = client.get_run(run_id)
    ref = run.data.tags.get(tag_keys.ENTRY_POINT)
    if not ref:
        return None
    recorded = run.data.tags.get(VIOLATION_TAG)
    if recorded:
        return violation_note(ref, recorded)
    reason = find_violation(client, run_id)
    return record_violation(settings, client, run_id, ref, reason) if reason else None
