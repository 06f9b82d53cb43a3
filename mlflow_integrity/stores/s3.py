"""S3 and S3-compatible stores (AWS S3, MinIO, Ceph), read with boto3.

Objects are streamed from ``GetObject`` into the hasher (and into the private
copy, when there is one); nothing is staged in a temporary file. On a bucket
with versioning each object is read by the version id that was listed, so the
bytes hashed are exactly the object versions the record names; on a bucket
without, each read carries ``If-Match`` with the listed ETag, so an object
overwritten between listing and reading is refused rather than hashed half old,
half new.

The client follows MLflow's S3 settings: ``MLFLOW_S3_ENDPOINT_URL``,
``MLFLOW_S3_IGNORE_TLS``, ``MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE``,
``MLFLOW_S3_EXPECTED_BUCKET_OWNER`` and
``MLFLOW_EXPERIMENTAL_S3_SIGNATURE_VERSION``; credentials, region and a
private CA bundle (``AWS_CA_BUNDLE``) come from boto3's usual chain.
``MLFLOW_INTEGRITY_S3_TIMEOUT`` sets the connect and read timeouts in seconds
(default 60); botocore retries a failed request up to three times.

Zero-byte keys ending in ``/`` are the directory markers some tools write;
they are not files and never change a digest.
"""

from __future__ import annotations

import functools
import logging
import os
import urllib.parse
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mlflow_integrity.digest import (
    IGNORED_ROOT_FILES,
    FileEntry,
    Manifest,
    canonical_path,
)
from mlflow_integrity.errors import (
    ArtifactMissingError,
    ConfigurationError,
    IntegrityError,
    StoreReadError,
    UnsafeArtifactError,
)
from mlflow_integrity.registry import utc_text
from mlflow_integrity.stores import (
    STREAM_CHUNK,
    ObjectListing,
    Snapshot,
    StoredObject,
    hash_chunks,
    refuse_duplicate_paths,
    run_parallel,
    store_workers,
    target_path,
    unwritable_paths,
)

_logger = logging.getLogger(__name__)

TIMEOUT_ENV = "MLFLOW_INTEGRITY_S3_TIMEOUT"
_DEFAULT_TIMEOUT = 60.0


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/some/prefix`` into the bucket and the prefix (no
    leading or trailing ``/``).

    Raises:
        ConfigurationError: if the URI names no bucket.
    """
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ConfigurationError(f"{uri!r} is not an s3://<bucket>/<path> URI.")
    return parsed.netloc, parsed.path.strip("/")


def _timeout() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "")
    if not raw:
        return _DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0 < value <= 3600:
        raise ConfigurationError(
            f"{TIMEOUT_ENV}={raw!r} is not a number of seconds above 0 and at "
            "most 3600."
        )
    return value


def check_settings() -> None:
    """Refuse bad S3 settings of this package before any store is read.

    Raises:
        ConfigurationError: for a bad ``MLFLOW_INTEGRITY_S3_TIMEOUT``.
    """
    _timeout()


def s3_client() -> Any:
    """A boto3 S3 client configured as MLflow configures its own."""
    from mlflow.environment_variables import (
        MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE,
        MLFLOW_S3_ENDPOINT_URL,
        MLFLOW_S3_IGNORE_TLS,
    )

    return _cached_client(
        MLFLOW_S3_ENDPOINT_URL.get() or None,
        bool(MLFLOW_S3_IGNORE_TLS.get()),
        MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE.get() or "auto",
        os.environ.get("MLFLOW_EXPERIMENTAL_S3_SIGNATURE_VERSION", "s3v4"),
        _timeout(),
        store_workers(),
        # boto3 reads credentials when the client is made; a change of these
        # must make a new client.
        tuple(
            os.environ.get(k)
            for k in (
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN",
                "AWS_PROFILE",
                "AWS_DEFAULT_REGION",
                "AWS_CA_BUNDLE",
            )
        ),
    )


@functools.lru_cache(maxsize=16)
def _cached_client(
    endpoint: str | None,
    ignore_tls: bool,
    addressing_style: str,
    signature_version: str,
    timeout: float,
    workers: int,
    _credentials_env: tuple[str | None, ...],
) -> Any:
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    config = Config(
        signature_version=(
            UNSIGNED if signature_version.lower() == "unsigned" else signature_version
        ),
        s3={"addressing_style": addressing_style},
        connect_timeout=timeout,
        read_timeout=timeout,
        retries={"max_attempts": 3, "mode": "standard"},
        max_pool_connections=max(10, 2 * workers),
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        verify=False if ignore_tls else None,
        config=config,
    )


@dataclass(frozen=True)
class ObjectHistory:
    """What became of a recorded object version, on a versioned bucket."""

    path: str
    key: str
    recorded_version: str
    current_version: str | None
    """The version the key now holds; None when the key is deleted."""
    changed_at: str | None
    """When the current version (or the delete marker) was written."""
    recoverable: bool
    """The recorded version can still be fetched by its version id."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "key": self.key,
            "recorded_version": self.recorded_version,
            "current_version": self.current_version,
            "deleted": self.current_version is None,
            "changed_at": self.changed_at,
            "recoverable": self.recoverable,
        }

    def describe(self) -> str:
        if self.current_version is None:
            what = f"was deleted at {self.changed_at or 'an unknown time'}"
        elif self.current_version == self.recorded_version:
            what = "is still the current version"
        else:
            what = (
                f"was replaced by version {self.current_version} at "
                f"{self.changed_at or 'an unknown time'}"
            )
        fetch = (
            "the recorded version can still be fetched"
            if self.recoverable
            else "the recorded version is gone from the bucket"
        )
        return f"{self.path}: recorded version {self.recorded_version} {what}; {fetch}"


