"""The policy guard: the one wrapper every tool call passes through.

``guarded_call`` validates the arguments, runs the rules, appends the verdict to the audit log, runs the
tool only on ``Allow``, and redacts what comes back. Rules are generic over the arguments (they look at
field names such as ``dataset``/``version``, ``resources``, ``timeout_seconds``, ``params``, ``tags``
and at any Kubernetes manifest inside them), never at the tool's name, so a new tool is guarded the
moment it is registered. They live in ``tools.guard.rules`` (tool arguments) and
``tools.runtime.manifest_checks`` (Kubernetes manifests); the verdict types in ``tools.core.verdicts`` are
re-exported here. ``RULES`` below is the one list the guard runs. The rules:

- ``no_deployment``: nothing that registers, promotes, stages, aliases, serves or deploys a model; a
  Kubernetes manifest may only be a ``batch/v1`` Job.
- ``versioned_data``: a dataset must resolve in the registry at an explicit version, be ``validated``
  and match its recorded sha256.
- ``entry_points``: user code only as a registered, ``validated`` entry point at an explicit version
  whose tree sha256 still matches (hashed again on every call), with declared params only.
- ``resources``: per-run CPU/memory/GPU/wall-clock caps, trial count and concurrent jobs from
  ``settings.budget``; beyond them the verdict carries an ``approval_key`` the user may grant.
- ``kubernetes``: manifests stay in allowed namespaces, unprivileged, without host access, under the
  configured service account; optionally every Kubernetes launch needs approval.
- ``privacy``: secrets and personal data in arguments are *redacted, not rejected*, before the tool
  runs — a note or tag that mentions an e-mail address is still worth logging, minus the address — and
  every result and error is redacted before it can reach a model or a user.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, ValidationError

from tools.core.redact import redact, redact_text, redacted_paths
from tools.core.verdicts import Allow as Allow  # the verdict types are the guard's API: import them from here
from tools.core.verdicts import Finding as Finding
from tools.core.verdicts import Halt as Halt
from tools.core.verdicts import Reject as Reject
from tools.core.verdicts import Verdict as Verdict
from tools.core.verdicts import unapproved
from tools.guard.allowlists import allowlist
from tools.guard.rules import entry_points, kubernetes, no_deployment, resources, versioned_data
from tools.runtime.manifest_checks import manifest_findings
from tools.runtime.manifest_checks import parse_cpu as parse_cpu  # re-exported: part of the guard's API
from tools.runtime.manifest_checks import parse_memory_gb as parse_memory_gb
from tools.toolset import TOOLS, ToolDef, get_tool

if TYPE_CHECKING:
    from tools.context import ToolContext


class PolicyHalt(Exception):
    """Raised by a tool (or the guard) when the whole turn must stop; never swallowed by the guard."""

    def __init__(self, rule: str, reason: str) -> None:
        super().__init__(f"{rule}: {reason}")
        self.verdict = Halt(rule=rule, reason=reason)


class ToolOutcome(BaseModel):
    """What one guarded tool call produced: the verdict and, if it ran, its redacted result or error."""

    tool: str
    args: dict[str, Any] = Field(description="The arguments, redacted.")
    verdict: Verdict
    result: dict[str, Any] | None = Field(default=None, description="The tool's result, redacted.")
    error: str | None = Field(default=None, description="The tool's exception, redacted, if it failed.")
    redacted_fields: list[str] = Field(default_factory=list, description="Argument paths that were redacted.")
    approvals_used: list[str] = Field(default_factory=list, description="Approval keys that let it run.")

    @property
    def allowed(self) -> bool:
        return isinstance(self.verdict, Allow)

    @property
    def ok(self) -> bool:
        return self.allowed and self.error is None

    def to_model_message(self) -> str:
        """Return the text a chat model sees as this call's tool result."""
        verdict = self.verdict
        if isinstance(verdict, Reject):
            key = verdict.approval_key
            hint = f" The user may approve this (approval key '{key}')." if key else ""
            return f"Rejected by policy rule '{verdict.rule}': {verdict.reason}{hint}"
        if isinstance(verdict, Halt):
            return f"Halted by policy rule '{verdict.rule}': {verdict.reason}"
        if self.error is not None:
            return f"Error: {self.error}"
        return json.dumps(self.result, default=str)


