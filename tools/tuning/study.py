"""The tuning loop: an Optuna study (TPE, seeded, journal storage) driving trials as guarded training runs.

``run_study`` asks the study for parameters, launches each trial through ``guarded_call(
"start_training_run")`` (a child MLflow run of the tuning run, executed by the runtime), watches the
running trials (pruning on intermediate metrics, the runaway watchdog, budget and wall clock), reads the
finished trial's metric back from MLflow and tells the study. Everything the loop needs to continue
after the agent process dies lives in the study's storage (trial user attributes ``launch`` and
``result``) and in the runtime's job state; calling ``run_study`` again with the same study name
resumes (see ``tools/tuning_resume.py``).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from tools.core.entrypoints import EntryPointRegistry
from tools.core.settings import Settings
from tools.tuning._loop import Progress, StudyLoop
from tools.tuning.budget import BudgetEstimate, TrialCost, estimate_plan
from tools.tuning.records import StudyResult, StudySettings, TrialResult
from tools.tuning.space import load_search_space, project_search_space, supports_pruning
from tools.tuning.warm_start import enqueue

if TYPE_CHECKING:
    import optuna

    from tools.context import ToolContext

__all__ = [
    "BudgetEstimate", "StudyConflict", "StudyResult", "StudySettings", "TrialCost", "TrialResult",
    "estimate_plan", "load_search_space", "open_study", "run_study", "study_storage",
]  # fmt: skip


class StudyConflict(ValueError):
    """A study with this name exists but tunes something else (dataset, family, metric or space)."""


def open_study(settings: StudySettings, storage_url: str) -> optuna.Study:
    """Create or load the study ``settings.study_name`` (TPE seeded, median pruner) in ``storage_url``."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = study_storage(storage_url)
    pruner: optuna.pruners.BasePruner = optuna.pruners.NopPruner()
    if settings.prune and (settings.entry_point is not None or supports_pruning(settings.model_family)):
        # With cross-validation the steps are folds (running CV mean): prunable from the first fold.
        warmup = 0 if settings.cv_folds else settings.prune_warmup_steps
        pruner = optuna.pruners.MedianPruner(
            n_startup_trials=settings.prune_startup_trials, n_warmup_steps=warmup
        )
    seed = resumed_seed(settings.seed, settings.trials_before) if settings.trials_before else settings.seed
    study = optuna.create_study(
        storage=storage, sampler=optuna.samplers.TPESampler(seed=seed), pruner=pruner,
        study_name=settings.study_name, direction=settings.direction, load_if_exists=True,
    )  # fmt: skip
    _check_same_study(study, settings)
    done = len(study.get_trials(deepcopy=False))
    if not done and settings.warm_start:
        enqueue(study, settings.warm_start_trials)
    if done:
        # A resumed study: a sampler seeded as before would replay its first random draws, so trials
        # after the restart would repeat the settings of the first ones. Seed it from the study's seed
        # and how far the study got: still reproducible, never a replay.
        study.sampler = optuna.samplers.TPESampler(seed=resumed_seed(seed, done))
    return study


def resumed_seed(seed: int, trials_so_far: int) -> int:
    """Return the sampler seed of a study resumed after ``trials_so_far`` trials (never ``seed``)."""
    return (seed * 1_000_003 + trials_so_far * 7919 + 1) % (2**31 - 1)


def study_storage(location: str) -> optuna.storages.BaseStorage:
    """Return the Optuna storage at ``location``: a journal file path, or an RDB URL (``sqlite:///…``).

    The journal file (``settings.optuna_storage``, the default) costs ~1 ms per trial's eleven or so
    records where Optuna's fsync'd journal cost ~10 ms and SQLite 35-90 ms (measured). Each record is
    written by one ``write()`` under ``flock`` (``tools.tuning._journal``), so a process killed with SIGKILL
    leaves either the whole record or none of it, and its lock goes with it.
    """
    if "://" in location:
        return _rdb_storage(location)
    from optuna.storages import JournalStorage

    from tools.tuning._journal import FlockJournalBackend

    return JournalStorage(FlockJournalBackend(location))


def _rdb_storage(url: str) -> optuna.storages.RDBStorage:
    """Return Optuna's RDB storage; on SQLite in WAL mode with ``synchronous=NORMAL``.

    WAL lets the loop write while other processes (a resumed agent, the UI) read, and NORMAL skips an
    fsync per commit; both stay durable when the agent process is killed (only an OS crash could lose
    the last commits).
    """
    import optuna
    from sqlalchemy import event

    storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    if url.startswith("sqlite:"):
        event.listen(storage.engine, "connect", _sqlite_pragmas)
        storage.engine.dispose()  # connections opened while creating the tables lack the pragmas
    return storage


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _fingerprint(settings: StudySettings) -> dict[str, Any]:
    keys = ("dataset", "version", "model_family", "metric", "direction", "search_space", "seed")
    return {key: getattr(settings, key) for key in keys}


def _check_same_study(study: optuna.Study, settings: StudySettings) -> None:
    stored = study.user_attrs.get("fingerprint")
    wanted = _fingerprint(settings)
    if stored is None:
        study.set_user_attr("fingerprint", wanted)
        return
    changed = sorted(k for k in wanted if stored.get(k) != wanted[k])
    if changed:
        raise StudyConflict(
            f"study {settings.study_name!r} already exists with different {', '.join(changed)}; "
            "use a new study name for a different tuning request"
        )


def default_search_space(home: Settings, settings: StudySettings) -> dict[str, Any]:
    """Return the stored space of the study's family, or the space its entry point's project declares."""
    if settings.entry_point is None:
        return load_search_space(str(settings.model_family))
    record = EntryPointRegistry.open(home).resolve(settings.entry_point.ref)
    return project_search_space(record, settings.entry_point.entry)


def run_study(
    ctx: ToolContext,
    settings: StudySettings,
    baseline: TrialResult | None = None,
    progress: Progress | None = None,
    cancel_event: threading.Event | None = None,
) -> StudyResult:
    """Run (or resume) the tuning study described by ``settings`` and return what it did.

    Args:
        ctx: Tool context (runtime, MLflow client, approvals of the session).
        settings: The study; ``study_name`` must be the same when resuming after a crash.
        baseline: The finished baseline run (its metric starts the patience count and is compared
            with the best trial; its CPU time counts against the budget).
        progress: Called with ``{"kind", "message", "run_id"}`` dicts as trials start and finish.
        cancel_event: Set it (from any thread) to stop every running trial and end the study.
    """
    if not settings.search_space:
        settings = settings.model_copy(update={"search_space": default_search_space(ctx.settings, settings)})
    study = open_study(settings, ctx.settings.optuna_storage)
    ctx = ctx.with_runtime(settings.runtime)  # trials are launched, watched and cancelled on it
    loop = StudyLoop(ctx, settings, study, baseline, progress, cancel_event or threading.Event())
    return loop.run()
