"""Pytest fixtures for testing code that registers, verifies or serves models.

Installing mlflow-integrity makes these fixtures available in every pytest run,
through the ``pytest11`` entry point; no ``conftest.py`` import is needed. Pass
``-p no:mlflow_integrity`` to pytest to switch them off.

``integrity_registry``
    A throwaway MLflow tracking store and model registry on SQLite, with a local
    artifact store, all under the test's ``tmp_path``. The tracking and registry
    URIs point at it for the duration of the test, and a fresh experiment is
    active, so plain ``mlflow.start_run()``, ``log_model`` and
    ``register_model`` calls land there::

        def test_register(integrity_registry):
            with mlflow.start_run() as run:
                mlflow.log_text("hello", "model/hello.txt")
            mlflow.register_model(f"runs:/{run.info.run_id}/model", "demo")
            assert integrity_registry.client.get_registered_model("demo")

``mlflow_server``
    A real ``mlflow server`` subprocess on a free port of 127.0.0.1, shared by
    the whole session, with a SQLite backend and proxied artifacts
    (``--serve-artifacts``). It starts only when a test asks for it.

``server_registry``
    Like ``integrity_registry``, but pointed at ``mlflow_server``: a fresh
    experiment whose artifacts go through ``mlflow-artifacts:`` to the server's
    artifacts destination.

``mlflow_server_factory``
    Starts further servers: another backend store (such as PostgreSQL), another
    ``--app-name`` or any extra ``mlflow server`` arguments::

        def test_on_postgres(mlflow_server_factory, postgres_uri):
            server = mlflow_server_factory(postgres_uri)
            ...

        def test_gated_server(mlflow_server_factory):
            server = mlflow_server_factory(extra_args=["--app-name", "integrity"])
            ...

    Every server it started is stopped at the end of the session.

``s3_bucket``
    A new bucket with versioning on, on ``s3_endpoint``, with
    ``MLFLOW_S3_ENDPOINT_URL`` pointing there for the test, so that an
    experiment created with ``artifact_location=f"s3://{s3_bucket}/exp"`` logs
    into it::

        def test_on_s3(integrity_registry, s3_bucket):
            experiment = integrity_registry.client.create_experiment(
                "on-s3", artifact_location=f"s3://{s3_bucket}/exp"
            )
            ...

``postgres_uri``, ``s3_endpoint``
    The PostgreSQL database and S3-compatible endpoint given in
    ``MLFLOW_INTEGRITY_TEST_POSTGRES_URI`` and
    ``MLFLOW_INTEGRITY_TEST_S3_ENDPOINT``; a test that asks for one is skipped
    when it is not set. ``postgres_uri`` names the installed driver
    (``postgresql+psycopg2://...``), as SQLAlchemy needs. In this repository
    ``./scripts/test.sh`` starts both services.

MLflow is imported only when a fixture is used, so the plugin adds nothing
noticeable to runs that use none of them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, cast

import pytest

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = [
    "POSTGRES_URI_ENV",
    "S3_ENDPOINT_ENV",
    "Registry",
    "Server",
    "ServerFactory",
    "ServerStartError",
]

POSTGRES_URI_ENV = "MLFLOW_INTEGRITY_TEST_POSTGRES_URI"
S3_ENDPOINT_ENV = "MLFLOW_INTEGRITY_TEST_S3_ENDPOINT"

# Variables through which MLflow picks its stores and experiment. The fixtures
# pin them for a test, and keep a test's values out of a server's environment.
_CLIENT_ENV_VARS = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    "MLFLOW_EXPERIMENT_ID",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_RUN_ID",
)

_STOP_GRACE_SECONDS = 5.0
_PORT_ATTEMPTS = 3
_LOG_TAIL_LINES = 40


@dataclasses.dataclass(frozen=True)
class Registry:
    """An MLflow tracking store and model registry that a test points at.

    Attributes:
        tracking_uri: The tracking URI in force during the test.
        registry_uri: The registry URI in force during the test.
        artifact_root: The local folder where the artifacts end up.
        client: An ``MlflowClient`` bound to both URIs.
        experiment_id: The experiment that is active during the test.
    """

    tracking_uri: str
    registry_uri: str
    artifact_root: Path
    client: MlflowClient
    experiment_id: str


@dataclasses.dataclass(frozen=True)
class Server:
    """A running ``mlflow server`` subprocess.

    Attributes:
        url: The base URL, such as ``http://127.0.0.1:54321``; usable as both
            tracking and registry URI.
        artifacts_destination: Where the server stores proxied artifacts: a
            local ``Path``, or the URI string given for a remote store.
        backend_store_uri: The server's backend store.
        log_path: The file holding the server's standard output and error.
    """

    url: str
    artifacts_destination: Path | str
    backend_store_uri: str
    log_path: Path


class ServerStartError(RuntimeError):
    """Raised when an ``mlflow server`` exits or does not answer in time."""


class ServerFactory:
    """Starts ``mlflow server`` subprocesses and stops them all on ``close()``.

    The ``mlflow_server_factory`` fixture hands out one instance per session.

    Args:
        tmp_path_factory: Pytest's factory for the session's temporary folders;
            each server gets a folder of its own, which is also its working
            directory.
    """

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp_path_factory = tmp_path_factory
        self._running: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []

    def __call__(
        self,
        backend_store_uri: str | None = None,
        *,
        artifacts_destination: str | Path | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        timeout: float = 180.0,
    ) -> Server:
        """Start a server and wait until its ``/health`` endpoint answers.

        Args:
            backend_store_uri: The backend store; by default a new SQLite
                database in the server's folder. The same database may be
                shared by several servers and sessions, so tests on it should
                use unique names.
            artifacts_destination: Where proxied artifacts go; by default a new
                ``artifacts`` folder in the server's folder.
            extra_args: More ``mlflow server`` arguments, such as
                ``["--app-name", "integrity"]``.
            env: Variables added to the server's environment (for example
                ``MLFLOW_S3_ENDPOINT_URL``).
            timeout: Seconds to wait for the server to answer.

        Returns:
            The running server.

        Raises:
            ServerStartError: The server exited or did not answer within
                ``timeout`` seconds; the message holds the end of its log.
        """
        workdir = self._tmp_path_factory.mktemp("mlflow-server")

        if backend_store_uri is None:
            backend_store_uri = f"sqlite:///{workdir / 'mlflow.db'}"

        destination: Path | str
        if artifacts_destination is None:
            destination = workdir / "artifacts"
        elif isinstance(artifacts_destination, Path) or "://" not in str(
            artifacts_destination
        ):
            destination = Path(artifacts_destination).absolute()
        else:
            destination = str(artifacts_destination)

        server_env = {k: v for k, v in os.environ.items() if k not in _CLIENT_ENV_VARS}
        server_env.update(env or {})

        # Another process may take the free port before the server binds it;
        # then a new port is tried, a few times.
        port_taken: ServerStartError | None = None
        for attempt in range(_PORT_ATTEMPTS):
            log_path = workdir / f"server-{attempt}.log"
            port = _free_port()
            command = [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--backend-store-uri",
                backend_store_uri,
                "--serve-artifacts",
                "--artifacts-destination",
                str(destination),
                "--workers",
                "1",
                *extra_args,
            ]
            server = Server(
                url=f"http://127.0.0.1:{port}",
                artifacts_destination=destination,
                backend_store_uri=backend_store_uri,
                log_path=log_path,
            )
            log_file = log_path.open("wb")
            process = subprocess.Popen(
                command,
                cwd=workdir,
                env=server_env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                # A process group of its own, so that stopping it also stops
                # the uvicorn workers that `mlflow server` spawns.
                start_new_session=os.name == "posix",
            )
            self._running.append((process, log_file))

            try:
                _wait_until_healthy(server, process, timeout)
            except ServerStartError as error:
                exited = process.poll() is not None
                if not (exited and "address already in use" in str(error).lower()):
                    raise
                port_taken = error
                continue

            return server

        raise ServerStartError(
            f"mlflow server found its port taken {_PORT_ATTEMPTS} times in a row"
        ) from port_taken

    def close(self) -> None:
        """Stop every server started by this factory, killing it if it lingers."""
        while self._running:
            process, log_file = self._running.pop()
            _stop(process)
            log_file.close()


@pytest.fixture(scope="session")
def mlflow_server_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerFactory]:
    """Start ``mlflow server`` subprocesses; all of them stop at session end."""
    factory = ServerFactory(tmp_path_factory)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="session")
def mlflow_server(mlflow_server_factory: ServerFactory) -> Server:
    """A session-wide ``mlflow server`` on SQLite with proxied local artifacts."""
    return mlflow_server_factory()


@pytest.fixture(scope="session")
def postgres_uri() -> str:
    """The database of ``MLFLOW_INTEGRITY_TEST_POSTGRES_URI``, or a skip.

    The URI is returned as SQLAlchemy (and so ``mlflow server``) needs it: a
    plain ``postgresql://`` URI gets the driver that is installed, since
    SQLAlchemy 2.1 means psycopg 3 by it and many environments have psycopg2.
    """
    uri = os.environ.get(POSTGRES_URI_ENV)
    if not uri:
        pytest.skip(
            f"{POSTGRES_URI_ENV} is not set; run ./scripts/test.sh, which starts "
            "a throwaway PostgreSQL, or point it at a database of your own"
        )

    return _with_postgres_driver(uri)


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    """The S3 endpoint URL of ``MLFLOW_INTEGRITY_TEST_S3_ENDPOINT``, or a skip."""
    endpoint = os.environ.get(S3_ENDPOINT_ENV)
    if not endpoint:
        pytest.skip(
            f"{S3_ENDPOINT_ENV} is not set; run ./scripts/test.sh, which starts "
            "a moto S3 server, or point it at an S3-compatible endpoint"
        )

    return endpoint


@pytest.fixture
def s3_bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new versioned bucket on ``s3_endpoint``; MLflow's S3 endpoint points
    there for the test."""
    import boto3

    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3_endpoint)
    bucket = f"integrity-test-{uuid.uuid4().hex[:16]}"
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=bucket)
    client.put_bucket_versioning(
        Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
    )
    return bucket


