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

from agent.experiment_plan import ExperimentPlan, ExperimentRequest, RollbackRecord, VerificationReport
from tools.core.specs import EntryPointCall, Metric, ModelFamily

Intent = Literal["experiment", "question", "cancel", "forbidden", "unknown"]
RunRole = Literal["session", "baseline", "tuning", "trial", "single"]
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
    entry_point: EntryPointCall | None = Field(
        None,
        description="The user's own registered training project instead of a model family: 'my project "
        "churn-model@3 entry point main' is {ref: 'churn-model@3', entry: 'main'}. Never invent a version.",
    )
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
    warm_start: bool | None = Field(
        None,
        description="False when the user asks not to start tuning from earlier trials ('no warm start').",
    )
    cv_folds: int | None = Field(
        None, description="K-fold cross-validation on the training part ('cv 5 folds'); 0 = off."
    )
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
    follow_up: bool = Field(
        False,
        description=(
            "True when the message changes the thread's last request (see the thread memory): 'rerun "
            "with seed 7', 'same but with random forest', 'try max_depth=5'. `request` then holds only "
            "what changes; everything else is reused from the thread's last request."
        ),
    )
    more_trials: int | None = Field(
        None,
        description=(
            "For 'N more trials' / 'give it N more trials': continue the thread's last tuning with N "
            "more trials and no new baseline."
        ),
    )
    accept_defaults: bool = Field(
        False,
        description="True when the user accepts the defaults the agent proposed ('ok', 'whatever model').",
    )
    readings: list[str] = Field(
        default_factory=list,
        description=(
            "How words were read that the user did not write exactly: a misspelled cue word "
            "(\"read 'trails' as 'trials'\"), a relative change resolved to a value. Shown in the Plan."
        ),
    )


class ThreadMemory(BaseModel):
    """What this thread did, so follow-ups reuse it: the last complete request and the runs it created.

    Spans turns (intake never resets it); a question, a refusal or an unclear message leaves it as it is.
    """

    request: ExperimentRequestDraft | None = Field(
        None, description="The thread's last complete request (every required input set)."
    )
    experiment: str | None = Field(None, description="MLflow experiment of the thread's last runs.")
    baseline_run_id: str | None = Field(None, description="The last baseline run the thread trained.")
    best_run_id: str | None = Field(None, description="The best run of the thread's last request.")
    tuning_run_id: str | None = Field(None, description="Parent run of the thread's last tuning study.")
    run_ids: list[str] = Field(default_factory=list, description="Training runs the thread created.")
    trials_done: int = Field(0, description="Tuning trials run for the current request so far.")
    proposal: ExperimentRequestDraft | None = Field(
        None, description="Defaults the agent proposed for a pending request ('lightgbm … — ok?')."
    )

    def describe(self) -> str:
        """Return the memory as short lines for a prompt (empty when the thread did nothing yet)."""
        lines: list[str] = []
        if self.request is not None:
            fields = self.request.model_dump(exclude_none=True, exclude_defaults=True)
            lines.append("last request: " + ", ".join(f"{k}={v}" for k, v in fields.items()))
        for label, value in (
            ("baseline run", self.baseline_run_id),
            ("best run", self.best_run_id),
            ("tuning run", self.tuning_run_id),
        ):
            if value:
                lines.append(f"{label}: {value}")
        if self.trials_done:
            lines.append(f"tuning trials so far: {self.trials_done}")
        if self.proposal is not None:
            fields = self.proposal.model_dump(exclude_none=True, exclude_defaults=True)
            lines.append(
                "proposed defaults awaiting an answer: " + ", ".join(f"{k}={v}" for k, v in fields.items())
            )
        return "\n".join(lines)


class PolicyEvent(BaseModel):
    """One guard verdict worth showing the user (rejections, approvals, halts)."""

    tool: str
    verdict: Literal["allow", "reject", "halt", "approval_required", "approved", "denied"]
    rule: str | None = None
    reason: str


