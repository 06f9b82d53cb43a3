"""Putting the registered bytes of a version back, from a versioned bucket.

On a bucket with versioning, an overwritten or deleted object keeps its old
version. A record made on such a bucket names the version id of every object
that was hashed, so the registered bytes can be put back: each recorded
version is read and verified against the manifest first, and only when every
one of them verifies is anything written. Each is then copied onto its key
(a server-side copy, so the bytes do not pass through this machine again);
objects that were added after registration are deleted, which on a versioned
bucket leaves a delete marker over them rather than destroying them. The tree
is verified again at the end.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

from mlflow import MlflowClient

from mlflow_integrity.check import (
    DEEP,
    VerifyResult,
    compare,
    failed,
    measure,
    recorded_location,
    unusable_location,
    verify,
)
from mlflow_integrity.digest import FileEntry
from mlflow_integrity.errors import (
    ConfigurationError,
    DigestMismatchError,
    IntegrityError,
    StoreReadError,
    UntaggedVersionError,
)
from mlflow_integrity.registry import Record, ResolvedVersion, read_record, resolve
from mlflow_integrity.stores import ObjectListing, StoredObject, open_store
from mlflow_integrity.stores.s3 import S3Store

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RestorePlan:
    """What a restore would do, from a deep check of the tree as stored now."""

    name: str
    version: str
    source: str
    before: VerifyResult
    put_back: tuple[StoredObject, ...] = ()
    remove: tuple[str, ...] = ()
    applied: bool = False
    after: VerifyResult | None = None
    notes: tuple[str, ...] = field(default=())
    key_prefix: str = ""
    """The keys' common prefix in the bucket (``exp/models/m-1/artifacts/``)."""

    @property
    def needed(self) -> bool:
        return bool(self.put_back or self.remove)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_uri": f"models:/{self.name}/{self.version}",
            "source": self.source,
            "status_before": self.before.status,
            "put_back": [
                {"path": o.path, "key": o.key, "version_id": o.version_id}
                for o in self.put_back
            ],
            "remove": list(self.remove),
            "notes": list(self.notes),
            "applied": self.applied,
            "status_after": self.after.status if self.after else None,
        }

    def _path_of(self, key: str) -> str:
        """A removed key as a path below the model root, like the others."""
        return key[len(self.key_prefix) :] if key.startswith(self.key_prefix) else key

    def describe(self) -> str:
        uri = f"models:/{self.name}/{self.version}"
        if not self.needed and self.before.ok:
            return (
                f"{uri}: the stored artifact already matches its record; "
                "nothing to restore."
            )
        if not self.needed:
            return "\n".join(
                [f"{uri}: nothing can be restored ({self.before.status})."]
                + [f"  note      {note}" for note in self.notes]
            )
        verb = "Restored" if self.applied else "Would restore"
        lines = [f"{verb} {uri} in {self.source}:"]
        lines += [
            f"  put back  {o.path}  (version {o.version_id}, verified)"
            for o in self.put_back
        ]
        lines += [
            f"  remove    {key}  (added since registration)" for key in self.remove
        ]
        if self.after is not None:
            lines.append(f"Checked again: {self.after.status}.")
        elif not self.applied:
            lines.append("Nothing was changed; pass --yes to apply.")
        return "\n".join(lines)


def plan_restore(
    name: str, version: str, *, client: MlflowClient | None = None
) -> tuple[RestorePlan, S3Store]:
    """Check a version deeply and work out what putting it back needs.

    Every recorded object version to be put back is read and verified against
    the manifest here, before anything is written.

    Raises:
        UntaggedVersionError: the version has no record.
        ConfigurationError: the version is not stored in S3, or its record
            holds no object versions (registered on a bucket without
            versioning, or before this feature).
        DigestMismatchError: a recorded object version is gone, or its bytes
            are not the registered ones.
    """
    client = client or MlflowClient()
    resolved = resolve(client, f"models:/{name}/{version}")
    uri = resolved.uri
    record = read_record(resolved.model_version)
    if record is None:
        raise UntaggedVersionError(
            f"{uri} has no recorded digest, so there is nothing to restore to.",
            name=name,
            version=version,
        )
    objects = record.objects
    if (
        objects is None
        or not objects.versioned
        or any(o.version_id is None for o in objects.objects)
    ):
        raise ConfigurationError(
            f"{uri} cannot be restored from object versions: its record names "
            "none (the artifact was registered on a store other than S3, on a "
            "bucket without versioning, or before mlflow-integrity recorded "
            f"object versions; source {resolved.source}). Restore the files "
            f"from a backup, then run `mlflow-integrity verify {uri}`.",
            name=name,
            version=version,
        )
    # Where the record says the objects are: the version's own s3:// source,
    # or the bucket behind a tracking server's proxy.
    source_store = open_store(resolved.source)
    store = recorded_location(source_store, record)
    problem = unusable_location(source_store, store, record)
    if problem:
        raise ConfigurationError(
            f"{uri} cannot be restored from here: {problem}."
            f" Set MLFLOW_S3_ENDPOINT_URL={objects.endpoint or ''} (the "
            "endpoint the server used) and run the restore again.",
            name=name,
            version=version,
        )
    try:
        return _plan(resolved, record, objects, store), store
    except StoreReadError as err:
        hint = ""
        if store is not source_store:
            hint = (
                f" A restore reads and writes the bucket the tracking server "
                f"recorded ({store.uri}) directly: this process needs "
                "credentials for it (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                "a profile or a role)."
            )
        raise StoreReadError(
            f"Restoring {uri}: {err.message} Nothing was changed.{hint}",
            name=name,
            version=version,
            source=store.uri,
        ) from err


