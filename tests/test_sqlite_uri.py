"""``sqlite:///`` URIs name the file SQLAlchemy (and so MLflow) opens, whatever characters the path holds."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tools.core.settings import Settings
from tools.core.sqlite_uri import sqlite_store_path, sqlite_uri

ODD_NAMES = ["plain", "with space", "100%", "a%20b", "what?", "x#y", "ünï©ødé", "a%3Fb?c#d%"]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_the_uri_of_a_path_opens_that_path_and_reads_back_to_it(name: str, tmp_path: Path) -> None:
    path = tmp_path / name / "mlflow.db"
    uri = sqlite_uri(path)
    assert make_url(uri).database == str(path)  # what SQLAlchemy opens
    assert sqlite_store_path(uri) == path


def test_an_ordinary_path_gives_the_uri_it_always_gave(tmp_path: Path) -> None:
    path = tmp_path / "team ws" / "mlflow.db"
    assert sqlite_uri(path) == f"sqlite:///{path}"


def test_a_uri_written_by_hand_is_read_as_sqlalchemy_reads_it() -> None:
    assert sqlite_store_path("sqlite:////tmp/a%20b/x.db") == Path("/tmp/a b/x.db")
    assert make_url("sqlite:////tmp/a%20b/x.db").database == "/tmp/a b/x.db"
    assert sqlite_store_path("sqlite:///relative.db") == Path("relative.db")


def test_the_workspace_store_of_a_home_with_url_characters_is_inside_that_home(tmp_path: Path) -> None:
    home = tmp_path / "ws 100%?#"
    assert sqlite_store_path(Settings(home=home).resolved_tracking_uri) == (home / "mlflow.db").resolve()
