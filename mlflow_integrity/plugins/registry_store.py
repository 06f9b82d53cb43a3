"""The ``integrity+<scheme>`` model registry store.

A registry URI such as ``integrity+sqlite:///mlflow.db`` or
``integrity+http://tracking:5000`` wraps MLflow's own store for the inner URI.
Every other call passes straight through; these do not:

- ``create_model_version`` (and so ``mlflow.register_model``,
  ``log_model(registered_model_name=...)`` and ``copy_model_version``) hashes
  the stored artifact and records the digest in the create call. Integrity
  tags a client sends along are dropped: the digest is always computed here.
- ``transition_model_version_stage`` and ``set_registered_model_alias`` pass
  the gate (:mod:`mlflow_integrity.gate`) first.
- Setting or deleting a tag of the integrity record is refused; attestations
  (``integrity.attest.<deployment>``) may be written, if well-formed.

Prompts (registered models created as prompts) are left alone.

Run inside ``mlflow server --registry-store-uri integrity+<backend>``, this
enforces all of the above for every client, with or without the plugin, and
hashes ``mlflow-artifacts:`` sources from the server's artifacts destination.

A create whose hashing outlasts the client's HTTP timeout is retried by the
MLflow client. The retry waits for the first hashing (in the same server
process) and then finds the version it created: a version with the same name,
source and run created in the last ``DEDUP_WINDOW_SECONDS`` that already
records a digest is returned instead of registering a second one. Across
several server processes, two truly concurrent identical creates can still
both register.
"""

from __future__ import annotations

import abc
import inspect
import logging
import threading
import time
import urllib.parse
from datetime import UTC, datetime
from typing import Any

from mlflow.entities.model_registry import ModelVersionTag
from mlflow.store.model_registry.abstract_store import AbstractStore

from mlflow_integrity import _compat
from mlflow_integrity.errors import ConfigurationError, ProtectedTagError
from mlflow_integrity.gate import Attestation, GateResult, Policy, Target, check
from mlflow_integrity.registry import (
    ARTIFACT_SHA,
    ATTEST_PREFIX,
    Record,
    is_integrity_tag,
    is_record_tag,
)

_logger = logging.getLogger(__name__)

SCHEME_PREFIX = "integrity+"
DEDUP_WINDOW_SECONDS = 600
# Moving a version out of service needs no proof of its bytes.
_UNGATED_STAGES = frozenset({"none", "archived"})


def build(store_uri: str, tracking_uri: str | None = None) -> IntegrityRegistryStore:
    """Build the store for an ``integrity+<scheme>`` registry URI (entry point)."""
    if not store_uri.startswith(SCHEME_PREFIX):
        raise ConfigurationError(
            f"{store_uri!r} does not start with {SCHEME_PREFIX!r}."
        )
    inner_uri = store_uri[len(SCHEME_PREFIX) :]
    if inner_uri.startswith(SCHEME_PREFIX):
        raise ConfigurationError(f"{store_uri!r} wraps an integrity store twice.")
    inner = _compat.build_registry_store(inner_uri, tracking_uri)
    # The abstract methods are filled in by delegation below the class.
    return IntegrityRegistryStore(inner, store_uri, tracking_uri)  # type: ignore[abstract]


