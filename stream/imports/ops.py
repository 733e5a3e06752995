"""What the CLI and the admin API do with import sources: preview, status, retry.

* ``preview``: the first rows of a file next to the events they convert to and each row's errors; it reads the
  file and produces nothing (Amplitude shows this before a source may be turned on).
* ``status``: per source, files discovered, waiting (discovered, not yet imported), done and failed (with
  reasons), rows, and the lag of the oldest waiting file; read from imports.files and the processed-files
  table's changelog, as a worker's table holds them. A mirror source of events also lists its files' mutations by
  type and outcome and the hours they rewrote, and when (``stream.imports.mirror_files``, from the mirror-files
  topic the mirror stage writes).
* ``history``: every mirror file of a mirror source of events, a page at a time, latest applied first
  (``history_page``), from the same records as ``status`` (which shows the 20 applied last).
* ``retry``: a discovery record with found_by ``retry``: the worker imports the file again even if it was done or
  failed. Rows imported before keep their ids, so dedupe drops them (within the dedupe window).

Both take only keys of the source (under its prefix and matching its filter pattern, ``discovery.wanted``), else
``Refused`` (the admin API's 400): the admin token must not reach every object the workers' role can read. A
preview reads what its rows need: JSON lines and CSV as a stream that stops after them; parquet by ranged GETs
of its footer and the first pages of its columns (``stream.imports.ranged``), at most ``PREVIEW_MAX_BYTES``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from typing import Any

import orjson

from stream.events.normalize import Normalized, Rules
from stream.imports import discovery, mirror_files
from stream.imports.files import FileState, ImportFile, State, split_file_key
from stream.imports.mirror_files import FileSummary
from stream.imports.rows import FileContext, convert, convert_mirror, convert_profiles
from stream.settings import Settings, SourceSettings

PREVIEW_ROWS = 10
PREVIEW_MAX_BYTES = 64 << 20
"""The most a parquet preview fetches of its object (footer and first pages; about a megabyte or two per column)."""
REFUSED_SHOWN = 5


class Refused(ValueError):
    """Asked for something the source does not hold (a key outside it), or a preview that would read too much."""


def check_keys(src: SourceSettings, keys: list[str]) -> None:
    """Refuse the request unless every key is a file of ``src`` (``discovery.wanted``)."""
    from stream.imports import discovery
    problems = [why for key in keys if (why := discovery.outside(src, key)) is not None]
    if problems:
        more = f" (and {len(problems) - REFUSED_SHOWN} more keys like them)" if len(problems) > REFUSED_SHOWN else ""
        raise Refused("; ".join(problems[:REFUSED_SHOWN]) + more)


def source_or_error(settings: Settings, name: str) -> SourceSettings:
    src = settings.source(name)
    if src is None:
        names = ", ".join(s.name for s in settings.sources) or "none"
        raise LookupError(f"no source named {name!r}; sources: {names}")
    return src


def preview_rows(settings: Settings, src: SourceSettings, f: ImportFile, items: list[Any], now_ms: int) -> list[dict]:
    """Per item: its row number, the source row, the converted export row (or None) and its errors (pure). For a
    mirror source, also the mutation (op, insert_id, device_id); the export row is the mutation's new event (None
    for a DELETE). For a source of profiles, the mutation is (op, user_id) and ``profile`` the user's properties it
    sets (None for a DELETE); there is no event."""
    from stream.events import deadletter
    from stream.imports import mutations, profiles
    from stream.imports.reader import RowError
    ctx = FileContext(src, f, 0, now_ms, Rules.of(settings.ingest), record="preview")
    mirror = src.strategy == "mirror"
    out = []
    for item in items:
        if src.data_type == "profiles":
            res = convert_profiles(ctx, [item], now_ms, f.event_time_ms)
        else:
            res = convert_mirror(ctx, [item], now_ms, f.event_time_ms) if mirror else convert(ctx, [item], now_ms)
        entry: dict[str, Any] = {"row": item.number, "source": None if isinstance(item, RowError) else item.value,
                                 "event": None, "errors": []}
        if mirror:
            entry["mutation"] = None
        if res.events:
            ev: Normalized = res.events[0][1]
            entry["event"] = orjson.loads(ev.line)
        for _, record in res.mutations:
            if src.data_type == "profiles":
                _, p = profiles.decode_mutation(record)
                entry["mutation"] = {"op": p.op.value, "user_id": p.user_id}
                entry["profile"] = p.properties
                continue
            _, m = mutations.decode(record)
            entry["mutation"] = {"op": m.op.value, "insert_id": m.insert_id, "device_id": m.device_id}
            entry["event"] = None if m.row is None else dict(m.row)
        for _, record in res.dead:
            d = deadletter.decode(record)
            entry["errors"].append({"reason": d["reason"], "field": d["field"], "detail": d["detail"]})
        src_conv = src.compiled.convert
        if not isinstance(item, RowError):
            _, errors = src_conv(item.value, now_ms)
            entry["errors"] += [{"reason": "field_left_out", "field": e.field, "detail": e.message} for e in errors]
        out.append(entry)
    return out


async def preview(settings: Settings, name: str, key: str | None = None, rows: int = PREVIEW_ROWS) -> dict:
    """Read the first ``rows`` rows of ``key`` (default: the first file of the source the filter accepts)."""
    from stream.imports.fetch import file_type_of, read_rows
    from stream.imports import discovery
    from stream.s3.client import target_client, target_of
    src = source_or_error(settings, name)
    if key is not None:
        check_keys(src, [key])
    else:
        async with target_client(target_of(src, settings.s3), settings.s3) as s3:
            pages = s3.get_paginator("list_objects_v2").paginate(Bucket=src.bucket, Prefix=src.prefix)
            async for page in pages:
                key = next((o["Key"] for o in page.get("Contents", []) if discovery.wanted(src, o["Key"])), None)
                if key is not None:
                    break
        if key is None:
            raise LookupError(f"no file under s3://{src.bucket}/{src.prefix} matches the source's filter yet; "
                              "upload one, or name one with --key")
    now = int(time.time() * 1000)
    f = ImportFile(src.name, src.bucket, key, now, "scan")
    items: list[Any] = []
    if file_type_of(src, key) == "parquet":
        items = await parquet_head(settings, src, f, rows)
    else:
        from pathlib import Path
        spool = Path(settings.worker.data_dir) / "import-spool"
        spool.mkdir(parents=True, exist_ok=True)
        gen = read_rows(settings, src, f, spool)
        try:
            async for item in gen:   # a stream: closing it after the rows wanted stops the read
                items.append(item)
                if len(items) >= rows:
                    break
        finally:
            await gen.aclose()
    return {"source": src.name, "key": key, "url": f.url, "rows": preview_rows(settings, src, f, items, now)}


async def parquet_head(settings: Settings, src: SourceSettings, f: ImportFile, rows: int) -> list[Any]:
    """The first ``rows`` rows of a parquet object, read by ranged GETs (its footer, then the first pages of each
    column) rather than copied whole; ``Refused`` when that would fetch more than ``PREVIEW_MAX_BYTES``."""
    import asyncio
    import itertools

    from stream.imports.ranged import RangedFile, ReadLimit
    from stream.imports.reader import FileError, FileErrorReason, read_parquet
    from stream.s3.arn import s3_arn
    from stream.s3.client import target_client, target_of
    from stream.s3.errors import explain
    target = target_of(src, settings.s3)
    loop = asyncio.get_running_loop()
    async with target_client(target, settings.s3) as s3:
        async def get(start: int, end: int) -> bytes:
            resp = await s3.get_object(Bucket=f.bucket, Key=f.key, Range=f"bytes={start}-{end - 1}")
            async with resp["Body"] as body:
                return await body.read()

        def fetch(start: int, end: int) -> bytes:   # called by pyarrow in the worker thread below
            return asyncio.run_coroutine_threadsafe(get(start, end), loop).result()

        def head(size: int) -> list[Any]:
            gen = read_parquet(RangedFile(size, fetch, PREVIEW_MAX_BYTES, f.url), batch_rows=max(1, rows),
                               pre_buffer=False)
            try:
                return list(itertools.islice(gen, rows))
            finally:
                gen.close()

        try:
            size = (await s3.head_object(Bucket=f.bucket, Key=f.key))["ContentLength"]
            return await asyncio.to_thread(head, size)
        except (FileError, Refused):
            raise
        except ReadLimit:
            limit = f"{PREVIEW_MAX_BYTES >> 20} MiB" if PREVIEW_MAX_BYTES >= 1 << 20 else f"{PREVIEW_MAX_BYTES} bytes"
            raise Refused(f"a preview of {f.url} would fetch more than {limit} of it (the "
                          "first pages of its columns are that large); preview a smaller file of the source") from None
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404"):
                raise LookupError(f"{f.url} does not exist; name a file that is there (`aws s3 ls`)") from None
            problem = explain(exc, target, "GetObject", s3_arn(f.bucket, f.key, region=target.region))
            raise FileError(FileErrorReason.UNREADABLE, problem.message) from None


def summarize(settings: Settings, discovered: list[tuple[bytes, ImportFile]], states: dict[bytes, FileState],
              now_ms: int, failed_shown: int = 20, mirror: Mapping[str, FileSummary] | None = None,
              mirror_shown: int = 20) -> list[dict]:
    """The status of each source from its discovery records and latest file states (pure); a mirror source of
    events also lists its files' mutations from ``mirror`` (``stream.imports.mirror_files``)."""
    out = []
    for src in settings.sources:
        keys = {k: f for k, f in discovered if f.source == src.name}
        mine = {k: s for k, s in states.items() if split_file_key(k)[0] == src.name}
        waiting = [f for k, f in keys.items() if k not in mine]
        failed = sorted(((k, s) for k, s in mine.items() if s.state is State.FAILED), key=lambda ks: -ks[1].at_ms)
        reasons: dict[str, int] = {}
        for _, s in failed:
            reasons[s.reason or "unknown"] = reasons.get(s.reason or "unknown", 0) + 1
        done = [s for s in mine.values() if s.state is State.DONE]
        oldest = min((f.event_time_ms for f in waiting), default=None)
        out.append({
            "source": src.name, "enabled": src.enabled, "bucket": src.bucket, "prefix": src.prefix,
            "files": {"discovered": len(set(keys) | set(mine)), "waiting": len(waiting), "done": len(done),
                      "failed": len(failed)},
            "rows": {"read": sum(s.rows for s in mine.values()), "imported": sum(s.imported for s in mine.values()),
                     "dead_lettered": sum(s.dead for s in mine.values())},
            "failed_by_reason": reasons,
            "failed": [{"key": split_file_key(k)[1], "reason": s.reason, "message": s.message, "rows": s.rows,
                        "at_ms": s.at_ms} for k, s in failed[:failed_shown]],
            "oldest_waiting_age_s": None if oldest is None else max(0, now_ms - oldest) / 1000,
            "last_done_ms": max((s.at_ms for s in done), default=None),
        })
        if src.strategy == "mirror" and src.data_type == "event":
            dead = {split_file_key(k)[1]: s.dead for k, s in mine.items()}
            out[-1]["mirror_files"] = mirror_files.status_of(src.bucket, functools.partial(discovery.wanted, src),
                                                             src.project, mirror or {}, dead, mirror_shown)
    return out


