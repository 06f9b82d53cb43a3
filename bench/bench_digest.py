"""Benchmark mlflow_integrity.digest against the raw libraries and other tools.

Creates one large file and many small ones in a fresh temporary directory,
warms the page cache so every case measures CPU rather than the disk, then
times, in the same run and on the same bytes:

* our ``hash_file`` and ``hash_tree`` with BLAKE3 and SHA-256;
* the baselines they are compared with: ``blake3.blake3(max_threads=AUTO)``
  with ``update_mmap``, and ``hashlib.file_digest(f, "sha256")``;
* ``b3sum`` and ``sha256sum`` when they are on PATH;
* model-signing's file-level serialization, when it is importable.

It then measures peak memory of our hashing in a subprocess, for two file
sizes, and sweeps ``MMAP_THRESHOLD`` and ``_READ_SIZE`` so that the two
constants in digest.py can be checked against figures.

Run ``python bench/bench_digest.py --help`` for the options; the README next
to this file shows a full run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import blake3

from mlflow_integrity import digest

GIB = 1024**3
MIB = 1024**2
KIB = 1024

_UNITS = {"": 1, "K": KIB, "M": MIB, "G": GIB}


def parse_size(text: str) -> int:
    """Parse ``2G``, ``512M``, ``64K`` or a plain number of bytes."""
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = text[-1:] if text[-1:] in _UNITS else ""
    number = text[: len(text) - len(unit)]
    return int(float(number) * _UNITS[unit])


def human(size: float) -> str:
    """Format a byte count with a binary unit."""
    for unit, factor in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if size >= factor:
            return f"{size / factor:.4g} {unit}"
    return f"{size:.0f} B"


# --- the data ------------------------------------------------------------------


def write_file(path: str, size: int, seed: int) -> None:
    """Write ``size`` pseudo-random bytes; a repeated 16 MiB block is enough."""
    block = random.Random(seed).randbytes(min(size, 16 * MIB))
    with open(path, "wb") as f:
        remaining = size
        while remaining:
            chunk = block[: min(remaining, len(block))]
            f.write(chunk)
            remaining -= len(chunk)


def make_small_tree(root: str, count: int, low: int, high: int) -> int:
    """Write ``count`` files, sizes log-uniform in [low, high]; return bytes."""
    rng = random.Random(2024)
    block = rng.randbytes(high)
    total = 0
    for i in range(count):
        folder = os.path.join(root, f"shard-{i % 20:02d}")
        os.makedirs(folder, exist_ok=True)
        size = int(math.exp(rng.uniform(math.log(low), math.log(high))))
        start = rng.randrange(0, high - size + 1)
        with open(os.path.join(folder, f"part-{i:05d}.bin"), "wb") as f:
            f.write(block[start : start + size])
        total += size
    return total


def list_files(root: str) -> list[str]:
    """Every file under ``root``, in a stable order."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        found.extend(os.path.join(dirpath, name) for name in sorted(filenames))
    return found


def warm(paths: list[str]) -> None:
    """Read every file once so later reads come from the page cache."""
    buffer = bytearray(4 * MIB)
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while f.readinto(buffer):
                pass


# --- timing --------------------------------------------------------------------


@dataclass
class Row:
    """One measured case."""

    name: str
    size: int
    seconds: float | None
    baseline: str | None = None
    note: str = ""


def best_of(repeat: int, fn: Callable[[], object]) -> tuple[float, object]:
    """Run ``fn`` ``repeat`` times; return the best wall time and last result."""
    best = math.inf
    result: object = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def best_of_each(
    repeat: int, cases: Mapping[str, Callable[[], object]]
) -> dict[str, float]:
    """Best wall time of each case, running them in turn ``repeat`` times.

    Taking turns spreads any slow period of a shared machine over all the
    cases instead of penalising whichever happened to run during it.
    """
    best = dict.fromkeys(cases, math.inf)
    for _ in range(repeat):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


@contextlib.contextmanager
def patched(**values: Any) -> Iterator[None]:
    """Temporarily set module constants of mlflow_integrity.digest."""
    saved = {k: getattr(digest, k) for k in values}
    for k, v in values.items():
        setattr(digest, k, v)
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(digest, k, v)


