"""Plain-text rendering of check results: the words a refusal shows a person."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow_integrity.check import VerifyResult
    from mlflow_integrity.digest import FileChange, FileEntry, ManifestDiff

_LABEL_WIDTH = 10
_WRAP = 88


def _entry(label: str, entry: FileEntry | None, algorithm: str) -> str:
    if entry is None:
        return f"{'':14}{label:<9}{'(absent)':>12}"
    return f"{'':14}{label:<9}{entry.size:>12,} bytes  {algorithm}:{entry.digest.hex()}"


def render_diff(diff: ManifestDiff, algorithm: str) -> list[str]:
    """One block per differing file, sorted by path, with sizes and digests."""
    lines = []
    kinds: dict[str, str] = {}
    for kind, changes in (
        ("modified", diff.modified),
        ("missing", diff.missing),
        ("extra", diff.extra),
    ):
        for c in changes:
            kinds[c.path] = kind
    change: FileChange
    for change in diff.changes:
        lines.append(f"  {kinds[change.path]:<{_LABEL_WIDTH}}  {change.path}")
        lines.append(_entry("expected", change.expected, algorithm))
        lines.append(_entry("actual", change.actual, algorithm))
    return lines


def _next_step(result: VerifyResult) -> tuple[str, str]:
    """What to do next, in words, and the command to run."""
    uri = result.model_uri
    status = result.status
    verify = f"mlflow-integrity verify {uri}"
    if status == "UNTAGGED":
        return (
            f"{uri} has no recorded digest, so its bytes cannot be checked. "
            "Record one (trust on first use, marked as such), or register the "
            "model again with mlflow_integrity.register_model; to load it "
            "unchecked, pass allow_untagged=True. To record one:",
            f"mlflow-integrity backfill --name {result.name} --version "
            f"{result.version}",
        )
    if status == "MALFORMED":
        return (
            "Do not serve this version until its record is repaired: the "
            "integrity tags were edited or truncated outside mlflow-integrity. "
            "Compare them with the registry's backup; then check again:",
            verify,
        )
    if status == "UNREADABLE":
        return (
            "Nothing is known about the bytes. Fix access to the store (the "
            "error above is the store's own), then check again:",
            verify,
        )
    if any(h.recoverable for h in result.object_history) and all(
        h.recoverable for h in result.object_history
    ):
        return (
            "Bytes that fail this check are never loaded. The bucket still "
            "holds every recorded object version that changed; to put them "
            "back (each is verified before it is copied):",
            f"mlflow-integrity restore {result.name} {result.version} --yes",
        )
    if result.pin is not None and result.expected != result.pin:
        return (
            "Either the deployment pins the wrong digest, or the version was "
            "re-recorded after the pin was taken. Deploy the version whose "
            "digest is pinned, or update the pin after checking this version:",
            verify,
        )
    return (
        "Bytes that fail this check are never loaded. If the change was "
        "intended, register the new "
        "bytes as a new version; otherwise restore the files listed above "
        "(from a backup or the store's version history) and check again:",
        verify,
    )


def render_result(result: VerifyResult) -> str:
    """A full, multi-line account of a result, ending with what to do next."""
    uri = result.model_uri
    headline = {
        "VERIFIED": "the stored artifact matches its recorded digest",
        "MODIFIED": "the artifact does not match its recorded digest",
        "MISSING": "files of the recorded artifact are missing",
        "EXTRA": "the artifact holds files that were not registered",
        "UNTAGGED": "the version has no recorded digest",
        "MALFORMED": "the integrity record of the version is malformed",
        "UNREADABLE": "the artifact store could not be read",
        "STALE": "the local copy is not what the URI names now",
    }.get(result.status, result.status.lower())
    if result.pin is not None and result.expected not in (None, result.pin):
        headline = "the registry's record is not the pinned digest"
    lines = [f"{uri}: {headline} ({result.status})."]
    if result.source:
        lines.append(f"  {'source':<{_LABEL_WIDTH}}  {result.source}")
    if result.expected is not None:
        when = ""
        if result.record is not None and result.record.recorded_at:
            when = f" (recorded {result.record.recorded_at}, {result.record.origin})"
        lines.append(f"  {'expected':<{_LABEL_WIDTH}}  {result.expected}{when}")
    if result.pin is not None:
        lines.append(f"  {'pinned':<{_LABEL_WIDTH}}  {result.pin}")
    if result.actual is not None:
        lines.append(f"  {'actual':<{_LABEL_WIDTH}}  {result.actual}")
    if result.detail:
        lines.append(f"  {'detail':<{_LABEL_WIDTH}}  {result.detail}")
    if result.mode != "deep":
        lines.append(
            f"  {'mode':<{_LABEL_WIDTH}}  {result.mode} (object metadata compared; "
            "objects whose metadata changed were re-read)"
        )
    algorithm = result.expected.algorithm if result.expected else "blake3"
    lines.extend(render_diff(result.diff, algorithm))
    for history in result.object_history:
        lines.append(
            textwrap.fill(
                history.describe(),
                width=_WRAP,
                initial_indent=f"  {'object':<{_LABEL_WIDTH}}  ",
                subsequent_indent=" " * (_LABEL_WIDTH + 4),
            )
        )
    if not result.ok:
        advice, command = _next_step(result)
        lines.append(textwrap.fill(advice, width=_WRAP))
        lines.append(f"    {command}")
    return "\n".join(lines)
