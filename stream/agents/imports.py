"""imports.files -> events.valid: the faust agent that imports each discovered file once, and the discovery tasks.

One discovery record at a time, on the partition that owns its key (``<source>:<key>``):

1. The processed-files table (RocksDB, changelog) says whether the key was imported or failed already: then the
   record is a duplicate discovery (a notification delivered twice, a file found by a notification and the scan,
   an object overwritten after its import: FORMATS.md 4.1) and is skipped. A ``retry`` record imports the key
   again unless its state was written after the retry was asked for (a replay of the retry itself).
2. The file is read from S3 as a stream (parquet through a spool file: its footer needs random access), its rows
   converted (``stream.imports.rows``) and produced to events.valid in batches as the ingest stage makes them, at
   most ``rate.events_per_s`` rows a second; failing rows go to the dead-letter topic.
3. Once every batch and dead letter is acknowledged by Kafka, the state is written: done, with the counts.

A crash anywhere re-reads the file from the same discovery record: every row gets the same source offset
(``files.row_offset``), insert_id and uuid, so the dedupe stage and the exporter drop what was sent before. A file
that cannot be read (truncated gzip, not parquet, access denied) is marked failed with its reason, dead-lettered
and counted; S3 failures that pass (timeouts, throttling) are retried, the file read again from its start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, NamedTuple

import faust

from stream import kafka, metrics
from stream.agents.contiguous import Contiguous, Record
from stream.agents.deadletters import keep_undecodable
from stream.clock import Clock
from stream.crashpoints import crash_point
from stream.events.batch import group
from stream.events.normalize import Reason, Rules
from stream.health import HEALTH
from stream.imports.files import FileState, ImportFile, State
from stream.imports.reader import FileError, Row, RowError, aiter_rows, read_parquet
from stream.imports.rows import FileContext, convert, file_failed
from stream.retry import supervise
from stream.s3.client import target_client, target_of
from stream.s3.errors import classify, explain
from stream.settings import Settings, SourceSettings
from stream.shutdown import SHUTDOWN
from stream.topics import import_changelog

log = logging.getLogger(__name__)

CHUNK_ROWS = 2000
"""Rows converted and produced together: the unit of progress, of rate limiting and of Kafka round trips."""
READ_BYTES = 1 << 20
MAX_CHUNKS_IN_FLIGHT = 4
"""Chunks whose sends may await Kafka's acknowledgement while the next ones are read."""


