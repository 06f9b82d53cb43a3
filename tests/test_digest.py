"""Tests for mlflow_integrity.digest: values, manifests, tree hashing, vectors.

The golden vectors in ``tests/golden/digest_vectors.json`` pin digest spec
version 1. Set ``MLFLOW_INTEGRITY_REGEN_GOLDEN=1`` to recompute their expected
values when adding a vector. An existing vector must never change: that would
break the promise that every recorded digest verifies under every later
release. If regeneration changes one, it still rewrites the file (so the
difference can be inspected with git) but fails, naming the vectors.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import unicodedata
from pathlib import Path
from typing import Any

import blake3
import pytest

from mlflow_integrity import digest
from mlflow_integrity.digest import (
    ALGORITHMS,
    MMAP_THRESHOLD,
    Digest,
    FileEntry,
    Manifest,
    canonical_path,
    hash_file,
    hash_tree,
    iter_tree,
)
from mlflow_integrity.errors import ConfigurationError, UnsafeArtifactError

GOLDEN_PATH = Path(__file__).parent / "golden" / "digest_vectors.json"
SPEC_PATH = Path(__file__).parent.parent / "docs" / "digest-spec.md"
REGENERATE = os.environ.get("MLFLOW_INTEGRITY_REGEN_GOLDEN") == "1"

# Digests of the empty input, from the algorithms' own published test vectors,
# so the empty-file test does not only compare the code with itself.
BLAKE3_EMPTY = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
SHA256_EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

HEADER_BLAKE3 = b"mlflow-integrity-manifest/1 blake3\n"
HEX_A = "ab" * 32


# --- helpers -----------------------------------------------------------------


def _read_golden() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(GOLDEN_PATH.read_text(encoding="utf-8"))
    return data


def _content(spec: dict[str, Any]) -> bytes:
    if "base64" in spec:
        data = base64.b64decode(spec["base64"], validate=True)
    else:
        data = spec["text"].encode("utf-8")
    return data * int(spec.get("repeat", 1))


def build_tree(root: Path, files: list[dict[str, Any]]) -> Path:
    """Create the files and directories a vector describes under ``root``."""
    for spec in files:
        target = root / spec["path"]
        if spec.get("directory"):
            target.mkdir(parents=True, exist_ok=True)
            continue

        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(_content(spec))
    return root


def write_files(root: Path, files: dict[str, bytes]) -> Path:
    """Create ``{relative path: bytes}`` under ``root``; return ``root``."""
    return build_tree(
        root,
        [{"path": p, "base64": base64.b64encode(b).decode()} for p, b in files.items()],
    )


def root_of(path: Path, algorithm: str = "blake3") -> str:
    return str(hash_tree(str(path), algorithm).root_digest())


def _expected_for(root: Path) -> dict[str, dict[str, str]]:
    expected = {}
    for algorithm in ALGORITHMS:
        manifest = hash_tree(str(root), algorithm)
        expected[algorithm] = {
            "root": str(manifest.root_digest()),
            "manifest": manifest.canonical_bytes().decode("utf-8"),
        }
    return expected


def _regenerate(data: dict[str, Any], tmp_factory: pytest.TempPathFactory) -> list[str]:
    changed = []
    for vector in data["trees"]:
        root = build_tree(tmp_factory.mktemp("regen"), vector["files"])
        expected = _expected_for(root)
        if "expected" in vector and vector["expected"] != expected:
            changed.append(vector["name"])
        vector["expected"] = expected
    GOLDEN_PATH.write_text(
        json.dumps(data, indent=2, ensure_ascii=True) + "\n", encoding="utf-8"
    )
    return changed


_GOLDEN_INPUT = _read_golden()
TREE_NAMES = [v["name"] for v in _GOLDEN_INPUT["trees"]]
REFUSED_NAMES = [v["name"] for v in _GOLDEN_INPUT["refused"]]


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The golden vectors by name, recomputed first when the flag asks."""
    data = _read_golden()
    if REGENERATE:
        changed = _regenerate(data, tmp_path_factory)
        assert not changed, (
            f"Regeneration changed the recorded digests of {changed}; digests "
            "already written by a release would stop verifying. Restore the "
            "file with git and fix the code; a deliberate change of the digest "
            "needs a new spec version, with vectors of its own."
        )
    vectors = data["trees"] + data["refused"]
    return {v["name"]: v for v in vectors}


