"""Helpers for graph/service tests: scripted intake replies, a service on a temp workspace, MLflow reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.chat_models import ScriptedChatModel
from agent.service import AgentService
from tools.core.settings import Budget, Settings
from tools.core.store_seed import seed_new_store

BASELINE_REQUEST = {
    "dataset": "breast_cancer",
    "version": "1",
    "model_family": "logistic_regression",
    "metric": "roc_auc",
    "experiment": "graph-tests",
}


def intake_reply(intent: str = "experiment", **fields: Any) -> dict[str, Any]:
    """Return a scripted model reply that calls record_intake."""
    args: dict[str, Any] = {"intent": intent}
    args.update(fields)
    return {"tool_calls": [{"name": "record_intake", "args": args}]}


def experiment_reply(**request: Any) -> dict[str, Any]:
    """Return a record_intake reply for an experiment request (defaults: a small baseline)."""
    return intake_reply("experiment", request={**BASELINE_REQUEST, **request})


def make_settings(home: Path, **overrides: Any) -> Settings:
    """Return settings on a temp workspace (with a fresh, migrated MLflow store), tracing off unless asked."""
    home.mkdir(parents=True, exist_ok=True)
    seed_new_store(f"sqlite:///{home / 'mlflow.db'}")  # a copy of a migrated empty store, as the product does
    overrides.setdefault("trace", False)
    overrides.setdefault("mlflow_ui_base", "http://mlflow.test")
    return Settings(home=home, **overrides)


def make_service(
    home: Path, replies: list[Any], budget: Budget | None = None, **overrides: Any
) -> tuple[AgentService, ScriptedChatModel]:
    """Return a service driven by a scripted model, and the model (to check it was used up)."""
    model = ScriptedChatModel(replies)
    if budget is not None:
        overrides["budget"] = budget
    return AgentService(make_settings(home, **overrides), model=model), model


def all_runs(settings: Settings) -> list[Any]:
    """Return every MLflow run in the workspace (all experiments)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(settings.resolved_tracking_uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return list(client.search_runs(ids, max_results=1000)) if ids else []


def registered_models(settings: Settings) -> list[Any]:
    """Return the registered models of the workspace."""
    from mlflow.tracking import MlflowClient

    return list(MlflowClient(settings.resolved_tracking_uri).search_registered_models())
