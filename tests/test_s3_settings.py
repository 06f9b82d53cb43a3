"""How the S3 store is configured: MLflow's settings and our own bounds."""

from __future__ import annotations

import pytest

from mlflow_integrity.errors import ConfigurationError
from mlflow_integrity.stores import open_store, store_workers
from mlflow_integrity.stores.proxy import ProxyStore, is_proxy_uri
from mlflow_integrity.stores.s3 import S3Store, parse_s3_uri, s3_client


def test_client_follows_mlflow_s3_settings(monkeypatch):
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE", "path")
    monkeypatch.setenv("MLFLOW_INTEGRITY_S3_TIMEOUT", "7")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    client = s3_client()
    assert client.meta.endpoint_url == "http://127.0.0.1:9000"
    assert client.meta.config.s3["addressing_style"] == "path"
    assert client.meta.config.read_timeout == 7
    assert client.meta.config.connect_timeout == 7
    assert client.meta.region_name == "eu-west-1"

    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "http://127.0.0.1:9001")
    assert s3_client().meta.endpoint_url == "http://127.0.0.1:9001"


@pytest.mark.parametrize("value", ["0", "-1", "soon", "4000"])
def test_bad_timeout_is_a_configuration_error(monkeypatch, value):
    monkeypatch.setenv("MLFLOW_INTEGRITY_S3_TIMEOUT", value)
    with pytest.raises(ConfigurationError, match="MLFLOW_INTEGRITY_S3_TIMEOUT"):
        s3_client()


@pytest.mark.parametrize("value", ["0", "65", "many"])
def test_bad_worker_count_is_a_configuration_error(monkeypatch, value):
    monkeypatch.setenv("MLFLOW_INTEGRITY_STORE_WORKERS", value)
    with pytest.raises(ConfigurationError, match="MLFLOW_INTEGRITY_STORE_WORKERS"):
        store_workers()


def test_uris_pick_their_store():
    assert parse_s3_uri("s3://bucket/a/b/") == ("bucket", "a/b")
    assert parse_s3_uri("s3://bucket") == ("bucket", "")
    with pytest.raises(ConfigurationError):
        parse_s3_uri("s3:///no-bucket")
    assert isinstance(open_store("s3://bucket/m"), S3Store)
    assert isinstance(open_store("mlflow-artifacts:/1/abc/artifacts"), ProxyStore)
    assert is_proxy_uri("https://mlflow.internal/api/2.0/mlflow-artifacts/artifacts/x")
    assert not is_proxy_uri("https://example.com/files/model")


def test_run_parallel_stops_starting_work_after_a_failure():
    import threading
    import time

    from mlflow_integrity.stores import run_parallel

    started: list[int] = []
    lock = threading.Lock()

    def work(i: int) -> int:
        with lock:
            started.append(i)
        if i == 1:
            raise ValueError("item 1 failed")
        time.sleep(0.2)
        return i

    with pytest.raises(ValueError, match="item 1"):
        run_parallel(work, list(range(40)), 2)
    assert len(started) < 10, started
    assert run_parallel(lambda i: i * 2, list(range(5)), 3) == [0, 2, 4, 6, 8]


def test_an_endless_proxy_listing_is_refused():
    """A server that lists a deeper directory for ever is refused quickly."""
    from mlflow_integrity.errors import StoreReadError
    from tests.netfaults import EndlessListing

    with EndlessListing() as server:
        store = ProxyStore(f"{server.url}/api/2.0/mlflow-artifacts/artifacts/x")
        with pytest.raises(StoreReadError, match="deeper than"):
            store.files()