def store_error(uri: str, what: str, exc: BaseException) -> IntegrityError:
    """The IntegrityError for a failed S3 call: UNREADABLE with the store's own
    message (a missing bucket, access denied, a timeout, a cut connection)."""
    from botocore.exceptions import ClientError

    if isinstance(exc, IntegrityError):
        return exc
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code", "?")
        message = error.get("Message") or str(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("PreconditionFailed", "412") or status == 412:
            return StoreReadError(
                f"{what} {uri}: an object was overwritten while it was being "
                f"read ({code}: {message}); check again once writes have stopped.",
                source=uri,
            )
        err = StoreReadError(
            f"{what} {uri} failed: {code} (HTTP {status}): {message}", source=uri
        )
        err.store_code = str(code)
        return err
    return StoreReadError(
        f"{what} {uri} failed: {type(exc).__name__}: {exc}", source=uri
    )


def _store_call_errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import BotoCoreError, ClientError
    from urllib3.exceptions import HTTPError

    return (BotoCoreError, ClientError, HTTPError, OSError)


def _time(value: Any) -> str:
    if isinstance(value, datetime):
        return utc_text(value)
    return str(value or "")


class S3Store:
    """A model tree below ``s3://<bucket>/<prefix>``."""

    def __init__(self, uri: str, client: Any = None) -> None:
        self.uri = uri
        self.bucket, self.prefix = parse_s3_uri(uri)
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = s3_client()
        return self._client

    @property
    def endpoint(self) -> str | None:
        """The endpoint URL this store talks to (None: AWS's own)."""
        from mlflow.environment_variables import MLFLOW_S3_ENDPOINT_URL

        return MLFLOW_S3_ENDPOINT_URL.get() or None

    @property
    def key_prefix(self) -> str:
        return f"{self.prefix}/" if self.prefix else ""

    def _owner(self) -> dict[str, str]:
        from mlflow.environment_variables import MLFLOW_S3_EXPECTED_BUCKET_OWNER

        owner = MLFLOW_S3_EXPECTED_BUCKET_OWNER.get()
        return {"ExpectedBucketOwner": owner} if owner else {}

    # --- listing -------------------------------------------------------------

    def versioning(self) -> str:
        """The bucket's versioning status: ``Enabled``, ``Suspended``, or ``""``
        when it never had versioning.

        Without permission to ask (``s3:GetBucketVersioning``) the answer is
        ``""``: the record then holds ETags but no version ids.

        Raises:
            StoreReadError: if the store fails otherwise.
        """
        from botocore.exceptions import ClientError

        try:
            answer = self.client.get_bucket_versioning(
                Bucket=self.bucket, **self._owner()
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "AccessDenied":
                _logger.info(
                    "No permission to read the versioning of bucket %s; "
                    "recording ETags only.",
                    self.bucket,
                )
                return ""
            raise store_error(self.uri, "Reading the versioning of", exc) from exc
        except _store_call_errors() as exc:
            raise store_error(self.uri, "Reading the versioning of", exc) from exc
        return str(answer.get("Status") or "")

    def versioned(self) -> bool:
        """True when the bucket keeps object versions (enabled or suspended)."""
        return self.versioning() in ("Enabled", "Suspended")

    def describe(self) -> ObjectListing:
        """List the tree's objects with their metadata; no byte is read.

        Raises:
            ArtifactMissingError: if no object is stored below the prefix.
            StoreReadError: if the store fails.
            UnsafeArtifactError: for a key that cannot be covered.
        """
        try:
            versioned = self.versioned()
            rows = self._list_versions() if versioned else self._list_current()
            objects = [obj for obj in map(self._object, rows) if obj is not None]
        except _store_call_errors() as exc:
            raise store_error(self.uri, "Listing", exc) from exc
        if not objects:
            raise ArtifactMissingError(
                f"The stored artifact at {self.uri} holds no objects, or no "
                "longer exists.",
                source=self.uri,
            )
        objects.sort(key=lambda o: o.path.encode("utf-8"))
        refuse_duplicate_paths((o.path for o in objects), self.uri)
        return ObjectListing(
            "s3", self.bucket, self.prefix, versioned, tuple(objects), self.endpoint
        )

    def _list_current(self) -> list[tuple[str, str | None, str, int, Any]]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.key_prefix, **self._owner()
        )
        return [
            (o["Key"], None, o["ETag"], o["Size"], o.get("LastModified"))
            for page in pages
            for o in self._page(page).get("Contents", [])
        ]

    def _list_versions(self) -> list[tuple[str, str | None, str, int, Any]]:
        pages = self.client.get_paginator("list_object_versions").paginate(
            Bucket=self.bucket, Prefix=self.key_prefix, **self._owner()
        )
        # A key whose latest entry is a delete marker is deleted: it appears
        # among "DeleteMarkers", not as a latest "Versions" entry.
        return [
            (v["Key"], v["VersionId"], v["ETag"], v["Size"], v.get("LastModified"))
            for page in pages
            for v in self._page(page).get("Versions", [])
            if v.get("IsLatest")
        ]

    def _page(self, page: dict[str, Any]) -> dict[str, Any]:
        """A listing page, after checking it is an S3 answer about our bucket:
        botocore reads an HTML page (a login proxy, a wrong endpoint) as an
        empty listing, which must not pass for a deleted tree."""
        if page.get("Name") != self.bucket:
            raise StoreReadError(
                f"Listing {self.uri} failed: the endpoint "
                f"({self.endpoint or 'AWS S3'}) did not answer as S3 does (the "
                "listing names no bucket, or another one). Check "
                "MLFLOW_S3_ENDPOINT_URL and any proxy in between.",
                source=self.uri,
            )
        return page

    def _object(
        self, row: tuple[str, str | None, str, int, Any]
    ) -> StoredObject | None:
        key, version_id, etag, size, modified = row
        rel = key[len(self.key_prefix) :]
        if rel == "" or rel.endswith("/"):
            if size == 0:
                return None  # a directory marker
            raise UnsafeArtifactError(
                f"Object {key!r} in bucket {self.bucket} ends with '/' but holds "
                f"{size} bytes; no file name can hold it. Move it to a proper "
                "name or delete it."
            )
        path = canonical_path(rel)
        if path in IGNORED_ROOT_FILES:
            return None
        return StoredObject(
            path=path,
            key=key,
            version_id=None if version_id in (None, "null") else version_id,
            etag=etag.strip('"'),
            size=int(size),
            modified=_time(modified),
        )

    # --- reading -------------------------------------------------------------

    def read(
        self,
        obj: StoredObject,
        algorithm: str,
        sink: Any = None,
        version_id: str | None = None,
    ) -> tuple[int, bytes]:
        """Stream one object into the hasher (and ``sink``); return size and
        digest. Reads ``version_id`` if given, else the listed version.

        Raises:
            StoreReadError: if the store fails, the object changed since it
                was listed, or fewer bytes arrive than listed.
        """
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": obj.key,
            **self._owner(),
        }
        wanted = version_id or obj.version_id
        if wanted:
            params["VersionId"] = wanted
        else:
            params["IfMatch"] = f'"{obj.etag}"'
        try:
            response = self.client.get_object(**params)
            body = response["Body"]
            if not response.get("ETag") or (
                wanted and response.get("VersionId") != wanted
            ):
                body.close()
                raise StoreReadError(
                    f"Reading {obj.key!r} of {self.uri} failed: the endpoint did "
                    "not answer as S3 does (no ETag, or not the object version "
                    "asked for). Check MLFLOW_S3_ENDPOINT_URL and any proxy in "
                    "between.",
                    source=self.uri,
                )
            try:
                size, digest = hash_chunks(
                    body.iter_chunks(STREAM_CHUNK), algorithm, sink
                )
            finally:
                body.close()
        except _store_call_errors() as exc:
            raise store_error(self.uri, f"Reading {obj.key!r} of", exc) from exc
        if version_id is None and size != obj.size:
            raise StoreReadError(
                f"Reading {obj.key!r} of {self.uri} returned {size} bytes; the "
                f"listing said {obj.size}. Check again.",
                source=self.uri,
            )
        _logger.debug("hashed s3://%s/%s (%d bytes)", self.bucket, obj.key, size)
        return size, digest

    def _entries(
        self, objects: list[StoredObject], algorithm: str
    ) -> list[tuple[str, int, bytes]]:
        def one(obj: StoredObject) -> tuple[str, int, bytes]:
            return (obj.path, *self.read(obj, algorithm))

        return run_parallel(one, objects, store_workers())

    def snapshot(self, algorithm: str) -> Snapshot:
        listing = self.describe()
        entries = self._entries(list(listing.objects), algorithm)
        return Snapshot(Manifest.from_entries(algorithm, entries), listing)

    def manifest(self, algorithm: str) -> Manifest:
        return self.snapshot(algorithm).manifest

    def fetch(self, dest: str, algorithm: str) -> Manifest:
        listing = self.describe()

        skipped = unwritable_paths(o.path for o in listing.objects)

        def one(obj: StoredObject) -> tuple[str, int, bytes]:
            if obj.path in skipped:
                return (obj.path, *self.read(obj, algorithm))
            try:
                with open(target_path(dest, obj.path), "xb") as out:
                    size, digest = self.read(obj, algorithm, sink=out.write)
            except OSError as exc:
                raise StoreReadError(
                    f"Writing the private copy of {self.uri} failed: {exc}",
                    source=self.uri,
                ) from exc
            return obj.path, size, digest

        entries = run_parallel(one, list(listing.objects), store_workers())
        return Manifest.from_entries(algorithm, entries)

    def quick_manifest(
        self, recorded: Manifest, objects: ObjectListing
    ) -> tuple[Manifest, int]:
        """The manifest as stored now, from metadata where it allows.

        An object whose version id (or, without versioning, ETag), size and
        key match what was recorded keeps its recorded entry; every other
        object is re-read. Returns the manifest and how many objects were
        re-read.
        """
        current = self.describe()
        expected = recorded.by_path()
        listed = objects.by_path()
        reuse: list[FileEntry] = []
        reread: list[StoredObject] = []
        for obj in current.objects:
            want = expected.get(obj.path)
            was = listed.get(obj.path)
            if want is not None and was is not None and _unchanged(was, obj):
                reuse.append(want)
            else:
                reread.append(obj)
        fresh = [
            FileEntry(path, size, digest)
            for path, size, digest in self._entries(reread, recorded.algorithm)
        ]
        return Manifest(recorded.algorithm, tuple(reuse + fresh)), len(reread)

    # --- version history and restore -----------------------------------------

    def history(self, obj: StoredObject) -> ObjectHistory:
        """What the key of a recorded object version holds now.

        Raises:
            StoreReadError: if the store fails.
        """
        assert obj.version_id is not None
        try:
            pages = self.client.get_paginator("list_object_versions").paginate(
                Bucket=self.bucket, Prefix=obj.key, **self._owner()
            )
            versions: list[dict[str, Any]] = []
            latest: dict[str, Any] | None = None
            for page in pages:
                for kind in ("Versions", "DeleteMarkers"):
                    for v in self._page(page).get(kind, []):
                        if v["Key"] != obj.key:
                            continue
                        entry = dict(v, deleted=kind == "DeleteMarkers")
                        versions.append(entry)
                        if v.get("IsLatest"):
                            latest = entry
        except _store_call_errors() as exc:
            raise store_error(self.uri, "Listing versions of", exc) from exc
        recoverable = any(
            v["VersionId"] == obj.version_id and not v["deleted"] for v in versions
        )
        if latest is None or latest["deleted"]:
            current, changed = None, latest and _time(latest.get("LastModified"))
        else:
            current, changed = latest["VersionId"], _time(latest.get("LastModified"))
        return ObjectHistory(
            obj.path, obj.key, obj.version_id, current, changed or None, recoverable
        )

    def put_back(self, obj: StoredObject) -> None:
        """Make the recorded version of ``obj`` the current one again, by a
        server-side copy of that version onto its key (multipart above 8 MiB).

        Raises:
            StoreReadError: if the store fails.
        """
        assert obj.version_id is not None
        try:
            self.client.copy(
                {"Bucket": self.bucket, "Key": obj.key, "VersionId": obj.version_id},
                self.bucket,
                obj.key,
                ExtraArgs=self._owner() or None,
            )
        except _store_call_errors() as exc:
            raise store_error(self.uri, f"Copying {obj.key!r} back in", exc) from exc

    def delete(self, key: str) -> None:
        """Delete ``key`` (a delete marker on a versioned bucket).

        Raises:
            StoreReadError: if the store fails.
        """
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key, **self._owner())
        except _store_call_errors() as exc:
            raise store_error(self.uri, f"Deleting {key!r} from", exc) from exc


def _unchanged(recorded: StoredObject, current: StoredObject) -> bool:
    if recorded.key != current.key or recorded.size != current.size:
        return False
    if recorded.version_id is not None:
        return (
            recorded.version_id == current.version_id and recorded.etag == current.etag
        )
    return current.version_id is None and recorded.etag == current.etag
