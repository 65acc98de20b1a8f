"""The guard's verdicts (``Allow``, ``Reject``, ``Halt``) and the rejections several rules share.

``tools.guard.policy`` is the guard and re-exports the verdict types; the rules that produce findings are in
``tools.guard.rules`` (tool arguments) and ``tools.runtime.manifest_checks`` (Kubernetes manifests). Both give
the same rejections for a deployment, a namespace outside the allowlist and a request over a per-run cap,
so those are built here.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from tools.core.settings import Settings


class Allow(BaseModel):
    """The call may run."""

    verdict: Literal["allow"] = "allow"


class Reject(BaseModel):
    """The call may not run; the reason is shown to the model and the user."""

    verdict: Literal["reject"] = "reject"
    rule: str = Field(description="The rule that rejected the call.")
    reason: str = Field(description="What is wrong and what to do instead.")
    approval_key: str | None = Field(
        default=None,
        description="Set when the user may approve it (e.g. 'budget:cpu'); None means never allowed.",
    )


class Halt(BaseModel):
    """Stop the whole turn: nothing more may run."""

    verdict: Literal["halt"] = "halt"
    rule: str
    reason: str


Verdict = Annotated[Allow | Reject | Halt, Field(discriminator="verdict")]
Finding = Reject | Halt


# ---- rejections more than one rule gives -----------------------------------------------------------


def deploy_reject(what: str) -> Reject:
    """Return the rejection of ``what``, which would deploy or promote a model."""
    return Reject(
        rule="no_deployment",
        reason=f"{what} would register, stage, alias, serve or deploy a model. The experimentation "
        "agent never deploys or promotes models; hand the run ID to the deployment owners instead.",
    )


def namespace_reject(namespace: str | None, settings: Settings) -> Reject:
    """Return the rejection of a Kubernetes namespace outside ``settings.namespaces``."""
    allowed = ", ".join(settings.namespaces)
    return Reject(rule="kubernetes", reason=f"namespace {namespace!r} is not allowed; use one of: {allowed}.")


def over_cap(rule: str, what: str, value: float, cap: float, key: str, setting: str) -> Reject:
    """Return the rejection of ``value`` over ``cap`` (set by ``setting``) that approval ``key`` lifts."""
    return Reject(
        rule=rule,
        reason=f"{what} {value:g} exceeds the cap of {cap:g} ({setting}); request at most {cap:g}, "
        f"or ask the user to approve '{key}'.",
        approval_key=key,
    )


def budget_findings(
    settings: Settings, cpu: float, memory_gb: float, gpu: float, wall: float | None
) -> list[Finding]:
    """Return a rejection for each of a run's CPU, memory, GPU and wall-clock requests over its cap."""
    budget = settings.budget
    findings: list[Finding] = []
    limits = (
        ("CPU request", cpu, budget.max_cpu_per_run, "budget:cpu", "EXPAGENT_BUDGET_MAX_CPU_PER_RUN"),
        ("memory request (GiB)", memory_gb, budget.max_memory_gb_per_run, "budget:memory",
         "EXPAGENT_BUDGET_MAX_MEMORY_GB_PER_RUN"),
        ("GPU request", gpu, budget.max_gpu_per_run, "budget:gpu", "EXPAGENT_BUDGET_MAX_GPU_PER_RUN"),
        ("wall-clock timeout (s)", wall or 0, budget.max_wall_seconds_per_run, "budget:wall",
         "EXPAGENT_BUDGET_MAX_WALL_SECONDS_PER_RUN"),
    )  # fmt: skip
    for what, value, cap, key, setting in limits:
        if value > cap:
            findings.append(over_cap("resources", what, value, cap, key, setting))
    return findings


def unapproved(findings: list[Finding], approvals: Collection[str]) -> list[Finding]:
    """Drop approved findings; order the rest halts first, then hard rejects, then approvable ones."""
    left = [f for f in findings if not (isinstance(f, Reject) and f.approval_key in approvals)]
    return sorted(left, key=lambda f: 0 if isinstance(f, Halt) else 1 if f.approval_key is None else 2)
