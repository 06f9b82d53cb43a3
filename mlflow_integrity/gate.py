"""The promotion gate: one policy and one check for every enforcement point.

A stage transition or an alias move is allowed only when the version has a
well-formed ``artifact_sha``, the artifact as stored now hashes to it (every
file re-read), and every attestation that the policy demands for the target
is present, recent enough and for this digest. The same :func:`check` runs in
:func:`promote`, in the registry-store plugin (client side and inside
``mlflow server``) and in ``mlflow-integrity promote`` / ``gate-check``.

The policy lives in one TOML file named by ``MLFLOW_INTEGRITY_POLICY``::

    [gate]
    verify_bytes = true            # re-read every file (default true)

    [[gate.require_attestation]]
    alias = "champion"             # or: stage = "Production"
    deployment = "canary"
    max_age = "24h"                # s, m, h or d; omit for no limit

Without the variable the default policy applies: a verified digest, no
attestations.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from mlflow_integrity.check import compare, failed
from mlflow_integrity.digest import Digest
from mlflow_integrity.errors import (
    ConfigurationError,
    IntegrityError,
    PromotionRefusedError,
)
from mlflow_integrity.registry import (
    ATTEST_PREFIX,
    ResolvedVersion,
    read_record,
    utc_text,
)
from mlflow_integrity.render import render_result
from mlflow_integrity.stores import open_store

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

_logger = logging.getLogger(__name__)

POLICY_ENV = "MLFLOW_INTEGRITY_POLICY"

_DEPLOYMENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_AGE_RE = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_STAGES = ("staging", "production")
# Clocks of serving hosts and of the gate may differ by this much; an
# attestation dated further into the future is refused.
CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class Target:
    """Where a version is being promoted: an alias or a stage."""

    alias: str | None = None
    stage: str | None = None

    def __post_init__(self) -> None:
        if (self.alias is None) == (self.stage is None):
            raise ConfigurationError("Name exactly one of an alias or a stage.")

    def __str__(self) -> str:
        return f"alias {self.alias!r}" if self.alias else f"stage {self.stage!r}"


@dataclass(frozen=True)
class AttestationRule:
    """Promotion to ``alias`` or ``stage`` needs an attestation from
    ``deployment`` no older than ``max_age``."""

    deployment: str
    alias: str | None = None
    stage: str | None = None
    max_age: timedelta | None = None

    def applies_to(self, target: Target) -> bool:
        if self.alias is not None:
            return target.alias == self.alias
        return target.stage is not None and (
            target.stage.lower() == (self.stage or "").lower()
        )


@dataclass(frozen=True)
class Policy:
    """What the gate demands. See the module docstring for the file format."""

    verify_bytes: bool = True
    require_attestation: tuple[AttestationRule, ...] = ()
    path: str | None = None

    @classmethod
    def load(cls, path: str | None = None) -> Policy:
        """Read the policy file (``path``, else ``MLFLOW_INTEGRITY_POLICY``).

        Raises:
            ConfigurationError: if the file cannot be read or is malformed.
        """
        path = path or os.environ.get(POLICY_ENV) or None
        if path is None:
            return cls()
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigurationError(
                f"Cannot read the promotion policy {path} ({POLICY_ENV}): {exc}"
            ) from None
        return cls._from_dict(data, path)

    @classmethod
    def _from_dict(cls, data: dict[str, Any], path: str) -> Policy:
        # A typo must not silently weaken the policy: every key is checked.
        if set(data) - {"gate"} or not isinstance(data.get("gate", {}), dict):
            raise ConfigurationError(
                f"{path}: a policy file holds one [gate] table and nothing else; "
                f"found {sorted(data)}."
            )
        gate = data.get("gate", {})
        unknown = set(gate) - {"verify_bytes", "require_attestation"}
        if unknown:
            raise ConfigurationError(
                f"{path}: unknown [gate] keys {sorted(unknown)}; expected "
                "verify_bytes and require_attestation."
            )
        raw_rules = gate.get("require_attestation", [])
        if not isinstance(raw_rules, list):
            raise ConfigurationError(
                f"{path}: write each rule as a [[gate.require_attestation]] table."
            )
        rules = [_rule(raw, f"{path}: require_attestation #{i}") for i, raw in
                 enumerate(raw_rules, 1)]  # fmt: skip
        verify_bytes = gate.get("verify_bytes", True)
        if not isinstance(verify_bytes, bool):
            raise ConfigurationError(f"{path}: verify_bytes must be true or false.")
        return cls(verify_bytes, tuple(rules), path)


def _rule(raw: Any, where: str) -> AttestationRule:
    if not isinstance(raw, dict):
        raise ConfigurationError(f"{where} is not a table.")
    unknown = set(raw) - {"deployment", "alias", "stage", "max_age"}
    if unknown:
        raise ConfigurationError(
            f"{where}: unknown keys {sorted(unknown)}; expected deployment, "
            "alias or stage, and max_age."
        )
    deployment = raw.get("deployment")
    if not isinstance(deployment, str) or not _DEPLOYMENT_RE.match(deployment):
        raise ConfigurationError(f"{where} needs a deployment name.")
    alias, stage = raw.get("alias"), raw.get("stage")
    if (alias is None) == (stage is None):
        raise ConfigurationError(f"{where} needs exactly one of alias, stage.")
    for key, value in (("alias", alias), ("stage", stage)):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ConfigurationError(f"{where}: {key} must be a non-empty string.")
    if stage is not None and stage.lower() not in _STAGES:
        raise ConfigurationError(
            f"{where}: stage {stage!r} is not one of Staging, Production."
        )
    max_age = None
    if "max_age" in raw:
        max_age = parse_age(raw["max_age"], where)
        if max_age <= timedelta(0):
            raise ConfigurationError(f"{where}: max_age must be positive.")
    return AttestationRule(deployment, alias=alias, stage=stage, max_age=max_age)


def parse_age(text: str, where: str = "max_age") -> timedelta:
    """Parse ``90s``, ``15m``, ``24h`` or ``7d``.

    Raises:
        ConfigurationError: for anything else.
    """
    match = _AGE_RE.match(text) if isinstance(text, str) else None
    if not match:
        raise ConfigurationError(
            f"{where}: {text!r} is not an age such as '90s', '15m', '24h', '7d'."
        )
    try:
        return timedelta(seconds=int(match.group(1)) * _AGE_UNITS[match.group(2)])
    except OverflowError:
        raise ConfigurationError(f"{where}: {text!r} is too large an age.") from None


# --- attestations --------------------------------------------------------------


@dataclass(frozen=True)
class Attestation:
    """A serving process's statement: deployment D loaded bytes with digest X."""

    deployment: str
    digest: Digest
    at: datetime
    host: str = ""

    @property
    def tag_key(self) -> str:
        return ATTEST_PREFIX + self.deployment

    def to_tag_value(self) -> str:
        return json.dumps(
            {
                "digest": str(self.digest),
                "at": utc_text(self.at),
                "host": self.host,
            },
            sort_keys=True,
        )

    @classmethod
    def new(cls, deployment: str, digest: Digest) -> Attestation:
        check_deployment(deployment)
        return cls(deployment, digest, datetime.now(UTC), socket.gethostname())

    @classmethod
    def from_tag(cls, key: str, value: str) -> Attestation:
        """Parse an ``integrity.attest.<deployment>`` tag.

        Raises:
            ValueError: if the value is not a well-formed attestation.
        """
        deployment = key[len(ATTEST_PREFIX) :]
        check_deployment(deployment)
        try:
            data = json.loads(value)
            digest = Digest.parse(data["digest"])
            at = datetime.fromisoformat(data["at"].replace("Z", "+00:00"))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed attestation {key}: {exc}") from None
        if at.tzinfo is None:
            raise ValueError(f"malformed attestation {key}: time has no zone")
        return cls(deployment, digest, at, str(data.get("host", "")))


