"""The policy guard: every tool call passes ``tools.guard.policy.guarded_call``.

Public: ``policy`` (``guarded_call``, ``evaluate``, ``check``, ``check_manifest``, ``ToolOutcome``,
``PolicyHalt`` and the verdict types), ``rules`` (the rules over tool arguments). The Kubernetes
manifest rules live with the runtime (``tools.runtime.manifest_checks``), which applies them to every
Job it creates; the guard applies the same rules to manifests inside tool arguments.
"""
