"""Registration records the digest of the artifact as stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pytest

import mlflow_integrity
from mlflow_integrity import registry
from mlflow_integrity.digest import Digest, hash_tree
from mlflow_integrity.errors import (
    ArtifactMissingError,
    ConfigurationError,
    UnsafeArtifactError,
)
from tests.helpers import stored_dir

AWKWARD_FILES = {
    "extras/unicode é ü 模型.txt": b"unicode name",
    "extras/with space and %20 and : colon.bin": b"\x00\x01\x02",
    "extras/deep/nested/folder/leaf.json": b"{}",
    "extras/empty.txt": b"",
}


def log_awkward_model(classifier: Any, tmp_path: Path) -> str:
    """Save the classifier, add awkward files, log it as run artifacts."""
    local = tmp_path / "saved"
    mlflow.sklearn.save_model(classifier, str(local), pip_requirements=["scikit-learn"])
    for rel, data in AWKWARD_FILES.items():
        target = local.joinpath(*rel.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(local), "model")
    return f"runs:/{run.info.run_id}/model"


def test_runs_uri_records_digest_of_stored_bytes(integrity_registry, log_sklearn):
    """A runs:/ registration tags the version with the digest of the stored tree."""
    logged = log_sklearn()

    mv = mlflow_integrity.register_model(logged.runs_uri, "iris")

    stored = stored_dir(integrity_registry.client, "iris", mv.version)
    assert mv.tags[registry.ARTIFACT_SHA] == str(hash_tree(str(stored)).root_digest())
    assert mv.tags[registry.SOURCE] == str(
        integrity_registry.client.get_model_version_download_uri("iris", mv.version)
    )
    assert mv.tags[registry.ORIGIN] == "registration"
    assert mv.tags[registry.RECORDED_BY].startswith("mlflow-integrity ")
    assert mv.tags[registry.SPEC] == "1"
    record = registry.read_record(mv)
    assert record is not None
    assert {e.path for e in record.manifest.files} >= {"MLmodel", "model.skops"}


def test_logged_model_uri_and_plain_location(integrity_registry, log_sklearn):
    """models:/m-<id> and a direct storage URI register with the same digest."""
    logged = log_sklearn()

    by_id = mlflow_integrity.register_model(logged.model_uri, "by-id")
    location = integrity_registry.client.get_model_version_download_uri(
        "by-id", by_id.version
    )
    direct = mlflow_integrity.register_model(location, "direct")

    assert by_id.tags[registry.ARTIFACT_SHA] == direct.tags[registry.ARTIFACT_SHA]


def test_sha256_is_selectable(integrity_registry, log_sklearn):
    """algorithm='sha256' records a sha256 digest that verifies."""
    logged = log_sklearn()

    mv = mlflow_integrity.register_model(logged.runs_uri, "iris", algorithm="sha256")

    assert Digest.parse(mv.tags[registry.ARTIFACT_SHA]).algorithm == "sha256"
    assert mlflow_integrity.verify(f"models:/iris/{mv.version}").ok


def test_algorithm_from_environment(integrity_registry, log_sklearn, monkeypatch):
    """MLFLOW_INTEGRITY_ALGORITHM chooses the algorithm of new digests."""
    monkeypatch.setenv("MLFLOW_INTEGRITY_ALGORITHM", "sha256")

    mv = mlflow_integrity.register_model(log_sklearn().runs_uri, "iris")

    assert mv.tags[registry.ARTIFACT_SHA].startswith("sha256:")


def test_user_tags_are_kept_and_integrity_tags_refused(integrity_registry, log_sklearn):
    """Ordinary tags pass through; integrity tags from the caller are refused."""
    logged = log_sklearn()

    mv = mlflow_integrity.register_model(logged.runs_uri, "iris", tags={"team": "a"})
    assert mv.tags["team"] == "a"

    with pytest.raises(ConfigurationError, match="artifact_sha"):
        mlflow_integrity.register_model(
            logged.runs_uri, "iris", tags={"artifact_sha": "blake3:" + "0" * 64}
        )
    assert len(integrity_registry.client.search_model_versions("name = 'iris'")) == 1


def test_awkward_file_names(integrity_registry, classifier, tmp_path):
    """Unicode, spaces, % and : in names, nested folders and an empty file."""
    uri = log_awkward_model(classifier, tmp_path)

    mv = mlflow_integrity.register_model(uri, "awkward")

    record = registry.read_record(mv)
    assert record is not None
    paths = {e.path for e in record.manifest.files}
    assert set(AWKWARD_FILES) <= paths
    assert record.manifest.by_path()["extras/empty.txt"].size == 0
    assert mlflow_integrity.verify(f"models:/awkward/{mv.version}").ok


def test_empty_model_directory_is_refused(integrity_registry, tmp_path):
    """An empty model directory is refused and no version is created."""
    empty = tmp_path / "empty-model"
    empty.mkdir()
    (empty / "sub").mkdir()

    with pytest.raises(ArtifactMissingError, match="contains no files"):
        mlflow_integrity.register_model(str(empty), "empty")

    assert integrity_registry.client.search_model_versions("name = 'empty'") == []


def test_symlink_out_of_tree_is_refused(integrity_registry, tmp_path):
    """A model whose tree links outside itself cannot be registered."""
    model = tmp_path / "linked"
    model.mkdir()
    (model / "MLmodel").write_text("flavors: {}\n")
    secret = tmp_path / "secret.txt"
    secret.write_text("outside")
    (model / "data.txt").symlink_to(secret)

    with pytest.raises(UnsafeArtifactError, match="points outside"):
        mlflow_integrity.register_model(str(model), "linked")


def test_backfill_records_once(integrity_registry, log_sklearn):
    """A version registered by plain MLflow gets a backfilled, marked digest,
    and a second backfill leaves it alone."""
    logged = log_sklearn()
    mv = mlflow.register_model(logged.runs_uri, "plain")

    record = mlflow_integrity.backfill_version("plain", mv.version)
    again = mlflow_integrity.backfill_version("plain", mv.version)

    assert record is not None and again is None
    tags = integrity_registry.client.get_model_version("plain", mv.version).tags
    assert tags[registry.ORIGIN] == "backfill"
    assert tags[registry.ARTIFACT_SHA] == str(record.digest)
    assert mlflow_integrity.verify(f"models:/plain/{mv.version}").ok


@pytest.mark.server
def test_register_over_tracking_server(server_registry, log_sklearn):
    """Through a real mlflow server, the proxied mlflow-artifacts: bytes are
    hashed, and the digest equals that of the file the server stored."""
    logged = log_sklearn()

    mv = mlflow_integrity.register_model(logged.runs_uri, "served-iris")

    location = server_registry.client.get_model_version_download_uri(
        "served-iris", mv.version
    )
    assert location.startswith("mlflow-artifacts:")
    on_disk = server_registry.artifact_root / location.split("mlflow-artifacts:/")[1]
    assert mv.tags[registry.ARTIFACT_SHA] == str(hash_tree(str(on_disk)).root_digest())
    assert mlflow_integrity.verify(f"models:/served-iris/{mv.version}").ok


def test_changed_bytes_cannot_be_reregistered(integrity_registry, log_sklearn):
    """Bytes that changed after models:/iris/1 was registered cannot get a
    fresh record, neither by registering their location nor by copying the
    version: the refusal names the version and both digests."""
    from mlflow_integrity.errors import DigestMismatchError
    from tests.helpers import flip_byte, weights_file

    first = mlflow_integrity.register_model(log_sklearn().runs_uri, "iris")
    stored = stored_dir(integrity_registry.client, "iris", first.version)
    flip_byte(weights_file(stored))

    for uri, name in (
        (first.tags[registry.SOURCE], "iris"),
        ("models:/iris/1", "copy"),
    ):
        with pytest.raises(DigestMismatchError) as caught:
            mlflow_integrity.register_model(uri, name)
        assert "models:/iris/1 recorded them as" in str(caught.value)
        assert first.tags[registry.ARTIFACT_SHA] in str(caught.value)
    assert len(integrity_registry.client.search_model_versions("name = 'iris'")) == 1
