"""Reading stored artifact bytes without trusting them.

Every store reads each byte once: it is hashed as it arrives, and written to a
private copy on the same pass when the caller wants one.

- A local directory (``file:`` URIs and plain paths) is hashed in place
  (:class:`LocalStore`).
- ``s3://`` is read with boto3, object by object (:mod:`.s3`); it also reports
  each object's version id and ETag, which the record keeps.
- ``mlflow-artifacts:`` and the tracking server's ``/mlflow-artifacts/``
  HTTP URLs are streamed from the server (:mod:`.proxy`).
- Any other scheme MLflow can read (``gs:``, ``wasbs:``, ``hdfs:``, ...) goes
  through MLflow's own artifact repositories (:class:`ArtifactRepositoryStore`):
  the tree is downloaded into a private directory and hashed there, which
  reads the bytes twice.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Protocol

from mlflow.exceptions import MlflowException

from mlflow_integrity.digest import (
    IGNORED_ROOT_FILES,
    Manifest,
    canonical_path,
    check_unchanged,
    hash_open_file,
    hash_tree,
    iter_tree,
    open_regular,
)
from mlflow_integrity.errors import (
    ArtifactMissingError,
    IntegrityError,
    StoreReadError,
)

_logger = logging.getLogger(__name__)

_COPY_SIZE = 1024 * 1024


@dataclass(frozen=True)
class StoredObject:
    """What an object store says about one file, without reading it."""

    path: str
    """The canonical path below the model root."""
    key: str
    """The object's key in its bucket, as stored (not normalised)."""
    version_id: str | None
    """The object version, or None on a bucket without versioning."""
    etag: str
    size: int
    modified: str
    """When this object version was written (UTC, ``2026-12-03T15:43:38Z``)."""

    def to_list(self) -> list[Any]:
        return [
            self.path,
            self.key,
            self.version_id,
            self.etag,
            self.size,
            self.modified,
        ]


@dataclass(frozen=True)
class ObjectListing:
    """The objects of one model tree in a bucket, as listed at one moment."""

    store: str
    bucket: str
    prefix: str
    versioned: bool
    objects: tuple[StoredObject, ...]
    endpoint: str | None = None
    """The S3 endpoint URL the objects were listed at (None: AWS itself)."""

    def by_path(self) -> dict[str, StoredObject]:
        return {o.path: o for o in self.objects}

    def to_json(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "bucket": self.bucket,
            "prefix": self.prefix,
            "versioned": self.versioned,
            "endpoint": self.endpoint,
            "objects": [o.to_list() for o in self.objects],
        }

    @classmethod
    def from_json(cls, data: Any) -> ObjectListing:
        """Parse :meth:`to_json` output.

        Raises:
            ValueError: if anything is missing or of the wrong type.
        """
        fields = {"store", "bucket", "prefix", "versioned", "endpoint", "objects"}
        if not isinstance(data, dict) or set(data) != fields:
            raise ValueError("the object listing has unexpected fields")
        if not (
            data["store"] == "s3"
            and isinstance(data["bucket"], str)
            and data["bucket"]
            and isinstance(data["prefix"], str)
            and isinstance(data["versioned"], bool)
            and (data["endpoint"] is None or isinstance(data["endpoint"], str))
            and isinstance(data["objects"], list)
        ):
            raise ValueError("the object listing has fields of the wrong type")
        objects = []
        for row in data["objects"]:
            if not (isinstance(row, list) and len(row) == 6):
                raise ValueError(f"malformed object row {row!r}")
            path, key, version_id, etag, size, modified = row
            if not (
                isinstance(path, str)
                and isinstance(key, str)
                and (version_id is None or isinstance(version_id, str))
                and isinstance(etag, str)
                and type(size) is int
                and size >= 0
                and isinstance(modified, str)
            ):
                raise ValueError(f"malformed object row {row!r}")
            if version_id is not None and not data["versioned"]:
                raise ValueError(
                    f"object row {row!r} has a version id on an unversioned bucket"
                )
            objects.append(StoredObject(path, key, version_id, etag, size, modified))
        if len({o.key for o in objects}) != len(objects):
            raise ValueError("two rows of the object listing share a key")
        return cls(
            data["store"],
            data["bucket"],
            data["prefix"],
            data["versioned"],
            tuple(objects),
            data["endpoint"],
        )


@dataclass(frozen=True)
class Snapshot:
    """A tree hashed once: its manifest and, for object stores, the object
    versions that were read."""

    manifest: Manifest
    objects: ObjectListing | None = None


