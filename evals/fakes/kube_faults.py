"""Fault injection for the fake Kubernetes API server: API errors, slow answers, dropped watches, bad pods.

Counters are consumed one fault at a time (``create_errors=2`` fails the next two Job creates). Faults
are set in the constructor, by CLI flags, or at runtime with ``POST /_fake/faults`` (JSON of these fields).
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

PodFaultKind = Literal["fail", "oom", "never_start"]
_COUNTERS = (
    "create_errors",
    "create_errors_after_commit",
    "create_conflicts",
    "slow_requests",
    "drop_watches",
    "expire_watches",
)


@dataclass
class PodFault:
    """What goes wrong with the pods of matching Jobs.

    ``fail`` exits with ``exit_code`` without running the command; ``oom`` runs the pod at its memory
    limit (a stand-in process: the command never gets to finish, however fast it is) and kills it as the
    OOM killer would after ``oom_after_seconds`` (reason OOMKilled, exit 137); ``never_start`` leaves
    the pod Pending in ImagePullBackOff. ``match`` is a substring of the Job name ("" matches every
    Job); ``count`` is how many pods it applies to (-1: every matching pod).
    """

    kind: PodFaultKind
    exit_code: int = 1
    match: str = ""
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> PodFault:
        """Parse ``KIND[:EXIT_CODE][@MATCH][*COUNT]``, e.g. ``fail:3@trial*2`` or ``oom``."""
        rest, _, count = text.partition("*")
        rest, _, match = rest.partition("@")
        kind, _, exit_code = rest.partition(":")
        if kind not in ("fail", "oom", "never_start"):
            raise ValueError(f"unknown pod fault {kind!r}; expected fail, oom or never_start")
        return cls(kind, int(exit_code or 1), match, int(count or 1))  # type: ignore[arg-type]


@dataclass
class Faults:
    """The faults the fake injects next; every counter is decremented as a fault is used."""

    create_errors: int = 0  # Job creates answer 500 and store nothing
    create_errors_after_commit: int = 0  # Job creates store the Job, then answer 500 (lost response)
    create_conflicts: int = 0  # Job creates store the Job, then answer 409 AlreadyExists
    slow_requests: int = 0  # non-watch requests answered only after slow_seconds (after committing)
    slow_seconds: float = 0.0
    drop_watches: int = 0  # watch streams cut (connection reset) after drop_after_events events
    drop_after_events: int = 0
    expire_watches: int = 0  # watches from a resourceVersion answer an ERROR 410 Expired event
    oom_after_seconds: float = 0.2
    pod_faults: list[PodFault] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def take(self, counter: str) -> bool:
        """Consume one unit of ``counter``; return whether the fault fires."""
        with self._lock:
            left = getattr(self, counter)
            if left <= 0:
                return False
            setattr(self, counter, left - 1)
            return True

    def take_pod_fault(self, job_name: str) -> PodFault | None:
        """Return (and consume) the first pod fault matching ``job_name``."""
        with self._lock:
            for fault in self.pod_faults:
                if fault.count != 0 and fault.match in job_name:
                    if fault.count > 0:
                        fault.count -= 1
                    return fault
            return None

    def update(self, changes: dict[str, Any]) -> None:
        """Set faults from a JSON object (unknown keys raise ValueError)."""
        known = {f.name for f in fields(self) if not f.name.startswith("_")}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown fault fields {sorted(unknown)}; known: {sorted(known)}")
        with self._lock:
            for key, value in changes.items():
                if key == "pod_faults":
                    value = [PodFault(**v) if isinstance(v, dict) else PodFault.parse(v) for v in value]
                setattr(self, key, value)

    def as_dict(self) -> dict[str, Any]:
        """Return the current faults as JSON-ready data."""
        with self._lock:
            data = {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
            data["pod_faults"] = [asdict(p) for p in self.pod_faults]
        return data
