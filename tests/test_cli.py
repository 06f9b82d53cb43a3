"""The CLI: exit 0 verified, 1 integrity failure, 2 usage or configuration."""

from __future__ import annotations

import json
import subprocess
import sys

import mlflow
import pytest

from mlflow_integrity import registry
from mlflow_integrity.cli import main
from mlflow_integrity.digest import hash_tree
from tests.helpers import flip_byte, stored_dir, weights_file


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def version(registered, integrity_registry):
    mv = registered("iris")
    return mv, stored_dir(integrity_registry.client, mv.name, mv.version)


def test_digest_of_a_directory(capsys, make_tree):
    """`digest DIR` prints the root digest; --manifest adds the canonical lines."""
    tree = make_tree({"MLmodel": b"flavors: {}\n", "data/w.bin": b"\x00" * 10})

    code, out, _ = run(capsys, "digest", str(tree), "--manifest")

    assert code == 0
    lines = out.splitlines()
    assert lines[0] == str(hash_tree(str(tree)).root_digest())
    assert lines[1] == "mlflow-integrity-manifest/1 blake3"
    assert lines[2].endswith(" 12 MLmodel")
    assert lines[3].endswith(" 10 data/w.bin")


def test_digest_json_and_sha256(capsys, make_tree):
    """--format json gives digest, file count and bytes; --algorithm sha256."""
    tree = make_tree({"a.txt": b"abc"})

    code, out, _ = run(
        capsys, "digest", str(tree), "--algorithm", "sha256", "--format", "json"
    )

    payload = json.loads(out)
    assert code == 0
    assert payload["digest"] == str(hash_tree(str(tree), "sha256").root_digest())
    assert (payload["files"], payload["bytes"]) == (1, 3)


def test_digest_of_a_registered_version_equals_its_tag(capsys, version):
    """`digest models:/name/1` hashes the stored artifact: equal to the tag."""
    mv, _ = version

    code, out, _ = run(capsys, "digest", "models:/iris/1")

    assert code == 0
    assert out.strip() == mv.tags[registry.ARTIFACT_SHA]


def test_register_then_verify(capsys, integrity_registry, log_sklearn):
    """`register` records the digest; `verify` exits 0 with VERIFIED."""
    logged = log_sklearn()

    code, out, _ = run(
        capsys, "register", logged.runs_uri, "cli-iris", "--format", "json"
    )
    payload = json.loads(out)
    assert code == 0
    assert payload["model_uri"] == "models:/cli-iris/1"
    assert payload["artifact_sha"].startswith("blake3:")

    code, out, _ = run(capsys, "verify", "models:/cli-iris/1")
    assert code == 0
    assert "(VERIFIED)" in out


def test_verify_tampered_exits_1_with_the_file_named(capsys, version):
    """A flipped byte: exit 1, text names the file; json has the stable keys."""
    _, stored = version
    weights = weights_file(stored)
    flip_byte(weights)

    code, out, _ = run(capsys, "verify", "models:/iris/1")
    assert code == 1
    assert "(MODIFIED)" in out
    assert f"modified    {weights.name}" in out

    code, out, _ = run(capsys, "verify", "models:/iris/1", "--format", "json")
    payload = json.loads(out)
    assert code == 1
    assert payload["status"] == "MODIFIED"
    assert set(payload) == {
        "model_uri", "name", "version", "source", "status", "expected", "actual",
        "pinned", "recorded_at", "origin", "checked_at", "mode", "object_versions",
        "detail", "files",
    }  # fmt: skip
    assert payload["files"][0]["path"] == weights.name


def test_verify_untagged_exits_1(capsys, integrity_registry, log_sklearn):
    """An untagged version is an integrity failure naming the backfill command."""
    mlflow.register_model(log_sklearn().runs_uri, "plain")

    code, out, _ = run(capsys, "verify", "models:/plain/1")

    assert code == 1
    assert "(UNTAGGED)" in out
    assert "mlflow-integrity backfill --name plain --version 1" in out


def test_configuration_errors_exit_2(capsys, version):
    """A bad pin, an unknown model, a malformed URI and a missing argument exit 2."""
    assert run(capsys, "verify", "models:/iris/1", "--expect", "md5:abc")[0] == 2
    code, _, err = run(capsys, "verify", "models:/no-such-model/1")
    assert code == 2 and "no-such-model" in err
    code, _, err = run(capsys, "verify", "runs:/abc/model")
    assert code == 2 and "not a registry URI" in err
    assert run(capsys, "verify")[0] == 2
    assert run(capsys, "digest", "no-such-dir")[0] == 2


