"""The dataset registry: versioned, checksummed datasets (stands in for Data Engineering's catalog).

The catalog is one JSON file (``settings.resolved_catalog_path``); data files (CSV or Parquet) live under
``settings.data_dir/<name>/<version>.<format>``, or stay where Data Engineering keeps them: an entry may
pin an S3 object version (``s3://bucket/key``, version ID, sha256; see ``tools.core.s3_datasets``).
Writers take a file lock and replace the catalog atomically, so concurrent registrations never lose an
entry and a crash never leaves half a catalog.
A workspace without a catalog gets the demo catalog (see ``tools.core.demo_catalog``) on first open.
"""

from __future__ import annotations

import builtins
import csv
import fcntl
import hashlib
import io
import json
import os
import re
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from tools.core.dataset_formats import (
    DataFormat,
    FormatError,
    csv_table,
    format_of,
    infer_task,
    parquet_table,
    read_frame,
)
from tools.core.object_store import ObjectStoreError, S3Reader, is_s3_uri, parse_s3_uri
from tools.core.redact import redact_text
from tools.core.s3_datasets import (
    ObjectCheckFailed,
    check_object,
    check_versioned_bucket,
    pinned_location,
    read_object,
)
from tools.core.settings import Settings

if TYPE_CHECKING:
    import pandas as pd

    from tools.core.demo_catalog import DemoTable

Task = Literal["classification", "regression"]
Status = Literal["validated", "raw", "deprecated"]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: version strings that name no version at all; an explicit, immutable version is always required.
FLOATING_VERSIONS = frozenset({"", "latest", "current", "newest", "head", "*", "default"})
#: a data file changed within this many nanoseconds before it was hashed is hashed again on every check.
_SETTLED_NS = 2_000_000_000


class RegistryError(Exception):
    """Base class for dataset registry errors; the message says what to do."""


class DatasetNotFound(RegistryError, LookupError):
    """No dataset with that name, or no such version of it."""


class ChecksumMismatch(RegistryError):
    """The file on disk does not match the sha256 recorded in the catalog."""


class VersionExists(RegistryError):
    """The version is already registered; versions are immutable."""


class InvalidDataset(RegistryError, ValueError):
    """The file or the registration arguments are not usable."""


class DatasetSchema(BaseModel):
    """Shape of a dataset: its columns, their dtypes, the target column and the learning task."""

    columns: list[str] = Field(description="Column names in file order.")
    dtypes: dict[str, str] = Field(description="Column name -> dtype (int64, float64 or string).")
    target: str = Field(description="Column the model predicts.")
    task: Task = Field(description="classification or regression.")
    n_rows: int = Field(default=0, ge=0, description="Number of data rows (the header excluded).")


with warnings.catch_warnings():
    # The contract names this field ``schema``; it deliberately shadows the deprecated BaseModel.schema().
    warnings.filterwarnings("ignore", message='Field name "schema"')

    class DatasetRecord(BaseModel):
        """One immutable dataset version in the catalog (metadata only, never rows)."""

        name: str = Field(description="Dataset name, e.g. 'breast_cancer'.")
        version: str = Field(description="Immutable version, e.g. '1'.")
        uri: str = Field(
            description="Where the data is: the workspace file (file:// URI) or the S3 object (s3://bucket/key)."
        )
        sha256: str = Field(description="sha256 of the file's bytes, verified before every read.")
        format: DataFormat = Field(default="csv", description="File format: csv or parquet.")
        s3_version_id: str | None = Field(
            default=None, description="For s3:// entries: the S3 object version ID the entry pins (required)."
        )
        status: Status = Field(description="validated (trainable), raw (not validated) or deprecated.")
        schema: DatasetSchema = Field(description="Columns, dtypes, target and task.")  # type: ignore[assignment]
        pii_columns: list[str] = Field(default_factory=list, description="Columns holding personal data.")
        owner: str = Field(default="unknown", description="Team or person responsible for the dataset.")
        description: str = Field(default="", description="What the data is.")
        created_at: datetime = Field(description="When this version was registered (UTC).")

        @property
        def ref(self) -> str:
            """Return ``name@version``."""
            return f"{self.name}@{self.version}"

        @property
        def in_s3(self) -> bool:
            """Whether the data is an S3 object (read through boto3) rather than a workspace file."""
            return is_s3_uri(self.uri)


