"""mlflow server --registry-store-uri integrity+<backend>: enforced for every client.

The clients here use plain http:// URIs, as a client without the plugin
would, and raw REST calls on /api/2.0 and /ajax-api/2.0.
"""

from __future__ import annotations

import threading
import uuid

import mlflow
import pytest
import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

import mlflow_integrity
from mlflow_integrity.digest import hash_tree
from tests.helpers import flip_byte, weights_file

pytestmark = pytest.mark.server


def start_enforcing(factory, tmp_path_factory, backend: str | None = None):
    """A server whose registry store is integrity+<backend>."""
    if backend is None:
        backend = f"sqlite:///{tmp_path_factory.mktemp('enforcing') / 'mlflow.db'}"
    return factory(backend, extra_args=["--registry-store-uri", f"integrity+{backend}"])


@pytest.fixture(scope="module")
def enforcing(mlflow_server_factory, tmp_path_factory):
    return start_enforcing(mlflow_server_factory, tmp_path_factory)


@pytest.fixture
def plain_client(enforcing, monkeypatch):
    """Fluent API and client pointed at the server with plain http:// URIs."""
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.setenv(var, enforcing.url)
    mlflow.set_tracking_uri(enforcing.url)
    mlflow.set_registry_uri(enforcing.url)
    mlflow.set_experiment(f"enforce-{uuid.uuid4().hex[:8]}")
    yield MlflowClient(tracking_uri=enforcing.url, registry_uri=enforcing.url)
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


def register(classifier, name: str) -> str:
    with mlflow.start_run():
        mlflow.sklearn.log_model(
            classifier,
            name="model",
            registered_model_name=name,
            pip_requirements=["scikit-learn"],
        )
    return str(MlflowClient().search_model_versions(f"name = '{name}'")[0].version)


def stored_on_server(server, client, name, version):
    location = client.get_model_version_download_uri(name, version)
    return server.artifacts_destination / location.split("mlflow-artifacts:/")[1]


def test_server_records_the_digest_for_a_plain_client(
    enforcing, plain_client, classifier
):
    """log_model(registered_model_name=...) from a plain client gets a digest
    computed by the server from its own artifacts destination."""
    version = register(classifier, "srv-iris")

    tags = plain_client.get_model_version("srv-iris", version).tags
    on_disk = stored_on_server(enforcing, plain_client, "srv-iris", version)
    assert tags["artifact_sha"] == str(hash_tree(str(on_disk)).root_digest())
    assert tags["integrity.source"].startswith(str(enforcing.artifacts_destination))


def test_untouched_version_is_promoted(enforcing, plain_client, classifier):
    """Alias move and stage transition of an untouched version go through."""
    version = register(classifier, "srv-ok")

    plain_client.set_registered_model_alias("srv-ok", "champion", version)
    plain_client.transition_model_version_stage("srv-ok", version, "Production")

    assert (
        plain_client.get_model_version_by_alias("srv-ok", "champion").version == version
    )


def test_tampered_version_refused_for_plain_client(enforcing, plain_client, classifier):
    """A byte changed in the artifact store: alias and stage refused with 403
    and a message naming the file."""
    version = register(classifier, "srv-bad")
    weights = weights_file(
        stored_on_server(enforcing, plain_client, "srv-bad", version)
    )
    flip_byte(weights)

    with pytest.raises(MlflowException) as alias_refusal:
        plain_client.set_registered_model_alias("srv-bad", "champion", version)
    with pytest.raises(MlflowException) as stage_refusal:
        plain_client.transition_model_version_stage("srv-bad", version, "Production")

    for refusal in (alias_refusal, stage_refusal):
        assert refusal.value.error_code == "PERMISSION_DENIED"
        assert weights.name in str(refusal.value)
    assert plain_client.get_registered_model("srv-bad").aliases == {}


@pytest.mark.parametrize("prefix", ["/api/2.0", "/ajax-api/2.0"])
def test_raw_rest_is_gated_too(enforcing, plain_client, classifier, prefix):
    """Raw REST alias moves and stage transitions on both prefixes get 403."""
    name = f"srv-rest-{prefix.strip('/').replace('/', '-')}"
    version = register(classifier, name)
    flip_byte(weights_file(stored_on_server(enforcing, plain_client, name, version)))

    alias = requests.post(
        f"{enforcing.url}{prefix}/mlflow/registered-models/alias",
        json={"name": name, "alias": "champion", "version": version},
        timeout=60,
    )
    stage = requests.post(
        f"{enforcing.url}{prefix}/mlflow/model-versions/transition-stage",
        json={
            "name": name,
            "version": version,
            "stage": "Production",
            "archive_existing_versions": False,
        },
        timeout=60,
    )

    for response in (alias, stage):
        assert response.status_code == 403, response.text
        assert response.json()["error_code"] == "PERMISSION_DENIED"
        assert "refused" in response.json()["message"]