class RunRecord(BaseModel):
    """A run this session launched, as MLflow and the runtime last reported it."""

    run_id: str
    role: RunRole
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
    http_attempts: int = Field(
        0, description="HTTP requests sent to the model endpoint (retries and failed ones included)."
    )

    def add(self, other: Usage) -> Usage:
        """Return the sum of two usages."""
        return Usage(
            model_calls=self.model_calls + other.model_calls,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            http_attempts=self.http_attempts + other.http_attempts,
        )


class ToolCallRecord(BaseModel):
    """A read-only tool call made while answering a question (shown under Verification)."""

    tool: str = Field(description="Tool name.")
    args: dict[str, Any] = Field(default_factory=dict, description="Arguments, redacted.")
    ok: bool = Field(description="Whether the tool ran and returned a result.")
    summary: str = Field(description="One line about the result or the refusal.")


class Refusal(BaseModel):
    """Why the agent refused a request, and what the user can do instead."""

    action: ForbiddenAction = Field(description="What was asked that the agent may not do.")
    rule: str = Field(description="Policy rule that forbids it.")
    reason: str = Field(description="The policy, in one or two sentences.")
    alternatives: list[str] = Field(default_factory=list, description="What the user can do instead.")


class ApprovalRequest(BaseModel):
    """What the graph asks a human to approve before it launches anything."""

    reasons: list[str] = Field(description="Why approval is needed, one per guard rejection.")
    approval_keys: list[str] = Field(description="Guard approval keys that approving grants.")
    summary: str = Field(description="The plan in one paragraph.")


class ProgressEvent(BaseModel):
    """Something front ends show while runs execute (never stored in graph state)."""

    thread_id: str
    kind: Literal["plan", "run_started", "run_finished", "trial_finished", "status"] = Field(
        description="plan: the plan, sent before anything is launched; the others: run and study events."
    )
    message: str
    run_id: str | None = None


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
    """LangGraph state for one conversation thread.

    ``messages``, ``draft`` and ``memory`` span turns; every other field describes the current turn and
    is reset by intake (``runs`` and ``policy_events`` with ``langgraph.types.Overwrite``).
    """

    messages: Annotated[list[AnyMessage], add_messages]
    directive: Literal["cancel"] | None  # set by the service to skip the model (cancel())
    requester: str | None  # who asked for this turn; runs launched after an approval stay theirs
    turn_started_at: float  # epoch seconds when intake began this turn
    intake: IntakeDecision | None
    draft: ExperimentRequestDraft | None  # inputs gathered while a request is incomplete
    memory: ThreadMemory | None  # what the thread did (spans turns): follow-ups reuse it
    request: ExperimentRequest | None
    asked_for: list[str]
    request_problems: list[str]  # inputs that were given but cannot be used (e.g. metric vs task)
    refusal: Refusal | None
    plan: ExperimentPlan | None
    approvals: list[str]  # approval keys granted in this thread (survive restarts)
    approval_decision: Literal["approved", "denied"] | None
    approver: str | None
    runs: Annotated[list[RunRecord], _merge_runs]
    baseline_run_id: str | None
    best_run_id: str | None
    execution_notes: list[str]  # facts from execute worth telling (tuning not run, cancelled, ...)
    policy_events: Annotated[list[PolicyEvent], operator.add]
    verification: VerificationReport | None
    rollback: RollbackRecord | None
    tool_calls: list[ToolCallRecord]
    model_answer: str | None
    answer: str | None
    usage: Usage


#: the one tool every chat model is bound to at intake; its arguments are an ``IntakeDecision``.
RECORD_INTAKE = "record_intake"


def intake_tool_schema() -> dict[str, Any]:
    """Return the OpenAI function-tool schema of ``record_intake`` (arguments: ``IntakeDecision``)."""
    parameters = IntakeDecision.model_json_schema()
    description = parameters.pop("description", "")
    parameters.pop("title", None)
    return {
        "type": "function",
        "function": {"name": RECORD_INTAKE, "description": description, "parameters": parameters},
    }