async def _read(settings: Settings) -> tuple[list[tuple[bytes, ImportFile]], dict[bytes, FileState],
                                             dict[str, FileSummary]]:
    """The discovery records, the latest file states and the mirror files' summaries, as the workers keep them."""
    from stream.kafka import read_all
    from stream.topics import import_changelog, mirror_files_topic
    discovered = []
    for m in await read_all(settings, settings.topics.name("import_files")):
        try:
            discovered.append((m.key, ImportFile.decode(m.value)))
        except Exception:   # not a discovery record: the worker dead-letters it
            continue
    states: dict[bytes, FileState] = {}
    try:
        changelog = await read_all(settings, import_changelog(settings))
    except Exception:   # no worker has imported anything yet: the changelog does not exist
        changelog = []
    for m in changelog:
        if m.value is None:
            states.pop(m.key, None)
        else:
            states[m.key] = FileState.decode(m.value)
    takes = []
    if settings.mirror_projects():
        try:
            records = await read_all(settings, mirror_files_topic(settings))
        except Exception:   # no mirror stage has applied anything yet: the topic does not exist
            records = []
        takes = [mirror_files.FileTake.decode(m.value) for m in records if m.value is not None]
    return discovered, states, mirror_files.summaries(takes)


async def status(settings: Settings) -> list[dict]:
    discovered, states, mirror = await _read(settings)
    return summarize(settings, discovered, states, int(time.time() * 1000), mirror=mirror)


