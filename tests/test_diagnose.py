"""diagnose: the on-call checklist, step by step, with a verdict each."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

import mlflow
import pytest

import mlflow_integrity
from mlflow_integrity import gate, materialize
from mlflow_integrity.cli import main
from mlflow_integrity.diagnosis import Diagnosis, diagnose
from mlflow_integrity.digest import Digest
from mlflow_integrity.errors import ConfigurationError
from mlflow_integrity.register import write_record
from mlflow_integrity.registry import ARTIFACT_SHA, Record, read_record
from tests.helpers import documented_keys, flip_byte, stored_dir, weights_file

KEYS = [
    "resolve", "record", "stored", "local_copy", "file_times", "attestations",
    "recreated",
]  # fmt: skip


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def verdicts(diagnosis: Diagnosis) -> dict[str, str]:
    return {s.key: s.verdict for s in diagnosis.steps}


def set_times(root: Path, seconds: float) -> None:
    """Give every file under root the same modification time."""
    for folder, _, files in os.walk(root):
        for name in files:
            os.utime(os.path.join(folder, name), (seconds, seconds))


@pytest.fixture
def champion(integrity_registry, registered):
    """iris versions 1 and 2, champion on 1."""
    registered("iris")
    registered("iris")
    integrity_registry.client.set_registered_model_alias("iris", "champion", "1")
    return integrity_registry.client


def test_a_good_version(champion, capsys):
    """Every step is OK, INFO or SKIPPED; the text numbers the steps."""
    diagnosis = diagnose("models:/iris@champion")

    assert [s.key for s in diagnosis.steps] == KEYS
    assert [s.number for s in diagnosis.steps] == list(range(1, 8))
    assert verdicts(diagnosis) == {
        "resolve": "OK",
        "record": "OK",
        "stored": "OK",
        "local_copy": "SKIPPED",
        "file_times": "SKIPPED",
        "attestations": "INFO",
        "recreated": "OK",
    }
    assert diagnosis.ok and diagnosis.version == "1"
    assert diagnosis.step("resolve").summary == (
        "models:/iris@champion -> version 1 (alias champion)"
    )
    record = diagnosis.step("record").facts
    assert record["origin"] == "registration"
    assert (
        record["artifact_sha"]
        == champion.get_model_version("iris", "1").tags[ARTIFACT_SHA]
    )

    code, out, _ = run(capsys, "diagnose", "models:/iris@champion")
    assert code == 0
    assert (
        "1. Which version the URI names now\n   OK       models:/iris@champion" in out
    )
    assert "3. The stored artifact now\n   OK       the stored bytes hash" in out
    assert out.rstrip().endswith("No step found a problem.")


def test_a_tampered_version(champion, capsys):
    """A changed byte in the store: step 3 is a PROBLEM naming the file; the
    command exits 1 and its JSON has the documented keys."""
    weights = weights_file(stored_dir(champion, "iris", 1))
    flip_byte(weights)

    diagnosis = diagnose("models:/iris@champion")

    stored = diagnosis.step("stored")
    assert (stored.verdict, stored.status) == ("PROBLEM", "MODIFIED")
    assert stored.facts["files"] == [{"path": weights.name, "change": "modified"}]
    assert weights.name in stored.summary
    assert [s.number for s in diagnosis.problems] == [3]

    code, out, _ = run(capsys, "diagnose", "models:/iris@champion", "--format", "json")
    payload = json.loads(out)
    assert code == 1
    assert payload["problems"] == [3] and payload["ok"] is False
    assert set(payload) == documented_keys("The diagnosis")
    facts = documented_keys("Facts per step")
    for step in payload["steps"]:
        assert set(step) == documented_keys("A step")
        assert set(step["facts"]) <= facts, step["key"]


def test_a_stale_local_copy(champion, tmp_path, capsys):
    """pull the champion (v1), move the alias to v2: the copy is STALE and
    the step names the version it holds."""
    dest = tmp_path / "deploy"
    materialize.pull("models:/iris@champion", str(dest))
    champion.set_registered_model_alias("iris", "champion", "2")

    diagnosis = diagnose("models:/iris@champion", path=str(dest))

    local = diagnosis.step("local_copy")
    assert (local.verdict, local.status) == ("PROBLEM", "STALE")
    assert local.facts["matches_version"] == "1"
    assert local.facts["pulled"]["model_uri"] == "models:/iris/1"
    assert local.summary == (
        "the local copy holds version 1, but models:/iris@champion names "
        "version 2 now (STALE)"
    )
    assert diagnosis.step("file_times").verdict == "OK"
    assert [s.number for s in diagnosis.problems] == [4]

    code, out, _ = run(capsys, "diagnose", "models:/iris@champion", "--path", str(dest))
    assert code == 1 and "(STALE)" in out and "1 step found a problem: 4." in out


def test_a_pulled_copy_that_verifies(champion, tmp_path):
    """Right after pull the copy holds the version's bytes, and no file is
    newer than the pull."""
    dest = tmp_path / "deploy"
    materialize.pull("models:/iris@champion", str(dest))

    diagnosis = diagnose("models:/iris@champion", path=str(dest))

    assert diagnosis.ok
    assert diagnosis.step("local_copy").status == "VERIFIED"
    assert diagnosis.step("file_times").verdict == "OK"


def test_a_plain_mlflow_download(champion, tmp_path):
    """A copy made by MLflow's own download from a local store holds the
    recorded bytes and keeps the files' times; the registered_model_meta file
    MLflow writes into it (new, and not covered) is not taken for a change."""
    copy = Path(
        mlflow.artifacts.download_artifacts(
            "models:/iris/1", dst_path=str(tmp_path / "download")
        )
    )
    assert (copy / "registered_model_meta").is_file()

    diagnosis = diagnose("models:/iris/1", path=str(copy))

    assert diagnosis.step("local_copy").status == "VERIFIED"
    times = diagnosis.step("file_times")
    assert (times.verdict, times.facts["newer"]) == ("OK", [])
    assert diagnosis.ok


def test_an_empty_pull_destination_is_refused(champion, tmp_path):
    (tmp_path / "deploy" / ".staging").mkdir(parents=True)

    with pytest.raises(ConfigurationError, match="without a current copy"):
        diagnose("models:/iris/1", path=str(tmp_path / "deploy"))


def test_local_files_modified_after_the_version_was_created(champion, tmp_path):
    """A copy that keeps file times, one file changed later: step 4 names the
    file that differs and step 5 names the one file newer than the version."""
    mv = champion.get_model_version("iris", "1")
    created = int(mv.creation_timestamp) / 1000
    copy = tmp_path / "served"
    shutil.copytree(stored_dir(champion, "iris", 1), copy)
    set_times(copy, created - 60)
    weights = weights_file(copy)
    flip_byte(weights)
    os.utime(weights, (created + 3600, created + 3600))

    diagnosis = diagnose("models:/iris/1", path=str(copy))

    local = diagnosis.step("local_copy")
    assert (local.verdict, local.status) == ("PROBLEM", "MODIFIED")
    assert local.facts["files"] == [{"path": weights.name, "change": "modified"}]
    times = diagnosis.step("file_times")
    assert times.verdict == "PROBLEM"
    assert times.facts["newer"] == [weights.name]
    assert times.summary.startswith("1 file modified after version 1 was created")


def test_a_pulled_copy_changed_after_the_pull(champion, tmp_path):
    """A file of DEST/current changed after pull: the copy matches no version,
    the step says the copy changed after pull verified it."""
    dest = tmp_path / "deploy"
    copy = materialize.pull("models:/iris@champion", str(dest))
    weights = weights_file(Path(copy.path))
    flip_byte(weights)
    later = datetime.fromisoformat(copy.pulled_at).timestamp() + 3600
    os.utime(weights, (later, later))

    diagnosis = diagnose("models:/iris@champion", path=str(dest))

    local = diagnosis.step("local_copy")
    assert local.verdict == "PROBLEM"
    assert any("changed after `pull` verified it" in d for d in local.details)
    assert diagnosis.step("file_times").facts["newer"] == [weights.name]


def test_every_version_in_a_stage_is_named(champion):
    """Two versions in Production: step 1 names both (INFO) and resolves to
    the highest, as MLflow does."""
    champion.transition_model_version_stage("iris", "1", "Production")
    champion.transition_model_version_stage("iris", "2", "Production")

    diagnosis = diagnose("models:/iris/Production")

    resolve = diagnosis.step("resolve")
    assert (resolve.verdict, diagnosis.version) == ("INFO", "2")
    assert resolve.facts["in_stage"] == ["1", "2"]
    assert diagnosis.ok


def test_a_dangling_alias(champion, integrity_registry):
    """An alias left pointing at a version that does not exist is a problem
    of step 1, and the other steps are skipped."""
    db = integrity_registry.tracking_uri[len("sqlite:///") :]
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO registered_model_aliases (alias, version, name, workspace) "
            "SELECT 'prod', 7, name, workspace FROM registered_models"
        )
    conn.close()

    diagnosis = diagnose("models:/iris@prod")

    resolve = diagnosis.step("resolve")
    assert (resolve.verdict, resolve.status) == ("PROBLEM", "MISSING")
    assert resolve.summary == "alias prod points to version 7, which does not exist"
    assert set(verdicts(diagnosis).values()) == {"PROBLEM", "SKIPPED"}
    assert diagnosis.version is None


def test_attestations_name_the_bytes_each_deployment_ran(champion):
    """canary attested this version's digest (OK), shadow attested version
    2's digest on version 1 (PROBLEM naming version 2)."""
    one = Digest.parse(champion.get_model_version("iris", "1").tags[ARTIFACT_SHA])
    two = Digest.parse(champion.get_model_version("iris", "2").tags[ARTIFACT_SHA])
    gate.attest("iris", "1", "canary", one)
    assert verdicts(diagnose("models:/iris/1"))["attestations"] == "OK"

    gate.attest("iris", "1", "shadow", two)
    step = diagnose("models:/iris/1").step("attestations")

    assert step.verdict == "PROBLEM"
    assert step.facts["deployments"]["canary"]["matches"] is True
    assert step.facts["deployments"]["shadow"]["matches"] is False
    assert any("shadow:" in d and "(version 2's digest)" in d for d in step.details)


