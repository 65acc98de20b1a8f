"""Model calls and tokens per task, for the embedded offline model and the scripted model.

Each task is one turn on a fresh thread through ``AgentService`` (real MLflow sqlite, real local
runtime) in a temporary workspace; the baseline task trains a real LightGBM run. Tokens come from the
model's ``usage_metadata`` (tiktoken counts for both models here). Run: ``make bench-agent``.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.chat_models import ScriptedChatModel
from agent.service import AgentService, TurnResult
from tools.core.settings import Settings

BASELINE = "Train a lightgbm baseline on breast_cancer version 1 optimizing roc_auc in experiment bench"
REQUEST = {
    "dataset": "breast_cancer",
    "version": "1",
    "model_family": "lightgbm",
    "metric": "roc_auc",
    "experiment": "bench",
}


def _intake(intent: str, **fields: Any) -> dict[str, Any]:
    return {"tool_calls": [{"name": "record_intake", "args": {"intent": intent, **fields}}]}


@dataclass(frozen=True)
class Task:
    """One benchmark turn: the user's text and what a scripted model replies for it."""

    name: str
    text: str
    script: list[Any]


TASKS = [
    Task("baseline run", BASELINE, [_intake("experiment", request=REQUEST)]),
    Task("missing inputs", "Train a model", [_intake("experiment")]),
    Task(
        "deploy refusal",
        "Deploy the best breast_cancer model to production",
        [_intake("forbidden", forbidden_action="deploy")],
    ),
    Task(
        "raw data refusal",
        "Train lightgbm on s3://lake/raw/customers.csv optimizing roc_auc in experiment bench",
        [_intake("experiment", request={"dataset_uri": "s3://lake/raw/customers.csv"})],
    ),
    Task(
        "question (best run)",
        "What is the best run in experiment bench?",
        [
            _intake("question", question="What is the best run in experiment bench?"),
            {"tool_calls": [{"name": "search_runs", "args": {"experiment": "bench", "order_by": "roc_auc"}}]},
            "The best run in experiment bench is the baseline.",
        ],
    ),
    Task("unknown request", "make me a sandwich", [_intake("unknown", not_understood=["a sandwich"])]),
]


def run_task(service: AgentService, task: Task) -> tuple[TurnResult, float]:
    """Run ``task`` on a fresh thread; return the result and its wall time."""
    start = time.perf_counter()
    result = service.send(None, task.text)
    return result, time.perf_counter() - start


def bench(kind: str, home: Path) -> list[tuple[str, TurnResult, float]]:
    """Run every task with the ``offline`` or ``scripted`` model in workspace ``home``."""
    settings = Settings(home=home, trace=False)
    rows = []
    for task in TASKS:
        model = ScriptedChatModel(task.script) if kind == "scripted" else "offline"
        service = AgentService(settings, model=model)
        try:
            result, seconds = run_task(service, task)
        finally:
            service.close()
        if isinstance(model, ScriptedChatModel):
            model.assert_complete()
        rows.append((task.name, result, seconds))
    return rows


def main() -> None:
    header = f"{'model':<9} {'task':<20} {'calls':>5} {'prompt_tok':>10} {'compl_tok':>9} {'seconds':>8}"
    header += "  outcome"
    print(header)
    print("-" * len(header))
    for kind in ("offline", "scripted"):
        with tempfile.TemporaryDirectory(prefix=f"expagent-bench-{kind}-") as home:
            for name, result, seconds in bench(kind, Path(home)):
                u = result.usage
                outcome = f"{result.status}; runs={len(result.runs)}; asked_for={len(result.asked_for)}"
                print(
                    f"{kind:<9} {name:<20} {u.model_calls:>5} {u.prompt_tokens:>10} {u.completion_tokens:>9} "
                    f"{seconds:>8.2f}  {outcome}"
                )


if __name__ == "__main__":
    main()
