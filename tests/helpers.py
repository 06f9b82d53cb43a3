"""Small helpers the tests share: where a version's bytes are, and tampering."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

WEIGHT_FILES = ("model.skops", "model.pkl")
SCHEMA_DOC = Path(__file__).parent.parent / "docs" / "audit-schema.md"


def stored_dir(client: Any, name: str, version: str | int) -> Path:
    """The local directory that holds a version's stored bytes."""
    from mlflow_integrity.stores import local_path

    uri = client.get_model_version_download_uri(name, str(version))
    path = local_path(uri)
    assert path is not None, f"{uri} is not a local store"
    return Path(path)


def weights_file(directory: Path) -> Path:
    """The weights file MLflow wrote (``model.skops`` or ``model.pkl``)."""
    for candidate in WEIGHT_FILES:
        if (directory / candidate).is_file():
            return directory / candidate
    raise AssertionError(f"no weights file in {sorted(os.listdir(directory))}")


def flip_byte(path: Path, offset: int = 64) -> None:
    """Change one byte of a file in place, keeping its size."""
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0x01
    path.write_bytes(bytes(data))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(
    args: list[str], tracking_uri: str, log_path: Path
) -> subprocess.Popen[bytes]:
    """Start ``python -m ARGS`` against a registry, logging to ``log_path``.

    This interpreter's scripts go first on PATH, as in an activated virtual
    environment: MLflow's scoring server runs ``uvicorn`` by name.
    """
    bindir = os.path.dirname(sys.executable)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
    }
    env.pop("MLFLOW_REGISTRY_URI", None)
    log = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", *args], env=env, stdout=log, stderr=subprocess.STDOUT
    )


def wait_ready(proc: subprocess.Popen[bytes], url: str, timeout: float = 120) -> bool:
    """True once ``url``/ping answers; False if the process exits first."""
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
    raise AssertionError(f"nothing answered on {url} within {timeout} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate a process, killing it if it does not exit in 15 s."""
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def shared_registry(folder: Path, template_db: Path) -> Iterator[Any]:
    """Like the ``integrity_registry`` fixture, for a module-scoped fixture:
    a SQLite registry in ``folder`` that MLflow points at until the block ends.
    Building a registry with many versions once per module keeps tests fast."""
    import uuid

    from mlflow import MlflowClient

    from mlflow_integrity.plugins.pytest_plugin import Registry, _pointed_at

    db_path = folder / "mlflow.db"
    shutil.copyfile(template_db, db_path)
    uri = f"sqlite:///{db_path}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment_id = client.create_experiment(
        f"integrity-test-{uuid.uuid4().hex[:12]}",
        artifact_location=(folder / "artifacts").as_uri(),
    )
    with (
        pytest.MonkeyPatch.context() as monkeypatch,
        _pointed_at(monkeypatch, uri, uri, experiment_id),
    ):
        yield Registry(uri, uri, folder / "artifacts", client, experiment_id)


def documented_keys(section: str) -> set[str]:
    """The keys in the first column of the table under a heading of
    docs/audit-schema.md."""
    import re

    text = SCHEMA_DOC.read_text()
    match = re.search(rf"^#+ {re.escape(section)}\n(.*?)(?=^#|\Z)", text, re.M | re.S)
    assert match, f"no section {section!r} in {SCHEMA_DOC}"
    return set(re.findall(r"^\| `([a-z_]+)` \|", match.group(1), re.M))
