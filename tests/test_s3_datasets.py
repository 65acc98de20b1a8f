"""Datasets where Data Engineering keeps them: pinned S3 object versions (CSV and Parquet) against moto's
real S3 HTTP server on 127.0.0.1, read through boto3's standard credential chain.

One server per module; each test uses its own buckets and workspace. What is judged is what a user sees:
MLflow runs (none after a rejection), the audit log, the answer and the CLI's one-line errors.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pandas as pd
import pytest
from graph_support import all_runs, make_settings
from moto.server import ThreadedMotoServer
from typer.testing import CliRunner

from agent.cli import app
from agent.offline import OfflineChatModel
from agent.service import AgentService
from tools.core.registry import ChecksumMismatch, DatasetRecord, DatasetRegistry, InvalidDataset
from tools.core.settings import Settings
from tools.core.specs import DataSource, TrainingSpec
from tools.runtime.forkserver import start_fork_server
from tools.runtime.job_manifest import build_job

# Look like real AWS keys, so a leak would also be caught by anyone grepping for key formats.
ACCESS_KEY_ID = "AKIAZ7S3TESTKEY00042"
SECRET_ACCESS_KEY = "q8Vw3nS3cr3tT3stK3yN0tF0rUs3/InAnyRealAc"  # 40 characters, as AWS issues them
BC_TARGET = "target"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Start moto's S3 server on a free port; point boto3 at it through the standard environment.

    The process-wide fork server is started first, before any credential is set, as in a long-lived
    agent whose credentials change after it started: jobs must still read with the current ones.
    """
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    start_fork_server(f"sqlite:///{tmp_path_factory.mktemp('forkserver')}/absent.db", rehearse=False)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    patch = pytest.MonkeyPatch()
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "EXPAGENT_S3_ENDPOINT_URL"):
        patch.delenv(name, raising=False)
    patch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    patch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
    patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    patch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    patch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    patch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
    try:
        yield boto3.client("s3")
    finally:
        patch.undo()
        server.stop()


@pytest.fixture(scope="module")
def bc_csv(demo_home: Path) -> bytes:
    registry = DatasetRegistry.open(Settings(home=demo_home))
    return registry.local_path(registry.get("breast_cancer", "1")).read_bytes()


def _parquet(csv_bytes: bytes) -> bytes:
    buffer = io.BytesIO()
    pd.read_csv(io.BytesIO(csv_bytes)).to_parquet(buffer, index=False)
    return buffer.getvalue()


def _bucket(s3: Any, name: str, versioning: str | None = "Enabled") -> str:
    s3.create_bucket(Bucket=name)
    if versioning:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": versioning})
    return name


def _put(s3: Any, bucket: str, key: str, body: bytes) -> str | None:
    return s3.put_object(Bucket=bucket, Key=key, Body=body).get("VersionId")


def _workspace(tmp_path: Path, demo_home: Path) -> Settings:
    home = tmp_path / "home"
    home.mkdir(parents=True)
    shutil.copytree(demo_home / "registry", home / "registry")
    return make_settings(home)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _audit(settings: Settings) -> list[dict[str, Any]]:
    path = settings.audit_log_path
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _add_entry(registry: DatasetRegistry, record: DatasetRecord) -> None:
    """Write an entry straight into the catalog, as a hand-edited or external catalog could hold it."""
    registry._add(record)


# ---- registering and reading ----------------------------------------------------------------------


