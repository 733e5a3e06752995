"""The identity stage's Kafka side: the device side inside the dedupe agent's batch, and the user-side agent.

``DeviceSide.batch`` runs in the dedupe agent after the dedupe decision, on the
same events.valid partition (no extra hop for the rows): it rolls back a
replayed batch, resolves ids and fields (``stream.identity.device``), writes
the state (one WriteBatch, one changelog record), and returns the enriched
batch, the dead letters and the links to send. ``DeviceSide.remaps`` applies a
remap message read from events.valid. ``register`` adds the user-side agent on
identity.links (``stream.identity.users``).
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
from stream.identity.device import apply_remaps, resolve_batch
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
        writes, before, applied = apply_remaps(remaps, lambda keys: self.table.get_many(partition, keys))
        await self._apply(partition, offset, writes, before)
        metrics.IDENTITY_REMAPS.inc(applied)
        crash_point("identity.remap_applied")
        return True

    async def batch(self, out: EventBatch, partition: int, offset: int, timestamp_ms: int) -> EventBatch:
        """The accepted batch ``out`` (read at ``offset``) with ids and user fields; rejected rows dead-lettered."""
        await self._rollback(partition, offset)
        res = resolve_batch(out.lines, out.times, out.project, partition, format_ms(timestamp_ms),
                            lambda keys: self.table.get_many(partition, keys),
                            self.settings.identity.max_properties_bytes)
        await self._apply(partition, offset, res.writes, res.before)
        crash_point("identity.state_written")
        metrics.IDENTITY_IDS.inc(res.allocated)
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
        d = decide(message, lambda keys: table.get_many(p, keys))
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