def test_a_model_deleted_and_created_again(integrity_registry, registered, tmp_path):
    """pull iris/1, delete the registered model, register new bytes as iris/1
    again: the copy matches nothing, and step 7 says the model was created
    after the copy was pulled."""
    registered("iris")
    dest = tmp_path / "deploy"
    materialize.pull("models:/iris/1", str(dest))
    integrity_registry.client.delete_registered_model("iris")
    again = registered("iris")
    assert str(again.version) == "1"

    diagnosis = diagnose("models:/iris/1", path=str(dest))

    assert diagnosis.step("local_copy").verdict == "PROBLEM"
    recreated = diagnosis.step("recreated")
    assert recreated.verdict == "PROBLEM"
    (evidence,) = recreated.facts["evidence"]
    assert "before the registered model iris was created" in evidence


def test_a_record_older_than_its_version(integrity_registry, log_sklearn):
    """Tags carried over from an earlier version with the same number (as a
    restore can leave them): recorded at registration long before the
    version was created."""
    client = integrity_registry.client
    mlflow.register_model(log_sklearn().runs_uri, "restored")
    mlflow_integrity.backfill_version("restored", "1")
    record = read_record(client.get_model_version("restored", "1"))
    assert record is not None
    for key in [k for k in client.get_model_version("restored", "1").tags]:
        client.delete_model_version_tag("restored", "1", key)
    old = Record(
        record.digest,
        record.manifest,
        record.source,
        "2020-01-01T00:00:00Z",
        record.recorded_by,
        "registration",
    )
    write_record(client, "restored", "1", old)

    step = diagnose("models:/restored/1").step("recreated")

    assert step.verdict == "PROBLEM"
    assert "recorded at registration on 2020-01-01T00:00:00Z" in step.details[0]


