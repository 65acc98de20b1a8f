"""Fixtures shared across test modules."""

from pathlib import Path

import pytest

from tools.core.registry import DatasetRegistry
from tools.core.settings import Settings


@pytest.fixture(scope="session")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace holding the demo catalog, built once; tests copy it instead of mutating it."""
    home = tmp_path_factory.mktemp("demo")
    DatasetRegistry.open(Settings(home=home))
    return home


@pytest.fixture(autouse=True)
def _tracing_ends_with_its_test() -> object:
    """Write a test's pending agent traces and switch tracing off before the next test starts.

    Tracing is process-wide (MLflow's autolog and its destination). Left on, the export thread of a
    traced test wrote spans later, into a workspace a later test no longer had, and MLflow's error log
    (with a traceback) landed in whatever output that later test was capturing.
    """
    import sys

    yield
    tracing = sys.modules.get("agent.tracing")
    if tracing is not None:
        tracing.disable_tracing()
