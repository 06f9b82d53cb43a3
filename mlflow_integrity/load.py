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
)
from mlflow_integrity.registry import ResolvedVersion, read_record, resolve
from mlflow_integrity.stores import open_store, remove_tree

_logger = logging.getLogger(__name__)


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


def download_verified(
    model_uri: str,
    *,
    expected: str | Digest | None = None,
    allow_untagged: bool = False,
    parent_dir: str | None = None,
    client: MlflowClient | None = None,
) -> VerifiedModel:
    """Copy a registered version into a new private directory and verify it.

    On any failure the copy is removed before the error is raised, so no
    unverified bytes are left where a loader could pick them up.

    Args:
        model_uri: ``models:/<name>/<version>`` or ``models:/<name>@<alias>``.
        expected: a pinned digest; defaults to ``MLFLOW_INTEGRITY_EXPECTED_DIGEST``.
        allow_untagged: accept a version without a digest (with a warning).
        parent_dir: where to create the private directory (a new temporary
            directory by default).
        client: an MlflowClient; the default one otherwise.

    Raises:
        DigestMismatchError: a file differs, is missing or was added, or the
            record does not equal the pin.
        ArtifactMissingError: the stored artifact is gone.
        UntaggedVersionError: no digest is recorded and untagged is not allowed.
        MalformedTagError: the record does not parse or was edited.
        StoreReadError: the store failed.
        ConfigurationError: a malformed URI or pin.
    """
    client = client or MlflowClient()
    pin = pinned_digest(expected)
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
        model_uri, expected=expected, allow_untagged=allow_untagged
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

    if attest is not None and copy.digest is not None:
        from mlflow_integrity.gate import attest as record_attestation

        result = copy.result
        assert result.name is not None and result.version is not None
        record_attestation(result.name, result.version, attest, copy.digest)
    return model


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
