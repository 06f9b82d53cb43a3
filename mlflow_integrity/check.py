"""Comparing what is stored, or was downloaded, with what was recorded."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from mlflow import MlflowClient

from mlflow_integrity.digest import Digest, FileChange, Manifest, ManifestDiff
from mlflow_integrity.errors import (
    ArtifactMissingError,
    ConfigurationError,
    DigestMismatchError,
    IntegrityError,
    MalformedTagError,
    StoreReadError,
    UntaggedVersionError,
)
from mlflow_integrity.registry import (
    OBJECTS,
    Record,
    ResolvedVersion,
    read_record,
    resolve,
    utc_text,
)
from mlflow_integrity.render import render_result
from mlflow_integrity.stores import Store, open_store
from mlflow_integrity.stores.s3 import ObjectHistory, S3Store

_logger = logging.getLogger(__name__)

EXPECTED_DIGEST_ENV = "MLFLOW_INTEGRITY_EXPECTED_DIGEST"

VERIFIED = "VERIFIED"
MODIFIED = "MODIFIED"
MISSING = "MISSING"
EXTRA = "EXTRA"
UNTAGGED = "UNTAGGED"
MALFORMED = "MALFORMED"
UNREADABLE = "UNREADABLE"
STALE = "STALE"
STATUSES = (VERIFIED, MODIFIED, MISSING, EXTRA, UNTAGGED, MALFORMED, UNREADABLE, STALE)

# How a verdict was reached: "deep" re-read every byte; "quick" compared the
# object store's metadata (version id, ETag, size) with what was recorded and
# re-read only the objects whose metadata changed.
DEEP = "deep"
QUICK = "quick"
MODES = (DEEP, QUICK)

_ERROR_FOR_STATUS: dict[str, type[IntegrityError]] = {
    MODIFIED: DigestMismatchError,
    EXTRA: DigestMismatchError,
    MISSING: DigestMismatchError,
    UNTAGGED: UntaggedVersionError,
    MALFORMED: MalformedTagError,
    UNREADABLE: StoreReadError,
}


def now_utc() -> str:
    return utc_text(datetime.now(UTC))


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of one check of one model version.

    ``status`` is one of :data:`STATUSES`; ``diff`` lists the files that
    differ; ``detail`` explains statuses that have no diff (a store error, a
    malformed tag, a pin that the registry does not match).
    """

    name: str | None
    version: str | None
    source: str | None
    status: str
    expected: Digest | None = None
    actual: Digest | None = None
    diff: ManifestDiff = field(default_factory=ManifestDiff)
    pin: Digest | None = None
    record: Record | None = None
    detail: str = ""
    whole_artifact_missing: bool = False
    checked_at: str = field(default_factory=now_utc)
    mode: str = DEEP
    object_history: tuple[ObjectHistory, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == VERIFIED

    def __repr__(self) -> str:
        # The dataclass repr would print every manifest entry's raw bytes.
        digest = self.actual or self.expected
        return (
            f"VerifyResult({self.model_uri if self.name else self.source!r} "
            f"{self.status} {digest or 'no digest'} mode={self.mode} "
            f"checked_at={self.checked_at})"
        )

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def error(self) -> IntegrityError | None:
        """The error this result stands for, or None when VERIFIED."""
        if self.ok:
            return None
        cls = _ERROR_FOR_STATUS.get(self.status, IntegrityError)
        if self.status == MISSING and self.whole_artifact_missing:
            cls = ArtifactMissingError
        err = cls(
            render_result(self),
            name=self.name,
            version=self.version,
            source=self.source,
            expected=str(self.expected) if self.expected else None,
            actual=str(self.actual) if self.actual else None,
            diff=self.diff,
        )
        err.status = self.status
        return err

    def raise_for_status(self) -> None:
        """Raise the matching IntegrityError unless VERIFIED."""
        err = self.error()
        if err is not None:
            raise err

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (the schema the CLI's ``--format json`` prints)."""

        algorithm = self.expected.algorithm if self.expected else "blake3"

        def entry(e: Any) -> dict[str, Any] | None:
            if e is None:
                return None
            return {"size": e.size, "digest": f"{algorithm}:{e.digest.hex()}"}

        return {
            "model_uri": self.model_uri if self.name else None,
            "name": self.name,
            "version": self.version,
            "source": self.source,
            "status": self.status,
            "expected": str(self.expected) if self.expected else None,
            "actual": str(self.actual) if self.actual else None,
            "pinned": str(self.pin) if self.pin else None,
            "recorded_at": self.record.recorded_at if self.record else None,
            "origin": self.record.origin if self.record else None,
            "checked_at": self.checked_at,
            "mode": self.mode,
            "object_versions": [h.to_dict() for h in self.object_history],
            "detail": self.detail or None,
            "files": [
                {
                    "path": c.path,
                    "change": kind,
                    "expected": entry(c.expected),
                    "actual": entry(c.actual),
                }
                for kind, changes in (
                    ("modified", self.diff.modified),
                    ("missing", self.diff.missing),
                    ("extra", self.diff.extra),
                )
                for c in changes
            ],
        }


def pinned_digest(
    expected: str | Digest | None, *, env_pin: bool = True
) -> Digest | None:
    """The deployment's pin: the argument, else ``MLFLOW_INTEGRITY_EXPECTED_DIGEST``
    (unless ``env_pin`` is false).

    Raises:
        ConfigurationError: if the pin is not a well-formed digest.
    """
    if isinstance(expected, Digest):
        return expected
    if expected is not None:
        text = expected
    elif env_pin and EXPECTED_DIGEST_ENV in os.environ:
        text = os.environ[EXPECTED_DIGEST_ENV]
    else:
        return None
    if not text.strip():
        # A deployment template whose variable came out empty must not fall
        # back to "no pin".
        raise ConfigurationError(
            "The pinned digest is empty (expected= / --expect, or "
            f"{EXPECTED_DIGEST_ENV} set to nothing); give the full digest or "
            "do not pin."
        )
    try:
        return Digest.parse(text)
    except ValueError as exc:
        where = "expected= / --expect" if expected else EXPECTED_DIGEST_ENV
        raise ConfigurationError(
            f"The pinned digest ({where}) is invalid: {exc} Give the full "
            "digest as recorded in artifact_sha."
        ) from None


def status_of(diff: ManifestDiff) -> str:
    """The status word for a diff: a changed byte outweighs a lost file, which
    outweighs an added one."""
    if diff.modified:
        return MODIFIED
    if diff.missing:
        return MISSING
    if diff.extra:
        return EXTRA
    return VERIFIED


def compare(
    resolved: ResolvedVersion,
    record: Record,
    actual: Manifest,
    pin: Digest | None = None,
) -> VerifyResult:
    """Compare an actual manifest with a version's record (and a pin)."""
    base = {
        "name": resolved.name,
        "version": resolved.version,
        "source": resolved.source,
        "expected": record.digest,
        "pin": pin,
        "record": record,
    }
    if pin is not None and pin != record.digest:
        return VerifyResult(
            status=MODIFIED,
            actual=actual.root_digest(),
            detail=(
                f"the deployment pins {pin}, but the registry records "
                f"{record.digest} for this version"
            ),
            **base,  # type: ignore[arg-type]
        )
    diff = record.manifest.diff(actual)
    return VerifyResult(
        status=status_of(diff),
        actual=actual.root_digest(),
        diff=diff,
        whole_artifact_missing=bool(diff.missing) and not actual.files,
        **base,  # type: ignore[arg-type]
    )


def failed(
    resolved: ResolvedVersion,
    err: IntegrityError,
    record: Record | None = None,
    pin: Digest | None = None,
) -> VerifyResult:
    """A result for a check that could not read the bytes or the record.

    Raises:
        ConfigurationError: ``err`` itself when it is one: a bad setting is
            the caller's to fix, not a property of the stored bytes.
    """
    if isinstance(err, ConfigurationError):
        raise err
    status = err.status if err.status in STATUSES else UNREADABLE
    return VerifyResult(
        name=resolved.name,
        version=resolved.version,
        source=resolved.source,
        status=status,
        expected=record.digest if record else None,
        pin=pin,
        record=record,
        detail=err.message,
        whole_artifact_missing=isinstance(err, ArtifactMissingError),
    )


def check_mode(mode: str) -> str:
    """Return ``mode`` if it is ``deep`` or ``quick``.

    Raises:
        ConfigurationError: otherwise.
    """
    if mode not in MODES:
        raise ConfigurationError(
            f"Unknown check mode {mode!r}; use 'deep' (re-read every byte) or "
            "'quick' (compare object metadata, re-read what changed)."
        )
    return mode


def measure(
    store: Store, record: Record, mode: str = DEEP
) -> tuple[Manifest, str, str]:
    """The manifest of the stored tree now, the mode that produced it, and a
    note when quick mode was asked for but could not be used.

    Quick mode needs the object metadata recorded at registration (S3). The
    metadata is listed where the record says the objects are, which is also
    where a tracking server's proxy reads them from. For a proxied version
    that listing is used only when this process talks to the endpoint the
    server recorded, and when it fails (no S3 credentials here, say) every
    byte is read through the proxy instead; then, and when there is no such
    record at all, the mode returned says ``deep``.

    Raises:
        IntegrityError: if the store cannot be read.
        MalformedTagError: if the recorded objects cannot be where the
            version's bytes are.
    """
    objects = record.objects
    note = ""
    if mode == QUICK and objects is not None:
        listed = recorded_location(store, record)
        note = unusable_location(store, listed, record)
        if note:
            note += "; every byte was read through the tracking server instead"
        else:
            try:
                manifest, reread = listed.quick_manifest(record.manifest, objects)
            except IntegrityError as err:
                if listed is store:
                    raise
                note = (
                    f"quick mode could not list s3://{objects.bucket}/"
                    f"{objects.prefix} ({err.message}); every byte was read "
                    "through the tracking server instead"
                )
            else:
                _logger.debug(
                    "quick check of %s re-read %d objects", listed.uri, reread
                )
                return manifest, QUICK, ""
        _logger.info("%s", note)
    elif mode == QUICK:
        note = "no object versions were recorded for this version; every byte was read"
    return store.manifest(record.digest.algorithm), DEEP, note


def endpoint_hint(store: Store | None, record: Record) -> str:
    """When an S3 read fails and the record was made at another endpoint than
    this process uses, say so: a forgotten ``MLFLOW_S3_ENDPOINT_URL`` looks
    like a credentials or network problem otherwise."""
    objects = record.objects
    if not isinstance(store, S3Store) or objects is None:
        return ""
    if objects.endpoint == store.endpoint:
        return ""
    return (
        f"the version was recorded at S3 endpoint {objects.endpoint or 'AWS S3'}, "
        f"this process uses {store.endpoint or 'AWS S3'}: is "
        "MLFLOW_S3_ENDPOINT_URL set as it was at registration?"
    )


def unusable_location(store: Store, listed: S3Store, record: Record) -> str:
    """Why the recorded bucket of a proxied version cannot be read from here
    (empty when it can): the server recorded another S3 endpoint than the one
    this process uses, so the same bucket name may be another bucket."""
    objects = record.objects
    if listed is store or objects is None or objects.endpoint == listed.endpoint:
        return ""
    return (
        f"the tracking server read s3://{objects.bucket}/{objects.prefix} at "
        f"endpoint {objects.endpoint or 'AWS S3'}, but this process uses "
        f"{listed.endpoint or 'AWS S3'} (MLFLOW_S3_ENDPOINT_URL)"
    )


def recorded_location(store: Store, record: Record) -> S3Store:
    """The S3 tree the record's object versions were read from: ``store``
    itself, or (for a version behind a tracking server's proxy) the bucket
    the server recorded.

    Raises:
        MalformedTagError: if the recorded bucket and prefix cannot be where
            the version's bytes are: another prefix than an ``s3://`` source,
            a prefix that does not end with a proxied source's path, or any
            other kind of source. Quick checks and restores act on that
            location, so a record pointing elsewhere must not be followed.
    """
    objects = record.objects
    assert objects is not None
    if isinstance(store, S3Store):
        if (store.bucket, store.prefix) == (objects.bucket, objects.prefix):
            return store
        consistent = False
    else:
        from mlflow_integrity.stores.proxy import ProxyStore, proxied_path

        tail = proxied_path(store.uri) if isinstance(store, ProxyStore) else None
        consistent = bool(tail) and (
            objects.prefix == tail or objects.prefix.endswith(f"/{tail}")
        )
    if not consistent:
        raise MalformedTagError(
            f"The recorded object versions name s3://{objects.bucket}/"
            f"{objects.prefix}, which is not where the version's bytes are "
            f"({store.uri}); the {OBJECTS} tag was edited. Check the version "
            "deeply (mode='deep') and restore its tags from the registry's "
            "history.",
            source=store.uri,
        )
    prefix = f"/{objects.prefix}" if objects.prefix else ""
    return S3Store(f"s3://{objects.bucket}{prefix}")


def object_history(
    store: Store, record: Record, diff: ManifestDiff
) -> tuple[tuple[ObjectHistory, ...], str]:
    """For a failed check on a versioned bucket: what replaced each changed or
    lost object version, and whether the recorded one can still be fetched.
    Returns the histories, and a note if the history could not be read (which
    never changes the verdict)."""
    if record.objects is None or record.objects.store != "s3":
        return (), ""
    listed = record.objects.by_path()
    wanted = [
        listed[c.path]
        for c in diff.modified + diff.missing
        if c.path in listed and listed[c.path].version_id
    ]
    if not wanted:
        return (), ""
    try:
        s3 = recorded_location(store, record)
        if unusable_location(store, s3, record):
            return (), ""
        return tuple(s3.history(obj) for obj in wanted), ""
    except IntegrityError as err:
        return (), f"the object version history could not be read: {err.message}"


def verify(
    model_uri: str,
    *,
    expected: str | Digest | None = None,
    client: MlflowClient | None = None,
    mode: str = DEEP,
    env_pin: bool = True,
) -> VerifyResult:
    """Check a registered version's stored artifact against its record.

    Nothing is loaded. Integrity failures are returned as the result's status,
    not raised.

    Args:
        model_uri: ``models:/<name>/<version>`` or ``models:/<name>@<alias>``
            (an alias is resolved once).
        expected: a pinned digest that the record and the bytes must both equal;
            defaults to ``MLFLOW_INTEGRITY_EXPECTED_DIGEST``.
        client: an MlflowClient; the default one otherwise.
        mode: ``deep`` re-reads every byte; ``quick`` compares the object
            versions, ETags and sizes recorded at registration with the
            bucket's listing and re-reads only objects whose metadata changed
            (S3 only; elsewhere it reads every byte). ``result.mode`` says
            which one ran.
        env_pin: read ``MLFLOW_INTEGRITY_EXPECTED_DIGEST`` when ``expected``
            is None (an audit of many versions turns this off).

    Raises:
        ConfigurationError: if the URI, the pin or the mode is malformed, or
            the URI names nothing.
    """
    check_mode(mode)
    client = client or MlflowClient()
    pin = pinned_digest(expected, env_pin=env_pin)
    resolved = resolve(client, model_uri)

    try:
        record = read_record(resolved.model_version)
    except MalformedTagError as err:
        return failed(resolved, err, pin=pin)
    if record is None:
        return VerifyResult(
            name=resolved.name,
            version=resolved.version,
            source=resolved.source,
            status=UNTAGGED,
            pin=pin,
        )

    store: Store | None = None
    quick_note = ""
    if mode == QUICK and pin is not None:
        # A pin is the deployment's own knowledge of the bytes; the object
        # listing is only the registry's, and is not covered by the digest.
        mode = DEEP
        quick_note = "a pinned digest is always checked against every byte"
    try:
        store = open_store(resolved.source)
        actual, used, note = measure(store, record, mode)
        quick_note = quick_note or note
    except ConfigurationError:
        raise
    except IntegrityError as err:
        result = replace(failed(resolved, err, record, pin), mode=DEEP)
        hint = endpoint_hint(store, record)
        if hint and result.status == UNREADABLE:
            result = replace(result, detail=f"{result.detail} ({hint})")
        if result.status == MISSING and store is not None:
            # The whole tree is gone; on a versioned bucket its objects may not be.
            every = ManifestDiff(
                missing=tuple(
                    FileChange(e.path, e, None) for e in record.manifest.files
                )
            )
            history, note = object_history(store, record, every)
            result = replace(
                result,
                object_history=history,
                detail=" ".join(t for t in (result.detail, note) if t),
            )
        return result

    result = replace(compare(resolved, record, actual, pin), mode=used)
    if quick_note:
        result = replace(
            result,
            detail=" ".join(t for t in (result.detail, f"({quick_note})") if t),
        )
    if not result.ok and result.diff:
        history, note = object_history(store, record, result.diff)
        result = replace(
            result,
            object_history=history,
            detail=" ".join(t for t in (result.detail, note) if t),
        )
    _log_outcome(result)
    return result


def _log_outcome(result: VerifyResult) -> None:
    digest = result.expected.short if result.expected else "no digest"
    _logger.info("%s %s (%s)", result.model_uri, result.status, digest)
