"""Content digests of model artifact trees (spec version 1, docs/digest-spec.md).

A model directory is reduced to a :class:`Manifest`: one entry per regular file,
with its canonical relative path, its size and the digest of its bytes. The
manifest has canonical bytes, and the hash of those bytes is the root
:class:`Digest` that is recorded on a model version as ``artifact_sha``.
"""

from __future__ import annotations

import errno
import hashlib
import io
import itertools
import logging
import os
import stat
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import blake3

from mlflow_integrity.errors import ConfigurationError, UnsafeArtifactError

_logger = logging.getLogger(__name__)

SPEC_VERSION = 1
ALGORITHMS = ("blake3", "sha256")
DEFAULT_ALGORITHM = "blake3"

# MLflow writes this file into a model directory whenever a ``models:/`` URI is
# downloaded, and into a local artifact store itself when no destination is
# given. Covering it would turn every plain MLflow download into a change.
IGNORED_ROOT_FILES = frozenset({"registered_model_meta"})

_HEADER_PREFIX = "mlflow-integrity-manifest/"

# Control characters and line separators could split a manifest line. An
# unassigned code point may be assigned by a later Unicode release with a
# combining class that makes NFC reorder it, which would change the digest of
# the same name between Python versions; assigned characters are NFC-stable.
_REFUSED_CATEGORIES = {
    "Cc": "a control character",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
    "Cn": "an unassigned code point",
    "Cs": "a lone surrogate",
}
_DIGEST_SIZE = 32

# Files at least this large are hashed by BLAKE3's multithreaded mmap path;
# below it, one sequential read loop over a reused buffer is faster (thread
# start-up and mapping cost more than they save). Measured in bench/.
MMAP_THRESHOLD = 4 * 1024 * 1024
_READ_SIZE = 1024 * 1024


class Hasher(Protocol):
    """The part of ``hashlib`` and ``blake3`` objects that hashing needs."""

    def update(self, data: bytes | memoryview, /) -> object: ...

    def digest(self) -> bytes: ...


def check_algorithm(algorithm: str) -> str:
    """Return ``algorithm`` if it is supported, else raise ConfigurationError."""
    if algorithm not in ALGORITHMS:
        raise ConfigurationError(
            f"Unsupported digest algorithm {algorithm!r}; "
            f"choose one of {', '.join(ALGORITHMS)}."
        )
    return algorithm


def new_hasher(algorithm: str) -> Hasher:
    """Return a fresh incremental hasher for ``algorithm``."""
    check_algorithm(algorithm)
    if algorithm == "blake3":
        return blake3.blake3()
    return hashlib.sha256()


