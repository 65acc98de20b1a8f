"""What the Kubernetes runtime raises, and how an API error is described to a user."""

from __future__ import annotations

import json

from kubernetes.client.exceptions import ApiException


class KubernetesSubmitError(RuntimeError):
    """The Job could not be created (the message says why; the run was ended FAILED)."""


class KubernetesUnavailable(RuntimeError):
    """The API server cannot be reached, or this identity may not list/watch Jobs and pods."""


class ManifestRejected(KubernetesSubmitError):
    """The policy guard rejected the Job manifest."""

    def __init__(self, rule: str, reason: str) -> None:
        super().__init__(f"the policy guard rejected the Job manifest ({rule}): {reason}")
        self.rule, self.reason = rule, reason


def describe(err: ApiException) -> str:
    """Return ``"<code> <reason>: <message>"`` from an API error's Status body."""
    try:
        message = json.loads(err.body or "{}").get("message", "")
    except (TypeError, ValueError):
        message = ""
    return f"{err.status} {err.reason}" + (f": {message}" if message else "")