def split_ref(ref: str) -> tuple[str, str]:
    """Split ``'name@version'``; raise DatasetNotFound if the version part is missing."""
    name, sep, version = ref.strip().partition("@")
    if not sep or version.strip().lower() in FLOATING_VERSIONS:
        raise DatasetNotFound(f"{ref!r} has no explicit version; use NAME@VERSION, e.g. breast_cancer@1")
    return name.strip(), version.strip()


def version_sort_key(version: str) -> tuple[Any, ...]:
    """Order versions naturally: '2' < '10', numeric parts before text."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[._-]", version))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tables_to_csv(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> bytes:
    """Serialise rows as UTF-8 CSV with '\\n' line ends (the byte layout every checksum depends on)."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---- schema inference -----------------------------------------------------------------------------


def infer_schema(
    data: bytes, target: str, task: Task | None = None, source: str = "file", fmt: DataFormat = "csv"
) -> DatasetSchema:
    """Infer columns, dtypes and (unless given) the task from CSV or Parquet bytes; check the target."""
    try:
        header, dtypes, columns = parquet_table(data, source) if fmt == "parquet" else csv_table(data, source)
    except FormatError as exc:
        raise InvalidDataset(str(exc)) from exc
    if target not in header:
        raise InvalidDataset(f"target column {target!r} is not in {source}; columns: {', '.join(header)}")
    missing = columns[target].count("")
    if missing:
        raise InvalidDataset(f"target column {target!r} has {missing} empty cells in {source}")
    inferred = task or infer_task(columns[target], dtypes[target])
    if inferred == "regression" and dtypes[target] == "string":
        raise InvalidDataset(f"target column {target!r} is text; it cannot be a regression target")
    n_rows = len(columns[target])
    return DatasetSchema(columns=header, dtypes=dtypes, target=target, task=inferred, n_rows=n_rows)


# ---- the registry ---------------------------------------------------------------------------------


