"""The training job program: one reproducible, fully logged training run for a ``TrainingSpec``.

Entry points:
- ``run_training(spec, settings)`` in-process (the local runtime's warm workers fork and call it);
- ``python -m tools.training.trainer --spec FILE.json | --spec-json '{...}'`` — the job program (local
  process and Kubernetes container). Exit 0 success, 1 failure (run FAILED with ``traceback.txt`` and
  ``output.log``), 143 when stopped by SIGTERM or its own deadline (run KILLED with a note).

This module attaches to the run, runs the steps and ends the run; the steps live in
``tools.training._modeling`` (what is trained and how it is scored), ``tools.training._run_logging``
(what is logged, including the per-round ``val_<metric>`` step metrics for pruning),
``tools.training._stop_signals`` (SIGTERM and the deadline) and ``tools.training._output_tee`` (the output
tail of a failed run).

Heavy imports (mlflow, scikit-learn, LightGBM) happen at import on purpose: the local runtime
preloads this module into its fork server so each job starts warm.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import resource
import sys
import time
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

# skops.io first, before anything imports MLflow: skops names its trusted numpy/scipy ufuncs by searching
# every loaded module, ~1.3 s more with MLflow and its dependencies loaded (measured: importing this
# module x0.86 CPU; fork servers and workers import it).
import skops.io  # noqa: F401
from pydantic import ValidationError

from tools.core import provenance, tracking
from tools.core._redacting_client import note_job_error
from tools.core.redact import redact_text
from tools.core.registry import DatasetRegistry
from tools.core.settings import Settings, load_settings
from tools.core.specs import CancellationRecord, TrainingSpec
from tools.training._limits import apply_resource_limits
from tools.training._model_logging import log_model
from tools.training._modeling import build_model, check_spec, evaluate, fit, predict_split, test_predictions
from tools.training._modeling import round_score as round_score  # re-exported: tests compare it with score
from tools.training._modeling import score as score
from tools.training._output_tee import maybe_tee
from tools.training._run_logging import (
    IntermediateReporter,
    RunTarget,
    log_results,
    log_setup,
    log_step,
)
from tools.training._stop_signals import STOP, Interrupted, stop_signals
from tools.training.dataset_cache import load_verified_frame
from tools.training.holdout import Folds, cv_folds, cv_summary, split_rows
from tools.training.job_dataset import catalog_record, pinned_record
from tools.training.job_files import JobOutcome, TrainingResult, write_outcome
from tools.training.project_run import run_project

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from tools.training._modeling import Task

EXIT_OK, EXIT_FAILED, EXIT_TERMINATED = 0, 1, 143
#: known, harmless warnings of MLflow that would only clutter every job log.
_QUIET_WARNINGS = (
    "The specified dataset source can be interpreted in multiple ways",
    "Hint: Inferred schema contains integer column",
)


# ---- the run ---------------------------------------------------------------------------------------


def _train_and_log(
    spec: TrainingSpec, settings: Settings, client: MlflowClient, run: RunTarget
) -> TrainingResult:
    begun = time.monotonic()
    registry = DatasetRegistry.open(settings)
    record = pinned_record(spec, catalog_record(spec, registry))
    task = check_spec(spec, record)
    frame = load_verified_frame(registry, record)  # sha256 verified when read (see dataset_cache)
    target = record.schema.target
    x, y = frame.drop(columns=[target]), frame[target]
    split = split_rows(y, spec.test_size, spec.val_size, spec.seed, stratify=task == "classification")
    x_train, y_train = x.iloc[split.train], y.iloc[split.train]
    x_val, y_val = x.iloc[split.val], y.iloc[split.val]
    x_test, y_test = x.iloc[split.test], y.iloc[split.test]
    model = build_model(spec, task, x_train)
    folds = cv_folds(split, y, spec.cv_folds, task == "classification") if spec.cv_folds else None
    params = log_setup(client, run.run_id, spec, record, model, frame, split, folds)
    # Cross-validation sees the non-test rows only; the final model below is fitted as without it.
    # With folds, the pruner's intermediate values are the running CV mean after each fold.
    cv_metrics = _cross_validate(spec, task, x, y, folds, client, run.run_id) if folds is not None else {}
    reporter = None
    if spec.report_intermediate and folds is None:
        classes = int(y.nunique()) if task == "classification" else 0
        reporter = IntermediateReporter(
            client, run.run_id, spec.metric, task, classes, spec.intermediate_every
        )
    started = time.monotonic()
    fit(model, spec, x_train, y_train, reporter, x_val, y_val)  # pruning sees the validation rows only
    fit_seconds = time.monotonic() - started
    val_metrics = evaluate(model, task, x_val, y_val)
    on_test = predict_split(model, task, x_test)  # one pass: metrics and the predictions artifact
    test_metrics = evaluate(model, task, x_test, y_test, on_test)
    metrics = {
        **{f"val_{k}": v for k, v in val_metrics.items()},
        **{f"test_{k}": v for k, v in test_metrics.items()},
        **cv_metrics,
        **test_metrics,  # the unprefixed names are the test split's (kept so earlier searches still work)
        "fit_seconds": fit_seconds,
    }
    uri = log_model(run, spec, model, x_test, params)
    # What the run took, loading to logging (plans estimate later runs from it: tools.tuning.cost_history).
    metrics["run_seconds"] = time.monotonic() - begun
    # With per-round values, the last one already is the final val_<metric> (same rows, same model).
    logged = {k: v for k, v in metrics.items() if reporter is None or k != reporter.key}
    if folds is not None and spec.report_intermediate:  # its last per-fold value is the mean itself
        logged.pop(f"cv_val_{spec.metric}_mean", None)
    log_results(client, run.run_id, logged, uri, test_predictions(x_test, y_test, on_test))
    return TrainingResult(
        run_id=run.run_id, status="FINISHED", metric=spec.metric, value=metrics[spec.metric],
        metrics=metrics, model_uri=uri,
    )  # fmt: skip


def _cross_validate(
    spec: TrainingSpec, task: Task, x: pd.DataFrame, y: pd.Series, folds: Folds,
    client: MlflowClient, run_id: str,
) -> dict[str, float]:  # fmt: skip
    """Fit a fresh model per fold; return ``cv_val_<metric>_mean``/``_std`` over the held-out rows.

    With ``report_intermediate`` (a pruned study) the running mean of the spec's metric after fold k is
    logged as ``cv_val_<metric>_mean`` at step k (1-based): the pruner's intermediate values, so a bad
    trial can stop after its first folds. The value at the last step is the CV mean itself.
    """
    per_fold: list[dict[str, float]] = []
    key = f"cv_val_{spec.metric}_mean"
    for step, (fit_rows, held_out) in enumerate(folds.pairs(), start=1):
        x_fit, y_fit = x.iloc[fit_rows], y.iloc[fit_rows]
        fold_model = build_model(spec, task, x_fit)
        fit(fold_model, spec, x_fit, y_fit, None, x.iloc[held_out], y.iloc[held_out])
        per_fold.append(evaluate(fold_model, task, x.iloc[held_out], y.iloc[held_out]))
        if spec.report_intermediate:
            log_step(client, run_id, key, cv_summary(per_fold)[key], step)
    return cv_summary(per_fold)


def _attach(spec: TrainingSpec, settings: Settings, client: MlflowClient) -> RunTarget:
    """Return the run to log to: ``spec.run_id`` (which must be RUNNING) or a new run."""
    run_id = spec.run_id
    if run_id is None:
        owner = tracking.RunOwnerRecord(
            settings, client, spec.session_id or "trainer", spec.requester or settings.requester
        )
        run_id = tracking.create_run(owner, spec)
    info = client.get_run(run_id).info
    if info.status != "RUNNING":
        raise RuntimeError(f"run {run_id} has already ended ({info.status}); a run is never trained twice")
    return RunTarget(run_id=run_id, experiment_id=str(info.experiment_id))


@contextmanager
def _fluent_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (used by the flavors' log_model) at ``uri`` for the block only.

    ``mlflow.set_tracking_uri`` also sets ``MLFLOW_TRACKING_URI`` in the environment; both are restored
    so an in-process caller's later settings do not silently resolve to this run's store.
    """
    # Private MLflow API, used only here. Why: log_model and initialize_logged_model take no tracking
    # URI, and the public set_tracking_uri cannot restore "not set" (get_tracking_uri() returns the
    # resolved default). _use_tracking_uri restores the exact previous global. If MLflow renames it,
    # every run ends FAILED with the ImportError as its traceback.txt (and tests/test_trainer.py
    # fails); if its behaviour changes, test_in_process_training_leaves_the_global_tracking_uri_alone
    # fails.
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    previous_env = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with _use_tracking_uri(uri):
            yield
    finally:
        if previous_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous_env


