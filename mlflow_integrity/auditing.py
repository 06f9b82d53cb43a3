"""The sweep: check every registered version and report what each one is.

:func:`audit` re-checks the stored bytes of many versions at once (all of
them, after a registry restore), in parallel, and returns an
:class:`AuditReport` with one row per version in the status vocabulary of
:mod:`mlflow_integrity.check`. Aliases that name a version which no longer
exists are rows of their own. The report renders as a terminal table, JSON
(schema in ``docs/audit-schema.md``), JUnit XML for CI, a pandas frame and an
HTML table for notebooks.

A check that fails in an unexpected way becomes an ``UNREADABLE`` row with
the error's message: one broken version never aborts the sweep.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import html
import io
import logging
import textwrap
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlflow_integrity import _compat
from mlflow_integrity.check import (
    MISSING,
    STATUSES,
    UNREADABLE,
    UNTAGGED,
    VERIFIED,
    VerifyResult,
    check_mode,
    now_utc,
)
from mlflow_integrity.check import verify as verify_uri
from mlflow_integrity.errors import ConfigurationError
from mlflow_integrity.registry import all_pages
from mlflow_integrity.render import render_result

if TYPE_CHECKING:
    from rich.table import Table

_logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MAX_WORKERS = 32

# Rows are a version, an alias whose version is gone, or a model whose
# versions could not be listed.
KIND_VERSION = "version"
KIND_DANGLING_ALIAS = "dangling_alias"
KIND_MODEL = "model"

# Colours of the status words, in the terminal and in notebooks.
STATUS_COLOURS = {
    "VERIFIED": "#1a7f37",
    "MODIFIED": "#cf222e",
    "MISSING": "#cf222e",
    "EXTRA": "#bc4c00",
    "UNTAGGED": "#9a6700",
    "MALFORMED": "#cf222e",
    "UNREADABLE": "#8250df",
    "STALE": "#9a6700",
}
_RICH_STYLES = {
    "VERIFIED": "green",
    "MODIFIED": "bold red",
    "MISSING": "bold red",
    "EXTRA": "dark_orange",
    "UNTAGGED": "yellow",
    "MALFORMED": "bold red",
    "UNREADABLE": "magenta",
    "STALE": "yellow",
}


@dataclass(frozen=True)
class FileFinding:
    """A file of a version that differs from its record."""

    path: str
    change: str  # "modified", "missing" or "extra"


@dataclass(frozen=True)
class AuditRow:
    """What one version (or one dangling alias) was found to be.

    Attributes:
        kind: ``version``; ``dangling_alias`` for an alias that names a
            version that does not exist (``version`` is then that number);
            ``model`` for a model whose versions could not be listed
            (``version`` is empty).
        files: the files that differ from the record, sorted by path.
        recorded_at, origin: when the digest was recorded, and whether by
            registration or by a later backfill (trust on first use).
        mode: ``deep`` or ``quick``, as the check reported it.
        explanation: the full rendered account, with what to do next.
    """

    name: str
    version: str
    status: str
    kind: str = KIND_VERSION
    aliases: tuple[str, ...] = ()
    stage: str | None = None
    files: tuple[FileFinding, ...] = ()
    source: str | None = None
    expected: str | None = None
    actual: str | None = None
    recorded_at: str | None = None
    origin: str | None = None
    checked_at: str = field(default_factory=now_utc)
    mode: str | None = None
    detail: str = ""
    explanation: str = ""

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @property
    def sort_key(self) -> tuple[str, int, str, str]:
        number = int(self.version) if self.version.isdigit() else -1
        return (self.name, number, self.kind, ",".join(self.aliases))

    def to_dict(self) -> dict[str, Any]:
        """One row of the JSON report; keys as in ``docs/audit-schema.md``."""
        return {
            "kind": self.kind,
            "model_uri": self.model_uri,
            "name": self.name,
            "version": self.version,
            "aliases": list(self.aliases),
            "stage": self.stage,
            "status": self.status,
            "files": [{"path": f.path, "change": f.change} for f in self.files],
            "source": self.source,
            "expected": self.expected,
            "actual": self.actual,
            "recorded_at": self.recorded_at,
            "origin": self.origin,
            "checked_at": self.checked_at,
            "mode": self.mode,
            "detail": self.detail or None,
        }


def row_from_result(
    result: VerifyResult, aliases: Sequence[str] = (), stage: str | None = None
) -> AuditRow:
    """An audit row for one check's result."""
    files = tuple(
        FileFinding(c.path, kind)
        for kind, changes in (
            ("modified", result.diff.modified),
            ("missing", result.diff.missing),
            ("extra", result.diff.extra),
        )
        for c in changes
    )
    record = result.record
    detail = result.detail
    if result.status == UNTAGGED and not detail:
        detail = (
            "no digest recorded; record one with `mlflow-integrity backfill "
            f"--name {result.name} --version {result.version}`"
        )
    return AuditRow(
        name=result.name or "",
        version=result.version or "",
        status=result.status,
        aliases=tuple(sorted(aliases)),
        stage=stage,
        files=tuple(sorted(files, key=lambda f: f.path.encode("utf-8"))),
        source=result.source,
        expected=str(result.expected) if result.expected else None,
        actual=str(result.actual) if result.actual else None,
        recorded_at=record.recorded_at if record else None,
        origin=record.origin if record else None,
        checked_at=result.checked_at,
        # An untagged version was not read at all.
        mode=result.mode if result.expected is not None else None,
        detail=detail,
        explanation=render_result(result),
    )


