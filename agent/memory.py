"""Thread memory: what a thread's finished experiment turn leaves for follow-ups to reuse."""

from __future__ import annotations

from agent.state import AgentState, ExperimentRequestDraft, ThreadMemory

_TRAINING_ROLES = frozenset({"baseline", "trial", "single"})


def remember(state: AgentState) -> ThreadMemory | None:
    """Return the memory after this turn, or None when the turn ran nothing (memory unchanged).

    A turn that planned and ran a request records it as the thread's last request with the runs it
    created; a continuation ("3 more trials") keeps the request and adds the trials.
    """
    plan = state.get("plan")
    memory = state.get("memory") or ThreadMemory()
    runs = state.get("runs", [])
    training = [r.run_id for r in runs if r.role in _TRAINING_ROLES]
    if plan is None or not training and not plan.request.continues_from:
        return None
    r = plan.request
    trials = sum(1 for run in runs if run.role == "trial")
    tuning = next((run.run_id for run in runs if run.role == "tuning"), None)
    if r.continues_from:
        return memory.model_copy(
            update={
                "run_ids": list(dict.fromkeys([*memory.run_ids, *training])),
                "trials_done": memory.trials_done + trials,
                "tuning_run_id": tuning or memory.tuning_run_id,
                "best_run_id": state.get("best_run_id") or memory.best_run_id,
                "proposal": None,
            }
        )
    request = ExperimentRequestDraft(
        dataset=r.dataset, version=r.version, model_family=r.model_family, entry_point=r.entry_point,
        metric=r.metric,
        experiment=r.experiment, runtime=r.runtime, namespace=r.namespace, trials=r.trials,
        parallelism=r.parallelism, wall_minutes=r.wall_minutes, patience=r.patience, target=r.target,
        seed=r.seed, params=dict(r.params), search_space=dict(r.search_space),
        cpus_per_run=r.resources.cpu, memory_gb_per_run=r.resources.memory_gb,
        gpus_per_run=r.resources.gpu or None,
    )  # fmt: skip
    return ThreadMemory(
        request=request,
        experiment=r.experiment,
        baseline_run_id=state.get("baseline_run_id"),
        best_run_id=state.get("best_run_id"),
        tuning_run_id=tuning,
        run_ids=[*memory.run_ids, *training],
        trials_done=trials,
    )
