"""Run references in a thread ("it", "the best one", "the last two", short IDs), on a real MLflow store."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest

from agent.references import ReferenceProblem, RunReference, resolve_runs
from tools.core.run_refs import resolve_run_id

A, B, C = "a1b2c3" + "0" * 26, "a1b2c4" + "1" * 26, "9f8e7d" + "2" * 26


@dataclass
class Thread:
    run_ids: list[str] = field(default_factory=lambda: [A, B, C])
    baseline_run_id: str | None = A
    best_run_id: str | None = B


def ids(text: str, thread: Thread | None = None) -> list[str]:
    found = resolve_runs(text, thread if thread is not None else Thread())
    assert isinstance(found, RunReference), found
    return found.run_ids


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("why did it fail?", [C]),
        ("show me the logs of that run", [C]),
        ("whats the score of the best one", [B]),
        ("compare the last two", [B, C]),
        ("compare the last 3 runs", [A, B, C]),
        ("rerun the baseline with seed 7", [A]),
        ("compare it with the baseline", [C, A]),
        ("the latest run pls", [C]),
        ("logs for 9f8e7d", [C]),
        ("how did the first one do", [A]),
        ("compare it with the one before", [C, B]),
        ("compare a1b2c3 and 9F8E7D2", [A, C]),
    ],
)
def test_thread_words_name_the_thread_runs(text: str, want: list[str]) -> None:
    assert ids(text) == want


def test_message_without_a_reference_names_nothing() -> None:
    assert resolve_runs("train lightgbm on wine v1", Thread()) is None
    assert resolve_runs("get me a quick baseline for the wine data", Thread()) is None
    # hex-letter words are English, not run IDs
    assert resolve_runs("please add a decade of facade", Thread()) is None


@pytest.mark.parametrize(
    ("text", "thread", "says"),
    [
        ("why did it fail?", Thread(run_ids=[], baseline_run_id=None, best_run_id=None), "not run anything"),
        ("compare the last two", Thread(run_ids=[A], best_run_id=None), "only 1 run"),
        ("the best one?", Thread(best_run_id=None), "no best run"),
        ("rerun the baseline", Thread(baseline_run_id=None), "no baseline"),
        ("logs of a1b2c", Thread(), None),  # 5 hex chars is not an ID: falls through to nothing
        ("logs of a1b2c3d", Thread(), "no run of this thread"),
    ],
)
def test_unsatisfiable_reference_is_a_problem_not_a_guess(
    text: str, thread: Thread, says: str | None
) -> None:
    found = resolve_runs(text, thread)
    if says is None:
        assert found is None
        return
    assert isinstance(found, ReferenceProblem), found
    assert says in found.message


def test_ambiguous_prefix_in_thread_lists_candidates() -> None:
    found = resolve_runs("logs of a1b2c", Thread(run_ids=[A, "a1b2c9" + "3" * 26]))
    assert found is None  # too short to be an ID
    found = resolve_runs("logs of a1b2c3", Thread(run_ids=[A, "a1b2c3" + "4" * 26]))
    assert isinstance(found, ReferenceProblem)
    assert A in found.message and "give more characters" in found.message


def test_fresh_thread_resolves_short_ids_in_mlflow(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("refs")
    run_ids = [client.create_run(exp).info.run_id for _ in range(2)]
    client.set_terminated(run_ids[0])
    lookup = partial(resolve_run_id, client)
    found = resolve_runs(f"why did {run_ids[1][:8]} fail", None, lookup)
    assert isinstance(found, RunReference) and found.run_ids == [run_ids[1]]
    missing = resolve_runs("why did 0badc0de fail", None, lookup)
    assert isinstance(missing, ReferenceProblem) and "no run ID" in missing.message
    assert isinstance(resolve_runs("why did it fail", None, lookup), ReferenceProblem)
