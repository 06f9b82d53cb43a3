"""S3 through boto3 against a real S3-compatible server (moto's server mode).

./scripts/test.sh starts the server and exports its address; the
``s3_endpoint`` fixture skips these tests without it.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

import boto3
import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

import mlflow_integrity
from mlflow_integrity.check import verify
from mlflow_integrity.cli import main
from mlflow_integrity.digest import hash_tree
from mlflow_integrity.errors import (
    ConfigurationError,
    DigestMismatchError,
    UnsafeArtifactError,
)
from mlflow_integrity.recovery import restore
from mlflow_integrity.registry import OBJECTS, read_record
from mlflow_integrity.stores import open_store
from mlflow_integrity.stores.proxy import ProxyStore
from mlflow_integrity.stores.s3 import S3Store
from tests.helpers import free_port
from tests.netfaults import AccessDenied, Blackhole, CuttingProxy, HtmlPage

pytestmark = pytest.mark.s3

# Above boto3's multipart threshold (8 MiB), so uploads are multipart.
BIG = 12 * 1024 * 1024


@pytest.fixture
def s3(s3_endpoint, monkeypatch):
    """A boto3 client on the test server; MLflow's S3 settings point there."""
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3_endpoint)
    return boto3.client("s3", endpoint_url=s3_endpoint)


def new_bucket(s3, versioned: bool) -> str:
    """A bucket with versioning on or off (the plugin's ``s3_bucket`` fixture
    gives a versioned one)."""
    bucket = f"it-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=bucket)
    if versioned:
        s3.put_bucket_versioning(
            Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
        )
    return bucket


@pytest.fixture
def in_bucket(s3, integrity_registry):
    """Make the active experiment store its artifacts in a new bucket."""

    def use(versioned: bool = True) -> str:
        bucket = new_bucket(s3, versioned)
        experiment = integrity_registry.client.create_experiment(
            f"s3-{uuid.uuid4().hex[:8]}", artifact_location=f"s3://{bucket}/exp"
        )
        mlflow.set_experiment(experiment_id=experiment)
        return bucket

    return use


def register_in(in_bucket, registered, versioned: bool = True):
    bucket = in_bucket(versioned)
    mv = registered(f"s3-{uuid.uuid4().hex[:8]}")
    return bucket, mv


def weights_key(s3, mv) -> tuple[str, str]:
    """The bucket and key of the version's weights file."""
    source = MlflowClient().get_model_version_download_uri(mv.name, mv.version)
    store = S3Store(source)
    for obj in store.describe().objects:
        if obj.path in ("model.skops", "model.pkl"):
            return store.bucket, obj.key
    raise AssertionError("no weights object")


def upload_tree(s3, root: Path, bucket: str, prefix: str) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(root)}")


def saved_model(classifier, tmp_path: Path) -> Path:
    """A real sklearn model directory plus one file above the multipart
    threshold."""
    model = tmp_path / "model"
    mlflow.sklearn.save_model(classifier, model, pip_requirements=["scikit-learn"])
    (model / "data").mkdir()
    (model / "data" / "weights.bin").write_bytes(os.urandom(BIG))
    return model