def print_table(title: str, rows: list[Row]) -> None:
    """Print rows with seconds, GiB/s and the ratio to their baseline."""
    times = {r.name: r.seconds for r in rows}
    width = max(len(r.name) for r in rows)
    print(f"\n{title}")
    print(f"  {'case':<{width}}  {'seconds':>8}  {'GiB/s':>7}  {'vs baseline':>11}")
    for r in rows:
        if r.seconds is None:
            print(f"  {r.name:<{width}}  {'-':>8}  {'-':>7}  {'-':>11}  {r.note}")
            continue

        rate = r.size / GIB / r.seconds
        base = times.get(r.baseline) if r.baseline else None
        ratio = f"{r.seconds / base:.2f}x" if base else "baseline"
        line = f"  {r.name:<{width}}  {r.seconds:8.3f}  {rate:7.2f}  {ratio:>11}"
        print(f"{line}  {r.note}".rstrip())


def _run_quiet(argv: list[str]) -> Callable[[], object]:
    def run() -> object:
        return subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)

    return run


def _import_model_signing_hashing() -> Any:
    try:
        from model_signing import hashing as ms_hashing
    except ModuleNotFoundError as exc:
        if not exc.name or exc.name.startswith("model_signing"):
            return None
    else:
        return ms_hashing

    # model-signing 1.1.1's package __init__ also imports its signing modules,
    # which need pyOpenSSL, a dependency it does not declare. Its hashing layer
    # needs none of that, so load the package without running __init__.
    spec = importlib.util.find_spec("model_signing")
    if spec is None or spec.submodule_search_locations is None:
        return None
    for name in [n for n in sys.modules if n.split(".")[0] == "model_signing"]:
        del sys.modules[name]
    package = types.ModuleType("model_signing")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    sys.modules["model_signing"] = package
    return importlib.import_module("model_signing.hashing")


def _model_signing_hasher(algorithm: str) -> Callable[[str], object] | None:
    ms_hashing = _import_model_signing_hashing()
    if ms_hashing is None:
        return None

    config = ms_hashing.Config().use_file_serialization(hashing_algorithm=algorithm)
    return lambda path: config.hash(path)


def _raw_blake3_mmap(path: str) -> bytes:
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    hasher.update_mmap(path)
    return hasher.digest()


def _file_digest_sha256(path: str) -> bytes:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").digest()


def _per_file(fn: Callable[[str], bytes], paths: list[str]) -> list[bytes]:
    return [fn(p) for p in paths]


def _blake3_read(path: str) -> bytes:
    with open(path, "rb") as f:
        return blake3.blake3(f.read()).digest()


def _read_loop_threaded(path: str, chunk: int = 16 * MIB) -> bytes:
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    buffer = bytearray(chunk)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            hasher.update(view[:n])
    return hasher.digest()


Case = tuple[str, Callable[[], object] | str, str]


def _measure(repeat: int, size: int, cases: list[Case]) -> list[Row]:
    """Time ``(name, callable or skip note, baseline name)`` cases in turns."""
    runnable = {name: fn for name, fn, _ in cases if callable(fn)}
    times = best_of_each(repeat, runnable)
    rows = []
    for name, fn, baseline in cases:
        if callable(fn):
            rows.append(Row(name, size, times[name], baseline or None))
        else:
            rows.append(Row(name, size, None, note=fn))
    return rows


def _cli(argv: list[str]) -> Callable[[], object] | str:
    tool = argv[0]
    if shutil.which(tool) is None:
        how = (
            " (apt-get install b3sum, or cargo install b3sum)"
            if tool == "b3sum"
            else ""
        )
        return f"skipped: {tool} is not on PATH{how}"
    return _run_quiet(argv)


def _model_signing(algorithm: str, directory: str) -> Callable[[], object] | str:
    hasher = _model_signing_hasher(algorithm)
    if hasher is None:
        return "skipped: model_signing is not importable"
    return lambda: hasher(directory)