def _plan(
    resolved: ResolvedVersion, record: Record, objects: ObjectListing, store: S3Store
) -> RestorePlan:
    uri = resolved.uri
    try:
        actual, _, _ = measure(store, record, DEEP)
        before = compare(resolved, record, actual)
    except IntegrityError as err:
        before = failed(resolved, err, record)
        if not before.whole_artifact_missing:
            raise
    listed = objects.by_path()
    expected = record.manifest.by_path()
    if before.whole_artifact_missing:
        changed = list(expected)
        extra: list[str] = []
        current: dict[str, StoredObject] = {}
    else:
        changed = [c.path for c in before.diff.modified + before.diff.missing]
        extra = [c.path for c in before.diff.extra]
        current = store.describe().by_path()

    put_back = tuple(listed[path] for path in changed)
    for obj in put_back:
        _verify_version(store, obj, expected[obj.path], record.digest.algorithm, uri)

    # Objects added since registration, and a file now stored under another
    # key than the recorded one (its NFD twin, say), which would otherwise sit
    # beside the key put back.
    restored_keys = {obj.key for obj in put_back}
    added = [current[path].key for path in extra if path in current]
    added += [
        current[path].key
        for path in changed
        if path in current and current[path].key != listed[path].key
    ]
    added = [key for key in added if key not in restored_keys]
    remove: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    if added and store.versioning() == "Enabled":
        remove = tuple(added)
    elif added:
        # With versioning suspended a delete removes the "null" version
        # for good; objects that were never registered are left alone.
        notes = (
            f"{len(added)} object(s) added since registration left in "
            "place: versioning on the bucket is suspended, so deleting "
            "them could not be undone. Remove them by hand: " + ", ".join(added),
        )
    return RestorePlan(
        resolved.name,
        resolved.version,
        resolved.source,
        before,
        put_back,
        remove,
        notes=notes,
        key_prefix=store.key_prefix,
    )


def _verify_version(
    store: S3Store, obj: StoredObject, want: FileEntry, algorithm: str, uri: str
) -> None:
    assert obj.version_id is not None
    try:
        size, digest = store.read(obj, algorithm, version_id=obj.version_id)
    except StoreReadError as err:
        if err.store_code not in ("NoSuchVersion", "NoSuchKey", "404"):
            raise
        raise DigestMismatchError(
            f"{uri}: the recorded version {obj.version_id} of {obj.path} is gone "
            f"from the bucket ({err.message}); nothing was changed. Restore the "
            "file from a backup.",
            source=store.uri,
        ) from err
    if (size, digest) != (want.size, want.digest):
        raise DigestMismatchError(
            f"{uri}: version {obj.version_id} of {obj.path} holds {size} bytes "
            f"that are not the registered ones ({want.size} bytes); nothing was "
            "changed. Restore the file from a backup.",
            source=store.uri,
        )


def restore(
    name: str,
    version: str,
    *,
    yes: bool = False,
    client: MlflowClient | None = None,
) -> RestorePlan:
    """Put the registered bytes of ``models:/<name>/<version>`` back.

    Without ``yes`` nothing is written: the plan says what would be done.
    With it, the verified object versions are copied back, the objects added
    since registration are deleted, and the tree is checked again
    (``plan.after``).

    Raises:
        UntaggedVersionError, ConfigurationError, DigestMismatchError: see
            :func:`plan_restore`; nothing is written then.
        StoreReadError: if the store fails while copying.
    """
    client = client or MlflowClient()
    plan, store = plan_restore(name, version, client=client)
    if not yes or not plan.needed:
        return plan
    done: list[str] = []
    try:
        for obj in plan.put_back:
            store.put_back(obj)
            done.append(f"put back {obj.key}")
            _logger.info("put back %s (version %s)", obj.key, obj.version_id)
        for key in plan.remove:
            store.delete(key)
            done.append(f"removed {key}")
            _logger.info("removed %s", key)
    except StoreReadError as err:
        raise StoreReadError(
            f"Restoring models:/{name}/{version} stopped: {err.message} Done so "
            f"far: {', '.join(done) or 'nothing'}; everything else is as it was. "
            f"Run `mlflow-integrity restore {name} {version} --yes` again once "
            "the store answers.",
            name=name,
            version=version,
            source=store.uri,
        ) from err
    after = verify(f"models:/{name}/{version}", client=client)
    return replace(plan, applied=True, after=after)