def _end_failed(client: MlflowClient, run_id: str, error: BaseException, trace: str, output: str) -> str:
    message = f"{type(error).__name__}: {error}"
    artifacts = {"traceback.txt": trace}
    if output:
        artifacts["output.log"] = output
    tracking.end_run(client, run_id, "FAILED", note=f"Training failed: {message}", artifacts=artifacts)
    return redact_text(message)


def run_training(spec: TrainingSpec, settings: Settings, capture_output: bool = False) -> TrainingResult:
    """Train and log one run for ``spec`` and end its MLflow run (never left RUNNING).

    Args:
        spec: The run to train; ``spec.run_id`` is the pre-created run to attach to (None: create one).
        settings: Workspace settings (tracking store, registry).
        capture_output: Tee fds 1/2 so a failed run gets its ``output.log`` artifact (job processes only:
            it captures every thread of the calling process).
    """
    started = time.monotonic()
    client = tracking.make_client(settings)
    run = _attach(spec, settings, client)
    run_id = run.run_id
    result: TrainingResult | None = None
    failure: tuple[BaseException, str] | None = None
    uri = settings.resolved_tracking_uri
    with maybe_tee(capture_output) as tee, warnings.catch_warnings():
        for message in _QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        try:
            with _fluent_tracking_uri(uri), STOP.armed_block():
                if spec.entry_point is not None:  # user code: an MLflow Project, contract checked after
                    result = run_project(spec, settings, client, run_id)
                else:
                    result = _train_and_log(spec, settings, client, run)
        except Interrupted as stop:
            failure = (stop, "")
        except Exception as exc:
            failure = (_stopped_by(exc), traceback.format_exc())
    if result is not None:  # kept in the workspace's outbox if the server went away just now
        tracking.end_run(client, run_id, "FINISHED", only_if_running=False)
        return result.model_copy(update={"wall_seconds": time.monotonic() - started})
    assert failure is not None
    error, trace = failure
    note_job_error(uri, str(error))  # the server is gone: end the run at once (outbox), not in a minute
    wall = time.monotonic() - started
    if isinstance(error, Interrupted):
        tracking.end_run(client, run_id, "KILLED", note=f"Training stopped: {error}")
        return TrainingResult(
            run_id=run_id, status="KILLED", metric=spec.metric, wall_seconds=wall, error=str(error),
            stopped_by=error.kind,
        )  # fmt: skip
    message = _end_failed(client, run_id, error, trace, tee.text() if tee else "")
    return TrainingResult(
        run_id=run_id, status="FAILED", metric=spec.metric, wall_seconds=wall, error=message
    )


