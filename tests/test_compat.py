"""MLflow internals that mlflow_integrity._compat relies on.

These fail loudly when an MLflow release moves or changes them.
"""

from __future__ import annotations

import mlflow

from mlflow_integrity import _compat


def test_run_artifact_uri_points_under_the_run(integrity_registry):
    """runs:/<id>/<path> maps to <run artifact root>/<path>."""
    with mlflow.start_run() as run:
        mlflow.log_text("x", "model/x.txt")

    uri = _compat.run_artifact_uri(f"runs:/{run.info.run_id}/model")

    assert uri == f"{run.info.artifact_uri}/model"


def test_parse_runs_uri():
    """runs:/<id>/<path> splits into id and path."""
    assert _compat.parse_runs_uri("runs:/abc123/sub/model") == ("abc123", "sub/model")


def test_logged_models_of_run(integrity_registry, log_sklearn):
    """A run's logged model is found by name, with its artifact location."""
    logged = log_sklearn("clf")

    models = _compat.logged_models_of_run(
        integrity_registry.client, logged.run_id, "clf"
    )

    assert [m.model_id for m in models] == [logged.model_uri.removeprefix("models:/")]
    assert models[0].artifact_location
    assert (
        _compat.logged_models_of_run(integrity_registry.client, logged.run_id, "x")
        == []
    )


def test_prompt_marking_is_read(integrity_registry):
    """A prompt's registered model is recognised, an ordinary model is not."""
    mlflow.genai.register_prompt(name="greeting", template="Hello {{name}}")
    integrity_registry.client.create_registered_model("plain-model")

    # MlflowClient hides prompts from the model API; the store does not.
    store = _compat.registry_store_of(integrity_registry.client)
    assert _compat.is_prompt_model(store.get_registered_model("greeting"))
    assert not _compat.is_prompt_model(store.get_registered_model("plain-model"))
    assert _compat.is_prompt_tag(_compat.prompt_tag_key())


def test_registry_store_building(integrity_registry):
    """MLflow's store builder for a sqlite URI is found without the lock."""
    store = _compat.build_registry_store(integrity_registry.registry_uri, None)

    assert type(store).__name__ == "SqlAlchemyStore"
    assert _compat.registry_store_of(integrity_registry.client) is not None


def test_server_artifacts_destination(monkeypatch):
    """The server's artifacts destination is read from its environment."""
    monkeypatch.delenv("_MLFLOW_SERVER_SERVE_ARTIFACTS", raising=False)
    assert _compat.server_artifacts_destination() is None

    monkeypatch.setenv("_MLFLOW_SERVER_SERVE_ARTIFACTS", "true")
    monkeypatch.setenv("_MLFLOW_SERVER_ARTIFACT_DESTINATION", "/srv/artifacts")
    assert _compat.server_artifacts_destination() == "/srv/artifacts"


def test_proxy_repository_and_streamed_get(monkeypatch):
    """mlflow-artifacts: resolves against the tracking URI to an HTTP
    repository whose host credentials carry the tracking token, and a GET
    below them reaches <tracking>/api/2.0/mlflow-artifacts/artifacts/<path>."""
    from tests.netfaults import Recorder

    with Recorder(b"streamed bytes") as server:
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "secret-token")
        mlflow.set_tracking_uri(server.url)
        try:
            repo, creds = _compat.proxy_repository("mlflow-artifacts:/1/abc/model")
        finally:
            mlflow.set_tracking_uri(None)
        assert (
            creds.host == f"{server.url}/api/2.0/mlflow-artifacts/artifacts/1/abc/model"
        )
        assert creds.token == "secret-token"
        assert repo.artifact_uri == creds.host

        response = _compat.http_get_stream(creds, "/data/w%20x.bin")
        assert b"".join(response.iter_content(4)) == b"streamed bytes"
    ((path, headers),) = server.requests
    assert path == "/api/2.0/mlflow-artifacts/artifacts/1/abc/model/data/w%20x.bin"
    assert headers["Authorization"] == "Bearer secret-token"
