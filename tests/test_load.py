"""Verified load: bytes are checked in a private copy before any is unpickled."""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import mlflow
import pytest

import mlflow_integrity
from mlflow_integrity import registry
from mlflow_integrity.errors import (
    ArtifactMissingError,
    ConfigurationError,
    DigestMismatchError,
    MalformedTagError,
    UntaggedVersionError,
)
from tests.helpers import flip_byte, stored_dir, weights_file


@pytest.fixture
def version(registered, integrity_registry):
    """A registered iris version and the directory that stores its bytes."""
    mv = registered("iris")
    return mv, stored_dir(integrity_registry.client, mv.name, mv.version)


def private_copies(parent: Path) -> list[str]:
    return sorted(os.listdir(parent))


def test_pyfunc_load_predicts(version, iris):
    """An untouched version loads as pyfunc and predicts."""
    features, _ = iris

    model = mlflow_integrity.load_model("models:/iris/1")

    assert list(model.predict(features[:3])) == [0, 0, 0]


def test_any_flavor_by_name(version, iris):
    """flavor='sklearn' returns the scikit-learn estimator itself."""
    features, labels = iris

    estimator = mlflow_integrity.load_model("models:/iris/1", flavor="sklearn")

    assert estimator.score(features, labels) > 0.9


def test_unknown_flavor_is_a_configuration_error(version):
    """A flavor MLflow does not have is refused before anything is downloaded."""
    with pytest.raises(ConfigurationError, match="no_such_flavor"):
        mlflow_integrity.load_model("models:/iris/1", flavor="no_such_flavor")


def test_alias_is_resolved_once_and_logged(version, integrity_registry, caplog):
    """models:/name@alias loads the aliased version and logs which one."""
    integrity_registry.client.set_registered_model_alias("iris", "champion", "1")

    with caplog.at_level(logging.INFO, logger="mlflow_integrity"):
        mlflow_integrity.load_model("models:/iris@champion")

    assert "models:/iris@champion resolved to models:/iris/1" in caplog.text


def test_private_copy_is_not_the_store(version, tmp_path):
    """The verified copy lives in a new private directory, not in the store."""
    _, stored = version
    parent = tmp_path / "copies"
    parent.mkdir()

    copy = mlflow_integrity.download_verified("models:/iris/1", parent_dir=str(parent))

    assert Path(copy.path).parent.parent == parent
    assert Path(copy.path).name == "model"
    assert os.listdir(Path(copy.path).parent) == ["model"]
    assert not Path(copy.path).is_relative_to(stored)
    assert copy.result.ok and copy.digest is not None


def test_one_changed_byte_is_refused_with_the_file_named(version, tmp_path):
    """One flipped byte in the weights file refuses the load; the message names
    the version, the file, both digests and the next step; no copy remains."""
    mv, stored = version
    weights = weights_file(stored)
    flip_byte(weights)
    parent = tmp_path / "copies"
    parent.mkdir()

    with pytest.raises(DigestMismatchError) as caught:
        mlflow_integrity.download_verified("models:/iris/1", parent_dir=str(parent))

    err = caught.value
    text = str(err)
    change = err.diff.modified[0]
    assert err.status == "MODIFIED"
    assert [c.path for c in err.diff.modified] == [weights.name]
    assert "models:/iris/1" in text
    assert f"modified    {weights.name}" in text
    assert change.expected.digest.hex() in text
    assert change.actual.digest.hex() in text
    assert mv.tags[registry.ARTIFACT_SHA] in text
    assert "mlflow-integrity verify models:/iris/1" in text
    assert err.error_code == "RESOURCE_CONFLICT"
    assert private_copies(parent) == []


def test_truncated_file_is_modified(version):
    """A truncated file is MODIFIED, with the new size in the diff."""
    _, stored = version
    weights = weights_file(stored)
    with open(weights, "r+b") as f:
        f.truncate(10)

    with pytest.raises(DigestMismatchError) as caught:
        mlflow_integrity.load_model("models:/iris/1")

    assert caught.value.diff.modified[0].actual.size == 10


def test_deleted_file_is_missing(version):
    """A deleted file is MISSING and named."""
    _, stored = version
    (stored / "conda.yaml").unlink()

    with pytest.raises(DigestMismatchError) as caught:
        mlflow_integrity.load_model("models:/iris/1")

    assert caught.value.status == "MISSING"
    assert [c.path for c in caught.value.diff.missing] == ["conda.yaml"]
    assert "missing     conda.yaml" in str(caught.value)


