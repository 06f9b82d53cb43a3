"""The checklist for a deployment that misbehaves: what does it really run?

:func:`diagnose` answers, in seven numbered steps, the questions an on-call
engineer asks when a canary behaves oddly: which version the URI names now,
what was recorded for it, whether the stored bytes still match, whether the
local copy the server loaded is that version (or an older one), whether its
files were touched after the fact, which deployments attested which bytes,
and whether the version looks deleted and created again under its number.
Each step ends with a verdict: ``OK``, ``PROBLEM``, ``INFO`` (nothing wrong,
worth knowing) or ``SKIPPED``.

What step 7 (re-creation) can and cannot see, with MLflow 3.17:

- MLflow never reuses a version number within a registered model: a deleted
  version stays as a hidden row, so ``models:/iris/3`` cannot silently become
  other bytes while ``iris`` exists.
- Deleting the registered model removes it with every version, alias and tag,
  and a new model of that name numbers from 1 again. The registry keeps no
  trace, so only what remembers the old one can show it: a local copy's pull
  metadata older than the registered model, an integrity record or an
  attestation dated before the version was created (tags carried over by a
  restore from backup or a copy), a record made from another storage location
  than the version's.
- A version deleted and created again through plain MLflow, with nothing
  outside the registry remembering the old one, cannot be told from a new
  version: step 7 then says it found no sign, not that there was none.
"""

from __future__ import annotations

import json
import logging
import os
import textwrap
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlflow_integrity.check import (
    MISSING,
    STALE,
    UNTAGGED,
    VERIFIED,
    VerifyResult,
    now_utc,
    status_of,
)
from mlflow_integrity.check import verify as verify_uri
from mlflow_integrity.digest import (
    IGNORED_ROOT_FILES,
    Digest,
    Manifest,
    ManifestDiff,
    hash_tree,
    iter_tree,
)
from mlflow_integrity.errors import ConfigurationError, IntegrityError
from mlflow_integrity.registry import (
    ARTIFACT_SHA,
    ORIGIN_REGISTRATION,
    Record,
    ResolvedVersion,
    parse_model_uri,
    read_record,
    resolve,
    utc_text,
)
from mlflow_integrity.render import render_diff

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

_logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1

OK = "OK"
PROBLEM = "PROBLEM"
INFO = "INFO"
SKIPPED = "SKIPPED"
VERDICTS = (OK, PROBLEM, INFO, SKIPPED)

# Registration computes the record just before it creates the version, after
# hashing the whole artifact; a record older than the version by more than
# this was made for something else.
RECORD_LEAD = timedelta(minutes=10)
# Clocks of serving hosts and of the registry may differ by this much.
CLOCK_SKEW = timedelta(minutes=5)
_WRAP = 100

_TITLES = {
    "resolve": "Which version the URI names now",
    "record": "The recorded digest and its provenance",
    "stored": "The stored artifact now",
    "local_copy": "The local copy",
    "file_times": "File times of the local copy",
    "attestations": "Runtime attestations",
    "recreated": "Deleted and created again under the same number?",
}


@dataclass(frozen=True)
class Step:
    """One step of a diagnosis: a verdict and what it is based on."""

    number: int
    key: str
    verdict: str
    summary: str
    details: tuple[str, ...] = ()
    status: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def title(self) -> str:
        return _TITLES[self.key]

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "key": self.key,
            "title": self.title,
            "verdict": self.verdict,
            "status": self.status,
            "summary": self.summary,
            "details": list(self.details),
            "facts": self.facts,
        }


