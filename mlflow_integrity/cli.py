"""``mlflow-integrity``: the command line for pipelines and init containers.

Exit codes, decided here and nowhere else: 0 verified, 1 integrity failure
(the bytes or the record are not what they should be), 2 usage or
configuration error (a bad option, URI or pin, a model that does not exist).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable
from typing import Any

import click

EXIT_OK = 0
EXIT_INTEGRITY = 1
EXIT_USAGE = 2

_format_option = click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Output format; json is meant for scripts.",
)
_algorithm_option = click.option(
    "--algorithm",
    type=click.Choice(["blake3", "sha256"]),
    default=None,
    help="Digest algorithm for new digests [default: blake3, or "
    "MLFLOW_INTEGRITY_ALGORITHM].",
)


def _emit(fmt: str, payload: dict[str, Any], text: str) -> None:
    if fmt == "json":
        click.echo(json.dumps(payload, indent=2, sort_keys=True))
    else:
        click.echo(text)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log each step to stderr.")
@click.version_option(package_name="mlflow-integrity")
def cli(verbose: bool) -> None:
    """Record, verify and enforce content digests of MLflow model versions.

    The registry and tracking server are the ones MLflow itself would use
    (MLFLOW_TRACKING_URI, MLFLOW_REGISTRY_URI).
    """
    logging.basicConfig(
        level=logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("mlflow_integrity").setLevel(
        logging.INFO if verbose else logging.WARNING
    )


@cli.command()
@click.argument("path_or_uri")
@_algorithm_option
@click.option("--manifest", is_flag=True, help="Print the canonical manifest too.")
@_format_option
def digest(path_or_uri: str, algorithm: str | None, manifest: bool, fmt: str) -> None:
    """Print the digest of a local model directory or a stored artifact.

    PATH_OR_URI is a directory, a storage URI (file:, mlflow-artifacts:,
    s3:, ...), runs:/<id>/<path>, models:/m-<id> or models:/<name>/<version>.
    Nothing is recorded.
    """
    from mlflow_integrity.register import default_algorithm, storage_location
    from mlflow_integrity.stores import open_store

    algorithm = algorithm or default_algorithm()
    if os.path.isdir(path_or_uri):
        location = os.path.abspath(path_or_uri)
    elif ":" in path_or_uri:
        location = storage_location(path_or_uri)
    else:
        raise click.BadParameter(
            f"{path_or_uri!r} is neither a directory nor a URI.",
            param_hint="PATH_OR_URI",
        )
    tree = open_store(location).manifest(algorithm)
    root = tree.root_digest()
    payload: dict[str, Any] = {
        "digest": str(root),
        "source": location,
        "files": len(tree.files),
        "bytes": tree.total_size,
    }
    text = str(root)
    if manifest:
        canonical = tree.canonical_bytes().decode("utf-8")
        payload["manifest"] = canonical
        text += "\n" + canonical.rstrip("\n")
    _emit(fmt, payload, text)


@cli.command()
@click.argument("model_uri")
@click.argument("name")
@_algorithm_option
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Extra tag.")
@_format_option
def register(
    model_uri: str, name: str, algorithm: str | None, tags: tuple[str, ...], fmt: str
) -> None:
    """Register MODEL_URI as a new version of NAME, recording its digest."""
    from mlflow_integrity.register import register_model
    from mlflow_integrity.registry import ARTIFACT_SHA, SOURCE

    extra = {}
    for item in tags:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE.", param_hint="--tag")
        extra[key] = value
    mv = register_model(model_uri, name, tags=extra, algorithm=algorithm)
    digest_text = mv.tags[ARTIFACT_SHA]
    payload = {
        "model_uri": f"models:/{mv.name}/{mv.version}",
        "name": mv.name,
        "version": str(mv.version),
        "artifact_sha": digest_text,
        "source": mv.tags.get(SOURCE),
    }
    _emit(
        fmt,
        payload,
        f"models:/{mv.name}/{mv.version} {ARTIFACT_SHA}={digest_text}",
    )


@cli.command()
@click.argument("model_uri")
@click.option(
    "--expect",
    default=None,
    metavar="DIGEST",
    help="Pinned digest (default: MLFLOW_INTEGRITY_EXPECTED_DIGEST).",
)
@click.option(
    "--mode",
    type=click.Choice(["deep", "quick"]),
    default="deep",
    show_default=True,
    help="deep re-reads every byte; quick compares S3 object versions and "
    "ETags with the record and re-reads only what changed.",
)
@_format_option
def verify(model_uri: str, expect: str | None, mode: str, fmt: str) -> None:
    """Re-read a registered version's stored bytes and compare them with its
    recorded digest. Exits 1 unless VERIFIED."""
    from mlflow_integrity.check import verify as verify_uri
    from mlflow_integrity.render import render_result

    result = verify_uri(model_uri, expected=expect, mode=mode)
    _emit(fmt, result.to_dict(), render_result(result))
    if not result.ok:
        raise SystemExit(EXIT_INTEGRITY)


@cli.command()
@click.argument("name")
@click.argument("version")
@click.option(
    "--yes", is_flag=True, help="Apply; without it, only print what would be done."
)
@_format_option
def restore(name: str, version: str, yes: bool, fmt: str) -> None:
    """Put the registered bytes of NAME VERSION back from the recorded S3
    object versions (bucket with versioning). Every recorded version is
    verified before anything is written; objects added since registration
    are deleted when versioning is enabled (a delete marker, recoverable).
    Exits 0 only if the version verifies: already, or after --yes."""
    from mlflow_integrity.recovery import restore as restore_version

    plan = restore_version(name, version, yes=yes)
    _emit(fmt, plan.to_dict(), plan.describe())
    verifies = plan.after.ok if plan.after is not None else plan.before.ok
    if not verifies:
        raise SystemExit(EXIT_INTEGRITY)


@cli.command()
@click.option(
    "--name",
    "pattern",
    required=True,
    metavar="PATTERN",
    help="Registered model name, or a shell pattern such as 'fraud-*'.",
)
@click.option("--version", "only_version", default=None, help="Only this version.")
@click.option("--dry-run", is_flag=True, help="Hash, but record nothing.")
@_algorithm_option
@_format_option
def backfill(
    pattern: str,
    only_version: str | None,
    dry_run: bool,
    algorithm: str | None,
    fmt: str,
) -> None:
    """Record digests for versions registered without one.

    The bytes are trusted as they are now (trust on first use) and the record
    says so (integrity.origin=backfill). A version that already has a digest
    is never overwritten.
    """
    from mlflow import MlflowClient

    from mlflow_integrity.errors import IntegrityError
    from mlflow_integrity.register import backfill_version

    client = MlflowClient()
    rows: list[dict[str, Any]] = []
    for name in _matching_models(client, pattern):
        versions = [only_version] if only_version else _versions(client, name)
        for version in versions:
            row: dict[str, Any] = {"model_uri": f"models:/{name}/{version}"}
            try:
                record = backfill_version(
                    name, version, algorithm=algorithm, dry_run=dry_run, client=client
                )
            except IntegrityError as err:
                row.update(outcome="failed", status=err.status, detail=err.message)
            else:
                if record is None:
                    row.update(outcome="already recorded")
                else:
                    outcome = "would record" if dry_run else "recorded"
                    row.update(outcome=outcome, artifact_sha=str(record.digest))
            rows.append(row)
    if not rows:
        raise click.BadParameter(
            f"No registered model matches {pattern!r}.", param_hint="--name"
        )
    lines = [
        f"{r['model_uri']}  {r['outcome']}  "
        f"{r.get('artifact_sha', r.get('detail', ''))}".rstrip()
        for r in rows
    ]
    _emit(fmt, {"versions": rows, "dry_run": dry_run}, "\n".join(lines))
    if any(r["outcome"] == "failed" for r in rows):
        raise SystemExit(EXIT_INTEGRITY)


_target_options = [
    click.option("--alias", default=None, help="Move this alias."),
    click.option("--stage", default=None, help="Transition to this stage."),
]


def _with_target(fn: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_target_options):
        fn = option(fn)
    return fn


def _target(alias: str | None, stage: str | None) -> Any:
    from mlflow_integrity.gate import Target

    if (alias is None) == (stage is None):
        raise click.UsageError("Give exactly one of --alias and --stage.")
    return Target(alias=alias, stage=stage)


@cli.command(name="gate-check")
@click.argument("name")
@click.argument("version")
@_with_target
@_format_option
def gate_check(
    name: str, version: str, alias: str | None, stage: str | None, fmt: str
) -> None:
    """Would the gate let NAME VERSION take --alias or --stage? Changes nothing.

    Exits 0 if allowed, 1 if refused. The policy is the one in
    MLFLOW_INTEGRITY_POLICY.
    """
    from mlflow import MlflowClient

    from mlflow_integrity.gate import check

    target = _target(alias, stage)
    client = MlflowClient()
    mv = client.get_model_version(name, version)
    source = client.get_model_version_download_uri(name, version)
    outcome = check(mv, target, source)
    _emit(fmt, outcome.to_dict(), outcome.message())
    if not outcome.ok:
        raise SystemExit(EXIT_INTEGRITY)


@cli.command()
@click.argument("name")
@click.argument("version")
@_with_target
@click.option(
    "--archive-existing", is_flag=True, help="With --stage: archive the others."
)
@_format_option
def promote(
    name: str,
    version: str,
    alias: str | None,
    stage: str | None,
    archive_existing: bool,
    fmt: str,
) -> None:
    """Pass the gate, then move --alias or transition to --stage.

    Exits 0 when promoted, 1 when the gate refuses (nothing is changed).
    """
    from mlflow_integrity.errors import PromotionRefusedError
    from mlflow_integrity.gate import promote as promote_version

    target = _target(alias, stage)
    try:
        outcome = promote_version(
            name,
            version,
            alias=target.alias,
            stage=target.stage,
            archive_existing_versions=archive_existing,
        )
    except PromotionRefusedError as err:
        _emit(fmt, {"allowed": False, "message": err.message}, err.message)
        raise SystemExit(EXIT_INTEGRITY) from None
    payload = outcome.to_dict()
    _emit(fmt, payload, f"models:/{name}/{version} promoted to {target}.")


@cli.command()
@click.argument("model_uri")
@click.option("--deployment", required=True, help="Deployment name, e.g. canary.")
@click.option(
    "--path",
    "local_path",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="The model directory this deployment loaded.",
)
@_format_option
def attest(model_uri: str, deployment: str, local_path: str, fmt: str) -> None:
    """Record that DEPLOYMENT runs the bytes in --path for MODEL_URI.

    The directory is hashed with the version's recorded algorithm and the
    digest found is recorded, whatever it is; exits 1 when it is not the
    version's artifact_sha (the gate will refuse promotions that need it).
    """
    from mlflow import MlflowClient

    from mlflow_integrity.digest import DEFAULT_ALGORITHM, hash_tree
    from mlflow_integrity.gate import attest as record_attestation
    from mlflow_integrity.gate import check_deployment
    from mlflow_integrity.registry import read_record, resolve

    check_deployment(deployment)
    resolved = resolve(MlflowClient(), model_uri)
    record = read_record(resolved.model_version)
    algorithm = record.digest.algorithm if record else DEFAULT_ALGORITHM
    loaded = hash_tree(local_path, algorithm).root_digest()
    attestation = record_attestation(
        resolved.name, resolved.version, deployment, loaded
    )
    matches = record is not None and record.digest == loaded
    payload = {
        "model_uri": resolved.uri,
        "deployment": deployment,
        "digest": str(loaded),
        "artifact_sha": str(record.digest) if record else None,
        "matches": matches,
        "at": attestation.to_tag_value(),
    }
    text = f"{resolved.uri} attested by {deployment}: {loaded}"
    if not matches:
        text += (
            f"\nwarning: this is not the version's artifact_sha "
            f"({record.digest if record else 'none recorded'}); promotions that "
            f"require an attestation from {deployment} will be refused."
        )
    _emit(fmt, payload, text)
    if not matches:
        raise SystemExit(EXIT_INTEGRITY)


@cli.command()
@click.argument("model_uri")
@click.argument("dest", type=click.Path(file_okay=False))
@click.option(
    "--expect",
    default=None,
    metavar="DIGEST",
    help="Pinned digest (default: MLFLOW_INTEGRITY_EXPECTED_DIGEST).",
)
@click.option("--keep", default=3, show_default=True, help="Copies to keep.")
@click.option(
    "--watch",
    is_flag=True,
    help="Keep following MODEL_URI (an alias), switching to each verified target.",
)
@click.option(
    "--interval", default=30.0, show_default=True, help="--watch poll, 1-3600 s."
)
@_format_option
def pull(
    model_uri: str,
    dest: str,
    expect: str | None,
    keep: int,
    watch: bool,
    interval: float,
    fmt: str,
) -> None:
    """Download MODEL_URI verified into DEST and switch DEST/current to it.

    For init containers: exits 0 when DEST/current holds the verified copy,
    1 when the bytes do not verify (DEST/current is left as it was). With
    --watch, runs until interrupted (a sidecar), never switching to bytes
    that do not verify.
    """
    from mlflow_integrity.materialize import pull as pull_copy
    from mlflow_integrity.materialize import watch as follow

    if watch:
        if expect:
            raise click.UsageError("--watch follows an alias; it takes no --expect.")
        follow(model_uri, dest, interval=interval, keep=keep)
        return

    copy = pull_copy(model_uri, dest, expected=expect, keep=keep)
    payload = {
        "model_uri": copy.model_uri,
        "digest": str(copy.digest),
        "path": copy.path,
        "current": os.path.join(dest, "current"),
    }
    _emit(fmt, payload, f"{dest}/current -> {copy.name} ({copy.model_uri})")


@cli.command()
@click.argument("dest", type=click.Path(exists=True, file_okay=False))
@_format_option
def rollback(dest: str, fmt: str) -> None:
    """Switch DEST/current back to the previous copy that still verifies."""
    from mlflow_integrity.materialize import rollback as roll_back

    copy = roll_back(dest)
    payload = {"model_uri": copy.model_uri, "digest": str(copy.digest)}
    _emit(fmt, payload, f"{dest}/current -> {copy.name} ({copy.model_uri})")


@cli.command(name="serve")
@click.argument("model_uri")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5001, show_default=True, type=int)
@click.option("--expect", default=None, metavar="DIGEST", help="Pinned digest.")
@click.option("--attest", default=None, metavar="DEPLOYMENT", help="Attest as.")
def serve_command(
    model_uri: str, host: str, port: int, expect: str | None, attest: str | None
) -> None:
    """Serve MODEL_URI with MLflow's scoring server, from a verified copy.

    Adds GET /integrity (version, digest, time) for readiness probes. Exits 1
    without serving when the bytes do not verify.
    """
    from mlflow_integrity.serve import serve

    serve(model_uri, host, port, expected=expect, attest=attest)


@cli.command(name="probe")
@click.argument("url")
@click.option("--expect", default=None, metavar="DIGEST", help="Digest to require.")
@click.option("--timeout", default=10.0, show_default=True, help="Seconds.")
@_format_option
def probe_command(url: str, expect: str | None, timeout: float, fmt: str) -> None:
    """Check what a running `mlflow-integrity serve` at URL serves.

    Exits 0 when it answers (with --expect: serves that digest), 1 when it
    serves another digest, 2 when it cannot be reached.
    """
    from mlflow_integrity.serve import probe

    report = probe(url, expect, timeout)
    _emit(fmt, report, f"{url} serves {report['model_uri']} ({report['digest']})")


@cli.command(name="audit")
@click.option(
    "--name",
    "patterns",
    multiple=True,
    metavar="PATTERN",
    help="Registered model name or shell pattern ('fraud-*'); repeat for more. "
    "Default: every registered model.",
)
@click.option(
    "--mode",
    type=click.Choice(["deep", "quick"]),
    default="deep",
    show_default=True,
    help="deep re-reads every byte; quick compares S3 object metadata.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 32),
    default=4,
    show_default=True,
    help="Versions checked at once.",
)
@click.option(
    "--shard",
    default=None,
    metavar="I/N",
    help="Check only shard I of N (1-based), e.g. 2/4 in the second of four jobs.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "junit"]),
    default="table",
    show_default=True,
    help="table for people, json for scripts (docs/audit-schema.md), junit for CI.",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write the report to this file; print only the summary.",
)
@click.option(
    "--fail-on",
    "fail_on",
    default=None,
    metavar="STATUSES",
    help="Comma list of statuses that exit 1, e.g. MODIFIED,MISSING "
    "[default: every status except VERIFIED].",
)
@click.option("--exit-zero", is_flag=True, help="Exit 0 whatever is found.")
def audit_command(
    patterns: tuple[str, ...],
    mode: str,
    workers: int,
    shard: str | None,
    fmt: str,
    output: str | None,
    fail_on: str | None,
    exit_zero: bool,
) -> None:
    """Check every version of the registered models and report each one.

    One row per version (and per alias that names a missing version), with
    its status, the files that differ, and when its digest was recorded.
    Exits 1 when a version's status is one of --fail-on, 0 otherwise.
    """
    from mlflow_integrity.auditing import audit, parse_shard, parse_statuses

    if fail_on is not None and exit_zero:
        raise click.UsageError("Give --fail-on or --exit-zero, not both.")
    statuses = parse_statuses(fail_on.split(",")) if fail_on is not None else None
    if statuses is not None and not statuses:
        raise click.BadParameter("name at least one status.", param_hint="--fail-on")
    report = audit(
        list(patterns) or None,
        mode=mode,
        workers=workers,
        shard=parse_shard(shard) if shard else None,
        progress=sys.stderr.isatty(),
        fail_on=statuses,
    )

    if fmt == "json":
        text = json.dumps(report.to_dict(), indent=2, sort_keys=True)
    elif fmt == "junit":
        text = report.to_junit().rstrip("\n")
    else:
        to_terminal = output is None and sys.stdout.isatty()
        # Off a terminal (a file, a CI log) nothing limits the width, and a
        # narrow table would break the commands it shows across lines.
        text = report.render(
            width=max(shutil.get_terminal_size().columns, 100) if to_terminal else 200,
            colour=to_terminal,
        )
    if output is not None:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text + "\n")
        click.echo(f"{report.summary()}; report written to {output}")
    else:
        click.echo(text)
    if not report.ok and not exit_zero:
        raise SystemExit(EXIT_INTEGRITY)


@cli.command(name="diagnose")
@click.argument("model_uri")
@click.option(
    "--path",
    "local_path",
    default=None,
    type=click.Path(exists=True, file_okay=False),
    help="The copy the deployment loaded: a model directory or a `pull` DEST.",
)
@_format_option
def diagnose_command(model_uri: str, local_path: str | None, fmt: str) -> None:
    """Run the on-call checklist for MODEL_URI and a deployment's local copy.

    Seven numbered steps, each with a verdict (OK, PROBLEM, INFO, SKIPPED):
    what the URI names now, its record, the stored bytes, the local copy
    (STALE when it holds another version), its file times, runtime
    attestations, and signs that the version was deleted and created again.
    Exits 1 when a step finds a problem.
    """
    from mlflow_integrity.diagnosis import diagnose

    diagnosis = diagnose(model_uri, path=local_path)
    _emit(fmt, diagnosis.to_dict(), diagnosis.render())
    if not diagnosis.ok:
        raise SystemExit(EXIT_INTEGRITY)


def _matching_models(client: Any, pattern: str) -> list[str]:
    from mlflow_integrity.registry import all_pages

    if not any(ch in pattern for ch in "*?["):
        return [pattern]
    names = [m.name for m in all_pages(client.search_registered_models)]
    return sorted(n for n in names if fnmatch.fnmatchcase(n, pattern))


def _versions(client: Any, name: str) -> list[str]:
    from mlflow_integrity.registry import all_pages

    versions = all_pages(client.search_model_versions, filter_string=f"name = '{name}'")
    return sorted((str(v.version) for v in versions), key=int)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and map every error class to its exit code."""
    from mlflow.exceptions import MlflowException

    from mlflow_integrity.errors import ConfigurationError, IntegrityError

    try:
        cli.main(args=argv, prog_name="mlflow-integrity", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return EXIT_USAGE
    except click.ClickException as exc:
        exc.show()
        return EXIT_USAGE
    except SystemExit as exc:
        return int(exc.code or 0)
    except ConfigurationError as exc:
        click.echo(f"error: {exc.message}", err=True)
        return EXIT_USAGE
    except IntegrityError as exc:
        click.echo(exc.message, err=True)
        return EXIT_INTEGRITY
    except (MlflowException, NotImplementedError) as exc:
        message = exc.message if isinstance(exc, MlflowException) else str(exc)
        click.echo(f"error: {message}", err=True)
        return EXIT_USAGE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