def check_deployment(name: str) -> str:
    """Return a valid deployment name or raise ConfigurationError."""
    if not _DEPLOYMENT_RE.match(name):
        raise ConfigurationError(
            f"{name!r} is not a deployment name (letters, digits, '_', '.', '-')."
        )
    return name


def attestations_of(mv: ModelVersion) -> dict[str, Attestation | str]:
    """The version's attestations by deployment; malformed ones as the error."""
    found: dict[str, Attestation | str] = {}
    for key, value in (mv.tags or {}).items():
        if not key.startswith(ATTEST_PREFIX):
            continue
        deployment = key[len(ATTEST_PREFIX) :]
        try:
            found[deployment] = Attestation.from_tag(key, value)
        except (ValueError, ConfigurationError) as exc:
            found[deployment] = str(exc)
    return found


def attest(
    name: str,
    version: str,
    deployment: str,
    digest: Digest,
    *,
    client: MlflowClient | None = None,
) -> Attestation:
    """Record that ``deployment`` runs the bytes with ``digest``.

    The digest is what the runtime actually verified or loaded; it is recorded
    even when it is not the version's digest, so that the gate can say so.
    """
    from mlflow import MlflowClient

    client = client or MlflowClient()
    attestation = Attestation.new(deployment, digest)
    client.set_model_version_tag(
        name, version, attestation.tag_key, attestation.to_tag_value()
    )
    _logger.info(
        "models:/%s/%s attested by %s (%s)", name, version, deployment, digest.short
    )
    return attestation


