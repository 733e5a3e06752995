"""The admin commands of ``stream``: the CLI face of ``stream.admin.service`` (one implementation per action)."""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

import click

from stream.admin.service import Admin, AdminError, dumps, progress_line

CONFIG_HELP = "YAML configuration file (examples/stream.yaml); STREAM_* environment variables override it."


def _settings(config: str | None):
    from stream.errors import ConfigError
    from stream.settings import load_settings
    try:
        return load_settings(config)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _run(coro) -> Any:
    try:
        return asyncio.run(coro)
    except AdminError as exc:
        raise click.ClickException(str(exc)) from None


def config_option(f):
    return click.option("--config", "-c", type=click.Path(dir_okay=False), envvar="STREAM_CONFIG",
                        help=CONFIG_HELP)(f)


def register(exports: click.Group, main: click.Group) -> None:
    """Add the admin commands to ``stream exports`` and ``stream``."""

    @exports.command("history")
    @config_option
    @click.argument("destination")
    @click.option("--hours", default=24, show_default=True, help="How many of the latest hours to show.")
    @click.option("--json", "as_json", is_flag=True, help="The history document as JSON (as the admin API).")
    def exports_history(config, destination, hours, as_json):
        """Per hour, every export job of DESTINATION (live, backfills): status, objects, events, bytes, timing,
        failed attempts and the last error."""
        doc = _run(Admin(_settings(config)).history(destination, hours))
        if as_json:
            click.echo(dumps(doc))
            return
        for exp in doc["exporters"]:
            click.echo(f"{exp['exporter']} ({exp['exports']})")
            click.echo(f"  {'hour (UTC)':<21} {'job':<26} {'status':<11} {'objects':>7} {'events':>10} "
                       f"{'bytes':>12} {'delay':>9} {'failed':>6}  last error")
            for h in exp["hours"]:
                for j in h["jobs"]:
                    err = f"{j['last_error']['reason']}: {j['last_error']['detail']}" if j["last_error"] else ""
                    delay = f"{j['delay_s']:.0f}s" if j["delay_s"] is not None else "-"
                    click.echo(f"  {h['hour']:<21} {j['job']:<26} {j['status']:<11} {j['objects']:>7} "
                               f"{j['events']:>10} {j['bytes']:>12} {delay:>9} {j['failed_attempts']:>6}  "
                               f"{err}".rstrip())

    for verb, on in (("enable", True), ("disable", False)):
        def make(verb=verb, on=on):
            @exports.command(verb, help=f"Turn DESTINATION's exports {'on' if on else 'off'} at runtime, with no "
                             "restart" + (": they resume from their own committed offsets." if on else
                                          ": each exporter finishes its cycle and leaves its consumer group."))
            @config_option
            @click.argument("destination")
            @click.option("--exports", "what", type=click.Choice(["all", "events", "merged_ids"]), default="all",
                          show_default=True, help="Which data set of the destination.")
            def command(config, destination, what):
                doc = _run(Admin(_settings(config)).set_enabled(destination, on, what, by="cli"))
                click.echo(f"{', '.join(doc['exporters'])}: {'enabled' if on else 'disabled'} (the workers follow "
                           "within seconds; no restart)")
                for gap in doc.get("data_lost", []):
                    click.echo(f"  data lost: {gap['exporter']} partition {gap['partition']} offsets "
                               f"{gap['first_offset']}-{gap['last_offset']}")
                if "hint" in doc:
                    click.echo(f"  {doc['hint']}")
        make()

    @exports.command("verify")
    @config_option
    @click.argument("destination")
    @click.option("--json", "as_json", is_flag=True, help="The verification document as JSON.")
    def exports_verify(config, destination, as_json):
        """Probe DESTINATION as the exporter writes (a put under each prefix its layout writes, a multipart put for
        SSE-KMS, the bucket's region), with its credentials or role: name any missing permission and the policy
        statement that grants it."""
        doc = _run(Admin(_settings(config)).verify(destination))
        if as_json:
            click.echo(dumps(doc))
        else:
            for s in doc["steps"]:
                click.echo(f"{'ok  ' if s['ok'] else 'FAIL'} {s['step']:<14} {s['where']}")
                if not s["ok"]:
                    click.echo(f"     {s['message']}")
                    if "statement" in s:
                        click.echo(f"     add to {s['add_to']}:")
                        click.echo("     " + dumps(s["statement"]).replace("\n", "\n     "))
        if not doc["ok"]:
            raise click.ClickException(f"destination {destination} cannot be written as it is set up")
        if not as_json:
            click.echo(f"destination {destination}: access verified")

    @exports.command("backfill")
    @config_option
    @click.argument("destination")
    @click.option("--from", "first", required=True, help="First hour to rebuild, UTC: 2024-03-01T00.")
    @click.option("--to", "end", required=True, help="First hour after the range, UTC: 2024-03-08T00.")
    @click.option("--exports", "what", type=click.Choice(["all", "events", "merged_ids"]), default="all",
                  show_default=True, help="Which data set of the destination to rebuild.")
    @click.option("--source", type=click.Choice(["auto", "accepted", "archive"]), default="auto", show_default=True,
                  help="Where the events come from: events.accepted within its retention, else the archive "
                  "destination (auto), or only one of them.")
    @click.option("--json", "as_json", is_flag=True, help="Print the final progress document as JSON.")
    def exports_backfill(config, destination, first, end, what, source, as_json):
        """Rebuild DESTINATION's hours [--from, --to) so that each holds every event of the hour exactly once,
        whatever it held before. Ctrl-C stops after the hours being rebuilt; twice, at once (then run it again)."""
        settings = _settings(config)
        admin = Admin(settings)
        req = _run(_request(admin, destination, first, end, what, source))
        tty = sys.stderr.isatty()
        stopping = {"n": 0}

        def progress(doc):
            line = progress_line(doc)
            if tty:
                click.echo("\r" + line, nl=False, err=True)
            elif doc["hours_done"] != progress.last:
                click.echo(line, err=True)
            progress.last = doc["hours_done"]
        progress.last = -1

        async def run():
            loop = asyncio.get_running_loop()
            task = asyncio.current_task()

            def interrupt():
                stopping["n"] += 1
                if stopping["n"] == 1:
                    click.echo("\nstopping after the hours being rebuilt (Ctrl-C again to stop at once)", err=True)
                else:
                    task.cancel()
            loop.add_signal_handler(signal.SIGINT, interrupt)
            click.echo(f"backfill {req.job}: {destination} {first} .. {end} ({source})", err=True)
            return await admin.run_backfill(req, progress, cancelled=lambda: stopping["n"] > 0)
        try:
            doc = _run(run())
        except asyncio.CancelledError:
            raise click.ClickException(f"backfill {req.job} stopped mid-way: run the same backfill again to "
                                       "converge") from None
        if tty:
            click.echo("", err=True)
        if as_json:
            click.echo(dumps(doc))
        else:
            click.echo(f"backfill {doc['job']} {doc['state']}: {doc['hours_done']}/{doc['hours_total']} hours, "
                       f"{doc['objects']} objects, {doc['events']:,} events, {doc['deleted']} objects replaced")
        if doc["state"] == "failed":
            raise click.ClickException(doc["error"])

    @exports.command("backfills")
    @config_option
    @click.argument("destination", required=False)
    def exports_backfills(config, destination):
        """The backfills the ledger knows (of DESTINATION), latest first, with their progress."""
        for doc in _run(Admin(_settings(config)).backfills(destination)):
            click.echo(f"{doc['job']}  {doc['destination']}  {doc['from']} .. {doc['to']}  {progress_line(doc)}")

    @exports.command("cancel")
    @config_option
    @click.argument("job")
    def exports_cancel(config, job):
        """Ask the running backfill JOB to stop after the hours it is rebuilding (wherever it runs)."""
        doc = _run(Admin(_settings(config)).cancel(job, by="cli"))
        click.echo(f"backfill {job}: {doc['cancel']}")

    @main.command("policy")
    @config_option
    @click.argument("destination")
    @click.option("--enforce-encryption", is_flag=True, help="Add Segment's Deny statements refusing puts without "
                  "the destination's server-side encryption to the bucket policy.")
    def policy(config, destination, enforce_encryption):
        """Print the least-privilege policies for DESTINATION, ready to paste: bucket policy, role policy, KMS key
        policy statement (SSE-KMS) and trust policy (a role with an external id). Given an import source's name,
        its read role's permission policy (list, read, decrypt, the bucket's notifications) and trust policy. Given
        a cohort destination's name, its writer's policies: put the CSV files and the sync records, read back the
        previous existing file and the records, list the records."""
        doc = _run(_policy(Admin(_settings(config)), destination, enforce_encryption))
        click.echo(dumps(doc))


async def _request(admin: Admin, destination, first, end, what, source):
    return admin.request(destination, first, end, what, source, by="cli")


async def _policy(admin: Admin, destination, enforce_encryption):
    return admin.policy(destination, enforce_encryption)
