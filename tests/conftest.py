"""Model-shaped fixtures: real scikit-learn models, logged and registered.

The registries themselves come from the package's own pytest plugin
(``integrity_registry``, ``server_registry``, ``mlflow_server``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass(frozen=True)
class Logged:
    """A model logged in a run: its URIs and where its bytes are stored."""

    run_id: str
    model_uri: str
    runs_uri: str


@pytest.fixture(scope="session")
def iris() -> tuple[Any, Any]:
    from sklearn.datasets import load_iris

    features, labels = load_iris(return_X_y=True)
    return features, labels


@pytest.fixture(scope="session")
def classifier(iris: tuple[Any, Any]) -> Any:
    from sklearn.linear_model import LogisticRegression

    features, labels = iris
    return LogisticRegression(max_iter=300).fit(features, labels)


@pytest.fixture
def log_sklearn(classifier: Any) -> Callable[..., Logged]:
    """Log the iris classifier in a new run of the active experiment."""

    def log(name: str = "model") -> Logged:
        import mlflow

        with mlflow.start_run() as run:
            # Explicit requirements skip MLflow's inference, which takes seconds.
            info = mlflow.sklearn.log_model(
                classifier, name=name, pip_requirements=["scikit-learn"]
            )
        return Logged(
            run.info.run_id, info.model_uri, f"runs:/{run.info.run_id}/{name}"
        )

    return log


@pytest.fixture
def registered(
    integrity_registry: Any, log_sklearn: Callable[..., Logged]
) -> Callable[..., Any]:
    """Register a freshly logged iris model with mlflow-integrity."""
    import mlflow_integrity

    def register(name: str = "iris", **kwargs: Any) -> Any:
        logged = log_sklearn()
        return mlflow_integrity.register_model(logged.runs_uri, name, **kwargs)

    return register


@pytest.fixture
def make_tree(tmp_path: Path) -> Callable[[dict[str, bytes]], Path]:
    """Write a tree of files, given as ``{relative posix path: bytes}``."""

    def make(files: dict[str, bytes], name: str = "tree") -> Path:
        root = tmp_path / name
        root.mkdir()
        for rel, data in files.items():
            target = root.joinpath(*rel.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return root

    return make
