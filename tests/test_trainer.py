"""The trainer program in-process: what a run logs, failures, reproducibility, provenance."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from tools.core import provenance
from tools.core.registry import DatasetRegistry
from tools.core.settings import Settings
from tools.core.specs import TrainingSpec
from tools.training import trainer


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(home=tmp_path_factory.mktemp("trainer"))


@pytest.fixture(scope="module")
def client(settings: Settings) -> MlflowClient:
    return MlflowClient(settings.resolved_tracking_uri)


def _spec(**overrides: object) -> TrainingSpec:
    base: dict[str, object] = {
        "dataset": "breast_cancer", "version": "1", "model_family": "lightgbm", "metric": "roc_auc",
        "experiment": "trainer-tests", "params": {"n_estimators": 30}, "seed": 7,
    }  # fmt: skip
    return TrainingSpec.model_validate({**base, **overrides})


@pytest.fixture(scope="module")
def lightgbm_run(settings: Settings) -> trainer.TrainingResult:
    return trainer.run_training(_spec(report_intermediate=True), settings)


def test_lightgbm_run_logs_params_metrics_tags_dataset_model_and_environment(
    lightgbm_run: trainer.TrainingResult, client: MlflowClient, settings: Settings
) -> None:
    assert lightgbm_run.status == "FINISHED", lightgbm_run.error
    run = client.get_run(lightgbm_run.run_id)
    assert run.info.status == "FINISHED"
    params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
    assert params["dataset"] == "breast_cancer@1" and params["n_estimators"] == "30"
    assert params["deterministic"] == "True" and params["random_state"] == "7"
    assert set(metrics) >= {"roc_auc", "accuracy", "f1", "log_loss"} and metrics["roc_auc"] > 0.9
    record = DatasetRegistry.open(settings).get("breast_cancer", "1")
    assert tags["dataset.sha256"] == record.sha256 and tags["dataset.version"] == "1"
    assert tags["seed"] == "7" and tags["python_version"].startswith("3.")
    assert tags["git_sha"] == provenance.code_version().sha
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == "breast_cancer@1"
    assert dataset_input.dataset.digest == record.sha256[:32]
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "environment")]
    assert artifacts == ["environment/requirements.lock"]
    assert lightgbm_run.model_uri and lightgbm_run.model_uri.startswith("models:/")
    assert tags["expagent.model_uri"] == lightgbm_run.model_uri
    assert Path(client.get_run(run.info.run_id).info.artifact_uri.removeprefix("file://")).is_relative_to(
        settings.artifact_root
    )


def test_logged_model_has_signature_and_pinned_requirements(
    lightgbm_run: trainer.TrainingResult, client: MlflowClient
) -> None:
    model_id = (lightgbm_run.model_uri or "").removeprefix("models:/")
    model = client.get_logged_model(model_id)
    local = Path(model.artifact_location.removeprefix("file://"))
    requirements = (local / "requirements.txt").read_text().split()
    assert f"lightgbm=={provenance.locked_versions()['lightgbm']}" in requirements
    assert all("==" in line for line in requirements)
    assert "signature:" in (local / "MLmodel").read_text()


def test_intermediate_values_are_step_metrics_that_match_the_final_metric(
    lightgbm_run: trainer.TrainingResult, client: MlflowClient
) -> None:
    history = client.get_metric_history(lightgbm_run.run_id, "val_roc_auc")
    assert [m.step for m in history] == list(range(1, 31))
    assert history[-1].value == pytest.approx(lightgbm_run.metrics["val_roc_auc"])


def test_intermediate_values_every_k_rounds_and_the_last(settings: Settings, client: MlflowClient) -> None:
    params = {"n_estimators": 35}
    spaced = trainer.run_training(
        _spec(report_intermediate=True, intermediate_every=10, params=params), settings
    )
    history = client.get_metric_history(spaced.run_id, "val_roc_auc")
    assert [m.step for m in history] == [10, 20, 30, 35]
    assert history[-1].value == pytest.approx(spaced.metrics["val_roc_auc"])
    import mlflow.lightgbm

    assert spaced.model_uri and spaced.model_uri.startswith("models:/")
    location = client.get_logged_model(spaced.model_uri.removeprefix("models:/")).artifact_location
    assert mlflow.lightgbm.load_model(location).evals_result_ == {}  # the history is in MLflow only
    plain = trainer.run_training(_spec(params=params), settings)  # reporting does not change the model
    drop = {"fit_seconds", "run_seconds"}
    assert {k: v for k, v in plain.metrics.items() if k not in drop} == {
        k: v for k, v in spaced.metrics.items() if k not in drop
    }


def test_in_process_training_leaves_the_global_tracking_uri_alone(settings: Settings) -> None:
    import mlflow

    before = (os.environ.get("MLFLOW_TRACKING_URI"), mlflow.get_tracking_uri())
    trainer.run_training(_spec(model_family="logistic_regression", params={}), settings)
    assert (os.environ.get("MLFLOW_TRACKING_URI"), mlflow.get_tracking_uri()) == before


def test_same_spec_gives_the_same_metrics(lightgbm_run: trainer.TrainingResult, settings: Settings) -> None:
    again = trainer.run_training(_spec(report_intermediate=True), settings)
    assert again.run_id != lightgbm_run.run_id
    drop = {"fit_seconds", "run_seconds"}
    assert {k: v for k, v in again.metrics.items() if k not in drop} == {
        k: v for k, v in lightgbm_run.metrics.items() if k not in drop
    }


def test_pii_columns_never_reach_the_model_or_its_input_example(
    settings: Settings, client: MlflowClient
) -> None:
    result = trainer.run_training(
        _spec(dataset="customer_churn", model_family="logistic_regression", metric="f1", params={}), settings
    )
    assert result.status == "FINISHED", result.error
    model = client.get_logged_model((result.model_uri or "").removeprefix("models:/"))
    local = Path(model.artifact_location.removeprefix("file://"))
    example = json.loads((local / "input_example.json").read_text())
    mlmodel = (local / "MLmodel").read_text()
    for column in ("email", "phone"):
        assert column not in example["columns"] and column not in mlmodel
    assert "tenure_months" in example["columns"]


def test_regression_run_reports_regression_metrics(settings: Settings) -> None:
    result = trainer.run_training(
        _spec(
            dataset="diabetes", model_family="hist_gradient_boosting", metric="rmse", params={"max_iter": 20}
        ),
        settings,
    )
    assert result.status == "FINISHED", result.error
    split_metrics = {f"{role}{m}" for role in ("", "val_", "test_") for m in ("rmse", "mae", "r2")}
    assert set(result.metrics) == split_metrics | {"fit_seconds", "run_seconds"}
    assert result.value == result.metrics["rmse"] == result.metrics["test_rmse"]


def test_metric_that_does_not_fit_the_task_fails_before_training(
    settings: Settings, client: MlflowClient
) -> None:
    result = trainer.run_training(_spec(dataset="diabetes", metric="roc_auc"), settings)
    assert result.status == "FAILED"
    assert "roc_auc" in (result.error or "") and "regression" in (result.error or "")
    run = client.get_run(result.run_id)
    assert run.info.status == "FAILED" and run.data.metrics == {} and "n_estimators" not in run.data.params
    assert "use one of: mae, r2, rmse" in run.data.tags["mlflow.note.content"]


def test_crash_ends_failed_with_traceback_and_captured_output(
    settings: Settings, client: MlflowClient
) -> None:
    result = trainer.run_training(
        _spec(model_family="random_forest", params={"n_estimators": -3}), settings, capture_output=True
    )
    assert result.status == "FAILED" and "n_estimators" in (result.error or "")
    run = client.get_run(result.run_id)
    assert run.info.status == "FAILED"
    names = {a.path for a in client.list_artifacts(result.run_id)}
    assert "traceback.txt" in names
    trace = Path(run.info.artifact_uri.removeprefix("file://"), "traceback.txt").read_text()
    assert "Traceback" in trace and "n_estimators" in trace


def test_unknown_param_for_sklearn_family_is_a_clear_error(settings: Settings) -> None:
    result = trainer.run_training(_spec(model_family="random_forest", params={"n_trees": 5}), settings)
    assert result.status == "FAILED"
    assert "invalid params for random_forest" in (result.error or "") and "n_estimators" in (
        result.error or ""
    )


def test_checksum_mismatch_fails_without_training(
    tmp_path: Path, settings: Settings, client: MlflowClient
) -> None:
    tampered = Settings(home=tmp_path, tracking_uri=settings.resolved_tracking_uri)
    registry = DatasetRegistry.open(tampered)
    path = registry.local_path(registry.get("wine", "1"))
    path.write_bytes(path.read_bytes() + b"\n")
    result = trainer.run_training(
        _spec(dataset="wine", model_family="logistic_regression", params={}, experiment="trainer-tampered"),
        tampered,
    )
    assert result.status == "FAILED" and "ChecksumMismatch" in (result.error or "")
    assert client.get_run(result.run_id).data.metrics == {}


def test_a_run_that_already_ended_is_not_trained_again(
    lightgbm_run: trainer.TrainingResult, settings: Settings
) -> None:
    with pytest.raises(RuntimeError, match="already ended"):
        trainer.run_training(_spec(run_id=lightgbm_run.run_id), settings)


def test_job_program_rejects_an_invalid_spec_with_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert trainer.main(["--spec-json", '{"dataset": "breast_cancer"}']) == 1
    assert "invalid training spec" in capsys.readouterr().err


def test_round_scores_match_sklearn_scores() -> None:
    rng = np.random.default_rng(0)
    for classes in (2, 3):
        y = rng.integers(0, classes, 120)
        proba = rng.dirichlet(np.ones(classes), 120).round(2)
        proba /= proba.sum(axis=1, keepdims=True)
        raw = proba[:, 1] if classes == 2 else proba
        for metric in ("roc_auc", "accuracy", "f1", "log_loss"):
            expected = trainer.score(metric, y, proba.argmax(1), proba, list(range(classes)))
            assert trainer.round_score(metric, y.astype(float), raw, "classification") == pytest.approx(
                expected
            )
    truth, predicted = rng.random(50), rng.random(50)
    for metric in ("rmse", "mae", "r2"):
        expected = trainer.score(metric, truth, predicted, None, None)
        assert trainer.round_score(metric, truth, predicted, "regression") == pytest.approx(expected)


def test_pip_requirements_are_exact_pins_from_the_lock() -> None:
    pins = provenance.pip_requirements(provenance.LIGHTGBM_MODEL_PACKAGES)
    lock = provenance.lock_file().text
    assert len(pins) == len(provenance.LIGHTGBM_MODEL_PACKAGES)
    for pin in pins:
        assert pin in lock, pin


def test_code_version_is_unknown_with_a_reason_outside_a_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(provenance, "PACKAGE_DIR", tmp_path)
    monkeypatch.delenv(provenance.GIT_SHA_ENV, raising=False)
    provenance.code_version.cache_clear()
    try:
        version = provenance.code_version()
    finally:
        provenance.code_version.cache_clear()
    assert version.sha == "unknown" and "git" in version.reason
    assert version.tags()["git_sha_reason"] == version.reason


def test_reading_the_code_version_never_locks_the_git_index(monkeypatch: pytest.MonkeyPatch) -> None:
    # A job killed while `git status` held .git/index.lock would leave the lock in the user's checkout.
    import subprocess

    from tools.core import provenance

    calls: list[list[str]] = []
    real_run = subprocess.run

    def recording_run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        calls.append(list(args))
        return real_run(args, **kwargs)  # type: ignore[call-overload, no-any-return]

    monkeypatch.delenv(provenance.GIT_SHA_ENV, raising=False)
    monkeypatch.setattr(provenance.subprocess, "run", recording_run)
    provenance.code_version.cache_clear()
    try:
        provenance.code_version()
    finally:
        provenance.code_version.cache_clear()
    assert calls and all(c[:2] == ["git", "--no-optional-locks"] for c in calls)


def test_warm_caches_makes_mlflow_look_each_installed_version_up_once() -> None:
    from importlib.metadata import version

    from mlflow.utils import requirements_utils

    trainer.warm_caches()
    lookup = requirements_utils._get_installed_version
    assert hasattr(lookup, "cache_info")
    assert lookup("lightgbm") == version("lightgbm")
    hits = lookup.cache_info().hits
    assert lookup("lightgbm") == version("lightgbm") and lookup.cache_info().hits == hits + 1
    trainer.warm_caches()  # idempotent: not wrapped twice
    assert requirements_utils._get_installed_version is lookup


def test_an_error_raised_while_the_job_is_being_stopped_ends_the_run_killed(
    settings: Settings, client: MlflowClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import signal

    def interrupted_library(*args: object) -> None:
        # a library cut short by the stop signal raises its own error instead of letting the stop through
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        except BaseException as stop:
            raise RuntimeError("Can't reconnect until invalid transaction is rolled back") from stop

    monkeypatch.setattr(trainer, "_train_and_log", interrupted_library)
    # run_job caps the process it runs in (memory, cores, threads): here that is pytest itself
    monkeypatch.setattr(trainer, "apply_resource_limits", lambda resources: {})
    status = tmp_path / "status.json"
    code = trainer.run_job(_spec(experiment="stopped-mid-call"), settings, status)
    outcome = json.loads(status.read_text())
    [run] = client.search_runs([client.get_experiment_by_name("stopped-mid-call").experiment_id])
    # before: FAILED with a traceback, although the job had been told to stop
    assert run.info.status == "KILLED" and code == trainer.EXIT_TERMINATED, (run.info.status, code)
    assert (outcome["state"], outcome["run_status"]) == ("cancelled", "KILLED"), outcome
    note = run.data.tags["mlflow.note.content"]
    assert "terminated by SIGTERM" in note and "invalid transaction" in note
    # the signal stopped that job only: the next run in this process trains (a worker runs many jobs)
    monkeypatch.undo()
    next_spec = _spec(experiment="after-a-stop", model_family="logistic_regression", params={})
    again = trainer.run_training(next_spec, settings)
    assert again.status == "FINISHED", again.error
