"""The verified: artifact repository: MLflow's own loaders, verified first."""

from __future__ import annotations

import mlflow
import pytest

import mlflow_integrity
from mlflow_integrity.errors import ConfigurationError, DigestMismatchError
from mlflow_integrity.plugins.artifact_repo import VerifiedArtifactRepository
from tests.helpers import flip_byte, stored_dir, weights_file


class Doubler(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return [2 * x for x in model_input]


@pytest.fixture
def version(registered, integrity_registry):
    mv = registered("iris")
    integrity_registry.client.set_registered_model_alias("iris", "champion", "1")
    return mv, stored_dir(integrity_registry.client, mv.name, mv.version)


@pytest.mark.parametrize(
    ("root", "path", "expected"),
    [
        ("verified:/iris", "3", "models:/iris/3"),
        ("verified:/", "iris@champion", "models:/iris@champion"),
        ("verified:", "iris@blake3:ab", "models:/iris@blake3:ab"),
    ],
)
def test_uri_is_reassembled(root, path, expected):
    """MLflow splits verified: URIs at the last '/'; the repository rejoins them."""
    assert VerifiedArtifactRepository(root).model_uri(path) == expected


def test_sklearn_flavor_loads_verified(version, iris):
    """mlflow.sklearn.load_model('verified:/iris/1') returns the estimator."""
    features, labels = iris

    estimator = mlflow.sklearn.load_model("verified:/iris/1")

    assert estimator.score(features, labels) > 0.9


def test_alias_and_content_pin(version, iris):
    """verified:/name@alias and verified:/name@<digest> load the same version."""
    mv, _ = version
    features, _ = iris

    by_alias = mlflow.pyfunc.load_model("verified:/iris@champion")
    by_pin = mlflow.pyfunc.load_model(f"verified:/iris@{mv.tags['artifact_sha']}")

    assert list(by_alias.predict(features[:3])) == list(by_pin.predict(features[:3]))


def test_unknown_content_pin_is_refused(version):
    """A pin no version records is refused before anything is downloaded."""
    with pytest.raises(ConfigurationError, match="No version of 'iris' records"):
        mlflow.pyfunc.load_model("verified:/iris@blake3:" + "0" * 64)


def test_custom_pyfunc_model(integrity_registry):
    """A custom PythonModel registered with mlflow-integrity loads verified."""
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="doubler", python_model=Doubler(), pip_requirements=["mlflow"]
        )
    mlflow_integrity.register_model(info.model_uri, "doubler")

    model = mlflow.pyfunc.load_model("verified:/doubler/1")

    assert model.predict([1, 2]) == [2, 4]


def test_tampered_bytes_never_reach_the_flavor(version):
    """A flipped byte makes MLflow's loader fail with the integrity error."""
    _, stored = version
    flip_byte(weights_file(stored))

    with pytest.raises(DigestMismatchError, match="models:/iris/1"):
        mlflow.sklearn.load_model("verified:/iris@champion")


def test_models_scheme_is_plain_mlflow_unless_switched_on(version, monkeypatch):
    """With the switch off, models:/ behaves as in MLflow (a change to a file
    the loader does not read goes unnoticed); switched on, the same load is
    refused. An alias is still resolved by MLflow, once."""
    from mlflow.store.artifact.artifact_repository_registry import (
        get_artifact_repository,
    )
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

    _, stored = version
    (stored / "conda.yaml").write_text("name: changed\n")
    monkeypatch.delenv("MLFLOW_INTEGRITY_VERIFY_MODELS_URIS", raising=False)

    assert type(get_artifact_repository("models:/iris/1")) is ModelsArtifactRepository
    assert mlflow.sklearn.load_model("models:/iris@champion") is not None

    monkeypatch.setenv("MLFLOW_INTEGRITY_VERIFY_MODELS_URIS", "1")
    with pytest.raises(DigestMismatchError, match=r"conda\.yaml"):
        mlflow.sklearn.load_model("models:/iris@champion")


def test_models_scheme_switched_on_loads_untouched_versions(version, monkeypatch, iris):
    """Switched on, an untouched version loads through plain models:/ URIs,
    single files inside it included."""
    features, labels = iris
    monkeypatch.setenv("MLFLOW_INTEGRITY_VERIFY_MODELS_URIS", "true")

    assert mlflow.sklearn.load_model("models:/iris/1").score(features, labels) > 0.9
    info = mlflow.models.get_model_info("models:/iris/1")
    assert "sklearn" in info.flavors


def test_logged_model_id_resolves_to_its_registered_version(
    integrity_registry, log_sklearn, iris
):
    """verified:/m-<id> verifies against the version registered from it; a
    logged model that was never registered is refused."""
    features, labels = iris
    logged = log_sklearn()
    mlflow_integrity.register_model(logged.model_uri, "by-id")
    model_id = logged.model_uri.removeprefix("models:/")

    estimator = mlflow.sklearn.load_model(f"verified:/{model_id}")
    assert estimator.score(features, labels) > 0.9
    assert mlflow_integrity.verify(logged.model_uri).version == "1"

    never = log_sklearn().model_uri.removeprefix("models:/")
    with pytest.raises(ConfigurationError, match="never registered"):
        mlflow.sklearn.load_model(f"verified:/{never}")