# --- golden vectors ----------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("name", TREE_NAMES)
def test_golden_tree_reproduces_recorded_digest(
    golden: dict[str, dict[str, Any]], name: str, algorithm: str, tmp_path: Path
) -> None:
    """Each golden tree hashes to its recorded manifest bytes and root digest."""
    vector = golden[name]
    root = build_tree(tmp_path, vector["files"])

    manifest = hash_tree(str(root), algorithm)

    want = vector["expected"][algorithm]
    assert manifest.canonical_bytes() == want["manifest"].encode("utf-8")
    assert str(manifest.root_digest()) == want["root"]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("name", TREE_NAMES)
def test_golden_manifest_parses_and_hashes_to_root(
    golden: dict[str, dict[str, Any]], name: str, algorithm: str
) -> None:
    """A recorded manifest parses and hashes to its root without the tree."""
    want = golden[name]["expected"][algorithm]
    data = want["manifest"].encode("utf-8")

    manifest = Manifest.parse(data)

    assert manifest.canonical_bytes() == data
    assert str(manifest.root_digest()) == want["root"]
    assert want["root"] == f"{algorithm}:" + _independent_hash(algorithm, data)


def _independent_hash(algorithm: str, data: bytes) -> str:
    if algorithm == "blake3":
        return blake3.blake3(data).hexdigest()
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("name", REFUSED_NAMES)
def test_golden_refused_tree_raises(
    golden: dict[str, dict[str, Any]], name: str, tmp_path: Path
) -> None:
    """Each refused golden tree raises UnsafeArtifactError with either algorithm."""
    root = build_tree(tmp_path, golden[name]["files"])

    for algorithm in ALGORITHMS:
        with pytest.raises(UnsafeArtifactError):
            hash_tree(str(root), algorithm)


def test_spec_document_shows_golden_vectors(
    golden: dict[str, dict[str, Any]],
) -> None:
    """The spec quotes the manifest and root of every vector marked in_spec."""
    spec = SPEC_PATH.read_text(encoding="utf-8")

    for vector in golden.values():
        if not vector.get("in_spec"):
            continue
        for algorithm in ALGORITHMS:
            want = vector["expected"][algorithm]
            assert f"`{want['root']}`" in spec, (vector["name"], algorithm)
            assert f"```text\n{want['manifest']}```" in spec, (
                vector["name"],
                algorithm,
            )


# --- Digest --------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_digest_parse_round_trips(algorithm: str) -> None:
    """A well-formed digest parses to its algorithm and bytes and prints back."""
    text = f"{algorithm}:{HEX_A}"

    parsed = Digest.parse(text)

    assert parsed.algorithm == algorithm
    assert parsed.value == bytes.fromhex(HEX_A)
    assert str(parsed) == text
    assert parsed.hex == HEX_A
    assert parsed.short == f"{algorithm}:{HEX_A[:12]}"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "blake3",
        "blake3:",
        HEX_A,
        f"md5:{HEX_A}",
        f"BLAKE3:{HEX_A}",
        f"blake3:{HEX_A.upper()}",
        f"blake3:{HEX_A[:-1]}",
        f"blake3:{HEX_A}a",
        f"blake3:{HEX_A[:-2]}zz",
        f"blake3:{HEX_A[:-2]}  ",
        f"blake3:{HEX_A[:32]} {HEX_A[33:]}",
        f"blake3:{HEX_A}:x",
        f"blake3={HEX_A}",
    ],
)
def test_digest_parse_refuses_malformed_text(text: str) -> None:
    """Anything but a known algorithm, a colon and 64 lower-case hex is refused."""
    with pytest.raises(ValueError):
        Digest.parse(text)


def test_digest_refuses_wrong_length_and_unknown_algorithm() -> None:
    """A Digest needs 32 bytes and a supported algorithm."""
    with pytest.raises(ValueError):
        Digest("blake3", b"\x00" * 31)
    with pytest.raises(ConfigurationError):
        Digest("md5", b"\x00" * 32)


