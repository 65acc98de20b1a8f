"""Read pinned object versions from S3 (or any S3-compatible store) for registry entries.

Data Engineering keeps curated data in versioned buckets; a registry entry pins ``s3://bucket/key`` at one
object version ID with the sha256 of its bytes. This module only talks to the store: it reads a bucket's
versioning status and the bytes of one object version. Checking them against the catalog is the
registry's job (``tools.core.registry``).

Credentials come from boto3's standard chain (environment, shared config/credentials files, web identity
on Kubernetes, instance metadata); nothing here accepts, stores or prints them. The endpoint is boto3's own
``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3``, or ``EXPAGENT_S3_ENDPOINT_URL`` (a setting) when given.
boto3 is imported on first use, so a workspace without S3 datasets never pays for it.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

S3_SCHEME = "s3://"
#: what ``versioning_status`` returns for a bucket whose versioning was never turned on.
NEVER_ENABLED = "never enabled"
#: S3 error codes meaning "this object version does not exist (any more)".
_MISSING_CODES = frozenset({"NoSuchKey", "NoSuchVersion", "404", "NotFound", "InvalidArgument"})


class ObjectStoreError(Exception):
    """The store could not be reached or refused the request; the message says what to do."""


class ObjectVersionMissing(ObjectStoreError):
    """The bucket, key or object version does not exist (deleted, or never written)."""


@dataclass(frozen=True)
class S3Location:
    """An object in a bucket, optionally at one version."""

    bucket: str
    key: str
    version_id: str | None = None

    @property
    def uri(self) -> str:
        """Return ``s3://bucket/key`` (the version is kept apart, as the registry stores it)."""
        return f"{S3_SCHEME}{self.bucket}/{self.key}"

    def __str__(self) -> str:
        return self.uri + (f" (version {self.version_id})" if self.version_id else "")


def is_s3_uri(uri: str) -> bool:
    return uri.strip().lower().startswith(S3_SCHEME)


def parse_s3_uri(uri: str) -> S3Location:
    """Parse ``s3://bucket/key`` or ``s3://bucket/key?versionId=V``; raise ValueError when malformed."""
    parts = urlsplit(uri.strip())
    key = parts.path.lstrip("/")
    if parts.scheme.lower() != "s3" or not parts.netloc or not key or key.endswith("/"):
        raise ValueError(f"{uri!r} is not an S3 object URI; use s3://BUCKET/KEY")
    versions = parse_qs(parts.query).get("versionId", [])
    return S3Location(bucket=parts.netloc, key=key, version_id=versions[0] if versions else None)


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


_CLIENTS: dict[tuple[int | str | None, ...], Any] = {}
_CLIENTS_LOCK = threading.Lock()


def _client(endpoint_url: str | None) -> Any:
    """Return this process's S3 client for ``endpoint_url`` (made once: a client costs ~0.25 s to build).

    Keyed by process ID as well: a process forked from one that had a client (a warm worker) makes its own.
    """
    # What boto3 resolves from the environment is part of the key, so a changed environment (another
    # endpoint, profile or key) gets a new client rather than a stale one.
    env = tuple(os.environ.get(n) for n in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE",
                                             "AWS_ACCESS_KEY_ID"))  # fmt: skip
    key = (os.getpid(), endpoint_url, *env)
    with _CLIENTS_LOCK:
        if key not in _CLIENTS:
            import boto3
            from botocore.config import Config

            # Bounded: a guard check against an unreachable store must fail in seconds, not minutes.
            retries: Any = {"max_attempts": 3, "mode": "standard"}
            config = Config(connect_timeout=5, read_timeout=60, retries=retries)
            session = boto3.session.Session()
            _CLIENTS[key] = session.client("s3", endpoint_url=endpoint_url, config=config)
        return _CLIENTS[key]


class S3Reader:
    """Versioning status and object bytes from S3 through the process's boto3 client, made on first use."""

    def __init__(self, endpoint_url: str | None = None) -> None:
        self.endpoint_url = endpoint_url or None  # None: boto3 reads AWS_ENDPOINT_URL(_S3) itself

    def client(self) -> Any:
        return _client(self.endpoint_url)

    def versioning_status(self, bucket: str) -> str:
        """Return the bucket's versioning status: 'Enabled', 'Suspended' or NEVER_ENABLED."""
        response = self._call(f"s3://{bucket}", "get_bucket_versioning", Bucket=bucket)
        return str(response.get("Status") or NEVER_ENABLED)

    def head(self, location: S3Location) -> dict[str, Any]:
        """Return the object version's metadata (size, ETag, VersionId); raise ObjectVersionMissing."""
        return self._call(str(location), "head_object", **_object_args(location))

    def read(self, location: S3Location) -> bytes:
        """Return the bytes of the object (at ``location.version_id`` when set)."""
        response = self._call(str(location), "get_object", **_object_args(location))
        body = response["Body"]
        try:
            return bytes(body.read())
        finally:
            body.close()

    def _call(self, what: str, operation: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client(), operation)(**kwargs)
        except ClientError as exc:
            code = _error_code(exc)
            if code in _MISSING_CODES or code == "NoSuchBucket":
                raise ObjectVersionMissing(f"{what} does not exist in S3 ({code})") from exc
            raise ObjectStoreError(f"S3 refused {operation} on {what}: {code or exc}") from exc
        except BotoCoreError as exc:  # no credentials, endpoint unreachable, timeouts
            raise ObjectStoreError(f"S3 could not be reached for {what}: {exc}") from exc


def _object_args(location: S3Location) -> dict[str, str]:
    args = {"Bucket": location.bucket, "Key": location.key}
    if location.version_id:
        args["VersionId"] = location.version_id
    return args
