"""Verified dataset frames kept in memory, so jobs forked from the warm fork server skip re-reading them.

The fork server preloads the workspace's small datasets (``preload_workspace``); every job forked from it
inherits the frames. A lookup is keyed by the file's identity (resolved path, size, mtime) and by the
catalog's sha256 the bytes were verified against when read, so:
- a file whose size or mtime changed is read and hashed again, and a content that no longer matches the
  catalog raises ``ChecksumMismatch`` exactly as an uncached read does;
- an S3 entry is keyed by its object version ID and sha256 (an object version never changes), so a warm
  worker downloads it once and reuses it for its later jobs; the guard checks the version before each launch.
- a file rewritten in place with the same size and mtime (nanoseconds) is not noticed here. That is
  covered by the guard: its ``versioned_data`` rule hashes the file before every launch, which is the one
  full verification each launch keeps.
Each job process holds its own copy (fork); nothing here is shared between processes at run time.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from tools.core.registry import DatasetRecord, DatasetRegistry

#: datasets larger than this are not preloaded by the fork server (jobs read them as usual).
PRELOAD_MAX_BYTES = 16 * 1024 * 1024
_MAX_ENTRIES = 8
_frames: dict[tuple[object, ...], pd.DataFrame] = {}


def load_verified_frame(
    registry: DatasetRegistry, record: DatasetRecord, drop_pii: bool = True
) -> pd.DataFrame:
    """Return the dataset as a DataFrame (checksum verified when read; see the module docstring).

    The caller gets its own copy: changing it does not change the cached frame.
    """
    key = _key(registry, record, drop_pii)
    frame = _frames.get(key) if key is not None else None
    if frame is None:
        frame = registry.load_frame(record, drop_pii=drop_pii)  # verifies the sha256
        if key is not None:
            if len(_frames) >= _MAX_ENTRIES:
                _frames.pop(next(iter(_frames)))
            _frames[key] = frame
    return frame.copy()


def _key(registry: DatasetRegistry, record: DatasetRecord, drop_pii: bool) -> tuple[object, ...] | None:
    schema = tuple(sorted(record.schema.dtypes.items()))
    pii = tuple(record.pii_columns) if drop_pii else ()
    if record.in_s3:  # an S3 object version never changes: its verified frame stays valid in this process
        return ("s3", record.uri, record.s3_version_id, record.sha256, record.format, schema, pii)
    path = registry.local_path(record)
    try:
        stat = path.stat()
    except OSError:
        return None  # missing: the uncached read raises the usual error
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns, record.sha256, schema, pii)


def preload_workspace(catalog_path: Path, data_dir: Path, max_bytes: int = PRELOAD_MAX_BYTES) -> int:
    """Read and verify the validated datasets of a workspace up to ``max_bytes`` in all; return how many.

    Also prepares each one's MLflow dataset input (``tools.training._run_logging.dataset_input``),
    whose schema inference costs every run ~30 ms otherwise. A dataset that fails verification is
    skipped: the job that asks for it reads it and fails with the usual error.
    """
    from tools.core.registry import DatasetRegistry, RegistryError
    from tools.training._run_logging import dataset_input

    if not catalog_path.is_file():
        return 0
    registry = DatasetRegistry(catalog_path, data_dir)
    budget, loaded = max_bytes, 0
    try:
        records = registry.list("validated")
    except RegistryError:
        return 0
    if any(r.in_s3 for r in records):
        import boto3  # noqa: F401 - ~0.4 s a worker would otherwise pay on its first S3 job
    for record in records:
        if record.in_s3:
            continue  # read by the first job that needs it (its worker keeps the frame); no network here
        try:
            size = registry.local_path(record).stat().st_size
            if size > budget:
                continue
            frame = load_verified_frame(registry, record)
            dataset_input(record, frame)
        except Exception:  # noqa: BLE001 - preloading only saves time; the job reports the error
            continue
        budget -= size
        loaded += 1
    return loaded


def clear() -> None:
    """Forget every cached frame (tests)."""
    _frames.clear()
