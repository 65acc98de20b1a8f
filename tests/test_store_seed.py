"""New SQLite tracking stores start as copies of one migrated empty store (tools.core.store_seed)."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from tools.core import store_seed
from tools.core.settings import Settings
from tools.core.tracking import make_client

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A cache directory of this test's own (the template is built in it), and the process memo cleared."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    store_seed.migrated_template.cache_clear()
    yield tmp_path / "cache" / "expagent" / "mlflow-stores"
    store_seed.migrated_template.cache_clear()


def _schema(path: Path) -> list[str]:
    """The store's tables, indexes and alembic revision, in a stable order (SQLAlchemy's order varies)."""
    with closing(sqlite3.connect(path)) as db:
        rows = db.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
        ).fetchall()
        revision = db.execute("SELECT version_num FROM alembic_version").fetchall()
    lines = [
        f"{kind} {name} " + " ".join(sorted((sql or "").replace(",", " ").split()))
        for kind, name, sql in rows
    ]
    return sorted(lines) + [f"revision {revision}"]


def test_a_new_store_is_a_copy_that_mlflow_opens_as_one_it_migrated_itself(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    seeded, migrated = tmp_path / "seeded.db", tmp_path / "migrated.db"

    assert store_seed.seed_new_store(f"sqlite:///{seeded}")
    MlflowClient(f"sqlite:///{migrated}").search_experiments()  # MLflow's own migrations, for comparison

    templates = list(cache.glob("*.db"))
    assert [t.name.split("-")[0] for t in templates] == [mlflow.__version__]
    assert _schema(seeded) == _schema(migrated) == _schema(templates[0])
    with closing(sqlite3.connect(seeded)) as db:  # tables only: the Default experiment is MLflow's to make
        assert db.execute("SELECT count(*) FROM experiments").fetchone() == (0,)
    client = MlflowClient(f"sqlite:///{seeded}")
    [default] = client.search_experiments()
    assert default.name == "Default" and default.artifact_location == str(tmp_path / "mlruns" / "0")
    run = client.create_run(client.create_experiment("copied"))
    client.set_terminated(run.info.run_id)
    assert client.get_run(run.info.run_id).info.status == "FINISHED"


def test_make_client_and_the_workspace_create_their_store_from_the_template(
    cache: Path, tmp_path: Path
) -> None:
    settings = Settings(home=tmp_path / "home")
    client = make_client(settings)
    assert [e.name for e in client.search_experiments()] == ["Default"]
    assert len(list(cache.glob("*.db"))) == 1  # the first new store built the template; it was copied


def test_an_existing_store_or_file_is_never_replaced(cache: Path, tmp_path: Path) -> None:
    store = tmp_path / "mlflow.db"
    client = MlflowClient(f"sqlite:///{store}")
    run_id = client.create_run(client.create_experiment("kept")).info.run_id
    before = store.read_bytes()
    empty = tmp_path / "empty.db"
    empty.touch()
    link = tmp_path / "dangling.db"
    link.symlink_to(tmp_path / "nowhere.db")

    assert not store_seed.seed_new_store(f"sqlite:///{store}")
    assert not store_seed.seed_new_store(f"sqlite:///{empty}")
    assert not store_seed.seed_new_store(f"sqlite:///{link}")
    assert (
        store.read_bytes() == before and empty.stat().st_size == 0 and not (tmp_path / "nowhere.db").exists()
    )
    assert MlflowClient(f"sqlite:///{store}").get_run(run_id).info.run_id == run_id


def test_a_store_created_after_the_check_is_not_replaced_by_the_copy(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "mlflow.db"
    client = MlflowClient(f"sqlite:///{store}")
    run_id = client.create_run(client.create_experiment("theirs")).info.run_id
    before = store.read_bytes()
    monkeypatch.setattr(store_seed.os.path, "lexists", lambda _path: False)  # another process wins the race

    assert not store_seed.seed_new_store(f"sqlite:///{store}")
    assert store.read_bytes() == before
    assert MlflowClient(f"sqlite:///{store}").get_run(run_id).info.run_id == run_id
    assert not list(tmp_path.glob(".mlflow.db.*"))


@pytest.mark.parametrize(
    "uri",
    [
        "sqlite://",
        "sqlite:///:memory:",
        "sqlite:///x.db?mode=ro",
        "http://127.0.0.1:5000",
        "postgresql://h/db",
    ],
)
def test_only_plain_sqlite_files_are_seeded(uri: str) -> None:
    assert store_seed.sqlite_store_path(uri) is None
    assert not store_seed.seed_new_store(uri)


@pytest.mark.parametrize("damage", ["garbage", "a used store"])
def test_a_damaged_or_used_template_is_rebuilt_never_copied(cache: Path, tmp_path: Path, damage: str) -> None:
    first = tmp_path / "first.db"
    assert store_seed.seed_new_store(f"sqlite:///{first}")
    [template] = cache.glob("*.db")
    if damage == "garbage":
        template.write_bytes(b"not a database" * 100)
    else:  # somebody's store, at the right schema revision, put where the template was
        MlflowClient(f"sqlite:///{first}").create_experiment("somebody's")
        shutil.copyfile(first, template)
    store_seed.migrated_template.cache_clear()  # a new process finds the file as it is

    second = tmp_path / "second.db"
    assert store_seed.seed_new_store(f"sqlite:///{second}")
    assert _schema(second) == _schema(first) == _schema(template)
    with closing(sqlite3.connect(second)) as db:
        assert db.execute("SELECT count(*) FROM experiments").fetchone() == (0,)


def test_without_a_writable_cache_mlflow_creates_the_store_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("the cache cannot be a directory under a file, not even for root")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    store_seed.migrated_template.cache_clear()
    try:
        assert not store_seed.seed_new_store(f"sqlite:///{tmp_path / 'a.db'}")
        client = make_client(Settings(home=tmp_path / "home"))
        assert [e.name for e in client.search_experiments()] == ["Default"]
    finally:
        store_seed.migrated_template.cache_clear()


_RACER = """
import sys
from tools.core.store_seed import migrated_template, seed_new_store
migrated_template()  # found in the cache before the start, so the racers meet at the copy
sys.stdin.readline()  # all start together
print(seed_new_store(sys.argv[1]))
"""


def test_processes_creating_the_same_store_at_once_end_with_one_copy(cache: Path, tmp_path: Path) -> None:
    assert store_seed.seed_new_store(f"sqlite:///{tmp_path / 'warm.db'}")  # the template exists
    store = tmp_path / "shared.db"
    env = {"PATH": "/usr/bin:/bin", "XDG_CACHE_HOME": str(tmp_path / "cache"), "HOME": str(tmp_path)}
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, f"sqlite:///{store}"], cwd=REPO, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )
        for _ in range(4)
    ]  # fmt: skip
    for racer in racers:
        assert racer.stdin is not None
        racer.stdin.write("go\n")
        racer.stdin.flush()
    outputs = [racer.communicate(timeout=120)[0].strip() for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0, 0, 0]
    assert sorted(outputs) == ["False", "False", "False", "True"]  # one copy linked; the others left it
    assert _schema(store) == _schema(tmp_path / "warm.db")
    assert [e.name for e in MlflowClient(f"sqlite:///{store}").search_experiments()] == ["Default"]
    assert not list(tmp_path.glob(".shared.db.*"))  # no scratch copy left beside the store
