"""The guard's rules over tool arguments: no_deployment, versioned_data, resources, kubernetes.

Each rule is ``rule(tool, args, ctx) -> list[Finding]`` over the JSON-dumped arguments. Rules are generic:
they look at field names (``dataset``/``version``, ``resources``, ``timeout_seconds``, ``params``,
``tags``, ``namespace``) and at any Kubernetes manifest inside the arguments, never at the tool's name,
so a new tool is guarded the moment it is registered. ``tools.guard.policy.RULES`` lists them in order.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from tools.core.entrypoints import EntryPointError, EntryPointRegistry
from tools.core.registry import FLOATING_VERSIONS, DatasetNotFound, DatasetRecord
from tools.core.text import normalize, strip_invisible
from tools.core.verdicts import Finding, Reject, budget_findings, deploy_reject, namespace_reject, over_cap
from tools.runtime.manifest_checks import manifest_findings

if TYPE_CHECKING:
    from tools.context import ToolContext
    from tools.toolset import ToolDef


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
#: keys whose values are judged by another rule: a namespace called 'prod' is the kubernetes rule's
#: business (its allowlist), not a model-registry stage.
STAGE_CHECK_EXEMPT_KEYS = frozenset({"namespace"})


def no_deployment(tool: ToolDef, args: dict[str, Any], ctx: ToolContext) -> list[Finding]:
    """Reject keys and values that register, stage, alias, serve or deploy a model; judge manifests."""
    findings: list[Finding] = []
    for mapping in _dicts(args):
        if _is_manifest(mapping):
            findings += manifest_findings(mapping, ctx.settings)
            continue
        for key, value in mapping.items():
            # What a person (or a CD pipeline) reads: no invisible characters, look-alike letters folded.
            words = (
                _key_tokens(strip_invisible(str(key))) | _key_tokens(normalize(str(key)))
            ) & DEPLOY_KEY_WORDS
            if words:
                findings.append(deploy_reject(f"the argument/tag key {key!r} ({', '.join(sorted(words))})"))
            elif (
                isinstance(value, str)
                and key not in STAGE_CHECK_EXEMPT_KEYS
                and normalize(value).strip() in DEPLOY_STAGE_VALUES
            ):
                findings.append(deploy_reject(f"the value {value!r} of {key!r} (a model-registry stage)"))
    return findings


# ---- rule: versioned_data -------------------------------------------------------------------------

_DATA_SUFFIX = re.compile(r"\.(csv|tsv|parquet|pq|json|jsonl|feather|arrow|orc|avro|xlsx?|txt)(\.gz)?$", re.I)
#: key words under which a path or URI is taken to be training data (e.g. 'train_path', 'data_uri').
DATA_KEY_WORDS = frozenset({"data", "dataset", "datasets", "train", "training", "features", "table"})


def _looks_like_location(value: str) -> bool:
    text = value.strip()
    return bool("://" in text or text.startswith(("/", "./", "../", "~")) or _DATA_SUFFIX.search(text))


def versioned_data(tool: ToolDef, args: dict[str, Any], ctx: ToolContext) -> list[Finding]:
    """Reject datasets that are not validated registry entries at an explicit version, and raw paths."""
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
    # A workspace file must match its sha256; an S3 entry must pin a version in a versioned bucket whose
    # bytes match (tools.core.s3_datasets). Checked before every launch, so before any run exists.
    problem = ctx.registry.problem(record)
    return [Reject(rule="versioned_data", reason=problem)] if problem else []


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


# ---- rules: resources and kubernetes (launch arguments) -------------------------------------------

_PARALLEL_KEYS = ("parallelism", "n_parallel", "max_parallel", "max_concurrent_trials")


def _launches_job(tool: ToolDef, args: dict[str, Any]) -> bool:
    return not tool.read_only and any(isinstance(d.get("resources"), dict) for d in _dicts(args))


def resources(tool: ToolDef, args: dict[str, Any], ctx: ToolContext) -> list[Finding]:
    """Reject requests over the per-run, trial and concurrency caps (the user may approve them)."""
    findings: list[Finding] = []
    budget = ctx.settings.budget
    for mapping in _dicts(args):
        res = mapping.get("resources")
        if isinstance(res, dict):
            cpu, mem, gpu = res.get("cpu", 0), res.get("memory_gb", 0), res.get("gpu", 0)
            findings += budget_findings(ctx.settings, cpu, mem, gpu, mapping.get("timeout_seconds"))
        trials = mapping.get("n_trials", mapping.get("max_trials"))
        if isinstance(trials, int) and trials > budget.max_trials:
            findings.append(
                over_cap(
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
                    over_cap("resources", f"{key}", mapping[key], budget.max_concurrent_jobs, "concurrency",
                             "EXPAGENT_BUDGET_MAX_CONCURRENT_JOBS")
                )  # fmt: skip
    if _launches_job(tool, args):
        findings += _concurrency(ctx, _launch_runtimes(args, ctx.settings.runtime))
    return findings


def _launch_runtimes(args: dict[str, Any], default: str) -> set[str]:
    """Return the runtimes a launching call would use: each explicit 'runtime', else the default."""
    runtimes: set[str] = set()
    for mapping in _dicts(args):
        if isinstance(mapping.get("runtime"), str):
            runtimes.add(mapping["runtime"])
        elif isinstance(mapping.get("resources"), dict):
            runtimes.add(default)  # a launch without a runtime runs on the configured one
    return runtimes or {default}


def _concurrency(ctx: ToolContext, runtimes: set[str]) -> list[Finding]:
    # Every active job of the workspace, whichever session or process started it (the local runtime
    # reads the workspace's job directories; Kubernetes lists the Jobs with expagent labels), on the
    # launch's runtimes and on every other runtime opened. A runtime that cannot be opened raises: the
    # guard then rejects (it never allows what it could not count).
    opened = [ctx.runtime_named(name) for name in sorted(runtimes)] + ctx.open_runtimes()
    jobs = {j.job_id: j for r in {id(r): r for r in opened}.values() for j in r.list_jobs(None)}
    active = [j for j in jobs.values() if j.state in ("running", "pending")]
    cap = ctx.settings.budget.max_concurrent_jobs
    if len(active) < cap:
        return []
    ours = {j.job_id for r in {id(r): r for r in opened}.values() for j in r.list_jobs(ctx.session_id)}
    mine = sum(1 for j in active if j.job_id in ours)
    return [
        Reject(
            rule="resources",
            reason=f"{len(active)} jobs of this workspace are already running or pending ({mine} of this "
            f"session; cap {cap}, EXPAGENT_BUDGET_MAX_CONCURRENT_JOBS); wait for one to finish, or ask "
            "the user to approve 'concurrency'.",
            approval_key="concurrency",
        )
    ]


def kubernetes(tool: ToolDef, args: dict[str, Any], ctx: ToolContext) -> list[Finding]:
    """Reject namespaces outside the allowlist; ask approval for Kubernetes launches when configured."""
    settings = ctx.settings
    findings: list[Finding] = []
    named = False
    for mapping in _dicts(args):
        namespace = mapping.get("namespace")
        if isinstance(namespace, str) and not _is_manifest(mapping):
            named = True
            if namespace not in settings.namespaces:
                findings.append(namespace_reject(namespace, settings))
    if not _launches_job(tool, args) or "kubernetes" not in _launch_runtimes(args, settings.runtime):
        return findings
    if not named and settings.k8s_namespace not in settings.namespaces:
        findings.append(namespace_reject(settings.k8s_namespace, settings))  # the configured default
    if settings.require_approval_for_kubernetes:
        findings.append(
            Reject(
                rule="kubernetes",
                reason="launching on Kubernetes needs the user's approval in this deployment "
                "(EXPAGENT_REQUIRE_APPROVAL_FOR_KUBERNETES); ask for approval or run locally.",
                approval_key="kubernetes",
            )
        )
    return findings


# ---- rule: entry_points ---------------------------------------------------------------------------


def entry_points(tool: ToolDef, args: dict[str, Any], ctx: ToolContext) -> list[Finding]:
    """Reject user code that is not a registered, validated entry point at an explicit, unchanged version."""
    findings: list[Finding] = []
    for mapping in _dicts(args):
        call = mapping.get("entry_point")
        if call is None or "entry_point" not in mapping:
            continue
        if not isinstance(call, dict) or set(call) - {"ref", "entry"}:
            reason = "entry_point must be {ref: 'name@N', entry: 'main'}; only registered entry points run"
            findings.append(Reject(rule="entry_points", reason=reason))
            continue
        runtime = mapping.get("runtime") or ctx.settings.runtime
        findings += _check_entry_point(str(call.get("ref", "")), str(call.get("entry", "main")),
                                       mapping.get("params") or {}, ctx, str(runtime))  # fmt: skip
    return findings


def _check_entry_point(ref: str, entry: str, params: Any, ctx: ToolContext, runtime: str) -> list[Finding]:
    registry = EntryPointRegistry.open(ctx.settings)
    try:
        record = registry.resolve(ref)
    except EntryPointError as exc:
        return [Reject(rule="entry_points", reason=str(exc))]
    problem = registry.problem(record, entry)
    if problem:
        return [Reject(rule="entry_points", reason=problem)]
    declared = record.entry_points[entry]
    unknown = sorted(set(params) - set(declared)) if isinstance(params, dict) else []
    if unknown:
        return [Reject(rule="entry_points", reason=f"{ref} entry {entry!r} declares no param "
                       f"{', '.join(unknown)} (declared: {', '.join(declared) or 'none'})")]  # fmt: skip
    if runtime == "kubernetes" and not record.docker_image:  # the pod runs the project in its own image
        reason = (f"entry point {ref} declares no image (MLproject docker_env: image:), so it cannot run "
                  "on Kubernetes; run it locally or register a version that declares one")  # fmt: skip
        return [Reject(rule="entry_points", reason=reason)]
    return []
