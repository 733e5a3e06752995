"""The mirror stage's faust agents: events.accepted -> mirror.index -> the index table; events.mutations -> hours.

Three agents, wiring only (the work is ``stream.export.mirror_index`` and ``stream.export.mirror_apply``):

- ``mirror-feed`` reads events.accepted and, for the projects that have a mirror source, sends each batch's index
  entries to mirror.index, re-keyed by (project, insert_id): one message per target partition and batch;
- ``mirror-index`` merges them into the index table (RocksDB; a changelog record per message holding the values
  it wrote, kept ``mirror.index_days`` plus a day, and RocksDB's TTL drops what no write refreshed);
- ``mirror-mutations`` takes events.mutations a burst at a time (``stream.agents.takes``: a take closes after half a
  second without a record, ten seconds after its first, or at 20,000 mutations or ``mirror.take_max_bytes`` of
  records; a record carries many mutations, or one as an earlier version wrote them, each read by
  ``stream.imports.mutations.decode_record``, its row kept as its bytes: ``mirror_apply.targets_of``); per
  partition, the applier routes each mutation by the index (same partition: events.mutations and mirror.index are
  keyed alike) and keeps it in its hours' logs (crash point ``mirror.logged``); the hours the take touched are
  recorded pending in the pending table (RocksDB, compacted changelog: ``stream.export.mirror_pending``; crash
  point ``mirror.pending``); unknown UPDATEs and DELETEs are dead-lettered with their file and row, new INSERTs sent
  as events; faust commits the take's offsets once the agent is done with it (the take acknowledges them then). A
  take the agent fails on is not acknowledged: the worker marks the stage failed (its liveness check fails, so
  Kubernetes restarts it) and the take is read again from the committed offsets.
  The ``mirror-pending`` timer rebuilds the pending hours of the worker's partitions (those a previous worker left
  too), each once for every take that touched it, once the agent has taken every mutation of its partitions (as its
  consumer's last fetch saw their ends, and the broker's end offsets confirm just before), or once the oldest has
  waited ``mirror.rebuild_within_s`` (0: after every take); crash point ``mirror.rebuilt``.
  Once the hours are rewritten, a record per file and partition of what each take did with the file's mutations
  goes to the mirror-files topic (``stream.imports.mirror_files``), which ``stream import status`` reads, and the
  pending records are deleted.

The stage's S3 clients (one per bucket target) and the producer of its rebuilds' ledger records are made on first use
and held until the mutations agent stops (``Held``): the logs of every partition and take and the rebuilds share them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Generic, TypeVar

import faust
from aiokafka import AIOKafkaProducer
from faust.types import TP

from stream import kafka, metrics
from stream.agents.contiguous import Contiguous
from stream.agents.takes import event_bytes, take_bursts
from stream.clock import Clock
from stream.crashpoints import crash_point
from stream.dedup.table import DedupeTable, KeyedChangelog
from stream.events import deadletter
from stream.events.batch import decode_rows
from stream.events.normalize import Reason, Rejected
from stream.events.partitioning import partition_of
from stream.events.batch import group
from stream.events.normalize import from_row
from stream.events.timefmt import DAY_MS, HOUR_MS
from stream.export.backfill import Backfill, hour_text
from stream.export.layout import MIRROR_SOURCE
from stream.retry import retry_until_done
from stream.export import mirror_index
from stream.export import mirror_pending
from stream.health import HEALTH
from stream.export.mirror_apply import Applied, MirrorApplier, Targeted, mirror_log_of, targets_of
from stream.imports import mirror_files
from stream.imports import mutations as records
from stream.kafka import client_args
from stream.s3.client import target_client, target_of
from stream.s3.storage import S3Storage, Storage
from stream.settings import Settings
from stream.topics import mirror_files_topic, mirror_index_changelog, mirror_pending_changelog

log = logging.getLogger(__name__)

TAKE_MAX, TAKE_QUIET_S, TAKE_WITHIN_S = 20_000, 0.5, 10.0
"""Mutations taken together: logged and recorded pending at once. A take closes once no record came for
``TAKE_QUIET_S``, ``TAKE_WITHIN_S`` after its first, or when its records carry ``TAKE_MAX`` mutations (counted from
each record's head, ``records.count_of``: over by one record's at most, ``records.MANY_MAX``) or hold
``mirror.take_max_bytes`` (the worker holds a take's records until it is logged: the bytes bound that whatever the
events' size, over by one record's at most, ``records.MANY_BYTES``). The records of one burst can reach the stage
over a second or two (faust's consumer lets the broker hold a fetch 1.5 s), so a burst may fill several takes: that
costs a set of log objects each, not a rebuild each, as the hours wait pending until the stage has taken every
mutation up to its partitions' ends as the broker reports them when the rebuild would start (``fresh_ends``; its
consumer's last fetch alone may not know of the burst's last records yet: with this quiet time and that alone, a
burst of 4,800 or 9,600 UPDATEs sent in 0.3-0.7 s was rebuilt in two jobs in two runs of six). 2 s before."""

PENDING_LOOK_S = 0.2
"""How often the ``mirror-pending`` timer looks whether pending hours are due (and sets the waiting gauge): a look
reads only the pending hours' records of the worker's partitions (a few dozen keys), so it is cheap, and the
rebuild of a drained take's hours starts within this time of its logs (every second, before: half a second of a
rebuild's start, on average)."""