def test_an_untagged_version(integrity_registry, log_sklearn):
    """No record: step 2 names the backfill command, step 3 is skipped."""
    mlflow.register_model(log_sklearn().runs_uri, "plain")

    diagnosis = diagnose("models:/plain/1")

    record = diagnosis.step("record")
    assert (record.verdict, record.status) == ("PROBLEM", "UNTAGGED")
    assert "mlflow-integrity backfill --name plain --version 1" in record.details[1]
    assert diagnosis.step("stored").verdict == "SKIPPED"


def test_configuration_errors(champion, capsys, tmp_path):
    """A malformed URI, an unknown model or a missing --path exit 2."""
    with pytest.raises(ConfigurationError):
        diagnose("models:/nope/1")
    with pytest.raises(ConfigurationError, match="not a directory"):
        diagnose("models:/iris/1", path=str(tmp_path / "missing"))

    assert run(capsys, "diagnose", "runs:/abc/model")[0] == 2
    assert run(capsys, "diagnose", "models:/nope@champion")[0] == 2
    code, _, err = run(
        capsys, "diagnose", "models:/iris/1", "--path", str(tmp_path / "x")
    )
    assert code == 2 and "does not exist" in err


def test_callable_from_the_package(champion: Any):
    assert mlflow_integrity.diagnose("models:/iris/2").ok