def bench_big(path: str, size: int, repeat: int) -> list[Row]:
    """Time every tool on the one large file."""
    directory = os.path.dirname(path)
    b3 = "blake3 update_mmap AUTO"
    sha = "hashlib.file_digest sha256"

    assert digest.hash_file(path, "blake3") == (size, _raw_blake3_mmap(path))
    assert digest.hash_file(path, "sha256") == (size, _file_digest_sha256(path))
    return _measure(
        repeat,
        size,
        [
            (
                "ours blake3, private copy (mmap)",
                lambda: digest.hash_file(path, private=True),
                b3,
            ),
            ("ours blake3, shared store (loop)", lambda: digest.hash_file(path), b3),
            (b3, lambda: _raw_blake3_mmap(path), ""),
            ("read 16 MiB + blake3 AUTO", lambda: _read_loop_threaded(path), b3),
            ("b3sum --no-names", _cli(["b3sum", "--no-names", path]), b3),
            ("model-signing files blake3", _model_signing("blake3", directory), b3),
            ("ours hash_file sha256", lambda: digest.hash_file(path, "sha256"), sha),
            (sha, lambda: _file_digest_sha256(path), ""),
            ("sha256sum", _cli(["sha256sum", path]), sha),
            ("model-signing files sha256", _model_signing("sha256", directory), sha),
        ],
    )


def bench_small(root: str, paths: list[str], size: int, repeat: int) -> list[Row]:
    """Time every tool on the tree of many small files."""
    b3 = "read+blake3 per file"
    sha = "file_digest sha256 per file"
    rows = _measure(
        repeat,
        size,
        [
            ("ours hash_tree blake3", lambda: digest.hash_tree(root), b3),
            (b3, lambda: _per_file(_blake3_read, paths), ""),
            (
                "update_mmap AUTO per file",
                lambda: _per_file(_raw_blake3_mmap, paths),
                b3,
            ),
            ("b3sum --no-names", _cli(["b3sum", "--no-names", *paths]), b3),
            ("model-signing files blake3", _model_signing("blake3", root), b3),
            ("ours hash_tree sha256", lambda: digest.hash_tree(root, "sha256"), sha),
            (sha, lambda: _per_file(_file_digest_sha256, paths), ""),
            ("sha256sum", _cli(["sha256sum", *paths]), sha),
            ("model-signing files sha256", _model_signing("sha256", root), sha),
        ],
    )
    for row in rows:
        if row.name in (b3, sha):
            row.note = "(file list given, no walk)"
    return rows


# --- memory --------------------------------------------------------------------

# Runs in a fresh interpreter so the figures hold only what hashing needs.
# Peak RSS comes from VmHWM, not resource.getrusage: on Linux ru_maxrss keeps
# the high-water mark of the address space the child was forked from, so it
# reports the size of this benchmark process instead. A thread samples RssAnon
# (memory the process allocated) and RssFile (page-cache pages mapped into it,
# which an mmap of the input brings in and the kernel can drop at will) while
# the hash runs; both libraries release the GIL on large inputs.
_RSS_PROBE = r"""
import json, sys, threading, time
from mlflow_integrity import digest

def status():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0])
    return out

mode, path, algorithm = sys.argv[1:4]
start = status()
peak = dict(start)
done = threading.Event()

def sample():
    while not done.is_set():
        for key, value in status().items():
            peak[key] = max(peak[key], value)
        time.sleep(0.002)

sampler = threading.Thread(target=sample)
sampler.start()
if mode == "file":
    digest.hash_file(path, algorithm, private=True)
else:
    digest.hash_tree(path, algorithm, private=True)
done.set()
sampler.join()
end = status()
print(json.dumps({
    "hwm_start": start["VmHWM"],
    "hwm_end": end["VmHWM"],
    "anon_start": start["RssAnon"],
    "anon_peak": peak["RssAnon"],
    "file_peak": peak["RssFile"],
}))
"""