# ---- evaluation -----------------------------------------------------------------------------------

Rule = Callable[[ToolDef, dict[str, Any], "ToolContext"], list[Finding]]
#: every rule the guard runs, in order (a rule that cannot be evaluated rejects). ``resources`` is last:
#: it is the one that asks the runtime (running jobs), so a rule judging the arguments alone (e.g. a
#: forbidden namespace) is reported first even when the runtime cannot be reached.
RULES: tuple[tuple[str, Rule], ...] = (
    ("no_deployment", no_deployment),
    ("versioned_data", versioned_data),
    ("entry_points", entry_points),
    ("kubernetes", kubernetes),
    ("allowlist", allowlist),
    ("resources", resources),
)


def _all_findings(
    tool: ToolDef, args: BaseModel, ctx: ToolContext, skip: Collection[str] = ()
) -> list[Finding]:
    """Run every rule but ``skip``; a rule that cannot be evaluated rejects (the guard fails closed)."""
    dumped = args.model_dump(mode="json")
    findings: list[Finding] = []
    for name, rule in RULES:
        if name in skip:
            continue
        try:
            findings += rule(tool, dumped, ctx)
        except Exception as exc:  # noqa: BLE001 - any failure to check is a rejection, never an allow
            findings.append(Reject(rule=name, reason=f"could not be checked ({type(exc).__name__}: {exc})"))
    return findings


def _unapproved(findings: list[Finding], ctx: ToolContext) -> list[Finding]:
    return unapproved(findings, ctx.approvals)


def _first(findings: list[Finding]) -> Verdict:
    return findings[0] if findings else Allow()


def evaluate(tool: ToolDef, args: BaseModel, ctx: ToolContext, skip: Collection[str] = ()) -> list[Finding]:
    """Return every unapproved problem with a call (empty means allowed); planners use it to ask once.

    ``skip`` names rules not to run (a planner that knows the runtime is down skips ``resources``,
    which counts the jobs running there); the guard itself never skips any.
    """
    return _unapproved(_all_findings(tool, args, ctx, skip), ctx)


def check(tool: ToolDef, args: BaseModel, ctx: ToolContext) -> Verdict:
    """Return the verdict on calling ``tool`` with ``args``: the most severe unapproved problem, or Allow."""
    return _first(evaluate(tool, args, ctx))


def check_manifest(manifest: dict[str, Any], ctx: ToolContext) -> Verdict:
    """Return the verdict on a Kubernetes manifest about to be created (approvals in ``ctx`` applied)."""
    return _first(_unapproved(manifest_findings(manifest, ctx.settings), ctx))


# ---- the guarded call -----------------------------------------------------------------------------


#: the member types pydantic names at the end of a location when a value matches no type of a union.
_UNION_MEMBERS = frozenset({"float", "int", "str", "bool", "none", "list", "dict"})


def _format_validation_error(exc: ValidationError, tool: str) -> str:
    """Return one short line per wrong argument (a union's per-type complaints become one)."""
    problems: dict[str, str] = {}
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        union = len(loc) > 1 and loc[-1] in _UNION_MEMBERS
        where = ".".join(loc[:-1] if union else loc) or "arguments"
        if union:
            problems[where] = "must be a single number, string or boolean"
        else:
            problems.setdefault(where, str(err["msg"]))
    text = "; ".join(f"{where}: {msg}" for where, msg in list(problems.items())[:8])
    return redact_text(f"invalid arguments for {tool}: {text}")


def _lookup(name: str) -> ToolDef | Reject:
    if name in TOOLS:  # registered already: no need to import every tool module
        return TOOLS[name]
    try:
        return get_tool(name)
    except KeyError as exc:
        return Reject(rule="unknown_tool", reason=str(exc.args[0]))
    except ImportError as exc:  # a broken tool module must not turn into an unguarded crash
        return Reject(rule="unknown_tool", reason=f"{name!r} is not available: {exc}")


def _redact_args(tool: ToolDef, args: BaseModel) -> tuple[BaseModel | Reject, list[str], dict[str, Any]]:
    """Apply the privacy rule: return the redacted arguments, the changed paths and the JSON to show."""
    original = args.model_dump(mode="json")
    cleaned = redact(original)
    paths = redacted_paths(original, cleaned)
    if not paths:
        return args, [], cleaned
    try:
        model = tool.args_model.model_validate(cleaned)
    except ValidationError:
        reason = f"arguments {', '.join(paths)} hold secrets or personal data that cannot be redacted;"
        reason += " remove them."
        return Reject(rule="privacy", reason=reason), paths, redact(original)
    return model, paths, redact(model.model_dump(mode="json"))


