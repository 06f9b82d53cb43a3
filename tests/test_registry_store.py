"""The integrity+<scheme> registry store: plain MLflow calls, recorded and gated."""

from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

import mlflow_integrity
from mlflow_integrity import registry
from mlflow_integrity.digest import hash_tree
from mlflow_integrity.errors import (
    ConfigurationError,
    PromotionRefusedError,
    ProtectedTagError,
)
from mlflow_integrity.plugins.registry_store import IntegrityRegistryStore, build
from tests.helpers import flip_byte, stored_dir, weights_file


@pytest.fixture
def wrapped(integrity_registry, monkeypatch):
    """The test's sqlite registry behind integrity+sqlite."""
    uri = "integrity+" + integrity_registry.registry_uri
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(
        tracking_uri=integrity_registry.tracking_uri, registry_uri=uri
    )
    yield client
    mlflow.set_registry_uri(integrity_registry.registry_uri)


def digest_of(client, name, version):
    return str(hash_tree(str(stored_dir(client, name, version))).root_digest())


def test_the_uri_builds_a_wrapping_store(wrapped):
    """integrity+sqlite resolves, through the entry point, to the wrapper."""
    store = wrapped._get_registry_client().store

    assert isinstance(store, IntegrityRegistryStore)
    assert type(store.inner).__name__ == "SqlAlchemyStore"


def test_build_refuses_bad_uris():
    """Only integrity+<scheme> URIs, wrapped once, are accepted."""
    with pytest.raises(ConfigurationError):
        build("sqlite:///x.db")
    with pytest.raises(ConfigurationError, match="twice"):
        build("integrity+integrity+sqlite:///x.db")


def test_plain_register_model_records_the_digest(wrapped, log_sklearn):
    """mlflow.register_model, unchanged, gets an artifact_sha of the stored bytes."""
    mv = mlflow.register_model(log_sklearn().runs_uri, "iris")

    tags = wrapped.get_model_version("iris", mv.version).tags
    assert tags[registry.ARTIFACT_SHA] == digest_of(wrapped, "iris", mv.version)
    assert mlflow_integrity.verify(f"models:/iris/{mv.version}").ok


def test_log_model_with_registered_model_name(wrapped, classifier):
    """log_model(registered_model_name=...) records the digest too."""
    with mlflow.start_run():
        mlflow.sklearn.log_model(
            classifier,
            name="model",
            registered_model_name="logged",
            pip_requirements=["scikit-learn"],
        )

    assert registry.ARTIFACT_SHA in wrapped.get_model_version("logged", "1").tags


def test_create_model_version_and_copy(wrapped, log_sklearn):
    """MlflowClient.create_model_version and copy_model_version record digests."""
    logged = log_sklearn()
    wrapped.create_registered_model("direct")
    mv = wrapped.create_model_version("direct", logged.model_uri, run_id=logged.run_id)

    copy = wrapped.copy_model_version(f"models:/direct/{mv.version}", "copied")

    original = wrapped.get_model_version("direct", mv.version).tags
    copied = wrapped.get_model_version("copied", copy.version).tags
    assert original[registry.ARTIFACT_SHA] == copied[registry.ARTIFACT_SHA]
    assert copied[registry.ORIGIN] == "registration"


def test_integrity_tags_from_the_client_are_not_trusted(wrapped, log_sklearn):
    """A digest sent along with the create is dropped and recomputed."""
    logged = log_sklearn()
    forged = "blake3:" + "00" * 32

    mv = mlflow.register_model(logged.runs_uri, "iris", tags={"artifact_sha": forged})

    tags = wrapped.get_model_version("iris", mv.version).tags
    assert tags[registry.ARTIFACT_SHA] != forged
    assert tags[registry.ARTIFACT_SHA] == digest_of(wrapped, "iris", mv.version)


