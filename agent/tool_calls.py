"""How nodes call tools: always through ``tools.guard.policy.guarded_call``, keeping what the answer shows.

``call_tool`` returns a ``GuardedCall`` wrapping the guard's ``ToolOutcome`` with the bits nodes need:
the redacted result as a dict, and the verdict as ``PolicyEvent`` s for the answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from agent.state import PolicyEvent, ToolCallRecord
from tools.context import ToolContext
from tools.guard.policy import Allow, Halt, Reject, ToolOutcome, evaluate, guarded_call
from tools.toolset import TOOLS


@dataclass(frozen=True)
class GuardedCall:
    """One guarded tool call and its outcome."""

    outcome: ToolOutcome

    @property
    def ok(self) -> bool:
        """The guard allowed the call and the tool returned a result."""
        return self.outcome.ok

    @property
    def data(self) -> dict[str, Any]:
        """The tool's redacted result (empty when it did not run or failed)."""
        return self.outcome.result or {}

    @property
    def approval_key(self) -> str | None:
        verdict = self.outcome.verdict
        return verdict.approval_key if isinstance(verdict, Reject) else None

    @property
    def problem(self) -> str:
        """Why the call did not produce a result (empty when it did)."""
        verdict = self.outcome.verdict
        if isinstance(verdict, Reject | Halt):
            return f"{verdict.rule}: {verdict.reason}"
        return self.outcome.error or ""

    def policy_events(self) -> list[PolicyEvent]:
        """Return the verdict as events worth showing the user (none for a plain Allow)."""
        verdict = self.outcome.verdict
        if isinstance(verdict, Allow):
            return [
                PolicyEvent(tool=self.outcome.tool, verdict="approved", rule=None, reason=f"approved: {key}")
                for key in self.outcome.approvals_used
            ]
        kind = (
            "approval_required" if isinstance(verdict, Reject) and verdict.approval_key else verdict.verdict
        )
        return [PolicyEvent(tool=self.outcome.tool, verdict=kind, rule=verdict.rule, reason=verdict.reason)]

    def record(self, summary: str | None = None) -> ToolCallRecord:
        """Return the call as shown under Verification."""
        return ToolCallRecord(
            tool=self.outcome.tool,
            args=self.outcome.args,
            ok=self.ok,
            summary=summary or (self.problem if not self.ok else "returned a result"),
        )


def call_tool(ctx: ToolContext, name: str, args: dict[str, Any]) -> GuardedCall:
    """Call tool ``name`` through the guard (which audits the verdict and redacts the result)."""
    return GuardedCall(guarded_call(name, args, ctx))


class DataReference(BaseModel):
    """The training data a request names, as the guard's data rule reads it."""

    dataset: str = Field(description="Registered dataset name, or the raw path/URI the user gave.")
    version: str | None = Field(None, description="Explicit version, if stated.")


def check_data(ctx: ToolContext, dataset: str, version: str | None) -> list[PolicyEvent]:
    """Run the guard's rules on the data a request names; audit and return every rejection.

    Used before anything is planned, so unregistered, raw, deprecated or unversioned data is refused
    with the guard's own verdict (rule ``versioned_data``) even though no tool is called yet.
    """
    import tools.datasets  # noqa: F401 - registers lookup_dataset without importing every tool module

    findings = evaluate(TOOLS["lookup_dataset"], DataReference(dataset=dataset, version=version), ctx)
    args = {"dataset": dataset, "version": version}
    return [audit_refusal(ctx, "train", f.rule, f.reason, args) for f in findings]


def audit_refusal(ctx: ToolContext, action: str, rule: str, reason: str, args: dict[str, Any]) -> PolicyEvent:
    """Write a refused request (one no tool call carries) to the audit log; return its policy event."""
    from tools.core.redact import redact

    ctx.audit.write(
        {
            "timestamp": ctx.clock().isoformat(),
            "session": ctx.session_id,
            "requester": ctx.requester,
            "tool": f"request:{action}",
            "args": redact(args),
            "verdict": "reject",
            "rule": rule,
            "reason": reason,
        }
    )
    return PolicyEvent(tool=f"request:{action}", verdict="reject", rule=rule, reason=redact(reason))