def test_csv_and_parquet_objects_register_pinned_and_read_the_same_rows(
    s3: Any, bc_csv: bytes, tmp_path: Path, demo_home: Path
) -> None:
    bucket = _bucket(s3, "de-curated-read")
    csv_version = _put(s3, bucket, "bc/breast_cancer.csv", bc_csv)
    parquet = _parquet(bc_csv)
    parquet_version = _put(s3, bucket, "bc/breast_cancer.parquet", parquet)
    registry = DatasetRegistry.open(_workspace(tmp_path, demo_home))

    csv_record = registry.register_s3(
        f"s3://{bucket}/bc/breast_cancer.csv", csv_version, "bc_csv", "1", BC_TARGET, sha256=_sha(bc_csv)
    )
    pq_record = registry.register_s3(
        f"s3://{bucket}/bc/breast_cancer.parquet?versionId={parquet_version}", None, "bc_pq", "1", BC_TARGET
    )

    assert (csv_record.uri, csv_record.s3_version_id, csv_record.sha256, csv_record.format) == (
        f"s3://{bucket}/bc/breast_cancer.csv", csv_version, _sha(bc_csv), "csv"
    )  # fmt: skip
    assert (pq_record.s3_version_id, pq_record.sha256, pq_record.format) == (
        parquet_version,
        _sha(parquet),
        "parquet",
    )
    assert pq_record.schema.dtypes == csv_record.schema.dtypes and pq_record.schema.n_rows == 569
    assert pq_record.schema.task == csv_record.schema.task == "classification"
    assert not (registry.data_dir / "bc_csv").exists()  # the data stays in S3
    reopened = DatasetRegistry.open(_workspace(tmp_path / "again", demo_home))  # another process's view
    reopened.catalog_path.write_text(registry.catalog_path.read_text())
    frames = [reopened.load_frame(reopened.get(name, "1")) for name in ("bc_csv", "bc_pq")]
    pd.testing.assert_frame_equal(frames[0], frames[1], check_dtype=False)
    assert frames[0].shape == (569, 31)
    assert registry.problem(csv_record) is None and registry.problem(pq_record) is None


def test_registration_refuses_unversioned_buckets_missing_versions_and_wrong_checksums(
    s3: Any, bc_csv: bytes, tmp_path: Path, demo_home: Path
) -> None:
    versioned = _bucket(s3, "de-curated-reg")
    version = _put(s3, versioned, "bc.csv", bc_csv)
    plain = _bucket(s3, "de-scratch-reg", versioning=None)
    _put(s3, plain, "bc.csv", bc_csv)
    registry = DatasetRegistry.open(_workspace(tmp_path, demo_home))
    before = registry.catalog_path.read_bytes()

    cases = [
        (
            f"s3://{plain}/bc.csv",
            "null",
            None,
            "bucket 'de-scratch-reg' is not versioned (versioning was never",
        ),
        (f"s3://{versioned}/bc.csv", None, None, "pins no S3 object version ID"),
        (
            f"s3://{versioned}/bc.csv",
            version,
            "0" * 64,
            f"has sha256 {_sha(bc_csv)}, not the {'0' * 64} given",
        ),
        (f"s3://{versioned}/bc.csv", "no-such-version", None, "does not exist in S3"),
        (f"s3://{versioned}/bc.json", version, None, "must name a .csv or .parquet object"),
    ]
    for uri, version_id, sha256, message in cases:
        with pytest.raises(InvalidDataset) as raised:
            registry.register_s3(uri, version_id, "bc_s3", "1", BC_TARGET, sha256=sha256)
        assert message in str(raised.value) and "\n" not in str(raised.value)
    assert registry.catalog_path.read_bytes() == before  # nothing half-written


def test_cli_registers_an_s3_object_and_rejects_an_unversioned_bucket_in_one_line(
    s3: Any, bc_csv: bytes, tmp_path: Path, demo_home: Path
) -> None:
    versioned = _bucket(s3, "de-curated-cli")
    version = _put(s3, versioned, "bc.parquet", _parquet(bc_csv))
    plain = _bucket(s3, "de-scratch-cli", versioning=None)
    _put(s3, plain, "bc.csv", bc_csv)
    home = _workspace(tmp_path, demo_home).home
    runner = CliRunner()

    def register(uri: str, dataset_version: str, object_version: str) -> Any:
        return runner.invoke(app, [
            "datasets", "register", uri, "--name", "bc_s3", "--version", dataset_version,
            "--target", BC_TARGET,
            "--s3-version-id", object_version, "--home", str(home),
        ])  # fmt: skip

    ok = register(f"s3://{versioned}/bc.parquet", "1", version)
    assert ok.exit_code == 0, ok.output
    assert f"object s3://{versioned}/bc.parquet version {version}" in ok.output
    shown = runner.invoke(app, ["datasets", "show", "bc_s3@1", "--json", "--home", str(home)])
    assert json.loads(shown.output)["checksum_ok"] is True

    refused = register(f"s3://{plain}/bc.csv", "2", "some-version")
    assert refused.exit_code == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "bucket 'de-scratch-cli' is not versioned" in lines[0]
    assert "Traceback" not in refused.output
    assert [r.ref for r in DatasetRegistry.open(Settings(home=home)).list() if r.name == "bc_s3"] == [
        "bc_s3@1"
    ]