@dataclass(frozen=True)
class Diagnosis:
    """The seven steps for one model URI; ``ok`` unless a step is a PROBLEM."""

    model_uri: str
    name: str | None
    version: str | None
    steps: tuple[Step, ...]
    checked_at: str = field(default_factory=now_utc)

    @property
    def problems(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.verdict == PROBLEM)

    @property
    def ok(self) -> bool:
        return not self.problems

    def step(self, key: str) -> Step:
        """The step with this key (``resolve``, ``record``, ...)."""
        return next(s for s in self.steps if s.key == key)

    def to_dict(self) -> dict[str, Any]:
        """The JSON view; keys as in ``docs/audit-schema.md``."""
        return {
            "schema_version": SCHEMA_VERSION,
            "model_uri": self.model_uri,
            "name": self.name,
            "version": self.version,
            "checked_at": self.checked_at,
            "ok": self.ok,
            "problems": [s.number for s in self.problems],
            "steps": [s.to_dict() for s in self.steps],
        }

    def render(self) -> str:
        """Numbered steps, each with its verdict, then the conclusion."""
        target = f" (version {self.version})" if self.version else ""
        lines = [f"Diagnosis of {self.model_uri}{target}, {self.checked_at}", ""]
        for step in self.steps:
            lines.append(f"{step.number}. {step.title}")
            lines.append(
                textwrap.fill(
                    step.summary,
                    width=_WRAP,
                    initial_indent=f"   {step.verdict:<8} ",
                    subsequent_indent=" " * 12,
                    break_on_hyphens=False,
                )
            )
            for detail in step.details:
                # Commands, paths and digests are shown whole, to be copied.
                longest = max((len(w) for w in detail.split()), default=0)
                if (
                    detail.startswith("    ")
                    or len(detail) + 12 <= _WRAP
                    or longest > 40
                ):
                    lines.append(" " * 12 + detail)
                else:
                    lines.append(
                        textwrap.fill(
                            detail,
                            width=_WRAP,
                            initial_indent=" " * 12,
                            subsequent_indent=" " * 12,
                            break_on_hyphens=False,
                            break_long_words=False,
                        )
                    )
        lines.append("")
        if self.ok:
            lines.append("No step found a problem.")
        else:
            numbers = ", ".join(str(s.number) for s in self.problems)
            noun = "step" if len(self.problems) == 1 else "steps"
            lines.append(f"{len(self.problems)} {noun} found a problem: {numbers}.")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()


@dataclass(frozen=True)
class _Pulled:
    """What ``pull`` wrote next to a copy (``blake3-<hex>.json``)."""

    model_uri: str
    digest: Digest
    pulled_at: datetime

    def to_dict(self) -> dict[str, str]:
        return {
            "model_uri": self.model_uri,
            "digest": str(self.digest),
            "pulled_at": utc_text(self.pulled_at),
        }


@dataclass
class _Context:
    """What the steps learn and pass on."""

    client: MlflowClient
    uri: str
    resolved: ResolvedVersion | None = None
    record: Record | None = None
    record_usable: bool = False
    stored: VerifyResult | None = None
    local_dir: str | None = None
    local: Manifest | None = None
    pulled: _Pulled | None = None
    matched_record: bool = False
    others: dict[str, str] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)

    def add(self, key: str, verdict: str, summary: str, **kwargs: Any) -> None:
        self.steps.append(Step(len(self.steps) + 1, key, verdict, summary, **kwargs))

    @property
    def mv(self) -> ModelVersion:
        assert self.resolved is not None
        return self.resolved.model_version


def diagnose(
    model_uri: str, *, path: str | None = None, client: MlflowClient | None = None
) -> Diagnosis:
    """Run the checklist for ``model_uri`` (and the local copy at ``path``).

    Args:
        model_uri: ``models:/<name>@<alias>``, ``models:/<name>/<stage>``,
            ``models:/<name>/<version>``, ``models:/<name>/latest`` or a
            content pin ``models:/<name>@blake3:<hex>``.
        path: the copy a deployment loaded: a model directory, or a ``pull``
            destination (its ``current`` link is followed and its metadata
            read).
        client: an MlflowClient; the default one otherwise.

    Returns:
        The diagnosis; integrity findings are its steps' verdicts, never
        raised.

    Raises:
        ConfigurationError: if the URI is malformed or names no registered
            model, or ``path`` is not a directory or is a pull destination
            without a ``current`` copy.
    """
    if path is not None and not os.path.isdir(path):
        raise ConfigurationError(
            f"--path {path} is not a directory; give the model directory the "
            "deployment loaded, or the destination of `mlflow-integrity pull`."
        )
    ctx = _Context(client or MlflowClient(), model_uri)

    _resolve_step(ctx)
    if ctx.resolved is None:
        for key in list(_TITLES)[1:]:
            ctx.add(key, SKIPPED, "nothing to check: the URI names no version")
        return Diagnosis(
            model_uri, parse_model_uri(model_uri).name, None, tuple(ctx.steps)
        )

    ctx.others = _recorded_digests(ctx.client, ctx.resolved.name)
    _record_step(ctx)
    _stored_step(ctx)
    _local_copy_step(ctx, path)
    _file_times_step(ctx)
    _attestations_step(ctx)
    _recreated_step(ctx)
    diagnosis = Diagnosis(
        model_uri, ctx.resolved.name, ctx.resolved.version, tuple(ctx.steps)
    )
    _logger.info(
        "diagnosis of %s: %s",
        model_uri,
        "ok"
        if diagnosis.ok
        else f"problems in steps {diagnosis.to_dict()['problems']}",
    )
    return diagnosis