class RateLimit:
    """At most ``per_s`` units a second, on average over about a second (a token bucket)."""

    def __init__(self, per_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_s, self.clock = per_s, clock
        self.tokens, self.at = per_s, clock()

    def delay(self, n: int) -> float:
        """Take ``n`` units; the seconds to wait before using them."""
        now = self.clock()
        self.tokens = min(self.per_s, self.tokens + (now - self.at) * self.per_s) - n
        self.at = now
        return 0.0 if self.tokens >= 0 else -self.tokens / self.per_s

    async def take(self, n: int) -> None:
        wait = self.delay(n)
        if wait > 0:
            await asyncio.sleep(wait)


class _Transient(Exception):
    """S3 failed in a way that passes: read the file again later."""


async def _chunks(settings: Settings, src: SourceSettings, f: ImportFile, spool: Path,
                  clients: Clients | None = None) -> AsyncIterator[Row | RowError]:
    """The file's rows, read from S3 as a stream; parquet through a spool file, removed afterwards. ``clients``
    keeps one S3 client per source (a new one costs about 0.1 s); without it, one is opened for this file."""
    compiled = src.compiled
    file_type = file_type_of(src, f.key)
    compression = src.compression or compiled.compression or "auto"
    target = target_of(src, settings.s3)
    try:
        async with contextlib.AsyncExitStack() as stack:
            s3 = await clients.get(src) if clients is not None else await stack.enter_async_context(
                target_client(target, settings.s3))
            resp = await s3.get_object(Bucket=f.bucket, Key=f.key)
            body = resp["Body"]
            if file_type == "parquet":
                fd, name = tempfile.mkstemp(prefix="import-", suffix=".parquet", dir=spool)
                try:
                    with os.fdopen(fd, "wb") as out:
                        async for chunk in body.iter_chunks(READ_BYTES):
                            out.write(chunk)
                    for row in read_parquet(name):
                        yield row
                finally:
                    os.unlink(name)
                return
            from stream.imports.converter import CsvOptions
            c = src.csv
            csv = compiled.csv or CsvOptions(c.delimiter, c.quote, c.escape, c.header)
            async for item in aiter_rows(body.iter_chunks(READ_BYTES), file_type, compression, csv):
                yield item
    except FileError:
        raise
    except Exception as exc:
        failure = classify(exc)
        if failure is None:   # not S3's: a bug reading this file. Mark it failed rather than crash-loop on it
            log.exception("import %s: unexpected error reading %s", src.name, f.url)
            raise FileError(_reason("processing_error"), f"unexpected {type(exc).__name__} while reading the file: "
                            f"{exc} (please report it with the worker's log)") from None
        if clients is not None:
            await clients.drop(src)     # credentials or connections gone bad: the next file opens a new client
        if failure.kind == "transient":
            raise _Transient(f"{failure.reason}: {exc}") from exc
        code = getattr(exc, "response", {}).get("Error", {}).get("Code")
        if code in ("NoSuchKey", "404"):
            raise FileError(_reason("not_found"), f"{f.url} no longer exists (deleted after it was discovered); "
                            "nothing to import") from None
        problem = explain(exc, target, "GetObject", f"arn:aws:s3:::{f.bucket}/{f.key}")
        raise FileError(_reason(failure.reason), problem.message) from None


class Clients:
    """One S3 client per source, opened on first use and kept for the process's life."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.open: dict[str, tuple[contextlib.AsyncExitStack, Any]] = {}

    async def get(self, src: SourceSettings) -> Any:
        if src.name not in self.open:
            stack = contextlib.AsyncExitStack()
            client = await stack.enter_async_context(target_client(target_of(src, self.settings.s3),
                                                                   self.settings.s3))
            self.open[src.name] = (stack, client)
        return self.open[src.name][1]

    async def drop(self, src: SourceSettings) -> None:
        entry = self.open.pop(src.name, None)
        if entry is not None:
            try:
                await entry[0].aclose()
            except Exception as exc:   # closing a broken client: nothing left to do with it
                log.debug("import %s: closing its S3 client: %s", src.name, exc)


def file_type_of(src: SourceSettings, key: str) -> str:
    """The source's file type, else the converter's, else the key's: ``.csv``/``.csv.gz`` is CSV, ``.parquet`` is
    parquet, anything else JSON lines."""
    given = src.file_type or src.compiled.file_type
    if given:
        return given
    name = key.lower().removesuffix(".gz").removesuffix(".gzip")
    return "csv" if name.endswith(".csv") else "parquet" if name.endswith((".parquet", ".pq")) else "json"


class _S3Reason(NamedTuple):
    """The reason of a file S3 would not give (not found, access denied, ...): a FileError reason beside the
    reader's own, with the error table's reason code as its value."""
    value: str


def _reason(code: str) -> Any:
    return _S3Reason(code)


class FileImporter:
    """Reads, converts and produces one file; the agent decides whether to, and records the outcome."""

    def __init__(self, settings: Settings, clock: Clock, send_valid: Callable[[bytes, int], Awaitable[Any]],
                 send_dead: Callable[[bytes, bytes], Awaitable[Any]], topic: str) -> None:
        self.settings, self.clock, self.topic = settings, clock, topic
        self.send_valid, self.send_dead = send_valid, send_dead
        self.rules = Rules.of(settings.ingest)
        self.rates: dict[str, tuple[RateLimit, RateLimit]] = {}
        self.spool = Path(settings.worker.data_dir) / "import-spool"
        self.spool.mkdir(parents=True, exist_ok=True)
        self.clients = Clients(settings)

    def _limits(self, src: SourceSettings) -> tuple[RateLimit, RateLimit]:
        if src.name not in self.rates:
            self.rates[src.name] = (RateLimit(src.rate.events_per_s), RateLimit(src.rate.files_per_s))
        return self.rates[src.name]

    async def run(self, src: SourceSettings, f: ImportFile, partition: int, record_offset: int,
                  record_ms: int) -> FileState:
        rows_limit, files_limit = self._limits(src)
        await files_limit.take(1)
        ctx = FileContext(src, f, record_offset, record_ms, self.rules, self.settings.ingest.max_event_bytes,
                          f"{self.topic}/{partition}/{record_offset}")
        attempt = 0
        while True:
            try:
                return await self._once(src, ctx, partition, rows_limit)
            except _Transient as exc:
                attempt += 1
                wait = min(30.0, 0.5 * 2 ** attempt)
                log.warning("import %s: reading %s failed (%s); reading it again from its start in %.1fs (rows "
                            "sent before are dropped as replays)", src.name, f.url, exc, wait)
                if SHUTDOWN.requested:
                    raise
                await asyncio.sleep(wait)

    async def _once(self, src: SourceSettings, ctx: FileContext, partition: int, rows_limit: RateLimit) -> FileState:
        f, s = ctx.file, self.settings
        counts = {"rows": 0, "imported": 0, "dead": 0}
        inflight: list[list[Any]] = []
        chunk: list[Row | RowError] = []

        async def flush() -> None:
            await rows_limit.take(len(chunk))
            out = convert(ctx, chunk, self.clock.now_ms())
            chunk.clear()
            sends = []
            for target, batch in group(out.events, self.topic, partition, s.topics.partitions,
                                       s.ingest.batch_max_events, s.kafka.max_request_bytes // 2):
                sends.append(await self.send_valid(batch.encode(), target))
            for key, record in out.dead:
                sends.append(await self.send_dead(key, record))
            first = counts["rows"] == 0
            counts["rows"] += out.rows
            counts["imported"] += len(out.events)
            counts["dead"] += len(out.dead)
            metrics.IMPORT_ROWS.labels(src.name, "imported").inc(len(out.events))
            metrics.IMPORT_ROWS.labels(src.name, "dead_lettered").inc(len(out.dead))
            if out.fields_left_out:
                metrics.IMPORT_FIELDS_LEFT_OUT.labels(src.name).inc(out.fields_left_out)
            for reason, n in out.reasons.items():
                metrics.EVENTS_DEAD_LETTERED.labels("import", reason).inc(n)
            inflight.append(sends)
            if first:
                await drain(len(inflight))
                crash_point("import.reading")
            elif len(inflight) > MAX_CHUNKS_IN_FLIGHT:
                await drain(1)

        async def drain(n: int) -> None:
            for _ in range(min(n, len(inflight))):
                for fut in inflight.pop(0):
                    await fut

        try:
            async for item in _chunks(s, src, f, self.spool, self.clients):
                chunk.append(item)
                if len(chunk) >= CHUNK_ROWS:
                    await flush()
                    if counts["rows"] % (CHUNK_ROWS * 50) == 0:
                        log.info("import %s: %s: %d rows read", src.name, f.url, counts["rows"])
            if chunk:
                await flush()
        except FileError as exc:
            if chunk:
                await flush()
            await drain(len(inflight))
            reason = exc.reason.value
            await (await self.send_dead(*file_failed(ctx, reason, exc.detail, self.clock.now_ms())))
            metrics.EVENTS_DEAD_LETTERED.labels("import", Reason.UNREADABLE_FILE.value).inc()
            log.error("import %s: %s cannot be read after %d rows (%s: %s); marked failed, `stream import retry "
                      "%s '%s'` imports it again", src.name, f.url, counts["rows"], reason, exc.detail, src.name,
                      f.key)
            return FileState(State.FAILED, counts["rows"], counts["imported"], counts["dead"], self.clock.now_ms(),
                             f.event_time_ms, f.etag, f.size, reason, exc.detail)
        await drain(len(inflight))
        return FileState(State.DONE, counts["rows"], counts["imported"], counts["dead"], self.clock.now_ms(),
                         f.event_time_ms, f.etag, f.size)


def should_import(prev: FileState | None, f: ImportFile, record_ms: int) -> bool:
    """Whether a discovery record imports its file: never seen, or a retry asked after the state was written."""
    if prev is None:
        return True
    return f.found_by == "retry" and prev.at_ms < record_ms


def register(app: faust.App, settings: Settings, clock: Clock) -> None:
    t = settings.topics
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    files = app.topic(t.name("import_files"), partitions=t.partitions, **raw)
    valid = app.topic(t.name("valid"), partitions=t.partitions, **raw)
    dead = app.topic(t.name("dead_letter"), **raw)
    changelog = app.topic(import_changelog(settings), partitions=t.partitions, internal=True, retention=None,
                          compacting=True, deleting=False, **raw)
    table = app.Table("import-files", partitions=t.partitions, changelog_topic=changelog,
                      help="(source, key) -> what became of the file", key_type=bytes, value_type=bytes)
    files_name = files.get_topic_name()

    async def send_valid(value: bytes, partition: int) -> Any:
        return await valid.send(value=value, partition=partition)

    async def send_dead(key: bytes, value: bytes) -> Any:
        return await dead.send(key=key, value=value, partition=0)

    importer = FileImporter(settings, clock, send_valid, send_dead, files_name)

    async def keep(key: bytes, value: bytes, partition: int) -> None:
        """Write a file's state and wait for the broker to have its changelog record: the state outlives this
        process. The record goes to the Kafka producer itself, not through faust's buffer, whose flush gives up
        after 0.1 s (``stream.dedup.table``)."""
        table.data[key] = value
        sent = await table.changelog_topic.send(key=key, value=value, partition=partition,
                                                key_serializer=table.key_serializer,
                                                value_serializer=table.value_serializer,
                                                callback=table._on_changelog_sent)
        await sent

    gaps = Contiguous(app, files_name, kafka.client_args(settings.kafka), "import")

    @app.agent(files, name="import-files")
    async def imports(stream: faust.StreamT) -> None:
        async for event in stream.events():
            for missed in await gaps.missed(event.message.partition, event.message.offset):
                await handle(missed)
            await handle(event)

    async def handle(event: faust.EventT | Record) -> None:
        """One discovered file: imported once (a read-back record writes its state on the partition of the event
        being handled, which is its own: a gap is within one partition)."""
        msg = event.message
        try:
            f = ImportFile.decode(event.value)
        except Exception as exc:   # not a discovery record
            await keep_undecodable(dead, event, exc, "import", settings.kafka.max_request_bytes)
            return
        src = settings.source(f.source)
        if src is None or not src.enabled:
            why = "unknown_source" if src is None else "disabled"
            log.warning("import: %s discovered for source %r, which is %s; skipped", f.url, f.source,
                        "not configured" if src is None else "disabled")
            metrics.IMPORT_FILES.labels(f.source, "skipped", why).inc()
            return
        record_ms = int(msg.timestamp * 1000)
        raw_prev = table.get(msg.key)
        prev = FileState.decode(raw_prev) if raw_prev is not None else None
        if not should_import(prev, f, record_ms):
            # written again as it is: if a crash lost its changelog record after the local write, this
            # replay puts it back, so that another owner of the partition and `stream import status` see it
            await keep(msg.key, raw_prev, msg.partition)
            metrics.IMPORT_FILES.labels(src.name, "skipped", f"already_{prev.state.value}").inc()
            log.debug("import %s: %s was %s already; this discovery (%s) is skipped", src.name, f.url,
                      prev.state.value, f.found_by)
            return
        gauge = metrics.IMPORT_IN_PROGRESS.labels(src.name)
        gauge.inc()
        try:
            state = await importer.run(src, f, msg.partition, msg.offset, record_ms)
        finally:
            gauge.dec()
        crash_point("import.produced")
        await keep(msg.key, state.encode(), msg.partition)
        crash_point("import.state_written")
        metrics.IMPORT_FILES.labels(src.name, state.state.value, state.reason or "").inc()
        if state.state is State.DONE:
            metrics.IMPORT_LAG.labels(src.name).observe(max(0.0, (clock.now_ms() - f.event_time_ms) / 1000))
            metrics.IMPORT_LAST_DONE.labels(src.name).set(clock.now_ms() / 1000)
            log.info("import %s: %s imported: %d rows, %d to events.valid, %d dead-lettered", src.name, f.url,
                     state.rows, state.imported, state.dead)

    @app.on_rebalance_complete.connect
    async def _import_ready(sender, **kwargs) -> None:
        HEALTH.mark_ready("import")

    _discovery(app, settings, files_name)


def _discovery(app: faust.App, settings: Settings, files_name: str) -> None:
    """Per enabled source: an SQS poller in every replica (SQS spreads the messages), and the list scan in the
    replica that owns imports.files partition 0 (one scanner at a time)."""
    from aiokafka import TopicPartition

    producer_box: dict[str, Any] = {}

    async def send(rec: ImportFile) -> Any:
        p = producer_box.get("p")
        if p is None:
            p = producer_box["p"] = kafka.producer(settings.kafka)
            await p.start()
        return await p.send(files_name, rec.encode(), key=rec.kafka_key)

    owner = TopicPartition(files_name, 0)

    for src in settings.sources:
        if not src.enabled:
            continue
        if src.queue_url or src.scan.enabled:
            from stream.imports import discovery
        if src.queue_url:
            app.task(_named(f"import_sqs_{src.name}", lambda src=src: supervise(
                f"import {src.name} notifications", lambda: discovery.poll_queue(
                    settings, src, send, stop=lambda: SHUTDOWN.requested), stop=lambda: SHUTDOWN.requested)))
        if src.scan.enabled:
            async def scan(src: SourceSettings = src) -> None:
                state = discovery.ScanState()
                while not SHUTDOWN.requested:
                    try:
                        mine = owner in app.consumer.assignment()
                    except Exception:
                        mine = False
                    if mine:
                        try:
                            await discovery.scan_source(settings, src, send, state, now_ms=int(time.time() * 1000))
                        except Exception as exc:
                            log.warning("import %s: the list scan failed (%s); next try in %.0fs", src.name, exc,
                                        src.scan.interval_s)
                    await asyncio.sleep(src.scan.interval_s if mine else 5)
            app.task(_named(f"import_scan_{src.name}", scan))


def _named(name: str, fn: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    async def task() -> None:
        await fn()
    task.__name__ = task.__qualname__ = name.replace("-", "_")
    return task
