"""Every use of a private MLflow internal, in one place.

MLflow offers no public call for these steps. Each function here is covered by
tests/test_compat.py, which fails loudly when an MLflow release moves or
changes what is used, so that a break shows up as one failing test rather than
as wrong digests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient


def run_artifact_uri(runs_uri: str) -> str:
    """The storage URI under a run's artifact root that ``runs:/<id>/<path>``
    names, as ``mlflow.register_model`` computes it."""
    from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

    return str(RunsArtifactRepository.get_underlying_uri(runs_uri))


def parse_runs_uri(runs_uri: str) -> tuple[str, str]:
    """Split ``runs:/<run_id>/<path>`` into the run id and the path."""
    from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

    run_id, path = RunsArtifactRepository.parse_runs_uri(runs_uri)
    return str(run_id), str(path or "")


def logged_models_of_run(client: MlflowClient, run_id: str, name: str) -> list[Any]:
    """The logged models named ``name`` whose source run is ``run_id``: the
    candidates ``mlflow.register_model`` picks from for a ``runs:/`` URI whose
    run has no artifacts at that path."""
    from mlflow.tracking._model_registry.fluent import _get_logged_models_from_run

    return list(_get_logged_models_from_run(client.get_run(run_id), name))


def build_registry_store(store_uri: str, tracking_uri: str | None) -> Any:
    """Build MLflow's own registry store for ``store_uri``.

    MLflow builds stores while holding a lock that is not reentrant, and the
    integrity store is built under it; asking the store registry's
    ``get_store`` from there would deadlock, so the builder is looked up and
    called directly.
    """
    import inspect

    from mlflow.tracking._model_registry.utils import _get_store_registry

    builder = _get_store_registry().get_store_builder(store_uri)
    params = inspect.signature(builder).parameters
    if "tracking_uri" in params:
        return builder(store_uri=store_uri, tracking_uri=tracking_uri)
    return builder(store_uri=store_uri)


def server_artifacts_destination() -> str | None:
    """Inside ``mlflow server --serve-artifacts``, the artifacts destination
    that ``mlflow-artifacts:`` URIs are served from; None elsewhere."""
    import os

    from mlflow.server.constants import (
        ARTIFACTS_DESTINATION_ENV_VAR,
        SERVE_ARTIFACTS_ENV_VAR,
    )

    if os.environ.get(SERVE_ARTIFACTS_ENV_VAR, "").lower() not in ("true", "1"):
        return None
    return os.environ.get(ARTIFACTS_DESTINATION_ENV_VAR) or None


def registry_store_of(client: MlflowClient) -> Any:
    """The registry store an MlflowClient talks to."""
    return client._get_registry_client().store


def is_prompt_tag(key: str) -> bool:
    """True for the tags that mark registered models and versions as prompts."""
    from mlflow.prompt.constants import IS_PROMPT_TAG_KEY

    return bool(key == IS_PROMPT_TAG_KEY)


def prompt_tag_key() -> str:
    from mlflow.prompt.constants import IS_PROMPT_TAG_KEY

    return str(IS_PROMPT_TAG_KEY)


def is_prompt_model(registered_model: Any) -> bool:
    """True if a RegisteredModel was created as a prompt (MLflow hides the
    marking tag from ``RegisteredModel.tags``)."""
    return bool(registered_model._is_prompt())


def proxy_repository(uri: str) -> tuple[Any, Any]:
    """MLflow's HTTP artifact repository for a proxied URI (``mlflow-artifacts:``
    resolved against the tracking URI, or a ``/mlflow-artifacts/artifacts``
    URL), and the host credentials (auth headers, TLS settings) it sends.

    The repository's own download writes each file to disk before anything can
    hash it; reading the stream ourselves needs its credentials.
    """
    from mlflow.store.artifact.artifact_repository_registry import (
        get_artifact_repository,
    )

    repo = get_artifact_repository(uri)
    return repo, repo._host_creds  # type: ignore[attr-defined]


def http_get_stream(host_creds: Any, endpoint: str) -> Any:
    """``GET`` an endpoint below the host credentials' URL as a stream, with
    MLflow's timeout; raises for an error status.

    MLflow's default retries (7, doubling from 2 s) make one failing file
    take minutes; unless ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` is set, an
    integrity read retries twice, after 1 and 2 s.
    """
    import os

    from mlflow.utils.rest_utils import (  # type: ignore[attr-defined]
        augmented_raise_for_status,
        http_request,
    )

    retries: dict[str, Any] = {}
    if "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ:
        retries["max_retries"] = 2
    if "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR" not in os.environ:
        retries["backoff_factor"] = 1
    response = http_request(host_creds, endpoint, "GET", stream=True, **retries)
    augmented_raise_for_status(response)
    return response
