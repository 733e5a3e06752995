"""imports.files -> events.valid (or events.mutations): the engine that imports each discovered file once.

Faust-free: it takes a clock, the senders it produces with, the store of the processed-files state and the reader
of files (``stream.imports.fetch.S3Files`` in a worker); the agent (``stream.agents.imports``) hands it each
discovery record, on the partition that owns the record's key (``<source>:<key>``). For one record, in order:

1. the processed-files store says whether the key was imported or failed already: then the record is a duplicate
   discovery (a notification delivered twice, a file found by a notification and the scan, an object overwritten
   after its import: FORMATS.md 4.1) and is skipped, its state written again as it is (a crash may have lost its
   changelog record after the local write). A ``retry`` record imports the key again unless its state was
   written after the retry was asked for (a replay of the retry itself);
2. the file is read as a stream (``stream.imports.fetch``), its rows converted and produced in chunks of
   ``CHUNK_ROWS``, at most ``rate.events_per_s`` rows a second: an append source's events to events.valid in
   batches as the ingest stage makes them (``stream.imports.rows.convert``), a mirror source's mutations to
   events.mutations, a record per partition of the chunk's mutations (``convert_mirror``,
   ``stream.imports.mutations.grouped``); failing rows go to the dead-letter topic.
   The first chunk is acknowledged before the next is read (crash point ``import.reading``), then at most
   ``MAX_CHUNKS_IN_FLIGHT`` chunks await their acknowledgements while the next ones are read. Given a pool
   (``worker.import_processes``), an append source's JSON-lines file is read as raw lines and its chunks, the same
   ones, are converted in the pool's processes (``stream.imports.pool``), their records produced in the file's order;
3. once every record is acknowledged by Kafka (crash point ``import.produced``), the state is written: done,
   with the counts (crash point ``import.state_written``).

A crash anywhere re-reads the file from the same discovery record: every row gets the same source offset
(``files.row_offset``), insert_id and uuid, and every mutation the same sequence (the object's LastModified, its
URL, the row number), so the dedupe stage and the exporter drop the events sent before and the mirror's applying
side tolerates the mutations sent again. A file that cannot be read (truncated gzip, not parquet, access denied)
is marked failed with its reason, dead-lettered and counted; S3 failures that pass (timeouts, throttling) are
retried, the file read again from its start after a backoff (``stream.retry``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from stream import metrics, retry
from stream.clock import Clock
from stream.crashpoints import crash_point
from stream.events.batch import group
from stream.events.normalize import Reason, Rules
from stream.imports.fetch import Fetched, TransientRead, lines_of
from stream.imports.files import FileState, ImportFile, State
from stream.imports.mutations import grouped as grouped_mutations
from stream.imports.pool import BrokenPool, Chunker, ConvertPool, Converted as PoolConverted, Job
from stream.imports.reader import FileError, Row, RowError
from stream.imports.rows import (Converted, FileContext, convert, convert_mirror, convert_profiles, file_failed,
                                 remember_targets)
from stream.settings import Settings, SourceSettings
from stream.shutdown import SHUTDOWN

log = logging.getLogger(__name__)

CHUNK_ROWS = 2000
"""Rows converted and produced together: the unit of progress, of rate limiting and of Kafka round trips."""
MAX_CHUNKS_IN_FLIGHT = 4
"""Chunks whose sends may await Kafka's acknowledgement while the next ones are read."""

Ack = Awaitable[Any]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class Senders:
    """Where the engine produces: each call hands a record to the producer and returns its acknowledgement."""

    valid: Callable[[bytes, int], Awaitable[Ack]]
    """(batch, partition) to events.valid."""
    dead: Callable[[bytes, bytes], Awaitable[Ack]]
    """(key, record) to the dead-letter topic."""
    mutations: Callable[[bytes, bytes], Awaitable[Ack]] | None = None
    """(key, record) to events.mutations (the default partitioner places it by its key, the key of the first of the
    record's mutations, which all go to that partition): mirror sources."""
    profiles: Callable[[bytes, bytes], Awaitable[Ack]] | None = None
    """(key, record) to profiles.mutations (on ``stream.imports.profiles.partition`` of its key): sources of
    profiles."""


class Store(Protocol):
    """The processed-files state: ``<source>:<key>`` -> ``FileState`` (encoded)."""

    def get(self, key: bytes) -> bytes | None: ...

    async def put(self, key: bytes, value: bytes, partition: int) -> None:
        """Write the state, and return once it outlives this process (its changelog record is acknowledged)."""