HISTORY_LIMIT = 50
HISTORY_MAX = 1000


def history_page(src: SourceSettings, states: Mapping[bytes, FileState], mirror: Mapping[str, FileSummary],
                 limit: int, before: str | None) -> dict:
    """A page of the mirror files of ``src`` (``mirror_files.history_of``), as ``stream import history`` and
    ``GET /admin/imports/{name}/history`` answer (pure); ``Refused`` for a source without mirror files or a
    ``before`` that is not a cursor."""
    if src.strategy != "mirror" or src.data_type != "event":
        raise Refused(f"source {src.name!r} is not a mirror source of events (strategy: mirror, data_type: event), "
                      "so it has no mirror files; see stream import status for its files")
    dead = {split_file_key(k)[1]: s.dead for k, s in states.items() if split_file_key(k)[0] == src.name}
    try:
        page = mirror_files.history_of(src.bucket, functools.partial(discovery.wanted, src), src.project, mirror,
                                       dead, limit, before)
    except mirror_files.BadCursor as exc:
        raise Refused(str(exc)) from None
    return {"source": src.name, **page}


async def history(settings: Settings, name: str, limit: int = HISTORY_LIMIT, before: str | None = None) -> dict:
    """Every mirror file of the source, a page at a time, latest applied first (``history_page``)."""
    src = source_or_error(settings, name)
    if not 1 <= limit <= HISTORY_MAX:
        raise Refused(f"limit must be between 1 and {HISTORY_MAX} (the files of a page), not {limit}")
    history_page(src, {}, {}, limit, before)      # refuse before reading the topics
    _, states, mirror = await _read(settings)
    return history_page(src, states, mirror, limit, before)