def test_added_file_is_extra(version):
    """A file added to the store is EXTRA, and the load is refused."""
    _, stored = version
    (stored / "sub").mkdir()
    (stored / "sub" / "payload.py").write_text("import os\n")

    with pytest.raises(DigestMismatchError) as caught:
        mlflow_integrity.load_model("models:/iris/1")

    assert caught.value.status == "EXTRA"
    assert [c.path for c in caught.value.diff.extra] == ["sub/payload.py"]


def test_whole_artifact_gone(version):
    """A version whose stored directory was deleted is ArtifactMissingError."""
    _, stored = version
    shutil.rmtree(stored)

    with pytest.raises(ArtifactMissingError) as caught:
        mlflow_integrity.load_model("models:/iris/1")

    assert caught.value.status == "MISSING"
    assert "models:/iris/1" in str(caught.value)


def test_mode_and_timestamps_do_not_count(version):
    """chmod and a new mtime on every stored file still verify."""
    _, stored = version
    for path in stored.iterdir():
        path.chmod(0o600)
        os.utime(path, (time.time() - 86400, time.time() - 86400))

    assert mlflow_integrity.verify("models:/iris/1").ok
    mlflow_integrity.load_model("models:/iris/1")


def test_plain_mlflow_download_does_not_break_verification(version):
    """MLflow writes registered_model_meta into a local store on download; the
    version still verifies."""
    _, stored = version

    mlflow.artifacts.download_artifacts("models:/iris/1")

    assert (stored / "registered_model_meta").exists()
    assert mlflow_integrity.verify("models:/iris/1").ok


def test_untagged_version_is_refused_by_default(integrity_registry, log_sklearn):
    """A version registered by plain MLflow is refused, naming the command that
    records a digest."""
    mlflow.register_model(log_sklearn().runs_uri, "plain")

    with pytest.raises(UntaggedVersionError) as caught:
        mlflow_integrity.load_model("models:/plain/1")

    text = str(caught.value)
    assert "models:/plain/1 has no recorded digest" in text
    assert "mlflow-integrity backfill --name plain --version 1" in text


def test_untagged_version_allowed_with_warning(integrity_registry, log_sklearn, caplog):
    """allow_untagged=True loads an untagged version and warns."""
    mlflow.register_model(log_sklearn().runs_uri, "plain")

    with caplog.at_level(logging.WARNING, logger="mlflow_integrity"):
        model = mlflow_integrity.load_model("models:/plain/1", allow_untagged=True)

    assert model is not None
    assert "has no recorded digest; loading it unchecked" in caplog.text


def test_pinned_digest_must_match_the_record(version, monkeypatch):
    """A pin equal to the record loads; another well-formed pin is refused with
    both digests named; the environment variable pins the same way."""
    mv, _ = version
    recorded = mv.tags[registry.ARTIFACT_SHA]
    other = "blake3:" + "ab" * 32

    mlflow_integrity.load_model("models:/iris/1", expected=recorded)
    with pytest.raises(DigestMismatchError) as caught:
        mlflow_integrity.load_model("models:/iris/1", expected=other)
    assert recorded in str(caught.value) and other in str(caught.value)

    monkeypatch.setenv("MLFLOW_INTEGRITY_EXPECTED_DIGEST", other)
    with pytest.raises(DigestMismatchError):
        mlflow_integrity.load_model("models:/iris/1")


def test_pin_checks_the_bytes_too(version):
    """With a correct pin, tampered bytes are still refused."""
    mv, stored = version
    flip_byte(weights_file(stored))

    with pytest.raises(DigestMismatchError):
        mlflow_integrity.load_model(
            "models:/iris/1", expected=mv.tags[registry.ARTIFACT_SHA]
        )


def test_malformed_pin_is_a_configuration_error(version, monkeypatch):
    """A pin that is not a digest, or an empty one (a template whose variable
    came out empty), is a configuration error, never "no pin"."""
    with pytest.raises(ConfigurationError, match="not a digest"):
        mlflow_integrity.load_model("models:/iris/1", expected="blake3:1234")
    with pytest.raises(ConfigurationError, match="empty"):
        mlflow_integrity.load_model("models:/iris/1", expected="")
    monkeypatch.setenv("MLFLOW_INTEGRITY_EXPECTED_DIGEST", "")
    with pytest.raises(ConfigurationError, match="empty"):
        mlflow_integrity.load_model("models:/iris/1")


