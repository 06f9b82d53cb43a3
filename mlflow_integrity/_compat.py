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

    run_id, path = RunsArtifactRepository.parse_runs_uri(runs_uri)  # type: ignore[no-untyped-call]
    return str(run_id), str(path or "")


def logged_models_of_run(client: MlflowClient, run_id: str, name: str) -> list[Any]:
    """The logged models named ``name`` whose source run is ``run_id``: the
    candidates ``mlflow.register_model`` picks from for a ``runs:/`` URI whose
    run has no artifacts at that path."""
    from mlflow.tracking._model_registry.fluent import _get_logged_models_from_run

    return list(_get_logged_models_from_run(client.get_run(run_id), name))
