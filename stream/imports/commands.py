"""``stream import preview|status|history|retry``: clients of ``stream.imports.ops`` (the admin API serves the same)."""

from __future__ import annotations

import asyncio

import click
import orjson

from stream.imports.setup import settings_of as _load
from stream.imports.setup import config_option


def _run(coro):
    from stream.imports.ops import Refused
    try:
        return asyncio.run(coro)
    except Refused as exc:
        raise click.ClickException(str(exc)) from None
    except LookupError as exc:
        raise click.ClickException(str(exc.args[0])) from None


@click.command("preview")
@click.argument("source")
@config_option
@click.option("--key", help="The file to read; default: the first file of the source its filter accepts.")
@click.option("--rows", default=10, show_default=True, help="How many rows to show.")
@click.option("--json", "as_json", is_flag=True, help="Print the preview as JSON (as the admin API does).")
def preview(source: str, config: str | None, key: str | None, rows: int, as_json: bool) -> None:
    """Show a file's first rows next to the events they become, and each row's errors; imports nothing."""
    from stream.imports import ops
    from stream.imports.reader import FileError
    settings = _load(config)
    try:
        doc = _run(ops.preview(settings, source, key, rows))
    except FileError as exc:
        raise click.ClickException(f"the file cannot be read: {exc}") from None
    if as_json:
        click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2, default=str).decode())
        return
    for line in ops.show_preview(doc):
        click.echo(line)


@click.command("status")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON (as the admin API does).")
def status(config: str | None, as_json: bool) -> None:
    """Files discovered, waiting, done and failed (with reasons) per source, rows, and the oldest wait; per file of a
    mirror source, its mutations by type and outcome and the hours they rewrote, and when."""
    from stream.imports import ops
    settings = _load(config)
    if not settings.sources:
        raise click.ClickException("no import source is configured (sources: in the settings)")
    click.echo("reading imports.files and the processed-files changelog...", err=True)
    doc = _run(ops.status(settings))
    if as_json:
        click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
        return
    for line in ops.show_status(doc):
        click.echo(line)


@click.command("history")
@click.argument("source")
@config_option
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000),
              help="The most files to show (a page).")
@click.option("--before", help="Show the files applied before this cursor: the one a previous page printed last "
              "(its 'more:' line, or next in --json).")
@click.option("--json", "as_json", is_flag=True, help="Print the page as JSON (as the admin API does).")
def history(source: str, config: str | None, limit: int, before: str | None, as_json: bool) -> None:
    """Every mirror file of SOURCE (a mirror source of events), latest applied first, a page at a time: its
    mutations by type and outcome, the hours they rewrote and when; import status shows the latest 20 only."""
    from stream.imports import mirror_files, ops
    settings = _load(config)
    click.echo("reading the mirror-files topic and the processed-files changelog...", err=True)
    doc = _run(ops.history(settings, source, limit, before))
    if as_json:
        click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
        return
    for line in mirror_files.show_history(doc["source"], doc):
        click.echo(line)


@click.command("retry")
@click.argument("source")
@click.argument("keys", nargs=-1, required=True)
@config_option
def retry(source: str, keys: tuple[str, ...], config: str | None) -> None:
    """Import files of SOURCE again (a failed file once fixed, or one to read again): rows imported before keep
    their ids, so dedupe drops them within its window."""
    from stream.imports import ops
    settings = _load(config)
    records = _run(ops.retry(settings, source, list(keys)))
    for r in records:
        click.echo(f"{r.url}: queued for import again (a worker picks it up from {settings.topics.name('import_files')})")