class Store(Protocol):
    """A stored model tree, addressed by the URI MLflow recorded for it."""

    uri: str

    def manifest(self, algorithm: str) -> Manifest:
        """Hash the tree as stored now, keeping no copy."""
        ...

    def snapshot(self, algorithm: str) -> Snapshot:
        """Hash the tree as stored now, with the object versions read (object
        stores only), for recording."""
        ...

    def fetch(self, dest: str, algorithm: str) -> Manifest:
        """Copy the tree into the empty directory ``dest``; return the manifest
        of the bytes written there."""
        ...


def open_store(uri: str) -> Store:
    """Return the store that reads ``uri``."""
    path = local_path(uri)
    if path is not None:
        return LocalStore(uri, path)
    scheme = urllib.parse.urlparse(uri).scheme
    if scheme == "s3":
        from mlflow_integrity.stores.s3 import S3Store

        return S3Store(uri)
    from mlflow_integrity.stores.proxy import ProxyStore, is_proxy_uri

    if is_proxy_uri(uri):
        return ProxyStore(uri)
    return ArtifactRepositoryStore(uri)


def local_path(uri: str) -> str | None:
    """The local filesystem path of a ``file:`` URI or plain path, else None."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            return None
        return urllib.request.url2pathname(parsed.path)
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return os.path.abspath(uri)
    return None


class LocalStore:
    """A model tree on a local or mounted filesystem."""

    def __init__(self, uri: str, path: str) -> None:
        self.uri = uri
        self.path = path

    def _check_present(self) -> None:
        if not os.path.isdir(self.path):
            raise ArtifactMissingError(
                f"The stored artifact at {self.uri} does not exist.",
                source=self.uri,
            )

    def manifest(self, algorithm: str) -> Manifest:
        self._check_present()
        try:
            return hash_tree(self.path, algorithm)
        except OSError as exc:
            raise StoreReadError(
                f"Reading {self.uri} failed: {exc}", source=self.uri
            ) from exc

    def snapshot(self, algorithm: str) -> Snapshot:
        return Snapshot(self.manifest(algorithm))

    def fetch(self, dest: str, algorithm: str) -> Manifest:
        self._check_present()
        buffer = bytearray(_COPY_SIZE)
        entries = []
        try:
            for rel, full in iter_tree(self.path):
                if rel in IGNORED_ROOT_FILES:
                    continue
                # The copy takes the canonical (NFC) name, which is the name
                # the record covers and the one a loader will ask for.
                target = os.path.join(dest, *canonical_path(rel).split("/"))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                size, digest = _copy_hashing(full, target, algorithm, buffer)
                entries.append((rel, size, digest))
        except OSError as exc:
            raise StoreReadError(
                f"Copying {self.uri} failed: {exc}", source=self.uri
            ) from exc
        return Manifest.from_entries(algorithm, entries)


def _copy_hashing(
    src: str, dst: str, algorithm: str, buffer: bytearray
) -> tuple[int, bytes]:
    raw, before = open_regular(src)
    with raw, open(dst, "xb", buffering=0) as fout:
        size, digest = hash_open_file(raw, algorithm, buffer, sink=fout.write)
        check_unchanged(src, before, raw, size)
    return size, digest


class ArtifactRepositoryStore:
    """Any store MLflow can download from (``mlflow-artifacts:``, ``s3:``, ...),
    read through ``mlflow.artifacts.download_artifacts``."""

    def __init__(self, uri: str) -> None:
        self.uri = uri

    def _download(self, into: str) -> str:
        """Download the tree below ``into``; return the directory holding it
        (MLflow names it after the last segment of the URI)."""
        import mlflow.artifacts

        try:
            listing = mlflow.artifacts.list_artifacts(artifact_uri=self.uri)
        except MlflowException as exc:
            raise _store_error(self.uri, exc) from exc
        except Exception as exc:
            raise StoreReadError(
                f"Listing {self.uri} failed: {exc}", source=self.uri
            ) from exc
        if not listing:
            raise ArtifactMissingError(
                f"The stored artifact at {self.uri} holds no files, or no "
                "longer exists.",
                source=self.uri,
            )
        try:
            return str(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=self.uri, dst_path=into
                )
            )
        except MlflowException as exc:
            raise _store_error(self.uri, exc) from exc
        except Exception as exc:
            raise StoreReadError(
                f"Downloading {self.uri} failed: {exc}", source=self.uri
            ) from exc

    def manifest(self, algorithm: str) -> Manifest:
        with tempfile.TemporaryDirectory(prefix="mlflow-integrity-hash-") as tmp:
            return hash_tree(self._download(tmp), algorithm, private=True)

    def snapshot(self, algorithm: str) -> Snapshot:
        return Snapshot(self.manifest(algorithm))

    def fetch(self, dest: str, algorithm: str) -> Manifest:
        staging = tempfile.mkdtemp(prefix=".download-", dir=os.path.dirname(dest))
        try:
            downloaded = self._download(staging)
            os.rmdir(dest)
            os.replace(downloaded, dest)
        finally:
            remove_tree(staging)
        # Files the digest does not cover must not reach a loader either.
        for name in IGNORED_ROOT_FILES:
            path = os.path.join(dest, name)
            if os.path.isfile(path) or os.path.islink(path):
                os.unlink(path)
        return hash_tree(dest, algorithm, private=True)


def _store_error(uri: str, exc: MlflowException) -> IntegrityError:
    if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
        return ArtifactMissingError(
            f"The stored artifact at {uri} does not exist: {exc.message}",
            source=uri,
        )
    return StoreReadError(f"Reading {uri} failed: {exc.message}", source=uri)


def remove_tree(path: str) -> None:
    """Remove a private copy, logging rather than raising on failure."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        _logger.warning("Could not remove %s: %s", path, exc)