@dataclass(frozen=True)
class AuditReport:
    """The rows of an audit, sorted by model name and version number.

    Attributes:
        rows: one per version, plus one per dangling alias.
        fail_on: the statuses that make the report fail (by default every
            status except VERIFIED).
        shard: ``(i, n)`` when only the i-th of n shards was checked.
    """

    rows: tuple[AuditRow, ...]
    fail_on: frozenset[str] = frozenset(s for s in STATUSES if s != VERIFIED)
    mode: str = "deep"
    shard: tuple[int, int] | None = None
    started_at: str = field(default_factory=now_utc)
    finished_at: str = field(default_factory=now_utc)

    @property
    def ok(self) -> bool:
        """True unless some row's status is in ``fail_on``."""
        return not self.failures

    @property
    def failures(self) -> tuple[AuditRow, ...]:
        return tuple(r for r in self.rows if r.status in self.fail_on)

    def counts(self) -> dict[str, int]:
        """The number of rows per status, for the statuses that occur."""
        counted = Counter(r.status for r in self.rows)
        return {s: counted[s] for s in STATUSES if counted[s]}

    def with_fail_on(self, statuses: Iterable[str]) -> AuditReport:
        """The same rows judged by another set of failing statuses.

        Raises:
            ConfigurationError: for a word that is not a status.
        """
        return replace(self, fail_on=parse_statuses(statuses))

    def to_dict(self) -> dict[str, Any]:
        """The JSON report (schema version :data:`SCHEMA_VERSION`)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "mode": self.mode,
            "shard": (
                {"index": self.shard[0], "count": self.shard[1]} if self.shard else None
            ),
            "fail_on": sorted(self.fail_on),
            "ok": self.ok,
            "counts": self.counts(),
            "rows": [r.to_dict() for r in self.rows],
        }

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame`` with one row per version (pandas comes
        with MLflow). ``aliases`` is a comma-separated string, ``files`` reads
        ``modified: a; missing: b`` and ``files_changed`` counts them."""
        import pandas as pd  # type: ignore[import-untyped]

        columns = [
            "name", "version", "kind", "aliases", "stage", "status", "files",
            "files_changed", "source", "expected", "actual", "recorded_at",
            "origin", "checked_at", "mode", "detail",
        ]  # fmt: skip
        records = []
        for row in self.rows:
            data = row.to_dict()
            data["aliases"] = ", ".join(row.aliases)
            data["files"] = "; ".join(f"{f.change}: {f.path}" for f in row.files)
            data["files_changed"] = len(row.files)
            data["detail"] = row.detail
            records.append({c: data[c] for c in columns})
        return pd.DataFrame.from_records(records, columns=columns)

    def table(self) -> Table:
        """The report as a rich table."""
        from rich.table import Table
        from rich.text import Text

        title = f"mlflow-integrity audit ({self.mode} check)"
        if self.shard:
            title += f", shard {self.shard[0]}/{self.shard[1]}"
        table = Table(title=title, title_justify="left")
        staged = any(r.stage for r in self.rows)
        table.add_column("model", overflow="fold")
        table.add_column("version", no_wrap=True)
        table.add_column("aliases", overflow="fold")
        if staged:
            table.add_column("stage", no_wrap=True)
        table.add_column("status", no_wrap=True)
        table.add_column("files", overflow="fold")
        table.add_column("recorded", no_wrap=True)
        table.add_column("detail", overflow="fold", ratio=1)
        for row in self.rows:
            recorded = f"{row.recorded_at}\n{row.origin}" if row.recorded_at else "-"
            cells = [
                Text(row.name),
                Text(row.version),
                Text(", ".join(row.aliases) or "-"),
                *([Text(row.stage or "-")] if staged else []),
                Text(row.status, style=_RICH_STYLES.get(row.status, "")),
                Text("\n".join(f"{f.change} {f.path}" for f in row.files) or "-"),
                Text(recorded),
                Text(row.detail or "-"),
            ]
            table.add_row(*cells)
        return table

    def summary(self) -> str:
        """One line: the counts, and whether the report passes."""
        counts = ", ".join(f"{n} {s}" for s, n in self.counts().items()) or "nothing"
        verdict = "ok" if self.ok else f"{len(self.failures)} failing"
        rows = f"{len(self.rows)} row{'' if len(self.rows) == 1 else 's'}"
        return f"{rows}: {counts} ({verdict})"

    def render(self, width: int = 120, colour: bool = False) -> str:
        """The table and the summary as text."""
        from rich.console import Console

        buffer = io.StringIO()
        console = Console(
            file=buffer,
            width=width,
            force_terminal=colour,
            color_system="standard" if colour else None,
            highlight=False,
        )
        console.print(self.table())
        console.print(self.summary(), markup=False)
        return buffer.getvalue().rstrip("\n")

    def __str__(self) -> str:
        return self.render()

    def _repr_html_(self) -> str:
        """An HTML table for notebooks. Every value is escaped; each status
        cell has the classes ``mi-status mi-status-<status>`` and a colour."""
        esc = html.escape
        styles = "".join(
            f".mi-audit .mi-status-{s.lower()}{{color:{c};font-weight:bold}}"
            for s, c in STATUS_COLOURS.items()
        )
        head = "".join(
            f"<th>{h}</th>"
            for h in (
                "model", "version", "aliases", "stage", "status", "files",
                "recorded", "origin", "checked", "mode", "detail",
            )
        )  # fmt: skip
        body = []
        for row in self.rows:
            colour = STATUS_COLOURS.get(row.status, "inherit")
            files = "<br>".join(
                f"{esc(f.change)} <code>{esc(f.path)}</code>" for f in row.files
            )
            cells = [
                esc(row.name),
                esc(row.version),
                esc(", ".join(row.aliases)),
                esc(row.stage or ""),
                None,
                files,
                esc(row.recorded_at or ""),
                esc(row.origin or ""),
                esc(row.checked_at),
                esc(row.mode or ""),
                esc(row.detail),
            ]
            status_cell = (
                f'<td class="mi-status mi-status-{esc(row.status.lower())}" '
                f'style="color:{colour}">{esc(row.status)}</td>'
            )
            tds = "".join(status_cell if c is None else f"<td>{c}</td>" for c in cells)
            body.append(f"<tr>{tds}</tr>")
        caption = esc(self.summary())
        return (
            f'<div class="mi-audit"><style>{styles}</style><table>'
            f"<caption>{caption}</caption><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>"
        )

    def to_junit(self) -> str:
        """JUnit XML: a testsuite per registered model, a testcase per row.

        A row whose status is in ``fail_on`` is a ``<failure>`` carrying the
        rendered explanation; a row that is not VERIFIED but tolerated is
        ``<skipped>`` with it.
        """
        root = ET.Element("testsuites", name="mlflow-integrity audit")
        by_model: dict[str, list[AuditRow]] = {}
        for row in self.rows:
            by_model.setdefault(row.name, []).append(row)
        total_failures = 0
        for name, rows in by_model.items():
            failures = sum(1 for r in rows if r.status in self.fail_on)
            skipped = sum(
                1 for r in rows if r.status != VERIFIED and r.status not in self.fail_on
            )
            total_failures += failures
            suite = ET.SubElement(
                root,
                "testsuite",
                name=name,
                tests=str(len(rows)),
                failures=str(failures),
                errors="0",
                skipped=str(skipped),
                timestamp=self.started_at,
            )
            for row in rows:
                label = f"version {row.version}"
                if row.kind == KIND_DANGLING_ALIAS:
                    label = f"alias {', '.join(row.aliases)}"
                elif row.kind == KIND_MODEL:
                    label = "versions"
                case = ET.SubElement(
                    suite, "testcase", classname=name, name=label, time="0"
                )
                if row.status in self.fail_on:
                    failure = ET.SubElement(
                        case, "failure", message=_first_line(row), type=row.status
                    )
                    failure.text = row.explanation
                elif row.status != VERIFIED:
                    skip = ET.SubElement(case, "skipped", message=_first_line(row))
                    skip.text = row.explanation
        root.set("tests", str(len(self.rows)))
        root.set("failures", str(total_failures))
        ET.indent(root)
        text: str = ET.tostring(root, encoding="unicode", xml_declaration=True)
        return text + "\n"


