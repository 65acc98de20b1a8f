"""End to end: a Job on the fake cluster runs the real trainer, which logs a FINISHED run to MLflow.

Also the ``realcluster`` test: the same submit/wait/logs/cancel path against a real cluster when
``KUBECONFIG`` points at one (kind or EKS) — skipped otherwise. See the README, "Running on Kubernetes".
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from evals.fakes.kube import FakeKube
from tools.context import build_context
from tools.core.settings import Settings
from tools.core.specs import Resources, TrainingSpec
from tools.core.tracking import create_run


def _spec(session_id: str, **overrides: object) -> TrainingSpec:
    fields: dict[str, object] = dict(
        dataset="breast_cancer",
        version="1",
        model_family="logistic_regression",
        metric="roc_auc",
        experiment="k8s-e2e",
        session_id=session_id,
        timeout_seconds=300,
        resources=Resources(cpu=1, memory_gb=1),
    )
    return TrainingSpec(**{**fields, **overrides})  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_job_on_the_fake_cluster_trains_and_logs_a_finished_run(tmp_path: Path) -> None:
    with FakeKube() as kube:
        settings = Settings(home=tmp_path, runtime="kubernetes", k8s_kubeconfig=kube.kubeconfig_path)
        ctx = build_context(settings, session_id="e2e-thread")
        try:
            spec = _spec(ctx.session_id)
            spec = spec.model_copy(update={"run_id": create_run(ctx, spec, "single")})
            info = ctx.runtime.submit(spec)
            final = ctx.runtime.wait([info.job_id], timeout=240)[0]
            assert final.state == "succeeded", f"{final.reason}\n{ctx.runtime.logs(info.job_id)}"
            assert [j.job_id for j in ctx.runtime.list_jobs(ctx.session_id)] == [info.job_id]
            run = ctx.tracking.get_run(spec.run_id or "")
        finally:
            ctx.close()
        assert len(kube.jobs()) == 1 and kube.requests["create jobs"] == 1
    assert run.info.status == "FINISHED"
    assert "roc_auc" in run.data.metrics
    tags = run.data.tags
    assert tags["expagent.managed"] == "true" and tags["expagent.session"] == "e2e-thread"
    assert (tags["dataset.name"], tags["dataset.version"]) == ("breast_cancer", "1")


def _real_kubeconfig() -> str | None:
    path = os.environ.get("KUBECONFIG")
    if not path or not Path(path).exists():
        return None
    text = Path(path).read_text()
    return None if "expagent-fake" in text else path


@pytest.mark.realcluster
@pytest.mark.timeout(900)
@pytest.mark.skipif(_real_kubeconfig() is None, reason="KUBECONFIG does not point at a real cluster")
def test_real_cluster_submit_wait_logs_cancel(tmp_path: Path) -> None:
    # Needs: the trainer image pushed (EXPAGENT_K8S_IMAGE), the namespace, and a tracking server pods
    # can reach (MLFLOW_TRACKING_URI). Uses the context from EXPAGENT_K8S_CONTEXT or the current one.
    from tools.runtime.kubernetes import KubernetesRuntime

    settings = Settings(home=tmp_path, runtime="kubernetes")
    runtime = KubernetesRuntime.from_settings(settings)
    assert not runtime.notices, runtime.notices  # a local tracking store cannot work on a real cluster
    ctx = build_context(settings, session_id=f"realcluster-{uuid.uuid4().hex[:8]}", _runtime=runtime)
    try:
        spec = _spec(ctx.session_id)
        done = spec.model_copy(update={"run_id": create_run(ctx, spec, "single")})
        info = runtime.submit(done)
        assert runtime.submit(done).job_id == info.job_id  # idempotent on a real API server too
        final = runtime.wait([info.job_id], timeout=600)[0]
        assert final.state == "succeeded", f"{final.reason}\n{runtime.logs(info.job_id)}"
        assert ctx.tracking.get_run(done.run_id or "").info.status == "FINISHED"

        stopped = spec.model_copy(update={"run_id": create_run(ctx, spec, "single")})
        cancelled = runtime.cancel(runtime.submit(stopped).job_id, "realcluster test", "pytest")
        assert cancelled.state == "cancelled"
        assert ctx.tracking.get_run(stopped.run_id or "").info.status == "KILLED"
    finally:
        ctx.close()
