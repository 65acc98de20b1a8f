"""The policy guard: the one wrapper every tool call passes through.

``guarded_call`` validates the arguments, runs the rules, appends the verdict to the audit log, runs the
tool only on ``Allow``, and redacts what comes back. Rules are generic over the arguments (they look at
field names such as ``dataset``/``version``, ``resources``, ``timeout_seconds``, ``params``, ``tags``
and at any Kubernetes manifest inside them), never at the tool's name, so a new tool is guarded the
moment it is registered. The rules:

- ``no_deployment``: nothing that registers, promotes, stages, aliases, serves or deploys a model; a
  Kubernetes manifest may only be a ``batch/v1`` Job.
- ``versioned_data``: a dataset must resolve in the registry at an explicit version, be ``validated``
  and match its recorded sha256.
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
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationError

from tools.redact import redact, redact_text, redacted_paths
from tools.registry import FLOATING_VERSIONS, DatasetNotFound, DatasetRecord
from tools.toolset import TOOLS, ToolDef, get_tool

if TYPE_CHECKING:
    from agent.config import Settings
    from tools.context import ToolContext


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


# ---- walking arguments ----------------------------------------------------------------------------


def _dicts(value: Any) -> Iterator[dict[str, Any]]:
    """Yield every dict inside ``value`` (itself included), depth first; manifests are not entered."""
    # A Kubernetes manifest is judged as a whole by manifest_findings (its labels, env vars and
    # container resources are not tool arguments).
    if isinstance(value, dict):
        yield value
        if _is_manifest(value):
            return
        for item in value.values():
            yield from _dicts(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _dicts(item)


def _key_tokens(key: str) -> set[str]:
    """Split a key into lower-case words: 'mlflow.modelVersionStage' -> {mlflow, model, version, stage}."""
    return {t.lower() for t in re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+", key)}


def _is_manifest(value: dict[str, Any]) -> bool:
    return "apiVersion" in value and "kind" in value


# ---- rule: no_deployment --------------------------------------------------------------------------

#: words in an argument or tag key that mean registering, staging, aliasing, serving or deploying a model.
DEPLOY_KEY_WORDS = frozenset({
    "alias", "aliases", "stage", "stages", "deploy", "deployed", "deployment", "deployments", "serve",
    "serving", "endpoint", "endpoints", "promote", "promoted", "promotion", "transition", "register",
    "registered",
})  # fmt: skip
#: values that name a model-registry stage.
DEPLOY_STAGE_VALUES = frozenset({"production", "staging", "prod", "archived"})


def _no_deployment(tool: ToolDef, args: dict[str, Any], ctx: ToolContext) -> list[Finding]:
    findings: list[Finding] = []
    for mapping in _dicts(args):
        if _is_manifest(mapping):
            findings += manifest_findings(mapping, ctx.settings)
            continue
        for key, value in mapping.items():
            words = _key_tokens(str(key)) & DEPLOY_KEY_WORDS
            if words:
                findings.append(_deploy_reject(f"the argument/tag key {key!r} ({', '.join(sorted(words))})"))
            elif isinstance(value, str) and value.strip().lower() in DEPLOY_STAGE_VALUES:
                findings.append(_deploy_reject(f"the value {value!r} of {key!r} (a model-registry stage)"))
    return findings


def _deploy_reject(what: str) -> Reject:
    return Reject(
        rule="no_deployment",
        reason=f"{what} would register, stage, alias, serve or deploy a model. The experimentation "
        "agent never deploys or promotes models; hand the run ID to the deployment owners instead.",
    )


# ---- rule: versioned_data -------------------------------------------------------------------------

_DATA_SUFFIX = re.compile(r"\.(csv|tsv|parquet|pq|json|jsonl|feather|arrow|orc|avro|xlsx?|txt)(\.gz)?$", re.I)
#: key words under which a path or URI is taken to be training data (e.g. 'train_path', 'data_uri').
DATA_KEY_WORDS = frozenset({"data", "dataset", "datasets", "train", "training", "features", "table"})


def _looks_like_location(value: str) -> bool:
    text = value.strip()
    return bool("://" in text or text.startswith(("/", "./", "../", "~")) or _DATA_SUFFIX.search(text))


def _versioned_data(tool: ToolDef, args: dict[str, Any], ctx: ToolContext) -> list[Finding]:
    findings: list[Finding] = []
    for mapping in _dicts(args):
        if "dataset" in mapping:
            findings += _check_dataset_ref(mapping.get("dataset"), mapping.get("version"), ctx)
        for key, value in mapping.items():
            data_key = key != "dataset" and bool(_key_tokens(str(key)) & DATA_KEY_WORDS)
            if data_key and isinstance(value, str) and _looks_like_location(value):
                findings.append(_raw_location_reject(value, key))
    return findings


def _raw_location_reject(location: str, key: str) -> Reject:
    return Reject(
        rule="versioned_data",
        reason=f"{key}={location!r} is a raw path/URI, not a registry entry. Training data must be a "
        "curated, versioned dataset from Data Engineering: ask them to validate and register it "
        "(expagent datasets register FILE --name NAME --version V --target COL), then use dataset=NAME "
        "and version=V.",
    )


def _check_dataset_ref(dataset: Any, version: Any, ctx: ToolContext) -> list[Finding]:
    if isinstance(dataset, dict):  # a nested {name, version} reference
        dataset, version = dataset.get("name"), dataset.get("version", version)
    if not isinstance(dataset, str) or not dataset.strip():
        return [
            Reject(rule="versioned_data", reason="a dataset name is required (e.g. dataset='breast_cancer').")
        ]
    if _looks_like_location(dataset):
        return [_raw_location_reject(dataset, "dataset")]
    name, _, ref_version = dataset.partition("@")
    if ref_version and version not in (None, "", ref_version):
        reason = f"dataset {dataset!r} and version {version!r} disagree; give one explicit version."
        return [Reject(rule="versioned_data", reason=reason)]
    version = ref_version or version
    if version is None or str(version).strip().lower() in FLOATING_VERSIONS:
        return [_unversioned_reject(name, version, ctx)]
    try:
        record = ctx.registry.get(name, str(version))
    except DatasetNotFound as exc:
        return [Reject(rule="versioned_data", reason=f"{exc}. Use a registered name and explicit version.")]
    return _check_record(record, ctx)


def _unversioned_reject(name: str, version: Any, ctx: ToolContext) -> Reject:
    available = ", ".join(f"{name}@{v}" for v in ctx.registry.versions(name)) or "none registered"
    given = "no version" if version in (None, "") else f"version {version!r}"
    return Reject(
        rule="versioned_data",
        reason=f"dataset {name!r} was given {given}; an explicit, immutable version is required "
        f"(never 'latest'). Available: {available}.",
    )


def _check_record(record: DatasetRecord, ctx: ToolContext) -> list[Finding]:
    if record.status != "validated":
        return [_unvalidated_reject(record, ctx)]
    if not ctx.registry.verify(record):
        return [
            Reject(
                rule="versioned_data",
                reason=f"{record.ref}: the file on disk does not match the catalog sha256 "
                f"{record.sha256[:12]}…; the data changed after registration. Ask Data Engineering to "
                "restore it or register a new version.",
            )
        ]
    return []


def _unvalidated_reject(record: DatasetRecord, ctx: ToolContext) -> Reject:
    alternative = ctx.registry.latest_validated(record.name)
    instead = (
        f"use the validated version {alternative.ref}" if alternative else "use another validated dataset"
    )
    if record.status == "raw":
        what = (
            "is raw (not validated by Data Engineering); ask Data Engineering to validate and version it, or"
        )
    else:
        what = "is deprecated;"
    return Reject(rule="versioned_data", reason=f"{record.ref} {what} {instead}.")


# ---- rule: resources and kubernetes (launch arguments) --------------------------------------------

_PARALLEL_KEYS = ("parallelism", "n_parallel", "max_parallel", "max_concurrent_trials")


def _over(rule: str, what: str, value: float, cap: float, key: str, setting: str) -> Reject:
    return Reject(
        rule=rule,
        reason=f"{what} {value:g} exceeds the cap of {cap:g} ({setting}); request at most {cap:g}, "
        f"or ask the user to approve '{key}'.",
        approval_key=key,
    )


def _budget_findings(
    settings: Settings, cpu: float, memory_gb: float, gpu: float, wall: float | None
) -> list[Finding]:
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
            findings.append(_over("resources", what, value, cap, key, setting))
    return findings


def _launches_job(tool: ToolDef, args: dict[str, Any]) -> bool:
    return not tool.read_only and any(isinstance(d.get("resources"), dict) for d in _dicts(args))


def _resources(tool: ToolDef, args: dict[str, Any], ctx: ToolContext) -> list[Finding]:
    findings: list[Finding] = []
    budget = ctx.settings.budget
    for mapping in _dicts(args):
        res = mapping.get("resources")
        if isinstance(res, dict):
            cpu, mem, gpu = res.get("cpu", 0), res.get("memory_gb", 0), res.get("gpu", 0)
            findings += _budget_findings(ctx.settings, cpu, mem, gpu, mapping.get("timeout_seconds"))
        trials = mapping.get("n_trials", mapping.get("max_trials"))
        if isinstance(trials, int) and trials > budget.max_trials:
            findings.append(
                _over(
                    "resources",
                    "trial count",
                    trials,
                    budget.max_trials,
                    "budget:trials",
                    "EXPAGENT_BUDGET_MAX_TRIALS",
                )
            )
        for key in _PARALLEL_KEYS:
            if isinstance(mapping.get(key), int) and mapping[key] > budget.max_concurrent_jobs:
                findings.append(
                    _over("resources", f"{key}", mapping[key], budget.max_concurrent_jobs, "concurrency",
                          "EXPAGENT_BUDGET_MAX_CONCURRENT_JOBS")
                )  # fmt: skip
    if _launches_job(tool, args):
        findings += _concurrency(ctx)
    return findings


def _concurrency(ctx: ToolContext) -> list[Finding]:
    active = [j for j in ctx.runtime.list_jobs(ctx.session_id) if j.state in ("running", "pending")]
    cap = ctx.settings.budget.max_concurrent_jobs
    if len(active) < cap:
        return []
    return [
        Reject(
            rule="resources",
            reason=f"{len(active)} jobs of this session are already running or pending (cap "
            f"{cap}, EXPAGENT_BUDGET_MAX_CONCURRENT_JOBS); wait for one to finish, or ask the user to "
            "approve 'concurrency'.",
            approval_key="concurrency",
        )
    ]


def _kubernetes(tool: ToolDef, args: dict[str, Any], ctx: ToolContext) -> list[Finding]:
    settings = ctx.settings
    findings: list[Finding] = []
    for mapping in _dicts(args):
        namespace = mapping.get("namespace")
        if isinstance(namespace, str) and namespace not in settings.namespaces and not _is_manifest(mapping):
            findings.append(_namespace_reject(namespace, settings))
    runtimes = {d.get("runtime") for d in _dicts(args)} | {settings.runtime}
    if _launches_job(tool, args) and "kubernetes" in runtimes and settings.require_approval_for_kubernetes:
        findings.append(
            Reject(
                rule="kubernetes",
                reason="launching on Kubernetes needs the user's approval in this deployment "
                "(EXPAGENT_REQUIRE_APPROVAL_FOR_KUBERNETES); ask for approval or run locally.",
                approval_key="kubernetes",
            )
        )
    return findings


def _namespace_reject(namespace: str | None, settings: Settings) -> Reject:
    allowed = ", ".join(settings.namespaces)
    return Reject(rule="kubernetes", reason=f"namespace {namespace!r} is not allowed; use one of: {allowed}.")


# ---- Kubernetes Job manifests ---------------------------------------------------------------------

_MEMORY_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_DANGEROUS_CAPABILITIES = frozenset({"ALL", "SYS_ADMIN", "NET_ADMIN", "SYS_PTRACE", "SYS_MODULE"})


def parse_cpu(quantity: Any) -> float:
    """Return CPU cores for a Kubernetes quantity ('500m' -> 0.5, '2' -> 2.0)."""
    text = str(quantity).strip()
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def parse_memory_gb(quantity: Any) -> float:
    """Return GiB for a Kubernetes memory quantity ('512Mi' -> 0.5, '1G' -> 0.93, bytes otherwise)."""
    text = str(quantity).strip()
    for suffix in sorted(_MEMORY_UNITS, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * _MEMORY_UNITS[suffix] / 2**30
    return float(text) / 2**30


def _container_totals(pod: dict[str, Any]) -> tuple[float, float, float]:
    """Return (cpu, memory GiB, gpu) the pod can use: the larger of request and limit, summed."""

    def usage(container: dict[str, Any]) -> tuple[float, float, float]:
        res = container.get("resources") or {}
        both = [res.get("requests") or {}, res.get("limits") or {}]
        cpu = max((parse_cpu(r["cpu"]) for r in both if "cpu" in r), default=0.0)
        mem = max((parse_memory_gb(r["memory"]) for r in both if "memory" in r), default=0.0)
        gpu = max((float(r["nvidia.com/gpu"]) for r in both if "nvidia.com/gpu" in r), default=0.0)
        return cpu, mem, gpu

    main = [usage(c) for c in pod.get("containers") or []]
    init = [usage(c) for c in pod.get("initContainers") or []]
    return tuple(  # type: ignore[return-value]
        max(sum(u[i] for u in main), max((u[i] for u in init), default=0.0)) for i in range(3)
    )


def _pod_security_findings(pod: dict[str, Any], settings: Settings) -> list[Finding]:
    problems = [f"{flag}: true" for flag in ("hostNetwork", "hostPID", "hostIPC") if pod.get(flag)]
    problems += [f"hostPath volume {v.get('name')!r}" for v in pod.get("volumes") or [] if "hostPath" in v]
    for container in [*(pod.get("containers") or []), *(pod.get("initContainers") or [])]:
        security = container.get("securityContext") or {}
        name = container.get("name", "?")
        if security.get("privileged"):
            problems.append(f"privileged container {name!r}")
        if security.get("allowPrivilegeEscalation"):
            problems.append(f"container {name!r} allows privilege escalation")
        added = set((security.get("capabilities") or {}).get("add") or []) & _DANGEROUS_CAPABILITIES
        if added:
            problems.append(f"container {name!r} adds capabilities {sorted(added)}")
    account = pod.get("serviceAccountName") or pod.get("serviceAccount")
    if account and account != settings.k8s_service_account:
        expected = settings.k8s_service_account or "the namespace default (leave it unset)"
        problems.append(f"serviceAccountName {account!r} (allowed: {expected})")
    return [Reject(rule="kubernetes", reason=f"the Job manifest is not allowed: {p}.") for p in problems]


def manifest_findings(manifest: dict[str, Any], settings: Settings) -> list[Finding]:
    """Return every problem with a Kubernetes manifest (approvals not applied)."""
    kind, api = manifest.get("kind"), manifest.get("apiVersion")
    if kind != "Job" or api != "batch/v1":
        return [_deploy_reject(f"a Kubernetes {api}/{kind} manifest (only batch/v1 Job may be created)")]
    namespace = (manifest.get("metadata") or {}).get("namespace")
    findings: list[Finding] = (
        [] if namespace in settings.namespaces else [_namespace_reject(namespace, settings)]
    )
    spec = manifest.get("spec") or {}
    pod = (spec.get("template") or {}).get("spec") or {}
    findings += _pod_security_findings(pod, settings)
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is None:
        reason = "the Job has no spec.activeDeadlineSeconds; every run needs a wall-clock deadline."
        findings.append(Reject(rule="resources", reason=reason))
    findings += _budget_findings(settings, *_container_totals(pod), wall=deadline)
    if settings.require_approval_for_kubernetes:
        reason = "creating a Kubernetes Job needs the user's approval in this deployment."
        findings.append(Reject(rule="kubernetes", reason=reason, approval_key="kubernetes"))
    return findings


def check_manifest(manifest: dict[str, Any], ctx: ToolContext) -> Verdict:
    """Return the verdict on a Kubernetes manifest about to be created (approvals in ``ctx`` applied)."""
    return _first(_unapproved(manifest_findings(manifest, ctx.settings), ctx))


# ---- evaluation -----------------------------------------------------------------------------------

Rule = Callable[[ToolDef, dict[str, Any], "ToolContext"], list[Finding]]
RULES: tuple[tuple[str, Rule], ...] = (
    ("no_deployment", _no_deployment),
    ("versioned_data", _versioned_data),
    ("resources", _resources),
    ("kubernetes", _kubernetes),
)


def _all_findings(tool: ToolDef, args: BaseModel, ctx: ToolContext) -> list[Finding]:
    """Run every rule; a rule that cannot be evaluated rejects (the guard fails closed)."""
    dumped = args.model_dump(mode="json")
    findings: list[Finding] = []
    for name, rule in RULES:
        try:
            findings += rule(tool, dumped, ctx)
        except Exception as exc:  # noqa: BLE001 - any failure to check is a rejection, never an allow
            findings.append(Reject(rule=name, reason=f"could not be checked ({type(exc).__name__}: {exc})"))
    return findings


def _unapproved(findings: list[Finding], ctx: ToolContext) -> list[Finding]:
    """Drop approved findings; order the rest halts first, then hard rejects, then approvable ones."""
    left = [f for f in findings if not (isinstance(f, Reject) and f.approval_key in ctx.approvals)]
    return sorted(left, key=lambda f: 0 if isinstance(f, Halt) else 1 if f.approval_key is None else 2)


def _first(findings: list[Finding]) -> Verdict:
    return findings[0] if findings else Allow()


def evaluate(tool: ToolDef, args: BaseModel, ctx: ToolContext) -> list[Finding]:
    """Return every unapproved problem with a call (empty means allowed); planners use it to ask once."""
    return _unapproved(_all_findings(tool, args, ctx), ctx)


def check(tool: ToolDef, args: BaseModel, ctx: ToolContext) -> Verdict:
    """Return the verdict on calling ``tool`` with ``args``: the most severe unapproved problem, or Allow."""
    return _first(evaluate(tool, args, ctx))


# ---- the guarded call -----------------------------------------------------------------------------


def _format_validation_error(exc: ValidationError, tool: str) -> str:
    problems = [
        f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {err['msg']}" for err in exc.errors()
    ]
    return redact_text(f"invalid arguments for {tool}: " + "; ".join(problems))


def _lookup(name: str) -> ToolDef | Reject:
    if name in TOOLS:  # registered already: no need to import every tool module
        return TOOLS[name]
    try:
        return get_tool(name)
    except KeyError as exc:
        return Reject(rule="unknown_tool", reason=str(exc.args[0]))
    except ImportError as exc:  # a broken tool module must not turn into an unguarded crash
        return Reject(rule="unknown_tool", reason=f"{name!r} is not available: {exc}")


def _redact_args(tool: ToolDef, args: BaseModel) -> tuple[BaseModel | Reject, list[str]]:
    """Apply the privacy rule: return the arguments with secrets and PII redacted, and what changed."""
    original = args.model_dump(mode="json")
    cleaned = redact(original)
    paths = redacted_paths(original, cleaned)
    if not paths:
        return args, []
    try:
        return tool.args_model.model_validate(cleaned), paths
    except ValidationError:
        reason = f"arguments {', '.join(paths)} hold secrets or personal data that cannot be redacted;"
        reason += " remove them."
        return Reject(rule="privacy", reason=reason), paths


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
    shown = redact(raw_args) if isinstance(raw_args, dict) else {"raw": redact(repr(raw_args))}
    tool = _lookup(name)
    if isinstance(tool, Reject):
        return ToolOutcome(tool=name, args=shown, verdict=tool), None, None
    if not isinstance(raw_args, dict):
        reject = Reject(rule="invalid_arguments", reason=f"arguments for {name} must be a JSON object")
        return ToolOutcome(tool=name, args=shown, verdict=reject), None, None
    try:
        args = tool.args_model.model_validate(raw_args)
    except ValidationError as exc:
        reject = Reject(rule="invalid_arguments", reason=_format_validation_error(exc, name))
        return ToolOutcome(tool=name, args=shown, verdict=reject), None, None
    findings = _all_findings(tool, args, ctx)
    keys = {f.approval_key for f in findings if isinstance(f, Reject) and f.approval_key}
    used = sorted(keys & ctx.approvals)
    verdict = _first(_unapproved(findings, ctx))
    cleaned, paths = _redact_args(tool, args) if isinstance(verdict, Allow) else (args, [])
    if isinstance(cleaned, Reject):
        verdict, cleaned = cleaned, args
    outcome = ToolOutcome(
        tool=name, args=redact(cleaned.model_dump(mode="json")), verdict=verdict, redacted_fields=paths,
        approvals_used=used,
    )  # fmt: skip
    return outcome, tool, cleaned


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