def test_digest_of_bytes_matches_the_libraries() -> None:
    """Digest.of_bytes agrees with blake3 and hashlib directly."""
    data = b"mlflow-integrity"

    assert Digest.of_bytes("blake3", data).value == blake3.blake3(data).digest()
    assert Digest.of_bytes("sha256", data).value == hashlib.sha256(data).digest()


# --- canonical paths -------------------------------------------------------------


def test_canonical_path_normalises_to_nfc() -> None:
    """A decomposed (NFD) name becomes its composed (NFC) form."""
    nfd = unicodedata.normalize("NFD", "données/modèle.pkl")

    assert canonical_path(nfd) == unicodedata.normalize("NFC", nfd)
    assert canonical_path("a b/100%:v1.txt") == "a b/100%:v1.txt"


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "/etc/passwd",
        "..",
        "../outside",
        "a/../../b",
        "a/..",
        "./a",
        "a/./b",
        "a//b",
        "a/",
        "a\nb",
        "a\rb",
        "a\tb",
        "a\x00b",
        "a\x7fb",
        "bad\udcffname",
    ],
)
def test_canonical_path_refuses_unsafe_paths(raw: str) -> None:
    """Escaping, empty-segment, control-character and non-UTF-8 paths are refused."""
    with pytest.raises(UnsafeArtifactError):
        canonical_path(raw)


# --- Manifest bytes --------------------------------------------------------------


def _manifest(*rows: tuple[str, int, bytes], algorithm: str = "blake3") -> Manifest:
    return Manifest.from_entries(algorithm, rows)


def test_manifest_parse_round_trips() -> None:
    """Canonical bytes parse back to an equal manifest with the same bytes."""
    manifest = _manifest(
        ("b/c d.txt", 12, b"\x01" * 32),
        ("a", 0, b"\x02" * 32),
        ("é", 7, b"\x03" * 32),
    )
    data = manifest.canonical_bytes()

    parsed = Manifest.parse(data)

    assert parsed == manifest
    assert parsed.canonical_bytes() == data
    assert [e.path for e in parsed.files] == ["a", "b/c d.txt", "é"]
    assert parsed.total_size == 19


def test_manifest_with_no_files_is_the_header_alone() -> None:
    """An empty manifest is exactly the header line and parses back."""
    manifest = Manifest("sha256")

    assert manifest.canonical_bytes() == b"mlflow-integrity-manifest/1 sha256\n"
    assert Manifest.parse(manifest.canonical_bytes()) == manifest


_ROW = f"{HEX_A} 5 a\n"


@pytest.mark.parametrize(
    "data",
    [
        HEADER_BLAKE3 + _ROW.encode()[:-1],
        HEADER_BLAKE3 + _ROW.encode() + b"\n",
        b"mlflow-integrity-manifest/2 blake3\n" + _ROW.encode(),
        HEADER_BLAKE3 + _ROW.replace(" 5 ", " 05 ").encode(),
        HEADER_BLAKE3 + _ROW.replace(" 5 ", " +5 ").encode(),
        HEADER_BLAKE3 + _ROW.replace(" 5 ", " -5 ").encode(),
        HEADER_BLAKE3 + _ROW.replace(" 5 ", "  5 ").encode(),
        HEADER_BLAKE3 + _ROW.replace(" 5 ", " 5").encode(),
        HEADER_BLAKE3 + _ROW.upper().encode(),
        HEADER_BLAKE3 + f"{'AB' * 32} 5 a\n".encode(),
        HEADER_BLAKE3 + f"{HEX_A} 5 b\n{HEX_A} 5 a\n".encode(),
        HEADER_BLAKE3 + f"{HEX_A} 5 a\xff\n".encode("latin-1"),
    ],
    ids=[
        "no-final-newline",
        "blank-line",
        "spec-2-header",
        "leading-zero-size",
        "plus-sign-size",
        "negative-size",
        "two-spaces-before-size",
        "no-path",
        "upper-case-everything",
        "upper-case-hex",
        "unsorted",
        "not-utf8",
    ],
)
def test_manifest_parse_refuses_non_canonical_bytes(data: bytes) -> None:
    """Bytes that are not exactly canonical are refused with ValueError."""
    with pytest.raises(ValueError):
        Manifest.parse(data)


