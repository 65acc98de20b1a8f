"""Follow-ups on a run other than the thread's last: "rerun the best one with seed 3", "same as run
8788935a but with max_depth=4", "rerun the baseline with seed 3".

The run is named by the user's words (``agent.references``: the thread's best, first or baseline run, or a run
ID / unique prefix anywhere in MLflow); its request is read from MLflow through the read-only tools
(``get_run``, and ``list_experiments`` for its experiment's name), never from the model: dataset and
version from its tags, family, metric and seed from its params, and the hyperparameters its family
tunes (the keys of the family's search space) as fixed params. The rerun is one run (no tuning) unless
the follow-up asks for trials.
"""

from __future__ import annotations

import re
from typing import Any

from agent.grammar.followups import RERUN_VERB
from agent.references import NAMED_KINDS, ReferenceProblem, RunReference, phrases_of, resolve_runs
from agent.state import ExperimentRequestDraft, ThreadMemory
from agent.tool_calls import call_tool
from tools.context import ToolContext
from tools.core.specs import CLASSIFICATION_METRICS, REGRESSION_METRICS, ModelFamily
from tools.tuning.space import SearchSpaceError, load_search_space

#: references that name a run other than "it" (the thread's last run).
_NAMED = NAMED_KINDS
#: references whose problem stops a follow-up: they name runs the thread does not have ("the best one"
#: before any tuning, "the last 3 runs" after one). A problem with "it" or "both"/"them" is left to the
#: follow-up rules: those words are also ordinary English ("use both splits"), and with no run to repeat
#: the rules say so themselves.
_STOPS = _NAMED | {"last_n"}


#: a rerun of several runs at once ("rerun both", "retrain them", "redo those two"): one at a time only.
_RERUN_SEVERAL = re.compile(rf"\b(?:{RERUN_VERB}|repeat)\s+(?P<refs>{phrases_of(frozenset({'pair'}))})", re.I)


def named_run(text: str, memory: ThreadMemory) -> str | ReferenceProblem | None:
    """Return the one run a follow-up names other than the thread's last, a problem, or None."""
    several = _RERUN_SEVERAL.search(text)
    if several is not None:  # "both" elsewhere is plain English ("use both splits"); after a rerun it is runs
        phrase = several["refs"]
        return ReferenceProblem(f"'{phrase}' names several runs; rerun one at a time", phrase, "pair")
    found = resolve_runs(text, memory, lookup=lambda token: token)  # a prefix is resolved by get_run
    if isinstance(found, ReferenceProblem):
        return found if found.kind in _STOPS else None
    if isinstance(found, RunReference) and "last_n" in found.kinds and len(found.run_ids) > 1:
        return ReferenceProblem(
            f"'{found.phrase}' names {len(found.run_ids)} runs; rerun one at a time", found.phrase, "last_n"
        )
    if not isinstance(found, RunReference) or not _NAMED & set(found.kinds):
        return None
    if len(found.run_ids) != 1:
        return ReferenceProblem(
            f"'{found.phrase}' names {len(found.run_ids)} runs; rerun one at a time", found.phrase
        )
    return found.run_ids[0]


def request_of_run(ctx: ToolContext, run_id: str, memory: ThreadMemory) -> ExperimentRequestDraft | str:
    """Return the request that reruns ``run_id`` as it ran, or a one-line problem for the user."""
    got = call_tool(ctx, "get_run", {"run_id": run_id})
    if not got.ok:
        return f"I could not read run {run_id}: {got.problem}"
    run: dict[str, Any] = got.data
    params, tags = run.get("params", {}), run.get("tags", {})
    family, metric = params.get("model_family"), params.get("metric")
    dataset, version = tags.get("dataset.name"), tags.get("dataset.version")
    if not (family and dataset and version) or metric not in CLASSIFICATION_METRICS | REGRESSION_METRICS:
        return (
            f"run {run['run_id']} does not record its dataset, version, model family and metric (was it "
            "launched by expagent?), so I cannot rerun it; name the request instead"
        )
    experiment = _experiment_name(ctx, str(run.get("experiment_id")), memory)
    return ExperimentRequestDraft(
        dataset=dataset, version=version, model_family=family, metric=metric, experiment=experiment,
        trials=0, seed=_int(params.get("seed")), params=_tuned_params(family, params),
    )  # fmt: skip


def _experiment_name(ctx: ToolContext, experiment_id: str, memory: ThreadMemory) -> str | None:
    listed = call_tool(ctx, "list_experiments", {"max_results": 200})
    if listed.ok:
        for experiment in listed.data.get("experiments", []):
            if str(experiment.get("experiment_id")) == experiment_id:
                return str(experiment["name"])
    return memory.experiment


def _tuned_params(family: ModelFamily, params: dict[str, str]) -> dict[str, Any]:
    """Return the run's values of the hyperparameters its family tunes (what made this run this run)."""
    try:
        keys = set(load_search_space(family, {}))
    except SearchSpaceError:
        return {}
    return {k: _value(v) for k, v in params.items() if k in keys}


def _value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"True": True, "False": False, "None": None}.get(text, text)


def _int(text: str | None) -> int | None:
    try:
        return int(str(text))
    except ValueError:
        return None