class Files(Protocol):
    def runs(self, src: SourceSettings, f: ImportFile, fetched: Fetched) -> AsyncIterator[list[Row | RowError]]:
        """The file's rows in order, in runs of any length (``stream.imports.fetch.read_runs``); raises
        ``FileError`` for a file that cannot be read, ``TransientRead`` for a failure that passes."""

    def lines(self, src: SourceSettings, f: ImportFile, fetched: Fetched,
              ) -> AsyncIterator[tuple[int, list[bytes | None]]]:
        """A JSON-lines file's raw lines in runs (``stream.imports.fetch.read_lines``), failing as ``rows``."""


class RateLimit:
    """At most ``per_s`` units a second, on average over about a second (a token bucket)."""

    def __init__(self, per_s: float, clock: Callable[[], float] = time.monotonic, sleep: Sleep = retry.wait) -> None:
        self.per_s, self.clock, self.sleep = per_s, clock, sleep
        self.tokens, self.at = per_s, clock()

    def delay(self, n: int) -> float:
        """Take ``n`` units; the seconds to wait before using them."""
        now = self.clock()
        self.tokens = min(self.per_s, self.tokens + (now - self.at) * self.per_s) - n
        self.at = now
        return 0.0 if self.tokens >= 0 else -self.tokens / self.per_s

    async def take(self, n: int) -> None:
        await self.sleep(self.delay(n))


def should_import(prev: FileState | None, f: ImportFile, record_ms: int) -> bool:
    """Whether a discovery record imports its file: never seen, or a retry asked after the state was written."""
    if prev is None:
        return True
    return f.found_by == "retry" and prev.at_ms < record_ms


