"""Registration that records the digest of the artifact as stored."""

from __future__ import annotations

import logging
import os
import urllib.parse
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from mlflow_integrity import _compat
from mlflow_integrity.digest import DEFAULT_ALGORITHM, Manifest, check_algorithm
from mlflow_integrity.errors import (
    ArtifactMissingError,
    ConfigurationError,
    DigestMismatchError,
)
from mlflow_integrity.registry import (
    ARTIFACT_SHA,
    ORIGIN_BACKFILL,
    ORIGIN_REGISTRATION,
    SOURCE,
    Record,
    is_integrity_tag,
    resolve,
)
from mlflow_integrity.stores import open_store

_logger = logging.getLogger(__name__)

ALGORITHM_ENV = "MLFLOW_INTEGRITY_ALGORITHM"
_MLMODEL = "MLmodel"


def default_algorithm() -> str:
    """The algorithm for new digests: ``MLFLOW_INTEGRITY_ALGORITHM`` or blake3."""
    return check_algorithm(os.environ.get(ALGORITHM_ENV) or DEFAULT_ALGORITHM)


def storage_location(model_uri: str, client: MlflowClient | None = None) -> str:
    """Where MLflow will record the bytes of a version registered from
    ``model_uri``: the run's artifact path or its logged model for ``runs:/``,
    the logged model's artifact location for ``models:/m-<id>``, the version's
    download URI for ``models:/<name>/<version>``, the URI itself otherwise.

    Raises:
        ConfigurationError: if the URI names no model.
    """
    client = client or MlflowClient()
    scheme = urllib.parse.urlparse(model_uri).scheme
    if scheme == "runs":
        return _run_storage_location(client, model_uri)
    if scheme == "models":
        body = model_uri[len("models:/") :].strip("/")
        if body.startswith("m-") and "/" not in body and "@" not in body:
            return str(client.get_logged_model(body).artifact_location)
        return resolve(client, model_uri).source
    return model_uri


def _run_storage_location(client: MlflowClient, model_uri: str) -> str:
    underlying = _compat.run_artifact_uri(model_uri)
    listing = mlflow.artifacts.list_artifacts(artifact_uri=underlying)
    if any(os.path.basename(f.path) == _MLMODEL for f in listing):
        return underlying

    # MLflow 3 keeps logged models outside the run's artifacts; it registers
    # the one with this name logged by the run, the latest step if several.
    run_id, path = _compat.parse_runs_uri(model_uri)
    candidates = _compat.logged_models_of_run(client, run_id, path)
    if not candidates:
        raise ConfigurationError(
            f"{model_uri} names no model: run {run_id} has no MLmodel at "
            f"{path!r} and logged no model named {path!r}."
        )
    if len(candidates) > 1:
        outputs = client.get_run(run_id).outputs
        steps = {o.model_id: o.step for o in (outputs.model_outputs if outputs else [])}
        candidates.sort(key=lambda m: steps.get(m.model_id, -1))
    return str(candidates[-1].artifact_location)


def record_for(
    location: str, algorithm: str, origin: str = ORIGIN_REGISTRATION
) -> Record:
    """Hash the tree stored at ``location`` and build its integrity record.

    Raises:
        ArtifactMissingError: if nothing is stored there, or no file is.
        UnsafeArtifactError: if the tree cannot be covered safely.
        StoreReadError: if the store fails.
    """
    snapshot = open_store(location).snapshot(algorithm)
    manifest: Manifest = snapshot.manifest
    if not manifest.files:
        raise ArtifactMissingError(
            f"The model directory at {location} contains no files; there is "
            "nothing to register. Check that the model was logged or saved "
            "completely.",
            source=location,
        )
    return Record.new(manifest, location, origin, objects=snapshot.objects)


def refuse_if_changed_since_recorded(
    versions: Any, record: Record, copy_source: Any = None
) -> None:
    """Refuse to record bytes that an earlier version recorded differently.

    ``versions`` are those of the same name (a version recorded from the same
    location counts); ``copy_source`` is the version a ``models:/`` source
    copies. Recording the changed bytes would give them a fresh, valid record
    and hide that the earlier version was modified after its registration: a
    copy or a re-registration would launder the tampering.

    Raises:
        DigestMismatchError: naming the earlier version and both digests.
    """
    same_place = [mv for mv in versions if (mv.tags or {}).get(SOURCE) == record.source]
    for mv in [*same_place, copy_source]:
        earlier = (mv.tags or {}).get(ARTIFACT_SHA) if mv is not None else None
        if earlier is None or earlier == str(record.digest):
            continue
        uri = f"models:/{mv.name}/{mv.version}"
        raise DigestMismatchError(
            f"Refusing to record the bytes at {record.source}: {uri} recorded "
            f"them as {earlier} and they now hash to {record.digest}, so they "
            f"changed after {uri} was registered. Restore them (`mlflow-integrity "
            f"verify {uri}` lists the files that differ), or log the new model "
            "as a new artifact and register that.",
            name=mv.name,
            version=str(mv.version),
            source=record.source,
            expected=earlier,
            actual=str(record.digest),
        )