def _stopped_by(error: Exception) -> BaseException:
    """Return the stop behind ``error`` if the job had been told to stop when it was raised, else ``error``.

    A library that is interrupted mid-call can raise an error of its own instead of letting ``Interrupted``
    through (a database session closed in a ``finally`` after the signal cut its transaction short); the
    run was still stopped by the signal, so it ends KILLED like any stopped run, the error kept in its note.
    """
    if STOP.pending is None:
        return error
    stop = Interrupted(STOP.pending)
    stop.args = (f"{stop.args[0]} (while stopping: {type(error).__name__}: {error})",)
    return stop


# ---- the job program -------------------------------------------------------------------------------

#: modules MLflow imports lazily during a run (found by profiling a first run in a fresh process).
_LAZY_MODULES = (
    "alembic.command", "alembic.config", "git", "netrc", "sqlalchemy.dialects.sqlite",
    "narwhals._pandas_like.dataframe", "narwhals._pandas_like.namespace",
    "narwhals._interchange.dataframe", "pyarrow.pandas_compat", "pyarrow.vendored.version",
    "opentelemetry.sdk.metrics", "mlflow.pyfunc.scoring_server", "mlflow.models.display_utils",
    "mlflow.tracing.export", "mlflow.tracing.processor", "mlflow.store.workspace_aware_mixin",
    "mlflow.store.tracking.sqlalchemy_store",
)  # fmt: skip


def warm_caches() -> None:
    """Do the per-process setup every job needs anyway, so a fork server does it once for all jobs.

    Without it each job pays ~0.5-3 s: MLflow maps every installed distribution to its modules on the
    first log_model, and imports a dozen modules lazily.
    """
    from sqlalchemy.orm import configure_mappers

    for name in _LAZY_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    _warm_mlflow_package_map()
    _memoise_installed_versions()
    configure_mappers()  # SQLAlchemy sets up MLflow's ORM classes on first use otherwise
    provenance.locked_versions()


def _warm_mlflow_package_map() -> None:
    """Build MLflow's distribution -> module map now instead of in the first log_model."""
    # Private MLflow API, used only here. Why: log_model with pip_requirements checks each requirement
    # against the installed packages, and the first check maps every installed distribution to its
    # modules (measured 0.3 s, 0.85 s on a loaded machine). The fork server's rehearsal pays that anyway;
    # this call is what warms processes that only import the trainer before forking (the eval pod pool).
    # If MLflow renames it, the warm-up is skipped and each such job pays it again; nothing fails.
    from mlflow.utils import requirements_utils

    build_map = getattr(requirements_utils, "_init_packages_to_modules_map", None)
    if build_map is not None:
        build_map()