def cli(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().out


# --- one digest wherever the bytes live ----------------------------------------


@pytest.mark.server
def test_same_digest_on_local_store_s3_and_proxy(
    s3, mlflow_server, classifier, tmp_path
):
    """One model stored three ways (local file store, S3 with multipart
    objects and directory markers, the tracking server's proxy) has one
    digest, and copies fetched from each are identical."""
    model = saved_model(classifier, tmp_path)
    local = open_store(str(model)).manifest("blake3")
    assert local.root_digest() == hash_tree(str(model)).root_digest()

    bucket = new_bucket(s3, versioned=False)
    upload_tree(s3, model, bucket, "m")
    for marker in ("m/", "m/data/", "m/empty-dir/"):
        s3.put_object(Bucket=bucket, Key=marker, Body=b"")
    on_s3 = open_store(f"s3://{bucket}/m")
    assert isinstance(on_s3, S3Store)
    listing = on_s3.describe()
    big = listing.by_path()["data/weights.bin"]
    assert "-" in big.etag, "the large object should be a multipart upload"
    assert on_s3.manifest("blake3") == local

    client = MlflowClient(tracking_uri=mlflow_server.url)
    experiment = client.create_experiment(f"proxy-{uuid.uuid4().hex[:8]}")
    run = client.create_run(experiment)
    client.log_artifacts(run.info.run_id, str(model), "model")
    artifact_path = run.info.artifact_uri.removeprefix("mlflow-artifacts:/")
    proxy = f"{mlflow_server.url}/api/2.0/mlflow-artifacts/artifacts"
    url = f"{proxy}/{artifact_path}/model"
    on_proxy = open_store(url)
    assert isinstance(on_proxy, ProxyStore)
    assert on_proxy.manifest("blake3") == local

    for i, store in enumerate((on_s3, on_proxy)):
        dest = tmp_path / f"copy-{i}"
        dest.mkdir()
        assert store.fetch(str(dest), "blake3") == local
        assert hash_tree(str(dest)) == local
        assert not (dest / "empty-dir").exists()


def test_directory_markers_never_change_a_digest(s3, make_tree):
    bucket = new_bucket(s3, versioned=True)
    tree = make_tree({"MLmodel": b"flavors: {}\n", "sub/w.bin": b"\x00" * 1000})
    upload_tree(s3, tree, bucket, "model")
    store = S3Store(f"s3://{bucket}/model")
    before = store.manifest("blake3")
    for marker in ("model/", "model/sub/", "model/other/"):
        s3.put_object(Bucket=bucket, Key=marker, Body=b"")
    assert store.manifest("blake3") == before == hash_tree(str(tree))

    # A key ending in "/" that holds bytes is no marker and no file name.
    s3.put_object(Bucket=bucket, Key="model/odd/", Body=b"data")
    with pytest.raises(UnsafeArtifactError, match="ends with '/'"):
        store.manifest("blake3")


# --- registration and checks on a versioned bucket ----------------------------


def test_registration_records_each_object_version(s3, in_bucket, registered):
    bucket, mv = register_in(in_bucket, registered)
    record = read_record(MlflowClient().get_model_version(mv.name, mv.version))
    assert record is not None and record.objects is not None
    objects = record.objects
    assert objects.bucket == bucket and objects.versioned
    assert [o.path for o in objects.objects] == [e.path for e in record.manifest.files]
    for obj in objects.objects:
        head = s3.head_object(Bucket=bucket, Key=obj.key)
        assert obj.version_id == head["VersionId"]
        assert obj.etag == head["ETag"].strip('"')
        assert obj.size == head["ContentLength"]

    for mode in ("deep", "quick"):
        result = verify(f"models:/{mv.name}/{mv.version}", mode=mode)
        assert result.status == "VERIFIED" and result.mode == mode


def test_overwritten_object_is_named_and_restored(s3, in_bucket, registered, capsys):
    _, mv = register_in(in_bucket, registered)
    uri = f"models:/{mv.name}/{mv.version}"
    bucket, key = weights_key(s3, mv)
    recorded = s3.head_object(Bucket=bucket, Key=key)["VersionId"]
    overwrite = s3.put_object(Bucket=bucket, Key=key, Body=b"retrained weights")

    for mode in ("deep", "quick"):
        result = verify(uri, mode=mode)
        assert result.status == "MODIFIED" and result.mode == mode
        assert [c.path for c in result.diff.modified] == [key.rsplit("/", 1)[1]]
        (history,) = result.object_history
        assert history.recorded_version == recorded
        assert history.current_version == overwrite["VersionId"]
        assert history.recoverable and history.changed_at
    assert f"replaced by version {overwrite['VersionId']}" in str(result.error())
    assert f"mlflow-integrity restore {mv.name} {mv.version} --yes" in str(
        result.error()
    )
    payload = json.loads(cli(capsys, "verify", uri, "--format", "json")[1])
    assert payload["object_versions"][0]["current_version"] == overwrite["VersionId"]

    # A file added since registration is removed by the restore.
    extra_key = key.rsplit("/", 1)[0] + "/notes.txt"
    s3.put_object(Bucket=bucket, Key=extra_key, Body=b"added later")

    code, out = cli(capsys, "restore", mv.name, str(mv.version))
    assert code == 1 and "pass --yes" in out, "a plan alone leaves it MODIFIED"
    assert verify(uri).status == "MODIFIED", "a plan alone must change nothing"

    code, out = cli(capsys, "restore", mv.name, str(mv.version), "--yes")
    assert code == 0, out
    assert "Checked again: VERIFIED" in out
    for mode in ("deep", "quick"):
        assert verify(uri, mode=mode).status == "VERIFIED"
    # Deleting on a versioned bucket leaves the added object recoverable.
    versions = s3.list_object_versions(Bucket=bucket, Prefix=extra_key)
    assert versions["DeleteMarkers"] and versions["Versions"]


def test_deleted_tree_is_missing_and_restored(s3, in_bucket, registered):
    _, mv = register_in(in_bucket, registered)
    uri = f"models:/{mv.name}/{mv.version}"
    source = MlflowClient().get_model_version_download_uri(mv.name, mv.version)
    store = S3Store(source)
    for obj in store.describe().objects:
        s3.delete_object(Bucket=store.bucket, Key=obj.key)

    result = verify(uri)
    assert result.status == "MISSING"
    assert result.object_history
    for history in result.object_history:
        assert history.current_version is None and history.recoverable
    assert "was deleted at" in str(result.error())

    plan = restore(mv.name, str(mv.version), yes=True)
    assert plan.applied and plan.after is not None and plan.after.ok
    assert len(plan.put_back) == len(result.object_history)


def test_restore_refuses_when_a_recorded_version_is_gone(s3, in_bucket, registered):
    """Nothing is written unless every recorded version still verifies."""
    _, mv = register_in(in_bucket, registered)
    bucket, key = weights_key(s3, mv)
    recorded = s3.head_object(Bucket=bucket, Key=key)["VersionId"]
    s3.put_object(Bucket=bucket, Key=key, Body=b"new")
    s3.delete_object(Bucket=bucket, Key=key, VersionId=recorded)  # purged

    result = verify(f"models:/{mv.name}/{mv.version}")
    assert result.status == "MODIFIED"
    assert not result.object_history[0].recoverable

    def history() -> list[str]:
        listing = s3.list_object_versions(Bucket=bucket, Prefix=key)
        return [v["VersionId"] for v in listing.get("Versions", [])]

    before = history()
    with pytest.raises(DigestMismatchError, match=recorded):
        restore(mv.name, str(mv.version), yes=True)
    assert history() == before


# --- a bucket without versioning -----------------------------------------------


def test_unversioned_bucket_records_etags_and_checks_quickly(
    s3, in_bucket, registered, capsys
):
    _, mv = register_in(in_bucket, registered, versioned=False)
    uri = f"models:/{mv.name}/{mv.version}"
    record = read_record(MlflowClient().get_model_version(mv.name, mv.version))
    assert record is not None and record.objects is not None
    assert not record.objects.versioned
    assert all(o.version_id is None and o.etag for o in record.objects.objects)
    assert verify(uri, mode="quick").status == "VERIFIED"

    bucket, key = weights_key(s3, mv)
    original = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    s3.put_object(Bucket=bucket, Key=key, Body=original)  # same bytes again
    assert verify(uri, mode="quick").status == "VERIFIED"

    changed = bytearray(original)
    changed[len(changed) // 2] ^= 0x01
    s3.put_object(Bucket=bucket, Key=key, Body=bytes(changed))
    quick = verify(uri, mode="quick")
    assert quick.status == "MODIFIED" and quick.mode == "quick"
    assert quick.object_history == ()

    with pytest.raises(ConfigurationError, match="versioning"):
        restore(mv.name, str(mv.version), yes=True)
    code, _ = cli(capsys, "restore", mv.name, str(mv.version), "--yes")
    assert code == 2


def test_quick_mode_elsewhere_reads_every_byte(registered):
    """On a local store there is no object metadata: quick mode falls back to
    a deep check and says so."""
    mv = registered("local-quick")
    result = verify(f"models:/{mv.name}/{mv.version}", mode="quick")
    assert result.status == "VERIFIED" and result.mode == "deep"
    with pytest.raises(ConfigurationError, match="mode"):
        verify(f"models:/{mv.name}/{mv.version}", mode="fast")


# --- store errors ----------------------------------------------------------------


def _registered_on(s3, in_bucket, registered):
    _, mv = register_in(in_bucket, registered, versioned=False)
    return mv, f"models:/{mv.name}/{mv.version}"


def test_missing_bucket_is_unreadable(s3, in_bucket, registered):
    mv, uri = _registered_on(s3, in_bucket, registered)
    source = MlflowClient().get_model_version_download_uri(mv.name, mv.version)
    store = S3Store(source)
    for obj in store.describe().objects:
        s3.delete_object(Bucket=store.bucket, Key=obj.key)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=store.bucket):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=store.bucket, Key=obj["Key"])
    s3.delete_bucket(Bucket=store.bucket)

    result = verify(uri)
    assert result.status == "UNREADABLE"
    assert "NoSuchBucket" in result.detail