def measure_rss(mode: str, path: str, algorithm: str) -> dict[str, int]:
    """Peak memory, in KiB, of one hash_file/hash_tree call in a subprocess."""
    out = subprocess.run(
        [sys.executable, "-c", _RSS_PROBE, mode, path, algorithm],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    figures: dict[str, int] = json.loads(out)
    return figures


def print_rss(cases: list[tuple[str, str, str, str, int]]) -> None:
    """Print peak memory for each ``(label, mode, path, algorithm, size)``."""
    print("\nPeak memory of our hashing, one fresh subprocess per case (MiB)")
    print(
        f"  {'case':<31} {'input':>10} {'peak RSS':>9} {'before':>7} "
        f"{'anon peak':>9} {'anon before':>11} {'file-backed peak':>16}"
    )
    for label, mode, path, algorithm, size in cases:
        r = {k: v / 1024 for k, v in measure_rss(mode, path, algorithm).items()}
        print(
            f"  {label:<31} {human(size):>10} {r['hwm_end']:9.1f} "
            f"{r['hwm_start']:7.1f} {r['anon_peak']:9.1f} {r['anon_start']:11.1f} "
            f"{r['file_peak']:16.1f}"
        )
    print(
        "  (peak RSS is VmHWM; 'before' is after imports, before hashing; "
        "file-backed pages are page cache mapped by mmap, not allocations)"
    )


# --- tuning the two constants ---------------------------------------------------


def make_tuning_sets(root: str, sizes: list[int], total: int) -> dict[int, str]:
    """One folder per file size, each holding about ``total`` bytes."""
    folders = {}
    for size in sizes:
        folder = os.path.join(root, f"{size // KIB}KiB")
        os.makedirs(folder)
        for i in range(max(8, total // size)):
            write_file(os.path.join(folder, f"f{i:05d}"), size, seed=size + i)
        folders[size] = folder
    return folders


def tune_threshold(folders: dict[int, str], repeat: int) -> None:
    """Compare the mmap path and the read loop for BLAKE3 at each file size."""
    print("\nMMAP_THRESHOLD: hash_tree blake3 over files of one size (GiB/s)")
    print(
        f"  {'file size':>10} {'files':>6} {'read loop':>10} {'mmap AUTO':>10}  faster"
    )
    for size, folder in folders.items():
        count = len(os.listdir(folder))
        total = size * count

        def loop(f: str = folder) -> object:
            with patched(MMAP_THRESHOLD=1 << 62):
                return digest.hash_tree(f, "blake3")

        def mapped(f: str = folder) -> object:
            with patched(MMAP_THRESHOLD=0):
                return digest.hash_tree(f, "blake3", private=True)

        t = best_of_each(repeat, {"loop": loop, "mmap": mapped})
        faster = "mmap" if t["mmap"] < t["loop"] else "loop"
        ratio = max(t.values()) / min(t.values())
        print(
            f"  {human(size):>10} {count:6d} {total / GIB / t['loop']:10.2f} "
            f"{total / GIB / t['mmap']:10.2f}  {faster} by {ratio:.2f}x"
        )


def tune_read_size(cases: list[tuple[str, str, str]], repeat: int) -> None:
    """Time the read loop with several buffer sizes."""
    read_sizes = [64 * KIB, 128 * KIB, 256 * KIB, 512 * KIB, MIB, 2 * MIB, 4 * MIB]
    print("\n_READ_SIZE: hash_tree through the read loop (GiB/s)")
    header = "".join(f"{human(s):>10}" for s in read_sizes)
    print(f"  {'case':<34}{header}")
    for label, folder, algorithm in cases:
        total = sum(os.path.getsize(p) for p in list_files(folder))

        def one(read_size: int, f: str = folder, a: str = algorithm) -> object:
            with patched(_READ_SIZE=read_size, MMAP_THRESHOLD=1 << 62):
                return digest.hash_tree(f, a)

        runs = {str(r): functools.partial(one, r) for r in read_sizes}
        t = best_of_each(repeat, runs)
        cells = "".join(f"{total / GIB / t[str(r)]:10.2f}" for r in read_sizes)
        print(f"  {label:<34}{cells}")


# --- main ----------------------------------------------------------------------


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _tool_version(tool: str) -> str:
    if shutil.which(tool) is None:
        return "not on PATH"
    out = subprocess.run([tool, "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else "?"


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    """Parse options, build the data, run every section, clean up."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dir",
        default=tempfile.gettempdir(),
        help="parent of the temporary work directory (default: %(default)s)",
    )
    parser.add_argument(
        "--big-size",
        type=parse_size,
        default=2 * GIB,
        help="size of the large file (default 2G; 256M for a quick run)",
    )
    parser.add_argument(
        "--small-count", type=int, default=2000, help="small files (default 2000)"
    )
    parser.add_argument(
        "--small-min", type=parse_size, default=KIB, help="smallest (default 1K)"
    )
    parser.add_argument(
        "--small-max", type=parse_size, default=256 * KIB, help="largest (default 256K)"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="take the best of N runs (default 3)"
    )
    parser.add_argument(
        "--tuning-total",
        type=parse_size,
        default=256 * MIB,
        help="bytes per file size in the constant sweeps (default 256M)",
    )
    parser.add_argument(
        "--skip-tuning", action="store_true", help="skip the two constant sweeps"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)

    work = tempfile.mkdtemp(prefix="mlflow-integrity-bench-", dir=args.dir)
    try:
        run(args, work)
    finally:
        if args.keep:
            print(f"\nkept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def run(args: argparse.Namespace, work: str) -> None:
    """Everything between creating and removing the work directory."""
    print(f"date        {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
    print(
        f"host        {platform.machine()}, nproc {len(os.sched_getaffinity(0))}, "
        f"{platform.python_implementation()} {platform.python_version()}"
    )
    print(
        f"versions    blake3 {_version('blake3')}, model-signing "
        f"{_version('model-signing')}, b3sum: {_tool_version('b3sum')}"
    )
    print(
        f"constants   MMAP_THRESHOLD {human(digest.MMAP_THRESHOLD)}, "
        f"_READ_SIZE {human(digest._READ_SIZE)}"
    )
    print(f"work dir    {work}")
    print(f"load avg    {_load()} at start (other work on the machine skews timings)")

    big_dir = os.path.join(work, "big")
    os.makedirs(big_dir)
    big = os.path.join(big_dir, "weights.bin")
    write_file(big, args.big_size, seed=1)

    # A second, smaller file shows whether memory grows with the input size.
    medium_dir = os.path.join(work, "medium")
    os.makedirs(medium_dir)
    medium = os.path.join(medium_dir, "weights.bin")
    medium_size = max(args.big_size // 8, digest.MMAP_THRESHOLD)
    write_file(medium, medium_size, seed=2)

    small_dir = os.path.join(work, "small")
    small_total = make_small_tree(
        small_dir, args.small_count, args.small_min, args.small_max
    )
    small_paths = list_files(small_dir)

    folders: dict[int, str] = {}
    if not args.skip_tuning:
        sizes = [n * KIB for n in (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)]
        folders = make_tuning_sets(
            os.path.join(work, "tuning"), sizes, args.tuning_total
        )

    # Dirty pages being written back would compete with the hashing for the
    # disk and the CPU; flush them, then pull everything into the page cache.
    os.sync()
    warm(
        [
            big,
            medium,
            *small_paths,
            *(p for f in folders.values() for p in list_files(f)),
        ]
    )
    print(
        f"data        1 file of {human(args.big_size)}; {len(small_paths)} files "
        f"of {human(args.small_min)}..{human(args.small_max)} "
        f"({human(small_total)} in all); best of {args.repeat}; page cache warm"
    )

    print_table(
        f"One {human(args.big_size)} file", bench_big(big, args.big_size, args.repeat)
    )
    print_table(
        f"{len(small_paths)} small files ({human(small_total)})",
        bench_small(small_dir, small_paths, small_total, args.repeat),
    )
    print_rss(
        [
            ("hash_file blake3 (mmap path)", "file", medium, "blake3", medium_size),
            ("hash_file blake3 (mmap path)", "file", big, "blake3", args.big_size),
            ("hash_file sha256 (read loop)", "file", medium, "sha256", medium_size),
            ("hash_file sha256 (read loop)", "file", big, "sha256", args.big_size),
            ("hash_tree blake3, small files", "tree", small_dir, "blake3", small_total),
        ]
    )

    if folders:
        tune_threshold(folders, args.repeat)
        tune_read_size(
            [
                (f"{len(small_paths)} small files, blake3", small_dir, "blake3"),
                (f"{len(small_paths)} small files, sha256", small_dir, "sha256"),
                ("4 MiB files, blake3", folders[4 * MIB], "blake3"),
                ("16 MiB files, sha256", folders[16 * MIB], "sha256"),
            ],
            args.repeat,
        )
    print(f"\nload avg    {_load()} at the end")


if __name__ == "__main__":
    sys.exit(main())
