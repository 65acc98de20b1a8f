"""Logging a fitted model: skops' trusted types from the family's known list, exact when it falls short;
MLflow's reload-and-predict serving check skipped while the model is logged, and nothing else changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.models
import mlflow.models.utils
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.entities import LoggedModelStatus
from mlflow.tracking import MlflowClient
from sklearn.datasets import load_breast_cancer, load_diabetes

from tools.core.settings import Settings
from tools.core.specs import TrainingSpec
from tools.training import _model_logging, trainer
from tools.training._modeling import build_model


def _spec(**overrides: object) -> TrainingSpec:
    base: dict[str, object] = {
        "dataset": "breast_cancer", "version": "1", "model_family": "random_forest", "metric": "roc_auc",
        "experiment": "model-logging", "params": {"n_estimators": 4}, "seed": 3,
    }  # fmt: skip
    return TrainingSpec.model_validate({**base, **overrides})


def _frames() -> dict[str, tuple[pd.DataFrame, pd.Series[Any]]]:
    xc, yc = load_breast_cancer(return_X_y=True, as_frame=True)
    xr, yr = load_diabetes(return_X_y=True, as_frame=True)
    xt = xc.copy()
    xt["segment"] = np.where(xt.iloc[:, 0] > 14, "large", "small")  # a text column: the pipeline path
    return {"classification": (xc[:120], yc[:120]), "regression": (xr[:120], yr[:120]),
            "text": (xt[:120], yc[:120])}  # fmt: skip


@pytest.mark.parametrize("family", sorted(_model_logging.SKOPS_TYPES))
def test_each_familys_known_skops_types_are_what_skops_finds_in_its_models(family: str) -> None:
    for kind, (x, y) in _frames().items():
        if family == "logistic_regression" and kind == "regression":
            continue
        metric = "rmse" if kind == "regression" else "accuracy"
        params = {"max_iter": 5} if family == "hist_gradient_boosting" else {}
        if family == "random_forest":
            params = {"n_estimators": 2}
        spec = _spec(model_family=family, metric=metric, params=params)
        model = build_model(spec, "regression" if kind == "regression" else "classification", x).fit(x, y)
        assert set(_model_logging.exact_skops_types(model)) == set(_model_logging.SKOPS_TYPES[family]), kind


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(home=tmp_path_factory.mktemp("model-logging"))


def _mlmodel(settings: Settings, model_uri: str) -> tuple[Path, dict[str, Any]]:
    client = MlflowClient(settings.resolved_tracking_uri)
    model = client.get_logged_model(model_uri.removeprefix("models:/"))
    local = Path(model.artifact_location.removeprefix("file://"))
    return local, yaml.safe_load((local / "MLmodel").read_text())


def test_a_model_with_a_type_missing_from_the_list_is_saved_with_skops_exact_list(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(_model_logging.SKOPS_TYPES, "random_forest", ())  # as if a new type appeared
    result = trainer.run_training(_spec(), settings)
    assert result.status == "FINISHED", result.error
    assert result.model_uri is not None
    _, mlmodel = _mlmodel(settings, result.model_uri)
    assert mlmodel["flavors"]["sklearn"]["skops_trusted_types"] == ["sklearn.tree._tree.Tree"]
    client = MlflowClient(settings.resolved_tracking_uri)
    run = client.get_run(result.run_id)
    assert run.outputs is not None
    models = {o.model_id: client.get_logged_model(o.model_id).status for o in run.outputs.model_outputs}
    ready = result.model_uri.removeprefix("models:/")
    assert models.pop(ready) == LoggedModelStatus.READY
    assert list(models.values()) == [LoggedModelStatus.FAILED]  # the refused attempt, recorded as such
    local, _ = _mlmodel(settings, result.model_uri)
    example = mlflow.models.Model.load(str(local)).load_input_example(str(local))
    assert isinstance(example, pd.DataFrame)
    loaded = mlflow.sklearn.load_model(str(local))  # skops, with the recorded trusted types
    assert len(loaded.predict(example)) == len(example) == 5


def test_the_serving_check_is_skipped_while_logging_and_the_example_is_still_logged(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[object] = []
    monkeypatch.setattr(mlflow.models.utils, "_validate_serving_input", lambda **kw: calls.append(kw))
    spy = mlflow.models.utils._validate_serving_input
    for family in ("random_forest", "lightgbm"):
        result = trainer.run_training(_spec(model_family=family, params={"n_estimators": 4}), settings)
        assert result.status == "FINISHED", result.error
        assert result.model_uri is not None
        local, mlmodel = _mlmodel(settings, result.model_uri)
        assert (local / "serving_input_example.json").is_file() and "signature" in mlmodel
        assert mlmodel["saved_input_example_info"]["type"] == "dataframe"
    assert calls == []  # MLflow's reload-and-predict did not run
    assert mlflow.models.utils._validate_serving_input is spy  # and is back afterwards