@pytest.fixture(scope="session")
def _integrity_template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty SQLite store with MLflow's schema, copied for each test.

    Running MLflow's migrations takes about a second; copying the file does not.
    """
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    uri = f"sqlite:///{path}"

    # The first call on each side creates the tables of the tracking store
    # and of the registry.
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.search_experiments()
    client.search_registered_models()

    return path


@pytest.fixture
def integrity_registry(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    _integrity_template_db: Path,
) -> Iterator[Registry]:
    """A throwaway SQLite tracking store and registry under ``tmp_path``."""
    from mlflow import MlflowClient

    db_path = tmp_path / "mlflow.db"
    artifact_root = tmp_path / "artifacts"
    shutil.copyfile(_integrity_template_db, db_path)

    # The copied default experiment still names the template's folder; move
    # it here, so that nothing a test logs there is shared with other tests.
    with sqlite3.connect(db_path) as connection:
        connection.execute(
            "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
            ((artifact_root / "0").as_uri(),),
        )
    connection.close()

    uri = f"sqlite:///{db_path}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment_id = client.create_experiment(
        f"integrity-test-{uuid.uuid4().hex[:12]}",
        artifact_location=(artifact_root / "experiment").as_uri(),
    )

    with _pointed_at(monkeypatch, uri, uri, experiment_id):
        yield Registry(
            tracking_uri=uri,
            registry_uri=uri,
            artifact_root=artifact_root,
            client=client,
            experiment_id=experiment_id,
        )


@pytest.fixture
def server_registry(
    mlflow_server: Server, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Registry]:
    """The session's ``mlflow_server``, with a fresh experiment for this test."""
    from mlflow import MlflowClient

    destination = mlflow_server.artifacts_destination
    if not isinstance(destination, Path):
        raise NotImplementedError(
            "server_registry needs a server whose artifacts_destination is a local "
            f"folder; this one stores them at {destination}"
        )

    client = MlflowClient(
        tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url
    )
    experiment_id = client.create_experiment(f"integrity-test-{uuid.uuid4().hex}")

    with _pointed_at(monkeypatch, mlflow_server.url, mlflow_server.url, experiment_id):
        yield Registry(
            tracking_uri=mlflow_server.url,
            registry_uri=mlflow_server.url,
            artifact_root=destination,
            client=client,
            experiment_id=experiment_id,
        )


