"""The tracking server's artifact proxy: files streamed and hashed as they
arrive, and failures that never pass for modified bytes."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import mlflow
import pytest

import mlflow_integrity
from mlflow_integrity.check import verify
from mlflow_integrity.digest import hash_tree
from mlflow_integrity.stores import open_store
from mlflow_integrity.stores.proxy import ProxyStore
from tests.netfaults import CuttingProxy

pytestmark = pytest.mark.server

SIZE = 4 * 1024 * 1024


def big_model(tmp_path: Path) -> Path:
    model = tmp_path / "model"
    (model / "data").mkdir(parents=True)
    (model / "MLmodel").write_text("flavors: {}\n")
    (model / "data" / "weights.bin").write_bytes(os.urandom(SIZE))
    # MLflow's own proxied upload does not quote names: one with "#" or "?"
    # is stored cut short at that character, so none is used here.
    (model / "data" / "name with spaces é.txt").write_text("odd name\n")
    return model


@pytest.fixture
def proxied(server_registry, tmp_path):
    """A version registered through the proxy, and its local original."""
    model = big_model(tmp_path)
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(model), "model")
    mv = mlflow_integrity.register_model(
        f"runs:/{run.info.run_id}/model", f"proxy-{uuid.uuid4().hex[:8]}"
    )
    return mv, model


def test_registration_through_the_proxy_hashes_the_stream(
    proxied, monkeypatch, tmp_path
):
    """No temporary copy is made: every byte goes from the HTTP stream into
    the hasher (and, for a fetch, into the destination only)."""
    mv, model = proxied
    assert mv.tags["artifact_sha"] == str(hash_tree(str(model)).root_digest())

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    source = mlflow.MlflowClient().get_model_version_download_uri(mv.name, mv.version)
    store = open_store(source)
    assert isinstance(store, ProxyStore)
    assert store.manifest("blake3") == hash_tree(str(model))
    dest = tmp_path / "dest"
    dest.mkdir()
    assert store.fetch(str(dest), "blake3") == hash_tree(str(model))
    assert list(scratch.iterdir()) == []
    assert (dest / "data" / "name with spaces é.txt").read_text() == "odd name\n"


def test_connection_cut_mid_file_is_unreadable(
    proxied, mlflow_server, monkeypatch, tmp_path
):
    mv, _ = proxied
    uri = f"models:/{mv.name}/{mv.version}"
    port = int(mlflow_server.url.rsplit(":", 1)[1])
    with CuttingProxy(port, cut_after=SIZE // 2) as cutting:
        mlflow.set_tracking_uri(cutting.url)
        mlflow.set_registry_uri(cutting.url)
        result = verify(uri)
        assert result.status == "UNREADABLE", result.detail
        assert "through the tracking server failed" in result.detail
        assert cutting.cuts >= 1

        parent = tmp_path / "loads"
        parent.mkdir()
        with pytest.raises(mlflow_integrity.IntegrityError, match="UNREADABLE"):
            mlflow_integrity.download_verified(uri, parent_dir=str(parent))
        assert list(parent.iterdir()) == []


def test_tree_deleted_on_the_server_is_missing(proxied, server_registry):
    mv, _ = proxied
    source = server_registry.client.get_model_version_download_uri(mv.name, mv.version)
    on_disk = server_registry.artifact_root / source.split("mlflow-artifacts:/")[1]
    for path in sorted(on_disk.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    result = verify(f"models:/{mv.name}/{mv.version}")
    assert result.status == "MISSING"
