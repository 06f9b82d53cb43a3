"""Reading stored artifact bytes without trusting them.

Two kinds of store are handled here. A local directory (``file:`` URIs and plain
paths) is hashed in place, and copied into a private directory with the hash
computed on the same pass. Every other URI goes through MLflow's own artifact
repositories: the tree is downloaded into a private directory and hashed there,
which reads the bytes twice; streaming stores (S3, the tracking server's proxy)
that hash while downloading are not implemented yet.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import urllib.parse
import urllib.request
from typing import Protocol

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


class Store(Protocol):
    """A stored model tree, addressed by the URI MLflow recorded for it."""

    uri: str

    def manifest(self, algorithm: str) -> Manifest:
        """Hash the tree as stored now, keeping no copy."""
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
