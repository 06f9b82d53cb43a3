"""The audit: every version of a registry checked, one row each."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import mlflow
import pytest

import mlflow_integrity
import mlflow_integrity.auditing as audit_module
from mlflow_integrity.auditing import AuditReport, audit, shard_of
from mlflow_integrity.cli import main
from mlflow_integrity.errors import ConfigurationError
from tests.helpers import (
    documented_keys,
    flip_byte,
    shared_registry,
    stored_dir,
    weights_file,
)

SCRIPT_NAME = '<script>alert("x")'


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def log_run_artifact_model(classifier: Any, tmp_path: Path, extra=None) -> str:
    """A model logged as plain run artifacts (not an MLflow 3 logged model),
    so that `mlflow gc` of its deleted run removes its files."""
    local = tmp_path / f"saved-{len(os.listdir(tmp_path))}"
    mlflow.sklearn.save_model(classifier, str(local), pip_requirements=["scikit-learn"])
    for rel, data in (extra or {}).items():
        (local / rel).write_bytes(data)
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(local), "model")
    return run.info.run_id


def dangle_alias(db_path: Path, name: str, alias: str, version: int) -> None:
    """Add an alias row for a version that does not exist, as a registry
    restored from an older backup holds one."""
    with sqlite3.connect(db_path) as db:
        db.execute(
            "INSERT INTO registered_model_aliases (alias, version, name, workspace) "
            "SELECT ?, ?, name, workspace FROM registered_models WHERE name = ?",
            (alias, version, name),
        )
    db.close()


def garbage_collect(tracking_uri: str) -> str:
    """Run the real `mlflow gc` over the registry's backend store."""
    proc = subprocess.run(
        [sys.executable, "-m", "mlflow", "gc", "--backend-store-uri", tracking_uri],
        env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri},
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout


def log_and_register(classifier: Any, name: str) -> Any:
    """Log the classifier as an MLflow 3 logged model and register it."""
    with mlflow.start_run() as run:
        mlflow.sklearn.log_model(
            classifier, name="model", pip_requirements=["scikit-learn"]
        )
    return mlflow_integrity.register_model(f"runs:/{run.info.run_id}/model", name)


@pytest.fixture(scope="module")
def restored(tmp_path_factory, _integrity_template_db, classifier):
    """A registry as found after a restore from backup: two good versions of
    fraud (champion on 2), an alias fraud@prod left pointing at version 9,
    churn/1 with one byte changed, ranker/1 whose run was deleted and
    garbage-collected, and legacy/1 registered with plain MLflow.

    Built once for the module; tests must not change it."""
    folder = tmp_path_factory.mktemp("restored")
    with shared_registry(folder, _integrity_template_db) as registry:
        client = registry.client
        log_and_register(classifier, "fraud")
        log_and_register(classifier, "fraud")
        client.set_registered_model_alias("fraud", "champion", "2")

        log_and_register(classifier, "churn")
        flip_byte(weights_file(stored_dir(client, "churn", 1)))

        run_id = log_run_artifact_model(classifier, folder)
        mlflow_integrity.register_model(f"runs:/{run_id}/model", "ranker")
        client.delete_run(run_id)
        assert run_id in garbage_collect(registry.tracking_uri)
        assert not stored_dir(client, "ranker", 1).exists()

        with mlflow.start_run() as run:
            mlflow.sklearn.log_model(
                classifier, name="model", pip_requirements=["scikit-learn"]
            )
        mlflow.register_model(f"runs:/{run.info.run_id}/model", "legacy")
        dangle_alias(folder / "mlflow.db", "fraud", "prod", 9)
        yield registry


def statuses(report: AuditReport) -> list[tuple[str, str, str]]:
    return [(r.name, r.version, r.status) for r in report.rows]