# --- 1. resolve -------------------------------------------------------------------


def _resolve_step(ctx: _Context) -> None:
    ref = parse_model_uri(ctx.uri)
    try:
        ctx.resolved = resolve(ctx.client, ctx.uri)
    except ConfigurationError:
        dangling = _dangling_alias(ctx.client, ref.name, ref.alias)
        if dangling is None:
            raise
        ctx.add(
            "resolve",
            PROBLEM,
            f"alias {ref.alias} points to version {dangling}, which does not exist",
            status=MISSING,
            details=(
                "Loading this URI fails. After a registry restore the version may "
                "exist only in the backup. Point the alias at a version that "
                "verifies:",
                f"    mlflow-integrity promote {ref.name} VERSION --alias {ref.alias}",
            ),
            facts={"via": f"alias {ref.alias}"},
        )
        return

    resolved = ctx.resolved
    facts: dict[str, Any] = {"via": resolved.via}
    details: list[str] = [f"source  {resolved.source}"]
    verdict = OK
    if ref.stage is not None and ref.stage.lower() != "latest":
        in_stage = sorted(
            (
                str(v.version)
                for v in _versions(ctx.client, resolved.name)
                if (v.current_stage or "").lower() == ref.stage.lower()
            ),
            key=int,
        )
        facts["in_stage"] = in_stage
        if len(in_stage) > 1:
            verdict = INFO
            details.append(
                f"{len(in_stage)} versions are in stage {ref.stage}: "
                f"{', '.join(in_stage)}; MLflow serves the highest. Pods that "
                "resolved the stage at another time may run another one."
            )
    aliases = sorted(_aliases_of(ctx.client, resolved.name).items())
    if aliases:
        details.append(
            "aliases of the model: " + ", ".join(f"{a} -> {v}" for a, v in aliases)
        )
    mv = resolved.model_version
    details.append(f"created {_ms_text(mv.creation_timestamp)}")
    ctx.add(
        "resolve",
        verdict,
        f"{ctx.uri} -> version {resolved.version}"
        + ("" if resolved.via == "version" else f" ({resolved.via})"),
        details=tuple(details),
        facts=facts,
    )


def _dangling_alias(client: MlflowClient, name: str, alias: str | None) -> str | None:
    """The version an alias names when that version does not exist."""
    if alias is None:
        return None
    try:
        target = _aliases_of(client, name).get(alias)
    except MlflowException:
        return None
    if target is None:
        return None
    try:
        client.get_model_version(name, target)
    except MlflowException:
        return target
    return None


# --- 2. record --------------------------------------------------------------------


def _record_step(ctx: _Context) -> None:
    mv = ctx.mv
    uri = f"models:/{mv.name}/{mv.version}"
    try:
        ctx.record = read_record(mv)
    except IntegrityError as err:
        ctx.add(
            "record",
            PROBLEM,
            "the integrity tags are malformed",
            status="MALFORMED",
            details=tuple(err.message.splitlines()),
            facts=_record_facts(None),
        )
        return
    if ctx.record is None:
        ctx.add(
            "record",
            PROBLEM,
            "no digest is recorded, so nothing says what the bytes should be",
            status=UNTAGGED,
            details=(
                "Record one (trust on first use, marked as such):",
                f"    mlflow-integrity backfill --name {mv.name} "
                f"--version {mv.version}",
            ),
            facts=_record_facts(None),
        )
        return

    ctx.record_usable = True
    record = ctx.record
    details = [
        f"recorded {record.recorded_at} by {record.recorded_by or '(unknown)'}",
        f"from     {record.source}",
    ]
    if record.origin != ORIGIN_REGISTRATION:
        details.append(
            f"origin {record.origin}: recorded after registration (trust on first "
            "use); it proves the bytes unchanged since then, not since "
            f"{uri} was registered"
        )
    ctx.add(
        "record",
        OK,
        f"{ARTIFACT_SHA} {record.digest} ({record.origin}, "
        f"{len(record.manifest.files)} files)",
        details=tuple(details),
        facts=_record_facts(record),
    )


