"""The exceptions mlflow-integrity raises.

Every refusal is an :class:`IntegrityError`, an ``MlflowException`` whose
``error_code`` maps to a 4xx HTTP status, so a tracking server reports it
properly and the MLflow client never retries it. The subclass tells the caller
what to do next; the CLI maps each to an exit code in one place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import ErrorCode

if TYPE_CHECKING:
    from mlflow_integrity.digest import ManifestDiff


class IntegrityError(MlflowException):
    """Root of every error this package raises.

    Attributes:
        status: the status word (``MODIFIED``, ``MISSING``, ...) for reports.
        name, version: the model version concerned, when known.
        source: the storage URI that was read.
        expected, actual: the recorded and the computed digest, as strings.
        diff: the per-file difference, when there is one.
    """

    status = "UNREADABLE"
    default_error_code = "BAD_REQUEST"

    def __init__(
        self,
        message: str,
        *,
        name: str | None = None,
        version: str | None = None,
        source: str | None = None,
        expected: str | None = None,
        actual: str | None = None,
        diff: ManifestDiff | None = None,
        error_code: str | None = None,
        **kwargs: Any,
    ) -> None:
        code = ErrorCode.Value(error_code or self.default_error_code)
        super().__init__(message, error_code=code, **kwargs)
        self.name = name
        self.version = version
        self.source = source
        self.expected = expected
        self.actual = actual
        self.diff = diff

    @property
    def model_uri(self) -> str | None:
        if self.name is None or self.version is None:
            return None
        return f"models:/{self.name}/{self.version}"


class DigestMismatchError(IntegrityError):
    """The bytes read do not hash to the recorded (or pinned) digest."""

    status = "MODIFIED"
    default_error_code = "RESOURCE_CONFLICT"


class ArtifactMissingError(IntegrityError):
    """The stored artifact, or all of it, is gone, or the tree has no files."""

    status = "MISSING"
    default_error_code = "RESOURCE_DOES_NOT_EXIST"


class UntaggedVersionError(IntegrityError):
    """The model version has no recorded digest."""

    status = "UNTAGGED"


class MalformedTagError(IntegrityError):
    """An integrity tag does not parse, or the manifest does not hash to it."""

    status = "MALFORMED"


class UnsafeArtifactError(IntegrityError):
    """The tree holds something a digest cannot cover safely (escaping paths,
    outside symlinks, names equal after NFC normalisation)."""

    status = "MODIFIED"
    default_error_code = "INVALID_PARAMETER_VALUE"


class StoreReadError(IntegrityError):
    """The artifact store refused or failed; nothing is known of the bytes.

    ``store_code`` is the store's own error code when it gave one (S3's
    ``NoSuchVersion``, ``AccessDenied``, ...).
    """

    status = "UNREADABLE"
    default_error_code = "BAD_REQUEST"
    store_code: str | None = None


class PromotionRefusedError(IntegrityError):
    """A stage transition or alias move was refused by the gate."""

    status = "REFUSED"
    default_error_code = "PERMISSION_DENIED"


class ProtectedTagError(IntegrityError):
    """A client tried to set or delete a tag of the integrity record."""

    status = "REFUSED"
    default_error_code = "PERMISSION_DENIED"


class ConfigurationError(IntegrityError):
    """Bad input or configuration: a malformed URI, option or pinned digest."""

    status = "CONFIGURATION"
    default_error_code = "INVALID_PARAMETER_VALUE"