class FileImporter:
    """Imports each discovered file once: the state check, the read, the conversion, the sends, the state."""

    def __init__(self, settings: Settings, clock: Clock, senders: Senders, store: Store, files: Files, topic: str,
                 *, sleep: Sleep = retry.wait, monotonic: Callable[[], float] = time.monotonic,
                 pool: ConvertPool | None = None) -> None:
        self.settings, self.clock, self.senders, self.store, self.files, self.topic = (
            settings, clock, senders, store, files, topic)
        self.pool = pool
        self.sleep, self.monotonic = sleep, monotonic
        self.rules = Rules.of(settings.ingest)
        self.rates: dict[str, tuple[RateLimit, RateLimit]] = {}

    async def handle(self, f: ImportFile, key: bytes, partition: int, offset: int, record_ms: int) -> FileState | None:
        """One discovery record (``key`` on ``partition`` at ``offset``, stamped ``record_ms``): the file's state
        once imported, None when the record is skipped."""
        src = self.settings.source(f.source)
        if src is None or not src.enabled:
            why = "unknown_source" if src is None else "disabled"
            log.warning("import: %s discovered for source %r, which is %s; skipped", f.url, f.source,
                        "not configured" if src is None else "disabled")
            metrics.IMPORT_FILES.labels(f.source, "skipped", why).inc()
            return None
        raw_prev = self.store.get(key)
        prev = FileState.decode(raw_prev) if raw_prev is not None else None
        if not should_import(prev, f, record_ms):
            # written again as it is: if a crash lost its changelog record after the local write, this
            # replay puts it back, so that another owner of the partition and `stream import status` see it
            await self.store.put(key, raw_prev, partition)
            metrics.IMPORT_FILES.labels(src.name, "skipped", f"already_{prev.state.value}").inc()
            log.debug("import %s: %s was %s already; this discovery (%s) is skipped", src.name, f.url,
                      prev.state.value, f.found_by)
            return None
        gauge = metrics.IMPORT_IN_PROGRESS.labels(src.name)
        gauge.inc()
        try:
            state = await self.run(src, f, partition, offset, record_ms)
        finally:
            gauge.dec()
        crash_point("import.produced")
        await self.store.put(key, state.encode(), partition)
        crash_point("import.state_written")
        metrics.IMPORT_FILES.labels(src.name, state.state.value, state.reason or "").inc()
        if state.state is State.DONE:
            now = self.clock.now_ms()
            metrics.IMPORT_LAG.labels(src.name).observe(max(0.0, (now - f.event_time_ms) / 1000))
            metrics.IMPORT_LAST_DONE.labels(src.name).set(now / 1000)
            to = ("profiles.mutations" if src.data_type == "profiles" else
                  "events.mutations" if src.strategy == "mirror" else "events.valid")
            log.info("import %s: %s imported: %d rows, %d to %s, %d dead-lettered", src.name, f.url, state.rows,
                     state.imported, to, state.dead)
        return state

    def _limits(self, src: SourceSettings) -> tuple[RateLimit, RateLimit]:
        if src.name not in self.rates:
            self.rates[src.name] = (RateLimit(src.rate.events_per_s, self.monotonic, self.sleep),
                                    RateLimit(src.rate.files_per_s, self.monotonic, self.sleep))
        return self.rates[src.name]

    async def run(self, src: SourceSettings, f: ImportFile, partition: int, record_offset: int,
                  record_ms: int) -> FileState:
        """Read, convert and produce the file; its state, once every record is acknowledged."""
        rows_limit, files_limit = self._limits(src)
        await files_limit.take(1)
        ctx = FileContext(src, f, record_offset, record_ms, self.rules, self.settings.ingest.max_event_bytes,
                          f"{self.topic}/{partition}/{record_offset}")
        attempt = 0
        while True:
            try:
                if self.pool is not None and src.strategy != "mirror" and lines_of(src, f):
                    return await self._once_pooled(src, ctx, partition, rows_limit, self.pool)
                return await self._once(src, ctx, partition, rows_limit)
            except (TransientRead, BrokenPool) as exc:
                attempt += 1
                wait = retry.backoff_s(attempt, 1.0, 30.0)
                if isinstance(exc, BrokenPool):
                    assert self.pool is not None
                    self.pool.reset()
                    log.error("import %s: a process converting the rows of %s died (%s); reading the file again "
                              "from its start in %.1fs with new processes (rows sent before are dropped as replays). "
                              "The process's own error, if it wrote one, is in this log above (an error while it "
                              "started: its settings or installation); killed without one, it ran out of memory: "
                              "give the worker more memory, or lower worker.import_processes (0 converts the rows "
                              "in the worker itself)", src.name, f.url, exc, wait)
                else:
                    log.warning("import %s: reading %s failed (%s); reading it again from its start in %.1fs (rows "
                                "sent before are dropped as replays)", src.name, f.url, exc, wait)
                if SHUTDOWN.requested:
                    raise
                await self.sleep(wait)

    async def _produce(self, src: SourceSettings, out: Converted, partition: int) -> list[Ack]:
        """Hand one chunk's records to the producers; their acknowledgements."""
        s = self.settings
        sends = []
        if src.strategy == "mirror":
            send = self.senders.profiles if src.data_type == "profiles" else self.senders.mutations
            if send is None:
                to = "profiles.mutations" if src.data_type == "profiles" else "events.mutations"
                raise RuntimeError(f"import {src.name}: a mirror source's rows go to {to}, but this "
                                   "importer was given no sender for it (a bug in the wiring: please report it)")
            # events.mutations: a record per partition of a chunk's mutations (``mutations.grouped``), keyed by its
            # first one's key, so the default partitioner places it where each of its mutations' keys would have
            sent = out.mutations if src.data_type == "profiles" else [
                (key, value) for _, key, value in grouped_mutations(out.mutations, s.topics.partitions)]
            for key, record in sent:
                sends.append(await send(key, record))
            for op, n in out.ops.items():
                metrics.IMPORT_MUTATIONS.labels(src.name, op.lower()).inc(n)
        else:
            remember_targets(out, s.topics.partitions)
            for target, batch in group(out.events, self.topic, partition, s.topics.partitions,
                                       s.ingest.batch_max_events, s.kafka.max_request_bytes // 2):
                sends.append(await self.senders.valid(batch.encode(), target))
        for key, record in out.dead:
            sends.append(await self.senders.dead(key, record))
        return sends

    def _count(self, src: SourceSettings, counts: dict[str, int], rows: int, produced: int, dead: int,
               fields_left_out: int, reasons: dict[str, int]) -> None:
        counts["rows"] += rows
        counts["imported"] += produced
        counts["dead"] += dead
        metrics.IMPORT_ROWS.labels(src.name, "imported").inc(produced)
        metrics.IMPORT_ROWS.labels(src.name, "dead_lettered").inc(dead)
        if fields_left_out:
            metrics.IMPORT_FIELDS_LEFT_OUT.labels(src.name).inc(fields_left_out)
        for reason, n in reasons.items():
            metrics.EVENTS_DEAD_LETTERED.labels("import", reason).inc(n)

    async def _failed(self, src: SourceSettings, ctx: FileContext, exc: FileError, counts: dict[str, int],
                      ) -> FileState:
        f = ctx.file
        reason = exc.reason.value
        await (await self.senders.dead(*file_failed(ctx, reason, exc.detail, self.clock.now_ms())))
        metrics.EVENTS_DEAD_LETTERED.labels("import", Reason.UNREADABLE_FILE.value).inc()
        log.error("import %s: %s cannot be read after %d rows (%s: %s); marked failed, `stream import retry "
                  "%s '%s'` imports it again", src.name, f.url, counts["rows"], reason, exc.detail, src.name,
                  f.key)
        return FileState(State.FAILED, counts["rows"], counts["imported"], counts["dead"], self.clock.now_ms(),
                         f.event_time_ms, f.etag, f.size, reason, exc.detail)

    async def _once_pooled(self, src: SourceSettings, ctx: FileContext, partition: int, rows_limit: RateLimit,
                           pool: ConvertPool) -> FileState:
        """``_once`` for a JSON-lines file of an append source, its chunks converted by the pool's processes
        (``stream.imports.pool``): the same chunks, records and order; at most ``pool.depth`` chunks converting and
        ``MAX_CHUNKS_IN_FLIGHT`` awaiting their acknowledgements while the next lines are read."""
        f = ctx.file
        counts = {"rows": 0, "imported": 0, "dead": 0}
        inflight: list[list[Ack]] = []
        converting: deque[asyncio.Future[PoolConverted]] = deque()
        chunker = Chunker(CHUNK_ROWS)

        async def submit(first: int, lines: list[bytes | None], rows: int) -> None:
            await rows_limit.take(rows)
            converting.append(pool.submit(Job(src.name, f, ctx.record_offset, ctx.server_ms, ctx.record, self.topic,
                                              partition, self.clock.now_ms(), first, lines)))
            if counts["rows"] == 0 and len(converting) == 1:   # the first chunk: acknowledged before reading on
                await produce(await converting.popleft())
                await drain(len(inflight))
                crash_point("import.reading")
            while len(converting) > pool.depth:
                await produce(await converting.popleft())

        async def produce(out: PoolConverted) -> None:
            sends = [await self.senders.valid(batch, target) for target, batch in out.batches]
            for key, record in out.dead:
                sends.append(await self.senders.dead(key, record))
            before = counts["rows"]
            self._count(src, counts, out.rows, out.imported, len(out.dead), out.fields_left_out, out.reasons)
            if before // (CHUNK_ROWS * 50) != counts["rows"] // (CHUNK_ROWS * 50):
                log.info("import %s: %s: %d rows read", src.name, f.url, counts["rows"])
            inflight.append(sends)
            if len(inflight) > MAX_CHUNKS_IN_FLIGHT:
                await drain(1)

        async def drain(n: int) -> None:
            for _ in range(min(n, len(inflight))):
                for fut in inflight.pop(0):
                    await fut

        async def finish() -> None:
            rest = chunker.rest()
            if rest is not None:
                await submit(*rest)
            while converting:
                await produce(await converting.popleft())
            await drain(len(inflight))

        try:
            try:
                async for first, lines in self.files.lines(src, f, Fetched()):
                    for chunk in chunker.add(first, lines):
                        await submit(*chunk)
            except FileError as exc:
                await finish()
                return await self._failed(src, ctx, exc, counts)
            await finish()
        except BaseException:
            for fut in converting:   # a chunk converting for a read given up: its result is not wanted
                fut.cancel()
            raise
        return FileState(State.DONE, counts["rows"], counts["imported"], counts["dead"], self.clock.now_ms(),
                         f.event_time_ms, f.etag, f.size)

    async def _once(self, src: SourceSettings, ctx: FileContext, partition: int, rows_limit: RateLimit) -> FileState:
        f = ctx.file
        counts = {"rows": 0, "imported": 0, "dead": 0}
        inflight: list[list[Ack]] = []
        chunk: list[Row | RowError] = []
        fetched = Fetched()
        mirror = src.strategy == "mirror"

        async def flush() -> None:
            await rows_limit.take(len(chunk))
            now = self.clock.now_ms()
            if mirror and src.data_type == "profiles":
                out = convert_profiles(ctx, chunk, now,
                                       fetched.modified_ms if fetched.modified_ms is not None else 0)
            elif mirror:
                out = convert_mirror(ctx, chunk, now, fetched.modified_ms if fetched.modified_ms is not None else 0)
            else:
                out = convert(ctx, chunk, now)
            chunk.clear()
            sends = await self._produce(src, out, partition)
            produced = len(out.mutations) if mirror else len(out.events)
            first = counts["rows"] == 0
            self._count(src, counts, out.rows, produced, len(out.dead), out.fields_left_out, out.reasons)
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
            async for run in self.files.runs(src, f, fetched):
                at = 0
                while at < len(run):   # the run's rows into chunks of CHUNK_ROWS
                    took = CHUNK_ROWS - len(chunk)
                    chunk.extend(run[at:at + took] if at or took < len(run) else run)
                    at += took
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
            return await self._failed(src, ctx, exc, counts)
        await drain(len(inflight))
        return FileState(State.DONE, counts["rows"], counts["imported"], counts["dead"], self.clock.now_ms(),
                         f.event_time_ms, f.etag, f.size)
