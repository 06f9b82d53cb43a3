"""Model URI parsing and the encoding of the integrity record in tags."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mlflow_integrity import registry
from mlflow_integrity.digest import Digest, Manifest
from mlflow_integrity.errors import ConfigurationError, MalformedTagError


def version_with(tags: dict[str, str]) -> SimpleNamespace:
    return SimpleNamespace(name="m", version="3", tags=tags)


def big_manifest(count: int) -> Manifest:
    entries = [
        (
            f"shard-{i:05d}/weights.bin",
            i,
            Digest.of_bytes("blake3", str(i).encode()).value,
        )
        for i in range(count)
    ]
    return Manifest.from_entries("blake3", entries)


@pytest.mark.parametrize(
    ("uri", "fields"),
    [
        ("models:/iris/3", {"name": "iris", "version": "3"}),
        ("models:/iris@champion", {"name": "iris", "alias": "champion"}),
        ("models:/iris/Production", {"name": "iris", "stage": "Production"}),
        ("models:/iris/latest", {"name": "iris", "stage": "latest"}),
    ],
)
def test_parse_model_uri(uri, fields):
    """The registry URI forms parse into name and selector."""
    ref = registry.parse_model_uri(uri)

    assert {k: getattr(ref, k) for k in fields} == fields


def test_parse_content_pin():
    """models:/name@blake3:<hex> is a content pin, not an alias."""
    pin = "blake3:" + "ab" * 32

    ref = registry.parse_model_uri(f"models:/iris@{pin}")

    assert ref.alias is None and str(ref.pin) == pin


@pytest.mark.parametrize(
    "uri", ["runs:/abc/model", "models:/", "models:/iris", "models:/iris@blake3:12"]
)
def test_unparseable_uris(uri):
    """Non-registry and incomplete URIs are configuration errors."""
    with pytest.raises(ConfigurationError):
        registry.parse_model_uri(uri)


def test_logged_model_uri_parses_to_a_model_id():
    """models:/m-<id> names a logged model, resolved to its registered version."""
    ref = registry.parse_model_uri("models:/m-0123456789abcdef")

    assert ref.model_id == "m-0123456789abcdef"


def test_record_round_trip():
    """A record written to tags reads back equal."""
    record = registry.Record.new(big_manifest(3), "file:///store/m")

    back = registry.read_record(version_with(record.to_tags()))

    assert back == record


def test_large_manifest_is_split_and_read_back():
    """A manifest too large for one tag is split in parts and reassembled."""
    record = registry.Record.new(big_manifest(5000), "s3://bucket/m")

    tags = record.to_tags()

    assert tags[registry.MANIFEST].startswith("parts:")
    assert all(len(v) <= 60_000 for v in tags.values())
    assert registry.read_record(version_with(tags)) == record


def test_missing_manifest_part_is_malformed():
    """A lost manifest part makes the record MALFORMED, not silently shorter."""
    tags = registry.Record.new(big_manifest(5000), "s3://bucket/m").to_tags()
    del tags[f"{registry.MANIFEST}.2"]

    with pytest.raises(MalformedTagError, match="models:/m/3"):
        registry.read_record(version_with(tags))


def test_untagged_reads_as_none():
    """A version without artifact_sha has no record."""
    assert registry.read_record(version_with({"team": "a"})) is None


@pytest.mark.parametrize(
    "edit",
    [
        {registry.ARTIFACT_SHA: "blake3:nothex"},
        {registry.MANIFEST: "zlib+base64:!!!"},
        {registry.MANIFEST: "gzip:abc"},
        {registry.MANIFEST: "parts:100000000"},
        {registry.MANIFEST: "parts:0"},
    ],
)
def test_garbled_tags_are_malformed(edit):
    """Digests and manifests that do not parse are MALFORMED, with the version."""
    tags = registry.Record.new(big_manifest(2), "file:///m").to_tags() | edit

    with pytest.raises(MalformedTagError) as caught:
        registry.read_record(version_with(tags))

    assert caught.value.status == "MALFORMED"
    assert "models:/m/3" in str(caught.value)


def test_integrity_tag_names():
    """artifact_sha and integrity.* are reserved; other tags are not."""
    assert registry.is_integrity_tag("artifact_sha")
    assert registry.is_integrity_tag("integrity.origin")
    assert not registry.is_integrity_tag("team")


def _listing_for(manifest: Manifest, versioned: bool = True):
    import hashlib

    from mlflow_integrity.stores import ObjectListing, StoredObject

    def token(i: int, salt: str) -> str:
        return hashlib.md5(f"{salt}{i}".encode()).hexdigest()

    objects = tuple(
        StoredObject(
            e.path,
            f"exp/m/{e.path}",
            token(i, "version") if versioned else None,
            token(i, "etag"),
            e.size,
            "2026-12-03T10:00:00Z",
        )
        for i, e in enumerate(manifest.files)
    )
    return ObjectListing("s3", "bucket", "exp/m", versioned, objects)


def test_object_versions_round_trip_and_split():
    """The object listing is kept beside the manifest, split like it."""
    manifest = big_manifest(3000)
    listing = _listing_for(manifest)
    record = registry.Record.new(manifest, "s3://bucket/exp/m", objects=listing)
    tags = record.to_tags()
    assert tags[registry.OBJECTS].startswith("parts:")

    back = registry.read_record(version_with(tags))
    assert back is not None and back.objects == listing


@pytest.mark.parametrize(
    "edit",
    [
        lambda listing: {**listing, "objects": listing["objects"][1:]},
        lambda listing: {**listing, "versioned": "yes"},
        lambda listing: {**listing, "extra": 1},
        lambda listing: {**listing, "objects": [[1, 2, 3]]},
    ],
)
def test_object_versions_that_do_not_match_the_manifest_are_malformed(edit):
    import json

    manifest = big_manifest(4)
    record = registry.Record.new(
        manifest, "s3://bucket/exp/m", objects=_listing_for(manifest)
    )
    edited = edit(record.objects.to_json())
    tags = {
        **record.to_tags(),
        **registry._encode_blob(registry.OBJECTS, json.dumps(edited).encode()),
    }
    with pytest.raises(MalformedTagError, match="object versions"):
        registry.read_record(version_with(tags))