def _record_facts(record: Record | None) -> dict[str, Any]:
    return {
        "artifact_sha": str(record.digest) if record else None,
        "recorded_at": record.recorded_at if record else None,
        "recorded_by": record.recorded_by if record else None,
        "origin": record.origin if record else None,
        "source": record.source if record else None,
    }


# --- 3. stored --------------------------------------------------------------------


def _stored_step(ctx: _Context) -> None:
    if not ctx.record_usable:
        ctx.add("stored", SKIPPED, "no usable record to compare the stored bytes with")
        return
    mv = ctx.mv
    result = verify_uri(
        f"models:/{mv.name}/{mv.version}", client=ctx.client, env_pin=False
    )
    ctx.stored = result
    facts = {
        "actual": str(result.actual) if result.actual else None,
        "files": _files(result.diff),
    }
    if result.ok:
        ctx.add(
            "stored",
            OK,
            f"the stored bytes hash to the recorded digest ({VERIFIED})",
            status=VERIFIED,
            details=(f"read from {result.source}",),
            facts=facts,
        )
        return
    algorithm = result.expected.algorithm if result.expected else "blake3"
    details = [f"read from {result.source}"]
    if result.actual is not None:
        details.append(f"actual    {result.actual}")
    if result.detail:
        details.append(result.detail)
    details.extend(_diff_lines(result.diff, algorithm))
    details.extend(
        [
            "Bytes that fail this check are never loaded through mlflow-integrity; "
            "the full account and what to do next:",
            f"    mlflow-integrity verify models:/{mv.name}/{mv.version}",
        ]
    )
    ctx.add(
        "stored",
        PROBLEM,
        _diff_summary(result.status, result.diff, "the stored bytes"),
        status=result.status,
        details=tuple(details),
        facts=facts,
    )


def _diff_summary(status: str, diff: ManifestDiff, what: str) -> str:
    if not diff:
        return f"{what} are not the recorded ones ({status})"
    paths = [c.path for c in diff.changes]
    shown = ", ".join(paths[:3]) + (
        f" and {len(paths) - 3} more" if len(paths) > 3 else ""
    )
    noun = "file differs" if len(paths) == 1 else "files differ"
    return f"{len(paths)} {noun} from the record ({status}): {shown}"


def _diff_lines(diff: ManifestDiff, algorithm: str) -> list[str]:
    """The verify report's per-file lines, with the sizes and digests of
    each file indented under its name."""
    return [
        f"  {line.strip()}" if line.startswith(" " * 4) else line.strip()
        for line in render_diff(diff, algorithm)
    ]


def _files(diff: ManifestDiff) -> list[dict[str, str]]:
    kinds = {
        **{c.path: "modified" for c in diff.modified},
        **{c.path: "missing" for c in diff.missing},
        **{c.path: "extra" for c in diff.extra},
    }
    return [{"path": c.path, "change": kinds[c.path]} for c in diff.changes]


# --- 4. local copy ----------------------------------------------------------------


