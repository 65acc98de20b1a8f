"""S3 entries of the dataset registry: the checks that make an object version trainable, and its bytes.

A registry entry pins ``s3://bucket/key`` at one object version ID with the sha256 of that version's bytes.
It is trainable only when all of this holds (each failure is one line saying what to do):
- the entry pins a version ID (not 'null', the ID S3 gives objects written while versioning was off);
- the bucket's versioning is ``Enabled`` (otherwise an overwrite under the key replaces the data);
- that version still exists, and its bytes hash to the entry's sha256.

An object version's bytes never change in S3, so a digest computed once is kept per (bucket, key, version)
in the caller's ``digests`` dict: later checks only ask that the version still exists (HEAD) and that the
bucket is still versioned, and compare the kept digest with the catalog's sha256 (which may have changed).
This module knows nothing of the registry's records (the registry calls it with their fields).
"""

from __future__ import annotations

import hashlib

from tools.core.object_store import (
    NEVER_ENABLED,
    ObjectStoreError,
    ObjectVersionMissing,
    S3Location,
    S3Reader,
    parse_s3_uri,
)

Digests = dict[tuple[str, str, str], str]
#: the version ID S3 reports for an object written while the bucket was not versioned.
NULL_VERSION = "null"


class ObjectCheckFailed(Exception):
    """The pinned object version cannot be used as registered; the message is one line for the user."""


def pinned_location(ref: str, uri: str, version_id: str | None) -> S3Location:
    """Return the object version an entry pins; raise ObjectCheckFailed when it pins none."""
    try:
        location = parse_s3_uri(uri)
    except ValueError as exc:
        raise ObjectCheckFailed(f"{ref}: {exc}") from exc
    if not version_id or version_id == NULL_VERSION:
        raise ObjectCheckFailed(
            f"{ref}: the registry entry for {location.uri} pins no S3 object version ID; an S3 dataset must "
            "pin one (Data Engineering registers it with --s3-version-id; `aws s3api list-object-versions` "
            "lists them)."
        )
    return S3Location(location.bucket, location.key, version_id)


def check_versioned_bucket(ref: str, bucket: str, objects: S3Reader) -> None:
    """Raise ObjectCheckFailed unless the bucket's versioning is Enabled."""
    status = objects.versioning_status(bucket)
    if status != "Enabled":
        shown = "was never enabled" if status == NEVER_ENABLED else f"is {status}"
        raise ObjectCheckFailed(
            f"{ref}: bucket {bucket!r} is not versioned (versioning {shown}); S3 datasets must live in a "
            "bucket with versioning enabled, so an overwrite cannot change registered data. Ask Data "
            "Engineering to enable versioning and register the object again."
        )


def object_digest(location: S3Location, objects: S3Reader, digests: Digests) -> str:
    """Return the sha256 of the object version (kept once computed; the version must still exist)."""
    key = (location.bucket, location.key, location.version_id or "")
    known = digests.get(key)
    if known is not None:
        objects.head(location)  # raises ObjectVersionMissing when the version was deleted
        return known
    digest = hashlib.sha256(objects.read(location)).hexdigest()
    digests[key] = digest
    return digest


def _mismatch(ref: str, location: S3Location, actual: str, expected: str) -> ObjectCheckFailed:
    return ObjectCheckFailed(
        f"{ref}: S3 object {location} has sha256 {actual[:12]}…, the catalog expects {expected[:12]}…; it is "
        "not the object that was registered. Ask Data Engineering to fix the entry or register a new version."
    )


def _guarded(ref: str, location: S3Location, step: str) -> ObjectCheckFailed:
    return ObjectCheckFailed(
        f"{ref}: {location} no longer exists in S3 (the version was deleted, or never written); "
        f"{step}. Ask Data Engineering to restore it or register a new version."
    )


def check_object(ref: str, uri: str, version_id: str | None, sha256: str, objects: S3Reader,
                 digests: Digests) -> None:  # fmt: skip
    """Raise ObjectCheckFailed unless the pinned version exists in a versioned bucket and matches sha256."""
    try:
        # The bucket first: "not versioned" is what a team must fix before any version ID means anything.
        check_versioned_bucket(ref, parse_s3_uri(uri).bucket, objects)
        location = pinned_location(ref, uri, version_id)
        actual = object_digest(location, objects, digests)
    except ValueError as exc:
        raise ObjectCheckFailed(f"{ref}: {exc}") from exc
    except ObjectVersionMissing as exc:
        raise _guarded(ref, location, "the registered data cannot be read") from exc
    except ObjectStoreError as exc:
        raise ObjectCheckFailed(f"{ref}: could not check {uri} (version {version_id}): {exc}") from exc
    if actual != sha256:
        raise _mismatch(ref, location, actual, sha256)


def read_object(ref: str, uri: str, version_id: str | None, sha256: str, objects: S3Reader,
                digests: Digests) -> bytes:  # fmt: skip
    """Return the pinned version's bytes after checking them against sha256 (what a training job reads)."""
    location = pinned_location(ref, uri, version_id)
    try:
        data = objects.read(location)
    except ObjectVersionMissing as exc:
        raise _guarded(ref, location, "the job cannot read it") from exc
    except ObjectStoreError as exc:
        raise ObjectCheckFailed(f"{ref}: could not read {location}: {exc}") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise _mismatch(ref, location, actual, sha256)
    digests[(location.bucket, location.key, location.version_id or "")] = actual
    return data