def test_manifest_parse_refuses_duplicate_paths() -> None:
    """A manifest naming one path twice is refused."""
    with pytest.raises((ValueError, UnsafeArtifactError)):
        Manifest.parse(HEADER_BLAKE3 + (_ROW * 2).encode())


@pytest.mark.parametrize(
    "row",
    [
        "abcd 5 a",
        " 5 a",
        f"{HEX_A} 5 ../outside",
        f"{HEX_A} 5 /etc/passwd",
        f"{HEX_A} 5 a//b",
        f"{HEX_A} 5 a\tb",
        f"{HEX_A} 5 a\r",
        f"{HEX_A} 5 cafe\u0301",
        f"{HEX_A} 5 registered_model_meta",
    ],
    ids=[
        "short-digest",
        "empty-digest",
        "dotdot",
        "absolute",
        "empty-segment",
        "tab",
        "crlf",
        "nfd",
        "ignored-root-file",
    ],
)
def test_manifest_parse_refuses_rows_hash_tree_cannot_produce(row: str) -> None:
    """A row with a non-32-byte digest or a non-canonical path is refused."""
    with pytest.raises(ValueError):
        Manifest.parse(HEADER_BLAKE3 + f"{row}\n".encode())


@pytest.mark.parametrize("algorithm", ["md5", " blake3", "blake3 x", ""])
def test_manifest_parse_refuses_unknown_algorithm_with_value_error(
    algorithm: str,
) -> None:
    """An unknown algorithm in the header is a malformed manifest (ValueError)."""
    with pytest.raises(ValueError):
        Manifest.parse(f"mlflow-integrity-manifest/1 {algorithm}\n".encode())


def test_manifest_refuses_names_equal_after_nfc() -> None:
    """Two entries whose names are equal after NFC are refused."""
    with pytest.raises(UnsafeArtifactError):
        _manifest(("caf\u00e9", 1, b"\x01" * 32), ("cafe\u0301", 1, b"\x02" * 32))


def test_from_entries_drops_only_the_root_registered_model_meta() -> None:
    """from_entries drops registered_model_meta at the root only."""
    manifest = _manifest(
        ("registered_model_meta", 1, b"\x01" * 32),
        ("sub/registered_model_meta", 1, b"\x02" * 32),
    )

    assert [e.path for e in manifest.files] == ["sub/registered_model_meta"]


# --- diff ----------------------------------------------------------------------


def _d(n: int) -> bytes:
    return bytes([n]) * 32


def test_diff_reports_modified_missing_and_extra_sorted() -> None:
    """The diff lists modified, missing and extra files in byte order, both sides."""
    expected = _manifest(
        ("é", 4, _d(1)),
        ("a", 5, _d(2)),
        ("Z", 6, _d(3)),
        ("same", 7, _d(4)),
        ("gone/b", 8, _d(5)),
        ("gone/a", 9, _d(6)),
        ("resized", 10, _d(7)),
    )
    actual = _manifest(
        ("é", 4, _d(11)),
        ("a", 5, _d(12)),
        ("Z", 6, _d(3)),
        ("same", 7, _d(4)),
        ("resized", 11, _d(7)),
        ("new/z", 1, _d(13)),
        ("new/y", 2, _d(14)),
    )

    diff = expected.diff(actual)

    assert diff
    assert [c.path for c in diff.modified] == ["a", "resized", "é"]
    assert [c.path for c in diff.missing] == ["gone/a", "gone/b"]
    assert [c.path for c in diff.extra] == ["new/y", "new/z"]
    assert [c.path for c in diff.changes] == [
        "a",
        "gone/a",
        "gone/b",
        "new/y",
        "new/z",
        "resized",
        "é",
    ]

    by_path = {c.path: c for c in diff.changes}
    assert by_path["a"].expected == FileEntry("a", 5, _d(2))
    assert by_path["a"].actual == FileEntry("a", 5, _d(12))
    assert by_path["resized"].expected is not None
    assert by_path["resized"].actual is not None
    assert by_path["resized"].expected.size == 10
    assert by_path["resized"].actual.size == 11
    assert by_path["gone/a"].expected == FileEntry("gone/a", 9, _d(6))
    assert by_path["gone/a"].actual is None
    assert by_path["new/y"].expected is None
    assert by_path["new/y"].actual == FileEntry("new/y", 2, _d(14))