def test_audit_tells_a_restored_registry_apart(restored):
    """Fine, tampered, garbage-collected, untagged and a dangling alias each
    get their own row and status, sorted by name and version number."""
    report = audit(client=restored.client)

    assert statuses(report) == [
        ("churn", "1", "MODIFIED"),
        ("fraud", "1", "VERIFIED"),
        ("fraud", "2", "VERIFIED"),
        ("fraud", "9", "MISSING"),
        ("legacy", "1", "UNTAGGED"),
        ("ranker", "1", "MISSING"),
    ]
    rows = {(r.name, r.version): r for r in report.rows}
    churn = rows["churn", "1"]
    weights = weights_file(stored_dir(restored.client, "fraud", 1)).name
    assert [(f.path, f.change) for f in churn.files] == [(weights, "modified")]
    assert churn.origin == "registration" and churn.recorded_at
    assert churn.mode == "deep"
    assert rows["fraud", "2"].aliases == ("champion",)
    dangling = rows["fraud", "9"]
    assert dangling.kind == "dangling_alias"
    assert dangling.detail == "alias prod points to version 9, which does not exist"
    ranker = rows["ranker", "1"]
    assert ranker.detail.startswith("Nothing is stored at its source any more.")
    assert "is gone (deleted, then garbage-collected)" in ranker.detail
    assert rows["legacy", "1"].recorded_at is None
    assert not report.ok
    assert report.counts() == {
        "VERIFIED": 2,
        "MODIFIED": 1,
        "MISSING": 2,
        "UNTAGGED": 1,
    }


def test_registered_model_aliases_keep_a_dangling_alias(restored):
    """What MLflow 3.17 does with an alias row whose version is gone: the
    registered model still lists it, and resolving it fails."""
    assert restored.client.get_registered_model("fraud").aliases == {
        "champion": 2,
        "prod": 9,
    }
    with pytest.raises(mlflow.exceptions.MlflowException, match="not found"):
        restored.client.get_model_version_by_alias("fraud", "prod")


def test_deleting_a_version_deletes_its_aliases(integrity_registry, registered):
    """Through the API no alias dangles: deleting a version removes its aliases."""
    registered("gone")
    registered("gone")
    integrity_registry.client.set_registered_model_alias("gone", "champion", "1")
    integrity_registry.client.delete_model_version("gone", "1")

    report = audit(["gone"], client=integrity_registry.client)

    assert statuses(report) == [("gone", "2", "VERIFIED")]
    assert report.ok


def test_parallel_and_serial_audits_agree(restored):
    """workers=1 and workers=8 give the same rows in the same order."""
    serial = audit(client=restored.client, workers=1)
    parallel = audit(client=restored.client, workers=8)

    def strip(report: AuditReport) -> list[dict[str, Any]]:
        return [{**r.to_dict(), "checked_at": None} for r in report.rows]

    assert strip(serial) == strip(parallel)


def test_names_and_patterns(restored):
    """Names and shell patterns pick models; a name matching nothing is a
    configuration error that says how to find names."""
    assert {r.name for r in audit(["fr*", "legacy"]).rows} == {"fraud", "legacy"}
    with pytest.raises(ConfigurationError, match="No registered model matches 'nope'"):
        audit(["nope"])
    with pytest.raises(ConfigurationError, match="matches 'x-\\*'"):
        audit(["x-*"])


def test_prompts_are_not_audited(integrity_registry, registered):
    """A prompt is a registered model to MLflow, with no artifact: the audit
    of every model leaves it out, and MlflowClient does not find it by name."""
    mlflow.genai.register_prompt(name="greeting", template="Hello {{name}}")
    registered("fraud")

    assert [r.name for r in audit(progress=True).rows] == ["fraud"]
    with pytest.raises(ConfigurationError, match="No registered model matches"):
        audit(["greeting"])


def test_quick_mode_on_s3(
    integrity_registry, s3_endpoint, s3_bucket, classifier, tmp_path
):
    """On a versioned bucket quick mode compares object metadata, and the
    row says which mode ran; an overwritten object is MODIFIED either way."""
    import boto3

    bucket = s3_bucket
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    experiment = integrity_registry.client.create_experiment(
        bucket, artifact_location=f"s3://{bucket}/mlflow"
    )
    mlflow.set_experiment(experiment_id=experiment)
    run_id = log_run_artifact_model(classifier, tmp_path)
    mlflow_integrity.register_model(f"runs:/{run_id}/model", "on-s3")

    (row,) = audit(["on-s3"], mode="quick").rows
    assert (row.status, row.mode) == ("VERIFIED", "quick")

    source = integrity_registry.client.get_model_version_download_uri("on-s3", "1")
    prefix = source[len(f"s3://{bucket}/") :]
    s3.put_object(Bucket=bucket, Key=f"{prefix}/MLmodel", Body=b"flavors: {}\n")

    for mode in ("quick", "deep"):
        (row,) = audit(["on-s3"], mode=mode).rows
        assert (row.status, row.mode) == ("MODIFIED", mode)
        assert [(f.path, f.change) for f in row.files] == [("MLmodel", "modified")]