def test_wrong_pin_exits_1(capsys, version):
    """A well-formed pin that the record does not equal is an integrity failure."""
    code, out, _ = run(
        capsys, "verify", "models:/iris/1", "--expect", "blake3:" + "cd" * 32
    )

    assert code == 1
    assert "pins blake3:" + "cd" * 32 in out


def test_backfill(capsys, integrity_registry, log_sklearn):
    """`backfill --name` records digests on untagged versions, once."""
    mlflow.register_model(log_sklearn().runs_uri, "old-model")
    mlflow.register_model(log_sklearn().runs_uri, "old-model")

    code, out, _ = run(capsys, "backfill", "--name", "old-*", "--dry-run")
    assert code == 0 and out.count("would record") == 2
    assert run(capsys, "verify", "models:/old-model/1")[0] == 1

    code, out, _ = run(capsys, "backfill", "--name", "old-model")
    assert code == 0 and out.count("  recorded  blake3:") == 2
    code, out, _ = run(capsys, "backfill", "--name", "old-model", "--version", "1")
    assert code == 0 and "already recorded" in out
    assert run(capsys, "verify", "models:/old-model/2")[0] == 0


def test_console_script_exit_codes(tmp_path):
    """The installed `mlflow-integrity` script returns main()'s exit code."""
    proc = subprocess.run(
        [sys.executable, "-m", "mlflow_integrity.cli", "digest", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "neither a directory nor a URI" in proc.stderr


def test_gate_check_and_promote(capsys, version, tmp_path, monkeypatch):
    """gate-check exits 0 then promote moves the alias; a tampered version
    exits 1 on both and the alias stays."""
    _, stored = version

    assert run(capsys, "gate-check", "iris", "1", "--alias", "champion")[0] == 0
    code, out, _ = run(capsys, "promote", "iris", "1", "--alias", "champion")
    assert code == 0 and "promoted to alias 'champion'" in out

    flip_byte(weights_file(stored))
    code, out, _ = run(
        capsys, "gate-check", "iris", "1", "--alias", "next", "--format", "json"
    )
    assert code == 1 and json.loads(out)["allowed"] is False
    code, out, _ = run(capsys, "promote", "iris", "1", "--stage", "Production")
    assert code == 1 and "refused" in out
    assert mlflow.MlflowClient().get_model_version("iris", "1").current_stage == "None"


def test_promote_needs_exactly_one_target(capsys, version):
    """promote with neither or both of --alias/--stage is a usage error."""
    assert run(capsys, "promote", "iris", "1")[0] == 2
    assert run(capsys, "promote", "iris", "1", "--alias", "a", "--stage", "S")[0] == 2


def test_attest_with_a_local_copy(capsys, version, tmp_path, monkeypatch):
    """attest hashes the directory the runtime loaded: a true copy attests
    and exits 0; a different copy is recorded but exits 1; with a policy,
    only the true attestation lets the promotion through."""
    import shutil

    from mlflow_integrity import gate

    _, stored = version
    copy = tmp_path / "served"
    shutil.copytree(stored, copy)
    policy = tmp_path / "policy.toml"
    policy.write_text(
        '[[gate.require_attestation]]\nalias = "champion"\ndeployment = "canary"\n'
    )
    monkeypatch.setenv(gate.POLICY_ENV, str(policy))

    assert run(capsys, "promote", "iris", "1", "--alias", "champion")[0] == 1
    assert (
        run(
            capsys,
            "attest",
            "models:/iris/1",
            "--deployment",
            "canary",
            "--path",
            str(copy),
        )[0]
        == 0
    )
    assert run(capsys, "promote", "iris", "1", "--alias", "champion")[0] == 0

    flip_byte(weights_file(copy))
    code, out, _ = run(
        capsys,
        "attest",
        "models:/iris/1",
        "--deployment",
        "canary",
        "--path",
        str(copy),
    )
    assert code == 1 and "not the version's artifact_sha" in out
    assert run(capsys, "gate-check", "iris", "1", "--alias", "champion")[0] == 1