def test_diff_of_equal_manifests_is_empty() -> None:
    """Two equal manifests have an empty, falsy diff."""
    manifest = _manifest(("a", 1, _d(1)))

    diff = manifest.diff(_manifest(("a", 1, _d(1))))

    assert not diff
    assert diff.changes == ()


def test_diff_refuses_different_algorithms() -> None:
    """Manifests of different algorithms cannot be compared."""
    with pytest.raises(ValueError):
        _manifest(algorithm="blake3").diff(_manifest(algorithm="sha256"))


# --- what the digest covers ----------------------------------------------------


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A small model-shaped tree: a root file, a nested one, an empty one."""
    return write_files(
        tmp_path / "model",
        {
            "MLmodel": b"flavors: {}\n",
            "data/model.pkl": bytes(range(200)),
            "data/empty": b"",
        },
    )


def test_mode_and_timestamps_do_not_change_the_digest(model_dir: Path) -> None:
    """chmod and os.utime leave the root digest unchanged."""
    before = root_of(model_dir)

    target = model_dir / "data" / "model.pkl"
    target.chmod(0o600)
    os.utime(target, (1_000_000_000, 1_000_000_000))
    os.utime(model_dir / "data", (1, 1))

    assert root_of(model_dir) == before


def _flip_byte(root: Path) -> None:
    target = root / "data" / "model.pkl"
    data = bytearray(target.read_bytes())
    data[100] ^= 0x01
    target.write_bytes(bytes(data))


def _truncate(root: Path) -> None:
    with open(root / "data" / "model.pkl", "r+b") as f:
        f.truncate(199)


def _delete(root: Path) -> None:
    (root / "data" / "empty").unlink()


def _add(root: Path) -> None:
    (root / "data" / "extra.txt").write_bytes(b"")


def _rename(root: Path) -> None:
    (root / "MLmodel").rename(root / "MLmodel.bak")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize(
    "change", [_flip_byte, _truncate, _delete, _add, _rename], ids=lambda f: f.__name__
)
def test_any_content_or_name_change_changes_the_digest(
    model_dir: Path, change: Any, algorithm: str
) -> None:
    """A flipped byte, truncation, deletion, added file or rename changes the root."""
    before = root_of(model_dir, algorithm)

    change(model_dir)

    assert root_of(model_dir, algorithm) != before


def test_root_registered_model_meta_is_ignored(model_dir: Path) -> None:
    """registered_model_meta at the root is ignored, wherever MLflow writes it."""
    before = root_of(model_dir)

    (model_dir / "registered_model_meta").write_text("model_name: m\n")

    assert root_of(model_dir) == before
    paths = [e.path for e in hash_tree(str(model_dir)).files]
    assert "registered_model_meta" not in paths


def test_registered_model_meta_in_a_subfolder_is_covered(model_dir: Path) -> None:
    """A registered_model_meta below the root is an ordinary covered file."""
    before = root_of(model_dir)

    (model_dir / "data" / "registered_model_meta").write_text("model_name: m\n")

    assert root_of(model_dir) != before
    paths = [e.path for e in hash_tree(str(model_dir)).files]
    assert "data/registered_model_meta" in paths


def test_empty_directories_are_not_covered(model_dir: Path) -> None:
    """Adding an empty directory leaves the root digest unchanged."""
    before = root_of(model_dir)

    (model_dir / "logs" / "nested").mkdir(parents=True)

    assert root_of(model_dir) == before


@pytest.mark.parametrize(
    ("algorithm", "empty_hex"), [("blake3", BLAKE3_EMPTY), ("sha256", SHA256_EMPTY)]
)
def test_empty_file_is_covered_with_the_empty_input_digest(
    tmp_path: Path, algorithm: str, empty_hex: str
) -> None:
    """An empty file is listed with size 0 and the digest of no bytes."""
    write_files(tmp_path, {"empty": b""})

    manifest = hash_tree(str(tmp_path), algorithm)

    assert manifest.files == (FileEntry("empty", 0, bytes.fromhex(empty_hex)),)
    header = f"mlflow-integrity-manifest/1 {algorithm}\n"
    assert manifest.canonical_bytes() == f"{header}{empty_hex} 0 empty\n".encode()


def test_nfd_and_nfc_names_give_the_same_digest(tmp_path: Path) -> None:
    """The same name written in NFD or in NFC hashes to the same root."""
    name = "modèle/poids é.bin"
    nfc = write_files(tmp_path / "nfc", {unicodedata.normalize("NFC", name): b"w"})
    nfd = write_files(tmp_path / "nfd", {unicodedata.normalize("NFD", name): b"w"})

    assert root_of(nfc) == root_of(nfd)
    assert hash_tree(str(nfd)).files[0].path == unicodedata.normalize("NFC", name)


def test_names_colliding_after_nfc_are_refused(tmp_path: Path) -> None:
    """Two files whose names are equal after NFC are refused."""
    write_files(tmp_path, {"caf\u00e9": b"1", "cafe\u0301": b"2"})

    with pytest.raises(UnsafeArtifactError):
        hash_tree(str(tmp_path))


def test_control_character_in_a_name_is_refused(tmp_path: Path) -> None:
    """A file whose name holds a newline is refused."""
    write_files(tmp_path, {"bad\nname": b"x"})

    with pytest.raises(UnsafeArtifactError):
        hash_tree(str(tmp_path))


def test_non_utf8_name_is_refused(tmp_path: Path) -> None:
    """A file whose name is not valid UTF-8 is refused."""
    with open(os.path.join(os.fsencode(tmp_path), b"bad\xffname"), "wb") as f:
        f.write(b"x")

    with pytest.raises(UnsafeArtifactError):
        hash_tree(str(tmp_path))


def test_fifo_is_refused(tmp_path: Path) -> None:
    """A FIFO in the tree is refused rather than read."""
    os.mkfifo(tmp_path / "pipe")

    with pytest.raises(UnsafeArtifactError):
        hash_tree(str(tmp_path))


def test_root_that_is_not_a_directory_is_refused(tmp_path: Path) -> None:
    """hash_tree of a plain file is refused."""
    (tmp_path / "file").write_bytes(b"x")

    with pytest.raises(UnsafeArtifactError):
        hash_tree(str(tmp_path / "file"))


def test_tree_with_no_files_hashes_to_the_header_alone(tmp_path: Path) -> None:
    """A tree with no files has a header-only manifest."""
    (tmp_path / "empty-dir").mkdir()

    manifest = hash_tree(str(tmp_path))

    assert manifest.canonical_bytes() == HEADER_BLAKE3
    assert manifest.root_digest().value == blake3.blake3(HEADER_BLAKE3).digest()


# --- symlinks ------------------------------------------------------------------


def test_symlink_inside_the_tree_is_followed(model_dir: Path) -> None:
    """A link to a file or folder inside the tree is hashed as the target's bytes."""
    os.symlink("model.pkl", model_dir / "data" / "alias.pkl")
    os.symlink("data", model_dir / "data-link")

    manifest = hash_tree(str(model_dir))

    files = manifest.by_path()
    assert files["data/alias.pkl"].digest == files["data/model.pkl"].digest
    assert files["data/alias.pkl"].size == 200
    assert files["data-link/model.pkl"].digest == files["data/model.pkl"].digest


