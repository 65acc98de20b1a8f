"""Short run IDs: a unique prefix of at least 6 hex characters names a run, as a git SHA prefix does.

``resolve_run_id(client, ref)`` returns the full 32-hex ID, or raises ``LookupError`` with a message
the model and the user can act on: not an ID, no run starts with it, or the candidates it matches.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

MIN_PREFIX = 6
_FULL_ID = re.compile(r"^[0-9a-f]{32}$")
_PREFIX = re.compile(rf"^[0-9a-f]{{{MIN_PREFIX},31}}$")
#: candidates listed when a prefix is ambiguous.
_SHOWN = 5


def is_run_ref(text: str) -> bool:
    """Return whether ``text`` looks like a run ID or a short one (6-32 hex characters)."""
    return bool(_FULL_ID.match(text.lower()) or _PREFIX.match(text.lower()))


def resolve_run_id(client: MlflowClient, ref: str) -> str:
    """Return the full run ID ``ref`` names (a 32-hex ID or a unique prefix of >= 6 hex characters)."""
    from mlflow.entities import ViewType

    wanted = (ref or "").strip().strip("`'\"").lower()
    if _FULL_ID.match(wanted):
        return wanted
    if not _PREFIX.match(wanted):
        raise LookupError(
            f"{ref!r} is not an MLflow run ID: give the 32 hex characters or a unique prefix of at least "
            f"{MIN_PREFIX} hex characters (e.g. 8788935a)"
        )
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    runs = client.search_runs(
        experiments, filter_string=f"attributes.run_id LIKE '{wanted}%'", max_results=_SHOWN + 1
    )
    if not runs:
        raise LookupError(f"no run ID in this tracking store starts with {wanted!r}")
    if len(runs) > 1:
        shown = ", ".join(
            f"{r.info.run_id} ({r.info.run_name or 'unnamed'}, {r.info.status})" for r in runs[:_SHOWN]
        )
        more = " and more" if len(runs) > _SHOWN else ""
        raise LookupError(
            f"run ID prefix {wanted!r} matches {len(runs)}{'+' if more else ''} runs: {shown}{more}; "
            "give more characters"
        )
    return str(runs[0].info.run_id)
