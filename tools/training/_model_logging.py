"""Logging a fitted model to MLflow: its flavor, signature, PII-free input example and pinned requirements.

Two costs of MLflow's ``log_model`` are avoided here, without changing what is logged (measured on a
100-tree random forest job: ~1.2 -> ~0.7 CPU-s):

- **skops' trusted types.** scikit-learn models are saved with skops, which loads only the types it is
  told to trust; MLflow dumps the model, loads it back with that list and records it in the MLmodel file.
  The list used to come from dumping the model once more just to ask skops for it. Each family's models
  hold a known set of such types (``SKOPS_TYPES``, checked against skops' own answer by the tests); a
  model holding any other type makes MLflow's save fail, and the list is then taken from skops exactly and
  the model saved again. Trusting a type the model does not hold trusts nothing more.
- **MLflow's serving check.** After saving, ``Model.log`` loads the saved model back from disk and predicts
  the input example, only to log a warning if that fails. The saved file was already loaded back (skops
  above; LightGBM's own text format is written by LightGBM), and the example was predicted by the model
  itself for the signature, so that third pass is skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import mlflow
import mlflow.lightgbm
import mlflow.models.utils
import mlflow.sklearn
import pandas as pd
import skops.io
from mlflow.entities import LoggedModelStatus
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from sklearn.pipeline import Pipeline

from tools.core import provenance
from tools.core.specs import TrainingSpec
from tools.training._run_logging import RunTarget

#: what skops does not trust by default in each family's models (a fitted model, with or without the
#: preprocessing pipeline), by family; families not listed (their flavor is not skops, or their types
#: depend on the model) ask skops for the exact list.
SKOPS_TYPES: dict[str, tuple[str, ...]] = {
    "random_forest": ("sklearn.tree._tree.Tree",),
    "hist_gradient_boosting": ("sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",),
    "logistic_regression": ("numpy.dtype",),
}


def log_model(run: RunTarget, spec: TrainingSpec, model: Any, x_example: pd.DataFrame,
              params: dict[str, str]) -> str:  # fmt: skip
    """Log the fitted model with signature, PII-free input example and pinned requirements; return URI."""
    example = x_example.head(5)
    signature = infer_signature(example, model.predict(example))
    use_lightgbm = spec.model_family == "lightgbm" and not isinstance(model, Pipeline)
    packages = {
        "lightgbm": provenance.LIGHTGBM_MODEL_PACKAGES,
        "xgboost": provenance.XGBOOST_MODEL_PACKAGES,
    }.get(spec.model_family or "")
    requirements = provenance.pip_requirements(packages or provenance.SKLEARN_MODEL_PACKAGES)
    common = {"signature": signature, "input_example": example, "run_id": run.run_id,
              "pip_requirements": requirements}  # fmt: skip
    with _without_serving_check():
        if use_lightgbm:
            info = mlflow.lightgbm.log_model(model, model_id=_new_model(run, params), **common)
        else:
            info = _log_sklearn(model, SKOPS_TYPES.get(spec.model_family or ""), run, params, common)
    return str(info.model_uri)


def _new_model(run: RunTarget, params: dict[str, str]) -> str:
    # Created here so the model lands in the run's experiment (the flavors would use the default one).
    logged = mlflow.initialize_logged_model(
        name="model", source_run_id=run.run_id, params=params, experiment_id=run.experiment_id
    )
    return str(logged.model_id)


def exact_skops_types(model: Any) -> list[str]:
    """Return the types in ``model`` that skops does not trust by default (it serialises the model)."""
    return list(skops.io.get_untrusted_types(data=skops.io.dumps(model)))


def _log_sklearn(model: Any, known: tuple[str, ...] | None, run: RunTarget, params: dict[str, str],
                 common: dict[str, Any]) -> Any:  # fmt: skip
    if known is not None:
        model_id = _new_model(run, params)
        try:
            return mlflow.sklearn.log_model(model, skops_trusted_types=list(known), model_id=model_id,
                                            **common)  # fmt: skip
        except MlflowException as error:  # MLflow's message when skops refused a type on loading back
            if "untrusted types" not in str(error):
                raise
            # nothing was uploaded; the attempt stays on the run as a FAILED logged model, and a new one
            # is logged with the exact list
            MlflowClient().finalize_logged_model(model_id, LoggedModelStatus.FAILED)
    trusted, model_id = exact_skops_types(model), _new_model(run, params)
    return mlflow.sklearn.log_model(model, skops_trusted_types=trusted, model_id=model_id, **common)


@contextmanager
def _without_serving_check() -> Iterator[None]:
    """Skip MLflow's reload-and-predict of the input example in ``Model.log`` for the block."""
    # Private MLflow API, used only here. Why: see the module docstring. ``Model.log`` imports
    # ``_validate_serving_input`` from this module when it runs, so replacing the attribute takes effect;
    # if MLflow renames it, nothing is replaced and MLflow checks as before. A job logs from one thread.
    name = "_validate_serving_input"
    original = getattr(mlflow.models.utils, name, None)
    if original is None:
        yield
        return
    setattr(mlflow.models.utils, name, _skipped)
    try:
        yield
    finally:
        setattr(mlflow.models.utils, name, original)


def _skipped(model_uri: Any, serving_input: Any) -> None:
    return None