# --- helpers shared by the streaming stores -----------------------------------

STREAM_CHUNK = 1024 * 1024
# Objects read at once from a remote store. Each read is a network stream; the
# hashing of one chunk is short next to its transfer.
WORKERS_ENV = "MLFLOW_INTEGRITY_STORE_WORKERS"
_DEFAULT_WORKERS = 8


def store_workers() -> int:
    """How many objects a remote store reads in parallel (1-64)."""
    raw = os.environ.get(WORKERS_ENV, "")
    if not raw:
        return _DEFAULT_WORKERS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= 64:
        from mlflow_integrity.errors import ConfigurationError

        raise ConfigurationError(f"{WORKERS_ENV}={raw!r} is not a number from 1 to 64.")
    return value


def hash_chunks(chunks: Any, algorithm: str, sink: Any = None) -> tuple[int, bytes]:
    """Hash an iterable of byte chunks as they arrive, passing each to ``sink``."""
    from mlflow_integrity.digest import new_hasher

    hasher = new_hasher(algorithm)
    size = 0
    for chunk in chunks:
        if not chunk:
            continue
        hasher.update(chunk)
        if sink is not None:
            sink(chunk)
        size += len(chunk)
    return size, hasher.digest()


def run_parallel(fn: Any, items: list[Any], workers: int) -> list[Any]:
    """``[fn(item) for item in items]`` on up to ``workers`` threads, in order.

    As soon as one call fails, the calls not yet started are cancelled; the
    first failure (in time) is raised once the running calls have returned.
    """
    if workers <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        futures = [pool.submit(fn, item) for item in items]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in futures if f in done and f.exception() is not None]
        if failed:
            for f in pending:
                f.cancel()
            wait(pending)
            first = min(failed, key=lambda f: futures.index(f))
            raise first.exception()  # type: ignore[misc]
        return [f.result() for f in futures]


def refuse_duplicate_paths(paths: Any, uri: str) -> None:
    """Refuse two stored names that are one path after NFC normalisation,
    before any byte is read or written.

    Raises:
        UnsafeArtifactError: naming the path.
    """
    from mlflow_integrity.errors import UnsafeArtifactError

    seen: set[str] = set()
    for path in paths:
        if path in seen:
            raise UnsafeArtifactError(
                f"Two files of {uri} have the path {path!r} (names equal after "
                "Unicode NFC normalisation count as one); rename one of them."
            )
        seen.add(path)


def unwritable_paths(paths: Any) -> set[str]:
    """The paths below another path that is itself a file (``MLmodel/x`` next
    to ``MLmodel``): an object store holds both, a directory cannot. A fetch
    hashes them without writing them, so the check reports them as files
    that were not registered instead of failing on the copy."""
    files = set(paths)
    return {
        path
        for path in files
        if any(
            "/".join(path.split("/")[:i]) in files
            for i in range(1, path.count("/") + 1)
        )
    }


def target_path(dest: str, path: str) -> str:
    """Where a covered file with canonical ``path`` lands under ``dest``,
    creating its directory."""
    target = os.path.join(dest, *path.split("/"))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    return target