# ---- training through the agent ------------------------------------------------------------------


def _send(service: AgentService, thread: str, text: str) -> Any:
    result = service.send(thread, text)
    if result.status == "awaiting_approval":
        result = service.resume(thread, approve=True)
    return result


def test_tuning_on_a_pinned_s3_version_runs_and_overwrites_do_not_change_it(
    s3: Any, bc_csv: bytes, tmp_path: Path, demo_home: Path
) -> None:
    bucket = _bucket(s3, "de-curated-tune")
    parquet = _parquet(bc_csv)
    version = _put(s3, bucket, "churn/bc.parquet", parquet)
    settings = _workspace(tmp_path, demo_home)
    DatasetRegistry.open(settings).register_s3(
        f"s3://{bucket}/churn/bc.parquet", version, "bc_s3", "1", BC_TARGET
    )
    # Data Engineering overwrites the key: a new object version; the entry still pins the first one.
    newer = _put(s3, bucket, "churn/bc.parquet", _parquet(bc_csv.replace(b"\n1\n", b"\n0\n", 5)))
    assert newer != version

    service = AgentService(settings, model=OfflineChatModel())
    try:
        result = _send(
            service, "t1",
            "Train a lightgbm baseline on bc_s3@1 optimizing roc_auc, then tune 2 trials, experiment s3-tune",
        )  # fmt: skip
    finally:
        service.close()

    runs = [r for r in all_runs(settings) if r.data.tags.get("expagent.role") in ("baseline", "trial")]
    assert sorted(r.data.tags["expagent.role"] for r in runs) == ["baseline", "trial", "trial"], result.answer
    assert {r.info.status for r in all_runs(settings)} == {"FINISHED"}
    for run in runs:
        assert run.data.tags["dataset.s3_version_id"] == version
        assert run.data.tags["dataset.sha256"] == _sha(parquet)
        assert run.data.tags["dataset.uri"] == f"s3://{bucket}/churn/bc.parquet"
        (dataset_input,) = run.inputs.dataset_inputs
        assert dataset_input.dataset.source_type == "s3"
        assert json.loads(dataset_input.dataset.source)["uri"] == f"s3://{bucket}/churn/bc.parquet"
        assert "roc_auc" in run.data.metrics
    assert result.best_run_id and result.baseline_run_id
    _assert_no_credentials(settings, [result.answer, json.dumps(result.sections)])


def _assert_no_credentials(settings: Settings, texts: list[str]) -> None:
    """Neither key appears in MLflow's store, artifacts, the audit log, job files, checkpoints or answers."""
    files = [p for p in settings.home.rglob("*") if p.is_file()]
    assert any(p.name == "mlflow.db" for p in files) and any(p.name == "audit.jsonl" for p in files)
    for secret in (ACCESS_KEY_ID, SECRET_ACCESS_KEY):
        assert not [p for p in files if secret.encode() in p.read_bytes()]
        assert not [t for t in texts if secret in t]


REJECTIONS = {
    "bc_tampered": "has sha256",
    "bc_noversion": "pins no S3 object version ID",
    "bc_unversioned": "is not versioned (versioning was never enabled)",
    "bc_suspended": "is not versioned (versioning is Suspended)",
    "bc_deleted": "no longer exists in S3",
}


