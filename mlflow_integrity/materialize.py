"""Atomic local deploys: verified, content-addressed copies behind ``current``.

``pull`` lays a destination folder out like this::

    DEST/
      blake3-<hex>/          a verified copy, named after its digest
      blake3-<hex>.json      what it is: model URI, version, when it was pulled
      current -> blake3-<hex>
      .staging/              downloads in progress (never a model name)

A copy is downloaded into ``.staging``, verified, renamed into place, and only
then is ``current`` switched, by renaming a new symlink over the old one (an
atomic step on POSIX). ``current`` is re-verified after the switch; if that
fails it is switched back. A pull that is killed or fails leaves ``current``
on the last good copy, and nothing outside ``.staging`` that could be taken
for a model. The last ``keep`` copies stay, for :func:`rollback`. Pulls into one folder
take turns (an advisory lock on ``DEST/.lock``); each clears what a killed
pull left in ``.staging``.

:func:`watch` (``pull --watch``) follows an alias: it polls the registry every
``interval`` seconds and pulls each newly named version that verifies; one
that does not verify is logged and skipped (not downloaded again until the
URI names another version or digest), and ``current`` stays.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from mlflow_integrity.digest import Digest, hash_tree
from mlflow_integrity.errors import ConfigurationError, DigestMismatchError
from mlflow_integrity.load import download_verified
from mlflow_integrity.stores import remove_tree

_logger = logging.getLogger(__name__)

CURRENT = "current"
STAGING = ".staging"


@dataclass(frozen=True)
class Deployed:
    """A verified copy under a pull destination."""

    path: str
    digest: Digest
    model_uri: str
    pulled_at: str

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


def copy_name(digest: Digest) -> str:
    """The folder name of a copy: ``blake3-<hex>``."""
    return f"{digest.algorithm}-{digest.hex}"


def _verify_copy(path: str, digest: Digest) -> bool:
    try:
        return hash_tree(path, digest.algorithm).root_digest() == digest
    except Exception:
        return False


def _switch(dest: str, name: str) -> None:
    link = os.path.join(dest, CURRENT)
    tmp = os.path.join(dest, f".{CURRENT}.{os.getpid()}")
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(name, tmp)
    os.replace(tmp, link)


def current(dest: str) -> Deployed | None:
    """The copy ``current`` points at, or None."""
    link = os.path.join(dest, CURRENT)
    if not os.path.islink(link):
        return None
    return _describe(dest, os.readlink(link))


def _describe(dest: str, name: str) -> Deployed | None:
    meta = os.path.join(dest, f"{name}.json")
    try:
        with open(meta) as f:
            data = json.load(f)
        return Deployed(
            os.path.join(dest, name),
            Digest.parse(data["digest"]),
            data["model_uri"],
            data["pulled_at"],
        )
    except (OSError, ValueError, KeyError):
        return None


def deployed(dest: str) -> list[Deployed]:
    """Every copy under ``dest``, newest first."""
    found = []
    for entry in os.listdir(dest) if os.path.isdir(dest) else []:
        if entry.endswith(".json"):
            copy = _describe(dest, entry[: -len(".json")])
            if copy is not None and os.path.isdir(copy.path):
                found.append(copy)
    return sorted(found, key=lambda c: c.pulled_at, reverse=True)


def pull(
    model_uri: str,
    dest: str,
    *,
    expected: str | Digest | None = None,
    keep: int = 3,
) -> Deployed:
    """Download, verify, and switch ``DEST/current`` to the version.

    Raises:
        IntegrityError: the download did not verify; ``current`` is unchanged.
        ConfigurationError: for a bad URI, pin or ``keep``.
    """
    if keep < 1:
        raise ConfigurationError("keep must be at least 1 (the current copy).")
    staging = os.path.join(dest, STAGING)
    os.makedirs(staging, exist_ok=True)
    with _locked(dest):
        # Under the lock no other pull runs here: what is left in .staging
        # is what a killed pull left behind.
        for leftover in os.listdir(staging):
            remove_tree(os.path.join(staging, leftover))
        return _pull_locked(model_uri, dest, expected, keep)


@contextlib.contextmanager
def _locked(dest: str) -> Iterator[None]:
    """Serialise pulls into one destination (an advisory lock on DEST/.lock)."""
    with open(os.path.join(dest, ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _pull_locked(
    model_uri: str, dest: str, expected: str | Digest | None, keep: int
) -> Deployed:
    copy = download_verified(
        model_uri, expected=expected, parent_dir=os.path.join(dest, STAGING)
    )
    digest = copy.digest
    assert digest is not None and copy.result.version is not None
    name = copy_name(digest)
    target = os.path.join(dest, name)
    try:
        if os.path.isdir(target) and _verify_copy(target, digest):
            _logger.info("%s already holds %s", dest, digest.short)
        else:
            if os.path.lexists(target):
                shutil.rmtree(target)
            os.rename(copy.path, target)
    finally:
        remove_tree(os.path.dirname(copy.path))
    record = Deployed(target, digest, copy.model_uri, datetime.now(UTC).isoformat())
    with open(f"{target}.json", "w") as f:
        json.dump(
            {
                "digest": str(digest),
                "model_uri": record.model_uri,
                "pulled_at": record.pulled_at,
                "source": copy.result.source,
            },
            f,
        )

    previous = current(dest)
    _switch(dest, name)
    if not _verify_copy(os.path.join(dest, CURRENT), digest):
        if previous is not None:
            _switch(dest, previous.name)
        raise DigestMismatchError(
            f"{dest}/current did not verify after switching to {name}; it was "
            "switched back. Something else writes this folder.",
            name=copy.result.name,
            version=copy.result.version,
            expected=str(digest),
        )
    _logger.info("%s/current -> %s (%s)", dest, name, record.model_uri)
    _prune(dest, keep)
    return record


def _prune(dest: str, keep: int) -> None:
    live = os.readlink(os.path.join(dest, CURRENT))
    copies = deployed(dest)
    kept = [c for c in copies if c.name == live] + [c for c in copies if c.name != live]
    for old in kept[keep:]:
        remove_tree(old.path)
        os.unlink(f"{old.path}.json")


def rollback(dest: str) -> Deployed:
    """Switch ``current`` back to the newest other copy that still verifies.

    Raises:
        ConfigurationError: if there is no other good copy.
    """
    now = current(dest)
    for candidate in deployed(dest):
        if now is not None and candidate.name == now.name:
            continue
        if _verify_copy(candidate.path, candidate.digest):
            _switch(dest, candidate.name)
            _logger.info("%s/current rolled back to %s", dest, candidate.name)
            return candidate
        _logger.warning("%s no longer verifies; skipped", candidate.path)
    raise ConfigurationError(
        f"{dest} holds no other copy that verifies; nothing to roll back to."
    )


MIN_INTERVAL = 1.0
MAX_INTERVAL = 3600.0


def watch(
    model_uri: str,
    dest: str,
    *,
    interval: float = 30.0,
    keep: int = 3,
    max_polls: int | None = None,
) -> None:
    """Keep ``DEST/current`` on what ``model_uri`` names, polling the registry.

    Args:
        model_uri: usually ``models:/<name>@<alias>``.
        dest: the pull destination.
        interval: seconds between polls, from 1 to 3600.
        keep: copies to keep.
        max_polls: stop after this many polls (None: until interrupted).

    Raises:
        ConfigurationError: for an interval out of range.
    """
    import time

    from mlflow import MlflowClient

    from mlflow_integrity.errors import IntegrityError
    from mlflow_integrity.registry import ARTIFACT_SHA, resolve

    if not MIN_INTERVAL <= interval <= MAX_INTERVAL:
        raise ConfigurationError(
            f"--interval must be between {MIN_INTERVAL:g} and {MAX_INTERVAL:g} s."
        )
    client = MlflowClient()
    refused: tuple[str, str | None] | None = None
    polls = 0
    while max_polls is None or polls < max_polls:
        polls += 1
        named: tuple[str, str | None] | None = None
        try:
            mv = resolve(client, model_uri).model_version
            named = (str(mv.version), mv.tags.get(ARTIFACT_SHA))
            live = current(dest)
            # A target that was refused is not downloaded again until the
            # URI names something else.
            if named != refused and (live is None or named[1] != str(live.digest)):
                pull(model_uri, dest, keep=keep)
        except IntegrityError as err:
            refused = named
            _logger.warning(
                "%s: not switching, %s stays: %s",
                model_uri,
                CURRENT,
                err.message.splitlines()[0],
            )
        time.sleep(interval)
