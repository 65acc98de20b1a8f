"""The dataset a job trains on: its catalog record (or the launcher's copy) and, for user code, a file.

A job finds the record in the workspace catalog; a Kubernetes pod reading an S3 object needs no shared
workspace, because the launcher sends the verified record with the object version
(``spec.data_source.catalog_entry``). Either way the record must be the object version the run was
launched with (``pinned_record``).

User code (an entry point) reads a file named by ``EXPAGENT_DATASET_PATH``. A workspace file without
personal data is handed over as it is (checked against the catalog's sha256 by the guard before the
launch and here again). An S3 object version, or a file with PII columns, is written to a private
temporary file for the run — the verified bytes, with the catalog's PII columns removed, in the
dataset's own format — and deleted when the run ends, so user code sees exactly what the built-in
families train on.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tools.core.dataset_formats import write_frame
from tools.core.registry import ChecksumMismatch, DatasetNotFound, DatasetRecord, DatasetRegistry
from tools.core.specs import TrainingSpec


def catalog_record(spec: TrainingSpec, registry: DatasetRegistry) -> DatasetRecord:
    """Return the dataset's registry record: from the catalog, else the one the launcher passed along."""
    try:
        return registry.get(spec.dataset, spec.version)
    except DatasetNotFound:
        entry = spec.data_source.catalog_entry if spec.data_source else None
        if entry is None:
            raise
        return DatasetRecord.model_validate(entry)


def pinned_record(spec: TrainingSpec, record: DatasetRecord) -> DatasetRecord:
    """Return ``record``, checked against the S3 object version the launcher passed in ``spec.data_source``.

    The job reads exactly the object version (and checks exactly the sha256) it was given; the catalog only
    supplies the schema. An entry that no longer agrees with what was launched stops the run.
    """
    source = spec.data_source
    if source is None:
        return record
    pinned = (source.uri, source.version_id, source.sha256, source.format)
    if (record.uri, record.s3_version_id, record.sha256, record.format) != pinned:
        raise ChecksumMismatch(
            f"{record.ref}: the catalog entry ({record.uri} version {record.s3_version_id}) is not the "
            f"object version this run was launched with ({source.uri} version {source.version_id}); "
            "nothing was trained"
        )
    return record


@contextmanager
def dataset_file(registry: DatasetRegistry, record: DatasetRecord) -> Iterator[Path]:
    """Yield a verified file of the dataset for user code (module docstring); raise ChecksumMismatch."""
    if not record.in_s3 and not record.pii_columns:
        problem = registry.problem(record)  # a missing or changed file
        if problem:
            raise ChecksumMismatch(problem)
        yield registry.local_path(record)
        return
    if record.pii_columns:  # verified, PII columns dropped: what the built-in families read
        data = write_frame(registry.load_frame(record), record.format)
    else:
        data = registry.read_verified_bytes(record)
    scratch = Path(tempfile.mkdtemp(prefix="expagent-data-"))
    try:
        path = scratch / f"{record.name}-{record.version}.{record.format}"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        yield path
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