@pytest.mark.parametrize(
    "fault", ["access-denied", "refused", "timeout", "cut", "html"]
)
def test_store_errors_are_unreadable_never_modified(
    fault, s3, s3_endpoint, in_bucket, registered, monkeypatch, tmp_path
):
    """Store failures give UNREADABLE with the store's own message, and a
    verified load leaves nothing behind."""
    bucket = in_bucket(versioned=False)
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(_big_model(tmp_path)), "model")
    mv = mlflow_integrity.register_model(
        f"runs:/{run.info.run_id}/model", f"faults-{uuid.uuid4().hex[:6]}"
    )
    uri = f"models:/{mv.name}/{mv.version}"
    assert mv.tags["artifact_sha"]
    assert bucket in MlflowClient().get_model_version_download_uri(mv.name, mv.version)

    port = int(s3_endpoint.rsplit(":", 1)[1])
    monkeypatch.setenv("MLFLOW_INTEGRITY_S3_TIMEOUT", "1")
    peer: Any
    if fault == "access-denied":
        peer, expect = AccessDenied(), "AccessDenied"
    elif fault == "refused":
        peer = contextlib.nullcontext(f"http://127.0.0.1:{free_port()}")
        expect = "Could not connect"
    elif fault == "timeout":
        peer, expect = Blackhole(), "timeout"
    elif fault == "html":
        # A login page is no empty listing: never MISSING.
        peer, expect = HtmlPage(), "did not answer as S3 does"
    else:
        # Listing answers pass; the large object is cut after 1 MiB.
        peer, expect = CuttingProxy(port, cut_after=1024 * 1024), "Reading"
    with peer as listening:
        url = listening if isinstance(listening, str) else listening.url
        monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", url)
        result = verify(uri)
        assert result.status == "UNREADABLE", result.detail
        assert expect.lower() in result.detail.lower()
        assert "is MLFLOW_S3_ENDPOINT_URL set as it was at registration?" in (
            result.detail
        )
        assert result.diff.modified == ()
        parent = tmp_path / "loads"
        parent.mkdir()
        with pytest.raises(mlflow_integrity.IntegrityError):
            mlflow_integrity.load_model(uri, parent_dir=str(parent))
        assert list(parent.iterdir()) == []