def test_tampered_unpinned_and_unversioned_entries_are_rejected_before_any_run(
    s3: Any, bc_csv: bytes, tmp_path: Path, demo_home: Path
) -> None:
    settings = _workspace(tmp_path, demo_home)
    registry = DatasetRegistry.open(settings)
    bucket = _bucket(s3, "de-curated-reject")
    version = _put(s3, bucket, "bc.csv", bc_csv)
    good = registry.register_s3(f"s3://{bucket}/bc.csv", version, "bc_good", "1", BC_TARGET)
    plain = _bucket(s3, "de-scratch-reject", versioning=None)
    _put(s3, plain, "bc.csv", bc_csv)
    suspended = _bucket(s3, "de-suspended-reject")
    suspended_version = _put(s3, suspended, "bc.csv", bc_csv)
    s3.put_bucket_versioning(Bucket=suspended, VersioningConfiguration={"Status": "Suspended"})
    doomed = _put(s3, bucket, "old.csv", bc_csv)
    s3.delete_object(Bucket=bucket, Key="old.csv", VersionId=doomed)
    entries = {
        "bc_tampered": {"sha256": _sha(bc_csv + b"tampered")},
        "bc_noversion": {"s3_version_id": None},
        "bc_unversioned": {"uri": f"s3://{plain}/bc.csv", "s3_version_id": "null"},
        "bc_suspended": {"uri": f"s3://{suspended}/bc.csv", "s3_version_id": suspended_version},
        "bc_deleted": {"uri": f"s3://{bucket}/old.csv", "s3_version_id": doomed},
    }
    for name, change in entries.items():
        _add_entry(registry, good.model_copy(update={"name": name, **change}))

    service = AgentService(settings, model=OfflineChatModel())
    try:
        answers = {
            name: service.send(
                name, f"Train a lightgbm baseline on {name}@1 optimizing roc_auc, experiment s3-bad"
            )
            for name in REJECTIONS
        }
    finally:
        service.close()

    assert all_runs(settings) == []
    rejects = [e for e in _audit(settings) if e["verdict"] == "reject" and e["rule"] == "versioned_data"]
    for name, message in REJECTIONS.items():
        reasons = [e["reason"] for e in rejects if f"{name}@1" in (e["reason"] or "")]
        assert reasons and all(message in r and "\n" not in r for r in reasons), (name, reasons)
        assert message in answers[name].answer, answers[name].answer
    _assert_no_credentials(settings, [a.answer for a in answers.values()])


# ---- what a job is given -------------------------------------------------------------------------


def test_a_kubernetes_job_is_given_the_pinned_object_not_a_path_or_credentials(tmp_path: Path) -> None:
    source = DataSource(
        uri="s3://de-curated/bc.parquet", version_id="v-123", sha256="a" * 64, format="parquet"
    )
    spec = TrainingSpec(
        dataset="bc_s3", version="1", model_family="lightgbm", metric="roc_auc", experiment="e",
        run_id="b" * 32, data_source=source,
    )  # fmt: skip
    settings = Settings(home=tmp_path, s3_endpoint_url="http://minio.data:9000")
    container = build_job(spec, settings).spec.template.spec.containers[0]
    env = {e.name: e.value for e in container.env}
    assert env["EXPAGENT_DATA_URI"] == source.uri and env["EXPAGENT_DATA_VERSION_ID"] == "v-123"
    assert (
        env["EXPAGENT_DATA_SHA256"] == "a" * 64
        and env["EXPAGENT_S3_ENDPOINT_URL"] == "http://minio.data:9000"
    )
    assert not [name for name in env if name.startswith("AWS_")]
    passed = TrainingSpec.model_validate_json(container.command[container.command.index("--spec-json") + 1])
    assert passed.data_source == source


