"""Tests of the fixtures that mlflow-integrity's pytest plugin ships to users."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from mlflow_integrity.plugins.pytest_plugin import (
    Registry,
    Server,
    ServerFactory,
    ServerStartError,
)

pytest_plugins = ["pytester"]


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def test_importing_the_plugin_does_not_import_mlflow() -> None:
    """Loading the plugin, as pytest does in every run, leaves MLflow unimported."""
    code = (
        "import sys, mlflow_integrity.plugins.pytest_plugin\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'mlflow'))"
    )

    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )

    assert result.stdout.strip() == "[]"


def test_integrity_registry_is_a_working_sqlite_registry(
    integrity_registry: Registry, tmp_path: Path
) -> None:
    """The fixture points MLflow at a SQLite registry and artifact store in tmp_path."""
    name = _unique("model")

    integrity_registry.client.create_registered_model(name)

    assert integrity_registry.tracking_uri.startswith("sqlite:///")
    assert integrity_registry.registry_uri == integrity_registry.tracking_uri
    assert mlflow.get_tracking_uri() == integrity_registry.tracking_uri
    assert mlflow.get_registry_uri() == integrity_registry.registry_uri
    assert os.environ["MLFLOW_TRACKING_URI"] == integrity_registry.tracking_uri
    assert [m.name for m in MlflowClient().search_registered_models()] == [name]

    experiment = integrity_registry.client.get_experiment(
        integrity_registry.experiment_id
    )
    location = Path(urllib.request.url2pathname(experiment.artifact_location[5:]))
    assert location.is_relative_to(tmp_path)
    assert integrity_registry.artifact_root.is_relative_to(tmp_path)


def test_integrity_registry_runs_log_under_artifact_root(
    integrity_registry: Registry,
) -> None:
    """A fluent run lands in the active experiment, its files under artifact_root."""
    with mlflow.start_run() as run:
        mlflow.log_text("weights", "model/weights.txt")

    assert run.info.experiment_id == integrity_registry.experiment_id
    logged = list(integrity_registry.artifact_root.rglob("weights.txt"))
    assert [p.read_text() for p in logged] == ["weights"]


def test_integrity_registry_gives_each_test_its_own_default_experiment(
    integrity_registry: Registry, tmp_path: Path
) -> None:
    """Experiment 0 of the copied store keeps its artifacts in this test's folder."""
    default = integrity_registry.client.get_experiment("0")

    assert default.artifact_location == (tmp_path / "artifacts" / "0").as_uri()


def test_integrity_registry_restores_mlflow_state(pytester: pytest.Pytester) -> None:
    """After a test, the URIs, active experiment and variables are as they were."""
    pytester.makepyfile(
        """
        import mlflow

        def test_inner(integrity_registry):
            mlflow.start_run()
            mlflow.log_param("left", "open")
        """
    )
    before = (
        mlflow.get_tracking_uri(),
        mlflow.get_registry_uri(),
        {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")},
    )

    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=1)
    assert mlflow.active_run() is None
    after = (
        mlflow.get_tracking_uri(),
        mlflow.get_registry_uri(),
        {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")},
    )
    assert after == before


@pytest.mark.server
def test_mlflow_server_answers_health_and_registers_models(
    mlflow_server: Server,
) -> None:
    """The session server answers /health and a client can register a model."""
    name = _unique("model")

    with urllib.request.urlopen(f"{mlflow_server.url}/health", timeout=10) as reply:
        assert reply.status == 200

    client = MlflowClient(
        tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url
    )
    client.create_registered_model(name)

    assert client.get_registered_model(name).name == name
    assert mlflow_server.backend_store_uri.startswith("sqlite:///")
    assert mlflow_server.log_path.is_file()


@pytest.mark.server
def test_server_registry_proxies_artifacts_to_the_destination(
    server_registry: Registry, mlflow_server: Server
) -> None:
    """A run's artifact goes through mlflow-artifacts: to artifacts_destination."""
    content = _unique("payload")

    with mlflow.start_run() as run:
        mlflow.log_text(content, "model/payload.txt")

    assert mlflow.get_tracking_uri() == mlflow_server.url
    assert run.info.experiment_id == server_registry.experiment_id
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert server_registry.artifact_root == mlflow_server.artifacts_destination
    stored = [
        p
        for p in server_registry.artifact_root.rglob("payload.txt")
        if p.read_text() == content
    ]
    assert len(stored) == 1
    assert run.info.run_id in stored[0].parts


@pytest.mark.server
def test_postgres_backed_server_registers_models(
    mlflow_server_factory: ServerFactory, postgres_uri: str
) -> None:
    """A server on the PostgreSQL store, named with its driver, registers models."""
    name = _unique("model")

    server = mlflow_server_factory(postgres_uri)
    client = MlflowClient(tracking_uri=server.url, registry_uri=server.url)
    client.create_registered_model(name)

    assert postgres_uri.startswith(("postgresql+psycopg://", "postgresql+psycopg2://"))
    assert server.backend_store_uri == postgres_uri
    assert client.get_registered_model(name).name == name


@pytest.mark.server
def test_server_that_cannot_start_reports_its_log(
    mlflow_server_factory: ServerFactory,
) -> None:
    """A server that dies at startup raises an error quoting the end of its log."""
    with pytest.raises(ServerStartError) as raised:
        mlflow_server_factory(extra_args=["--no-such-option"], timeout=60)

    message = str(raised.value)
    assert "exited with code 2" in message
    assert "--no-such-option" in message


@pytest.mark.s3
def test_s3_bucket_is_a_fresh_versioned_bucket(
    integrity_registry: Registry, s3_bucket: str, log_sklearn
) -> None:
    """A model logged into an experiment on the bucket lands there, and the
    bucket keeps object versions."""
    import boto3

    assert os.environ["MLFLOW_S3_ENDPOINT_URL"]
    s3 = boto3.client("s3", endpoint_url=os.environ["MLFLOW_S3_ENDPOINT_URL"])
    assert s3.get_bucket_versioning(Bucket=s3_bucket)["Status"] == "Enabled"
    assert s3.list_objects_v2(Bucket=s3_bucket)["KeyCount"] == 0

    experiment = integrity_registry.client.create_experiment(
        _unique("on-s3"), artifact_location=f"s3://{s3_bucket}/exp"
    )
    mlflow.set_experiment(experiment_id=experiment)
    log_sklearn()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert any(key.endswith("/MLmodel") for key in keys)