def _big_model(tmp_path: Path) -> Path:
    model = tmp_path / "bigmodel"
    model.mkdir()
    (model / "MLmodel").write_text("flavors: {}\n")
    (model / "weights.bin").write_bytes(os.urandom(4 * 1024 * 1024))
    return model


# --- a tracking server whose artifacts destination is the bucket --------------


@pytest.mark.server
def test_server_with_s3_destination_records_and_checks(
    s3, s3_endpoint, mlflow_server_factory, tmp_path_factory, classifier, monkeypatch
):
    bucket = new_bucket(s3, versioned=True)
    backend = f"sqlite:///{tmp_path_factory.mktemp('s3-server') / 'mlflow.db'}"
    server = mlflow_server_factory(
        backend,
        artifacts_destination=f"s3://{bucket}/artifacts",
        extra_args=["--registry-store-uri", f"integrity+{backend}"],
        env={"MLFLOW_S3_ENDPOINT_URL": s3_endpoint},
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", server.url)
    mlflow.set_tracking_uri(server.url)
    mlflow.set_registry_uri(server.url)
    try:
        mlflow.set_experiment(f"s3-srv-{uuid.uuid4().hex[:8]}")
        name = f"srv-{uuid.uuid4().hex[:8]}"
        with mlflow.start_run():
            mlflow.sklearn.log_model(
                classifier,
                name="model",
                registered_model_name=name,
                pip_requirements=["scikit-learn"],
            )
        client = MlflowClient()
        mv = client.get_model_version(name, "1")
        download = client.get_model_version_download_uri(name, "1")
        assert download.startswith("mlflow-artifacts:")
        assert OBJECTS in mv.tags, "the server records the object versions"
        record = read_record(mv)
        assert record is not None and record.objects is not None
        assert record.objects.bucket == bucket and record.objects.versioned

        # The digest the server recorded is the digest of the objects in S3.
        on_s3 = S3Store(f"s3://{bucket}/{record.objects.prefix}")
        assert on_s3.manifest("blake3").root_digest() == record.digest

        uri = f"models:/{name}/1"
        assert verify(uri).status == "VERIFIED"  # streamed through the proxy
        assert verify(uri, mode="quick").mode == "quick"  # listed in the bucket

        key = next(o.key for o in record.objects.objects if o.path.startswith("model."))
        s3.put_object(Bucket=bucket, Key=key, Body=b"swapped")
        result = verify(uri)
        assert result.status == "MODIFIED" and result.mode == "deep"
        assert result.object_history and result.object_history[0].recoverable
        with pytest.raises(MlflowException, match="MODIFIED"):
            client.set_registered_model_alias(name, "champion", "1")

        # Another S3 endpoint here than the server's: its bucket of the same
        # name may be another bucket, so it is neither listed nor restored.
        monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "http://127.0.0.1:9")
        elsewhere = verify(uri, mode="quick")
        assert elsewhere.status == "MODIFIED" and elsewhere.mode == "deep"
        assert "but this process uses http://127.0.0.1:9" in elsewhere.detail
        with pytest.raises(ConfigurationError, match="MLFLOW_S3_ENDPOINT_URL="):
            restore(name, "1", yes=True)
        monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3_endpoint)

        plan = restore(name, "1", yes=True)
        assert plan.after is not None and plan.after.ok
        client.set_registered_model_alias(name, "champion", "1")
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