@dataclass(frozen=True, order=True)
class Digest:
    """An algorithm and the bytes of a hash; ``str()`` gives ``algorithm:hex``."""

    algorithm: str
    value: bytes

    def __post_init__(self) -> None:
        check_algorithm(self.algorithm)
        if len(self.value) != _DIGEST_SIZE:
            raise ValueError(
                f"A {self.algorithm} digest has {_DIGEST_SIZE} bytes, "
                f"not {len(self.value)}."
            )

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.value.hex()}"

    @property
    def hex(self) -> str:
        """The digest as 64 lower-case hex characters."""
        return self.value.hex()

    @property
    def short(self) -> str:
        """``algorithm:`` and the first 12 hex characters, for log lines."""
        return f"{self.algorithm}:{self.value.hex()[:12]}"

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parse ``blake3:<64 hex>`` or ``sha256:<64 hex>``.

        Raises:
            ValueError: if the text is not a well-formed digest.
        """
        algorithm, sep, hex_part = text.strip().partition(":")
        if not sep or algorithm not in ALGORITHMS:
            raise ValueError(
                f"{text!r} is not a digest; expected 'blake3:<64 hex>' or "
                "'sha256:<64 hex>'."
            )
        if len(hex_part) != 2 * _DIGEST_SIZE or hex_part != hex_part.lower():
            raise ValueError(
                f"{text!r} is not a digest: the hex part must be "
                f"{2 * _DIGEST_SIZE} lower-case hex characters."
            )
        try:
            value = bytes.fromhex(hex_part)
        except ValueError:
            raise ValueError(f"{text!r} is not a digest: bad hex.") from None
        return cls(algorithm, value)

    @classmethod
    def of_bytes(cls, algorithm: str, data: bytes) -> Digest:
        """Hash ``data`` in memory."""
        hasher = new_hasher(algorithm)
        hasher.update(data)
        return cls(algorithm, hasher.digest())


def _is_lower_hex(text: str) -> bool:
    return all(ch in "0123456789abcdef" for ch in text)


@dataclass(frozen=True, order=True)
class FileEntry:
    """One covered file: canonical path, size in bytes, digest of its bytes."""

    path: str
    size: int
    digest: bytes

    @property
    def sort_key(self) -> bytes:
        """The canonical order: the UTF-8 bytes of the path."""
        return self.path.encode("utf-8")


@dataclass(frozen=True)
class FileChange:
    """A file whose expected and actual entries differ (either may be absent)."""

    path: str
    expected: FileEntry | None
    actual: FileEntry | None


@dataclass(frozen=True)
class ManifestDiff:
    """What differs between an expected and an actual manifest, sorted by path."""

    modified: tuple[FileChange, ...] = ()
    missing: tuple[FileChange, ...] = ()
    extra: tuple[FileChange, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.modified or self.missing or self.extra)

    @property
    def changes(self) -> tuple[FileChange, ...]:
        """Every change, sorted by path."""
        every = self.modified + self.missing + self.extra
        return tuple(sorted(every, key=lambda c: c.path.encode("utf-8")))


def canonical_path(raw: str) -> str:
    """Return the canonical form of a relative path, or raise.

    The path uses ``/`` separators; it is normalised to Unicode NFC and must not
    be absolute, contain empty, ``.`` or ``..`` segments, control characters
    (C0, DEL, C1), line or paragraph separators, or unassigned code points.

    Raises:
        UnsafeArtifactError: if the path cannot be covered safely.
    """
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafeArtifactError(
            f"File name {raw!r} is not valid UTF-8 and cannot be covered by a "
            "digest; rename the file."
        ) from None
    path = unicodedata.normalize("NFC", raw)
    if not path or path.startswith("/"):
        raise UnsafeArtifactError(
            f"Path {raw!r} is absolute or empty; only paths relative to the "
            "model root can be covered."
        )
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            raise UnsafeArtifactError(
                f"Path {raw!r} has an empty, '.' or '..' segment and could "
                "escape the model root; refusing it."
            )
    for ch in path:
        category = unicodedata.category(ch)
        if category in _REFUSED_CATEGORIES:
            raise UnsafeArtifactError(
                f"Path {raw!r} contains {_REFUSED_CATEGORIES[category]} "
                f"(U+{ord(ch):04X}), which the canonical manifest does not "
                "admit; rename the file."
            )
    return path


@dataclass(frozen=True)
class Manifest:
    """The covered files of a model tree, sorted by the UTF-8 bytes of paths."""

    algorithm: str
    files: tuple[FileEntry, ...] = field(default=())

    def __post_init__(self) -> None:
        check_algorithm(self.algorithm)
        ordered = tuple(sorted(self.files, key=lambda e: e.sort_key))
        object.__setattr__(self, "files", ordered)
        for before, after in itertools.pairwise(ordered):
            if before.path == after.path:
                raise UnsafeArtifactError(
                    f"Two entries have the path {after.path!r} (names equal "
                    "after Unicode NFC normalisation count as one); rename "
                    "one of them."
                )

    @classmethod
    def from_entries(
        cls, algorithm: str, entries: Iterable[tuple[str, int, bytes]]
    ) -> Manifest:
        """Build a manifest from raw ``(path, size, digest)`` triples.

        Paths are made canonical; the root ``registered_model_meta`` file is
        dropped.

        Raises:
            UnsafeArtifactError: for a path that cannot be covered, or two paths
                that are equal after NFC normalisation.
        """
        files = []
        for raw_path, size, digest in entries:
            path = canonical_path(raw_path)
            if path in IGNORED_ROOT_FILES:
                continue
            files.append(FileEntry(path, size, digest))
        return cls(algorithm, tuple(files))

    def canonical_bytes(self) -> bytes:
        """The bytes the root digest is computed over (see the spec)."""
        lines = [f"{_HEADER_PREFIX}{SPEC_VERSION} {self.algorithm}\n"]
        lines.extend(f"{e.digest.hex()} {e.size} {e.path}\n" for e in self.files)
        return "".join(lines).encode("utf-8")

    def root_digest(self) -> Digest:
        """The root digest: the hash of :meth:`canonical_bytes`."""
        return Digest.of_bytes(self.algorithm, self.canonical_bytes())

    @property
    def total_size(self) -> int:
        """The sum of the covered files' sizes, in bytes."""
        return sum(e.size for e in self.files)

    def by_path(self) -> dict[str, FileEntry]:
        """The entries keyed by canonical path."""
        return {e.path: e for e in self.files}

    @classmethod
    def parse(cls, data: bytes) -> Manifest:
        """Parse canonical manifest bytes, strictly.

        Raises:
            ValueError: unless ``data`` is exactly what :meth:`canonical_bytes`
                of the parsed manifest returns.
        """
        text = data.decode("utf-8")
        if not text.endswith("\n"):
            raise ValueError("A canonical manifest ends with a newline.")
        header, *rows = text[:-1].split("\n")
        prefix, _, algorithm = header.partition(" ")
        if prefix != f"{_HEADER_PREFIX}{SPEC_VERSION}" or algorithm not in ALGORITHMS:
            raise ValueError(f"Unknown manifest header {header!r}.")
        files = []
        for row in rows:
            hex_part, _, rest = row.partition(" ")
            size_part, _, path = rest.partition(" ")
            if (
                len(hex_part) != 2 * _DIGEST_SIZE
                or not _is_lower_hex(hex_part)
                or not size_part.isdigit()
                or not path
            ):
                raise ValueError(f"Malformed manifest line {row!r}.")
            try:
                canonical = canonical_path(path)
            except UnsafeArtifactError as exc:
                raise ValueError(f"Manifest line {row!r}: {exc.message}") from None
            if canonical != path or path in IGNORED_ROOT_FILES:
                raise ValueError(f"Manifest line {row!r} has a non-canonical path.")
            files.append(FileEntry(path, int(size_part), bytes.fromhex(hex_part)))
        try:
            manifest = cls(algorithm, tuple(files))
        except UnsafeArtifactError as exc:
            raise ValueError(exc.message) from None
        if manifest.canonical_bytes() != data:
            raise ValueError("Manifest bytes are not in canonical form.")
        return manifest

    def diff(self, actual: Manifest) -> ManifestDiff:
        """Compare this (expected) manifest with an ``actual`` one.

        Raises:
            ValueError: if the two manifests use different algorithms.
        """
        if actual.algorithm != self.algorithm:
            raise ValueError(
                f"Cannot compare a {self.algorithm} manifest with a "
                f"{actual.algorithm} one; hash again with {self.algorithm}."
            )
        expected_files = self.by_path()
        actual_files = actual.by_path()
        modified, missing, extra = [], [], []
        for path, want in expected_files.items():
            got = actual_files.get(path)
            if got is None:
                missing.append(FileChange(path, want, None))
            elif got != want:
                modified.append(FileChange(path, want, got))
        for path, got in actual_files.items():
            if path not in expected_files:
                extra.append(FileChange(path, None, got))
        return ManifestDiff(tuple(modified), tuple(missing), tuple(extra))


