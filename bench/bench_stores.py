"""Benchmark reading a stored model from S3 and from the tracking server's proxy.

Writes one model-shaped tree (one large file and many small ones), uploads it
to an S3-compatible server and through a real ``mlflow server`` proxy, then
times, in the same run and on the same bytes:

* plain MLflow: ``mlflow.artifacts.download_artifacts`` into a directory, with
  no hashing (the baseline every case is compared with);
* download, then hash the copy: what mlflow-integrity did before streaming
  stores (``ArtifactRepositoryStore.fetch``);
* ``fetch``: the streaming store's one pass, copy and hash together;
* ``manifest``: the streaming store hashing without keeping a copy;
* for S3, ``quick_manifest``: listing only, nothing changed.

The S3 server is ``--s3-endpoint`` if given, else a moto server started here;
moto is an in-process Python server, so absolute S3 figures are moto's speed,
and the ratios are what carries over. Run with ``--help`` for the options; the
README next to this file shows a run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

MIB = 1024**2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args[0]} exited with {proc.returncode}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2).status_code < 500:
                return
        time.sleep(0.3)
    raise SystemExit(f"nothing answered on {url}")


@contextlib.contextmanager
def process(args: list[str], url: str, log: str) -> Iterator[None]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for(url, proc)
            yield
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def make_tree(root: str, big: int, small: int) -> None:
    os.makedirs(os.path.join(root, "data"))
    with open(os.path.join(root, "MLmodel"), "w") as f:
        f.write("flavors: {}\n")
    with open(os.path.join(root, "data", "weights.bin"), "wb") as f:
        for _ in range(big // MIB):
            f.write(os.urandom(MIB))
    for i in range(small):
        with open(os.path.join(root, "data", f"part-{i:04d}.bin"), "wb") as f:
            f.write(os.urandom(4096 + 97 * i))


def tree_size(root: str) -> int:
    return sum(
        os.path.getsize(os.path.join(d, n))
        for d, _, names in os.walk(root)
        for n in names
    )


def best(repeat: int, fn: Callable[[], Any], scratch: str) -> float:
    times = []
    for _ in range(repeat):
        dest = tempfile.mkdtemp(dir=scratch)
        start = time.perf_counter()
        fn_dest = fn(dest) if fn.__code__.co_argcount else fn()
        times.append(time.perf_counter() - start)
        del fn_dest
        shutil.rmtree(dest, ignore_errors=True)
    return min(times)


def report(title: str, size: int, rows: list[tuple[str, float]]) -> None:
    base = rows[0][1]
    print(f"\n{title}")
    print(f"| case | seconds | MiB/s | vs {rows[0][0]} |")
    print("|---|---:|---:|---:|")
    for name, seconds in rows:
        print(
            f"| {name} | {seconds:.3f} | {size / MIB / seconds:,.0f} | "
            f"{seconds / base:.2f}x |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--big", type=int, default=512, help="large file, MiB")
    parser.add_argument("--small", type=int, default=200, help="small files")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--s3-endpoint", default=None)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="bench-stores-", dir=args.dir)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    bindir = os.path.dirname(sys.executable)
    try:
        model = os.path.join(work, "model")
        make_tree(model, args.big * MIB, args.small)
        size = tree_size(model)
        print(
            f"# {datetime.date.today()} {platform.machine()} {os.cpu_count()} cores, "
            f"Python {platform.python_version()}; tree {size / MIB:,.1f} MiB "
            f"({args.small + 2} files), best of {args.repeat}"
        )
        with contextlib.ExitStack() as stack:
            endpoint = args.s3_endpoint
            if endpoint is None:
                port = free_port()
                endpoint = f"http://127.0.0.1:{port}"
                stack.enter_context(
                    process(
                        [
                            os.path.join(bindir, "moto_server"),
                            "-H",
                            "127.0.0.1",
                            "-p",
                            str(port),
                        ],
                        endpoint,
                        os.path.join(work, "moto.log"),
                    )
                )
            os.environ["MLFLOW_S3_ENDPOINT_URL"] = endpoint
            port = free_port()
            server = f"http://127.0.0.1:{port}"
            stack.enter_context(
                process(
                    [
                        sys.executable,
                        "-m",
                        "mlflow",
                        "server",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--workers",
                        "1",
                        "--backend-store-uri",
                        f"sqlite:///{work}/mlflow.db",
                        "--serve-artifacts",
                        "--artifacts-destination",
                        os.path.join(work, "served"),
                    ],
                    f"{server}/health",
                    os.path.join(work, "server.log"),
                )
            )
            run_cases(model, size, endpoint, server, work, args.repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_cases(
    model: str, size: int, endpoint: str, server: str, work: str, repeat: int
) -> None:
    import boto3
    import mlflow
    import mlflow.artifacts
    from mlflow import MlflowClient

    from mlflow_integrity.digest import hash_tree
    from mlflow_integrity.stores import ArtifactRepositoryStore
    from mlflow_integrity.stores.proxy import ProxyStore
    from mlflow_integrity.stores.s3 import S3Store

    scratch = os.path.join(work, "scratch")
    os.mkdir(scratch)
    expected = hash_tree(model)

    # --- S3 ---
    s3 = boto3.client("s3", endpoint_url=endpoint)
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(
        Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
    )
    for d, _, names in os.walk(model):
        for n in names:
            full = os.path.join(d, n)
            s3.upload_file(full, bucket, f"m/{os.path.relpath(full, model)}")
    uri = f"s3://{bucket}/m"
    store = S3Store(uri)
    snapshot = store.snapshot("blake3")
    assert snapshot.manifest == expected
    assert snapshot.objects is not None
    objects = snapshot.objects

    def mlflow_download(dest: str) -> Any:
        return mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=dest)

    # One untimed round first, so that no case pays for cold caches or for
    # making clients and connections.
    best(1, mlflow_download, scratch)

    rows = [
        ("MLflow download_artifacts (no hash)", best(repeat, mlflow_download, scratch)),
        (
            "download, then hash the copy",
            best(
                repeat, lambda d: fetch_into(ArtifactRepositoryStore(uri), d), scratch
            ),
        ),
        (
            "S3Store.fetch (one pass)",
            best(repeat, lambda d: fetch_into(store, d), scratch),
        ),
        (
            "S3Store.manifest (no copy)",
            best(repeat, lambda: store.manifest("blake3"), scratch),
        ),
        (
            "S3Store.quick_manifest (listing)",
            best(repeat, lambda: store.quick_manifest(expected, objects), scratch),
        ),
    ]
    report(f"S3 ({endpoint}, versioned bucket)", size, rows)

    # --- the proxy ---
    client = MlflowClient(tracking_uri=server)
    mlflow.set_tracking_uri(server)
    run = client.create_run(client.create_experiment(f"bench-{uuid.uuid4().hex[:6]}"))
    client.log_artifacts(run.info.run_id, model, "model")
    proxied = f"{run.info.artifact_uri}/model"
    proxy = ProxyStore(proxied)
    assert proxy.manifest("blake3") == expected

    def proxy_download(dest: str) -> Any:
        return mlflow.artifacts.download_artifacts(artifact_uri=proxied, dst_path=dest)

    best(1, proxy_download, scratch)

    rows = [
        ("MLflow download_artifacts (no hash)", best(repeat, proxy_download, scratch)),
        (
            "download, then hash the copy",
            best(
                repeat,
                lambda d: fetch_into(ArtifactRepositoryStore(proxied), d),
                scratch,
            ),
        ),
        (
            "ProxyStore.fetch (one pass)",
            best(repeat, lambda d: fetch_into(proxy, d), scratch),
        ),
        (
            "ProxyStore.manifest (no copy)",
            best(repeat, lambda: proxy.manifest("blake3"), scratch),
        ),
    ]
    report(f"Tracking server proxy ({server}, local destination)", size, rows)


def fetch_into(store: Any, dest: str) -> Any:
    target = os.path.join(dest, "model")
    os.mkdir(target)
    return store.fetch(target, "blake3")


if __name__ == "__main__":
    main()
