"""The ``verified:`` artifact repository: any flavor's loader, verified.

``mlflow.<flavor>.load_model("verified:/name/3")``, ``verified:/name@alias``,
``verified:/name@blake3:<hex>`` (a content pin) and
``mlflow models serve -m verified:/name@alias`` download through this
repository, which copies the registered version into a private directory and
verifies every file before MLflow sees a path. MLflow splits such URIs at the
last ``/`` before asking for a repository; :meth:`model_uri` puts them back
together.

The repository is read-only. ``verified:/m-<id>`` (a logged model that was
never registered) is refused: there is no record to verify it against.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from mlflow.store.artifact.artifact_repo import ArtifactRepository

SCHEME = "verified"


class VerifiedArtifactRepository(ArtifactRepository):
    """Resolve ``verified:`` URIs to registered versions and fetch them verified."""

    def __init__(
        self,
        artifact_uri: str,
        tracking_uri: str | None = None,
        registry_uri: str | None = None,
    ) -> None:
        super().__init__(artifact_uri, tracking_uri, registry_uri)

    def model_uri(self, artifact_path: str | None = None) -> str:
        """The ``models:/`` URI that this repository root plus a path names."""
        parsed = urllib.parse.urlparse(self.artifact_uri)
        parts = [
            parsed.netloc,
            parsed.path.strip("/"),
            (artifact_path or "").strip("/"),
        ]
        return "models:/" + "/".join(p for p in parts if p)

    def download_artifacts(
        self, artifact_path: str, dst_path: str | None = None
    ) -> str:
        """Copy the version into a new private directory (under ``dst_path`` if
        given), verify it, and return the model directory.

        Raises:
            IntegrityError: whatever :func:`mlflow_integrity.download_verified`
                raises; nothing unverified is left behind.
        """
        from mlflow_integrity.load import download_verified

        return download_verified(
            self.model_uri(artifact_path), parent_dir=dst_path
        ).path

    def list_artifacts(self, path: str | None = None) -> list[Any]:
        """List the stored files of the version (unverified: a listing only)."""
        import mlflow.artifacts
        from mlflow import MlflowClient

        from mlflow_integrity.registry import resolve

        resolved = resolve(MlflowClient(), self.model_uri())
        uri = resolved.source if not path else f"{resolved.source}/{path}"
        return list(mlflow.artifacts.list_artifacts(artifact_uri=uri))

    def _download_file(self, remote_file_path: str, local_path: str) -> None:
        raise NotImplementedError(
            "verified: downloads whole model versions only, so that every file "
            "is checked against the record; single files are not served."
        )

    def log_artifact(self, local_file: str, artifact_path: str | None = None) -> None:
        raise NotImplementedError("verified: URIs are read-only.")

    def log_artifacts(self, local_dir: str, artifact_path: str | None = None) -> None:
        raise NotImplementedError("verified: URIs are read-only.")


MODELS_SWITCH_ENV = "MLFLOW_INTEGRITY_VERIFY_MODELS_URIS"


def models_switch_on() -> bool:
    """True when ``MLFLOW_INTEGRITY_VERIFY_MODELS_URIS`` turns on verified
    ``models:/`` URIs (``1``, ``true`` or ``yes``)."""
    import os

    return os.environ.get(MODELS_SWITCH_ENV, "").strip().lower() in ("1", "true", "yes")


def models_repository(
    artifact_uri: str, tracking_uri: str | None = None, registry_uri: str | None = None
) -> Any:
    """The repository for MLflow's own ``models`` scheme.

    This package registers it in place of MLflow's; it returns MLflow's
    ``ModelsArtifactRepository`` unchanged unless the switch is on, and then a
    subclass whose downloads of registered versions are verified.
    """
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

    cls = _verified_models_class() if models_switch_on() else ModelsArtifactRepository
    return cls(artifact_uri, tracking_uri=tracking_uri, registry_uri=registry_uri)


def _verified_models_class() -> Any:
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

    class VerifiedModelsArtifactRepository(ModelsArtifactRepository):
        """``models:/`` downloads of registered versions, verified first.

        The version is the one MLflow resolved when it built this repository
        (an alias is resolved once). Logged models (``models:/m-<id>``) have
        no record and are downloaded as MLflow does.
        """

        def download_artifacts(
            self,
            artifact_path: str,
            dst_path: str | None = None,
            lineage_header_info: Any = None,
        ) -> str:
            import os

            from mlflow_integrity.load import download_verified

            if self.is_logged_model_uri or self.model_version is None:
                return str(super().download_artifacts(artifact_path, dst_path))
            uri = f"models:/{self.model_name}/{self.model_version}"
            copy = download_verified(uri, parent_dir=dst_path)
            if not artifact_path:
                return copy.path
            inside = os.path.join(copy.path, *artifact_path.strip("/").split("/"))
            if not os.path.exists(inside):
                raise FileNotFoundError(f"{uri} has no {artifact_path!r}.")
            return inside

    return VerifiedModelsArtifactRepository