def test_edited_digest_tag_is_malformed(version, integrity_registry):
    """An artifact_sha edited by hand no longer matches the manifest: MALFORMED."""
    integrity_registry.client.set_model_version_tag(
        "iris", "1", registry.ARTIFACT_SHA, "blake3:" + "00" * 32
    )

    with pytest.raises(MalformedTagError, match="tags were edited"):
        mlflow_integrity.load_model("models:/iris/1")
    assert mlflow_integrity.verify("models:/iris/1").status == "MALFORMED"


def test_forged_manifest_cannot_pass(version, integrity_registry):
    """Re-recording the manifest of tampered bytes without changing artifact_sha
    is caught: the manifest must hash to artifact_sha."""
    _, stored = version
    flip_byte(weights_file(stored))
    forged = registry.Record.new(
        mlflow_integrity.hash_tree(str(stored)), str(stored)
    ).to_tags()
    integrity_registry.client.set_model_version_tag(
        "iris", "1", registry.MANIFEST, forged[registry.MANIFEST]
    )

    with pytest.raises(MalformedTagError):
        mlflow_integrity.load_model("models:/iris/1")


def test_verify_reports_without_raising(version):
    """verify() returns a result whose status and diff describe the tampering."""
    _, stored = version
    flip_byte(weights_file(stored))

    result = mlflow_integrity.verify("models:/iris/1")

    assert result.status == "MODIFIED" and not result.ok
    assert result.to_dict()["files"][0]["change"] == "modified"


@pytest.mark.server
def test_tampering_behind_the_tracking_server_is_refused(
    server_registry, log_sklearn, iris
):
    """Through mlflow server and mlflow-artifacts:, an untouched version loads
    and one byte changed in the server's artifact store is refused."""
    features, _ = iris
    mv = mlflow_integrity.register_model(log_sklearn().runs_uri, "served")
    uri = f"models:/served/{mv.version}"

    assert len(mlflow_integrity.load_model(uri).predict(features[:2])) == 2

    location = server_registry.client.get_model_version_download_uri(
        "served", mv.version
    )
    on_disk = server_registry.artifact_root / location.split("mlflow-artifacts:/")[1]
    weights = weights_file(on_disk)
    flip_byte(weights)
    with pytest.raises(DigestMismatchError) as caught:
        mlflow_integrity.load_model(uri)
    assert [c.path for c in caught.value.diff.modified] == [weights.name]


def test_loaded_model_exposes_what_was_verified(version):
    """verification_of(model) gives the version, digest and time checked."""
    mv, _ = version

    model = mlflow_integrity.load_model("models:/iris/1")
    info = mlflow_integrity.verification_of(model)

    assert info is not None and info.ok
    assert (info.name, info.version) == ("iris", "1")
    assert str(info.actual) == mv.tags[registry.ARTIFACT_SHA]
    assert info.checked_at.endswith("Z")
    assert repr(info) == (
        f"VerifyResult('models:/iris/1' VERIFIED {info.actual} mode=deep "
        f"checked_at={info.checked_at})"
    )
    assert mlflow_integrity.verification_of(object()) is None


def test_pinned_load_waits_for_the_pinned_content(registered, integrity_registry):
    """A load pinned to version 2's digest through an alias still on version 1
    retries until the alias moves, within pin_wait; without the wait it fails
    at once, naming both digests."""
    import threading

    first, second = registered("iris"), registered("iris")
    client = integrity_registry.client
    client.set_registered_model_alias("iris", "champion", "1")
    pin = second.tags[registry.ARTIFACT_SHA]

    with pytest.raises(DigestMismatchError) as caught:
        mlflow_integrity.load_model("models:/iris@champion", expected=pin)
    assert pin in str(caught.value)
    assert first.tags[registry.ARTIFACT_SHA] in str(caught.value)

    mover = threading.Timer(
        1.0, client.set_registered_model_alias, args=("iris", "champion", "2")
    )
    mover.start()
    try:
        model = mlflow_integrity.load_model(
            "models:/iris@champion", expected=pin, pin_wait=20
        )
    finally:
        mover.cancel()
    assert mlflow_integrity.verification_of(model).version == "2"


def test_pin_wait_must_be_a_number(version, monkeypatch):
    """A bad MLFLOW_INTEGRITY_PIN_WAIT is a configuration error."""
    mv, _ = version
    monkeypatch.setenv("MLFLOW_INTEGRITY_PIN_WAIT", "soon")

    with pytest.raises(ConfigurationError, match="PIN_WAIT"):
        mlflow_integrity.load_model(
            "models:/iris/1", expected=mv.tags[registry.ARTIFACT_SHA]
        )
