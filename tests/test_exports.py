"""The public surface of the package."""

from __future__ import annotations

import subprocess
import sys

import pytest

import mlflow_integrity


def test_all_matches_what_the_package_exports():
    """__all__ names exactly the lazily exported names and __version__."""
    assert sorted(mlflow_integrity.__all__) == sorted(
        [*mlflow_integrity._EXPORTS, "__version__"]
    )
    for name in mlflow_integrity.__all__:
        assert getattr(mlflow_integrity, name) is not None


def test_public_functions_are_not_shadowed_by_modules():
    """mlflow_integrity.verify is the function even after every module loaded."""
    import mlflow_integrity.check
    import mlflow_integrity.load
    import mlflow_integrity.recovery

    assert callable(mlflow_integrity.verify)
    assert callable(mlflow_integrity.load_model)
    assert callable(mlflow_integrity.restore)


def test_audit_and_diagnose_stay_functions():
    """Their modules have other names (auditing, diagnosis), so importing them
    does not rebind the package's functions."""
    import mlflow_integrity.auditing
    import mlflow_integrity.diagnosis
    from mlflow_integrity.errors import ConfigurationError

    assert mlflow_integrity.audit is mlflow_integrity.auditing.audit
    assert mlflow_integrity.diagnose is mlflow_integrity.diagnosis.diagnose
    with pytest.raises(ConfigurationError, match="workers must be between"):
        mlflow_integrity.audit(workers=0)
    with pytest.raises(ConfigurationError, match="is not a directory"):
        mlflow_integrity.diagnose("models:/m/1", path="/nonexistent/copy")


def test_import_does_not_import_mlflow():
    """Importing the package (as pytest does for the plugin) stays cheap."""
    code = "import sys, mlflow_integrity; print('mlflow' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_errors_are_mlflow_exceptions_with_4xx_codes():
    """Every IntegrityError is an MlflowException with a non-retried status."""
    from mlflow.exceptions import MlflowException

    from mlflow_integrity import errors

    classes = [
        getattr(errors, n)
        for n in dir(errors)
        if n.endswith("Error") and issubclass(getattr(errors, n), errors.IntegrityError)
    ]
    for cls in classes:
        err = cls("x")
        assert isinstance(err, MlflowException)
        assert 400 <= err.get_http_status_code() < 500, cls
