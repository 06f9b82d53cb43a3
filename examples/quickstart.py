"""The quick start: register a real model, load it verified, tamper, be refused.

Run it through ``./scripts/quickstart.sh`` (which sets up the virtual
environment), or directly with ``python examples/quickstart.py [FOLDER]``. It
uses an embedded default: a sqlite registry and a local artifact store in
FOLDER (``./quickstart-demo`` unless given), which it creates afresh.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

MARKER = ".mlflow-integrity-quickstart"


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Hold back MLflow's own progress lines (it prints them to stderr)."""
    with contextlib.redirect_stderr(io.StringIO()):
        yield


def main(folder: Path) -> int:
    # Keep MLflow's own chatter out of the walk-through.
    warnings.filterwarnings("ignore")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    logging.basicConfig(level=logging.WARNING)

    import mlflow
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    import mlflow_integrity
    from mlflow_integrity.stores import local_path

    marker = folder / MARKER
    if folder.exists():
        if not marker.exists():
            print(
                f"{folder} exists and was not made by this quick start; "
                "give another folder.",
                file=sys.stderr,
            )
            return 2
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    marker.write_text("made by examples/quickstart.py; deleted on its next run\n")
    root = folder.resolve()
    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    with quiet():
        experiment = mlflow.create_experiment(
            "quickstart", artifact_location=(root / "artifacts").as_uri()
        )
    mlflow.set_experiment(experiment_id=experiment)
    step = 0

    def say(text: str) -> None:
        nonlocal step
        step += 1
        print(f"\n[{step}] {text}", flush=True)

    say("Train a scikit-learn model and log it to the sqlite registry")
    features, labels = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=300).fit(features, labels)
    with quiet(), mlflow.start_run() as run:
        mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"])
    print(f"    logged runs:/{run.info.run_id}/model")

    say("Register it with mlflow_integrity.register_model")
    with quiet():
        mv = mlflow_integrity.register_model(f"runs:/{run.info.run_id}/model", "iris")
    print(f"    models:/iris/{mv.version}  artifact_sha = {mv.tags['artifact_sha']}")

    say("Load it verified and predict")
    loaded = mlflow_integrity.load_model("models:/iris/1")
    predictions = loaded.predict(features[:3]).tolist()
    print(f"    verified; prediction for 3 flowers: {predictions}")

    say("Change one byte of the weights file in the artifact store")
    client = mlflow.MlflowClient()
    stored = Path(local_path(client.get_model_version_download_uri("iris", "1")) or "")
    weights = next(
        p for p in (stored / "model.skops", stored / "model.pkl") if p.exists()
    )
    original = weights.read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    print(f"    flipped one bit of {weights.relative_to(root)}")

    say("Load it again")
    try:
        mlflow_integrity.load_model("models:/iris/1")
    except mlflow_integrity.DigestMismatchError as err:
        print("    refused with DigestMismatchError:\n")
        print("    " + str(err).replace("\n", "\n    "))
    else:
        print("    loaded: this should not happen")
        return 1

    say("Check the store from the command line")
    cli = Path(sys.executable).parent / "mlflow-integrity"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db"}
    verify = [str(cli), "verify", "models:/iris/1"]
    refused = subprocess.run(verify, env=env, capture_output=True, check=False)
    first_line = refused.stdout.decode().splitlines()[0]
    print(f"    $ mlflow-integrity verify models:/iris/1\n    {first_line}")
    print(f"    exit {refused.returncode}")

    say("Put the original byte back: the version verifies again")
    weights.write_bytes(original)
    restored = subprocess.run(verify, env=env, capture_output=True, check=False)
    first_line = restored.stdout.decode().splitlines()[0]
    print(f"    $ mlflow-integrity verify models:/iris/1\n    {first_line}")
    print(f"    exit {restored.returncode}")

    say("Find out more")
    print(
        f"    export MLFLOW_TRACKING_URI=sqlite:///{root}/mlflow.db\n"
        f"    {cli} verify models:/iris/1 --format json\n"
        f"    {cli} --help\n"
        "    README.md: the integrity+ registry, the server, promotion policies"
    )
    return 0


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("quickstart-demo")
    sys.exit(main(target))