def test_fail_on_decides_ok(integrity_registry, registered, log_sklearn):
    """By default an untagged version fails the report; with fail_on limited
    to MODIFIED and MISSING it is tolerated."""
    registered("fine")
    mlflow.register_model(log_sklearn().runs_uri, "old")

    report = audit()

    assert not report.ok and [r.status for r in report.failures] == ["UNTAGGED"]
    assert report.with_fail_on(["MODIFIED", "missing"]).ok
    assert audit(fail_on=["MODIFIED"]).ok
    assert audit(fail_on="MODIFIED, missing").ok
    with pytest.raises(ConfigurationError, match="Unknown status BROKEN"):
        audit(fail_on=["BROKEN"])


def test_backfill_turns_untagged_into_verified(integrity_registry, log_sklearn):
    """audit -> UNTAGGED -> backfill -> audit VERIFIED, origin backfill."""
    mlflow.register_model(log_sklearn().runs_uri, "old")
    assert statuses(audit()) == [("old", "1", "UNTAGGED")]

    mlflow_integrity.backfill_version("old", "1")

    (row,) = mlflow_integrity.audit().rows
    assert (row.status, row.origin) == ("VERIFIED", "backfill")


def test_an_unexpected_error_becomes_an_unreadable_row(restored, monkeypatch):
    """One version whose check blows up does not stop the others."""
    real = audit_module.verify_uri

    def flaky(uri: str, **kwargs: Any) -> Any:
        if uri == "models:/fraud/1":
            raise RuntimeError("connection reset by peer")
        return real(uri, **kwargs)

    monkeypatch.setattr(audit_module, "verify_uri", flaky)

    report = audit(["fraud"])

    assert statuses(report) == [
        ("fraud", "1", "UNREADABLE"),
        ("fraud", "2", "VERIFIED"),
        ("fraud", "9", "MISSING"),
    ]
    assert "RuntimeError: connection reset by peer" in report.rows[0].detail


def test_a_deployment_pin_in_the_environment_is_not_applied(
    integrity_registry, registered, monkeypatch
):
    """MLFLOW_INTEGRITY_EXPECTED_DIGEST pins one deployment's version; the
    audit of every version ignores it."""
    mv = registered("fraud")
    registered("fraud")
    monkeypatch.setenv("MLFLOW_INTEGRITY_EXPECTED_DIGEST", mv.tags["artifact_sha"])

    assert audit().ok
    assert not mlflow_integrity.verify("models:/fraud/2").ok


def test_shards_partition_the_versions(restored):
    """Shards 1..3 of 3 are disjoint and together hold every row exactly once."""
    every = [(r.name, r.version, r.kind) for r in audit().rows]
    shards = [[(r.name, r.version, r.kind) for r in audit(shard=(i, 3)).rows]
              for i in (1, 2, 3)]  # fmt: skip

    assert sorted(every) == sorted(k for shard in shards for k in shard)
    for i, shard in enumerate(shards, 1):
        assert all(shard_of(name, version, 3) == i for name, version, _ in shard)


def test_adding_versions_moves_no_other_shard(integrity_registry, registered):
    """A version stays in its shard when others are registered."""
    for _ in range(3):
        registered("fraud")
    before = {r.version: i for i in (1, 2) for r in audit(shard=(i, 2)).rows}

    registered("fraud")
    registered("zeta")

    after = {(r.name, r.version): i for i in (1, 2) for r in audit(shard=(i, 2)).rows}
    assert {v: after["fraud", v] for v in before} == before
    assert len(after) == len(before) + 2


@pytest.mark.parametrize("shard", [(0, 4), (5, 4), (1, 0)])
def test_bad_shards_are_refused(integrity_registry, shard):
    with pytest.raises(ConfigurationError, match="does not exist"):
        audit(shard=shard)


def test_bad_workers_and_mode_are_refused(integrity_registry):
    with pytest.raises(ConfigurationError, match="between 1 and 32"):
        audit(workers=0)
    with pytest.raises(ConfigurationError, match="Unknown check mode"):
        audit(mode="fast")