def test_symlink_pointing_outside_the_tree_is_refused(
    model_dir: Path, tmp_path: Path
) -> None:
    """A link to a file outside the tree is refused."""
    outside = tmp_path / "secret"
    outside.write_bytes(b"not part of the model")
    os.symlink(outside, model_dir / "data" / "leak")

    with pytest.raises(UnsafeArtifactError):
        hash_tree(str(model_dir))


def test_relative_symlink_escaping_through_dotdot_is_refused(model_dir: Path) -> None:
    """A "../" link out to a sibling named like the root plus a suffix is refused."""
    (model_dir.parent / "model-sibling").write_bytes(b"not part of the model")
    os.symlink("../../model-sibling", model_dir / "data" / "up")

    with pytest.raises(UnsafeArtifactError):
        hash_tree(str(model_dir))


def test_dangling_symlink_is_refused(model_dir: Path) -> None:
    """A link whose target does not exist is refused."""
    os.symlink("does-not-exist", model_dir / "data" / "dangling")

    with pytest.raises(UnsafeArtifactError):
        hash_tree(str(model_dir))


def test_symlink_loop_is_refused(model_dir: Path) -> None:
    """A link back to a containing folder, or to itself, is refused."""
    os.symlink("..", model_dir / "data" / "up")

    with pytest.raises(UnsafeArtifactError):
        hash_tree(str(model_dir))

    (model_dir / "data" / "up").unlink()
    os.symlink("self", model_dir / "self")

    with pytest.raises(UnsafeArtifactError):
        hash_tree(str(model_dir))