def test_a_job_refuses_an_object_version_other_than_the_one_it_was_launched_with(
    s3: Any, bc_csv: bytes, tmp_path: Path, demo_home: Path
) -> None:
    from tools.training.job_dataset import pinned_record

    bucket = _bucket(s3, "de-curated-job")
    version = _put(s3, bucket, "bc.csv", bc_csv)
    registry = DatasetRegistry.open(_workspace(tmp_path, demo_home))
    record = registry.register_s3(f"s3://{bucket}/bc.csv", version, "bc_s3", "1", BC_TARGET)
    spec = TrainingSpec(
        dataset="bc_s3", version="1", model_family="lightgbm", metric="roc_auc", experiment="e",
        data_source=DataSource(uri=record.uri, version_id=version, sha256=record.sha256),
    )  # fmt: skip
    assert pinned_record(spec, record) is record
    other = spec.model_copy(
        update={"data_source": spec.data_source.model_copy(update={"version_id": "v-other"})}
    )
    with pytest.raises(ChecksumMismatch, match="is not the object version this run was launched with"):
        pinned_record(other, record)
    with pytest.raises(ChecksumMismatch, match="has sha256"):
        registry.read_verified_bytes(record.model_copy(update={"sha256": "0" * 64}))


@pytest.mark.timeout(300)
def _train_in_a_pod(settings: Settings, session: str, **fields: Any) -> Any:
    """Launch one guarded run of bc_s3@1 on the fake cluster; return its MLflow run once the job succeeded."""
    from tools.context import build_context
    from tools.guard.policy import guarded_call

    ctx = build_context(settings, session_id=session)
    try:
        args = {"dataset": "bc_s3", "version": "1", "model_family": "logistic_regression",
                "resources": {"cpu": 1, "memory_gb": 1}, **fields}  # fmt: skip
        outcome = guarded_call("start_training_run", args, ctx)
        assert outcome.ok, outcome.to_model_message()
        job_id = outcome.result["job_id"]  # type: ignore[index]
        final = ctx.runtime.wait([job_id], timeout=240)[0]
        assert final.state == "succeeded", f"{final.reason}\n{ctx.runtime.logs(job_id)}"
        return ctx.tracking.get_run(outcome.result["run_id"])  # type: ignore[index]
    finally:
        ctx.close()


def test_a_pod_on_the_fake_cluster_reads_the_pinned_object_with_credentials_from_a_secret(
    s3: Any, bc_csv: bytes, tmp_path: Path, demo_home: Path
) -> None:
    from evals.fakes.kube import FakeKube

    bucket = _bucket(s3, "de-curated-pod")
    version = _put(s3, bucket, "bc.csv", bc_csv)
    _put(s3, bucket, "bc.csv", b"overwritten,later\n1,2\n")  # a newer version under the same key
    secrets = {"ml-experiments/aws-creds": {"id": ACCESS_KEY_ID, "secret": SECRET_ACCESS_KEY}}
    with FakeKube(secrets=secrets) as kube:
        # The pod gets no environment of ours: the endpoint comes from the setting, the keys from a Secret,
        # and its workspace is not ours (no shared catalog): the launcher passes the object and its entry.
        settings = make_settings(
            _workspace(tmp_path, demo_home).home, runtime="kubernetes", k8s_kubeconfig=kube.kubeconfig_path,
            s3_endpoint_url=s3.meta.endpoint_url, k8s_pod_home=str(tmp_path / "pod-home"),
            k8s_secret_env={"AWS_ACCESS_KEY_ID": "aws-creds/id", "AWS_SECRET_ACCESS_KEY": "aws-creds/secret"},
        )  # fmt: skip
        DatasetRegistry.open(settings).register_s3(f"s3://{bucket}/bc.csv", version, "bc_s3", "1", BC_TARGET)
        run = _train_in_a_pod(settings, "s3-pod", metric="roc_auc", experiment="s3-pod")
        (pod,) = kube.pods()
    pod_catalog = tmp_path / "pod-home" / "registry" / "catalog.json"
    assert (
        pod_catalog.exists() and "bc_s3" not in pod_catalog.read_text()
    )  # the pod had only the demo catalog
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env["EXPAGENT_DATA_VERSION_ID"]["value"] == version
    assert (
        "value" not in env["AWS_SECRET_ACCESS_KEY"]
        and "secretKeyRef" in env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]
    )
    assert run.info.status == "FINISHED" and run.data.tags["dataset.s3_version_id"] == version
    assert run.data.tags["dataset.sha256"] == _sha(bc_csv) and "roc_auc" in run.data.metrics
    _assert_no_credentials(settings, [json.dumps(pod["spec"])])