def _first_line(row: AuditRow) -> str:
    return row.explanation.splitlines()[0] if row.explanation else row.status


def parse_statuses(statuses: Iterable[str]) -> frozenset[str]:
    """Statuses from words (any case, surrounding blanks ignored), or from
    one comma-separated string.

    Raises:
        ConfigurationError: for a word that is not a status.
    """
    if isinstance(statuses, str):
        statuses = statuses.split(",")
    words = [s.strip().upper() for s in statuses if s.strip()]
    unknown = sorted(set(words) - set(STATUSES))
    if unknown:
        raise ConfigurationError(
            f"Unknown status {', '.join(unknown)}; the statuses are "
            f"{', '.join(STATUSES)}."
        )
    return frozenset(words)


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``I/N`` (1-based, 1 <= I <= N).

    Raises:
        ConfigurationError: for anything else.
    """
    index, sep, count = text.partition("/")
    try:
        shard = (int(index), int(count)) if sep else None
    except ValueError:
        shard = None
    if shard is None:
        raise ConfigurationError(
            f"Shard {text!r} is not I/N; write for instance 2/4 for the second "
            "of four shards."
        )
    return check_shard(shard)


def check_shard(shard: tuple[int, int]) -> tuple[int, int]:
    """Return ``shard`` if it is ``(i, n)`` with 1 <= i <= n.

    Raises:
        ConfigurationError: otherwise.
    """
    index, count = shard
    if count < 1:
        raise ConfigurationError(
            f"Shard {index}/{count} does not exist: N, the number of shards, is "
            "at least 1; write for instance 2/4 for the second of four."
        )
    if not 1 <= index <= count:
        raise ConfigurationError(
            f"Shard {index}/{count} does not exist: shards are numbered 1 to N, "
            f"so with N={count} use 1/{count} to {count}/{count}."
        )
    return index, count


def shard_of(name: str, version: str, count: int) -> int:
    """The 1-based shard of ``name/version`` among ``count``.

    A hash of the name and number alone, so that adding versions never moves
    others to another shard, and every job computes the same split.
    """
    key = hashlib.sha256(f"{name}/{version}".encode()).digest()
    return int.from_bytes(key[:8], "big") % count + 1


@dataclass(frozen=True)
class _Task:
    name: str
    version: str
    aliases: tuple[str, ...]
    stage: str | None


def audit(
    names: Sequence[str] | None = None,
    *,
    client: MlflowClient | None = None,
    mode: str = "deep",
    workers: int = 4,
    shard: tuple[int, int] | None = None,
    progress: bool = False,
    fail_on: Iterable[str] | None = None,
) -> AuditReport:
    """Check every version of some (or all) registered models.

    Args:
        names: model names or shell patterns (``fraud-*``); None for every
            registered model. Prompts are never audited.
        client: an MlflowClient; the default one otherwise.
        mode: ``deep`` or ``quick``, as in :func:`mlflow_integrity.verify`.
        workers: versions checked at once, 1 to 32.
        shard: ``(i, n)``: check only the i-th of n disjoint shards (1-based);
            every version falls in exactly one, by a hash of its name and
            number.
        progress: show a progress bar on stderr.
        fail_on: statuses that make :attr:`AuditReport.ok` false; every
            status except VERIFIED by default.

    Returns:
        The report, rows sorted by name and version number.

    Raises:
        ConfigurationError: for a bad mode, worker count, shard or status,
            or a name that matches no registered model.
    """
    check_mode(mode)
    # Settings that every check reads are refused once, up front, rather than
    # as an UNREADABLE row per version.
    from mlflow_integrity.stores import store_workers
    from mlflow_integrity.stores.s3 import check_settings

    store_workers()
    check_settings()
    if not 1 <= workers <= MAX_WORKERS:
        raise ConfigurationError(
            f"workers must be between 1 and {MAX_WORKERS}; got {workers}."
        )
    if shard is not None:
        shard = check_shard(shard)
    failing = (
        parse_statuses(fail_on)
        if fail_on is not None
        else frozenset(s for s in STATUSES if s != VERIFIED)
    )
    client = client or MlflowClient()
    started = now_utc()

    tasks: list[_Task] = []
    rows: list[AuditRow] = []
    for name in model_names(client, names):
        try:
            found_tasks, dangling = _plan(client, name)
        except Exception as exc:  # one model must never abort the audit
            rows.append(_unlisted(name, exc))
            continue
        tasks.extend(found_tasks)
        rows.extend(dangling)
    if shard is not None:
        index, count = shard
        tasks = [t for t in tasks if shard_of(t.name, t.version, count) == index]
        rows = [r for r in rows if shard_of(r.name, r.version, count) == index]

    rows.extend(_check_all(client, tasks, mode, workers, progress))
    rows.sort(key=lambda r: r.sort_key)
    report = AuditReport(
        rows=tuple(rows),
        fail_on=failing,
        mode=mode,
        shard=shard,
        started_at=started,
    )
    _logger.info("audit: %s", report.summary())
    return report


def model_names(client: MlflowClient, names: Sequence[str] | None) -> list[str]:
    """The registered models to audit, sorted: every one when ``names`` is
    None, else those named or matching a shell pattern. Prompts excluded.

    Raises:
        ConfigurationError: for a name or pattern that matches nothing.
    """
    every: list[str] | None = None

    def all_models() -> list[str]:
        nonlocal every
        if every is None:
            models = all_pages(client.search_registered_models)
            every = sorted(m.name for m in models if not _compat.is_prompt_model(m))
        return every

    if names is None:
        return all_models()
    chosen: set[str] = set()
    for pattern in names:
        if any(ch in pattern for ch in "*?["):
            matched = [n for n in all_models() if fnmatch.fnmatchcase(n, pattern)]
        else:
            matched = [pattern] if _is_model(client, pattern) else []
        if not matched:
            raise ConfigurationError(
                f"No registered model matches {pattern!r}; list them with "
                "MlflowClient().search_registered_models(), or leave out the "
                "name to audit every model."
            )
        chosen.update(matched)
    return sorted(chosen)


def _is_model(client: MlflowClient, name: str) -> bool:
    """True if ``name`` is a registered model, not a prompt. (MlflowClient
    already answers "does not exist" for a prompt's name, as it leaves
    prompts out of ``search_registered_models``; the check stays for stores
    that do not.)"""
    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    return not _compat.is_prompt_model(model)


def _plan(client: MlflowClient, name: str) -> tuple[list[_Task], list[AuditRow]]:
    """The versions of a model to check, and a row per alias whose version
    does not exist."""
    model = client.get_registered_model(name)
    versions = all_pages(client.search_model_versions, filter_string=f"name = '{name}'")
    numbers = {str(v.version) for v in versions}

    aliases_of: dict[str, list[str]] = {}
    dangling = []
    for alias, target in sorted(_aliases(model).items()):
        if target in numbers:
            aliases_of.setdefault(target, []).append(alias)
            continue
        dangling.append(
            AuditRow(
                name=name,
                version=target,
                status=MISSING,
                kind=KIND_DANGLING_ALIAS,
                aliases=(alias,),
                detail=(
                    f"alias {alias} points to version {target}, which does not exist"
                ),
                explanation=_dangling_explanation(name, alias, target),
            )
        )

    tasks = [
        _Task(
            name,
            str(v.version),
            tuple(sorted(aliases_of.get(str(v.version), []))),
            _stage(v.current_stage),
        )
        for v in versions
    ]
    return tasks, dangling


def _unlisted(name: str, exc: Exception) -> AuditRow:
    """A row for a model whose versions could not be listed."""
    message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
    _logger.warning("the versions of %s could not be listed: %s", name, message)
    return AuditRow(
        name=name,
        version="",
        status=UNREADABLE,
        kind=KIND_MODEL,
        detail=f"the versions of this model could not be listed: {message}",
        explanation=(
            f"{name}: the versions of this registered model could not be listed "
            f"(UNREADABLE): {message}\nNone of its versions was checked; fix "
            "access to the registry and audit again:\n"
            f"    mlflow-integrity audit --name {name}"
        ),
    )


def _dangling_explanation(name: str, alias: str, target: str) -> str:
    advice = textwrap.fill(
        "Loading the alias fails. After a registry restore the version may be "
        "in the backup only. Point the alias at a version that verifies, or "
        "delete it:",
        width=88,
    )
    return (
        f"models:/{name}@{alias}: the alias points to version {target}, which "
        f"does not exist (MISSING).\n{advice}\n"
        f"    mlflow-integrity promote {name} VERSION --alias {alias}"
    )


def _stage(stage: str | None) -> str | None:
    """MLflow writes "no stage" as the word None."""
    return None if stage in (None, "", "None") else stage


def _aliases(model: Any) -> dict[str, str]:
    """A registered model's aliases as ``{alias: version}``, whether MLflow
    gives them as a dict or as alias entities."""
    raw = model.aliases or {}
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    return {str(a.alias): str(a.version) for a in raw}


def _check_all(
    client: MlflowClient,
    tasks: list[_Task],
    mode: str,
    workers: int,
    progress: bool,
) -> list[AuditRow]:
    if not tasks:
        return []

    def one(task: _Task) -> AuditRow:
        return _check_one(client, task, mode)

    rows: list[AuditRow] = []
    with _progress_bar(progress, len(tasks)) as advance:
        if workers == 1:
            for task in tasks:
                rows.append(one(task))
                advance()
            return rows
        with ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="mlflow-integrity-audit"
        ) as pool:
            futures = [pool.submit(one, task) for task in tasks]
            for future in as_completed(futures):
                rows.append(future.result())
                advance()
    return rows


def _check_one(client: MlflowClient, task: _Task, mode: str) -> AuditRow:
    uri = f"models:/{task.name}/{task.version}"
    try:
        # A deployment's MLFLOW_INTEGRITY_EXPECTED_DIGEST pins one version,
        # not every version of the registry: it is not applied here.
        result = verify_uri(uri, client=client, mode=mode, env_pin=False)
    except Exception as exc:  # one version must never abort the audit
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        _logger.warning("%s could not be checked: %s", uri, message)
        result = VerifyResult(
            name=task.name,
            version=task.version,
            source=None,
            status=UNREADABLE,
            detail=f"the check failed: {message}",
            mode=mode,
        )
    if result.status == MISSING and result.whole_artifact_missing:
        # The source is a column of its own; say what is known about why.
        note = _run_note(client, task)
        detail = f"Nothing is stored at its source any more. {note}".strip()
        result = replace(result, detail=detail)
    return row_from_result(result, task.aliases, task.stage)


def _run_note(client: MlflowClient, task: _Task) -> str:
    """Why a whole artifact may be gone: its run was deleted, or deleted and
    garbage-collected (``mlflow gc`` removes a deleted run's artifacts,
    registered or not)."""
    try:
        run_id = client.get_model_version(task.name, task.version).run_id
        if not run_id:
            return ""
        run = client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return f"Its run {run_id} is gone (deleted, then garbage-collected)."
        return ""
    if run.info.lifecycle_stage == "deleted":
        return f"Its run {run_id} is deleted."
    return ""


@contextlib.contextmanager
def _progress_bar(enabled: bool, total: int) -> Iterator[Callable[[], None]]:
    """A rich progress bar on stderr, or nothing; yields a function that
    advances it by one."""
    if not enabled:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(
        TextColumn("auditing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("audit", total=total)
        yield lambda: bar.advance(task)
