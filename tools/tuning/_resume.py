"""Continue a tuning study after the agent process died: find its tuning run, replay finished trials,
reconcile trials that were running, and make sure no trial run is left RUNNING in MLflow.

A trial that was RUNNING in the study is matched to its MLflow run (trial user attribute ``launch``, or
the ``expagent.trial_number`` tag under the tuning run) and to its job (the runtime's persisted state):
a live job is adopted (the loop keeps watching it), a job that ended meanwhile is concluded from its
outcome, and a run without a job is ended KILLED with an ``orphan`` cancellation record.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from tools.cleanup import RunToStop, stop_runs
from tools.core import tags as tag_keys
from tools.tuning._trials import InFlight, TrialMonitor
from tools.tuning.budget import TrialCost
from tools.tuning.records import TrialResult
from tools.tuning.runs import (
    create_tuning_run,
    reopen_if_ended,
    running_trial_runs,
    trial_run_by_number,
)
from tools.tuning.space import ParamSpec

if TYPE_CHECKING:
    import optuna

    from tools.context import ToolContext
    from tools.core.specs import JobInfo
    from tools.tuning.records import StudySettings, TrialState

#: who the cancellation records of runs ended while a study is restored name.
_RECOVERED_BY = "tuning loop"
_STATE_NAMES = {"COMPLETE": "COMPLETE", "PRUNED": "PRUNED", "FAIL": "FAIL"}


class StudyHost(Protocol):
    """What recovery needs from the study loop it restores: its study, its records and its trials."""

    ctx: ToolContext
    settings: StudySettings
    study: optuna.Study
    space: dict[str, ParamSpec]
    trials: TrialMonitor
    tuning_run_id: str
    resumed: bool

    def record(self, result: TrialResult, cost: TrialCost) -> None: ...

    def conclude(
        self,
        flight: InFlight,
        state: TrialState,
        value: float | None,
        info: JobInfo | None,
        note: str | None,
        cancelled_by: str | None = None,
    ) -> None: ...

    def abandon(self, trial: optuna.trial.Trial, note: str) -> None: ...

    def note(self, text: str) -> None: ...


def tuning_run_for(loop: StudyHost) -> str:
    """Return the study's tuning run: the stored one (reopened if it ended) or a new one."""
    study, ctx = loop.study, loop.ctx
    run_id = study.user_attrs.get("tuning_run_id") or _find_tuning_run(loop)
    if run_id is None:
        run_id = create_tuning_run(ctx, loop.settings)
        study.set_user_attr("tuning_run_id", run_id)
        return str(run_id)
    study.set_user_attr("tuning_run_id", run_id)
    if reopen_if_ended(ctx.tracking, run_id):
        loop.note(f"tuning run {run_id} was reopened to continue the study")
    return str(run_id)


def _find_tuning_run(loop: StudyHost) -> str | None:
    """Find a tuning run created for this study before its ID could be stored (crash in between)."""
    experiment = loop.ctx.tracking.get_experiment_by_name(loop.settings.experiment)
    if experiment is None:
        return None
    query = f"tags.`optuna.study_name` = '{loop.settings.study_name}' and tags.`{tag_keys.ROLE}` = 'tuning'"
    runs = loop.ctx.tracking.search_runs([experiment.experiment_id], filter_string=query, max_results=1)
    return str(runs[0].info.run_id) if runs else None


def reconcile(loop: StudyHost) -> None:
    """Replay the study's finished trials into the loop and settle the ones left running."""
    import optuna

    trials = loop.study.get_trials(deepcopy=False)
    loop.resumed = bool(trials)
    finished = [t for t in trials if t.state.is_finished()]
    for frozen in sorted(finished, key=lambda t: (t.datetime_complete or datetime.min, t.number)):
        result = stored_result(frozen)
        if result is not None:
            loop.record(result, _cost(result))
        if frozen.state == optuna.trial.TrialState.COMPLETE and frozen.intermediate_values:
            loop.trials.reference_step = max(loop.trials.reference_step, max(frozen.intermediate_values))
    for frozen in trials:
        if frozen.state == optuna.trial.TrialState.RUNNING:
            _reconcile_running(loop, frozen)
    end_stray_trial_runs(loop, keep={f.run_id for f in loop.trials.in_flight.values()})