def test_keys_pasted_into_a_request_reach_no_sink(
    s3: Any, bc_csv: bytes, tmp_path: Path, demo_home: Path
) -> None:
    bucket = _bucket(s3, "de-curated-keys")
    version = _put(s3, bucket, "bc.csv", bc_csv)
    settings = _workspace(tmp_path, demo_home)
    DatasetRegistry.open(settings).register_s3(f"s3://{bucket}/bc.csv", version, "bc_s3", "1", BC_TARGET)
    request = "Train a logistic_regression baseline on bc_s3@1 optimizing roc_auc, experiment s3-keys"
    pasted = f"aws_access_key_id={ACCESS_KEY_ID} and aws_secret_access_key={SECRET_ACCESS_KEY}"
    service = AgentService(settings, model=OfflineChatModel())
    try:
        # Keys as key=value pairs in a sentence of their own: not an aside (it asks for something it did
        # not understand), so nothing runs; the keys read as params never reach the answer.
        refused = _send(service, "pairs", f"{request}. The bucket needs {pasted}")
        assert all_runs(settings) == [] and "I did not understand" in refused.answer, refused.answer
        # The same pairs inside the request's sentence read as hyperparameters: refused by the allowlist.
        pairs = _send(service, "pairs-inline", f"{request} with {pasted}")
        assert all_runs(settings) == [] and "allowlist" in pairs.answer, pairs.answer
        # Keys as prose next to a valid request: words it did not understand, so nothing runs either;
        # the answer lists them redacted.
        prose = _send(service, "prose", f"{request} (my keys: {ACCESS_KEY_ID} / {SECRET_ACCESS_KEY})")
        assert all_runs(settings) == [] and "REDACTED" in prose.answer, prose.answer
        # The same thread without the keys runs; the session run records the request.
        trained = _send(service, "prose", request)
    finally:
        service.close()
    runs = all_runs(settings)
    assert sorted(r.data.tags.get("expagent.role") for r in runs) == ["baseline", "session"], trained.answer
    assert {r.info.status for r in runs} == {"FINISHED"}
    notes = [r.data.tags.get("mlflow.note.content", "") for r in runs]
    assert any(n.startswith("Request by") and "bc_s3@1" in n for n in notes), notes
    answers = [r.answer + json.dumps(r.sections) for r in (refused, pairs, prose, trained)]
    _assert_no_credentials(settings, answers)


def test_the_model_cannot_choose_the_object_a_job_reads(tmp_path: Path, demo_home: Path) -> None:
    from tools.context import build_context
    from tools.guard.policy import guarded_call

    settings = _workspace(tmp_path, demo_home)
    ctx = build_context(settings, session_id="s3-forged")
    forged = {"uri": "s3://attacker/other.csv", "version_id": "v1", "sha256": "0" * 64}
    args = {
        "dataset": "breast_cancer", "version": "1", "model_family": "logistic_regression",
        "metric": "roc_auc", "experiment": "s3-forged", "data_source": forged,
    }  # fmt: skip
    try:
        outcome = guarded_call("start_training_run", args, ctx)
    finally:
        ctx.close()
    assert outcome.verdict.verdict == "reject" and outcome.verdict.rule == "invalid_arguments"
    assert "data_source" in outcome.verdict.reason and all_runs(settings) == []


