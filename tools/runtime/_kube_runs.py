"""The MLflow side of Kubernetes jobs: failure logs as artifacts, FAILED/KILLED ends, cancellation records.

Kept apart from the runtime so that mlflow is imported only when a job fails or is cancelled (the
success path never touches MLflow here: the trainer ends its own run).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from tools.core.specs import CancellationRecord

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from tools.core.settings import Settings

log = logging.getLogger(__name__)

LOGS_CAPTURED_TAG = "expagent.k8s.logs_captured"
FAILURE_REASON_TAG = "expagent.k8s.failure_reason"
JOB_TAG = "expagent.k8s.job"


class RunRecorder:
    """Writes what the cluster observed onto the job's MLflow run; every method is idempotent."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: MlflowClient | None = None

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            from tools.core.tracking import make_client

            self._client = make_client(self._settings)
        return self._client

    def run_status(self, run_id: str) -> str | None:
        """Return the run's MLflow status (None if it cannot be read)."""
        try:
            return str(self.client.get_run(run_id).info.status)
        except Exception:  # noqa: BLE001 - a status for a message; the caller copes without it
            log.exception("could not read run %s", run_id)
            return None

    def record_failure(self, run_id: str, job_name: str, reason: str, logs: dict[str, str]) -> None:
        """Attach pod logs (once) and the failure reason; end the run FAILED unless it already ended."""
        from mlflow.entities import RunTag

        from tools.core.redact import redact_text
        from tools.core.tracking import end_run

        client = self.client
        tags = client.get_run(run_id).data.tags
        if tags.get(LOGS_CAPTURED_TAG) != "true":
            for pod_name, text in logs.items():
                client.log_text(run_id, redact_text(text), f"kubernetes/{pod_name}.log")
        client.log_batch(
            run_id,
            tags=[
                RunTag(LOGS_CAPTURED_TAG, "true"),
                RunTag(FAILURE_REASON_TAG, reason[:4000]),
                RunTag(JOB_TAG, job_name),
            ],
        )
        end_run(client, run_id, "FAILED", note=f"Kubernetes Job {job_name} failed: {reason}")

    def record_cancellation(self, record: CancellationRecord) -> None:
        """Write ``cancellation.json`` onto the run and end it KILLED (if the trainer has not)."""
        from tools.core.tracking import write_cancellation

        write_cancellation(self.client, record)

    def record_lost(self, run_id: str, job_name: str, reason: str) -> None:
        """End the run KILLED when its Job vanished (deleted outside expagent) before finishing."""
        from tools.core.tracking import end_run

        end_run(self.client, run_id, "KILLED", note=f"Kubernetes Job {job_name} disappeared: {reason}")

    def record_submit_failure(self, run_id: str, reason: str) -> None:
        """End the run FAILED when its Job could not be created (it never ran)."""
        from tools.core.tracking import end_run

        try:
            end_run(self.client, run_id, "FAILED", note=f"the Kubernetes Job was not created: {reason}")
        except Exception:  # noqa: BLE001 - the submit error being raised matters more; log this one
            log.exception("could not end run %s after a failed submission", run_id)
