"""A scoring server on a verified private copy, with a route that says what it
serves.

``mlflow-integrity serve MODEL_URI`` verifies the version into a private
directory, loads it as pyfunc, and runs MLflow's own scoring app (``/ping``,
``/health``, ``/invocations``, ``/version``) on it, plus ``GET /integrity``:
the version, digest, source and time of the check. Readiness probes and
runtime attestation read that route; ``mlflow-integrity probe`` checks it.
MLflow's scoring app is built with ``mlflow.pyfunc.scoring_server.init``.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from typing import Any

from mlflow_integrity.digest import Digest
from mlflow_integrity.errors import ConfigurationError, DigestMismatchError

_logger = logging.getLogger(__name__)

INTEGRITY_ROUTE = "/integrity"


def build_app(
    model_uri: str,
    *,
    expected: str | Digest | None = None,
    attest: str | None = None,
    pin_wait: float | None = None,
) -> Any:
    """Verify and load ``model_uri``; return MLflow's scoring app for it with
    the ``/integrity`` route added.

    Raises:
        IntegrityError: if the bytes do not verify (nothing is served).
    """
    from mlflow.pyfunc import scoring_server

    from mlflow_integrity.load import load_model, verification_of

    model = load_model(model_uri, expected=expected, attest=attest, pin_wait=pin_wait)
    result = verification_of(model)
    assert result is not None
    report = {
        "model_uri": result.model_uri,
        "requested": model_uri,
        "name": result.name,
        "version": result.version,
        "digest": str(result.actual),
        "source": result.source,
        "verified_at": result.checked_at,
        "status": result.status,
    }
    app = scoring_server.init(model)

    @app.get(INTEGRITY_ROUTE)  # type: ignore[untyped-decorator]
    def integrity() -> dict[str, Any]:
        return report

    # Keep the model (and so its private copy) alive as long as the app.
    app.state.integrity_model = model
    _logger.info("serving %s (%s)", result.model_uri, result.actual)
    return app


def serve(model_uri: str, host: str, port: int, **kwargs: Any) -> None:
    """Build the app and run it with uvicorn until interrupted."""
    import uvicorn

    app = build_app(model_uri, **kwargs)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def probe(url: str, expect: str | None = None, timeout: float = 10.0) -> dict[str, Any]:
    """Read a running server's ``/integrity`` route and check the digest.

    Raises:
        ConfigurationError: if the server cannot be reached or does not answer
            with an integrity report.
        DigestMismatchError: if it serves another digest than ``expect``.
    """
    wanted = Digest.parse(expect) if expect else None
    target = url.rstrip("/") + INTEGRITY_ROUTE
    try:
        with urllib.request.urlopen(target, timeout=timeout) as response:
            report: dict[str, Any] = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ConfigurationError(
            f"No integrity report at {target}: {exc}. Is it an "
            "`mlflow-integrity serve` server, and is it up?"
        ) from None
    if wanted is not None and report.get("digest") != str(wanted):
        raise DigestMismatchError(
            f"{url} serves {report.get('model_uri')} with digest "
            f"{report.get('digest')}, not the expected {wanted}. Redeploy the "
            "expected version, or update the expectation if the change was meant.",
            expected=str(wanted),
            actual=str(report.get("digest")),
        )
    return report