def test_integrity_register_model_under_the_store(wrapped, log_sklearn):
    """mlflow_integrity.register_model under integrity+ records once, correctly."""
    mv = mlflow_integrity.register_model(log_sklearn().runs_uri, "iris")

    assert mv.tags[registry.ARTIFACT_SHA] == digest_of(wrapped, "iris", mv.version)


def test_alias_move_is_gated(wrapped, log_sklearn):
    """set_registered_model_alias: untouched allowed, tampered refused (403)."""
    mlflow.register_model(log_sklearn().runs_uri, "iris")
    wrapped.set_registered_model_alias("iris", "champion", "1")
    flip_byte(weights_file(stored_dir(wrapped, "iris", "1")))

    with pytest.raises(PromotionRefusedError) as caught:
        wrapped.set_registered_model_alias("iris", "challenger", "1")

    assert caught.value.get_http_status_code() == 403
    assert set(wrapped.get_registered_model("iris").aliases) == {"champion"}


def test_stage_transition_is_gated(wrapped, log_sklearn):
    """transition_model_version_stage to Production is refused when tampered;
    archiving is not gated."""
    mlflow.register_model(log_sklearn().runs_uri, "iris")
    (stored_dir(wrapped, "iris", "1") / "MLmodel").write_text("flavors: {}\n")

    with pytest.raises(PromotionRefusedError, match="stage 'Production'"):
        wrapped.transition_model_version_stage("iris", "1", "Production")
    wrapped.transition_model_version_stage("iris", "1", "Archived")

    assert wrapped.get_model_version("iris", "1").current_stage == "Archived"


def test_untagged_version_cannot_take_an_alias(
    wrapped, integrity_registry, log_sklearn
):
    """A version created behind the store's back (no digest) is refused."""
    plain = MlflowClient(registry_uri=integrity_registry.registry_uri)
    plain.create_registered_model("plain")
    plain.create_model_version("plain", log_sklearn().model_uri)

    with pytest.raises(PromotionRefusedError, match="no recorded artifact_sha"):
        wrapped.set_registered_model_alias("plain", "champion", "1")


def test_record_tags_are_immutable(wrapped, log_sklearn):
    """Setting or deleting record tags is refused; other tags are fine."""
    mlflow.register_model(log_sklearn().runs_uri, "iris")

    with pytest.raises(ProtectedTagError, match="artifact_sha"):
        wrapped.set_model_version_tag("iris", "1", "artifact_sha", "blake3:" + "1" * 64)
    with pytest.raises(ProtectedTagError):
        wrapped.delete_model_version_tag("iris", "1", "integrity.manifest")
    wrapped.set_model_version_tag("iris", "1", "team", "fraud")

    assert mlflow_integrity.verify("models:/iris/1").ok


def test_attestations_are_accepted_if_well_formed(wrapped, log_sklearn):
    """Serving processes may write attestations; malformed ones are refused."""
    mlflow.register_model(log_sklearn().runs_uri, "iris")

    mlflow_integrity.load_model("models:/iris/1", attest="canary")
    with pytest.raises(ConfigurationError, match="malformed attestation"):
        wrapped.set_model_version_tag("iris", "1", "integrity.attest.canary", "{}")

    assert "integrity.attest.canary" in wrapped.get_model_version("iris", "1").tags


def test_backfill_writes_through_the_store(wrapped, integrity_registry, log_sklearn):
    """backfill records a digest although the API refuses record tags."""
    plain = MlflowClient(registry_uri=integrity_registry.registry_uri)
    plain.create_registered_model("old")
    plain.create_model_version("old", log_sklearn().model_uri)

    record = mlflow_integrity.backfill_version("old", "1", client=wrapped)

    assert record is not None
    assert wrapped.get_model_version("old", "1").tags[registry.ORIGIN] == "backfill"
    wrapped.set_registered_model_alias("old", "champion", "1")


