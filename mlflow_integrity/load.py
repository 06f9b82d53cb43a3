"""Verified download and load, for any MLflow flavor.

The artifact is copied into a private directory and hashed on the way in;
only if every file matches the record is the flavor's loader pointed at that
copy. Nothing is ever loaded from the live store path (MLflow's local
repository hands that back when no destination is given), so nothing can
change between the check and the use.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import tempfile
import time
import weakref
from dataclasses import dataclass
from typing import Any

from mlflow import MlflowClient

from mlflow_integrity.check import (
    UNTAGGED,
    VerifyResult,
    compare,
    failed,
    pinned_digest,
)
from mlflow_integrity.digest import DEFAULT_ALGORITHM, Digest
from mlflow_integrity.errors import (
    ConfigurationError,
    DigestMismatchError,
    IntegrityError,
    UntaggedVersionError,
)
from mlflow_integrity.registry import ResolvedVersion, read_record, resolve
from mlflow_integrity.stores import open_store, remove_tree

_logger = logging.getLogger(__name__)

PIN_WAIT_ENV = "MLFLOW_INTEGRITY_PIN_WAIT"


@dataclass(frozen=True)
class VerifiedModel:
    """A private local copy whose bytes matched the record.

    ``path`` is the model directory; ``result`` is the check that passed (or,
    with ``allow_untagged``, the UNTAGGED result that was let through).
    """

    path: str
    result: VerifyResult

    @property
    def digest(self) -> Digest | None:
        return self.result.actual

    @property
    def model_uri(self) -> str:
        return self.result.model_uri


def pin_wait_seconds(pin_wait: float | None = None) -> float:
    """How long a pinned load waits for the pinned content to become visible:
    the argument, else ``MLFLOW_INTEGRITY_PIN_WAIT`` (seconds), else 0.

    Raises:
        ConfigurationError: for a negative or non-numeric value.
    """
    raw: object = pin_wait if pin_wait is not None else os.environ.get(PIN_WAIT_ENV)
    if raw in (None, ""):
        return 0.0
    try:
        seconds = float(raw)  # type: ignore[arg-type]
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise ConfigurationError(
            f"The pin wait ({PIN_WAIT_ENV} or pin_wait=) must be a number of "
            f"seconds, not {raw!r}."
        )
    return seconds


def download_verified(
    model_uri: str,
    *,
    expected: str | Digest | None = None,
    allow_untagged: bool = False,
    parent_dir: str | None = None,
    client: MlflowClient | None = None,
    pin_wait: float | None = None,
) -> VerifiedModel:
    """Copy a registered version into a new private directory and verify it.

    With a pin, a mismatch may only mean that the registry or the store still
    answers with what it held before the pinned content was registered
    (read-after-write lag, a replica, a cache). Such a load retries, with
    backoff from 0.5 s doubling to 10 s, for up to ``pin_wait`` seconds before
    it fails; without a pin nothing is retried.

    Args:
        model_uri: ``models:/<name>/<version>`` or ``models:/<name>@<alias>``.
        expected: a pinned digest; defaults to ``MLFLOW_INTEGRITY_EXPECTED_DIGEST``.
        allow_untagged: accept a version without a digest (with a warning).
        parent_dir: where to create the private directory (a new temporary
            directory by default).
        client: an MlflowClient; the default one otherwise.
        pin_wait: seconds a pinned load keeps retrying; defaults to
            ``MLFLOW_INTEGRITY_PIN_WAIT``, else 0.

    Raises:
        DigestMismatchError: a file differs, is missing or was added, or the
            record does not equal the pin (after ``pin_wait``).
        ArtifactMissingError: the stored artifact is gone.
        UntaggedVersionError: no digest is recorded and untagged is not allowed.
        MalformedTagError: the record does not parse or was edited.
        StoreReadError: the store failed.
        ConfigurationError: a malformed URI, pin or wait.
    """
    client = client or MlflowClient()
    pin = pinned_digest(expected)
    deadline = time.monotonic() + (pin_wait_seconds(pin_wait) if pin else 0.0)
    delay = 0.5
    while True:
        try:
            return _download_once(model_uri, pin, allow_untagged, parent_dir, client)
        except (DigestMismatchError, UntaggedVersionError):
            if pin is None or time.monotonic() + delay > deadline:
                raise
        _logger.warning(
            "%s does not show the pinned %s yet; retrying in %.1f s",
            model_uri,
            pin.short,
            delay,
        )
        time.sleep(delay)
        delay = min(delay * 2, 10.0)


def _download_once(
    model_uri: str,
    pin: Digest | None,
    allow_untagged: bool,
    parent_dir: str | None,
    client: MlflowClient,
) -> VerifiedModel:
    resolved = resolve(client, model_uri)
    record = read_record(resolved.model_version)
    if record is None and not allow_untagged:
        VerifyResult(
            name=resolved.name,
            version=resolved.version,
            source=resolved.source,
            status=UNTAGGED,
            pin=pin,
        ).raise_for_status()
    if record is not None:
        algorithm = record.digest.algorithm
    else:
        algorithm = pin.algorithm if pin else DEFAULT_ALGORITHM

    # Bytes land in "model.partial" and are renamed to "model" only once they
    # verify, so a killed process never leaves a directory that looks loadable.
    private = tempfile.mkdtemp(prefix="mlflow-integrity-", dir=parent_dir)
    partial = os.path.join(private, "model.partial")
    model_dir = os.path.join(private, "model")
    os.mkdir(partial)
    try:
        try:
            actual = open_store(resolved.source).fetch(partial, algorithm)
        except IntegrityError as err:
            failed(resolved, err, record, pin).raise_for_status()
            raise
        if record is not None:
            result = compare(resolved, record, actual, pin)
            result.raise_for_status()
        else:
            result = _untagged(resolved, actual.root_digest(), pin)
        os.rename(partial, model_dir)
    except BaseException:
        remove_tree(private)
        raise

    _logger.info(
        "%s verified (%s, %d files) into %s",
        resolved.uri,
        result.actual.short if result.actual else "-",
        len(actual.files),
        model_dir,
    )
    return VerifiedModel(model_dir, result)


def _untagged(
    resolved: ResolvedVersion, digest: Digest, pin: Digest | None
) -> VerifyResult:
    if pin is not None and digest != pin:
        raise DigestMismatchError(
            f"{resolved.uri} has no recorded digest and its bytes hash to "
            f"{digest}, not to the pinned {pin}. Nothing was loaded; deploy "
            "the version the pin was taken from.",
            name=resolved.name,
            version=resolved.version,
            source=resolved.source,
            expected=str(pin),
            actual=str(digest),
        )
    _logger.warning(
        "%s has no recorded digest; loading it unchecked because "
        "allow_untagged is set%s",
        resolved.uri,
        " (its bytes do match the pin)" if pin else "",
    )
    return VerifyResult(
        name=resolved.name,
        version=resolved.version,
        source=resolved.source,
        status=UNTAGGED,
        actual=digest,
        pin=pin,
    )


def load_model(
    model_uri: str,
    flavor: str | None = None,
    *,
    expected: str | Digest | None = None,
    allow_untagged: bool = False,
    attest: str | None = None,
    pin_wait: float | None = None,
    **kwargs: Any,
) -> Any:
    """Load a registered model with any flavor, after verifying its bytes.

    Args:
        model_uri: ``models:/<name>/<version>`` or ``models:/<name>@<alias>``
            (an alias is resolved once; the log names the version).
        flavor: an MLflow flavor module name (``sklearn``, ``pytorch``, ...);
            ``pyfunc`` by default.
        expected: a pinned digest; defaults to ``MLFLOW_INTEGRITY_EXPECTED_DIGEST``.
        allow_untagged: load a version that has no digest, with a warning.
        attest: a deployment name (such as ``canary``): after loading, record
            on the version that this deployment runs the verified digest, for
            promotion policies that demand it (see :mod:`mlflow_integrity.gate`).
        pin_wait: seconds a pinned load waits for the pinned content (see
            :func:`download_verified`).
        **kwargs: passed to the flavor's ``load_model``.

    Returns:
        Whatever the flavor's ``load_model`` returns. The private copy it was
        loaded from is removed when that object is garbage-collected, or at
        interpreter exit for objects that cannot be weakly referenced.

    Raises:
        DigestMismatchError, ArtifactMissingError, UntaggedVersionError,
        MalformedTagError, StoreReadError: as for :func:`download_verified`.
        ConfigurationError: for an unknown flavor or a malformed URI or pin.
    """
    loader = _flavor_loader(flavor or "pyfunc")
    if attest is not None:
        from mlflow_integrity.gate import check_deployment

        check_deployment(attest)
    copy = download_verified(
        model_uri, expected=expected, allow_untagged=allow_untagged, pin_wait=pin_wait
    )
    private = os.path.dirname(copy.path)
    try:
        model = loader(copy.path, **kwargs)
    except BaseException:
        remove_tree(private)
        raise
    try:
        weakref.finalize(model, remove_tree, private)
    except TypeError:
        atexit.register(remove_tree, private)
    else:
        # Keyed by id: some model classes define __eq__ and are unhashable.
        _VERIFIED[id(model)] = copy.result
        weakref.finalize(model, _VERIFIED.pop, id(model), None)

    if attest is not None and copy.digest is not None:
        from mlflow_integrity.gate import attest as record_attestation

        result = copy.result
        assert result.name is not None and result.version is not None
        record_attestation(result.name, result.version, attest, copy.digest)
    return model


# What each loaded model was verified as, for as long as the model lives.
_VERIFIED: dict[int, VerifyResult] = {}


def verification_of(model: Any) -> VerifyResult | None:
    """What a model returned by :func:`load_model` was verified as: version,
    digest (``.actual``), source and time (``.checked_at``); None for objects
    it did not load (or that cannot be weakly referenced)."""
    return _VERIFIED.get(id(model))


def _flavor_loader(flavor: str) -> Any:
    if not flavor.isidentifier():
        raise ConfigurationError(f"{flavor!r} is not an MLflow flavor name.")
    try:
        module = importlib.import_module(f"mlflow.{flavor}")
    except ImportError as exc:
        raise ConfigurationError(
            f"MLflow flavor {flavor!r} cannot be imported ({exc}); "
            "check the name and that its library is installed."
        ) from exc
    loader = getattr(module, "load_model", None)
    if loader is None:
        raise ConfigurationError(f"mlflow.{flavor} has no load_model.")
    return loader
