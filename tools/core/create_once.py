"""Create an MLflow run once, even when the REST client retries the create after the answer was lost.

MLflow's REST client retries every HTTP method on a read error (``mlflow.utils.request_utils`` builds
its urllib3 ``Retry`` with ``allowed_methods=None``, POST included). When a tracking server commits a
``runs/create`` and the answer is lost (the server dies before it answers, a proxy drops the
connection), the retry creates a second run with the same tags: the caller gets one, the other stays
behind RUNNING. CI's outage test found two runs of one trial this way.

So every run created on a REST store carries a unique ``expagent.create_id`` tag, and the creator looks
it up right after the create:

- the run the call returned is kept; every other RUNNING run with the same ID is a duplicate: it is
  retagged role ``duplicate`` (so no search for trials, baselines or sessions counts it), tagged
  ``expagent.duplicate_of`` the kept run, described, and ended KILLED. Never deleted: expagent deletes
  nothing in MLflow.
- when the call itself failed because the server could not be reached (its answers were lost), the
  caller is told the create failed, as it did; a run the server made anyway is ``unclaimed``: retagged
  so, described and ended KILLED, never left RUNNING under a trial number the caller has given up.
- when the lookup cannot reach the server (after a failed create the breaker refuses it at once), the
  lookup waits in the workspace's outbox (``tools.core.outbox``) and is replayed with the kept run-state
  writes when the server is back.

A local store (SQLite, a file store) is written in-process, with no retry: nothing is added there.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING

from tools.core import tags as tag_keys
from tools.core.outbox import KeptWrite, keep_if_unreachable
from tools.core.unreachable import is_unreachable

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

#: tracking URI schemes served over MLflow's REST client (the ones whose calls are retried).
_REST_SCHEMES = ("http://", "https://", "databricks")


def is_rest_store(tracking_uri: str) -> bool:
    """Whether ``tracking_uri`` is reached through MLflow's REST client (which retries POSTs)."""
    return str(tracking_uri).startswith(_REST_SCHEMES)


def create_run_once(
    client: MlflowClient, experiment_id: str, tags: dict[str, str], run_name: str | None
) -> Run:
    """Create a RUNNING run in ``experiment_id``; on a REST store, no other run of this create stays RUNNING.

    Args:
        client: The MLflow client to write through (its outbox, if any, keeps a lookup it cannot make).
        experiment_id: The experiment to create the run in.
        tags: The run's tags (``expagent.create_id`` is added on a REST store).
        run_name: The run's name, or None for MLflow's generated one.
    """
    if not is_rest_store(client.tracking_uri):
        return client.create_run(experiment_id, tags=tags, run_name=run_name)
    create_id = uuid.uuid4().hex
    try:
        run = client.create_run(
            experiment_id, tags={**tags, tag_keys.CREATE_ID: create_id}, run_name=run_name
        )
    except Exception as exc:
        if is_unreachable(exc):  # the server may have made the run and lost the answer
            _settle(client, experiment_id, create_id, None)
        raise
    _settle(client, experiment_id, create_id, str(run.info.run_id))
    return run


def _settle(client: MlflowClient, experiment_id: str, create_id: str, keep: str | None) -> None:
    """End the runs of ``create_id`` other than ``keep`` now, or keep that for later if the server is away."""
    try:
        end_extra_runs(client, experiment_id, create_id, keep)
    except Exception as exc:  # noqa: BLE001 - the create's outcome stands; only the check is deferred
        args = {"experiment_id": experiment_id, "create_id": create_id, "keep": keep}
        write = KeptWrite(op="end_extra_runs", run_id=keep or f"(unclaimed, create {create_id})",
                          status="KILLED", args=args)  # fmt: skip
        if not keep_if_unreachable(getattr(client, "outbox", None), exc, write):
            log.warning("could not look up the runs of create %s: %s", create_id, exc)


def end_extra_runs(client: MlflowClient, experiment_id: str, create_id: str, keep: str | None) -> list[str]:
    """End KILLED every RUNNING run tagged ``create_id`` except ``keep``; return their IDs.

    With ``keep`` they are its duplicates; without, nobody holds them (the create was reported failed).
    Raises what MLflow raises (the outbox replays this when the server could not be reached).
    """
    from mlflow.entities import RunTag

    query = f"tags.`{tag_keys.CREATE_ID}` = '{create_id}' and attributes.status = 'RUNNING'"
    found = client.search_runs([experiment_id], filter_string=query, max_results=50)
    ended = []
    for run in found:
        run_id = str(run.info.run_id)
        if run_id == keep:
            continue
        if keep:
            tags = {tag_keys.ROLE: "duplicate", tag_keys.DUPLICATE_OF: keep, tag_keys.NOTE: (
                f"Duplicate of run {keep}: the tracking server made this run, its answer was lost, and "
                "MLflow's client created the run again. Nothing was trained or logged here."
            )}  # fmt: skip
        else:
            tags = {tag_keys.ROLE: "unclaimed", tag_keys.NOTE: (
                "The tracking server made this run but its answer never arrived: the creator was told "
                "the create failed and went on without it. Nothing was trained or logged here."
            )}  # fmt: skip
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        client.set_terminated(run_id, "KILLED")
        log.warning(
            "create %s made run %s that nobody holds (kept: %s): ended KILLED", create_id, run_id, keep
        )
        ended.append(run_id)
    return ended