class IndexTable(DedupeTable):
    """The mirror index; each changelog record holds the values one message wrote (``encode_writes``)."""

    def changelog_ops(self, key: bytes | None, value: bytes | None):
        return () if value is None else mirror_index.decode_writes(value)


class PendingTable(KeyedChangelog, DedupeTable):
    """Per partition of events.mutations, its pending hours and mirror-files records (``mirror_pending``); each
    changelog record is one key's."""

    def pending(self, partition: int, files: bool = True) -> mirror_pending.Pending:
        """The partition's pending records; without the mirror-files records unless ``files`` (what a look at the
        pending hours needs: the hours' records come first, and the files' may be many)."""
        if files:
            return mirror_pending.read(self.db(partition).items())
        return mirror_pending.read(itertools.takewhile(lambda kv: kv[0][:1] == mirror_pending.HOUR,
                                                       self.db(partition).items(from_key=mirror_pending.HOUR)))


K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class Held(Generic[K, T]):
    """What ``open(key)`` enters, entered on the first ``get(key)`` and held until ``aclose()``, which exits them all
    (the last entered first); a ``get`` after it enters again. Concurrent first uses of a key enter it once; one
    that fails holds nothing, and the next ``get`` tries again."""

    def __init__(self, open: Callable[[K], AbstractAsyncContextManager[T]]):
        self._open = open
        self._held: dict[K, T] = {}
        self._locks: dict[K, asyncio.Lock] = {}
        self._stack = contextlib.AsyncExitStack()

    async def get(self, key: K) -> T:
        async with self._locks.setdefault(key, asyncio.Lock()):
            if key not in self._held:
                self._held[key] = await self._stack.enter_async_context(self._open(key))
        return self._held[key]

    def holds(self) -> list[K]:
        """The keys held now, in the order they were entered."""
        return list(self._held)

    async def aclose(self) -> None:
        stack, self._stack, self._held, self._locks = self._stack, contextlib.AsyncExitStack(), {}, {}
        await stack.aclose()


