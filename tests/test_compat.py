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