def _memoise_installed_versions() -> None:
    """Make MLflow look up each installed package's version once per process, not once per log_model."""
    # Private MLflow API, used only here. Why: log_model with pip_requirements checks every requirement
    # against the installed version, and each lookup re-reads and parses the package's METADATA file
    # (~0.1 CPU-s a job, measured). A job is one process (forked fresh from the fork server), and the
    # packages installed do not change while it runs. If MLflow renames the function, jobs look the
    # versions up as before; nothing fails.
    from mlflow.utils import requirements_utils

    lookup = getattr(requirements_utils, "_get_installed_version", None)
    if callable(lookup) and not hasattr(lookup, "cache_info"):
        requirements_utils._get_installed_version = functools.lru_cache(maxsize=512)(lookup)


def cpu_seconds() -> float:
    """Return this process's CPU seconds so far (its own and its reaped children's)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def exit_code(result: TrainingResult) -> int:
    """Return the job's exit code for ``result``: 0 finished, 143 stopped, 1 failed."""
    return {"FINISHED": EXIT_OK, "KILLED": EXIT_TERMINATED}.get(result.status, EXIT_FAILED)


def run_job(
    spec: TrainingSpec,
    settings: Settings,
    status_file: Path | None = None,
    job_id: str | None = None,
    cpu_offset: float = 0.0,
) -> int:
    """Run ``spec`` as a job (signal handlers, own deadline, output capture); return the exit code.

    When ``status_file`` is given, the job's outcome (state, exit code, wall and CPU seconds) is written
    there atomically for the local runtime. ``cpu_offset`` is the process's CPU time before the job (a
    warm worker runs several jobs); the job is charged what it used beyond it.
    """
    started = time.monotonic()
    print(f"expagent: resource caps {apply_resource_limits(spec.resources)}", flush=True)
    with stop_signals(spec.timeout_seconds):
        try:
            result = run_training(spec, settings, capture_output=True)
        except Exception as exc:  # the run could not even be attached (store unreachable, ended run)
            traceback.print_exc()
            error = redact_text(f"{type(exc).__name__}: {exc}")
            result = TrainingResult(
                run_id=spec.run_id or "", status="FAILED", metric=spec.metric, error=error
            )
    if result.stopped_by == "timeout":
        _record_timeout(spec, settings, result, job_id, cpu_seconds() - cpu_offset)
    code = exit_code(result)
    print(result.model_dump_json(), flush=True)
    if status_file is not None:
        outcome = JobOutcome.from_result(result, code, time.monotonic() - started, cpu_seconds() - cpu_offset)
        write_outcome(status_file, outcome)
    return code


def _record_timeout(spec: TrainingSpec, settings: Settings, result: TrainingResult, job_id: str | None,
                    cpu_seconds: float) -> None:  # fmt: skip
    record = CancellationRecord(
        run_id=result.run_id, job_id=job_id or os.environ.get("EXPAGENT_JOB_ID", "unknown"),
        cancelled_by="trainer deadline", reason=f"exceeded timeout_seconds={spec.timeout_seconds}",
        cancelled_at=datetime.now(UTC), wall_seconds=result.wall_seconds, cpu_seconds=cpu_seconds,
        resources=spec.resources, kind="timeout",
    )  # fmt: skip
    try:
        tracking.write_cancellation(tracking.make_client(settings), record)
    except Exception:  # the runtime's observer records it instead
        traceback.print_exc()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.training.trainer", description="Run one training job."
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--spec", type=Path, help="TrainingSpec JSON file.")
    source.add_argument("--spec-json", help="TrainingSpec as a JSON string.")
    parser.add_argument("--status-file", type=Path, help="Where to write the job outcome (local runtime).")
    parser.add_argument("--job-id", help="Runtime job ID (for cancellation records).")
    return parser.parse_args(argv)


def _load_spec(args: argparse.Namespace) -> TrainingSpec:
    text = args.spec.read_text(encoding="utf-8") if args.spec else args.spec_json
    return TrainingSpec.model_validate_json(text)


def _fail_unparsable(args: argparse.Namespace, error: Exception) -> int:
    """End the pre-created run FAILED when the spec itself is unusable."""
    print(f"error: invalid training spec: {error}", file=sys.stderr, flush=True)
    try:
        raw = json.loads(args.spec.read_text(encoding="utf-8") if args.spec else args.spec_json)
        run_id = raw.get("run_id") if isinstance(raw, dict) else None
    except (OSError, ValueError):
        run_id = None
    if run_id:
        client = tracking.make_client(load_settings())
        tracking.end_run(client, run_id, "FAILED", note=f"Invalid training spec: {error}",
                         artifacts={"traceback.txt": traceback.format_exc()})  # fmt: skip
    return EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    """Run the job program; return its exit code."""
    args = _parse_args(argv)
    try:
        spec = _load_spec(args)
    except (OSError, ValidationError, ValueError) as exc:
        return _fail_unparsable(args, exc)
    return run_job(spec, load_settings(), args.status_file, args.job_id)


warm_caches()  # at import: the job program needs it anyway, and the fork server preloads this module

if __name__ == "__main__":
    sys.exit(main())
