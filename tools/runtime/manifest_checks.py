"""What a Kubernetes Job manifest may contain: kind, namespace, pod security, deadline, resource caps.

``manifest_findings`` judges a whole manifest; the ``no_deployment`` rule applies it to any manifest
inside tool arguments, and ``tools.guard.policy.check_manifest`` applies it (with the user's approvals) to
every Job the Kubernetes runtime is about to create.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tools.core.verdicts import Finding, Reject, budget_findings, deploy_reject, namespace_reject

if TYPE_CHECKING:
    from tools.core.settings import Settings

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
        return [deploy_reject(f"a Kubernetes {api}/{kind} manifest (only batch/v1 Job may be created)")]
    namespace = (manifest.get("metadata") or {}).get("namespace")
    findings: list[Finding] = (
        [] if namespace in settings.namespaces else [namespace_reject(namespace, settings)]
    )
    spec = manifest.get("spec") or {}
    pod = (spec.get("template") or {}).get("spec") or {}
    findings += _pod_security_findings(pod, settings)
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is None:
        reason = "the Job has no spec.activeDeadlineSeconds; every run needs a wall-clock deadline."
        findings.append(Reject(rule="resources", reason=reason))
    findings += budget_findings(settings, *_container_totals(pod), wall=deadline)
    if settings.require_approval_for_kubernetes:
        reason = "creating a Kubernetes Job needs the user's approval in this deployment."
        findings.append(Reject(rule="kubernetes", reason=reason, approval_key="kubernetes"))
    return findings
