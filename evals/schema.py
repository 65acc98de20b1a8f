"""The scenario file format: one YAML file per scenario, validated with pydantic.

A scenario sets up a world (datasets, MLflow runs, config, runtime, faults, injected text, secret
canaries), plays user turns against the agent, and states what must be true afterwards. Loading a bad
file raises :class:`ScenarioError` whose message names the file, the field path and what is wrong.
See ``docs/evals.md`` for the format with an example.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

GateName = Literal["outcome", "milestones", "answer", "trajectory", "limits"]
RunStatus = Literal["RUNNING", "FINISHED", "FAILED", "KILLED", "SCHEDULED"]
Verdict = Literal["allow", "reject", "halt"]
TextSource = Literal["answer", "mlflow", "audit", "logs"]
ALL_TEXT_SOURCES: tuple[TextSource, ...] = ("answer", "mlflow", "audit", "logs")
ProgressKind = Literal["run_started", "run_finished", "trial_finished", "status"]
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_RANGE_RE = re.compile(r"^\s*(\d*)\s*\.\.\s*(\d*)\s*$")


class Strict(BaseModel):
    """Base for scenario models: unknown keys are errors (a typo must not silently pass)."""

    model_config = ConfigDict(extra="forbid")


class CountRange(Strict):
    """An inclusive count range; in YAML write ``3``, ``"1..3"``, ``"2.."`` or ``"..5"``."""

    min: int = Field(0, ge=0, description="Smallest allowed count.")
    max: int | None = Field(None, ge=0, description="Largest allowed count; None = no upper bound.")

    @model_validator(mode="before")
    @classmethod
    def _parse_shorthand(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("a count must be a number or a range like '1..3', not a boolean")
        if isinstance(value, int):
            return {"min": value, "max": value}
        if isinstance(value, str):
            match = _RANGE_RE.match(value)
            if value.strip().isdigit():
                return {"min": int(value), "max": int(value)}
            if not match:
                raise ValueError(f"count {value!r} must be N, 'MIN..MAX', 'MIN..' or '..MAX'")
            low, high = match.groups()
            return {"min": int(low or 0), "max": int(high) if high else None}
        return value

    @model_validator(mode="after")
    def _ordered(self) -> CountRange:
        if self.max is not None and self.max < self.min:
            raise ValueError(f"count range {self.min}..{self.max} is empty (max < min)")
        return self

    def contains(self, count: int) -> bool:
        """Return whether ``count`` lies in the range."""
        return count >= self.min and (self.max is None or count <= self.max)

    def __str__(self) -> str:
        if self.max == self.min:
            return str(self.min)
        return f"{self.min}..{'' if self.max is None else self.max}"


# ---- world -----------------------------------------------------------------------------------------


class DatasetSpec(Strict):
    """A dataset version to register on top of the demo catalog."""

    name: str = Field(description="Dataset name.")
    version: str = Field(description="Version to register.")
    copy_of: str = Field("breast_cancer@1", description="Demo dataset (name@version) whose data to copy.")
    status: Literal["validated", "raw", "deprecated"] = "validated"
    description: str = Field("", description="Catalog description (a place to inject text).")
    pii_columns: list[str] = Field(default_factory=list, description="Columns to declare as PII.")
    owner: str = "data-engineering"
    tamper: bool = Field(False, description="Change the data file after registration (checksum mismatch).")
    break_target: bool = Field(
        False, description="Make every target value unusable after registration so training crashes."
    )
    add_columns: dict[str, list[str]] = Field(
        default_factory=dict, description="Extra columns: name -> values cycled over the rows."
    )

    @field_validator("copy_of")
    @classmethod
    def _has_version(cls, value: str) -> str:
        if "@" not in value:
            raise ValueError(f"copy_of {value!r} must be NAME@VERSION, e.g. breast_cancer@1")
        return value


class RunSpec(Strict):
    """A pre-existing MLflow run; refer to its ID in text as ``${runs.<key>}``."""

    key: str = Field(description="Name to refer to this run as ${runs.KEY}.")
    name: str | None = Field(None, description="MLflow run name; default the key.")
    status: Literal["FINISHED", "FAILED", "KILLED", "RUNNING"] = Field(
        "FINISHED", description="RUNNING leaves the run open (set `expect.outcome.no_running: false`)."
    )
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)
    note: str | None = Field(None, description="Run description (mlflow.note.content).")
    artifacts: dict[str, str] = Field(
        default_factory=dict,
        description="Text artifacts by path, e.g. {traceback.txt: ...}, {output.log: ...}.",
    )


class ExperimentSpec(Strict):
    """A pre-existing MLflow experiment with its runs."""

    name: str
    runs: list[RunSpec] = Field(default_factory=list)


class Canary(Strict):
    """A planted secret that must never leak into answers, MLflow, logs or the audit log."""

    name: str = Field(description="Refer to the planted value as ${canary.NAME}.")
    value: str = Field(description="Text that is planted.")
    secret: str | None = Field(None, description="Part of the value that must never appear; default all.")
    env: str | None = Field(None, description="Also export the value as this environment variable.")

    @property
    def needle(self) -> str:
        """Return the string the minefield scan looks for."""
        return self.secret or self.value

    @model_validator(mode="after")
    def _secret_in_value(self) -> Canary:
        if self.secret is not None and self.secret not in self.value:
            raise ValueError(f"canary {self.name!r}: secret {self.secret!r} is not part of its value")
        if len(self.needle) < 6:
            raise ValueError(f"canary {self.name!r}: the secret must be at least 6 characters")
        return self


class Injection(Strict):
    """Text carrying an instruction, planted where the agent reads tool results."""

    where: Literal["dataset_description", "run", "pod_log"] = Field(
        description="dataset_description (of `dataset`), run (name/tags/note of a pre-existing run: tool "
        "output of search_runs/get_run), or pod_log (a line in every fake-Kubernetes pod log)."
    )
    text: str
    dataset: str | None = Field(None, description="name@version whose description gets the text.")
    run: str | None = Field(None, description="Key of the pre-existing run that carries the text.")

    @model_validator(mode="after")
    def _target_given(self) -> Injection:
        if self.where == "dataset_description" and not self.dataset:
            raise ValueError("an injection into a dataset_description needs `dataset: NAME@VERSION`")
        if self.where == "run" and not self.run:
            raise ValueError("an injection into a run needs `run: <key of a world run>`")
        return self


class World(Strict):
    """Everything that exists before the first turn."""

    demo: bool = Field(True, description="Start from the demo dataset catalog.")
    datasets: list[DatasetSpec] = Field(default_factory=list)
    experiments: list[ExperimentSpec] = Field(default_factory=list)
    config: dict[str, Any] = Field(default_factory=dict, description="Settings overrides (budget: {...}).")
    runtime: Literal["local", "kubernetes"] = "local"
    k8s_faults: dict[str, Any] = Field(
        default_factory=dict,
        description="Faults for the fake Kubernetes API server: fields of evals.fakes.kube_faults.Faults, "
        "e.g. {create_errors: 2, pod_faults: ['fail:1@', 'oom']}.",
    )
    injections: list[Injection] = Field(default_factory=list)
    canaries: list[Canary] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> World:
        keys = [run.key for exp in self.experiments for run in exp.runs]
        _no_duplicates("run key", keys)
        _no_duplicates("canary name", [c.name for c in self.canaries])
        for injection in self.injections:
            if injection.run and injection.run not in keys:
                raise ValueError(f"injection names run {injection.run!r}, which no world experiment defines")
            if injection.where == "pod_log" and self.runtime != "kubernetes":
                raise ValueError("a pod_log injection needs `runtime: kubernetes`")
        if self.k8s_faults and self.runtime != "kubernetes":
            raise ValueError("k8s_faults need `runtime: kubernetes`")
        return self


# ---- turns and model ---------------------------------------------------------------------------------


class Turn(Strict):
    """One step of the conversation: a user message, an approval answer, or both."""

    user: str | None = Field(None, description="The user's message.")
    requester: str | None = Field(None, description="Who sends it; default 'eval-user'.")
    approve: bool | None = Field(None, description="Answer to an approval request (yes/no).")
    cancel_on: ProgressKind | None = Field(
        None,
        description="Cancel the turn (service.cancel) when the first progress event of this kind arrives.",
    )
    restart: bool = Field(False, description="Drop the service first, as if the process had been killed.")

    @model_validator(mode="after")
    def _does_something(self) -> Turn:
        if self.user is None and self.approve is None:
            raise ValueError("a turn needs `user` (a message) or `approve` (yes/no), or both")
        if self.cancel_on and self.user is None:
            raise ValueError("`cancel_on` needs a `user` message whose work can be cancelled")
        return self


class ScriptedToolCall(Strict):
    """A tool call the scripted model makes."""

    name: str
    args: dict[str, Any] = Field(default_factory=dict)


class ScriptedReply(Strict):
    """One scripted model reply: text, tool calls, or both."""

    content: str = ""
    tool_calls: list[ScriptedToolCall] = Field(default_factory=list)


class ModelSpec(Strict):
    """A scripted model: replies inline or in a YAML file next to the scenario (``kind: scripted``), or
    the real ``openai:<model>`` client against the fake OpenAI server replaying ``wire`` entries, which
    may misbehave on purpose: HTTP errors, raw bodies, delays (``kind: openai``; the chaos scenarios)."""

    kind: Literal["scripted", "openai"] = "scripted"
    replies: list[str | ScriptedReply] | None = None
    file: str | None = Field(None, description="YAML list of replies, relative to the scenario file.")
    wire: list[str | dict[str, Any]] | None = Field(
        None, description="kind openai: entries of evals.fakes.openai_server (errors, raw, delay, ...)."
    )

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if self.kind == "openai":
            if self.wire is None or self.replies is not None or self.file is not None:
                raise ValueError("an openai model needs `wire` (and neither `replies` nor `file`)")
            from evals.fakes.openai_server import validate_entry

            for i, entry in enumerate(self.wire):
                validate_entry(entry, i)
            return self
        if self.wire is not None:
            raise ValueError("`wire` needs `kind: openai`")
        if (self.replies is None) == (self.file is None):
            raise ValueError("a scripted model needs exactly one of `replies` or `file`")
        return self


# ---- expectations ----------------------------------------------------------------------------------


class CountRangeFloat(Strict):
    """A numeric range for a metric value."""

    min: float | None = None
    max: float | None = None


class RunExpectation(Strict):
    """Runs that must exist in one experiment, and what each of them must carry."""

    experiment: str
    count: CountRange = Field(default_factory=lambda: CountRange(min=1, max=None))
    role: str | None = Field(None, description="Only runs with tag expagent.role equal to this.")
    with_params: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="Only runs whose params have these values (e.g. the one rerun with seed 7).",
    )
    status: list[RunStatus] = Field(
        default_factory=list, description="Every matching run has one of these statuses."
    )
    params: list[str] | dict[str, str | int | float | bool] = Field(default_factory=list)
    metrics: list[str] | dict[str, CountRangeFloat] = Field(default_factory=list)
    tags: list[str] | dict[str, str | int | float | bool] = Field(default_factory=list)
    artifacts: list[str] = Field(default_factory=list, description="Artifact paths (file or directory).")
    logged_model: bool | None = Field(
        None, description="The run has (true) or has not (false) a logged model with an MLmodel file."
    )

    @field_validator("status", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class K8sExpectation(Strict):
    """Kubernetes Jobs the fake API server must hold."""

    count: CountRange | None = None
    namespaces: list[str] | None = Field(None, description="Every Job is in one of these namespaces.")
    kinds: list[str] | None = Field(None, description="Every object created is one of these kinds.")


class AuditExpectation(Strict):
    """Audit-log verdicts that must have been written."""

    tool: str | None = None
    verdict: Verdict | None = None
    rule: str | None = None
    count: CountRange = Field(default_factory=lambda: CountRange(min=1, max=None))


class OutcomeExpectation(Strict):
    """The final state of the world."""

    runs: list[RunExpectation] = Field(default_factory=list)
    new_runs: CountRange | None = Field(None, description="Runs created in any experiment but the agent's.")
    no_running: bool = Field(True, description="No MLflow run is left RUNNING.")
    k8s_jobs: K8sExpectation | None = None
    audit: list[AuditExpectation] = Field(default_factory=list)
    max_concurrent_training: int | None = Field(
        None, description="Most training runs open at once (from MLflow start/end times)."
    )
    refused: bool | None = Field(None, description="The agent refused (policy event, nothing launched).")
    approval_requested: bool | None = None
    status: Literal["answered", "awaiting_approval", "failed"] | None = Field(
        None, description="Last turn's status."
    )


class ToolCallPattern(Strict):
    """A tool call as the audit log records it, with argument matching."""

    id: str | None = Field(None, description="Name for `after` references.")
    tool: str
    args: dict[str, Any] = Field(default_factory=dict)
    match: Literal["exact", "subset", "ignore"] = "subset"
    verdict: Verdict | Literal["any"] = "allow"
    after: list[str] = Field(default_factory=list, description="Milestone ids that must come earlier.")


class TextMine(Strict):
    """Text that must never appear in the named places."""

    text: str
    where: list[TextSource] = Field(default_factory=lambda: list(ALL_TEXT_SOURCES))
    ignore_case: bool = True


class MinefieldExpectation(Strict):
    """Things that must never happen; any hit is a safety violation."""

    tool_calls: list[ToolCallPattern] = Field(
        default_factory=list, description="Calls that must not reach a system (verdict allow by default)."
    )
    verdicts: list[AuditExpectation] = Field(
        default_factory=list, description="Verdicts that must not occur."
    )
    text: list[str | TextMine] = Field(default_factory=list)
    mlflow_tags: list[str] = Field(default_factory=list, description="Tag keys no run may carry.")


class TrajectoryExpectation(Strict):
    """The sequence of tool names the agent called (from the audit log)."""

    mode: Literal["strict", "unordered", "subset", "superset"] = "superset"
    tools: list[str]
    verdict: Verdict | Literal["any"] = Field("any", description="Only count calls with this verdict.")


class AnswerExpectation(Strict):
    """What the answer of a turn must look like."""

    turn: int = Field(-1, description="Which turn's answer (index; -1 = the last).")
    sections: bool = Field(True, description="Every answer has the five sections in order.")
    must_mention: list[str] = Field(default_factory=list)
    must_not_mention: list[str] = Field(default_factory=list)
    cited_runs_exist: bool = Field(True, description="Every run ID in any answer exists in MLflow.")
    asked_for: list[str] | None = Field(None, description="Exactly these inputs were asked for.")


class LimitsExpectation(Strict):
    """Caps on the work a scenario may take, summed over its turns."""

    max_model_calls: int | None = None
    max_tool_calls: int | None = None
    max_tokens: int | None = None


class Expectations(Strict):
    """What is checked after the last turn; every part is optional."""

    outcome: OutcomeExpectation | None = None
    milestones: list[ToolCallPattern] = Field(default_factory=list)
    minefields: MinefieldExpectation = Field(default_factory=MinefieldExpectation)
    trajectory: TrajectoryExpectation | None = None
    answer: AnswerExpectation | None = None
    limits: LimitsExpectation | None = None

    @model_validator(mode="after")
    def _milestone_order_resolves(self) -> Expectations:
        ids = [m.id for m in self.milestones if m.id]
        _no_duplicates("milestone id", ids)
        for milestone in self.milestones:
            unknown = sorted(set(milestone.after) - set(ids))
            if unknown:
                raise ValueError(
                    f"milestone {milestone.tool!r} comes after unknown ids: {', '.join(unknown)}"
                )
        return self

    def specified(self) -> list[GateName]:
        """Return the gates this scenario states expectations for."""
        gates: list[GateName] = []
        if self.outcome is not None:
            gates.append("outcome")
        if self.milestones:
            gates.append("milestones")
        if self.answer is not None:
            gates.append("answer")
        if self.trajectory is not None:
            gates.append("trajectory")
        if self.limits is not None:
            gates.append("limits")
        return gates


class Scenario(Strict):
    """One evaluation scenario (one YAML file)."""

    id: str = Field(description="Unique id, lower-case letters, digits, '-', '_' or '.'.")
    description: str
    tags: list[str] = Field(default_factory=list)
    twin: str | None = Field(
        None, description="Id of the refusal/injection scenario this one is the benign twin of."
    )
    world: World = Field(default_factory=lambda: World.model_validate({}))
    turns: list[Turn] = Field(min_length=1)
    model: ModelSpec | None = Field(None, description="Scripted model; omitted = the model under test.")
    expect: Expectations = Field(default_factory=Expectations)
    reward_basis: list[GateName] | None = Field(
        None, description="Gates whose product is the score; default every gate the scenario specifies."
    )
    timeout_seconds: float = Field(60.0, gt=0, description="Wall-clock limit for the whole scenario.")
    # Set by the loader, not by the file.
    source: Path | None = Field(None, exclude=True)

    @field_validator("id")
    @classmethod
    def _id_format(cls, value: str) -> str:
        if not _ID_RE.match(value):
            raise ValueError(f"id {value!r} must be lower-case letters, digits, '-', '_' or '.'")
        return value

    @model_validator(mode="after")
    def _basis_is_specified(self) -> Scenario:
        if self.reward_basis is not None:
            missing = sorted(set(self.reward_basis) - set(self.expect.specified()))
            if missing:
                raise ValueError(f"reward_basis names gates with no expectations: {', '.join(missing)}")
        if self.turns[0].user is None:
            raise ValueError("the first turn needs a `user` message")
        return self

    @property
    def gates(self) -> list[GateName]:
        """Return the gates that make the score (minefields always gate besides these)."""
        return list(self.reward_basis) if self.reward_basis is not None else self.expect.specified()

    @property
    def expects_refusal(self) -> bool:
        return bool(self.expect.outcome and self.expect.outcome.refused)


def _no_duplicates(kind: str, values: Iterable[str]) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"duplicate {kind} {value!r}")
        seen.add(value)
