"""Atomic local deploys: pull, current, rollback, and what a failure leaves."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import mlflow
import pytest

import mlflow_integrity
from mlflow_integrity import materialize
from mlflow_integrity.cli import main
from mlflow_integrity.errors import DigestMismatchError
from tests.helpers import flip_byte, stored_dir, weights_file


def model_dirs(dest):
    """Entries of DEST that a server could take for a model."""
    return sorted(
        e for e in os.listdir(dest) if not e.startswith(".") and not e.endswith(".json")
    )


@pytest.fixture
def two_versions(registered, integrity_registry):
    first, second = registered("iris"), registered("iris")
    return first, second


def test_pull_switches_current_and_rollback_returns(two_versions, tmp_path):
    """pull v1 then v2: current follows; rollback goes back to v1."""
    _, second = two_versions
    dest = tmp_path / "deploy"

    one = materialize.pull("models:/iris/1", str(dest))
    two = materialize.pull("models:/iris/2", str(dest))

    assert os.readlink(dest / "current") == two.name
    assert str(two.digest) == second.tags["artifact_sha"]
    assert mlflow.sklearn.load_model(str(dest / "current")) is not None
    back = materialize.rollback(str(dest))
    assert back.name == one.name == os.readlink(dest / "current")


def test_failed_pull_keeps_the_last_good_copy(
    two_versions, integrity_registry, tmp_path
):
    """A tampered version's pull fails; current stays, nothing half-written."""
    dest = tmp_path / "deploy"
    good = materialize.pull("models:/iris/1", str(dest))
    flip_byte(weights_file(stored_dir(integrity_registry.client, "iris", "2")))

    with pytest.raises(DigestMismatchError):
        materialize.pull("models:/iris/2", str(dest))

    assert os.readlink(dest / "current") == good.name
    assert model_dirs(dest) == sorted([good.name, "current"])
    assert os.listdir(dest / ".staging") == []


def test_keep_prunes_old_copies(registered, tmp_path):
    """--keep 2 keeps the current copy and one other."""
    for _ in range(3):
        registered("iris")
    dest = tmp_path / "deploy"
    for version in ("1", "2", "3"):
        materialize.pull(f"models:/iris/{version}", str(dest), keep=2)

    assert len(materialize.deployed(str(dest))) == 2


def test_pin_refuses_other_content(two_versions, tmp_path):
    """pull --expect with version 1's digest refuses version 2."""
    first, _ = two_versions
    dest = tmp_path / "deploy"

    with pytest.raises(DigestMismatchError):
        materialize.pull(
            "models:/iris/2", str(dest), expected=first.tags["artifact_sha"]
        )
    assert not (dest / "current").exists()


def test_cli_pull_and_rollback_exit_codes(
    two_versions, integrity_registry, tmp_path, capsys
):
    """The CLI: 0 on a verified pull and a rollback, 1 on a tampered pull, 2 when
    there is nothing to roll back to."""
    dest = str(tmp_path / "deploy")

    assert main(["pull", "models:/iris/1", dest]) == 0
    assert main(["rollback", dest]) == 2
    flip_byte(weights_file(stored_dir(integrity_registry.client, "iris", "2")))
    assert main(["pull", "models:/iris/2", dest]) == 1
    assert "current" in capsys.readouterr().out


KILLED_PULL = """
import sys, mlflow_integrity.materialize as m
m.pull(sys.argv[1], sys.argv[2])
"""


def test_sigkill_mid_download_leaves_previous_copy(
    registered, integrity_registry, tmp_path
):
    """A pull killed with SIGKILL while copying a large model leaves current on
    the previous copy and no model-shaped directory outside .staging; the
    next pull clears the leftovers."""
    registered("iris")
    big = registered("iris")
    store = stored_dir(integrity_registry.client, "iris", big.version)
    dest = tmp_path / "deploy"
    good = materialize.pull("models:/iris/1", str(dest))
    # Make version 2 large enough that the copy is still running when killed;
    # registered afresh so that its record covers the large file.
    with open(store / "weights.bin", "wb") as f:
        f.truncate(1024 * 1024 * 1024)
    third = mlflow_integrity.register_model(str(store), "iris-big")

    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            KILLED_PULL,
            f"models:/iris-big/{third.version}",
            str(dest),
        ],
        env={**os.environ},
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        staged = [
            d for d, _, files in os.walk(dest / ".staging") if "weights.bin" in files
        ]
        if staged:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    assert os.readlink(dest / "current") == good.name
    assert model_dirs(dest) == sorted([good.name, "current"])

    # The next pull clears the killed one's leftovers and succeeds.
    assert os.listdir(dest / ".staging")
    materialize.pull(f"models:/iris-big/{third.version}", str(dest))
    assert os.listdir(dest / ".staging") == []


def test_watch_follows_the_alias_and_skips_bad_targets(
    registered, integrity_registry, tmp_path
):
    """pull --watch switches current when the alias moves to a verified
    version, and stays when it moves to a tampered one."""
    from mlflow_integrity.digest import Digest
    from tests.helpers import spawn, stop

    versions = [registered("iris") for _ in range(3)]
    names = [
        materialize.copy_name(Digest.parse(v.tags["artifact_sha"])) for v in versions
    ]
    client = integrity_registry.client
    client.set_registered_model_alias("iris", "champion", "1")
    dest = tmp_path / "deploy"

    def current_becomes(name, timeout=60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (
                os.path.islink(dest / "current")
                and os.readlink(dest / "current") == name
            ):
                return True
            time.sleep(0.2)
        return False

    args = ["mlflow_integrity.cli", "pull", "models:/iris@champion", str(dest),
            "--watch", "--interval", "1"]  # fmt: skip
    proc = spawn(args, integrity_registry.tracking_uri, tmp_path / "watch.log")
    try:
        assert current_becomes(names[0]), (tmp_path / "watch.log").read_text()
        client.set_registered_model_alias("iris", "champion", "2")
        assert current_becomes(names[1])

        flip_byte(weights_file(stored_dir(client, "iris", "3")))
        client.set_registered_model_alias("iris", "champion", "3")
        time.sleep(4)
        assert os.readlink(dest / "current") == names[1]
        assert "not switching" in (tmp_path / "watch.log").read_text()
    finally:
        stop(proc)


def test_watch_interval_is_bounded(registered, tmp_path):
    """An interval outside 1..3600 s is a configuration error."""
    from mlflow_integrity.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="between"):
        materialize.watch("models:/iris@champion", str(tmp_path), interval=0.1)