def stored_result(frozen: optuna.trial.FrozenTrial) -> TrialResult | None:
    """Return the TrialResult recorded on a finished trial (None for one that was never launched)."""
    if frozen.user_attrs.get("launched") is False:
        return None
    if "result" in frozen.user_attrs:
        return TrialResult.model_validate(frozen.user_attrs["result"])
    launch: dict[str, Any] = frozen.user_attrs.get("launch") or {}
    state = _STATE_NAMES.get(frozen.state.name, "FAIL")
    return TrialResult(
        number=frozen.number, run_id=launch.get("run_id"), job_id=launch.get("job_id"), state=state,  # type: ignore[arg-type]
        value=frozen.value, params=launch.get("params") or dict(frozen.params),
        note=frozen.user_attrs.get("note"),
    )  # fmt: skip


def _cost(result: TrialResult) -> TrialCost:
    return TrialCost(
        cpu_seconds=result.cpu_seconds or 0.0,
        wall_seconds=result.wall_seconds or 0.0,
        gpu_seconds=result.gpu_seconds or 0.0,
    )


def _reconcile_running(loop: StudyHost, frozen: optuna.trial.FrozenTrial) -> None:
    import optuna

    trial = optuna.trial.Trial(loop.study, frozen._trial_id)
    if "result" in frozen.user_attrs:  # concluded, but the process died before telling the study
        _tell_stored(loop, trial, TrialResult.model_validate(frozen.user_attrs["result"]))
        return
    launch: dict[str, Any] = frozen.user_attrs.get("launch") or {}
    settings = loop.settings
    run_id = launch.get("run_id") or trial_run_by_number(
        loop.ctx.tracking, settings.experiment, loop.tuning_run_id, frozen.number
    )
    if run_id is None:
        loop.abandon(trial, "it was asked for just before the agent stopped and never launched")
        return
    params = launch.get("params") or {**_fixed_params(loop), **frozen.params}
    job = _find_job(loop.ctx, run_id, launch.get("job_id"))
    flight = InFlight(trial, params, run_id, job.job_id if job else "", started=time.monotonic())
    if job is None:
        note = "its job was not found after the agent restarted (never started or state lost)"
        _write_orphan(loop.ctx, run_id, note)
        loop.conclude(flight, "FAIL", None, None, note, "tuning loop")
    elif job.done:
        loop.trials.finish(flight, job)
    else:
        flight.started = time.monotonic() - _age(job)
        flight.reported_step = max(frozen.intermediate_values, default=0)
        loop.trials.in_flight[job.job_id] = flight
        loop.note(f"trial {frozen.number} was still running after the restart and was adopted")


def _tell_stored(loop: StudyHost, trial: optuna.trial.Trial, result: TrialResult) -> None:
    import optuna

    states = {"COMPLETE": optuna.trial.TrialState.COMPLETE, "PRUNED": optuna.trial.TrialState.PRUNED}
    state = states.get(result.state, optuna.trial.TrialState.FAIL)
    loop.study.tell(trial, result.value if result.state == "COMPLETE" else None, state=state)
    loop.record(result, _cost(result))


def _fixed_params(loop: StudyHost) -> dict[str, Any]:
    return {name: spec.value for name, spec in loop.space.items() if spec.type == "fixed"}


def _age(job: JobInfo) -> float:
    if job.started_at is None:
        return job.wall_seconds or 0.0
    return (datetime.now(UTC) - job.started_at).total_seconds()


def _find_job(ctx: ToolContext, run_id: str, job_id: str | None) -> JobInfo | None:
    """Return the runtime's view of the job that trains ``run_id`` (None if it has none)."""
    runtime = ctx.runtime
    if job_id:
        try:
            return runtime.status(job_id)
        except KeyError:
            return None
    for job in runtime.list_jobs(None):
        if job.run_id == run_id:
            return job
    return None


def _write_orphan(ctx: ToolContext, run_id: str, reason: str) -> None:
    stop_runs(ctx, [RunToStop(run_id, "trial")], reason, _RECOVERED_BY)


def end_stray_trial_runs(loop: StudyHost, keep: set[str]) -> None:
    """End KILLED (orphan record) every trial run under the tuning run still RUNNING but not watched."""
    client, settings = loop.ctx.tracking, loop.settings
    for number, run_id in running_trial_runs(client, settings.experiment, loop.tuning_run_id).items():
        if run_id in keep:
            continue
        reason = f"trial {number}'s run was still RUNNING with no job watching it"
        _write_orphan(loop.ctx, run_id, reason)
        loop.note(f"{reason}; ended KILLED")
