"""`mlflow-integrity serve` and `probe` as real processes on 127.0.0.1."""

from __future__ import annotations

import pytest
import requests

from mlflow_integrity import registry
from mlflow_integrity.cli import main
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


def start(model_uri: str, tracking_uri: str, log_path, *extra: str):
    port = free_port()
    args = ["mlflow_integrity.cli", "serve", model_uri, "--port", str(port), *extra]
    return spawn(args, tracking_uri, log_path), f"http://127.0.0.1:{port}"


def test_serve_reports_and_probe_checks(
    registered, integrity_registry, iris, tmp_path, capsys
):
    """serve answers predictions and /integrity; probe exits 0 for the served
    digest, 1 for another, 2 for no server."""
    features, _ = iris
    mv = registered("iris")
    integrity_registry.client.set_registered_model_alias("iris", "champion", "1")
    digest = mv.tags[registry.ARTIFACT_SHA]

    proc, url = start(
        "models:/iris@champion", integrity_registry.tracking_uri, tmp_path / "s.log"
    )
    try:
        assert wait_ready(proc, url), (tmp_path / "s.log").read_text()[-2000:]
        predictions = requests.post(
            f"{url}/invocations", json={"inputs": features[:2].tolist()}, timeout=30
        ).json()["predictions"]
        report = requests.get(f"{url}/integrity", timeout=10).json()

        assert predictions == [0, 0]
        assert (report["model_uri"], report["digest"]) == ("models:/iris/1", digest)
        assert main(["probe", url, "--expect", digest]) == 0
        assert main(["probe", url, "--expect", "blake3:" + "0" * 64]) == 1
    finally:
        stop(proc)
    assert main(["probe", url, "--timeout", "2"]) == 2
    assert "No integrity report" in capsys.readouterr().err


def test_serve_refuses_tampered_bytes(registered, integrity_registry, tmp_path):
    """serve exits 1 without serving when the stored bytes changed."""
    registered("iris")
    flip_byte(weights_file(stored_dir(integrity_registry.client, "iris", "1")))

    proc, url = start(
        "models:/iris/1", integrity_registry.tracking_uri, tmp_path / "bad.log"
    )
    try:
        assert not wait_ready(proc, url)
        assert proc.returncode == 1
        assert (
            "does not match its recorded digest" in (tmp_path / "bad.log").read_text()
        )
    finally:
        if proc.poll() is None:
            stop(proc)
