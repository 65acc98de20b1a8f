"""Fixtures shared across test modules."""

from pathlib import Path

import pytest

from tools.core.registry import DatasetRegistry
from tools.core.settings import Settings

#: Modules that take a minute or more (measured with ``--durations``), collected first. ``make test`` runs
#: the suite on two workers, a file at a time, in this order (pytest-xdist's ``loadfile`` with
#: ``--no-loadscope-reorder``; by default xdist orders files by their number of tests, which sent the
#: one-test canary sweep last); started last, one of these kept one worker busy alone after the other
#: had run out of files. Longest first.
SLOW_MODULES = (
    "test_faults_cli.py",  # ~230 s: real signals, kills and outages of whole CLI processes
    "test_evals_suite.py",  # ~150 s: the whole offline eval suite
    "test_entrypoint_requests.py",  # ~125 s: studies of the user's own projects
    "test_mcp.py",  # ~90 s: the official MCP client against the server
    "test_project_requests_kubernetes.py",  # ~90 s
    "test_entrypoints.py",  # ~70 s
    "test_security_canaries.py",  # ~60 s
    "test_outbox.py",  # ~50 s
    "test_project_kubernetes.py",  # ~45 s
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put the slow modules first (longest first); every other test keeps its place (a stable sort)."""
    rank = {name: index for index, name in enumerate(SLOW_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


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