# --- renderings -----------------------------------------------------------------


def test_json_has_exactly_the_documented_keys(restored):
    """The JSON report, its rows and their files use exactly the keys that
    docs/audit-schema.md lists, and it survives a round trip through json."""
    payload = json.loads(json.dumps(audit().to_dict()))

    assert payload["schema_version"] == audit_module.SCHEMA_VERSION == 1
    assert set(payload) == documented_keys("The report")
    for row in payload["rows"]:
        assert set(row) == documented_keys("A row")
        for entry in row["files"]:
            assert set(entry) == documented_keys("A file")
    assert set(payload["counts"]) <= set(mlflow_integrity.check.STATUSES)
    assert payload["ok"] is False


def test_pandas_frame_has_one_row_per_version(restored):
    frame = audit().to_pandas()

    assert len(frame) == 6
    assert list(frame["status"]) == [r[2] for r in statuses(audit())]
    churn = frame[frame["name"] == "churn"].iloc[0]
    assert churn["files"].startswith("modified: model.")
    assert churn["files_changed"] == 1
    assert frame[frame["version"] == "2"].iloc[0]["aliases"] == "champion"


class _Cells(HTMLParser):
    """Collects the tags and the status cells of an HTML table."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.status: list[tuple[str, str]] = []
        self.texts: list[str] = []
        self._in_status: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        classes = dict(attrs).get("class") or ""
        if tag == "td" and "mi-status" in classes.split():
            self._in_status = classes

    def handle_data(self, data: str) -> None:
        self.texts.append(data)
        if self._in_status is not None:
            self.status.append((self._in_status, data))
            self._in_status = None


def test_notebook_html_marks_statuses_and_escapes(
    integrity_registry, classifier, tmp_path
):
    """_repr_html_ gives each status cell a class and a colour, and escapes a
    model name and a file name that hold markup."""
    client = integrity_registry.client
    evil_file = "<img src=x onerror=alert(1)>.txt"
    run_id = log_run_artifact_model(classifier, tmp_path, {evil_file: b"notes"})
    mlflow_integrity.register_model(f"runs:/{run_id}/model", SCRIPT_NAME)
    mlflow_integrity.register_model(f"runs:/{run_id}/model", "plain")
    (stored_dir(client, SCRIPT_NAME, 1) / evil_file).write_bytes(b"changed")

    page = audit()._repr_html_()

    parser = _Cells()
    parser.feed(page)
    assert "script" not in parser.tags and "img" not in parser.tags
    assert SCRIPT_NAME in parser.texts
    assert any(evil_file in t for t in parser.texts)
    assert parser.status == [
        ("mi-status mi-status-modified", "MODIFIED"),
        ("mi-status mi-status-modified", "MODIFIED"),
    ]
    assert 'style="color:#cf222e"' in page
    assert ".mi-audit .mi-status-verified{color:#1a7f37" in page


def test_junit_parses_with_a_suite_per_model(restored):
    """One testsuite per model, one testcase per row, a failure with the
    rendered explanation for each failing row; tolerated ones are skipped."""
    report = audit()
    root = ET.fromstring(report.to_junit())

    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert sorted(suites) == ["churn", "fraud", "legacy", "ranker"]
    assert root.get("tests") == "6" and root.get("failures") == "4"
    fraud = [c.get("name") for c in suites["fraud"].iter("testcase")]
    assert fraud == ["version 1", "version 2", "alias prod"]
    failure = suites["churn"].find("testcase/failure")
    assert failure is not None and failure.get("type") == "MODIFIED"
    assert "mlflow-integrity verify models:/churn/1" in (failure.text or "")

    tolerant = ET.fromstring(report.with_fail_on(["MODIFIED", "MISSING"]).to_junit())
    legacy = next(s for s in tolerant.iter("testsuite") if s.get("name") == "legacy")
    skipped = legacy.find("testcase/skipped")
    assert skipped is not None and "backfill --name legacy" in (skipped.text or "")
    assert tolerant.get("failures") == "3"


def test_terminal_table_lists_every_row(restored):
    """The rich table names each status and detail; the last line sums up."""
    assert "MODIFIED" in str(audit())
    text = audit().render(width=300)

    assert "MODIFIED" in text and "UNTAGGED" in text
    assert "alias prod points to version 9, which does not exist" in text
    assert text.splitlines()[-1] == (
        "6 rows: 2 VERIFIED, 1 MODIFIED, 2 MISSING, 1 UNTAGGED (4 failing)"
    )


# --- the command ----------------------------------------------------------------


def test_cli_audit_exits_1_and_writes_json(capsys, restored, tmp_path):
    code, out, _ = run(capsys, "audit", "--workers", "2")
    assert code == 1
    assert "6 rows: 2 VERIFIED" in out

    target = tmp_path / "audit.json"
    code, out, _ = run(capsys, "audit", "--format", "json", "--output", str(target))
    assert code == 1
    payload = json.loads(target.read_text())
    assert [r["status"] for r in payload["rows"]][:2] == ["MODIFIED", "VERIFIED"]
    assert "6 rows" in out and str(target) in out

    code, out, _ = run(capsys, "audit", "--name", "fraud", "--format", "junit")
    assert code == 1 and ET.fromstring(out).get("tests") == "3"


def test_cli_fail_on_and_exit_zero(capsys, integrity_registry, registered, log_sklearn):
    """UNTAGGED fails by default, passes with --fail-on MODIFIED,MISSING or
    --exit-zero; a fine registry exits 0."""
    registered("fine")
    assert run(capsys, "audit")[0] == 0
    mlflow.register_model(log_sklearn().runs_uri, "old")

    assert run(capsys, "audit")[0] == 1
    assert run(capsys, "audit", "--fail-on", "MODIFIED,MISSING")[0] == 0
    assert run(capsys, "audit", "--exit-zero")[0] == 0
    assert run(capsys, "audit", "--name", "fine", "--mode", "quick")[0] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shard", "0/4"], "Shard 0/4 does not exist"),
        (["--shard", "5/4"], "Shard 5/4 does not exist"),
        (["--shard", "two"], "is not I/N"),
        (["--fail-on", "MODIFIED,BROKEN"], "Unknown status BROKEN"),
        (["--fail-on", "MODIFIED", "--exit-zero"], "not both"),
        (["--workers", "0"], "0 is not in the range 1<=x<=32"),
        (["--name", "nope"], "No registered model matches 'nope'"),
    ],
)
def test_cli_bad_options_exit_2(capsys, integrity_registry, args, message):
    code, _, err = run(capsys, "audit", *args)

    assert code == 2
    assert message in err


def test_cli_shards_cover_every_row_once(capsys, restored):
    seen: list[tuple[str, str]] = []
    for i in (1, 2):
        code, out, _ = run(capsys, "audit", "--shard", f"{i}/2", "--format", "json")
        assert code in (0, 1)
        payload = json.loads(out)
        assert payload["shard"] == {"index": i, "count": 2}
        seen.extend((r["name"], r["version"]) for r in payload["rows"])

    assert sorted(seen) == sorted((r.name, r.version) for r in audit().rows)


def test_a_model_whose_versions_cannot_be_listed(
    integrity_registry, registered, log_sklearn
):
    """A name with a quote breaks MLflow's search filter: that model is one
    UNREADABLE row saying so, and the other models are audited."""
    registered("fraud")
    mlflow.register_model(log_sklearn().runs_uri, "o'brien")

    report = audit()

    assert statuses(report) == [
        ("fraud", "1", "VERIFIED"),
        ("o'brien", "", "UNREADABLE"),
    ]
    row = report.rows[1]
    assert row.kind == "model"
    assert row.detail.startswith("the versions of this model could not be listed: ")
    root = ET.fromstring(report.to_junit())
    assert [c.get("name") for c in root.iter("testcase")] == ["version 1", "versions"]


def test_bad_store_settings_are_refused_once(monkeypatch):
    """A bad setting every check would trip over is a configuration error of
    the audit, not an UNREADABLE row per version."""
    monkeypatch.setenv("MLFLOW_INTEGRITY_STORE_WORKERS", "zero")
    with pytest.raises(ConfigurationError, match="STORE_WORKERS"):
        audit()
    monkeypatch.delenv("MLFLOW_INTEGRITY_STORE_WORKERS")
    monkeypatch.setenv("MLFLOW_INTEGRITY_S3_TIMEOUT", "-1")
    with pytest.raises(ConfigurationError, match="S3_TIMEOUT"):
        audit()
