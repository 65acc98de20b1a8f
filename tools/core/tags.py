"""The MLflow tag keys expagent writes on its runs, and the searches that read them back.

One place for every ``expagent.*`` key: the launcher, the trainer, the tuning loop, rollback and the
answer all agree on what a run is (its session, role, job, trial) by these names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

MANAGED = "expagent.managed"
SESSION = "expagent.session"
ROLE = "expagent.role"
REQUESTER = "expagent.requester"
JOB_ID = "expagent.job_id"
TRIAL_NUMBER = "expagent.trial_number"
MODEL_URI = "expagent.model_uri"
ENTRY_POINT = "expagent.entry_point"
ENTRY_POINT_NAME = "expagent.entry_point.entry"
#: the environment hash an entry point ran in ('current': the agent's venv; 'image:<ref>': its pod image).
ENTRY_POINT_ENV = "expagent.entry_point.env"
ENTRY_POINT_TREE = "expagent.entry_point.tree_sha256"
ENTRY_POINT_COMMIT = "expagent.entry_point.git_commit"
STOP_REASON = "expagent.stop_reason"
BEST_RUN_ID = "expagent.best_run_id"
BASELINE_RUN_ID = "expagent.baseline_run_id"
SELECTED_ON = "expagent.selected_on"
WITHIN_NOISE = "expagent.test_gain_within_noise"
CANCELLED_BY = "expagent.cancelled_by"
CANCEL_KIND = "expagent.cancel_kind"
CANCEL_REASON = "expagent.cancel_reason"
#: a unique ID per run creation on a tracking server, to find a run its retried create made twice.
CREATE_ID = "expagent.create_id"
#: on a run a retried create made twice: the run kept (this one is ended KILLED, role "duplicate").
DUPLICATE_OF = "expagent.duplicate_of"
NOTE = "mlflow.note.content"
PARENT_RUN_ID = "mlflow.parentRunId"

#: the one reserved key a request may set: the run's description (MLflow shows it as the run's note).
USER_SETTABLE_RESERVED = frozenset({NOTE})

#: the roles of runs that train (and so have a job to stop); "session" runs hold a turn's plan/answer.
TRAINING_ROLES = ("baseline", "trial", "single", "tuning")


def _quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def running_session_runs(client: MlflowClient, session_id: str, limit: int = 1000) -> list[Run]:
    """Return every RUNNING run tagged with ``session_id``, in any experiment of the store."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    query = f"tags.`{SESSION}` = {_quoted(session_id)} and attributes.status = 'RUNNING'"
    return list(client.search_runs(experiments, filter_string=query, max_results=limit))


def role_of(run: Run, default: str = "single") -> str:
    """Return the run's ``expagent.role`` tag (``default`` when it has none)."""
    return str(run.data.tags.get(ROLE, default))


def job_id_of(run: Run) -> str | None:
    """Return the job that trains the run (its ``expagent.job_id`` tag), or None."""
    return run.data.tags.get(JOB_ID) or None