def register_model(
    model_uri: str,
    name: str,
    await_registration_for: int = 300,
    *,
    tags: dict[str, Any] | None = None,
    algorithm: str | None = None,
    **kwargs: Any,
) -> ModelVersion:
    """Register a model like ``mlflow.register_model`` and record its digest.

    The bytes hashed are the ones in the artifact store that the new version
    will point at, not a local pre-upload copy. The digest, the manifest and
    the provenance go into the tags of the create call itself.

    Args:
        model_uri: ``runs:/<run_id>/<path>``, ``models:/m-<id>``,
            ``models:/<name>/<version>`` or a storage URI.
        name: the registered model name (created if absent).
        await_registration_for: as in ``mlflow.register_model``.
        tags: extra version tags; integrity tags are refused.
        algorithm: ``blake3`` (default) or ``sha256``.
        **kwargs: passed on to ``mlflow.register_model``.

    Returns:
        The new ModelVersion, with its integrity tags.

    Raises:
        ConfigurationError: for integrity tags in ``tags`` or a bad algorithm.
        ArtifactMissingError: if the model directory is missing or empty.
        UnsafeArtifactError: if the tree holds paths or links that cannot be
            covered.
        StoreReadError: if the artifact store fails.
    """
    algorithm = check_algorithm(algorithm) if algorithm else default_algorithm()
    user_tags = dict(tags or {})
    reserved = sorted(k for k in user_tags if is_integrity_tag(k))
    if reserved:
        raise ConfigurationError(
            f"Tags {', '.join(reserved)} are written by mlflow-integrity only; "
            "remove them from the tags you pass."
        )
    client = MlflowClient()
    if _is_integrity_store(client):
        # The integrity+ registry store hashes and records in the create call.
        mv = mlflow.register_model(
            model_uri, name, await_registration_for, tags=user_tags, **kwargs
        )
        return client.get_model_version(mv.name, mv.version)

    location = storage_location(model_uri, client)
    record = record_for(location, algorithm)
    refuse_if_changed_since_recorded(
        client.search_model_versions(f"name = '{name}'"),
        record,
        _copy_source(client, model_uri),
    )
    mv = mlflow.register_model(
        model_uri,
        name,
        await_registration_for,
        tags={**user_tags, **record.to_tags()},
        **kwargs,
    )

    # The store decides where the version points; if that is not what was
    # hashed, hash what it points at instead.
    stored_at = client.get_model_version_download_uri(mv.name, mv.version)
    if stored_at != location:
        _logger.warning(
            "models:/%s/%s points at %s, not %s; hashing that instead",
            mv.name,
            mv.version,
            stored_at,
            location,
        )
        record = record_for(stored_at, algorithm)
        write_record(client, mv.name, str(mv.version), record)

    _logger.info(
        "models:/%s/%s registered with %s %s (%d files)",
        mv.name,
        mv.version,
        ARTIFACT_SHA,
        record.digest.short,
        len(record.manifest.files),
    )
    return client.get_model_version(mv.name, mv.version)


def _copy_source(client: MlflowClient, model_uri: str) -> Any:
    """The registered version a ``models:/<name>/<version|@alias>`` URI names
    (the source of a copy); None for other URIs."""
    body = model_uri[len("models:/") :] if model_uri.startswith("models:/") else ""
    if not body or body.startswith("m-"):
        return None
    return resolve(client, model_uri).model_version


def _is_integrity_store(client: MlflowClient) -> bool:
    from mlflow_integrity.plugins.registry_store import IntegrityRegistryStore

    return isinstance(_compat.registry_store_of(client), IntegrityRegistryStore)


def write_record(client: MlflowClient, name: str, version: str, record: Record) -> None:
    """Write a record's tags onto an existing version (``artifact_sha`` last)."""
    for key, value in record.tags_in_write_order():
        client.set_model_version_tag(name, version, key, value)


def backfill_version(
    name: str,
    version: str,
    *,
    algorithm: str | None = None,
    dry_run: bool = False,
    client: MlflowClient | None = None,
) -> Record | None:
    """Record a digest for a version registered without one (trust on first use).

    The record is marked ``origin=backfill``: it proves the bytes have not
    changed since now, not since registration. A version that already has a
    digest is never overwritten.

    Returns:
        The new record, or None if the version already had a digest.

    Raises:
        ArtifactMissingError, UnsafeArtifactError, StoreReadError: as for
            :func:`register_model`.
    """
    client = client or MlflowClient()
    algorithm = check_algorithm(algorithm) if algorithm else default_algorithm()
    mv = client.get_model_version(name, version)
    if ARTIFACT_SHA in (mv.tags or {}):
        _logger.info("models:/%s/%s already has a digest; left alone", name, version)
        return None
    from mlflow_integrity.plugins.registry_store import IntegrityRegistryStore

    store = _compat.registry_store_of(client)
    wrapped = isinstance(store, IntegrityRegistryStore)
    location = client.get_model_version_download_uri(name, version)
    if wrapped:
        location = store.serving_location(location)
    record = record_for(location, algorithm, origin=ORIGIN_BACKFILL)
    if not dry_run:
        # The integrity store refuses record tags from the API; it writes
        # this one past that check itself.
        if wrapped:
            store.write_record(name, version, record)
        else:
            write_record(client, name, version, record)
        _logger.info(
            "models:/%s/%s backfilled with %s %s",
            name,
            version,
            ARTIFACT_SHA,
            record.digest.short,
        )
    return record
