"""Resolving model URIs to a version and its storage, and the integrity tags.

A version's integrity record lives in its tags:

- ``artifact_sha``: the root digest, the single source of truth;
- ``integrity.manifest`` (and ``integrity.manifest.<n>`` when split): the
  canonical manifest, zlib-compressed and base64-encoded, which must hash to
  ``artifact_sha`` or the record is MALFORMED;
- ``integrity.objects`` (and ``integrity.objects.<n>``): for artifacts in an
  object store, the version id, ETag, size and time of each object read at
  registration, as JSON, encoded like the manifest. It is not part of the
  digest: it lets a check skip unchanged objects (quick mode), name the object
  version that replaced a file, and restore the recorded one;
- ``integrity.source``, ``integrity.recorded_at``, ``integrity.recorded_by``,
  ``integrity.origin`` (``registration`` or ``backfill``), ``integrity.spec``;
- ``integrity.attest.<deployment>``: runtime attestations (see ``gate``).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mlflow.exceptions import MlflowException

from mlflow_integrity import __version__
from mlflow_integrity.digest import SPEC_VERSION, Digest, Manifest, canonical_path
from mlflow_integrity.errors import (
    ConfigurationError,
    MalformedTagError,
    UnsafeArtifactError,
)
from mlflow_integrity.stores import ObjectListing

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

_logger = logging.getLogger(__name__)

ARTIFACT_SHA = "artifact_sha"
TAG_PREFIX = "integrity."
MANIFEST = "integrity.manifest"
OBJECTS = "integrity.objects"
SOURCE = "integrity.source"
RECORDED_AT = "integrity.recorded_at"
RECORDED_BY = "integrity.recorded_by"
ORIGIN = "integrity.origin"
SPEC = "integrity.spec"
# Runtime attestations: written by serving processes, not by registration.
ATTEST_PREFIX = "integrity.attest."

ORIGIN_REGISTRATION = "registration"
ORIGIN_BACKFILL = "backfill"

_MANIFEST_ENCODING = "zlib+base64:"
_MANIFEST_PARTS = "parts:"
# MLflow accepts 100,000 characters per registry tag value, but a MySQL TEXT
# column holds 65,535 bytes; stay below both.
_MANIFEST_CHUNK = 60_000

# Bounds on what a tag may make a reader do: 10,000 parts of 60,000
# characters, and 256 MiB of manifest (about two million files).
_MAX_PARTS = 10_000
_MAX_MANIFEST_BYTES = 256 * 1024 * 1024

_VERSION_RE = re.compile(r"^[0-9]+$")


def all_pages(search: Callable[..., Any], **kwargs: Any) -> list[Any]:
    """Every item of a paged MLflow search (``search_registered_models``,
    ``search_model_versions``), following page tokens to the end."""
    items: list[Any] = []
    token = None
    while True:
        page = search(page_token=token, **kwargs)
        items.extend(page)
        token = getattr(page, "token", None)
        if not token:
            return items


def utc_text(moment: datetime) -> str:
    """A UTC time as written in tags and reports: ``2026-12-03T15:43:38Z``."""
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def is_integrity_tag(key: str) -> bool:
    """True for every tag mlflow-integrity reads: the record and attestations."""
    return key == ARTIFACT_SHA or key.startswith(TAG_PREFIX)


def is_record_tag(key: str) -> bool:
    """True for the tags of the integrity record, which only registration and
    backfill write (attestations excepted)."""
    return is_integrity_tag(key) and not key.startswith(ATTEST_PREFIX)


@dataclass(frozen=True)
class ModelRef:
    """A parsed ``models:/`` URI: exactly one of version, alias, stage or pin."""

    uri: str
    name: str
    version: str | None = None
    alias: str | None = None
    stage: str | None = None
    pin: Digest | None = None
    model_id: str | None = None


@dataclass(frozen=True)
class ResolvedVersion:
    """A model version and where its bytes are stored."""

    name: str
    version: str
    source: str
    model_version: ModelVersion
    via: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def parse_model_uri(uri: str) -> ModelRef:
    """Parse ``models:/name/3``, ``models:/name@alias``, ``models:/name/Stage``,
    ``models:/name/latest`` and ``models:/name@blake3:<hex>``.

    Raises:
        ConfigurationError: for any other form.

    ``models:/m-<id>`` (a logged model) is accepted: it resolves to the newest
    registered version made from that logged model.
    """
    if not uri.startswith("models:/") or uri.startswith("models://"):
        raise ConfigurationError(
            f"{uri!r} is not a registry URI; use models:/<name>/<version> or "
            "models:/<name>@<alias>."
        )
    body = uri[len("models:/") :].strip("/")
    if "/" in body:
        name, _, selector = body.partition("/")
        if not name or not selector or "/" in selector:
            raise ConfigurationError(f"Cannot parse model URI {uri!r}.")
        if _VERSION_RE.match(selector):
            return ModelRef(uri, name, version=selector)
        return ModelRef(uri, name, stage=selector)
    if "@" in body:
        name, _, selector = body.partition("@")
        if not name or not selector:
            raise ConfigurationError(f"Cannot parse model URI {uri!r}.")
        if selector.partition(":")[0] in ("blake3", "sha256"):
            try:
                return ModelRef(uri, name, pin=Digest.parse(selector))
            except ValueError as exc:
                raise ConfigurationError(
                    f"Content pin in {uri!r} is malformed: {exc}"
                ) from None
        return ModelRef(uri, name, alias=selector)
    if body.startswith("m-"):
        return ModelRef(uri, "", model_id=body)
    raise ConfigurationError(
        f"{uri!r} names no version; use models:/{body}/<version> or "
        f"models:/{body}@<alias>."
    )


def resolve(client: MlflowClient, uri: str) -> ResolvedVersion:
    """Resolve a ``models:/`` URI to one version, once.

    Raises:
        ConfigurationError: if the URI is malformed or names nothing.
    """
    ref = parse_model_uri(uri)
    try:
        mv, via = _lookup(client, ref)
    except MlflowException as exc:
        if isinstance(exc, ConfigurationError):
            raise
        raise ConfigurationError(
            f"Cannot resolve {uri}: {exc.message}", error_code=exc.error_code
        ) from exc
    source = client.get_model_version_download_uri(mv.name, mv.version)
    if ref.version is None:
        _logger.info("%s resolved to models:/%s/%s", uri, mv.name, mv.version)
    return ResolvedVersion(mv.name, str(mv.version), source, mv, via)


def _lookup(client: MlflowClient, ref: ModelRef) -> tuple[ModelVersion, str]:
    if ref.model_id is not None:
        return _lookup_logged_model(
            client, ref.model_id
        ), f"logged model {ref.model_id}"
    if ref.version is not None:
        return client.get_model_version(ref.name, ref.version), "version"
    if ref.alias is not None:
        mv = client.get_model_version_by_alias(ref.name, ref.alias)
        return mv, f"alias {ref.alias}"
    if ref.pin is not None:
        return _lookup_pin(client, ref.name, ref.pin), f"pin {ref.pin}"
    assert ref.stage is not None
    if ref.stage.lower() == "latest":
        versions = client.search_model_versions(
            f"name = '{ref.name}'", max_results=1, order_by=["version_number DESC"]
        )
        if not versions:
            raise ConfigurationError(f"Registered model {ref.name!r} has no versions.")
        return versions[0], "latest"
    latest = client.get_latest_versions(ref.name, stages=[ref.stage])
    if not latest:
        raise ConfigurationError(
            f"No version of {ref.name!r} is in stage {ref.stage!r}."
        )
    return latest[0], f"stage {ref.stage}"


def _lookup_logged_model(client: MlflowClient, model_id: str) -> ModelVersion:
    """The newest registered version made from a logged model: only a
    registered version has a record to verify against."""
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    logged = client.get_logged_model(model_id)
    try:
        versions = json.loads((logged.tags or {}).get(MLFLOW_MODEL_VERSIONS, "[]"))
    except ValueError:
        versions = []
    found = []
    for entry in versions:
        try:
            found.append(client.get_model_version(entry["name"], str(entry["version"])))
        except (MlflowException, KeyError, TypeError):
            continue
    if not found:
        raise ConfigurationError(
            f"Logged model {model_id} was never registered, so there is no "
            "recorded digest to verify it against; register it with "
            "mlflow_integrity.register_model first."
        )
    return max(found, key=lambda mv: int(mv.creation_timestamp or 0))


def _lookup_pin(client: MlflowClient, name: str, pin: Digest) -> ModelVersion:
    matches = [
        mv
        for mv in client.search_model_versions(f"name = '{name}'")
        if mv.tags.get(ARTIFACT_SHA) == str(pin)
    ]
    if not matches:
        raise ConfigurationError(
            f"No version of {name!r} records {ARTIFACT_SHA} {pin}; the pinned "
            "content was never registered under this name."
        )
    return max(matches, key=lambda mv: int(mv.version))


# --- the integrity record ------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """What was recorded on a version: digest, manifest and provenance."""

    digest: Digest
    manifest: Manifest
    source: str
    recorded_at: str
    recorded_by: str
    origin: str = ORIGIN_REGISTRATION
    objects: ObjectListing | None = None

    @classmethod
    def new(
        cls,
        manifest: Manifest,
        source: str,
        origin: str = ORIGIN_REGISTRATION,
        objects: ObjectListing | None = None,
    ) -> Record:
        now = utc_text(datetime.now(UTC))
        return cls(
            digest=manifest.root_digest(),
            manifest=manifest,
            source=source,
            recorded_at=now,
            recorded_by=f"mlflow-integrity {__version__}",
            origin=origin,
            objects=objects,
        )

    def to_tags(self) -> dict[str, str]:
        """The version tags that hold this record."""
        tags = {
            ARTIFACT_SHA: str(self.digest),
            SOURCE: self.source,
            RECORDED_AT: self.recorded_at,
            RECORDED_BY: self.recorded_by,
            ORIGIN: self.origin,
            SPEC: str(SPEC_VERSION),
        }
        tags.update(_encode_blob(MANIFEST, self.manifest.canonical_bytes()))
        if self.objects is not None:
            data = json.dumps(self.objects.to_json(), separators=(",", ":"))
            tags.update(_encode_blob(OBJECTS, data.encode("utf-8")))
        return tags

    def tags_in_write_order(self) -> list[tuple[str, str]]:
        """The tags for writing onto an existing version one by one:
        ``artifact_sha`` last, so that an interrupted write leaves the version
        UNTAGGED, never half-recorded."""
        tags = self.to_tags()
        digest = tags.pop(ARTIFACT_SHA)
        return [*tags.items(), (ARTIFACT_SHA, digest)]


def _encode_blob(key: str, data: bytes) -> dict[str, str]:
    packed = base64.b64encode(zlib.compress(data, 9))
    text = _MANIFEST_ENCODING + packed.decode("ascii")
    if len(text) <= _MANIFEST_CHUNK:
        return {key: text}
    chunks = [
        text[i : i + _MANIFEST_CHUNK] for i in range(0, len(text), _MANIFEST_CHUNK)
    ]
    tags = {key: f"{_MANIFEST_PARTS}{len(chunks)}"}
    tags.update({f"{key}.{i}": chunk for i, chunk in enumerate(chunks, 1)})
    return tags


def _decode_blob(tags: dict[str, str], key: str) -> bytes:
    text = tags.get(key)
    if text is None:
        raise ValueError(f"the {key} tag is missing")
    if text.startswith(_MANIFEST_PARTS):
        count = int(text[len(_MANIFEST_PARTS) :])
        if not 1 <= count <= _MAX_PARTS:
            raise ValueError(f"the {key} tag claims {count} parts")
        parts = [tags.get(f"{key}.{i}") for i in range(1, count + 1)]
        if any(p is None for p in parts):
            raise ValueError(f"some of the {count} {key}.<n> tags are missing")
        text = "".join(p for p in parts if p is not None)
    if not text.startswith(_MANIFEST_ENCODING):
        raise ValueError(f"the {key} tag has an unknown encoding")
    packed = base64.b64decode(text[len(_MANIFEST_ENCODING) :], validate=True)
    inflater = zlib.decompressobj()
    data = inflater.decompress(packed, _MAX_MANIFEST_BYTES)
    if inflater.unconsumed_tail or not inflater.eof:
        raise ValueError(
            f"the {key} tag inflates beyond {_MAX_MANIFEST_BYTES} bytes or is cut off"
        )
    return data


def _decode_manifest(tags: dict[str, str]) -> Manifest:
    return Manifest.parse(_decode_blob(tags, MANIFEST))


def _decode_objects(tags: dict[str, str], manifest: Manifest) -> ObjectListing | None:
    if OBJECTS not in tags:
        return None
    listing = ObjectListing.from_json(json.loads(_decode_blob(tags, OBJECTS)))
    paths = [(o.path, o.size) for o in listing.objects]
    if paths != [(e.path, e.size) for e in manifest.files]:
        raise ValueError(
            f"the {OBJECTS} tag does not list the manifest's files and sizes"
        )
    # Each key must be the file's own key below the prefix: a restore writes
    # to these keys.
    start = f"{listing.prefix}/" if listing.prefix else ""
    for obj in listing.objects:
        rel = obj.key[len(start) :]
        try:
            same = obj.key.startswith(start) and canonical_path(rel) == obj.path
        except UnsafeArtifactError:
            same = False
        if not same:
            raise ValueError(
                f"the {OBJECTS} tag gives key {obj.key!r} for {obj.path!r}, "
                f"which is not that file below {listing.prefix!r}"
            )
    return listing


def read_record(mv: ModelVersion) -> Record | None:
    """Read the integrity record of a version; None when it has no digest.

    Raises:
        MalformedTagError: if a tag does not parse, or the stored manifest does
            not hash to ``artifact_sha`` (a tampered or truncated manifest).
    """
    tags: dict[str, str] = dict(mv.tags or {})
    raw = tags.get(ARTIFACT_SHA)
    if raw is None:
        return None
    where = f"models:/{mv.name}/{mv.version}"
    fix = (
        "Integrity tags are written by mlflow-integrity only; restore them from "
        "the registry's history, or re-verify the bytes by hand and re-register."
    )
    try:
        digest = Digest.parse(raw)
    except ValueError as exc:
        raise MalformedTagError(
            f"{where}: tag {ARTIFACT_SHA} is malformed: {exc} {fix}",
            name=mv.name,
            version=str(mv.version),
        ) from None
    try:
        manifest = _decode_manifest(tags)
    except (ValueError, zlib.error, UnicodeDecodeError) as exc:
        raise MalformedTagError(
            f"{where}: the recorded manifest cannot be read ({exc}). {fix}",
            name=mv.name,
            version=str(mv.version),
            expected=str(digest),
        ) from None
    if manifest.algorithm != digest.algorithm or manifest.root_digest() != digest:
        raise MalformedTagError(
            f"{where}: the recorded manifest hashes to {manifest.root_digest()}, "
            f"not to {ARTIFACT_SHA} {digest}; the tags were edited. {fix}",
            name=mv.name,
            version=str(mv.version),
            expected=str(digest),
            actual=str(manifest.root_digest()),
        )
    try:
        objects = _decode_objects(tags, manifest)
    except (ValueError, zlib.error, UnicodeDecodeError) as exc:
        raise MalformedTagError(
            f"{where}: the recorded object versions cannot be read ({exc}). {fix}",
            name=mv.name,
            version=str(mv.version),
            expected=str(digest),
        ) from None
    return Record(
        digest=digest,
        manifest=manifest,
        source=tags.get(SOURCE, ""),
        recorded_at=tags.get(RECORDED_AT, ""),
        recorded_by=tags.get(RECORDED_BY, ""),
        origin=tags.get(ORIGIN, ORIGIN_REGISTRATION),
        objects=objects,
    )
