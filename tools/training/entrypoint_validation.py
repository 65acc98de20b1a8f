"""The dry run that validates a registered entry point (one real run that must keep the contract)."""

from __future__ import annotations

from tools.core.entrypoints import EntryPointRegistry
from tools.core.settings import Settings
from tools.core.specs import TrainingSpec
from tools.training.trainer import run_training


def validate_entry_point(
    settings: Settings, ref: str, dataset: str, version: str, entry: str = "main"
) -> str | None:
    """Dry-run ``ref`` once on a dataset; mark it ``validated`` when the run keeps the contract.

    Returns None when validated, else the one-line reason (the entry point keeps its status).
    """
    registry = EntryPointRegistry.open(settings)
    record = registry.resolve(ref)
    problem = registry.tree_problem(record, entry)
    if problem:
        return problem
    spec = TrainingSpec(
        dataset=dataset, version=version, model_family="logistic_regression", metric="accuracy",
        experiment="expagent-entrypoint-validation", run_name=f"validate {record.ref}",
        entry_point={"ref": record.ref, "entry": entry}, timeout_seconds=600,
    )  # fmt: skip
    result = run_training(spec, settings)
    if result.status != "FINISHED":
        return f"validation run {result.run_id} failed: {result.error}"
    registry.set_status(record.ref, "validated", f"dry run {result.run_id} kept the contract")
    return None