def test_edited_object_versions_are_never_followed(s3, in_bucket, registered):
    """On a plain registry the object listing can be edited; a listing that
    points at another bucket, or gives a file another key, is MALFORMED, and
    restore writes nothing anywhere."""
    from mlflow_integrity.errors import MalformedTagError
    from mlflow_integrity.registry import _encode_blob

    _, mv = register_in(in_bucket, registered)
    client = MlflowClient()
    uri = f"models:/{mv.name}/{mv.version}"
    record = read_record(client.get_model_version(mv.name, mv.version))
    assert record is not None and record.objects is not None
    decoy = new_bucket(s3, versioned=True)
    bucket, key = weights_key(s3, mv)
    s3.put_object(Bucket=bucket, Key=key, Body=b"tampered")

    listing = record.objects.to_json()
    elsewhere = {**listing, "bucket": decoy}
    rekeyed = {
        **listing,
        "objects": [[*row[:1], "other/key", *row[2:]] for row in listing["objects"]],
    }
    for edited in (elsewhere, rekeyed):
        for k, v in _encode_blob(OBJECTS, json.dumps(edited).encode()).items():
            client.set_model_version_tag(mv.name, mv.version, k, v)
        result = verify(uri, mode="quick")
        assert result.status == "MALFORMED", result.detail
        with pytest.raises(MalformedTagError):
            restore(mv.name, str(mv.version), yes=True)
        assert s3.list_objects_v2(Bucket=decoy).get("KeyCount", 0) == 0
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"tampered"


def test_restore_leaves_added_objects_when_versioning_is_suspended(
    s3, in_bucket, registered, capsys
):
    """With versioning suspended a delete cannot be undone: restore leaves
    objects added since registration in place, says so, and exits 1.

    (Only added objects here: moto, unlike S3, drops a key's earlier versions
    when it is overwritten under suspended versioning, and refuses to copy a
    version onto its own key then.)"""
    _, mv = register_in(in_bucket, registered)
    bucket, key = weights_key(s3, mv)
    s3.put_bucket_versioning(
        Bucket=bucket, VersioningConfiguration={"Status": "Suspended"}
    )
    added = key.rsplit("/", 1)[0] + "/added.txt"
    s3.put_object(Bucket=bucket, Key=added, Body=b"not registered")

    code, out = cli(capsys, "restore", mv.name, str(mv.version), "--yes")
    assert code == 1, out
    assert "nothing can be restored (EXTRA)" in out
    assert "left in place" in out and added in out
    assert s3.get_object(Bucket=bucket, Key=added)["Body"].read() == b"not registered"