# --- the check -----------------------------------------------------------------


@dataclass(frozen=True)
class GateResult:
    """Whether a promotion may go ahead, and every reason if not."""

    name: str
    version: str
    target: Target
    reasons: tuple[str, ...] = ()
    status: str = "VERIFIED"
    digest: Digest | None = None
    report: str = ""
    checked_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    mode: str | None = None
    """``deep`` when the gate re-read every stored byte; None when it did not
    read them (the record was unreadable, or the policy turns bytes off)."""

    @property
    def ok(self) -> bool:
        return not self.reasons

    def message(self) -> str:
        head = f"Promotion of models:/{self.name}/{self.version} to {self.target}"
        if self.ok:
            return f"{head} is allowed ({self.digest})."
        lines = [f"{head} refused:"]
        lines.extend(f"  - {reason}" for reason in self.reasons)
        if self.report:
            lines.append(self.report)
        return "\n".join(lines)

    def error(self) -> PromotionRefusedError:
        return PromotionRefusedError(
            self.message(),
            name=self.name,
            version=self.version,
            expected=str(self.digest) if self.digest else None,
        )

    def raise_for_status(self) -> None:
        if not self.ok:
            raise self.error()

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_uri": f"models:/{self.name}/{self.version}",
            "target": {"alias": self.target.alias, "stage": self.target.stage},
            "allowed": self.ok,
            "status": self.status,
            "artifact_sha": str(self.digest) if self.digest else None,
            "reasons": list(self.reasons),
            "checked_at": self.checked_at.isoformat(timespec="seconds"),
            "mode": self.mode,
        }