class DatasetRegistry:
    """Versioned dataset catalog. Build with :meth:`open`; safe for concurrent processes."""

    def __init__(self, catalog_path: Path, data_dir: Path, objects: S3Reader | None = None) -> None:
        self.catalog_path = Path(catalog_path)
        self.data_dir = Path(data_dir)
        self.objects = objects or S3Reader()  # s3:// entries; boto3 is imported on first use only
        self._object_digests: dict[tuple[str, str, str], str] = {}  # see tools.core.s3_datasets
        self._cache_key: tuple[int, int] | None = None
        self._records: dict[tuple[str, str], DatasetRecord] = {}
        self._digests: dict[Path, tuple[tuple[int, ...], str]] = {}  # see _file_sha256

    @classmethod
    def open(cls, settings: Settings) -> DatasetRegistry:
        """Open the catalog of ``settings``, creating the demo catalog if the file does not exist."""
        registry = cls(settings.resolved_catalog_path, settings.data_dir, S3Reader(settings.s3_endpoint_url))
        if not registry.catalog_path.exists():
            with registry._locked():
                if not registry.catalog_path.exists():  # another process may have just created it
                    registry._create_demo_catalog()
        return registry

    # -- reading --

    def list(self, status: Status | None = None) -> list[DatasetRecord]:
        """Return all records (optionally of one status), sorted by name and version."""
        records = self._load().values()
        chosen = [r for r in records if status is None or r.status == status]
        return sorted(chosen, key=lambda r: (r.name, version_sort_key(r.version)))

    def versions(self, name: str) -> builtins.list[str]:
        """Return the registered versions of ``name``, oldest first."""
        return [r.version for r in self.list() if r.name == name]

    def get(self, name: str, version: str) -> DatasetRecord:
        """Return ``name@version``; raise DatasetNotFound naming the available versions."""
        record = self._load().get((name, str(version)))
        if record is not None:
            return record
        available = self.versions(name)
        if available:
            shown = ", ".join(f"{name}@{v}" for v in available)
            raise DatasetNotFound(f"dataset {name}@{version} is not registered; available versions: {shown}")
        names = sorted({r.name for r in self.list()})
        raise DatasetNotFound(f"no dataset named {name!r} is registered; known datasets: {', '.join(names)}")

    def resolve(self, ref: str) -> DatasetRecord:
        """Return the record for ``'name@version'``."""
        return self.get(*split_ref(ref))

    def latest_validated(self, name: str) -> DatasetRecord | None:
        """Return the newest validated version of ``name``, if any."""
        validated = [r for r in self.list("validated") if r.name == name]
        return validated[-1] if validated else None

    def local_path(self, record: DatasetRecord) -> Path:
        """Return the data file of ``record`` under this workspace's data directory."""
        # Resolved from data_dir rather than the stored URI so a workspace can be moved or mounted
        # elsewhere (e.g. in a Kubernetes container) without rewriting the catalog.
        return self.data_dir / record.name / f"{record.version}.{record.format}"

    def verify(self, record: DatasetRecord) -> bool:
        """Return whether the data exists and matches the recorded sha256 (see :meth:`problem`)."""
        return self.problem(record) is None

    def problem(self, record: DatasetRecord) -> str | None:
        """Return why ``record``'s data cannot be trained on as registered (one line), or None if it can.

        A workspace file must exist and match its sha256. An S3 entry must pin an object version in a
        bucket with versioning enabled, and that version's bytes must match the sha256.
        """
        if record.in_s3:
            try:
                check_object(record.ref, record.uri, record.s3_version_id, record.sha256, self.objects,
                             self._object_digests)  # fmt: skip
            except ObjectCheckFailed as exc:
                return str(exc)
            return None
        try:
            if self._file_sha256(self.local_path(record)) == record.sha256:
                return None
        except FileNotFoundError:
            pass
        return (
            f"{record.ref}: the file on disk does not match the catalog sha256 {record.sha256[:12]}…; the "
            "data changed after registration. Ask Data Engineering to restore it or register a new version."
        )

    def _file_sha256(self, path: Path) -> str:
        """Return the sha256 of ``path``'s bytes, reusing the last digest while the file is unchanged."""
        # Writing, truncating, replacing (rename over it) or re-timing (utime) the file changes its
        # (device, inode, size, mtime, ctime). Timestamps are coarse (a clock tick), so a file changed
        # less than _SETTLED_NS before hashing is never cached: a later change gets a later ctime.
        started = time.time_ns()
        stat = path.stat()
        signature = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
        cached = self._digests.get(path)
        if cached is not None and cached[0] == signature:
            return cached[1]
        digest = sha256_bytes(path.read_bytes())
        if started - max(stat.st_mtime_ns, stat.st_ctime_ns) > _SETTLED_NS:
            self._digests[path] = (signature, digest)
        return digest

    def read_verified_bytes(self, record: DatasetRecord) -> bytes:
        """Return the data's bytes after checking them against the catalog; raise ChecksumMismatch."""
        if record.in_s3:
            try:
                return read_object(record.ref, record.uri, record.s3_version_id, record.sha256, self.objects,
                                   self._object_digests)  # fmt: skip
            except ObjectCheckFailed as exc:
                raise ChecksumMismatch(str(exc)) from exc
        path = self.local_path(record)
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise ChecksumMismatch(f"{record.ref}: data file {path} is missing") from exc
        actual = sha256_bytes(data)
        if actual != record.sha256:
            raise ChecksumMismatch(
                f"{record.ref}: file {path} has sha256 {actual}, the catalog expects {record.sha256}; "
                "the data changed after registration, ask Data Engineering to restore or re-version it"
            )
        return data

    def load_frame(self, record: DatasetRecord, drop_pii: bool = True) -> pd.DataFrame:
        """Read the dataset as a DataFrame after verifying its checksum; PII columns dropped by default."""
        data = self.read_verified_bytes(record)
        frame = read_frame(data, record.format, record.schema.dtypes)
        if drop_pii:
            frame = frame.drop(columns=[c for c in record.pii_columns if c in frame.columns])
        return frame

    # -- writing --

    def register(
        self,
        file: Path | str,
        name: str,
        version: str,
        target: str,
        pii: Sequence[str] = (),
        status: Status = "validated",
        owner: str = "unknown",
        description: str = "",
        task: Task | None = None,
    ) -> DatasetRecord:
        """Copy a CSV or Parquet file into the registry as ``name@version``; refuse to overwrite a version.

        The description and owner are redacted before the catalog stores them (the catalog is read back
        into answers and tool results).
        """
        description, owner = redact_text(description), redact_text(owner)
        source = Path(file)
        _check_identifier("name", name)
        _check_identifier("version", version)
        if version.lower() in FLOATING_VERSIONS:
            raise InvalidDataset(f"version {version!r} is not allowed; use an immutable version like '1'")
        fmt = format_of(source.name)
        if fmt is None or not source.is_file():
            raise InvalidDataset(f"{source} must be an existing .csv or .parquet file")
        data = source.read_bytes()
        schema = infer_schema(data, target, task, source=str(source), fmt=fmt)
        _check_pii(list(pii), schema)
        with self._locked():
            records = self._load(force=True)
            self._check_new(records, name, version)
            record = self._store(name, version, data, schema, list(pii), status, owner, description, fmt)
            self._save({**records, (name, version): record})
        return record

    def register_s3(
        self,
        uri: str,
        s3_version_id: str | None,
        name: str,
        version: str,
        target: str,
        sha256: str | None = None,
        pii: Sequence[str] = (),
        status: Status = "validated",
        owner: str = "unknown",
        description: str = "",
        task: Task | None = None,
    ) -> DatasetRecord:
        """Register one S3 object version (CSV or Parquet) as ``name@version``; the data stays in S3.

        The bucket must have versioning enabled and the version ID must be given (``s3://b/k?versionId=V``
        works too). The object is read once to compute its sha256 (which must equal ``sha256`` when given,
        e.g. the checksum Data Engineering published) and to infer the schema.
        """
        description, owner = redact_text(description), redact_text(owner)
        _check_identifier("name", name)
        _check_identifier("version", version)
        try:
            location = parse_s3_uri(uri)
        except ValueError as exc:
            raise InvalidDataset(str(exc)) from exc
        if version.lower() in FLOATING_VERSIONS:
            raise InvalidDataset(f"version {version!r} is not allowed; use an immutable version like '1'")
        ref = f"{name}@{version}"
        fmt = format_of(location.key)
        if fmt is None:
            raise InvalidDataset(f"{location.uri} must name a .csv or .parquet object")
        try:
            check_versioned_bucket(ref, location.bucket, self.objects)
            pinned = pinned_location(ref, location.uri, s3_version_id or location.version_id)
            data = self.objects.read(pinned)
        except ObjectCheckFailed as exc:
            raise InvalidDataset(str(exc)) from exc
        except ObjectStoreError as exc:
            raise InvalidDataset(f"{ref}: {exc}") from exc
        if sha256 and sha256_bytes(data) != sha256.strip().lower():
            raise InvalidDataset(
                f"{ref}: S3 object {pinned} has sha256 {sha256_bytes(data)}, not the {sha256.strip()} given; "
                "check the version ID and the published checksum"
            )
        schema = infer_schema(data, target, task, source=str(pinned), fmt=fmt)
        record = DatasetRecord(
            name=name, version=version, uri=pinned.uri, s3_version_id=pinned.version_id,
            sha256=sha256_bytes(data), format=fmt, status=status, schema=schema, pii_columns=list(pii),
            owner=owner, description=description, created_at=datetime.now(UTC),
        )  # fmt: skip
        return self._add(record)

    def _add(self, record: DatasetRecord) -> DatasetRecord:
        """Add a record whose data lives outside the workspace (an S3 object); never overwrite a version."""
        _check_pii(record.pii_columns, record.schema)
        with self._locked():
            records = self._load(force=True)
            self._check_new(records, record.name, record.version)
            self._save({**records, (record.name, record.version): record})
        return record

    def _check_new(self, records: dict[tuple[str, str], DatasetRecord], name: str, version: str) -> None:
        if (name, version) in records:
            existing = records[(name, version)]
            taken = ", ".join(self.versions(name))
            raise VersionExists(
                f"{name}@{version} already exists (sha256 {existing.sha256[:12]}…); versions are "
                f"immutable, register a new version instead (registered versions: {taken})"
            )

    def _store(
        self,
        name: str,
        version: str,
        data: bytes,
        schema: DatasetSchema,
        pii: builtins.list[str],
        status: Status,
        owner: str,
        description: str,
        fmt: DataFormat = "csv",
    ) -> DatasetRecord:
        path = self.data_dir / name / f"{version}.{fmt}"
        _atomic_write(path, data)
        return DatasetRecord(
            name=name, version=version, uri=path.resolve().as_uri(), sha256=sha256_bytes(data), format=fmt,
            status=status, schema=schema, pii_columns=pii, owner=owner, description=description,
            created_at=datetime.now(UTC),
        )  # fmt: skip

    def _save(self, records: dict[tuple[str, str], DatasetRecord]) -> None:
        ordered = sorted(records.values(), key=lambda r: (r.name, version_sort_key(r.version)))
        payload = {"format": 1, "datasets": [r.model_dump(mode="json") for r in ordered]}
        try:
            _atomic_write(self.catalog_path, (json.dumps(payload, indent=2) + "\n").encode("utf-8"))
        except BaseException:
            for key in set(records) - set(self._records):  # new data files no catalog refers to
                if not records[key].in_s3:
                    self.local_path(records[key]).unlink(missing_ok=True)
            raise
        self._records, self._cache_key = dict(records), None

    def _create_demo_catalog(self) -> None:
        from tools.core.demo_catalog import DEMO_OWNER, demo_tables

        records = {}
        for table in demo_tables():
            records[(table.name, table.version)] = self._store_demo(table, DEMO_OWNER)
        self._save(records)

    def _store_demo(self, table: DemoTable, owner: str) -> DatasetRecord:
        data = tables_to_csv(table.columns, table.rows)
        schema = DatasetSchema(
            columns=table.columns, dtypes=table.dtypes, target=table.target, task=table.task,
            n_rows=len(table.rows),
        )  # fmt: skip
        return self._store(
            table.name, table.version, data, schema, table.pii_columns, table.status, owner, table.description
        )

    def _load(self, force: bool = False) -> dict[tuple[str, str], DatasetRecord]:
        """Return the catalog's records, re-reading the file only when it changed."""
        try:
            stat = self.catalog_path.stat()
        except FileNotFoundError:
            return {}
        key = (stat.st_mtime_ns, stat.st_size)
        if force or key != self._cache_key:
            try:
                payload = json.loads(self.catalog_path.read_text(encoding="utf-8"))
                records = [DatasetRecord.model_validate(item) for item in payload["datasets"]]
            except (ValueError, KeyError, TypeError) as exc:
                raise RegistryError(
                    f"the dataset catalog {self.catalog_path} is damaged ({exc}); restore it or point "
                    "EXPAGENT_CATALOG_PATH at a valid catalog"
                ) from exc
            self._records, self._cache_key = {(r.name, r.version): r for r in records}, key
        return self._records

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold an exclusive lock on the catalog (a sidecar ``.lock`` file) for the block."""
        lock_path = self.catalog_path.with_name(self.catalog_path.name + ".lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _check_identifier(kind: str, value: str) -> None:
    if not _NAME_RE.match(value or ""):
        raise InvalidDataset(
            f"dataset {kind} {value!r} is invalid; use letters, digits, '.', '_' or '-' (no '@' or '/')"
        )


def _check_pii(pii: list[str], schema: DatasetSchema) -> None:
    unknown = [c for c in pii if c not in schema.columns]
    if unknown:
        raise InvalidDataset(f"PII columns not in the file: {', '.join(unknown)}")
    if schema.target in pii:
        raise InvalidDataset(f"the target column {schema.target!r} cannot be a PII column")
