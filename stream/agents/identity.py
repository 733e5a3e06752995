"""The identity stage's Kafka side: the device side inside the dedupe agent's batch, and the user-side agent.

``DeviceSide.batch`` runs in the dedupe agent after the dedupe decision, on the
same events.valid partition (no extra hop for the rows): it rolls back a
replayed batch, resolves ids and fields (``stream.identity.device``), writes
the state (one WriteBatch, one changelog record), and returns the enriched
batch, the dead letters and the links to send. ``DeviceSide.remaps`` applies a
remap message read from events.valid. ``register`` adds the user-side agent on
identity.links (``stream.identity.users``).

**Why a new (device, user) pair's first rows are held, and how.** The device
side is keyed by device_id, the user side by user_id; what is known of a user
(its id, the properties an identify by user_id alone set) is on the user's
identity.links partition, usually on another worker. Without waiting, every
event of a known user from a new device went out with the device's own id and
none of the user's properties until the merge came back -- all of them, when a
whole file of such events was imported at once. The choices were:

- read the user state from the device side: it is another worker's RocksDB
  partition; a remote read per new pair would need a request protocol outside
  Kafka and would not replay deterministically;
- partition events by user_id: the dedupe and device state are keyed by device
  (anonymous events have no user_id);
- hold the pair's rows in the partition's state until the answer arrives on
  events.valid, where remaps already arrive, and let them go from there.

The last keeps every step a function of the Kafka messages and the journaled
state, which is what exactly-once rests on here: the held rows are state
writes of their batch (rolled back and redone on a replay), the answer is a
message at an events.valid offset, and the released rows are sent on their own
source (``held_source``) with offsets from a per-partition counter in the
state, so a replay sends the same rows under the same offsets and the exporter
drops them (a released row goes out after later rows of its original source,
so it cannot keep that source's offsets); the same event coming again from
upstream, which dedupe lets through and the exporter would take for new on its
own source, is dropped by the device side (``Device.held``). The user side
answers every link
(``decide(answer=True)``): a merge is the remap as before; an adopted link gets a
remap from its id to itself. The wait is bounded by ``identity.hold_s``,
measured by the Kafka timestamps of the messages (deterministic on replay) and
checked at each batch of the partition; held rows past it, or of an hour
before the batch's (so that they reach events.accepted before the partition's
rows of a later hour, and the exporter, which closes an hour once the
partition's rows are past it, writes them into their hour's object rather than
a straggler's), are exported with what the partition knows and counted
(``stream_identity_unanswered_events_total``),
and every hold's length is observed (``stream_identity_hold_seconds``, wall
clock at the answer). A partition that reads no message at all lets nothing go
until it reads one, or the answer comes. ``identity.hold_s: 0`` holds nothing
(and lets go, at its next batch, what was held).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import faust
from faust.types import TP

from stream import metrics
from stream.agents.contiguous import Contiguous, Record
from stream.agents.deadletters import keep_undecodable
from stream.crashpoints import crash_point
from stream.events import deadletter
from stream.events.batch import EventBatch, Origin, Source
from stream.events.normalize import Reason, Rejected, uuid5_bytes
from stream.events.partitioning import partition_for
from stream.events.timefmt import format_ms
from stream.events.timefmt import HOUR_MS
from stream.identity.device import Hold, Released, apply_remaps, resolve_batch
from stream.identity.records import Links, dec_links, decode_remaps, enc, encode_remaps
from stream.identity.table import PRUNE_EVERY, IdentityTable
from stream.identity.users import decide, group_merges
from stream.kafka import client_args
from stream.settings import Settings
from stream.topics import identity_changelog

log = logging.getLogger(__name__)


def add_table(app: faust.App, settings: Settings) -> IdentityTable:
    t = settings.topics
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    # one record per key written: compacted, it keeps about one record per live key (stream.identity.table)
    changelog = app.topic(identity_changelog(settings), partitions=t.partitions, internal=True, retention=None,
                          compacting=True, deleting=False, **raw)
    return app.tables.add(IdentityTable(
        app, name="identity", partitions=t.partitions, changelog_topic=changelog,
        help="devices, (device, user) pairs, users, profiles, groups",
        options={"bloom_filter_size": 10, "block_cache_size": settings.identity.block_cache_mb << 20,
                 "write_buffer_size": settings.identity.write_buffer_mb << 20, "max_write_buffer_number": 2},
        key_type=bytes, value_type=bytes))


class DeviceSide:
    """The device side of one worker's dedupe agent."""

    def __init__(self, settings: Settings, table: IdentityTable, links: faust.TopicT, dead: faust.TopicT,
                 valid_name: str, committed: Callable[[int], int | None]):
        self.settings, self.table, self.links, self.dead = settings, table, links, dead
        self.valid_name, self.committed = valid_name, committed
        self.partitions = settings.topics.partitions
        self.hold_ms = int(settings.identity.hold_s * 1000)
        t = settings.topics
        self.accepted = links.app.topic(t.name("accepted"), partitions=t.partitions, key_type=bytes,
                                        value_type=bytes, key_serializer="raw", value_serializer="raw")
        self.released_source = held_source(valid_name)

    async def _rollback(self, partition: int, offset: int) -> None:
        undone = await self.table.rollback(partition, offset)
        if undone:
            metrics.IDENTITY_ROLLBACKS.inc(undone)
            log.info("identity: %s[%d]@%d read again: rolled back %d batches of state", self.valid_name, partition,
                     offset, undone)

    async def _apply(self, partition: int, offset: int, writes: dict[bytes, bytes | None],
               before: dict[bytes, bytes | None]) -> None:
        """Write a batch's state; at each pruning point, first learn the committed offset (below it the journal is
        not needed): when it cannot be read, the journal grows until it can, and that is said loudly."""
        committed = None
        if offset % PRUNE_EVERY == 0 and writes:
            try:
                committed = self.committed(partition)
            except Exception as exc:
                metrics.IDENTITY_PRUNE_FAILURES.inc()
                log.warning("identity: the committed offset of %s[%d] cannot be read (%s: %s); the replay journal "
                            "of the partition is not pruned until it can (it grows by one entry per batch)",
                            self.valid_name, partition, type(exc).__name__, exc)
        pruned = await self.table.apply(partition, offset, writes, before, committed)
        if pruned:
            metrics.IDENTITY_PRUNED.inc(pruned)

    async def remaps(self, value: bytes, partition: int, offset: int) -> bool:
        """Apply the message at ``offset`` if it is a remap message; False if it is not one."""
        remaps = decode_remaps(value)
        if remaps is None:
            return False
        await self._rollback(partition, offset)
        # the wall clock measures the holds let go (a metric); what is let go depends on the messages only
        r = apply_remaps(remaps, lambda keys: self.table.get_many(partition, keys), time.time_ns() // 1_000_000)
        await self._apply(partition, offset, r.writes, r.before)
        metrics.IDENTITY_REMAPS.inc(r.applied)
        await self._release(r.released, partition, offset)
        crash_point("identity.remap_applied")
        return True

    async def _release(self, released: Released, partition: int, offset: int) -> None:
        """Send held rows let go to events.accepted, on the partition's own source (``held_source``): their
        source offsets are the partition's release counter, so a replay of the message sends the same rows with
        the same offsets, which the exporter drops."""
        for wait in released.waits_ms:
            metrics.IDENTITY_HOLD_SECONDS.observe(wait / 1000)
        metrics.IDENTITY_UNANSWERED.inc(released.unanswered)
        if released.past_bound:
            log.warning("identity: %d held events of %s[%d]@%d exported without the user side's answer after "
                        "identity.hold_s (%gs): their user's properties and id, if known elsewhere, come with a later "
                        "remap; is the user side (identity.links) lagging?", released.past_bound, self.valid_name,
                        partition, offset, self.settings.identity.hold_s)
        for batch in released_batches(released, Origin(self.valid_name, partition, offset), self.released_source):
            for part in batch.split(self.settings.kafka.max_request_bytes // 2):
                await self.accepted.send(value=part.encode(), partition=partition)
        metrics.DEDUPE_ACCEPTED.inc(len(released.rows))     # written to events.accepted: now, not with their batch

    async def batch(self, out: EventBatch, partition: int, offset: int, timestamp_ms: int) -> EventBatch:
        """The accepted batch ``out`` (read at ``offset``) with ids and user fields; rejected rows dead-lettered."""
        await self._rollback(partition, offset)
        # a bound of 0 holds nothing new, and lets go what was held before the setting changed
        source, source_offsets = out.source_of_events()
        hold = Hold(timestamp_ms, self.hold_ms, out.hour, str(source), source_offsets, out.keys, out.uuids,
                    out.segment, out.segment_source)
        res = resolve_batch(out.lines, out.times, out.project, partition, format_ms(timestamp_ms),
                            lambda keys: self.table.get_many(partition, keys),
                            self.settings.identity.max_properties_bytes, hold)
        await self._apply(partition, offset, res.writes, res.before)
        crash_point("identity.state_written")
        metrics.IDENTITY_IDS.inc(res.allocated)
        metrics.IDENTITY_HELD.inc(res.held)
        await self._release(res.released, partition, offset)
        if res.dropped:
            metrics.IDENTITY_DROPPED.inc(len(res.dropped))
            i, size = res.dropped[0]
            log.warning("identity: %d property updates in %s[%d]@%d not applied: they would have grown a user's or "
                        "group's properties to %d bytes, past identity.max_properties_bytes (%d); the events are "
                        "exported with the properties as they were", len(res.dropped), self.valid_name, partition,
                        offset, size, self.settings.identity.max_properties_bytes)
        if res.rejected:
            now = time.time_ns() // 1_000_000
            source, source_offsets = out.source_of_events()
            for i, err in res.rejected:
                why = Rejected(Reason(err.reason), err.field, f"{err.detail} (identity stage; source "
                               f"{source}@{source_offsets[i]})")
                await self.dead.send(value=deadletter.encode(why, self.valid_name, partition, offset, timestamp_ms,
                                                             None, out.lines[i], now,
                                                             self.settings.kafka.max_request_bytes // 2))
                metrics.EVENTS_DEAD_LETTERED.labels("identity", err.reason).inc()
        if res.rejected or res.held or res.replayed:
            out = out.select(res.keep, out.origin)
        out.lines = res.lines
        if res.links:
            by_part: dict[int, list] = {}
            for link in res.links:
                by_part.setdefault(partition_for(link.user, self.partitions), []).append(link)
            for q, links in by_part.items():
                await self.links.send(value=enc.encode(Links(partition, offset, links)), partition=q)
            metrics.IDENTITY_LINKS.inc(len(res.links))
            crash_point("identity.links_sent")
        return out


def held_source(valid_name: str) -> str:
    """The source name of the rows the device side held and let go: ``<events.valid>.held``. Their source offsets
    count the rows released on the partition, apart from the offsets of the sources the events came from (a held
    row goes out after later rows of its source, which the exporter would take for a replay)."""
    return f"{valid_name}.held"


def released_batches(released: Released, origin: Origin, source: str) -> list[EventBatch]:
    """The released rows as batches of one project, hour and Segment source each, in order."""
    out: list[EventBatch] = []
    for row, line, offset in released.rows:
        hour = row.time - row.time % HOUR_MS
        b = out[-1] if out else None
        if b is None or (b.project, b.hour, b.segment_source) != (row.project, hour, row.segment_source):
            b = EventBatch(row.project, hour, origin, source=Source(source, origin.partition),
                           segment_source=row.segment_source)
            out.append(b)
        b.offsets.append(offset)
        b.keys.append(row.key)
        b.times.append(row.time)
        b.uuids.append(row.uuid)
        b.lines.append(line)
        b.segment.append(row.segment)
    for b in out:
        if not any(b.segment):
            b.segment = []
    return out


def register(app: faust.App, settings: Settings, table: IdentityTable, valid: faust.TopicT,
             links: faust.TopicT, dead: faust.TopicT) -> None:
    """The user side: an agent on identity.links that adopts or merges, and sends merges and remaps."""
    t = settings.topics
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    merges = app.topic(t.name("identity_merges"), partitions=1, **raw)
    links_name = links.get_topic_name()

    gaps = Contiguous(app, links_name, client_args(settings.kafka), "identity")

    @app.agent(links, name="identity-users")
    async def users(stream: faust.StreamT) -> None:
        """Per links message: decide, send merges and remaps and wait for Kafka to have them, then write the
        state (see ``stream.identity.users`` for why this order)."""
        async for event in stream.events():
            for missed in await gaps.missed(event.message.partition, event.message.offset):
                await handle(missed)
            await handle(event)

    async def handle(event: faust.EventT | Record) -> None:
        msg = event.message
        try:
            message = dec_links(event.value)
        except Exception as exc:   # not a links message
            await keep_undecodable(dead, event, exc, "identity", settings.kafka.max_request_bytes)
            return
        p = msg.partition
        d = decide(message, lambda keys: table.get_many(p, keys), answer=settings.identity.hold_s > 0)
        if d.skipped:
            return
        sent = []
        for vp, remaps in d.remaps.items():
            sent.append(await valid.send(value=encode_remaps(remaps), partition=vp))
        for (project, hour), ms in group_merges(d.merges).items():
            n = len(ms)
            batch = EventBatch(project, hour, Origin(links_name, p, msg.offset), offsets=[msg.offset] * n,
                               keys=[b""] * n, times=[m.merge_server_time for m in ms],
                               uuids=[uuid5_bytes(f"{links_name}/{p}/{msg.offset}/{i}") for i in range(n)],
                               lines=[m.line() for m in ms], source=Source(links_name, p))
            sent.append(await merges.send(value=batch.encode(), partition=0))
        for fut in sent:
            await fut
        crash_point("identity.merges_sent")
        metrics.IDENTITY_MERGES.inc(len(d.merges))
        await table.write(p, d.writes)
        crash_point("identity.users_written")


def committed_offsets(app: faust.App, topic: str) -> Callable[[int], int | None]:
    """The committed offset of ``topic[partition]`` as faust's consumer last committed or read it (None: none yet).

    faust keeps it in a private attribute; if a faust version moves it, reading it raises, which the caller
    reports (``stream_identity_journal_prune_failures_total``) rather than treating as "nothing committed yet".
    """
    def committed(partition: int) -> int | None:
        return app.consumer._committed_offset.get(TP(topic, partition))
    return committed