# --- large files and the two hashing paths -------------------------------------


def _data(size: int) -> bytes:
    return random.Random(size).randbytes(size)


@pytest.mark.parametrize(
    "size",
    [MMAP_THRESHOLD - 1, MMAP_THRESHOLD, MMAP_THRESHOLD + 12_345],
    ids=["below", "at", "above"],
)
def test_file_around_mmap_threshold_hashes_like_the_libraries(
    tmp_path: Path, size: int
) -> None:
    """Files on either side of MMAP_THRESHOLD hash as blake3 and hashlib do."""
    data = _data(size)
    target = tmp_path / "weights.bin"
    target.write_bytes(data)

    assert hash_file(str(target), "blake3") == (size, blake3.blake3(data).digest())
    assert hash_file(str(target), "sha256") == (size, hashlib.sha256(data).digest())


def test_sparse_file_above_mmap_threshold_hashes_like_the_libraries(
    tmp_path: Path,
) -> None:
    """A sparse file larger than MMAP_THRESHOLD hashes like its zero bytes."""
    size = 2 * MMAP_THRESHOLD + 1
    target = tmp_path / "sparse.bin"
    with open(target, "wb") as f:
        f.truncate(size)
    zeros = bytes(size)

    manifest = hash_tree(str(tmp_path), "blake3")

    assert manifest.files == (
        FileEntry("sparse.bin", size, blake3.blake3(zeros).digest()),
    )
    assert hash_file(str(target), "sha256")[1] == hashlib.sha256(zeros).digest()


def test_read_loop_handles_sizes_that_are_not_buffer_multiples(tmp_path: Path) -> None:
    """The read loop hashes sizes just off multiples of its buffer correctly."""
    buffer_size = digest._READ_SIZE
    for size in (1, buffer_size - 1, buffer_size, buffer_size + 1):
        data = _data(size)
        target = tmp_path / f"f{size}"
        target.write_bytes(data)

        assert hash_file(str(target), "sha256") == (size, hashlib.sha256(data).digest())
        assert hash_file(str(target), "blake3") == (size, blake3.blake3(data).digest())


@pytest.mark.parametrize(
    "name",
    ["next\u0085line", "line\u2028sep", "para\u2029sep", "gap\u0378", "c1\u009b"],
    ids=["U+0085", "U+2028", "U+2029", "unassigned-U+0378", "C1-CSI"],
)
def test_canonical_path_refuses_separators_c1_and_unassigned(name: str) -> None:
    """C1 controls, line/paragraph separators and unassigned code points are
    refused, so a name can never split a line or normalise two ways."""
    with pytest.raises(UnsafeArtifactError, match=r"U\+"):
        canonical_path(f"dir/{name}")


def test_bad_name_is_refused_before_hashing(tmp_path: Path) -> None:
    """A tree with a bad name is refused by the walk itself."""
    (tmp_path / "ok.bin").write_bytes(b"x")
    (tmp_path / "bad\u0085name").write_bytes(b"y")

    with pytest.raises(UnsafeArtifactError, match="U\\+0085"):
        list(iter_tree(str(tmp_path)))


def test_hash_file_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    """hash_file on a FIFO raises at once instead of waiting for a writer."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)

    with pytest.raises(UnsafeArtifactError, match="not a regular file"):
        hash_file(str(fifo))


def test_private_and_shared_paths_agree(tmp_path: Path) -> None:
    """The mmap path (private copies) and the read loop give the same digest."""
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(MMAP_THRESHOLD + 12345))

    assert hash_file(str(big), private=True) == hash_file(str(big), private=False)
