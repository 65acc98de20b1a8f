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
