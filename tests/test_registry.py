"""Dataset registry: deterministic demo catalog, immutable versions, checksums, PII handling, tools."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from pathlib import Path

import pytest

from tools.context import ToolContext
from tools.core.registry import (
    ChecksumMismatch,
    DatasetNotFound,
    DatasetRegistry,
    InvalidDataset,
    RegistryError,
    VersionExists,
)
from tools.core.settings import Settings
from tools.guard.policy import guarded_call

# Computed once from the demo builders; a change means the demo data is no longer reproducible.
EXPECTED_SHA256 = {
    "breast_cancer@1": "432ff316e7bfb60b70a275064b4401315cc39f09c9099d031013a23647e98687",
    "iris@1": "1e52d3d96ba49c50fe132731766e8b9b3d456d7b44163a4d62d2a256e19005e5",
    "diabetes@1": "3b271426c1bd56aebb217e16eb31a4b0f5a5669fe59258d6c6c65411a115cd22",
    "customer_churn@1": "822825fbef8d991e099f94c73a95ccb26cbb5143782f4f508766a1be80298911",
}


@pytest.fixture
def settings(demo_home: Path, tmp_path: Path) -> Settings:
    home = tmp_path / "home"
    shutil.copytree(demo_home, home)
    return Settings(home=home)


@pytest.fixture
def registry(settings: Settings) -> DatasetRegistry:
    return DatasetRegistry.open(settings)


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_demo_catalog_has_validated_raw_deprecated_and_pii_datasets(registry: DatasetRegistry) -> None:
    by_ref = {r.ref: r for r in registry.list()}
    for ref in ("breast_cancer@1", "wine@1", "diabetes@1", "digits@1", "iris@1", "customer_churn@1"):
        assert by_ref[ref].status == "validated"
    assert by_ref["customer_events@1"].status == "raw"
    assert by_ref["wine@0"].status == "deprecated"
    assert by_ref["diabetes@1"].schema.task == "regression"
    assert by_ref["breast_cancer@1"].schema.task == "classification"
    assert by_ref["customer_churn@1"].pii_columns == ["email", "phone"]
    assert by_ref["customer_churn@1"].schema.target == "churned"
    assert [r.ref for r in registry.list("raw")] == ["customer_events@1"]


def test_demo_checksums_are_the_same_on_every_machine(registry: DatasetRegistry) -> None:
    for ref, sha in EXPECTED_SHA256.items():
        record = registry.resolve(ref)
        assert record.sha256 == sha, ref
        assert registry.verify(record)


def test_demo_catalog_is_created_once(settings: Settings) -> None:
    before = settings.resolved_catalog_path.stat().st_mtime_ns
    DatasetRegistry.open(settings)
    assert settings.resolved_catalog_path.stat().st_mtime_ns == before


def test_catalog_path_can_be_configured(demo_home: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(demo_home, home)
    custom = tmp_path / "elsewhere" / "catalog.json"
    shutil.copy(home / "registry" / "catalog.json", custom.parent.mkdir() or custom)
    registry = DatasetRegistry.open(Settings(home=home, catalog_path=custom))
    registry.register(write_csv(tmp_path / "t.csv", "x,y\n1,0\n2,1\n"), name="tiny", version="1", target="y")
    assert "tiny" in custom.read_text()
    assert "tiny" not in (home / "registry" / "catalog.json").read_text()


def test_a_damaged_catalog_is_reported_clearly(settings: Settings) -> None:
    settings.resolved_catalog_path.write_text('{"datasets": [{"name": "x"}]}')
    with pytest.raises(RegistryError, match="catalog .* is damaged"):
        DatasetRegistry.open(settings).list()


def test_unknown_version_names_the_available_ones(registry: DatasetRegistry) -> None:
    with pytest.raises(
        DatasetNotFound, match=r"wine@7 is not registered; available versions: wine@0, wine@1"
    ):
        registry.get("wine", "7")
    with pytest.raises(DatasetNotFound, match="known datasets: breast_cancer"):
        registry.get("no_such_data", "1")


@pytest.mark.parametrize("ref", ["wine", "wine@", "wine@latest", "wine@LATEST"])
def test_resolve_requires_an_explicit_version(registry: DatasetRegistry, ref: str) -> None:
    with pytest.raises(DatasetNotFound, match="explicit version"):
        registry.resolve(ref)


def test_register_copies_checksums_and_infers_the_schema(registry: DatasetRegistry, tmp_path: Path) -> None:
    source = write_csv(
        tmp_path / "loans.csv", "amount,rate,grade,email,defaulted\n100,0.5,A,a@x.io,0\n250,1.5,B,,1\n"
    )
    record = registry.register(
        source, name="loans", version="1", target="defaulted", pii=["email"], owner="de"
    )
    assert record.schema.dtypes == {
        "amount": "int64", "rate": "float64", "grade": "string", "email": "string", "defaulted": "int64"
    }  # fmt: skip
    assert (record.schema.task, record.schema.n_rows, record.status) == ("classification", 2, "validated")
    source.write_text("changed\n")  # the registry holds its own copy
    reopened = DatasetRegistry.open(Settings(home=registry.data_dir.parent.parent))
    assert reopened.verify(reopened.get("loans", "1"))
    assert reopened.get("loans", "1").sha256 == record.sha256


def test_register_infers_regression_for_continuous_targets(registry: DatasetRegistry, tmp_path: Path) -> None:
    rows = "".join(f"{i},{i * 1.5}\n" for i in range(30))
    record = registry.register(
        write_csv(tmp_path / "r.csv", "x,y\n" + rows), name="reg", version="1", target="y"
    )
    assert record.schema.task == "regression"


def test_register_refuses_to_overwrite_a_version(
    registry: DatasetRegistry, settings: Settings, tmp_path: Path
) -> None:
    catalog_before = settings.resolved_catalog_path.read_bytes()
    data_before = (settings.data_dir / "wine" / "1.csv").read_bytes()
    source = write_csv(tmp_path / "w.csv", "a,target\n1,0\n")
    with pytest.raises(VersionExists, match=r"wine@1 already exists .* register a new version"):
        registry.register(source, name="wine", version="1", target="target")
    assert settings.resolved_catalog_path.read_bytes() == catalog_before
    assert (settings.data_dir / "wine" / "1.csv").read_bytes() == data_before


@pytest.mark.parametrize(
    ("text", "kwargs", "message"),
    [
        ("a,b\n1,2\n", {"target": "y"}, "target column 'y' is not in"),
        ("a,y\n1,0\n", {"target": "y", "pii": ["zip"]}, "PII columns not in the file: zip"),
        ("a,y\n1,0\n", {"target": "y", "pii": ["y"]}, "cannot be a PII column"),
        ("a,y\n1,0\n", {"target": "y", "version": "latest"}, "is not allowed"),
        ("a,y\n1,0\n", {"target": "y", "name": "../etc"}, "dataset name '../etc' is invalid"),
        ("a,y\n1\n", {"target": "y"}, "line 2 has 1 cells; the header has 2"),
        ("a,y\n", {"target": "y"}, "no data rows"),
        ("a,a,y\n1,2,0\n", {"target": "y"}, "duplicate column names: a"),
        ("a,y\n1,\n", {"target": "y"}, "target column 'y' has 1 empty cells"),
    ],
)
def test_register_rejects_bad_input_and_changes_nothing(
    registry: DatasetRegistry, settings: Settings, tmp_path: Path, text: str, kwargs: dict, message: str
) -> None:
    catalog_before = settings.resolved_catalog_path.read_bytes()
    args = {"name": "bad", "version": "1", **kwargs}
    with pytest.raises(InvalidDataset, match=message):
        registry.register(write_csv(tmp_path / "bad.csv", text), **args)
    assert settings.resolved_catalog_path.read_bytes() == catalog_before
    assert not (settings.data_dir / "bad").exists()


def test_register_rejects_files_that_are_not_csv_or_parquet(
    registry: DatasetRegistry, tmp_path: Path
) -> None:
    with pytest.raises(InvalidDataset, match="must be an existing .csv or .parquet file"):
        registry.register(tmp_path / "missing.csv", name="m", version="1", target="y")
    with pytest.raises(InvalidDataset, match="must be an existing .csv or .parquet file"):
        registry.register(write_csv(tmp_path / "d.json", "x"), name="m", version="1", target="y")
    with pytest.raises(InvalidDataset, match="is not a readable Parquet file"):
        registry.register(write_csv(tmp_path / "d.parquet", "x"), name="m", version="1", target="y")


def test_a_parquet_file_registers_with_the_schema_of_the_same_csv(
    registry: DatasetRegistry, tmp_path: Path
) -> None:
    import pandas as pd

    source = registry.local_path(registry.get("breast_cancer", "1"))
    pd.read_csv(source).to_parquet(tmp_path / "bc.parquet", index=False)
    record = registry.register(tmp_path / "bc.parquet", name="bc_pq", version="1", target="target")
    csv_record = registry.get("breast_cancer", "1")
    assert record.format == "parquet" and registry.local_path(record).suffix == ".parquet"
    assert record.schema.model_dump() == csv_record.schema.model_dump() and registry.verify(record)
    pd.testing.assert_frame_equal(
        registry.load_frame(record), registry.load_frame(csv_record), check_dtype=False
    )


def test_failed_catalog_write_leaves_the_catalog_and_no_orphan_file(
    registry: DatasetRegistry, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog_before = settings.resolved_catalog_path.read_bytes()
    real_replace = os.replace

    def failing_replace(src: str, dst: str | Path) -> None:
        if Path(dst) == settings.resolved_catalog_path:
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        registry.register(write_csv(tmp_path / "n.csv", "x,y\n1,0\n"), name="new", version="1", target="y")
    assert settings.resolved_catalog_path.read_bytes() == catalog_before
    assert not (settings.data_dir / "new" / "1.csv").exists()
    assert [p.name for p in settings.resolved_catalog_path.parent.glob(".catalog.json.*")] == []


def _register_in_child(home: str, csv_path: str, version: str) -> None:
    DatasetRegistry.open(Settings(home=Path(home))).register(
        csv_path, name="shared", version=version, target="y"
    )


def test_concurrent_registrations_all_land_in_the_catalog(settings: Settings, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "s.csv", "x,y\n1,0\n2,1\n")
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=_register_in_child, args=(str(settings.home), str(source), str(v)))
        for v in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    assert DatasetRegistry.open(settings).versions("shared") == ["0", "1", "2", "3"]


def test_load_frame_verifies_the_checksum_and_drops_pii(registry: DatasetRegistry) -> None:
    record = registry.get("customer_churn", "1")
    frame = registry.load_frame(record)
    assert "email" not in frame.columns and "phone" not in frame.columns
    assert frame.shape == (1000, 8)
    assert list(registry.load_frame(record, drop_pii=False).columns) == record.schema.columns
    path = registry.local_path(record)
    path.write_bytes(path.read_bytes().replace(b"\n100000,", b"\n100001,", 1))
    assert not registry.verify(record)
    with pytest.raises(ChecksumMismatch, match="the catalog expects 822825fbef8d"):
        registry.load_frame(record)


def test_missing_file_fails_verification(registry: DatasetRegistry) -> None:
    record = registry.get("iris", "1")
    registry.local_path(record).unlink()
    assert not registry.verify(record)
    with pytest.raises(ChecksumMismatch, match="is missing"):
        registry.load_frame(record)


def test_lookup_dataset_tool_returns_metadata_never_rows(settings: Settings) -> None:
    ctx = ToolContext(settings=settings, requester="tester")
    outcome = guarded_call("lookup_dataset", {"name": "customer_churn", "version": "1"}, ctx)
    assert outcome.ok and outcome.result is not None
    assert outcome.result["sha256"] == EXPECTED_SHA256["customer_churn@1"]
    assert outcome.result["pii_columns"] == ["email", "phone"]
    first_row = (settings.data_dir / "customer_churn" / "1.csv").read_text().splitlines()[1]
    email = first_row.split(",")[1]
    assert email not in json.dumps(outcome.result)


def test_lookup_dataset_tool_reports_unknown_versions(settings: Settings) -> None:
    outcome = guarded_call("lookup_dataset", {"name": "wine", "version": "9"}, ToolContext(settings=settings))
    assert outcome.allowed and outcome.result is None
    assert outcome.error is not None and "available versions: wine@0, wine@1" in outcome.error


def test_list_datasets_tool_filters_by_status(settings: Settings) -> None:
    ctx = ToolContext(settings=settings)
    everything = guarded_call("list_datasets", {}, ctx).result
    deprecated = guarded_call("list_datasets", {"status": "deprecated"}, ctx).result
    assert everything is not None and deprecated is not None
    assert len(everything["datasets"]) == 8
    assert [d["ref"] for d in deprecated["datasets"]] == ["wine@0"]


def _count_hashing(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the registry's sha256 computations (one entry per file hashed)."""
    import tools.core.registry as registry_module

    hashed: list[int] = []
    real_sha256 = registry_module.sha256_bytes

    def counting(data: bytes) -> str:
        hashed.append(len(data))
        return real_sha256(data)

    monkeypatch.setattr(registry_module, "sha256_bytes", counting)
    return hashed


def test_verify_hashes_again_when_the_file_changes_in_place(
    registry: DatasetRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tools.core.registry as registry_module

    monkeypatch.setattr(registry_module, "_SETTLED_NS", -(10**18))  # treat every file as settled
    hashed = _count_hashing(monkeypatch)
    record = registry.get("iris", "1")
    assert registry.verify(record) and registry.verify(record)
    assert len(hashed) == 1  # unchanged file: its digest is reused
    path = registry.local_path(record)
    data, before = path.read_bytes(), path.stat()
    time.sleep(0.02)  # past the filesystem's timestamp tick
    path.write_bytes(data.replace(b"5.1,3.5", b"5.1,3.6", 1))  # same size, same inode, new content
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the old mtime put back
    assert not registry.verify(record)
    path.write_bytes(data)
    assert registry.verify(record)


def test_verify_never_reuses_the_digest_of_a_file_changed_just_before_hashing(
    registry: DatasetRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashed = _count_hashing(monkeypatch)
    record = registry.get("iris", "1")
    path = registry.local_path(record)
    path.write_bytes(path.read_bytes())  # just written: its timestamps may not move on the next write
    assert registry.verify(record) and registry.verify(record)
    assert len(hashed) == 2