def _local_copy_step(ctx: _Context, path: str | None) -> None:
    if path is None:
        ctx.add("local_copy", SKIPPED, "no local copy given (--path)")
        return
    mv = ctx.mv
    here = f"version {mv.version}"
    directory, pulled = _local_copy(path)
    ctx.local_dir, ctx.pulled = directory, pulled
    dest = path if os.path.islink(os.path.join(path, "current")) else "DEST"
    if ctx.record is not None:
        algorithm = ctx.record.digest.algorithm
    else:
        algorithm = pulled.digest.algorithm if pulled else "blake3"
    try:
        local = hash_tree(directory, algorithm)
    except IntegrityError as err:
        ctx.add(
            "local_copy",
            PROBLEM,
            "the local copy cannot be hashed safely",
            status="UNREADABLE",
            details=tuple(err.message.splitlines()),
            facts={"path": directory},
        )
        return
    ctx.local = local
    digest = local.root_digest()
    facts: dict[str, Any] = {
        "path": directory,
        "digest": str(digest),
        "matches_version": None,
        "pulled": pulled.to_dict() if pulled else None,
        "files": [],
    }
    details = [f"path      {directory}", f"digest    {digest}"]
    if pulled is not None:
        details.append(
            f"pulled    {pulled.model_uri} at {utc_text(pulled.pulled_at)} "
            f"({pulled.digest.short})"
        )

    if ctx.record is not None and digest == ctx.record.digest:
        ctx.matched_record = True
        ctx.add(
            "local_copy",
            OK,
            f"the local copy holds {here}'s recorded bytes",
            status=VERIFIED,
            details=tuple(details),
            facts=facts,
        )
        return

    other = next(
        (v for v, d in ctx.others.items() if d == str(digest) and v != mv.version),
        None,
    )
    if other is not None:
        facts["matches_version"] = other
        details.extend(
            [
                f"Deploy what {ctx.uri} names now, or point it back at version "
                f"{other} if that is the one meant. To deploy:",
                f"    mlflow-integrity pull {ctx.uri} {dest}",
            ]
        )
        ctx.add(
            "local_copy",
            PROBLEM,
            f"the local copy holds version {other}, but {ctx.uri} names {here} now "
            f"({STALE})",
            status=STALE,
            details=tuple(details),
            facts=facts,
        )
        return

    if ctx.record is None:
        ctx.add(
            "local_copy",
            INFO,
            f"{here} has no usable record to compare the local copy with (step 2)",
            details=tuple(details),
            facts=facts,
        )
        return

    # Compare with what the copy was pulled as, if that was a recorded
    # version; else with the version the URI names.
    base_version: str = mv.version
    base: Record | None = ctx.record
    if pulled is not None:
        for version, recorded in ctx.others.items():
            if recorded == str(pulled.digest) and version != mv.version:
                base_version, base = version, _record_of(ctx.client, mv.name, version)
                break
    diff = base.manifest.diff(local) if base is not None else ManifestDiff()
    facts["files"] = _files(diff)
    status = status_of(diff) if diff else "MODIFIED"
    if base_version != mv.version:
        details.append(
            f"It was pulled as version {base_version}, which {ctx.uri} no longer "
            "names, and changed since:"
        )
    details.extend(_diff_lines(diff, algorithm))
    if pulled is not None and pulled.digest != digest:
        details.append(
            "The copy changed after `pull` verified it; something on this host "
            "writes the model folder."
        )
    ctx.add(
        "local_copy",
        PROBLEM,
        "the local copy matches no recorded version of "
        f"{mv.name}; " + _diff_summary(status, diff, "its bytes"),
        status=status,
        details=tuple(details),
        facts=facts,
    )


def _local_copy(path: str) -> tuple[str, _Pulled | None]:
    """The directory to hash and its pull metadata: a pull destination's
    ``current`` target, or the directory itself (with the metadata that pull
    writes beside it, if any)."""
    current = os.path.join(path, "current")
    if not os.path.islink(current) and os.path.isdir(os.path.join(path, ".staging")):
        raise ConfigurationError(
            f"{path} is a pull destination without a current copy (no "
            f"{current} link); pull into it first, or give a model directory."
        )
    directory = os.path.realpath(current) if os.path.islink(current) else path
    directory = os.path.realpath(directory)
    return directory, _read_pulled(f"{directory}.json")


def _read_pulled(meta: str) -> _Pulled | None:
    try:
        with open(meta, encoding="utf-8") as f:
            data = json.load(f)
        at = datetime.fromisoformat(str(data["pulled_at"]).replace("Z", "+00:00"))
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        return _Pulled(str(data["model_uri"]), Digest.parse(data["digest"]), at)
    except (OSError, ValueError, KeyError, TypeError):
        return None


# --- 5. file times ----------------------------------------------------------------


