"""mlflow-integrity: the model you serve is the model you registered.

Register with :func:`register_model` to record the content digest of the stored
artifact on the version (tag ``artifact_sha``); load with :func:`load_model` to
refuse bytes that differ; check without loading with :func:`verify`; check
every version of a registry with :func:`audit`.

Names are imported on first use, so that ``import mlflow_integrity`` (and the
pytest plugin, which pytest loads in every run) does not import MLflow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "ArtifactMissingError": "errors",
    "AuditReport": "auditing",
    "ConfigurationError": "errors",
    "Diagnosis": "diagnosis",
    "Digest": "digest",
    "DigestMismatchError": "errors",
    "IntegrityError": "errors",
    "MalformedTagError": "errors",
    "Manifest": "digest",
    "ManifestDiff": "digest",
    "Policy": "gate",
    "PromotionRefusedError": "errors",
    "ProtectedTagError": "errors",
    "StoreReadError": "errors",
    "UnsafeArtifactError": "errors",
    "UntaggedVersionError": "errors",
    "VerifiedModel": "load",
    "VerifyResult": "check",
    "attest": "gate",
    "audit": "auditing",
    "backfill_version": "register",
    "diagnose": "diagnosis",
    "download_verified": "load",
    "hash_tree": "digest",
    "load_model": "load",
    "promote": "gate",
    "register_model": "register",
    "restore": "recovery",
    "verification_of": "load",
    "verify": "check",
}

__all__ = [
    "ArtifactMissingError",
    "AuditReport",
    "ConfigurationError",
    "Diagnosis",
    "Digest",
    "DigestMismatchError",
    "IntegrityError",
    "MalformedTagError",
    "Manifest",
    "ManifestDiff",
    "Policy",
    "PromotionRefusedError",
    "ProtectedTagError",
    "StoreReadError",
    "UnsafeArtifactError",
    "UntaggedVersionError",
    "VerifiedModel",
    "VerifyResult",
    "__version__",
    "attest",
    "audit",
    "backfill_version",
    "diagnose",
    "download_verified",
    "hash_tree",
    "load_model",
    "promote",
    "register_model",
    "restore",
    "verification_of",
    "verify",
]

if TYPE_CHECKING:
    from mlflow_integrity.auditing import AuditReport, audit
    from mlflow_integrity.check import VerifyResult, verify
    from mlflow_integrity.diagnosis import Diagnosis, diagnose
    from mlflow_integrity.digest import Digest, Manifest, ManifestDiff, hash_tree
    from mlflow_integrity.errors import (
        ArtifactMissingError,
        ConfigurationError,
        DigestMismatchError,
        IntegrityError,
        MalformedTagError,
        PromotionRefusedError,
        ProtectedTagError,
        StoreReadError,
        UnsafeArtifactError,
        UntaggedVersionError,
    )
    from mlflow_integrity.gate import Policy, attest, promote
    from mlflow_integrity.load import (
        VerifiedModel,
        download_verified,
        load_model,
        verification_of,
    )
    from mlflow_integrity.recovery import restore
    from mlflow_integrity.register import backfill_version, register_model


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mlflow_integrity' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"mlflow_integrity.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
