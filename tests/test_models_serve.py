"""`mlflow models serve -m verified:...` as a real subprocess."""

from __future__ import annotations

import pytest
import requests

from tests.helpers import (
    flip_byte,
    free_port,
    spawn,
    stop,
    stored_dir,
    wait_ready,
    weights_file,
)

pytestmark = pytest.mark.server


def serve(model_uri: str, tracking_uri: str, log_path):
    port = free_port()
    args = ["mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
            "-h", "127.0.0.1", "-p", str(port)]  # fmt: skip
    return spawn(args, tracking_uri, log_path), f"http://127.0.0.1:{port}"


def test_serve_verified_alias_and_refuse_tampered(
    registered, integrity_registry, iris, tmp_path
):
    """mlflow models serve -m verified:/iris@champion answers predictions; after
    one byte changes in the store, a new serve refuses to start and says why."""
    features, _ = iris
    registered("iris")
    integrity_registry.client.set_registered_model_alias("iris", "champion", "1")

    proc, url = serve(
        "verified:/iris@champion", integrity_registry.tracking_uri, tmp_path / "ok.log"
    )
    try:
        assert wait_ready(proc, url), (tmp_path / "ok.log").read_text()[-2000:]
        response = requests.post(
            f"{url}/invocations", json={"inputs": features[:3].tolist()}, timeout=30
        )
        assert response.status_code == 200, response.text
        assert response.json()["predictions"] == [0, 0, 0]
    finally:
        stop(proc)

    flip_byte(weights_file(stored_dir(integrity_registry.client, "iris", "1")))
    proc, url = serve(
        "verified:/iris@champion", integrity_registry.tracking_uri, tmp_path / "bad.log"
    )
    try:
        assert not wait_ready(proc, url)
        log = (tmp_path / "bad.log").read_text()
        assert proc.returncode != 0
        assert "DigestMismatchError" in log and "models:/iris/1" in log
    finally:
        if proc.poll() is None:
            stop(proc)
