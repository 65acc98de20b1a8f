"""The cache of verified dataset frames (tools/dataset_cache.py) and the fork server's store copy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tools.core.registry import ChecksumMismatch, DatasetRegistry
from tools.core.settings import Settings
from tools.training import dataset_cache


@pytest.fixture()
def registry(tmp_path: Path) -> DatasetRegistry:
    dataset_cache.clear()
    settings = Settings(home=tmp_path)
    settings.ensure_home()
    return DatasetRegistry.open(settings)


def test_a_cached_frame_is_not_read_again_and_callers_get_their_own_copy(
    registry: DatasetRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = registry.get("breast_cancer", "1")
    first = dataset_cache.load_verified_frame(registry, record)
    first.iloc[0, 0] = -1.0  # a caller changing its frame does not change the cache
    monkeypatch.setattr(registry, "load_frame", lambda *a, **k: pytest.fail("read the file again"))
    second = dataset_cache.load_verified_frame(registry, record)
    assert second.iloc[0, 0] != -1.0
    assert list(second.columns) == list(first.columns)


def test_a_file_changed_after_caching_is_refused(registry: DatasetRegistry) -> None:
    record = registry.get("breast_cancer", "1")
    dataset_cache.load_verified_frame(registry, record)
    path = registry.local_path(record)
    stat = path.stat()
    path.write_bytes(path.read_bytes().replace(b"1", b"2", 1) + b"\n")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    with pytest.raises(ChecksumMismatch):
        dataset_cache.load_verified_frame(registry, record)


def test_the_fork_server_preloads_the_workspace_datasets(registry: DatasetRegistry) -> None:
    loaded = dataset_cache.preload_workspace(registry.catalog_path, registry.data_dir)
    assert loaded == len(registry.list("validated")) > 0
    assert dataset_cache.preload_workspace(registry.catalog_path, registry.data_dir, max_bytes=0) == 0