class IntegrityRegistryStore(AbstractStore):
    """Wraps a registry store so that digests are recorded and promotions gated."""

    def __init__(self, inner: Any, store_uri: str, tracking_uri: str | None = None):
        super().__init__(store_uri, tracking_uri)
        self._inner = inner
        self._store_uri = store_uri
        self._tracking_uri = tracking_uri
        self._creating: dict[tuple[str, str, str], threading.Lock] = {}
        self._creating_lock = threading.Lock()

    @property
    def inner(self) -> Any:
        """The wrapped MLflow store."""
        return self._inner

    def __getattr__(self, name: str) -> Any:
        # Private helpers of the inner store (MLflow's client reaches for
        # some, such as _await_model_version_creation).
        inner = self.__dict__.get("_inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)

    # --- where the bytes are ---------------------------------------------------

    def serving_location(self, location: str) -> str:
        """Inside ``mlflow server``, map ``mlflow-artifacts:`` to the artifacts
        destination, so the server reads its own store, not a client's URI."""
        destination = _compat.server_artifacts_destination()
        if destination is None or not location.startswith("mlflow-artifacts:"):
            return location
        path = urllib.parse.urlparse(location).path.lstrip("/")
        return f"{destination.rstrip('/')}/{path}"

    def _copy_source(self, source: str) -> Any:
        """The registered version a ``models:/<name>/<version|@alias>`` source
        names (a copy); None for other sources."""
        if not source.startswith("models:/"):
            return None
        body = source[len("models:/") :].strip("/")
        if body.startswith("m-"):
            return None
        name, _, selector = body.partition("/")
        if "@" in name:
            name, _, alias = name.partition("@")
            return self._inner.get_model_version_by_alias(name, alias)
        return self._inner.get_model_version(name, selector)

    def _location_of_source(self, source: str, model_id: str | None) -> str:
        if source.startswith("models:/"):
            body = source[len("models:/") :].strip("/")
            if body.startswith("m-") and "/" not in body:
                from mlflow import MlflowClient

                client = MlflowClient(tracking_uri=self._tracking_uri)
                return self.serving_location(
                    str(client.get_logged_model(body).artifact_location)
                )
            name, _, selector = body.partition("/")
            if "@" in name:
                name, _, alias = name.partition("@")
                selector = str(
                    self._inner.get_model_version_by_alias(name, alias).version
                )
            return self.serving_location(
                str(self._inner.get_model_version_download_uri(name, selector))
            )
        return self.serving_location(source)

    # --- prompts ---------------------------------------------------------------

    def _is_prompt_model(self, name: str) -> bool:
        try:
            model = self._inner.get_registered_model(name)
        except Exception:
            return False
        return _compat.is_prompt_model(model)

    def _is_prompt_version(self, name: str, tags: dict[str, str]) -> bool:
        if ARTIFACT_SHA in tags:
            return False
        return tags.get(_compat.prompt_tag_key()) == "true" and self._is_prompt_model(
            name
        )

    # --- recording -------------------------------------------------------------

    def create_model_version(
        self,
        name: str,
        source: str,
        run_id: str | None = None,
        tags: list[ModelVersionTag] | None = None,
        run_link: str | None = None,
        description: str | None = None,
        local_model_path: str | None = None,
        model_id: str | None = None,
    ) -> Any:
        """Hash the stored artifact, then create the version with its record."""
        tags = list(tags or [])
        passthrough = {
            "name": name,
            "source": source,
            "run_id": run_id,
            "run_link": run_link,
            "description": description,
            "local_model_path": local_model_path,
            "model_id": model_id,
        }
        if self._is_prompt_version(name, {t.key: t.value for t in tags}):
            return self._inner.create_model_version(tags=tags, **passthrough)

        dropped = sorted(t.key for t in tags if is_integrity_tag(t.key))
        if dropped:
            _logger.warning(
                "ignoring integrity tags sent with the create of %s: %s; the "
                "digest is computed from the stored artifact",
                name,
                ", ".join(dropped),
            )
        kept = [t for t in tags if not is_integrity_tag(t.key)]

        key = (name, source, run_id or "")
        with self._creation_lock(key):
            existing = self._recent_duplicate(name, source, run_id, kept, description)
            if existing is not None:
                _logger.info(
                    "create of %s from %s repeats models:/%s/%s (a retry); "
                    "returning that version",
                    name,
                    source,
                    existing.name,
                    existing.version,
                )
                return existing

            from mlflow_integrity.register import (
                default_algorithm,
                record_for,
                refuse_if_changed_since_recorded,
            )

            location = self._location_of_source(source, model_id)
            record = record_for(location, default_algorithm())
            refuse_if_changed_since_recorded(
                self._versions_of(name), record, self._copy_source(source)
            )
            record_tags = [ModelVersionTag(k, v) for k, v in record.to_tags().items()]
            mv = self._inner.create_model_version(
                tags=kept + record_tags, **passthrough
            )
        _logger.info(
            "models:/%s/%s recorded %s %s from %s",
            mv.name,
            mv.version,
            ARTIFACT_SHA,
            record.digest.short,
            location,
        )
        return mv

    def _creation_lock(self, key: tuple[str, str, str]) -> threading.Lock:
        with self._creating_lock:
            return self._creating.setdefault(key, threading.Lock())

    def _versions_of(self, name: str) -> list[Any]:
        try:
            return list(
                self._inner.search_model_versions(filter_string=f"name = '{name}'")
            )
        except Exception:
            return []

    def _recent_duplicate(
        self,
        name: str,
        source: str,
        run_id: str | None,
        tags: list[ModelVersionTag],
        description: str | None,
    ) -> Any:
        """A version this store created moments ago from an identical request
        (same source, run, tags and description): the one a retry repeats."""
        wanted = {t.key: t.value for t in tags}
        horizon = (time.time() - DEDUP_WINDOW_SECONDS) * 1000
        for mv in self._versions_of(name):
            mv_tags = dict(mv.tags or {})
            if (
                mv.source == source
                and (mv.run_id or None) == (run_id or None)
                and ARTIFACT_SHA in mv_tags
                and (mv.creation_timestamp or 0) >= horizon
                and (mv.description or None) == (description or None)
                and {k: v for k, v in mv_tags.items() if not is_integrity_tag(k)}
                == wanted
            ):
                return mv
        return None

    def copy_model_version(self, src_mv: Any, dst_name: str) -> Any:
        """Copy through this store, so that the copy is hashed and recorded."""
        return AbstractStore.copy_model_version(self, src_mv, dst_name)

    def write_record(self, name: str, version: str, record: Record) -> None:
        """Write a record computed by mlflow-integrity (backfill), past the
        tag protection; ``artifact_sha`` last."""
        for key, value in record.tags_in_write_order():
            self._inner.set_model_version_tag(
                name, version, ModelVersionTag(key, value)
            )

    # --- the gate --------------------------------------------------------------

    def gate(
        self, name: str, version: str, target: Target, policy: Policy | None = None
    ) -> GateResult | None:
        """Run the gate for a promotion; None for a prompt (not gated).

        Raises:
            PromotionRefusedError: if the gate refuses.
        """
        mv = self._inner.get_model_version(name, version)
        if self._is_prompt_version(name, dict(mv.tags or {})):
            return None
        source = self.serving_location(
            str(self._inner.get_model_version_download_uri(name, version))
        )
        outcome = check(mv, target, source, policy=policy or Policy.load())
        outcome.raise_for_status()
        return outcome

    def transition_model_version_stage(
        self, name: str, version: str, stage: str, archive_existing_versions: bool
    ) -> Any:
        """Gate, then transition (moving to None or Archived is not gated)."""
        if str(stage).lower() not in _UNGATED_STAGES:
            self.gate(name, str(version), Target(stage=stage))
        return self._inner.transition_model_version_stage(
            name, version, stage, archive_existing_versions
        )

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> Any:
        """Gate, then move the alias."""
        self.gate(name, str(version), Target(alias=alias))
        return self._inner.set_registered_model_alias(name, alias, version)

    # --- protected tags --------------------------------------------------------

    def set_model_version_tag(self, name: str, version: str, tag: Any) -> Any:
        """Refuse tags of the integrity record; validate attestations."""
        if is_record_tag(tag.key) or _compat.is_prompt_tag(tag.key):
            raise ProtectedTagError(
                f"Tag {tag.key!r} of models:/{name}/{version} is written by "
                "mlflow-integrity only and cannot be set through the API. To "
                "record a digest for an untagged version, run `mlflow-integrity "
                f"backfill --name {name} --version {version}` against the "
                "registry's backend store.",
                name=name,
                version=str(version),
            )
        if tag.key.startswith(ATTEST_PREFIX):
            try:
                claimed = Attestation.from_tag(tag.key, tag.value)
            except (ValueError, ConfigurationError) as exc:
                raise ConfigurationError(
                    f"models:/{name}/{version}: {exc}; write attestations with "
                    "mlflow_integrity.attest or `mlflow-integrity attest`."
                ) from None
            # The store dates the attestation itself: a writer chooses the
            # digest it claims to run, not when the claim was made.
            stamped = Attestation(
                claimed.deployment, claimed.digest, datetime.now(UTC), claimed.host
            )
            tag = ModelVersionTag(tag.key, stamped.to_tag_value())
        return self._inner.set_model_version_tag(name, version, tag)

    def delete_model_version_tag(self, name: str, version: str, key: str) -> Any:
        """Refuse deleting tags of the integrity record."""
        if is_record_tag(key) or _compat.is_prompt_tag(key):
            raise ProtectedTagError(
                f"Tag {key!r} of models:/{name}/{version} belongs to its "
                "integrity record and cannot be deleted through the API.",
                name=name,
                version=str(version),
            )
        return self._inner.delete_model_version_tag(name, version, key)

    def set_registered_model_tag(self, name: str, tag: Any) -> Any:
        """Refuse turning an existing model into a prompt (which the gate
        leaves alone)."""
        if _compat.is_prompt_tag(tag.key):
            raise ProtectedTagError(
                f"Tag {tag.key!r} is set when a prompt is created and cannot be "
                f"added to {name!r} afterwards.",
                name=name,
            )
        return self._inner.set_registered_model_tag(name, tag)


def _delegate(method_name: str) -> Any:
    default: Any = AbstractStore.__dict__.get(method_name)

    def method(self: IntegrityRegistryStore, *args: Any, **kwargs: Any) -> Any:
        # Where the inner store keeps MLflow's default implementation (the
        # prompt API, for one), that default is written in terms of other
        # store methods: run it on this wrapper, so that those calls are
        # recorded, gated and protected too, instead of reaching the inner
        # store unchecked.
        inner_impl: Any = getattr(type(self._inner), method_name, None)
        if inner_impl is not None and inner_impl is default:
            return inner_impl(self, *args, **kwargs)
        return getattr(self._inner, method_name)(*args, **kwargs)

    method.__name__ = method_name
    method.__doc__ = f"Passed through to the wrapped store's ``{method_name}``."
    return method


# Every other public method of the registry API goes straight to the inner
# store; AbstractStore's own implementations would otherwise run against
# this wrapper (some of them raise NotImplementedError).
for _name, _member in inspect.getmembers(AbstractStore, inspect.isfunction):
    if not _name.startswith("_") and _name not in IntegrityRegistryStore.__dict__:
        setattr(IntegrityRegistryStore, _name, _delegate(_name))
abc.update_abstractmethods(IntegrityRegistryStore)  # type: ignore[type-abstract]
