"""Time ``mlflow_integrity.audit`` over many versions at several worker counts.

Builds a throwaway SQLite registry with a local artifact store in a fresh
temporary directory: VERSIONS versions (spread over four registered models),
each a saved scikit-learn model plus one file of random bytes of SIZE, logged
as run artifacts and registered with mlflow-integrity. Then it audits the
whole registry in deep mode at each worker count, REPEAT times, and prints
the median. The first audit is not timed: it warms the page cache, so the
figures measure hashing and registry calls, not the disk.

    .venv/bin/python bench/bench_audit.py --versions 32 --size 16M --workers 1,4,8

With ``--s3-endpoint URL`` the artifacts go to a new bucket there (boto3's
usual credentials), so that each check waits on the network.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

_UNITS = {"K": 1024, "M": 1024**2, "G": 1024**3}


def parse_size(text: str) -> int:
    unit = text[-1].upper()
    if unit in _UNITS:
        return int(float(text[:-1]) * _UNITS[unit])
    return int(text)


def build(folder: str, versions: int, size: int, s3_endpoint: str | None) -> str:
    import mlflow
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    import mlflow_integrity

    uri = f"sqlite:///{folder}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    location = f"file://{folder}/artifacts"
    if s3_endpoint:
        import uuid

        import boto3

        os.environ["MLFLOW_S3_ENDPOINT_URL"] = s3_endpoint
        bucket = f"bench-audit-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
        location = f"s3://{bucket}/artifacts"
    experiment = mlflow.create_experiment("bench-audit", artifact_location=location)
    mlflow.set_experiment(experiment_id=experiment)
    features, labels = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=300).fit(features, labels)
    for i in range(versions):
        local = os.path.join(folder, f"saved-{i}")
        mlflow.sklearn.save_model(model, local, pip_requirements=["scikit-learn"])
        with open(os.path.join(local, "weights.bin"), "wb") as f:
            f.write(os.urandom(size))
        with mlflow.start_run() as run:
            mlflow.log_artifacts(local, "model")
        shutil.rmtree(local)
        mlflow_integrity.register_model(
            f"runs:/{run.info.run_id}/model", f"bench-{i % 4}"
        )
    return uri


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=32)
    parser.add_argument("--size", default="16M", help="extra bytes per version")
    parser.add_argument("--workers", default="1,4,8", help="comma list")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default=None, help="parent of the temporary folder")
    parser.add_argument(
        "--s3-endpoint",
        default=None,
        help="store the artifacts in a new bucket of this S3 endpoint instead",
    )
    args = parser.parse_args()

    import mlflow_integrity

    folder = tempfile.mkdtemp(prefix="bench-audit-", dir=args.dir)
    try:
        size = parse_size(args.size)
        started = time.perf_counter()
        build(folder, args.versions, size, args.s3_endpoint)
        print(
            f"built {args.versions} versions of {size / 2**20:.1f} MiB extra each "
            f"in {time.perf_counter() - started:.1f} s; {os.cpu_count()} CPUs"
        )
        mlflow_integrity.audit(workers=4)
        for workers in (int(w) for w in args.workers.split(",")):
            times = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                report = mlflow_integrity.audit(workers=workers)
                times.append(time.perf_counter() - t)
                assert report.ok, report.summary()
            print(
                f"workers={workers:<3} {len(report.rows)} versions  median "
                f"{statistics.median(times):.2f} s  "
                f"(runs: {', '.join(f'{x:.2f}' for x in times)})"
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
