"""The ``stream`` command: worker, dev, check, and small S3 helpers."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from pathlib import Path
from typing import Any

import click

from stream.errors import ConfigError, ProbeError
from stream.settings import Settings, field_reference, load_settings

CONFIG_HELP = "YAML configuration file (examples/stream.yaml); STREAM_* environment variables override it."


def _load(config: str | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def set_switch_interval(ms: float) -> float:
    """Set the interpreter's switch interval to ``ms`` milliseconds; return the one it replaces, in ms."""
    before = sys.getswitchinterval() * 1000
    sys.setswitchinterval(ms / 1000)
    return before


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """stream: Kafka events in, Amplitude-format hourly files on S3 out, exactly once."""


@main.command()
@click.option("--config", "-c", type=click.Path(dir_okay=False), envvar="STREAM_CONFIG", help=CONFIG_HELP)
@click.option("--stages", help="Comma-separated subset of ingest,dedupe,export,import,cohorts,mirror,profiles "
              "(worker.stages); default: all.")
def worker(config: str | None, stages: str | None) -> None:
    """Run a worker: its stages (ingest, dedupe, export, import, cohorts, mirror, profiles), until SIGINT/SIGTERM."""
    settings = _load(config)
    if stages:
        try:
            settings = load_settings(config, worker={**settings.worker.model_dump(),
                                                     "stages": [s.strip() for s in stages.split(",")]})
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None
    from stream.kafka import ensure_topics
    logging.basicConfig(level=settings.worker.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from stream.redact import install_log_filter
    install_log_filter(settings)
    before = set_switch_interval(settings.worker.gil_switch_interval_ms)
    logging.getLogger("stream.worker").info("interpreter switch interval %g ms (worker.gil_switch_interval_ms; "
                                            "was %g ms)", settings.worker.gil_switch_interval_ms, before)
    from stream.kafka import apply_compression_level
    try:
        apply_compression_level(settings.kafka)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        asyncio.run(ensure_topics(settings))
    except Exception as exc:
        raise click.ClickException(f"cannot reach the Kafka cluster at {settings.kafka.bootstrap_servers} to "
                                   f"create the topics: {exc}. Check kafka.bootstrap_servers.") from None
    from stream.app import StreamWorker, build_app, effective_stages
    runs = effective_stages(settings)
    if "cohorts" in runs:      # where the rekey step reads its rows (cohort_state.rekey_in_identity: auto)
        from stream.cohorts import rekey_mode
        try:
            fold = asyncio.run(rekey_mode.resolve(settings, "dedupe" in runs and settings.identity.enabled))
        except Exception as exc:
            raise click.ClickException(f"cannot read where the cohorts stage's rekey step reads its rows (the "
                                       f"consumer groups of {settings.topics.name('accepted')}): {exc}. Check the "
                                       f"Kafka cluster, or set cohort_state.rekey_in_identity.") from None
        settings = settings.model_copy(update={"cohort_state": settings.cohort_state.model_copy(
            update={"rekey_in_identity": fold})})
    w = settings.worker
    if w.http_port:
        from stream.web import port_free
        if (why := port_free(w.http_host, w.http_port)) is not None:
            raise click.ClickException(f"cannot serve HTTP on {w.http_host}:{w.http_port}: {why} (worker.http_port)")
    app = build_app(settings)
    # what start-up built (faust, aiokafka, the app) lives as long as the process: out of the collector's sight,
    # the full collections that batch after batch of short-lived rows trigger stay short (a second freeze once the
    # worker is ready, its consumers and S3 clients made, measured no gain: BENCHMARKS.md)
    gc.freeze()
    StreamWorker(app, settings, loglevel=settings.worker.log_level, quiet=True).execute_from_commandline()


@main.command()
@click.option("--config", "-c", type=click.Path(dir_okay=False), envvar="STREAM_CONFIG", help=CONFIG_HELP)
@click.option("--timeout", default=15.0, show_default=True, help="Seconds to wait for each probe.")
def check(config: str | None, timeout: float) -> None:
    """Validate the configuration, then probe the broker and every bucket it names."""
    settings = _load(config)
    click.echo(f"configuration: ok ({len(settings.projects)} project(s), {len(settings.destinations)} "
               "destination(s))")
    from stream.check import run_checks
    problems = asyncio.run(run_checks(settings, timeout, click.echo))
    if problems:
        raise click.ClickException(f"{problems} problem(s) found; see above")
    click.echo("all checks passed")


@main.command()
@click.option("--exit-after", type=float, default=None, metavar="SECONDS",
              help="Stop everything cleanly after this many seconds (for scripts).")
@click.option("--rate", type=float, default=50.0, show_default=True, help="Live sample events per second.")
@click.option("--backfill", type=int, default=3000, show_default=True,
              help="Sample events stamped in each of the two hours before this one (they close at once).")
@click.option("--dir", "workdir", type=click.Path(file_okay=False), default=".stream-dev", show_default=True,
              help="Where the generated config, logs and worker state go.")
def dev(exit_after: float | None, rate: float, backfill: int, workdir: str) -> None:
    """Run everything locally: a broker, a local S3, the worker, and a sample producer."""
    from stream.devstack.dev import run_dev
    try:
        code = run_dev(Path(workdir), exit_after, rate, backfill, click.echo)
    except ProbeError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(code)


@main.group()
def exports() -> None:
    """Look at the exports: what each destination has written, hour by hour."""


__import__("stream.admin.cli", fromlist=["register"]).register(exports, main)


@exports.command("status")
@click.option("--config", "-c", type=click.Path(dir_okay=False), envvar="STREAM_CONFIG", help=CONFIG_HELP)
@click.option("--hours", default=24, show_default=True, help="How many of the latest hours to list per destination.")
@click.option("--json", "as_json", is_flag=True, help="Print the status document as JSON (as /exports/status does).")
def exports_status(config: str | None, hours: int, as_json: bool) -> None:
    """Per destination and hour: sealed or open, the _complete marker, objects, events, bytes, last error.

    Read from the export ledger topic, so it shows every worker's exports.
    """
    settings = _load(config)
    from stream.export.status_cli import read_status, render
    try:
        doc = asyncio.run(read_status(settings, hours))
    except Exception as exc:
        raise click.ClickException(f"cannot read the export ledger from {settings.kafka.bootstrap_servers}: "
                                   f"{exc}. Check kafka.bootstrap_servers and topics.prefix.") from None
    if as_json:
        import orjson
        click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(render(doc))


@main.group()
def deadletters() -> None:
    """Read the dead-letter topic: every rejected input with its reason and where it came from."""


@deadletters.command("tail")
@click.option("--config", "-c", type=click.Path(dir_okay=False), envvar="STREAM_CONFIG", help=CONFIG_HELP)
@click.option("--lines", "-n", default=20, show_default=True, help="How many of the latest dead letters to show.")
@click.option("--follow", "-f", is_flag=True, help="Then print new dead letters as they arrive, until Ctrl-C.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per dead letter (the value as text).")
def deadletters_tail(config: str | None, lines: int, follow: bool, as_json: bool) -> None:
    """The latest dead letters: when, the reason and field, the source (topic[partition]@offset, or the HTTP
    route and event index), what is wrong, and the start of the input (credentials redacted)."""
    settings = _load(config)
    from stream.deadletters import read_dead_letters
    from stream.events.deadletter import describe

    async def run() -> None:
        caught_up, shown = False, []
        async for d in read_dead_letters(settings, last=lines, follow=follow):
            if d is None:          # the latest ones are read: show them, then each new one as it comes
                caught_up = True
                for x in shown[-lines:]:
                    _print_dead_letter(x, as_json, describe)
            elif caught_up:
                _print_dead_letter(d, as_json, describe)
            else:
                shown.append(d)
        if not follow:
            for x in shown[-lines:]:
                _print_dead_letter(x, as_json, describe)
    _run_kafka(settings, run())


def _print_dead_letter(d: dict, as_json: bool, describe) -> None:
    if as_json:
        import orjson
        click.echo(orjson.dumps({**d, "key": (d["key"] or b"").decode("utf-8", "backslashreplace"),
                                 "value": (d["value"] or b"").decode("utf-8", "backslashreplace")}).decode())
    else:
        click.echo(describe(d))


@deadletters.command("summary")
@click.option("--config", "-c", type=click.Path(dir_okay=False), envvar="STREAM_CONFIG", help=CONFIG_HELP)
@click.option("--hours", default=24.0, show_default=True, help="Summarize the dead letters of this many hours.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def deadletters_summary(config: str | None, hours: float, as_json: bool) -> None:
    """Dead letters by reason: how many, from which sources, first and last, and the latest one's coordinates."""
    settings = _load(config)
    import time

    from stream.deadletters import read_dead_letters
    from stream.events.deadletter import summarize

    since = time.time_ns() // 1_000_000 - int(hours * 3_600_000)

    async def run() -> list[dict]:
        return summarize([d async for d in read_dead_letters(settings, since_ms=since) if d is not None])
    rows = _run_kafka(settings, run())
    if as_json:
        import orjson
        click.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    if not rows:
        click.echo(f"no dead letters in the last {hours:g} hours")
        return
    iso = lambda ms: time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms // 1000)) + "Z"  # noqa: E731
    click.echo(f"dead letters of the last {hours:g} hours, {sum(r['count'] for r in rows)} in all:")
    for r in rows:
        sources = ", ".join(f"{t} {n}" for t, n in sorted(r["sources"].items()))
        click.echo(f"  {r['reason']:<20} {r['count']:>8}  ({sources}; {iso(r['first_at'])} .. {iso(r['last_at'])})")
        latest = r["latest"]
        click.echo(f"      latest: {latest['source']}{' ' + latest['field'] if latest['field'] else ''}: "
                   f"{latest['detail']}")


def _run_kafka(settings: Settings, coro):
    """Run ``coro``; a broker that cannot be reached is one line naming the setting, not a traceback."""
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        raise click.Abort() from None
    except Exception as exc:
        raise click.ClickException(f"cannot read from the Kafka cluster at {settings.kafka.bootstrap_servers}: "
                                   f"{type(exc).__name__}: {exc}. Check kafka.bootstrap_servers and "
                                   "topics.prefix.") from None


@main.command("config-reference")
def config_reference() -> None:
    """Print every configuration key with its default and description (Markdown)."""
    click.echo("| key | default | description |\n|---|---|---|")
    for path, default, doc in field_reference():
        click.echo(f"| `{path}` | `{default}` | {doc} |")


@main.group()
def s3() -> None:
    """Read what the exporter wrote (handy with the local stack)."""


def _s3_client(endpoint_url: str | None):
    """A boto3 S3 client; against a loopback endpoint without credentials, the local stack's dummy ones."""
    import os
    from urllib.parse import urlparse

    import boto3

    from stream.devstack.services import local_aws_env
    session = boto3.Session()
    host = urlparse(endpoint_url).hostname if endpoint_url else None
    if session.get_credentials() is None and host in ("127.0.0.1", "localhost", "::1"):
        env = local_aws_env()
        session = boto3.Session(aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                                aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                                region_name=os.environ.get("AWS_DEFAULT_REGION", env["AWS_DEFAULT_REGION"]))
    return session.client("s3", endpoint_url=endpoint_url)


def _aws_errors(fn):
    """One line instead of a traceback when S3 says no."""
    import functools

    from botocore.exceptions import BotoCoreError, ClientError

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise click.ClickException(str(exc)) from None
    return wrapper


def _split(url: str) -> tuple[str, str]:
    if not url.startswith("s3://"):
        raise click.BadParameter(f"{url!r} is not an s3://bucket/key URL")
    bucket, _, key = url[5:].partition("/")
    return bucket, key


@s3.command("ls")
@click.argument("url")
@click.option("--endpoint-url", envvar="STREAM_S3__ENDPOINT_URL", help="S3 endpoint (the local stack prints it).")
@_aws_errors
def s3_ls(url: str, endpoint_url: str | None) -> None:
    """List objects under s3://bucket/prefix with their sizes."""
    bucket, prefix = _split(url)
    client = _s3_client(endpoint_url)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            click.echo(f"{o['Size']:>12}  s3://{bucket}/{o['Key']}")


@s3.command("cat")
@click.argument("url")
@click.option("--endpoint-url", envvar="STREAM_S3__ENDPOINT_URL", help="S3 endpoint (the local stack prints it).")
@_aws_errors
def s3_cat(url: str, endpoint_url: str | None) -> None:
    """Print an object, gunzipped when it is gzip."""
    import gzip
    bucket, key = _split(url)
    body = _s3_client(endpoint_url).get_object(Bucket=bucket, Key=key)["Body"].read()
    sys.stdout.buffer.write(gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body)


main.add_command(__import__("stream.api.cli", fromlist=["api"]).api)


def _import_commands() -> click.Group:
    """``stream import``: set-up and checks of the sources (stream.imports.setup), preview, status, history and
    retry."""
    from stream.imports import commands
    from stream.imports.setup import import_group
    for cmd in (commands.preview, commands.status, commands.history, commands.retry):
        import_group.add_command(cmd)
    return import_group


main.add_command(_import_commands())


@main.group()
def cohorts() -> None:
    """Cohorts and their syncs to S3: three CSV files per sync (entering, exiting, existing), FORMATS.md 6."""


@cohorts.command("list")
@click.option("--config", "-c", type=click.Path(dir_okay=False), envvar="STREAM_CONFIG", help=CONFIG_HELP)
def cohorts_list(config: str | None) -> None:
    """Every cohort: id, project, kind, name, and the destinations it is synced to."""
    settings = _load(config)
    cohort_set = settings.cohort_set
    if not cohort_set.cohorts:
        click.echo("no cohorts (cohorts in the settings)")
        return
    for c in cohort_set.cohorts:
        syncs = [f"{d.name} ({s.cadence})" for d in settings.cohort_destinations for s in d.syncs if s.cohort == c.id]
        click.echo(f"{c.id:<24} project {c.project:<10} {'static' if c.static else 'rule':<6} {c.name}"
                   f"{'  -> ' + ', '.join(syncs) if syncs else ''}")


@cohorts.command("show")
@click.argument("cohort_id")
@click.option("--config", "-c", type=click.Path(dir_okay=False), envvar="STREAM_CONFIG", help=CONFIG_HELP)
def cohorts_show(cohort_id: str, config: str | None) -> None:
    """One cohort: its definition, its conditions, and its syncs with the keys of the next one."""
    import time

    import yaml

    from stream.cohorts.sync import SyncJob, scheduled_time, sync_keys
    settings = _load(config)
    cohort = settings.cohort_set.cohort(cohort_id)
    if cohort is None:
        raise click.ClickException(f"no cohort {cohort_id!r} (stream cohorts list shows them)")
    definition = next(d for d in settings.cohorts if d.get("id") == cohort_id)
    click.echo(yaml.safe_dump(definition, sort_keys=False).rstrip())
    for c in cohort.conditions:
        window = f"within_days {c.within_days}" if c.within_days is not None else f"between {c.between}"
        click.echo(f"condition {c.id}: {c.event_type}, {window} (counters under {c.key})")
    now = int(time.time() * 1000)
    for d in settings.cohort_destinations:
        for s in d.syncs:
            if s.cohort == cohort_id:
                keys = sync_keys(SyncJob(d, s, cohort), scheduled_time(s.cadence, now, (), s.time_zone))
                click.echo(f"sync to {d.name}: {s.cadence}, s3://{d.bucket}/{keys['existing']} (and _entering, "
                           "_exiting)" + ("; once: stamped with its first sync's time" if s.cadence == "once" else ""))


def _parse_now(now: str | None) -> int:
    import time
    if now is None:
        return int(time.time() * 1000)
    from datetime import UTC, datetime
    try:
        t = datetime.fromisoformat(now)
    except ValueError:
        raise click.BadParameter(f"{now!r}: write a UTC time such as 2024-03-09T07:00Z", param_hint="--now") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return int(t.timestamp() * 1000)


@cohorts.command("sync")
@click.argument("cohort_id")
@click.option("--config", "-c", type=click.Path(dir_okay=False), envvar="STREAM_CONFIG", help=CONFIG_HELP)
@click.option("--destination", "-d", help="Only the sync to this cohort destination; default: every one.")
@click.option("--now", help="Sync as if it were this UTC time (ISO 8601, e.g. 2024-03-09T07:30Z); default: now. "
              "The sync due then is written, unless it is complete already.")
def cohorts_sync(cohort_id: str, config: str | None, destination: str | None, now: str | None) -> None:
    """Write the cohort's sync due now (hourly, daily: the hour's, the day's; once: the first), from the events
    on events.accepted: entering, exiting and existing files, then the sync's completion record."""
    settings = _load(config)
    from stream.cohorts.sync import SyncError, jobs_of, run_syncs, stamp
    try:
        jobs = jobs_of(settings, cohort_id, destination)
    except SyncError as exc:
        raise click.ClickException(str(exc)) from None
    now_ms = _parse_now(now)
    try:
        results = asyncio.run(run_syncs(settings, jobs, now_ms, echo=click.echo))
    except KeyboardInterrupt:
        raise click.Abort() from None
    except Exception as exc:
        raise click.ClickException(f"cohort sync failed: {type(exc).__name__}: {exc}") from None
    for r in results:
        if r.error is None:
            for diff_type, key in r.keys.items():
                click.echo(f"{diff_type:<9} s3://{r.job.destination.bucket}/{key}")
    failed = [r for r in results if r.error is not None]
    if failed:
        raise click.ClickException(
            f"{len(failed)} of {len(results)} cohort syncs failed: " + "; ".join(
                f"{r.job.name} at {stamp(r.scheduled_ms)} ({r.reason}): {r.error}" for r in failed)
            + ". The others went on; run it again once the cause is fixed (stream cohorts history shows the failures)")


@cohorts.command("history")
@click.argument("cohort_id")
@click.option("--config", "-c", type=click.Path(dir_okay=False), envvar="STREAM_CONFIG", help=CONFIG_HELP)
@click.option("--destination", "-d", help="Only the syncs to this cohort destination.")
@click.option("--json", "as_json", is_flag=True, help="One JSON completion record per line.")
def cohorts_history(cohort_id: str, config: str | None, destination: str | None, as_json: bool) -> None:
    """The cohort's completed syncs and failed attempts (the CLI's and the worker's), read from their records on
    S3."""
    settings = _load(config)
    from stream.cohorts.sync import SyncError, history, jobs_of
    try:
        jobs = jobs_of(settings, cohort_id, destination)
        rows = asyncio.run(history(settings, jobs))
    except SyncError as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:
        raise click.ClickException(f"cannot read the sync records: {type(exc).__name__}: {exc}") from None
    if as_json:
        import orjson
        for _, r in rows:
            click.echo(orjson.dumps(r).decode())
        return
    if not rows:
        click.echo(f"no sync of {cohort_id} completed or failed")
    for job, r in rows:
        if "error" in r:
            click.echo(f"{r['stamp']}  {job.destination.name:<16} FAILED ({r['reason']}): {r['error']}")
            continue
        click.echo(f"{r['stamp']}  {job.destination.name:<16} members {r['members']:>8}  entering {r['entering']:>8}"
                   f"  exiting {r['exiting']:>8}  s3://{job.destination.bucket}/{r['keys']['existing']}")



def _admin_call(config: str | None, call: Any) -> Any:
    """Run ``call(admin)`` (a coroutine) with an ``Admin`` of the settings: the same action as the admin API's."""
    from stream.admin.service import Admin, AdminError
    settings = _load(config)
    try:
        return asyncio.run(call(Admin(settings)))
    except AdminError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        raise click.Abort() from None


@cohorts.command("sync-now")
@click.argument("cohort_id")
@click.option("--destination", "-d", help="Only the sync to this cohort destination; default: every one.")
@click.option("--config", "-c", type=click.Path(dir_okay=False), envvar="STREAM_CONFIG", help=CONFIG_HELP)
def cohorts_sync_now(cohort_id: str, destination: str | None, config: str | None) -> None:
    """Ask the workers to sync COHORT_ID now: a request on the sync requests topic, run by the worker holding the
    sync duty in turn with its scheduled syncs (POST /admin/cohorts/ID/syncs); prints its id and what each sync
    will do."""
    from stream.cohorts.requests import answer_lines
    if _load(config).cohort_set.cohort(cohort_id) is None:
        raise click.ClickException(f"no cohort {cohort_id!r} in the settings: nothing was asked (stream cohorts list "
                                   "shows them)")

    async def ask(admin: Any) -> Any:
        return await admin.cohort_sync(cohort_id, destination, by="cli")
    for line in answer_lines(_admin_call(config, ask)):
        click.echo(line)


@cohorts.command("upload")
@click.argument("cohort_id")
@click.argument("file", type=click.File("rb"))
@click.option("--config", "-c", type=click.Path(dir_okay=False), envvar="STREAM_CONFIG", help=CONFIG_HELP)
def cohorts_upload(cohort_id: str, file: Any, config: str | None) -> None:
    """Replace the members of the static cohort COHORT_ID with the user ids of FILE (one per line, - for stdin),
    kept in each bucket the cohort is synced to; its next syncs list them (PUT /admin/cohorts/ID/members)."""
    from stream.cohorts import static
    try:
        ids = static.parse_lines(file.read().decode("utf-8"))
    except UnicodeDecodeError:
        raise click.ClickException("the file is not UTF-8 text: give one user id per line in UTF-8") from None
    except static.StaticError as exc:
        raise click.ClickException(str(exc)) from None

    async def upload(admin: Any) -> Any:
        return await admin.upload_members(cohort_id, ids, by="cli")
    doc = _admin_call(config, upload)
    click.echo(f"{cohort_id}: {doc['members']} user ids stored")
    for where in doc["stored"]:
        click.echo(f"  {where}")


@cohorts.command("memberships")
@click.option("--user-id", help="The user's user_id.")
@click.option("--amplitude-id", type=click.IntRange(min=0), help="The user's amplitude_id (instead of --user-id).")
@click.option("--project", type=click.IntRange(min=0), help="Only the cohorts of this project.")
@click.option("--json", "as_json", is_flag=True, help="The document of GET /admin/memberships.")
@click.option("--config", "-c", type=click.Path(dir_okay=False), envvar="STREAM_CONFIG", help=CONFIG_HELP)
def cohorts_memberships(user_id: str | None, amplitude_id: int | None, project: int | None, as_json: bool,
                        config: str | None) -> None:
    """The cohorts a user is in: per sync, the user's row in the existing file of its latest completed sync."""
    async def lookup(admin: Any) -> Any:
        return await admin.memberships(user_id, amplitude_id, project)
    doc = _admin_call(config, lookup)
    if as_json:
        import orjson
        click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
        return
    for m in doc["memberships"]:
        routing = f" ({m['routing_key']})" if m["routing_key"] else ""
        click.echo(f"{m['cohort']:<24} {m['destination']}{routing:<12} {m['stamp']}  amplitudeID {m['amplitude_id']}"
                   f"  userID {m['user_id'] or '-'}  s3://{m['bucket']}/{m['key']}")
    if not doc["memberships"]:
        click.echo("in no cohort's latest completed sync")
    waiting = [f"{c['cohort']} -> {c['destination']}" for c in doc["checked"] if c["stamp"] is None]
    if waiting:
        click.echo(f"no completed sync yet: {', '.join(waiting)}")


@cohorts.command("download")
@click.argument("cohort_id")
@click.argument("key")
@click.option("--output", "-o", type=click.File("wb"), default="-", help="Where to write the file (default: "
              "stdout).")
@click.option("--config", "-c", type=click.Path(dir_okay=False), envvar="STREAM_CONFIG", help=CONFIG_HELP)
def cohorts_download(cohort_id: str, key: str, output: Any, config: str | None) -> None:
    """Copy KEY, a file of a completed sync of COHORT_ID (stream cohorts history lists them), to --output."""
    async def download(admin: Any) -> None:
        first, rest = await admin.cohort_file(cohort_id, key)
        output.write(first)
        async for chunk in rest:
            output.write(chunk)
    _admin_call(config, download)


if __name__ == "__main__":
    main()