def _file_times_step(ctx: _Context) -> None:
    if ctx.local_dir is None:
        ctx.add("file_times", SKIPPED, "no local copy given (--path)")
        return
    if ctx.local is None:
        ctx.add("file_times", SKIPPED, "the local copy could not be hashed (step 4)")
        return
    mv = ctx.mv
    if ctx.pulled is not None:
        since = ctx.pulled.pulled_at
        what = "it was pulled"
    else:
        since = _ms_datetime(mv.creation_timestamp)
        what = f"version {mv.version} was created"
    newer = []
    for rel, full in iter_tree(ctx.local_dir):
        if rel in IGNORED_ROOT_FILES:
            # MLflow writes it on every download; it is not covered.
            continue
        mtime = datetime.fromtimestamp(os.lstat(full).st_mtime, UTC)
        if mtime > since:
            newer.append((rel, mtime))
    newer.sort(key=lambda item: item[0].encode("utf-8"))
    facts = {"since": utc_text(since), "newer": [rel for rel, _ in newer]}
    if not newer:
        ctx.add(
            "file_times",
            OK,
            f"no file was modified after {what} ({utc_text(since)})",
            facts=facts,
        )
        return
    details = tuple(f"{rel}  modified {utc_text(at)}" for rel, at in newer)
    if ctx.matched_record:
        ctx.add(
            "file_times",
            INFO,
            f"{len(newer)} files have times after {what} ({utc_text(since)}), but "
            "their bytes are the recorded ones (a copy that does not keep times "
            "gives every file the time of the copy)",
            details=details[:10],
            facts=facts,
        )
        return
    ctx.add(
        "file_times",
        PROBLEM,
        f"{len(newer)} file{'' if len(newer) == 1 else 's'} modified after {what} "
        f"({utc_text(since)}): " + ", ".join(rel for rel, _ in newer[:5]),
        details=details,
        facts=facts,
    )


# --- 6. attestations --------------------------------------------------------------


def _attestations_step(ctx: _Context) -> None:
    from mlflow_integrity.gate import attestations_of

    found = attestations_of(ctx.mv)
    if not found:
        ctx.add(
            "attestations",
            INFO,
            "no deployment attested this version",
            facts={"deployments": {}},
        )
        return
    recorded = str(ctx.record.digest) if ctx.record else None
    deployments: dict[str, Any] = {}
    details = []
    bad = 0
    for name, attestation in sorted(found.items()):
        if isinstance(attestation, str):
            bad += 1
            deployments[name] = {"error": attestation}
            details.append(f"{name}: unusable: {attestation}")
            continue
        digest = str(attestation.digest)
        matches = digest == recorded
        deployments[name] = {
            "digest": digest,
            "at": utc_text(attestation.at),
            "host": attestation.host,
            "matches": matches,
        }
        line = f"{name}: {attestation.digest.short} at {utc_text(attestation.at)}"
        if attestation.host:
            line += f" on {attestation.host}"
        if matches:
            line += " (this version's digest)"
        else:
            bad += 1
            owner = next((v for v, d in ctx.others.items() if d == digest), None)
            line += (
                f" (version {owner}'s digest)"
                if owner
                else " (a digest no version of this model records)"
            )
        details.append(line)
    facts = {"deployments": deployments}
    if bad:
        ctx.add(
            "attestations",
            PROBLEM,
            f"{bad} of {len(found)} attestations are not for this version's bytes",
            details=tuple(details),
            facts=facts,
        )
    else:
        ctx.add(
            "attestations",
            OK,
            f"{len(found)} deployment{'s' if len(found) > 1 else ''} attested this "
            "version's digest",
            details=tuple(details),
            facts=facts,
        )


# --- 7. re-created ----------------------------------------------------------------