@pytest.mark.parametrize("prefix", ["/api/2.0", "/ajax-api/2.0"])
def test_integrity_tags_are_immutable_over_rest(
    enforcing, plain_client, classifier, prefix
):
    """Setting or deleting artifact_sha over REST is refused; the tag stays."""
    name = f"srv-tags-{prefix.strip('/').replace('/', '-')}"
    version = register(classifier, name)
    before = plain_client.get_model_version(name, version).tags["artifact_sha"]

    set_tag = requests.post(
        f"{enforcing.url}{prefix}/mlflow/model-versions/set-tag",
        json={"name": name, "version": version, "key": "artifact_sha", "value": "x"},
        timeout=60,
    )
    delete_tag = requests.delete(
        f"{enforcing.url}{prefix}/mlflow/model-versions/delete-tag",
        json={"name": name, "version": version, "key": "artifact_sha"},
        timeout=60,
    )

    assert set_tag.status_code == 403 and "written by mlflow-integrity" in set_tag.text
    assert delete_tag.status_code == 403
    assert plain_client.get_model_version(name, version).tags["artifact_sha"] == before


def test_client_supplied_digest_is_ignored(enforcing, plain_client, classifier):
    """A create that carries its own artifact_sha gets the server's instead."""
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            classifier, name="model", pip_requirements=["scikit-learn"]
        )
    forged = "blake3:" + "ab" * 32
    plain_client.create_registered_model("srv-forged")
    mv = plain_client.create_model_version(
        "srv-forged",
        info.model_uri,
        tags={"artifact_sha": forged},
        model_id=info.model_id,
    )

    recorded = plain_client.get_model_version("srv-forged", mv.version).tags
    assert recorded["artifact_sha"] != forged
    assert mlflow_integrity.verify(f"models:/srv-forged/{mv.version}").ok


def test_concurrent_promotions_end_on_a_verified_version(
    enforcing, plain_client, classifier
):
    """Two verified versions and a tampered one race for one alias: the
    tampered one is refused and the alias ends on a verified version."""
    versions = [register(classifier, "srv-race") for _ in range(3)]
    flip_byte(
        weights_file(stored_on_server(enforcing, plain_client, "srv-race", versions[2]))
    )
    outcomes: dict[str, str] = {}

    def move(version: str) -> None:
        try:
            MlflowClient(registry_uri=enforcing.url).set_registered_model_alias(
                "srv-race", "champion", version
            )
            outcomes[version] = "moved"
        except MlflowException as exc:
            outcomes[version] = exc.error_code

    threads = [threading.Thread(target=move, args=(v,)) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    final = plain_client.get_model_version_by_alias("srv-race", "champion").version
    assert outcomes[versions[2]] == "PERMISSION_DENIED"
    # The gate refuses neither verified version. (Rarely, MLflow's sqlite
    # backend itself rejects one of two simultaneous alias writes with
    # BAD_REQUEST; that is not a gate refusal, and one of them still lands.)
    assert "PERMISSION_DENIED" not in {outcomes[versions[0]], outcomes[versions[1]]}
    assert "moved" in {outcomes[versions[0]], outcomes[versions[1]]}
    assert str(final) in versions[:2]
    assert mlflow_integrity.verify("models:/srv-race@champion").ok


def test_postgres_backend_enforces(
    mlflow_server_factory, tmp_path_factory, postgres_uri, classifier, monkeypatch
):
    """On a PostgreSQL backend the server records digests and refuses a
    tampered version's alias move."""
    server = start_enforcing(mlflow_server_factory, tmp_path_factory, postgres_uri)
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.setenv(var, server.url)
    mlflow.set_tracking_uri(server.url)
    mlflow.set_registry_uri(server.url)
    mlflow.set_experiment(f"pg-{uuid.uuid4().hex[:8]}")
    client = MlflowClient(tracking_uri=server.url, registry_uri=server.url)
    name = f"pg-iris-{uuid.uuid4().hex[:6]}"
    try:
        version = register(classifier, name)
        assert "artifact_sha" in client.get_model_version(name, version).tags
        client.set_registered_model_alias(name, "champion", version)

        flip_byte(weights_file(stored_on_server(server, client, name, version)))
        with pytest.raises(MlflowException) as refusal:
            client.set_registered_model_alias(name, "challenger", version)
        assert refusal.value.error_code == "PERMISSION_DENIED"
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


NO_PLUGIN_CLIENT = """
import sys
# As if mlflow-integrity were not installed: its modules cannot be imported.
sys.modules["mlflow_integrity"] = None
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
client = MlflowClient(tracking_uri=sys.argv[1], registry_uri=sys.argv[1])
try:
    client.set_registered_model_alias(sys.argv[2], "champion", sys.argv[3])
except MlflowException as exc:
    print("REFUSED", exc.error_code)
else:
    print("MOVED")
"""


def test_client_without_the_plugin_is_refused(enforcing, plain_client, classifier):
    """A client process that cannot import mlflow-integrity at all is refused
    by the server, not by anything on its side."""
    import subprocess
    import sys

    version = register(classifier, "srv-noplugin")
    flip_byte(
        weights_file(stored_on_server(enforcing, plain_client, "srv-noplugin", version))
    )

    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            NO_PLUGIN_CLIENT,
            enforcing.url,
            "srv-noplugin",
            version,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )

    assert proc.stdout.strip().splitlines()[-1] == "REFUSED PERMISSION_DENIED"