@contextlib.contextmanager
def _pointed_at(
    monkeypatch: pytest.MonkeyPatch,
    tracking_uri: str,
    registry_uri: str,
    experiment_id: str,
) -> Iterator[None]:
    """Point MLflow's fluent API at some stores for one test, then restore it.

    The tracking and registry URIs and the active experiment live both in
    environment variables, which monkeypatch restores, and in module globals
    of MLflow. The URIs are put back through MLflow's own setters, so that the
    state derived from them (the trace exporter) follows.
    """
    import mlflow
    from mlflow.tracking import _model_registry, _tracking_service, fluent

    for name in _CLIENT_ENV_VARS:
        monkeypatch.delenv(name, raising=False)

    previous_tracking_uri = getattr(_tracking_service.utils, "_tracking_uri", None)
    previous_registry_uri = getattr(_model_registry.utils, "_registry_uri", None)
    monkeypatch.setattr(fluent, "_active_experiment_id", None, raising=False)

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(registry_uri)
    mlflow.set_experiment(experiment_id=experiment_id)

    try:
        yield
    finally:
        # A run left open by a failing test would otherwise become the parent
        # of the next test's first run.
        while mlflow.active_run() is not None:
            mlflow.end_run()

        # MLflow itself passes None to these setters to return to the default.
        mlflow.set_tracking_uri(cast(str, previous_tracking_uri))
        mlflow.set_registry_uri(cast(str, previous_registry_uri))