# --- hashing local trees -----------------------------------------------------


def open_regular(path: str) -> tuple[io.FileIO, os.stat_result]:
    """Open a file for reading only if it is a regular file, without following
    a symlink at the last step and without blocking on a FIFO.

    Raises:
        UnsafeArtifactError: if the path is not a regular file (any more).
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeArtifactError(
                f"{path} became a symlink while the tree was read."
            ) from None
        raise
    raw = io.FileIO(fd, "rb", closefd=True)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raw.close()
        raise UnsafeArtifactError(f"{path} is not a regular file.")
    return raw, info


def hash_open_file(
    raw: io.FileIO,
    algorithm: str,
    buffer: bytearray,
    sink: Callable[[memoryview], object] | None = None,
) -> tuple[int, bytes]:
    """Hash an open file with one reused buffer, passing each chunk to ``sink``."""
    view = memoryview(buffer)
    hasher = new_hasher(algorithm)
    size = 0
    while n := raw.readinto(buffer):
        chunk = view[:n]
        hasher.update(chunk)
        if sink is not None:
            sink(chunk)
        size += n
    return size, hasher.digest()


def check_unchanged(
    path: str, before: os.stat_result, raw: io.FileIO, size_read: int
) -> None:
    """Refuse a file that a writer changed while it was read: the bytes read
    must be its size when opened and now, and its times must not have moved.

    Raises:
        UnsafeArtifactError: if the file changed during the read.
    """
    after = os.fstat(raw.fileno())
    if (
        size_read != before.st_size
        or after.st_size != before.st_size
        or after.st_mtime_ns != before.st_mtime_ns
    ):
        raise UnsafeArtifactError(
            f"{path} changed while it was being hashed ({before.st_size} bytes "
            f"when opened, {size_read} read, {after.st_size} now); something is "
            "still writing it. Hash again once the writer has finished."
        )


def hash_file(
    path: str,
    algorithm: str = DEFAULT_ALGORITHM,
    *,
    buffer: bytearray | None = None,
    private: bool = False,
) -> tuple[int, bytes]:
    """Hash one local file; return its size and digest.

    Args:
        path: the file.
        algorithm: ``blake3`` or ``sha256``.
        buffer: a read buffer to reuse (one per tree, not per file).
        private: the file lies in a private copy that nothing else writes.
            Only then are large BLAKE3 inputs hashed through the multithreaded
            mmap path, about twice as fast as the read loop here: a mapped
            file that another process truncates kills the reader with SIGBUS,
            which no Python code can catch, so files in a shared store are
            always read with the loop.

    Raises:
        UnsafeArtifactError: if the path is not a regular file, or the file
            changed while it was being read.
    """
    if buffer is None:
        buffer = bytearray(_READ_SIZE)
    raw, before = open_regular(path)
    with raw:
        if private and algorithm == "blake3" and before.st_size >= MMAP_THRESHOLD:
            hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
            hasher.update_mmap(path)
            size, digest = before.st_size, hasher.digest()
        else:
            size, digest = hash_open_file(raw, algorithm, buffer)
        check_unchanged(path, before, raw, size)
    return size, digest


def iter_tree(root: str) -> Iterator[tuple[str, str]]:
    """Yield ``(relative posix path, absolute path)`` of every covered file.

    Directories are walked in sorted order; symlinks are followed only while
    they stay inside ``root``.

    Raises:
        UnsafeArtifactError: for a symlink that leaves the tree or dangles, and
            for anything that is neither a regular file nor a directory.
    """
    real_root = os.path.realpath(root)
    if not os.path.isdir(real_root):
        raise UnsafeArtifactError(f"{root} is not a directory.")
    yield from _walk(real_root, "", real_root, {real_root})


def _walk(
    directory: str, prefix: str, real_root: str, active: set[str]
) -> Iterator[tuple[str, str]]:
    with os.scandir(directory) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        rel = prefix + entry.name
        full = entry.path
        if entry.is_symlink():
            target = os.path.realpath(full)
            if target != real_root and not target.startswith(real_root + os.sep):
                raise UnsafeArtifactError(
                    f"Symlink {rel!r} points outside the model directory "
                    f"(to {target}); copy the file into the model instead."
                )
            if not os.path.exists(target):
                raise UnsafeArtifactError(f"Symlink {rel!r} dangles.")
            full = target
        mode = os.stat(full).st_mode
        if stat.S_ISREG(mode):
            # Refuse a bad name before any byte is hashed, not after.
            canonical_path(rel)
            yield rel, full
        elif stat.S_ISDIR(mode):
            real_dir = os.path.realpath(full)
            if real_dir in active:
                raise UnsafeArtifactError(
                    f"Symlink {rel!r} loops back to a directory that contains it."
                )
            active.add(real_dir)
            yield from _walk(full, rel + "/", real_root, active)
            active.discard(real_dir)
        else:
            raise UnsafeArtifactError(
                f"{rel!r} is neither a regular file nor a directory "
                "(a socket, FIFO or device); a model cannot contain it."
            )


def hash_tree(
    root: str, algorithm: str = DEFAULT_ALGORITHM, *, private: bool = False
) -> Manifest:
    """Hash every covered file under a local directory.

    Args:
        root: the model directory.
        algorithm: ``blake3`` or ``sha256``.
        private: the tree is a private copy that nothing else writes (see
            :func:`hash_file`).

    Raises:
        UnsafeArtifactError: for paths or links that cannot be covered.
    """
    check_algorithm(algorithm)
    buffer = bytearray(_READ_SIZE)
    entries = []
    for rel, full in iter_tree(root):
        if rel in IGNORED_ROOT_FILES:
            continue
        size, digest = hash_file(full, algorithm, buffer=buffer, private=private)
        _logger.debug("hashed %s (%d bytes)", rel, size)
        entries.append((rel, size, digest))
    return Manifest.from_entries(algorithm, entries)