def test_a_pin_is_always_checked_deeply(s3, in_bucket, registered):
    """Quick mode trusts the recorded object listing, which a plain registry
    lets anyone edit; a pinned digest is the deployment's own, so a pinned
    check reads every byte."""
    _, mv = register_in(in_bucket, registered)
    client = MlflowClient()
    uri = f"models:/{mv.name}/{mv.version}"
    record = read_record(client.get_model_version(mv.name, mv.version))
    assert record is not None and record.objects is not None
    bucket, key = weights_key(s3, mv)
    original = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    same_size = bytes(b ^ 0xFF for b in original)
    answer = s3.put_object(Bucket=bucket, Key=key, Body=same_size)

    # Make the listing describe the tampered object, as a forger would.
    from mlflow_integrity.registry import _encode_blob

    listing = record.objects.to_json()
    for row in listing["objects"]:
        if row[1] == key:
            row[2], row[3] = answer["VersionId"], answer["ETag"].strip('"')
    for k, v in _encode_blob(OBJECTS, json.dumps(listing).encode()).items():
        client.set_model_version_tag(mv.name, mv.version, k, v)

    fooled = verify(uri, mode="quick")
    assert fooled.status == "VERIFIED" and fooled.mode == "quick"
    pinned = verify(uri, mode="quick", expected=str(record.digest))
    assert pinned.status == "MODIFIED" and pinned.mode == "deep"
    assert "pinned digest is always checked against every byte" in pinned.detail


def test_configuration_errors_are_not_store_errors(s3, in_bucket, registered, capsys):
    _, mv = register_in(in_bucket, registered)
    uri = f"models:/{mv.name}/{mv.version}"
    os.environ["MLFLOW_INTEGRITY_STORE_WORKERS"] = "zero"
    try:
        with pytest.raises(ConfigurationError, match="STORE_WORKERS"):
            verify(uri)
        with pytest.raises(ConfigurationError, match="STORE_WORKERS"):
            mlflow_integrity.download_verified(uri)
        assert cli(capsys, "verify", uri)[0] == 2
    finally:
        del os.environ["MLFLOW_INTEGRITY_STORE_WORKERS"]


def test_a_file_stored_under_a_files_name_is_extra_not_a_crash(
    s3, in_bucket, registered, tmp_path
):
    """A bucket can hold MLmodel and MLmodel/x; a directory cannot. The copy
    skips writing what cannot be written, and the check reports it."""
    _, mv = register_in(in_bucket, registered)
    uri = f"models:/{mv.name}/{mv.version}"
    source = MlflowClient().get_model_version_download_uri(mv.name, mv.version)
    store = S3Store(source)
    s3.put_object(Bucket=store.bucket, Key=f"{store.prefix}/MLmodel/x", Body=b"x")
    assert verify(uri).status == "EXTRA"
    parent = tmp_path / "loads"
    parent.mkdir()
    with pytest.raises(DigestMismatchError, match="EXTRA"):
        mlflow_integrity.download_verified(uri, parent_dir=str(parent))
    assert list(parent.iterdir()) == []


def test_restore_removes_a_twin_stored_under_another_normalisation(
    s3, in_bucket, integrity_registry, tmp_path
):
    """A file replaced by its NFD-named twin (the same path once normalised)
    is put back under the recorded key and the twin removed."""
    in_bucket(versioned=True)
    model = tmp_path / "model"
    (model / "code").mkdir(parents=True)
    (model / "MLmodel").write_text("flavors: {}\n")
    (model / "code" / "caf\u00e9.py").write_text("print('registered')\n")
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(model), "model")
    mv = mlflow_integrity.register_model(
        f"runs:/{run.info.run_id}/model", f"twin-{uuid.uuid4().hex[:6]}"
    )
    store = S3Store(MlflowClient().get_model_version_download_uri(mv.name, mv.version))
    nfc = f"{store.prefix}/code/caf\u00e9.py"
    nfd = f"{store.prefix}/code/cafe\u0301.py"
    s3.delete_object(Bucket=store.bucket, Key=nfc)
    s3.put_object(Bucket=store.bucket, Key=nfd, Body=b"print('swapped')\n")
    uri = f"models:/{mv.name}/{mv.version}"
    assert verify(uri).status == "MODIFIED"

    plan = restore(mv.name, str(mv.version), yes=True)
    assert plan.remove == (nfd,)
    assert plan.after is not None and plan.after.ok
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=store.bucket)["Contents"]]
    assert nfc in keys and nfd not in keys