def _with_postgres_driver(uri: str) -> str:
    scheme, separator, rest = uri.partition("://")
    if scheme not in ("postgres", "postgresql") or not separator:
        return uri

    for module, driver in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return f"postgresql+{driver}://{rest}"

    return uri


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_until_healthy(
    server: Server, process: subprocess.Popen[bytes], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise ServerStartError(
                f"mlflow server exited with code {process.returncode} before "
                f"answering; last lines of {server.log_path}:\n{_tail(server.log_path)}"
            )

        try:
            with urllib.request.urlopen(f"{server.url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass

        if time.monotonic() >= deadline:
            _stop(process)
            raise ServerStartError(
                f"mlflow server at {server.url} did not answer /health within "
                f"{timeout:.0f}s; last lines of {server.log_path}:\n"
                f"{_tail(server.log_path)}"
            )

        time.sleep(0.2)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return

    _signal(process, kill=False)
    try:
        process.wait(timeout=_STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        _signal(process, kill=True)
        process.wait(timeout=_STOP_GRACE_SECONDS)

    # Workers that outlived `mlflow server` are still in its process group.
    _signal(process, kill=True)


def _signal(process: subprocess.Popen[bytes], *, kill: bool) -> None:
    try:
        if os.name == "posix":
            os.killpg(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
        elif kill:
            process.kill()
        else:
            process.terminate()
    except ProcessLookupError:
        pass


def _tail(path: Path) -> str:
    try:
        with path.open(errors="replace") as log:
            return "".join(deque(log, maxlen=_LOG_TAIL_LINES))
    except OSError as error:
        return f"(cannot read the log: {error})"
