"""Typed graph state: the request, the plan, run records, verification and rollback records.

The models here are the contract between the chat model (intake emits ``IntakeDecision`` as a tool
call named ``record_intake``), the nodes and the front ends. Every field has a description because
the intake schema is sent to the model.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, Literal

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from tools.specs import Metric, ModelFamily, Resources

Intent = Literal["experiment", "question", "cancel", "forbidden", "unknown"]
ForbiddenAction = Literal["deploy", "promote", "stage", "serve", "register_model", "raw_data", "other"]


class ExperimentRequestDraft(BaseModel):
    """What the user asked for so far; any field may be missing. Never invent a dataset version."""

    dataset: str | None = Field(None, description="Registered dataset name, e.g. 'breast_cancer'.")
    version: str | None = Field(
        None, description="Explicit dataset version the user stated, e.g. '1'. Null if not stated."
    )
    dataset_uri: str | None = Field(
        None, description="A raw path or URI the user named instead of a registered dataset."
    )
    model_family: ModelFamily | None = Field(None, description="Model family to train.")
    metric: Metric | None = Field(None, description="Primary metric.")
    experiment: str | None = Field(None, description="MLflow experiment name.")
    runtime: Literal["local", "kubernetes"] | None = Field(None, description="Where runs execute.")
    namespace: str | None = Field(None, description="Kubernetes namespace, when runtime is kubernetes.")
    cpu_hours: float | None = Field(None, description="Compute budget for the whole request, CPU-hours.")
    gpu_hours: float | None = Field(None, description="GPU budget, GPU-hours.")
    gpus_per_run: int | None = Field(None, description="GPUs requested per run.")
    cpus_per_run: float | None = Field(None, description="CPU cores requested per run.")
    memory_gb_per_run: float | None = Field(None, description="Memory per run in GiB.")
    trials: int | None = Field(None, description="Tuning trials after the baseline; 0 = baseline only.")
    parallelism: int | None = Field(None, description="Trials to run at once.")
    wall_minutes: float | None = Field(None, description="Wall-clock limit for the tuning loop, minutes.")
    patience: int | None = Field(None, description="Stop after this many trials without improvement.")
    target: float | None = Field(None, description="Stop once the primary metric reaches this value.")
    seed: int | None = Field(None, description="Random seed.")
    params: dict[str, Any] = Field(default_factory=dict, description="Fixed hyperparameters to use.")
    search_space: dict[str, Any] = Field(
        default_factory=dict, description="Overrides of the tuning search space, by parameter name."
    )


class IntakeDecision(BaseModel):
    """Record what the user's latest message asks for. Call this exactly once per user turn."""

    intent: Intent = Field(
        description=(
            "experiment: train/tune; question: about runs, experiments or datasets; cancel: stop running "
            "work; forbidden: deploy/promote/stage/serve a model or train on raw/unversioned data; "
            "unknown: none of these."
        )
    )
    forbidden_action: ForbiddenAction | None = Field(None, description="What forbidden thing was asked.")
    request: ExperimentRequestDraft = Field(default_factory=ExperimentRequestDraft)
    question: str | None = Field(None, description="The question to answer, for intent 'question'.")
    not_understood: list[str] = Field(
        default_factory=list, description="Parts of the message that could not be interpreted."
    )


class PolicyEvent(BaseModel):
    """One guard verdict worth showing the user (rejections, approvals, halts)."""

    tool: str
    verdict: Literal["allow", "reject", "halt", "approval_required", "approved", "denied"]
    rule: str | None = None
    reason: str


class RunRecord(BaseModel):
    """A run this session launched, as MLflow and the runtime last reported it."""

    run_id: str
    role: Literal["session", "baseline", "tuning", "trial", "single"]
    status: str = Field(description="MLflow status: RUNNING, FINISHED, FAILED or KILLED.")
    job_id: str | None = None
    trial_number: int | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    note: str | None = Field(None, description="Why it failed, was pruned or cancelled.")


class Usage(BaseModel):
    """Model usage for a turn."""

    model_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


def _merge_runs(old: list[RunRecord], new: list[RunRecord]) -> list[RunRecord]:
    """Reducer: upsert run records by run_id, keeping first-seen order."""
    by_id = {r.run_id: r for r in old}
    order = [r.run_id for r in old]
    for r in new:
        if r.run_id not in by_id:
            order.append(r.run_id)
        by_id[r.run_id] = r
    return [by_id[i] for i in order]


class AgentState(TypedDict, total=False):
    """LangGraph state for one conversation thread."""

    messages: Annotated[list[AnyMessage], add_messages]
    intake: IntakeDecision | None
    request: dict[str, Any] | None  # the complete ExperimentRequest (agent.plan models) as JSON
    asked_for: list[str]
    plan: dict[str, Any] | None
    runs: Annotated[list[RunRecord], _merge_runs]
    policy_events: Annotated[list[PolicyEvent], operator.add]
    verification: dict[str, Any] | None
    rollback: dict[str, Any] | None
    answer: str | None
    usage: Usage