class StageClients:
    """The stage's S3 storage of each destination it writes (by name) and the producer of its rebuilds' ledger
    records, each made on first use and held until ``close()``: every partition's and take's logs and every rebuild
    share them."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.storages: Held[str, Storage] = Held(self._storage)
        self.producers: Held[str, AIOKafkaProducer] = Held(self._producer)

    @contextlib.asynccontextmanager
    async def _storage(self, name: str) -> AsyncIterator[Storage]:
        dest = self.settings.destination(name)
        assert dest is not None, f"destination {name} is in the settings"
        s3 = self.settings.s3
        async with target_client(target_of(dest, s3), s3) as client:
            yield S3Storage(client, dest.encryption, s3.upload_part_bytes, s3.read_timeout_s)

    @contextlib.asynccontextmanager
    async def _producer(self, _: str) -> AsyncIterator[AIOKafkaProducer]:
        producer = kafka.producer(self.settings.kafka)
        try:
            await producer.start()
            yield producer
        finally:
            await kafka.stop_all(producer)

    @contextlib.asynccontextmanager
    async def logs(self, project: int) -> AsyncIterator[tuple[Storage, str]]:
        """The storage and bucket of the project's mirror log (its archive destination's)."""
        archive = self.settings.archive_of(project)
        assert archive is not None, "a mirror source's project has an archive destination (checked at load)"
        yield await self.storages.get(archive.name), archive.bucket

    async def mutation_ends(self, partitions: list[int]) -> dict[int, int]:
        """The end offsets of events.mutations now (``kafka.end_offsets``: the broker's, raised to a fetch's high
        watermark), of the given partitions; a consumer of its own, its fetches held 50 ms at most."""
        ends = await kafka.end_offsets(self.settings, self.settings.topics.name("mutations"), poll_ms=200,
                                       stall_s=5.0, fetch_max_wait_ms=50)
        return {p: ends[p] for p in partitions if p in ends}

    async def close(self) -> None:
        try:
            await self.storages.aclose()
        finally:
            await self.producers.aclose()


def register_stage(app: faust.App, settings: Settings, clock: Clock) -> None:
    """The mirror stage of a worker whose settings have mirror sources of events."""
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    valid = app.topic(settings.topics.name("valid"), partitions=settings.topics.partitions, **raw)
    clients = StageClients(settings)
    rebuilds = Rebuilds(settings, clock, clients)
    register(app, settings, clock, settings.mirror_projects(), clients.logs, rebuilds,
             new_events_sender(valid, settings), rebuilds.prepare, clients.close, clients.mutation_ends)


def register(app: faust.App, settings: Settings, clock: Clock, projects: frozenset[int],
             logs: Callable[[int], AbstractAsyncContextManager[tuple[Storage, str]]],
             rebuild: Callable[[int, list[int]], Awaitable[None]],
             send_new: Callable[[int, list[Targeted]], Awaitable[None]],
             prepare: Callable[[set[int]], Awaitable[None]] | None = None,
             close: Callable[[], Awaitable[None]] | None = None,
             fresh_ends: Callable[[list[int]], Awaitable[dict[int, int]]] | None = None) -> None:
    """``prepare(projects)``, when given, runs while a take's logs are written (the rebuilds' clients made meanwhile);
    ``close()`` when the mutations agent stops; ``fresh_ends(partitions)``: the end offsets of those partitions of
    events.mutations as the broker has them now, asked before pending hours are rebuilt because the stage seems to
    have taken every mutation (without it, the consumer's last fetch decides)."""
    t, m = settings.topics, settings.mirror
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    accepted = app.topic(t.name("accepted"), partitions=t.partitions, **raw)
    index_topic = app.topic(t.name("mirror_index"), partitions=t.partitions, **raw)
    mutations = app.topic(t.name("mutations"), partitions=t.partitions, **raw)
    dead = app.topic(t.name("dead_letter"), **raw)
    files_topic = app.topic(mirror_files_topic(settings), partitions=1, **raw)
    keep_s = (m.index_days + 1) * DAY_MS / 1000
    changelog = app.topic(mirror_index_changelog(settings), partitions=t.partitions, internal=True, retention=keep_s,
                          compacting=False, deleting=True, **raw)
    table = app.tables.add(IndexTable(app, name="mirror-index", partitions=t.partitions, changelog_topic=changelog,
                                      help="(project, insert_id) -> the hours that hold its events",
                                      options={"ttl": int(keep_s), "bloom_filter_size": 10},
                                      key_type=bytes, value_type=bytes))
    applier_of: dict[int, MirrorApplier] = {}

    def applier(partition: int) -> MirrorApplier:
        class Reader:
            def get_many(self, keys: list[bytes]) -> list[bytes | None]:
                return table.get_many(partition, keys)
        if partition not in applier_of:
            applier_of[partition] = MirrorApplier(clock, Reader(), logs, m.log_prefix, m.index_days,
                                                  m.insert_is_update, rebuild)
        return applier_of[partition]

    @app.agent(accepted, name="mirror-feed")
    async def feed(stream: faust.StreamT) -> None:
        """Each accepted batch of a mirror project -> its index entries, one message per target partition."""
        async for event in stream.events():
            rows = decode_rows(event.value)
            if rows.project not in projects or not rows.count:
                continue
            per_partition: dict[int, list[tuple[bytes, bytes]]] = {}
            for k, entries in mirror_index.entries_of(rows.project, rows.hour, rows.blob).items():
                per_partition.setdefault(partition_of(k, t.partitions), []).append((k, mirror_index.encode(entries)))
            for p, writes in sorted(per_partition.items()):
                await index_topic.send(value=mirror_index.encode_writes(writes), partition=p)

    index_name = index_topic.get_topic_name()
    index_gaps = Contiguous(app, index_name, client_args(settings.kafka), "mirror-index")

    @app.agent(index_topic, name="mirror-index")
    async def index(stream: faust.StreamT) -> None:
        """Merge each message's entries into the table: one multi-get, one WriteBatch, one changelog record."""
        await index_gaps.each(stream, merge)

    async def merge(event) -> None:
        msg = event.message
        writes = mirror_index.decode_writes(event.value)
        keys = [k for k, _ in writes]
        oldest = mirror_index.oldest_hour(clock.now_ms(), m.index_days)
        values = mirror_index.merged(table.get_many(msg.partition, keys), [v for _, v in writes], oldest)
        new = list(zip(keys, values))
        await table.write_batch(msg.partition, new, f"{index_name}[{msg.partition}]@{msg.offset}".encode(),
                                mirror_index.encode_writes(new))

    pending_changelog = app.topic(mirror_pending_changelog(settings), partitions=t.partitions, internal=True,
                                  retention=None, compacting=True, deleting=False, **raw)
    pending = app.tables.add(PendingTable(app, name="mirror-pending", partitions=t.partitions,
                                          changelog_topic=pending_changelog,
                                          help="per partition of events.mutations: its hours logged, not rebuilt",
                                          key_type=bytes, value_type=bytes))
    mutations_name = mutations.get_topic_name()
    within_ms = int(m.rebuild_within_s * 1000)
    lock = asyncio.Lock()           # a take and a rebuild of the pending hours: one at a time
    handled: dict[int, int] = {}    # per partition: the offset after the last mutation taken
    taken: list[int | None] = [None]    # the oldest mutation of the take being logged: its Kafka timestamp (ms)
    held: list[int | None] = [None]     # the oldest mutation of the pending hours, as last read
    drain_check = mirror_pending.DrainCheck()

    @app.agent(mutations, name="mirror-mutations")
    async def apply(stream: faust.StreamT) -> None:
        """A burst of mutations at a time, partition by partition (see the module)."""
        try:
            async for events in take_bursts(stream, TAKE_MAX, TAKE_QUIET_S, TAKE_WITHIN_S,
                                            lambda: clock.now_ms() / 1000, m.take_max_bytes,
                                            lambda e: records.count_of(e.value)):
                metrics.MIRROR_TAKE_BYTES.observe(sum(event_bytes(e) for e in events))
                failed = None
                try:
                    await apply_take(events)
                except Exception as exc:
                    failed = take_failed(exc)
                if failed is not None:      # raised here, not in the except: the error faust keeps holds no frame
                    del events              # of the take (nor its records)
                    raise TakeFailed(failed)
                del events      # not held while the pending hours are rebuilt and the next take is waited for
        finally:
            if close is not None:
                await close()

    async def apply_take(events: list) -> None:
        async with lock:
            try:
                await log_take(events)
            finally:
                taken[0] = None
                held[0] = oldest_pending()

    def oldest_pending() -> int | None:
        """The oldest mutation the assigned partitions' pending hours wait for (the hours pending counted)."""
        pend = [pending.pending(p, files=False) for p in partitions()]
        metrics.MIRROR_PENDING_HOURS.set(mirror_pending.hours_pending(pend))
        return min((o for pd in pend if (o := pd.oldest_ms()) is not None), default=None)

    def set_waiting() -> None:
        metrics.MIRROR_WAITING.set(mirror_pending.oldest_waiting_s([taken[0], held[0]], clock.now_ms()))

    async def log_take(events: list) -> None:
        by_partition: dict[int, list] = {}
        for e in events:
            by_partition.setdefault(e.message.partition, []).append(e)
        oldest_ms = int(min(e.message.timestamp for e in events) * 1000)
        taken[0] = oldest_ms
        decoded = {p: targets_of((e.message.offset, e.value) for e in evs) for p, evs in by_partition.items()}
        ready = None
        if prepare is not None:     # made while the logs are written; a failure here is the rebuild's to meet
            ready = asyncio.ensure_future(prepare({t.project for b in decoded.values() for t in b}))
        try:
            applied = []
            for p, evs in sorted(by_partition.items()):
                applied.append((p, await applier(p).log(p, evs[0].message.offset, decoded[p])))
        except BaseException:
            if ready is not None:
                ready.cancel()
            raise
        if ready is not None:
            await asyncio.gather(ready, return_exceptions=True)
        crash_point("mirror.logged")
        at_ms = clock.now_ms()
        files: dict[int, list[mirror_files.FileTake]] = {}
        for p, a in applied:
            files[p] = mirror_files.takes_of(a, p, at_ms)
            await pending.write(p, mirror_pending.writes(pending.pending(p, files=False), a.hours,
                                                         [f for f in files[p] if f.hours], at_ms, oldest_ms))
        crash_point("mirror.pending")
        for p, a in applied:
            await report(a, p, [f for f in files[p] if not f.hours])
            handled[p] = max(e.message.offset for e in by_partition[p]) + 1

    def partitions() -> list[int]:
        """The partitions of events.mutations assigned to this worker."""
        try:
            return sorted(tp.partition for tp in app.consumer.assignment() if tp.topic == mutations_name)
        except Exception:       # no consumer yet, or not assigned any more
            return []

    def taken_to(parts: list[int]) -> dict[int, int | None]:
        """Per partition, the offset up to which the agent has taken its mutations: where it was sought to at the
        last assignment, or past the last take since, whichever is later (None: unknown)."""
        starts = getattr(app, "starts", {})     # where each partition was sought to (stream.consumer.App)
        done: dict[int, int | None] = {}
        for p in parts:
            known = [o for o in (handled.get(p), starts.get(TP(mutations_name, p))) if o is not None]
            done[p] = max(known) if known else None
        return done

    def is_drained(parts: list[int]) -> bool:
        """Has the agent taken every mutation up to the end of its partitions (as the last fetch saw it)?"""
        ends: dict[int, int | None] = {}
        for p in parts:
            try:
                ends[p] = app.consumer.highwater(TP(mutations_name, p))  # None until a fetch answered for it
            except Exception:       # not assigned any more
                ends[p] = None
        return mirror_pending.drained(taken_to(parts), ends)

    async def confirmed_drained(parts: list[int]) -> bool:
        """Do the broker's ends now agree that every mutation is taken? Asked once for what has been taken: while
        they say more is there, the next take (which those mutations make) asks again."""
        if fresh_ends is None:
            return True
        try:
            return await drain_check.confirmed(taken_to(parts), lambda: fresh_ends(parts))
        except Exception as exc:    # the consumer's last fetch decides, as without the broker's ends
            log.warning("mirror: the end offsets of %s could not be read (%s: %s); the pending hours are rebuilt as "
                        "the stage's consumer saw the partitions' ends", mutations_name, type(exc).__name__, exc)
            return True

    async def commit_taken(parts: list[int]) -> None:
        """Commit the offsets of the takes whose hours are about to be rebuilt (acknowledged once logged and recorded
        pending; faust would commit them within a few seconds): a worker killed during or after the rebuild then does
        not take them again, which would find a new event one of them sent already exported (an INSERT counted as
        an insert conflict in its file's record instead of new)."""
        try:
            await app.consumer.commit({TP(mutations_name, p) for p in parts})
        except Exception as exc:    # faust's own commit comes next; a take taken again still converges
            log.warning("mirror: the offsets of %s could not be committed before the rebuild (%s: %s); faust commits "
                        "them on its next commit", mutations_name, type(exc).__name__, exc)

    async def rebuild_due() -> None:
        """Rebuild the pending hours of the assigned partitions if they are due (``mirror_pending.due_hours``)."""
        async with lock:
            parts = partitions()
            now_ms = clock.now_ms()
            waiting = [pending.pending(p, files=False) for p in parts]
            drained = is_drained(parts)
            hours = mirror_pending.due_hours(waiting, now_ms, drained, within_ms)
            if not hours:
                return
            if mirror_pending.due_on_drain_only(waiting, now_ms, drained, within_ms) and \
                    not await confirmed_drained(parts):
                return
            await commit_taken(parts)
            pend = {p: pending.pending(p) for p in parts}
            for project, hs in hours.items():
                await rebuild(project, hs)
            crash_point("mirror.rebuilt")
            at_ms = clock.now_ms()
            for p, pd in sorted(pend.items()):
                # on the broker before the records they waited for are deleted
                takes = mirror_pending.rewritten(pd, at_ms)
                sent = [await files_topic.send(key=take.key, value=take.encode()) for take in takes]
                await asyncio.gather(*sent)
                for take in takes:
                    metrics.MIRROR_REWRITE_LAG.observe(max(0, at_ms - take.modified_ms) / 1000)
                await pending.write(p, mirror_pending.clears(pd))
            held[0] = oldest_pending()
            metrics.MIRROR_HOURS_REWRITTEN.inc(sum(len(hs) for hs in hours.values()))
            log.info("mirror: hours rebuilt (%d, pending since %.1fs): %s", sum(len(hs) for hs in hours.values()),
                     (now_ms - min(s for pd in pend.values() if (s := pd.since_ms()) is not None)) / 1000,
                     ", ".join(f"{p}: {' '.join(hour_text(h) for h in hs)}" for p, hs in hours.items()))

    @app.timer(interval=PENDING_LOOK_S)
    async def mirror_pending_look() -> None:
        """The waiting gauge; the pending hours rebuilt once due (those a previous worker left too)."""
        set_waiting()
        if lock.locked() or getattr(app, "rebalancing", False) or getattr(app, "in_recovery", False):
            return      # a take or a rebuild under way (the gauge counts from what it started with), or a rebalance
        held[0] = oldest_pending()
        set_waiting()
        await rebuild_due()
        set_waiting()

    async def report(applied: Applied, partition: int, takes: list[mirror_files.FileTake]) -> None:
        """A take's outcomes of one partition: counted, logged, unknown ones dead-lettered, new events sent; the
        mirror-files records of ``takes`` (records that name no hour to wait for) written."""
        log.info("mirror: %d mutations of %s[%d] applied: %s; hours pending: %s", sum(applied.routed.values()),
                 mutations.get_topic_name(), partition,
                 ", ".join(f"{op.lower()} {outcome} {n}" for (op, outcome), n in sorted(applied.routed.items())),
                 ", ".join(f"{p}: {' '.join(hour_text(h) for h in hs)}" for p, hs in applied.hours.items()) or "none")
        for (op, outcome), n in applied.routed.items():
            metrics.MIRROR_MUTATIONS.labels(op.lower(), outcome).inc(n)
        for u in applied.unknown:
            _, url, row = u.mutation.seq
            why = Rejected(Reason.UNKNOWN_INSERT_ID, "insert_id",
                           f"{u.mutation.op.value} of insert_id {u.mutation.insert_id!r}: no event of project "
                           f"{u.project} with it was exported in the last {m.index_days} days (mirror.index_days)")
            await dead.send(key=mirror_index.key(u.project, u.mutation.insert_id), value=deadletter.encode(
                why, url, deadletter.FILE_ROW, row, clock.now_ms(), None, None, clock.now_ms(), 1 << 20))
            metrics.EVENTS_DEAD_LETTERED.labels("mirror", Reason.UNKNOWN_INSERT_ID.value).inc()
        if applied.new:
            await send_new(partition, applied.new)
        for take in takes:
            await files_topic.send(key=take.key, value=take.encode())


class TakeFailed(RuntimeError):
    pass


def take_failed(exc: BaseException) -> str:
    """Mark the mirror stage failed after a take it could not apply (left unacknowledged: faust commits none of its
    records) and say why: the worker's liveness check fails, Kubernetes restarts it, and the take is read again."""
    why = (f"the mirror stage could not apply a take of events.mutations ({type(exc).__name__}: {exc}); it is not "
           "acknowledged, and the worker is marked failed so that a restart reads it again from the committed offsets: "
           "see the worker's log for the error and docs/runbook.md (mirror)")
    log.error("mirror: %s", why, exc_info=exc)
    HEALTH.mark_failed("mirror", why)
    return why


def new_events_sender(valid: faust.TopicT, settings: Settings) -> Callable[[int, list[Targeted]], Awaitable[None]]:
    """New INSERTs -> events.valid, as batches whose source is events.mutations: they go through dedupe (a
    replay is dropped by its insert_id) and get their amplitude_id as every event does; their user properties
    update no stored properties (``$skip_user_properties_sync``), as mirror rows are not enriched. Their Segment
    source is ``MIRROR_SOURCE``: no Segment-layout destination exports them."""
    t = settings.topics
    mutations_topic = t.name("mutations")

    async def send(partition: int, new: list[Targeted]) -> None:
        for target, value in new_event_batches(new, mutations_topic, partition, settings):
            await valid.send(value=value, partition=target)
    return send


def new_event_batches(new: list[Targeted], mutations_topic: str, partition: int,
                      settings: Settings) -> list[tuple[int, bytes]]:
    """(partition of events.valid, batch) of a take's new INSERTs on ``partition`` of events.mutations, in the order
    of their source offsets: the exporter skips a batch whose offsets are all at or below one it has already taken
    for the same hour and source partition (an upstream replay), so a later batch must not carry lower offsets (the
    applier lists the INSERTs by their files' order, which need not be their records')."""
    t = settings.topics
    events = []
    for n in sorted(new, key=lambda n: n.source_offset):
        row = dict(n.mutation.row or {})
        row["data"] = {**(row.get("data") or {}), "$skip_user_properties_sync": True}
        events.append((n.source_offset, from_row(n.project, row)))
    out = []
    for target, b in group(events, mutations_topic, partition, t.partitions, settings.ingest.batch_max_events,
                           settings.kafka.max_request_bytes // 2):
        b.segment_source = MIRROR_SOURCE
        out.append((target, b.encode()))
    return out


class Rebuilds:
    """The rebuilds of pending hours: a backfill of the hours of every enabled Amplitude-layout destination of the
    project that exports events, one run of consecutive hours at a time (the backfill the API and the CLI run,
    which applies the project's mirror log), through the stage's held S3 clients and producer. A rebuild that fails
    is tried again until it succeeds: the hours stay pending and the next take waits meanwhile
    (StreamMirrorMutationsWaiting fires). A rebuild is not cancelled through the control topic: the stage would
    only run it again."""

    def __init__(self, settings: Settings, clock: Clock, clients: StageClients):
        from stream.admin.service import Admin
        self.settings, self.clock, self.admin = settings, clock, Admin(settings, clock)
        self.storages, self.producers = clients.storages, clients.producers

    def destinations(self, project: int) -> list[str]:
        return [d.name for d in self.settings.destinations if d.project == project and d.enabled and
                d.layout == "amplitude" and d.exports_events()]

    def clients_of(self, project: int) -> list[str]:
        """The destinations whose S3 clients a rebuild of the project's hours uses: its destinations and archive."""
        archive = self.settings.archive_of(project)
        names = self.destinations(project)
        return names + ([archive.name] if archive is not None and archive.name not in names else [])

    async def prepare(self, projects: set[int]) -> None:
        """Make the clients the rebuilds of these projects' hours use (the producer, the S3 clients)."""
        await asyncio.gather(self.producers.get("ledger"),
                             *(self.storages.get(n) for p in sorted(projects) for n in self.clients_of(p)))

    async def __call__(self, project: int, hours: list[int]) -> None:
        for name in self.destinations(project):
            for first, end in runs(hours):
                await retry_until_done(f"mirror rebuild of {name} {hour_text(first)}..{hour_text(end)}",
                                       lambda: self._once(name, first, end), classify=lambda exc: _PASSING)

    async def _once(self, name: str, first: int, end: int) -> None:
        req = self.admin.request(name, hour_text(first), hour_text(end), exports="events", by="mirror")
        dest = self.admin.destination(name)
        archive = self.settings.archive_of(dest.project)
        storage = await self.storages.get(name)
        archive_storage = storage if archive is None or archive.name == name else await self.storages.get(archive.name)
        producer = await self.producers.get("ledger")
        ledger_topic = self.settings.topics.name("export_ledger")

        async def append(rec) -> None:
            await (await producer.send(ledger_topic, rec.encode(), key=rec.message_key()))
        spool = Path(self.settings.worker.data_dir) / "spool" / f"backfill-{req.job}"
        doc = await Backfill(self.settings, req, storage, append, self.clock, spool, archive_storage=archive_storage,
                             mirror=mirror_log_of(self.settings, dest, archive_storage)).run()
        if doc.get("state") != "done":
            raise RebuildFailed(f"the rebuild of {name} {hour_text(first)}..{hour_text(end)} ended "
                                f"{doc.get('state')}: {doc.get('error') or 'no error given'}")


class RebuildFailed(Exception):
    pass


class _Passing:
    kind, reason = "transient", "rebuild_failed"


_PASSING = _Passing()


def runs(hours: list[int]) -> list[tuple[int, int]]:
    """Consecutive hours as [first, end) runs, in order."""
    out: list[tuple[int, int]] = []
    for h in sorted(set(hours)):
        if out and out[-1][1] == h:
            out[-1] = (out[-1][0], h + HOUR_MS)
        else:
            out.append((h, h + HOUR_MS))
    return out
