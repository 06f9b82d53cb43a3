"""The promotion gate: policy, attestations, and mlflow_integrity.promote."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import mlflow
import pytest

import mlflow_integrity
from mlflow_integrity import gate, registry
from mlflow_integrity.digest import Digest
from mlflow_integrity.errors import ConfigurationError, PromotionRefusedError
from tests.helpers import flip_byte, stored_dir, weights_file

CANARY_POLICY = """
[gate]
[[gate.require_attestation]]
alias = "champion"
deployment = "canary"
max_age = "24h"

[[gate.require_attestation]]
stage = "Production"
deployment = "canary"
"""


@pytest.fixture
def version(registered, integrity_registry):
    mv = registered("iris")
    return mv, stored_dir(integrity_registry.client, mv.name, mv.version)


@pytest.fixture
def canary_policy(tmp_path, monkeypatch):
    path = tmp_path / "policy.toml"
    path.write_text(CANARY_POLICY)
    monkeypatch.setenv(gate.POLICY_ENV, str(path))
    return gate.Policy.load()


def test_policy_file_is_parsed(canary_policy):
    """The TOML policy gives one rule per require_attestation table."""
    champion, production = canary_policy.require_attestation

    assert canary_policy.verify_bytes is True
    assert champion.applies_to(gate.Target(alias="champion"))
    assert not champion.applies_to(gate.Target(alias="challenger"))
    assert champion.max_age == timedelta(hours=24)
    assert production.applies_to(gate.Target(stage="production"))
    assert production.max_age is None


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[gate]\nverfy_bytes = true\n", "unknown"),
        ("[[gate.require_attestation]]\nalias = 'a'\n", "deployment"),
        (
            "[[gate.require_attestation]]\ndeployment = 'c'\nalias='a'\nstage='S'\n",
            "exactly one",
        ),
        (
            "[[gate.require_attestation]]\ndeployment='c'\nalias='a'\nmax_age='1y'\n",
            "not an age",
        ),
        ("[gate\n", "Cannot read"),
        ("[gates]\nverify_bytes = true\n", "one \\[gate\\] table"),
        (
            "[[require_attestation]]\ndeployment='c'\nalias='a'\n",
            "one \\[gate\\] table",
        ),
        ("[gate]\nrequire_attestation = 'x'\n", "\\[\\[gate.require_attestation\\]\\]"),
        (
            "[[gate.require_attestation]]\ndeployment='c'\nalias='a'\nmax-age='1h'\n",
            "unknown keys",
        ),
        (
            "[[gate.require_attestation]]\ndeployment='c'\nalias='a'\nmax_age='0s'\n",
            "positive",
        ),
        ("[[gate.require_attestation]]\ndeployment='c'\nalias=1\n", "non-empty string"),
        ("[[gate.require_attestation]]\ndeployment='c'\nstage='Prod'\n", "not one of"),
        (
            "[[gate.require_attestation]]\ndeployment='c'\nalias='a'\nmax_age='99999999999999999999d'\n",
            "too large",
        ),
    ],
)
def test_bad_policy_is_a_configuration_error(tmp_path, text, match):
    """Typos and impossible rules in the policy file are refused clearly."""
    path = tmp_path / "policy.toml"
    path.write_text(text)

    with pytest.raises(ConfigurationError, match=match):
        gate.Policy.load(str(path))


def test_promote_untouched_version(version, integrity_registry):
    """The default policy lets a version whose bytes verify take an alias."""
    outcome = gate.promote("iris", "1", alias="champion")

    assert integrity_registry.client.get_model_version_by_alias("iris", "champion")
    assert outcome.to_dict()["mode"] == "deep", "the gate re-reads every byte"


def test_promote_tampered_version_is_refused(version, integrity_registry):
    """A flipped byte refuses the alias move, naming target and file, and the
    alias is not set."""
    _, stored = version
    weights = weights_file(stored)
    flip_byte(weights)

    with pytest.raises(PromotionRefusedError) as caught:
        gate.promote("iris", "1", alias="champion")

    text = str(caught.value)
    assert "Promotion of models:/iris/1 to alias 'champion' refused" in text
    assert f"modified    {weights.name}" in text
    assert caught.value.error_code == "PERMISSION_DENIED"
    assert integrity_registry.client.get_registered_model("iris").aliases == {}


def test_stage_transition_is_gated(version, integrity_registry):
    """A tampered version cannot enter a stage through promote()."""
    _, stored = version
    (stored / "conda.yaml").unlink()

    with pytest.raises(PromotionRefusedError, match="stage 'Production'"):
        gate.promote("iris", "1", stage="Production")

    assert integrity_registry.client.get_model_version("iris", "1").current_stage == (
        "None"
    )


def test_untagged_version_is_refused(integrity_registry, log_sklearn):
    """A version without a digest is refused, naming the backfill command."""
    mlflow.register_model(log_sklearn().runs_uri, "plain")

    with pytest.raises(PromotionRefusedError, match="backfill --name plain"):
        gate.promote("plain", "1", alias="champion")


def test_attestation_required_and_missing(version, canary_policy):
    """With the canary policy, no attestation means no champion alias."""
    with pytest.raises(PromotionRefusedError, match="there is none"):
        gate.promote("iris", "1", alias="champion")


def test_attestation_present_lets_it_through(
    version, canary_policy, integrity_registry
):
    """A verified load with attest='canary' satisfies the policy."""
    mlflow_integrity.load_model("models:/iris/1", attest="canary")

    gate.promote("iris", "1", alias="champion")

    tags = integrity_registry.client.get_model_version("iris", "1").tags
    attestation = gate.Attestation.from_tag(
        "integrity.attest.canary", tags["integrity.attest.canary"]
    )
    assert str(attestation.digest) == tags[registry.ARTIFACT_SHA]


def test_stale_attestation_is_refused(version, canary_policy):
    """An attestation older than max_age is refused, with its age."""
    mv, stored = version
    mlflow_integrity.attest(
        "iris", "1", "canary", Digest.parse(mv.tags["artifact_sha"])
    )
    fresh = mlflow.MlflowClient().get_model_version("iris", "1")
    later = datetime.now(UTC) + timedelta(hours=30)

    outcome = gate.check(
        fresh, gate.Target(alias="champion"), str(stored), policy=canary_policy,
        now=lambda: later,
    )  # fmt: skip

    assert not outcome.ok
    assert "no older than 24h" in outcome.reasons[0]
    assert "30h old" in outcome.reasons[0] or "30.0h old" in outcome.reasons[0]


def test_mismatched_attestation_is_refused(version, canary_policy):
    """An attestation of other bytes is refused, naming both digests."""
    other = Digest.parse("blake3:" + "ee" * 32)
    mlflow_integrity.attest("iris", "1", "canary", other)

    with pytest.raises(PromotionRefusedError) as caught:
        gate.promote("iris", "1", alias="champion")

    assert str(other) in str(caught.value)
    assert "other bytes than this version's" in str(caught.value)


def test_malformed_attestation_is_refused(version, canary_policy, integrity_registry):
    """A hand-written attestation that does not parse does not count."""
    integrity_registry.client.set_model_version_tag(
        "iris", "1", "integrity.attest.canary", "yes, really"
    )

    with pytest.raises(PromotionRefusedError, match="unusable"):
        gate.promote("iris", "1", alias="champion")


def test_rules_apply_only_to_their_target(version, canary_policy):
    """The canary rule for 'champion' does not affect another alias."""
    gate.promote("iris", "1", alias="challenger")


def test_stage_rule_without_age(version, canary_policy):
    """A Production rule without max_age accepts any matching attestation."""
    mlflow_integrity.load_model("models:/iris/1", attest="canary")

    gate.promote("iris", "1", stage="Production")


def test_bad_deployment_name_is_refused_before_loading(version):
    """attest= must be a plain deployment name."""
    with pytest.raises(ConfigurationError, match="deployment name"):
        mlflow_integrity.load_model("models:/iris/1", attest="../canary")


def test_target_needs_exactly_one_of_alias_or_stage():
    """A promotion names an alias or a stage, not both or neither."""
    with pytest.raises(ConfigurationError):
        gate.Target()
    with pytest.raises(ConfigurationError):
        gate.Target(alias="a", stage="Production")


def test_future_dated_attestation_does_not_count(version, canary_policy):
    """An attestation dated beyond the clock-skew allowance is refused."""
    mv, stored = version
    mlflow_integrity.attest(
        "iris", "1", "canary", Digest.parse(mv.tags["artifact_sha"])
    )
    fresh = mlflow.MlflowClient().get_model_version("iris", "1")
    earlier = datetime.now(UTC) - timedelta(hours=2)

    outcome = gate.check(
        fresh, gate.Target(alias="champion"), str(stored), policy=canary_policy,
        now=lambda: earlier,
    )  # fmt: skip

    assert not outcome.ok
    assert "in the future" in outcome.reasons[0]
