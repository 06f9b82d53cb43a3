"""`mlflow models serve -m verified:...` as a real subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
import requests

from tests.helpers import flip_byte, stored_dir, weights_file

pytestmark = pytest.mark.server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(model_uri: str, tracking_uri: str, log_path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    # The scoring server runs `uvicorn` by name: put this interpreter's
    # scripts first on PATH, as an activated virtual environment would.
    bindir = os.path.dirname(sys.executable)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
    }
    env.pop("MLFLOW_REGISTRY_URI", None)
    log = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri,
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(proc: subprocess.Popen, url: str, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise AssertionError(f"mlflow models serve did not answer on {url}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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