def check(
    mv: ModelVersion,
    target: Target,
    source: str,
    *,
    policy: Policy | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> GateResult:
    """Decide whether ``mv`` may be promoted to ``target``.

    Args:
        mv: the version, with its tags.
        target: the alias or stage.
        source: where to read the stored bytes (inside ``mlflow server`` the
            artifacts destination, never a URI a client supplied).
        policy: the policy; :meth:`Policy.load` by default.
        now: the clock, for attestation ages.
    """
    policy = policy or Policy.load()
    name, version = mv.name, str(mv.version)
    resolved = ResolvedVersion(name, version, source, mv, "version")
    base = {"name": name, "version": version, "target": target}

    try:
        record = read_record(mv)
    except IntegrityError as err:
        return GateResult(reasons=(err.message,), status="MALFORMED", **base)  # type: ignore[arg-type]
    if record is None:
        return GateResult(
            reasons=(
                "the version has no recorded artifact_sha; record one with "
                f"`mlflow-integrity backfill --name {name} --version {version}` "
                "or register the model through mlflow-integrity",
            ),
            status="UNTAGGED",
            **base,  # type: ignore[arg-type]
        )

    reasons: list[str] = []
    status, report = "VERIFIED", ""
    if policy.verify_bytes:
        try:
            actual = open_store(source).manifest(record.digest.algorithm)
            result = compare(resolved, record, actual)
        except IntegrityError as err:
            result = failed(resolved, err, record)
        if not result.ok:
            status, report = result.status, render_result(result)
            reasons.append(
                f"the stored artifact does not hash to its artifact_sha "
                f"({result.status})"
            )

    found = attestations_of(mv)
    for rule in policy.require_attestation:
        if not rule.applies_to(target):
            continue
        reason = _attestation_problem(
            rule, found.get(rule.deployment), record.digest, now()
        )
        if reason:
            reasons.append(reason)

    outcome = GateResult(
        reasons=tuple(reasons),
        status=status,
        digest=record.digest,
        report=report,
        mode="deep" if policy.verify_bytes else None,
        **base,  # type: ignore[arg-type]
    )
    _logger.info(
        "gate for models:/%s/%s -> %s: %s",
        name,
        version,
        target,
        "allowed" if outcome.ok else "refused",
    )
    return outcome


def _attestation_problem(
    rule: AttestationRule,
    found: Attestation | str | None,
    digest: Digest,
    now: datetime,
) -> str | None:
    wanted = f"an attestation from deployment {rule.deployment!r}"
    if rule.max_age is not None:
        wanted += f" no older than {_age_text(rule.max_age)}"
    how = (
        f"deploy this version to {rule.deployment!r} with "
        f"mlflow_integrity.load_model(..., attest={rule.deployment!r}) or "
        f"`mlflow-integrity attest ... --deployment {rule.deployment}`"
    )
    if found is None:
        return f"the policy requires {wanted}; there is none ({how})"
    if isinstance(found, str):
        return f"the policy requires {wanted}; the one recorded is unusable: {found}"
    if found.digest != digest:
        return (
            f"the policy requires {wanted} for {digest}; deployment "
            f"{rule.deployment!r} attested {found.digest} at "
            f"{found.at:%Y-%m-%dT%H:%M:%SZ}, other bytes than this version's"
        )
    age = now - found.at
    if age < -CLOCK_SKEW:
        return (
            f"the policy requires {wanted}; the one recorded is dated "
            f"{found.at:%Y-%m-%dT%H:%M:%SZ}, in the future, and does not count"
        )
    if rule.max_age is not None and age > rule.max_age:
        return (
            f"the policy requires {wanted}; the one recorded is "
            f"{_age_text(age)} old ({found.at:%Y-%m-%dT%H:%M:%SZ}); {how}"
        )
    return None


def _age_text(age: timedelta) -> str:
    seconds = int(age.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        # "24h" reads better than "1d"; days from two on.
        if unit == "d" and seconds < 2 * size:
            continue
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds}s"


def promote(
    name: str,
    version: str,
    *,
    alias: str | None = None,
    stage: str | None = None,
    archive_existing_versions: bool = False,
    policy: Policy | None = None,
    client: MlflowClient | None = None,
) -> GateResult:
    """Pass the gate, then move the alias or transition the stage.

    Raises:
        PromotionRefusedError: with every reason, if the gate refuses.
        ConfigurationError: for a bad target or policy.
    """
    from mlflow import MlflowClient

    from mlflow_integrity import _compat
    from mlflow_integrity.plugins.registry_store import IntegrityRegistryStore

    client = client or MlflowClient()
    target = Target(alias=alias, stage=stage)
    store = _compat.registry_store_of(client)

    if isinstance(store, IntegrityRegistryStore):
        # The integrity store gates every promotion itself: run its gate once
        # and promote through the store it wraps, rather than hash twice.
        gated = store.gate(name, version, target, policy)
        registry: Any = store.inner
        outcome = gated or GateResult(name=name, version=version, target=target)
    else:
        mv = client.get_model_version(name, version)
        source = client.get_model_version_download_uri(name, version)
        outcome = check(mv, target, source, policy=policy)
        outcome.raise_for_status()
        registry = client

    if alias is not None:
        registry.set_registered_model_alias(name, alias, version)
    else:
        registry.transition_model_version_stage(
            name, version, stage, archive_existing_versions=archive_existing_versions
        )
    _logger.info("models:/%s/%s promoted to %s", name, version, target)
    return outcome
