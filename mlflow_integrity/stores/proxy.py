"""The tracking server's artifact proxy (``mlflow server --serve-artifacts``).

``mlflow-artifacts:`` URIs (and the ``/api/2.0/mlflow-artifacts/artifacts``
URLs they resolve to) are listed through MLflow's HTTP artifact repository and
each file is streamed from the server straight into the hasher, and into the
private copy when there is one; nothing is staged in a temporary file. The
server reads its artifacts destination (a directory, S3, ...) on our behalf, so
object versions are not visible through it: a quick check of a proxied
version lists the bucket the server recorded, directly, when this process has
credentials for it, and otherwise reads every byte through the proxy.

MLflow's HTTP settings apply: ``MLFLOW_TRACKING_TOKEN`` or
``MLFLOW_TRACKING_USERNAME``/``PASSWORD``, ``MLFLOW_TRACKING_INSECURE_TLS``,
``MLFLOW_TRACKING_SERVER_CERT_PATH``, ``MLFLOW_HTTP_REQUEST_TIMEOUT`` and
``MLFLOW_HTTP_REQUEST_MAX_RETRIES``.
"""

from __future__ import annotations

import logging
import posixpath
import urllib.parse
from typing import Any

from mlflow_integrity import _compat
from mlflow_integrity.digest import IGNORED_ROOT_FILES, Manifest, canonical_path
from mlflow_integrity.errors import (
    ArtifactMissingError,
    IntegrityError,
    StoreReadError,
)
from mlflow_integrity.stores import (
    STREAM_CHUNK,
    Snapshot,
    hash_chunks,
    refuse_duplicate_paths,
    run_parallel,
    store_workers,
    target_path,
    unwritable_paths,
)

_logger = logging.getLogger(__name__)

_PROXY_PATH = "/mlflow-artifacts/artifacts"
# Bounds on what a listing may make us do (the manifest's own cap is about
# two million files).
_MAX_ENTRIES = 2_000_000
_MAX_DEPTH = 256


def is_proxy_uri(uri: str) -> bool:
    """True for URIs served by a tracking server's artifact proxy."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "mlflow-artifacts":
        return True
    return parsed.scheme in ("http", "https") and _PROXY_PATH in parsed.path


def proxied_path(uri: str) -> str:
    """The artifact path a proxied URI names below the server's artifacts
    destination (``1/models/m-1/artifacts``)."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "mlflow-artifacts":
        return parsed.path.strip("/")
    _, _, tail = parsed.path.partition(_PROXY_PATH)
    return urllib.parse.unquote(tail).strip("/")


def _error(uri: str, what: str, exc: BaseException) -> IntegrityError:
    if isinstance(exc, IntegrityError):
        return exc
    from mlflow.exceptions import MlflowException

    message = exc.message if isinstance(exc, MlflowException) else str(exc)
    return StoreReadError(
        f"{what} {uri} through the tracking server failed: "
        f"{type(exc).__name__}: {message}",
        source=uri,
    )


class ProxyStore:
    """A model tree behind the tracking server's artifact proxy."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._session: tuple[Any, Any] | None = None

    def _repo(self) -> tuple[Any, Any]:
        if self._session is None:
            try:
                self._session = _compat.proxy_repository(self.uri)
            except Exception as exc:
                raise _error(self.uri, "Opening", exc) from exc
        return self._session

    def files(self) -> list[tuple[str, str, int | None]]:
        """Every file below the root: ``(canonical path, path as served,
        listed size)``.

        Raises:
            ArtifactMissingError: if the server lists nothing there.
            StoreReadError: if the server fails.
        """
        repo, _ = self._repo()
        found: list[tuple[str, str, int | None]] = []
        pending: list[str | None] = [None]
        seen: set[str] = set()
        try:
            while pending:
                directory = pending.pop()
                for info in repo.list_artifacts(directory):
                    if len(seen) + len(found) >= _MAX_ENTRIES:
                        raise StoreReadError(
                            f"Listing {self.uri}: the server lists more than "
                            f"{_MAX_ENTRIES:,} entries; no model is that large. "
                            "Check the URI and the server.",
                            source=self.uri,
                        )
                    if info.is_dir:
                        if info.path in seen or info.path.count("/") >= _MAX_DEPTH:
                            raise StoreReadError(
                                f"Listing {self.uri}: the server lists directory "
                                f"{info.path!r} twice or deeper than {_MAX_DEPTH} "
                                "levels; refusing a listing that does not end.",
                                source=self.uri,
                            )
                        seen.add(info.path)
                        pending.append(info.path)
                    elif info.path not in IGNORED_ROOT_FILES:
                        found.append(
                            (canonical_path(info.path), info.path, info.file_size)
                        )
        except IntegrityError:
            raise
        except Exception as exc:
            raise _error(self.uri, "Listing", exc) from exc
        refuse_duplicate_paths((path for path, _, _ in found), self.uri)
        if not found:
            raise ArtifactMissingError(
                f"The stored artifact at {self.uri} holds no files, or no "
                "longer exists.",
                source=self.uri,
            )
        return found

    def read(
        self, served: str, listed: int | None, algorithm: str, sink: Any = None
    ) -> tuple[int, bytes]:
        """Stream one file into the hasher (and ``sink``).

        Raises:
            StoreReadError: if the server fails, the connection is cut, or
                the size read is not the size listed.
        """
        _, creds = self._repo()
        endpoint = "/" + urllib.parse.quote(posixpath.normpath(served))
        try:
            response = _compat.http_get_stream(creds, endpoint)
            with response:
                size, digest = hash_chunks(
                    response.iter_content(chunk_size=STREAM_CHUNK), algorithm, sink
                )
        except Exception as exc:
            raise _error(self.uri, f"Reading {served!r} of", exc) from exc
        if listed is not None and size != listed:
            raise StoreReadError(
                f"Reading {served!r} of {self.uri} returned {size} bytes; the "
                f"server listed {listed}. Check again.",
                source=self.uri,
            )
        _logger.debug("hashed %s/%s (%d bytes)", self.uri, served, size)
        return size, digest

    def manifest(self, algorithm: str) -> Manifest:
        def one(item: tuple[str, str, int | None]) -> tuple[str, int, bytes]:
            path, served, listed = item
            return (path, *self.read(served, listed, algorithm))

        entries = run_parallel(one, self.files(), store_workers())
        return Manifest.from_entries(algorithm, entries)

    def snapshot(self, algorithm: str) -> Snapshot:
        return Snapshot(self.manifest(algorithm))

    def fetch(self, dest: str, algorithm: str) -> Manifest:
        files = self.files()
        skipped = unwritable_paths(path for path, _, _ in files)

        def one(item: tuple[str, str, int | None]) -> tuple[str, int, bytes]:
            path, served, listed = item
            if path in skipped:
                return (path, *self.read(served, listed, algorithm))
            try:
                with open(target_path(dest, path), "xb") as out:
                    size, digest = self.read(served, listed, algorithm, sink=out.write)
            except OSError as exc:
                raise StoreReadError(
                    f"Writing the private copy of {self.uri} failed: {exc}",
                    source=self.uri,
                ) from exc
            return path, size, digest

        entries = run_parallel(one, files, store_workers())
        return Manifest.from_entries(algorithm, entries)