def _audit(ctx: ToolContext, outcome: ToolOutcome) -> None:
    verdict = outcome.verdict
    ctx.audit.write({
        "timestamp": ctx.clock().isoformat(), "session": ctx.session_id, "requester": ctx.requester,
        "tool": outcome.tool, "args": outcome.args, "verdict": verdict.verdict,
        "rule": getattr(verdict, "rule", None), "reason": getattr(verdict, "reason", None),
        "approval_key": getattr(verdict, "approval_key", None), "approvals_used": outcome.approvals_used,
        "redacted_fields": outcome.redacted_fields,
    })  # fmt: skip


def _decide(
    name: str, raw_args: Any, ctx: ToolContext
) -> tuple[ToolOutcome, ToolDef | None, BaseModel | None]:
    """Validate, check and redact; return the outcome so far plus the tool and arguments to run."""
    tool = _lookup(name)
    if isinstance(tool, Reject):
        return _early_reject(name, raw_args, tool), None, None
    if not isinstance(raw_args, dict):
        reject = Reject(rule="invalid_arguments", reason=f"arguments for {name} must be a JSON object")
        return _early_reject(name, raw_args, reject), None, None
    try:
        args = tool.args_model.model_validate(raw_args)
    except ValidationError as exc:
        reject = Reject(rule="invalid_arguments", reason=_format_validation_error(exc, name))
        return _early_reject(name, raw_args, reject), None, None
    findings = _all_findings(tool, args, ctx)
    keys = {f.approval_key for f in findings if isinstance(f, Reject) and f.approval_key}
    used = sorted(keys & ctx.approvals)
    verdict = _first(_unapproved(findings, ctx))
    if not isinstance(verdict, Allow):  # a reason may quote the offending value: it leaves redacted
        verdict = verdict.model_copy(update={"reason": redact_text(verdict.reason)})
    if isinstance(verdict, Allow):
        cleaned, paths, shown = _redact_args(tool, args)
    else:
        cleaned, paths, shown = args, [], redact(args.model_dump(mode="json"))
    if isinstance(cleaned, Reject):
        verdict, cleaned = cleaned, args
    outcome = ToolOutcome(tool=name, args=shown, verdict=verdict, redacted_fields=paths, approvals_used=used)
    return outcome, tool, cleaned


def _early_reject(name: str, raw_args: Any, reject: Reject) -> ToolOutcome:
    """Return the outcome of a call rejected before its arguments were validated (shown redacted)."""
    shown = redact(raw_args) if isinstance(raw_args, dict) else {"raw": redact(repr(raw_args))}
    verdict = reject.model_copy(update={"reason": redact_text(reject.reason)})
    return ToolOutcome(tool=redact_text(name), args=shown, verdict=verdict)


def guarded_call(name: str, raw_args: dict[str, Any], ctx: ToolContext) -> ToolOutcome:
    """Call tool ``name`` with ``raw_args`` through the guard; the only way tools are ever called.

    Invalid arguments and rule violations come back as a ``Reject`` the model can act on; a tool's
    exception comes back (redacted) in ``error``; ``PolicyHalt`` propagates after being audited.
    """
    outcome, tool, args = _decide(name, raw_args, ctx)
    try:
        _audit(ctx, outcome)
    except OSError as exc:  # no audit trail, no action
        halt = Halt(rule="audit", reason=f"the audit log could not be written ({exc}); nothing was run.")
        return outcome.model_copy(update={"verdict": halt})
    if not outcome.allowed or tool is None or args is None:
        return outcome
    try:
        result = tool.func(ctx, args)
    except PolicyHalt as halt:
        _audit(ctx, outcome.model_copy(update={"verdict": halt.verdict}))
        raise
    except Exception as exc:  # noqa: BLE001 - tool failures go back to the model as a message
        return outcome.model_copy(update={"error": redact_text(f"{type(exc).__name__}: {exc}")})
    return outcome.model_copy(update={"result": redact(result.model_dump(mode="json"))})