async def retry(settings: Settings, name: str, keys: list[str]) -> list[ImportFile]:
    """Ask the workers to import ``keys`` of the source again; returns the records, acknowledged by Kafka."""
    from stream import kafka
    src = source_or_error(settings, name)
    check_keys(src, keys)
    now = int(time.time() * 1000)
    records = [ImportFile(src.name, src.bucket, k, now, "retry") for k in keys]
    p = kafka.producer(settings.kafka)
    await p.start()
    try:
        futs = [await p.send(settings.topics.name("import_files"), r.encode(), key=r.kafka_key) for r in records]
        for fut in futs:
            await fut
    finally:
        await p.stop()
    return records


def show_status(doc: list[dict]) -> list[str]:
    """The status as lines for a person."""
    lines = []
    for s in doc:
        f, r = s["files"], s["rows"]
        age = "" if s["oldest_waiting_age_s"] is None else f", oldest waiting {s['oldest_waiting_age_s']:.0f}s"
        lines.append(f"{s['source']}{'' if s['enabled'] else ' (disabled)'}: s3://{s['bucket']}/{s['prefix']}: "
                     f"{f['discovered']} discovered, {f['waiting']} waiting, {f['done']} done, {f['failed']} failed"
                     f"{age}; rows: {r['read']} read, {r['imported']} imported, {r['dead_lettered']} dead-lettered")
        for reason, n in sorted(s["failed_by_reason"].items()):
            lines.append(f"  failed ({reason}): {n}")
        for x in s["failed"]:
            lines.append(f"    {x['key']}: {x['message']}")
        lines += mirror_files.show(s.get("mirror_files", []))
    return lines


def show_preview(doc: dict) -> list[str]:
    lines = [f"{doc['url']}: the first {len(doc['rows'])} rows and what they become (nothing is imported)"]
    for r in doc["rows"]:
        lines.append(f"row {r['row']}:")
        lines.append(f"  source: {orjson.dumps(r['source'], default=str).decode()}")
        m = r.get("mutation")
        if m is not None and "user_id" in m:
            lines.append(f"  mutation: {m['op']} of the profile of user {m['user_id']}")
            if r.get("profile") is not None:
                lines.append(f"  profile: {orjson.dumps(r['profile'], default=str).decode()}")
        elif m is not None:
            device = f" of device {m['device_id']}" if m["device_id"] else ""
            lines.append(f"  mutation: {m['op']} of insert_id {m['insert_id']}{device}")
        ev = r["event"]
        if ev is not None:
            shown = {k: v for k, v in ev.items() if v not in (None, {}, -1) or k == "event_type"}
            lines.append(f"  event:  {orjson.dumps(shown).decode()}")
        for e in r["errors"]:
            field = f" {e['field']}" if e["field"] else ""
            lines.append(f"  error:  {e['reason']}{field}: {e['detail']}")
    return lines