PROJECT_SCRIPT = """\
import os
import mlflow, pandas as pd
from sklearn.dummy import DummyClassifier
path = os.environ["EXPAGENT_DATASET_PATH"]
frame = pd.read_parquet(path) if os.environ["EXPAGENT_DATASET_FORMAT"] == "parquet" else pd.read_csv(path)
target = os.environ["EXPAGENT_DATASET_TARGET"]
with mlflow.start_run():
    mlflow.log_param("lr", 0.1)
    mlflow.log_input(mlflow.data.from_pandas(frame, source=os.environ["EXPAGENT_DATASET_URI"], name="d"))
    mlflow.log_metric("val_accuracy", 0.9)
    mlflow.log_metric("rows", len(frame))
    mlflow.set_tag("seen_path", path)
    model = DummyClassifier().fit(frame.drop(columns=[target]), frame[target])
    mlflow.sklearn.log_model(model, name="model", serialization_format="cloudpickle",
                             pip_requirements=["scikit-learn"])
"""


def test_an_entry_point_pod_reads_the_pinned_s3_version_without_the_workspace_catalog(
    s3: Any, bc_csv: bytes, tmp_path: Path, demo_home: Path
) -> None:
    from evals.fakes.kube import FakeKube
    from tools.core.entrypoints import EntryPointRegistry

    bucket = _bucket(s3, "de-curated-project")
    version = _put(s3, bucket, "bc.parquet", _parquet(bc_csv))
    _put(
        s3,
        bucket,
        "bc.parquet",
        _parquet(bc_csv.split(b"\n", 11)[0] + b"\n" + b"\n".join(bc_csv.split(b"\n")[1:11])),
    )
    project = tmp_path / "project"
    project.mkdir()
    (project / "MLproject").write_text(
        "name: tiny\ndocker_env:\n  image: registry.example/tiny:1\nentry_points:\n  main:\n"
        '    parameters:\n      lr: {type: float, default: 0.1}\n    command: "python train.py"\n'
    )
    (project / "expagent.yaml").write_text(f"primary_metric: val_accuracy\nimage_project_dir: {project}\n")
    (project / "train.py").write_text(PROJECT_SCRIPT)
    secrets = {"ml-experiments/aws-creds": {"id": ACCESS_KEY_ID, "secret": SECRET_ACCESS_KEY}}
    with FakeKube(secrets=secrets, grace_seconds=0.5) as kube:
        settings = make_settings(
            _workspace(tmp_path, demo_home).home, runtime="kubernetes", k8s_kubeconfig=kube.kubeconfig_path,
            s3_endpoint_url=s3.meta.endpoint_url, k8s_pod_home=str(tmp_path / "pod-home"),
            k8s_secret_env={"AWS_ACCESS_KEY_ID": "aws-creds/id", "AWS_SECRET_ACCESS_KEY": "aws-creds/secret"},
        )  # fmt: skip
        DatasetRegistry.open(settings).register_s3(
            f"s3://{bucket}/bc.parquet", version, "bc_s3", "1", BC_TARGET
        )
        entry_points = EntryPointRegistry.open(settings)
        ref = entry_points.register(project, "tiny").ref
        entry_points.set_status(ref, "validated", "test: the local dry run is covered elsewhere")
        run = _train_in_a_pod(
            settings, "s3-project-pod", metric="accuracy", experiment="s3-project",
            entry_point={"ref": ref, "entry": "main"},
        )  # fmt: skip
    assert "bc_s3" not in (tmp_path / "pod-home" / "registry" / "catalog.json").read_text()
    assert run.info.status == "FINISHED", run.data.tags.get("mlflow.note.content")
    assert run.data.metrics["rows"] == 569  # the pinned version, not the newer 10-row object
    assert not Path(run.data.tags["seen_path"]).exists()  # the pod's private copy is gone
    (dataset_input,) = run.inputs.dataset_inputs
    assert f"s3://{bucket}/bc.parquet?versionId={version}" in dataset_input.dataset.source
    assert run.data.tags["dataset.s3_version_id"] == version
    _assert_no_credentials(settings, [])