def _recreated_step(ctx: _Context) -> None:
    mv = ctx.mv
    created = _ms_datetime(mv.creation_timestamp)
    evidence: list[str] = []
    record = ctx.record

    if record is not None and record.origin == ORIGIN_REGISTRATION:
        recorded = _parse_time(record.recorded_at)
        if recorded is not None and recorded < created - RECORD_LEAD:
            evidence.append(
                f"the digest was recorded at registration on {record.recorded_at}, "
                f"but version {mv.version} was created on {utc_text(created)}: the "
                "record belongs to an earlier version with this number (tags "
                "carried over by a restore or a copy)"
            )
        if ctx.resolved is not None and _differ(record.source, ctx.resolved.source):
            evidence.append(
                f"the digest was recorded from {record.source}, but the version's "
                f"bytes are at {ctx.resolved.source}"
            )

    from mlflow_integrity.gate import attestations_of

    for name, attestation in sorted(attestations_of(mv).items()):
        if not isinstance(attestation, str) and attestation.at < created - CLOCK_SKEW:
            evidence.append(
                f"deployment {name} attested on {utc_text(attestation.at)}, before "
                f"version {mv.version} was created on {utc_text(created)}"
            )

    pulled = ctx.pulled
    if pulled is not None:
        try:
            model_created = _ms_datetime(
                ctx.client.get_registered_model(mv.name).creation_timestamp
            )
        except MlflowException:
            model_created = None
        same_model = pulled.model_uri.startswith(f"models:/{mv.name}/")
        if same_model and model_created and pulled.pulled_at < model_created:
            evidence.append(
                f"the local copy was pulled as {pulled.model_uri} on "
                f"{utc_text(pulled.pulled_at)}, before the registered model "
                f"{mv.name} was created on {utc_text(model_created)}: the model "
                "was deleted and created again since"
            )
        elif (
            pulled.model_uri == f"models:/{mv.name}/{mv.version}"
            and pulled.pulled_at < created
        ):
            evidence.append(
                f"the local copy was pulled as {pulled.model_uri} on "
                f"{utc_text(pulled.pulled_at)}, before that version was created on "
                f"{utc_text(created)}"
            )

    if evidence:
        ctx.add(
            "recreated",
            PROBLEM,
            f"{len(evidence)} sign{'s' if len(evidence) > 1 else ''} that "
            f"models:/{mv.name}/{mv.version} is not the version first registered "
            "under this number",
            details=tuple(evidence),
            facts={"evidence": evidence},
        )
        return
    checked = ["record time", "record source", "attestation times"]
    if pulled is not None:
        checked.append("pull metadata")
    ctx.add(
        "recreated",
        OK,
        "no sign of it (checked: " + ", ".join(checked) + ")",
        details=(
            "A version deleted and created again with nothing outside the "
            "registry remembering the old one leaves no trace to find.",
        ),
        facts={"evidence": []},
    )


def _differ(recorded: str, now: str) -> bool:
    """True when two storage URIs of the same scheme name different places
    (URIs of different schemes, such as a server's path and a client's
    ``mlflow-artifacts:``, are not comparable)."""
    if not recorded or not now:
        return False
    a, b = urllib.parse.urlparse(recorded), urllib.parse.urlparse(now)
    if a.scheme != b.scheme:
        return False
    return recorded.rstrip("/") != now.rstrip("/")


# --- helpers ----------------------------------------------------------------------


def _versions(client: MlflowClient, name: str) -> list[Any]:
    """Every version of a model; none when MLflow cannot list them (a name
    with a quote breaks its search filter), so that the steps that compare
    with other versions say less rather than the diagnosis failing."""
    from mlflow_integrity.registry import all_pages

    try:
        return all_pages(client.search_model_versions, filter_string=f"name = '{name}'")
    except MlflowException as exc:
        _logger.warning("the versions of %s cannot be listed: %s", name, exc.message)
        return []


def _recorded_digests(client: MlflowClient, name: str) -> dict[str, str]:
    """``{version: artifact_sha}`` for every version of the model with a digest."""
    return {
        str(v.version): v.tags[ARTIFACT_SHA]
        for v in _versions(client, name)
        if ARTIFACT_SHA in (v.tags or {})
    }


def _record_of(client: MlflowClient, name: str, version: str) -> Record | None:
    try:
        return read_record(client.get_model_version(name, version))
    except (MlflowException, IntegrityError):
        return None


def _aliases_of(client: MlflowClient, name: str) -> dict[str, str]:
    from mlflow_integrity.auditing import _aliases

    return _aliases(client.get_registered_model(name))


def _ms_datetime(ms: Any) -> datetime:
    return datetime.fromtimestamp(int(ms or 0) / 1000, UTC)


def _ms_text(ms: Any) -> str:
    return utc_text(_ms_datetime(ms))


def _parse_time(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