def test_a_retried_create_registers_one_version(wrapped, log_sklearn):
    """The same create sent twice (a client retry) yields one version."""
    logged = log_sklearn()
    wrapped.create_registered_model("retried")

    first = wrapped.create_model_version(
        "retried", logged.model_uri, run_id=logged.run_id
    )
    second = wrapped.create_model_version(
        "retried", logged.model_uri, run_id=logged.run_id
    )

    assert first.version == second.version
    assert len(wrapped.search_model_versions("name = 'retried'")) == 1


def test_prompts_are_left_alone(wrapped):
    """A prompt registers without a digest and takes an alias."""
    prompt = mlflow.genai.register_prompt(name="greeting", template="Hello {{name}}")

    mlflow.genai.set_prompt_alias(
        "greeting", alias="production", version=prompt.version
    )

    loaded = mlflow.genai.load_prompt("prompts:/greeting@production")
    assert loaded.template == "Hello {{name}}"
    assert registry.ARTIFACT_SHA not in loaded.tags


def test_a_model_cannot_be_turned_into_a_prompt(wrapped, log_sklearn):
    """Marking a registered model as a prompt later (to skip the gate) is refused."""
    mlflow.register_model(log_sklearn().runs_uri, "iris")

    with pytest.raises(ProtectedTagError):
        wrapped.set_registered_model_tag("iris", "mlflow.prompt.is_prompt", "true")


def test_other_calls_pass_through(wrapped, log_sklearn):
    """Searches, renames and deletes behave as in plain MLflow."""
    mlflow.register_model(log_sklearn().runs_uri, "iris")

    wrapped.rename_registered_model("iris", "iris-renamed")
    assert [m.name for m in wrapped.search_registered_models()] == ["iris-renamed"]
    wrapped.delete_model_version("iris-renamed", "1")
    with pytest.raises(MlflowException):
        wrapped.get_model_version("iris-renamed", "1")


def test_prompt_api_cannot_bypass_the_store(wrapped, log_sklearn):
    """MLflow's prompt methods, run against a model, meet the same checks:
    record tags stay protected, the prompt flag cannot be added, and an alias
    set through the prompt API is gated."""
    mlflow.register_model(log_sklearn().runs_uri, "iris")
    store = wrapped._get_registry_client().store
    flip_byte(weights_file(stored_dir(wrapped, "iris", "1")))

    with pytest.raises(ProtectedTagError):
        store.set_prompt_version_tag("iris", "1", "artifact_sha", "blake3:" + "2" * 64)
    with pytest.raises(ProtectedTagError):
        store.delete_prompt_version_tag("iris", "1", "artifact_sha")
    with pytest.raises(ProtectedTagError):
        store.set_prompt_tag("iris", "mlflow.prompt.is_prompt", "true")
    with pytest.raises(PromotionRefusedError):
        store.set_prompt_alias("iris", "champion", "1")

    assert "artifact_sha" in wrapped.get_model_version("iris", "1").tags


def test_attestations_are_dated_by_the_store(wrapped, log_sklearn):
    """A written attestation gets the store's time, not the writer's."""
    import json

    mv = mlflow.register_model(log_sklearn().runs_uri, "iris")
    digest = wrapped.get_model_version("iris", mv.version).tags["artifact_sha"]
    claim = json.dumps({"digest": digest, "at": "2099-01-01T00:00:00Z", "host": "x"})

    wrapped.set_model_version_tag("iris", mv.version, "integrity.attest.canary", claim)

    stored = json.loads(
        wrapped.get_model_version("iris", mv.version).tags["integrity.attest.canary"]
    )
    assert not stored["at"].startswith("2099") and stored["digest"] == digest


def test_a_second_registration_with_other_tags_is_not_a_retry(wrapped, log_sklearn):
    """Only an identical request is taken for a retry; new tags make a new version."""
    logged = log_sklearn()
    wrapped.create_registered_model("twice")

    first = wrapped.create_model_version(
        "twice", logged.model_uri, run_id=logged.run_id
    )
    second = wrapped.create_model_version(
        "twice", logged.model_uri, run_id=logged.run_id, tags={"note": "again"}
    )

    assert first.version != second.version
