"""The identity stage's engines: the device side inside the dedupe stage's batch, and the user side.

``DeviceStage.batch`` runs in the dedupe stage after the dedupe decision, on the
same events.valid partition (no extra hop for the rows): it rolls back a
replayed batch, resolves ids and fields (``stream.identity.device``), writes
the state (one WriteBatch, one changelog record), and returns the enriched
batch, the dead letters and the links to send. ``DeviceStage.remaps`` applies a
remap message read from events.valid. ``UserStage.handle`` adopts or merges the
links of one identity.links message (``stream.identity.users``).

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

A held row is kept in the state as a reference to its events.valid message
(offset, row index; ``stream.identity.records.HeldRow``) with the user's fields
it had, not as a copy of its bytes: the worker keeps the batch's rows in memory
until they are let go (``HeldRows``, ``HELD_ROWS_MEMORY_BYTES``; a batch past
that bound holds its rows as copies), and reads them back from events.valid
when they are not there (after a restart). events.valid is not compacted and
its messages never change, so a replay lets go the same rows, byte for byte.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from stream import metrics
from stream.clock import Clock
from stream.crashpoints import crash_point, pause_point
from stream.events import deadletter
from stream.events.batch import EventBatch, Origin, Source
from stream.events.normalize import Reason, Rejected, uuid5_bytes
from stream.events.partitioning import partition_for
from stream.events.timefmt import HOUR_MS, format_ms
from stream.identity.device import Hold, Message, Released, Seen, apply_remaps, fill, referred, resolve_batch
from stream.identity.records import Links, dec_links, decode_remaps, enc, encode_remaps
from stream.identity.table import PRUNE_EVERY
from stream.identity.users import decide, group_merges

log = logging.getLogger(__name__)

Send = Callable[[bytes, int], Awaitable[Any]]
"""(value, partition): hand a message to the producer; what it returns is awaited only where a step waits for the
broker to have the message (``UserStage``)."""
SendDead = Callable[[bytes], Awaitable[Any]]
"""(value): a record of the dead-letter topic."""
DeadLetter = Callable[[Any, Exception], Awaitable[None]]
"""(record, why): keep a message that is not a links message in the dead-letter topic."""
Accepted = Callable[[int, list[EventBatch], list[list[Seen | None]] | None], Awaitable[None]]
"""(partition, batches, seen): what the device side hands to events.accepted[partition], in order, as it hands it
over (the batches it lets go, each sent; the batch of a message, which the dedupe stage sends once
``DeviceStage.batch`` returns it), and per batch, per row, what the device side read of the row (``Seen``; None for
the batches let go): the cohorts stage rekeys them there rather than reading events.accepted again, and reads the
rows' fields from ``seen`` rather than parsing them again (``stream.agents.cohorts``)."""
ReadValid = Callable[[int, int, int], Awaitable[list[tuple[int, bytes]]]]
"""(partition, first, end): the messages of events.valid[partition] from ``first`` up to ``end`` (excluded), as
(offset, value)."""

HELD_ROWS_MEMORY_BYTES = 64 << 20
"""Bytes of rows a device side keeps in memory from the batches that held rows by reference until those rows are let
go. A batch that does not fit holds its rows as copies in the state (as a previous version did), so that letting
rows go never reads back more than what a restart lost."""


class HeldRows:
    """The rows of the batches that held rows by reference (``HeldRow.at``), kept until those rows are let go, so
    that letting them go reads nothing back from events.valid: (partition, offset) -> [``Message``, rows held,
    bytes]. Its entries are facts of the topic, never wrong; the worker forgets a partition's when the partition is
    revoked (``forget``: another worker may let its rows go meanwhile, and its memory would stay taken)."""

    def __init__(self, limit: int = HELD_ROWS_MEMORY_BYTES):
        self.batches: dict[tuple[int, int], list[Any]] = {}
        self.bytes, self.limit = 0, limit

    @staticmethod
    def size(lines: Sequence[bytes]) -> int:
        return sum(map(len, lines)) + 64 * len(lines)

    def fits(self, size: int) -> bool:
        return self.bytes + size <= self.limit

    def put(self, partition: int, offset: int, message: Message, held: int, size: int) -> None:
        old = self.batches.pop((partition, offset), None)
        if old is not None:
            self.bytes -= old[2]
        self.batches[(partition, offset)] = [message, held, size]
        self.bytes += size

    def forget(self, partitions: set[int]) -> None:
        for key in [k for k in self.batches if k[0] in partitions]:
            self.bytes -= self.batches.pop(key)[2]

    def get(self, partition: int, offset: int) -> Message | None:
        e = self.batches.get((partition, offset))
        return e[0] if e is not None else None

    def let_go(self, partition: int, offset: int, rows: int) -> None:
        """``rows`` of the batch's held rows were let go; with the last, the batch is forgotten."""
        e = self.batches.get((partition, offset))
        if e is not None:
            e[1] -= rows
            if e[1] <= 0:
                del self.batches[(partition, offset)]
                self.bytes -= e[2]


class DeviceStage:
    """The device side of one worker's dedupe stage.

    ``committed(partition)`` is the consumer's committed offset of events.valid (None: none yet); ``clock`` times
    the holds let go (a metric) and stamps dead letters: what is let go depends on the messages only.
    """

    def __init__(self, store: Store, clock: Clock, send_accepted: Send, send_links: Send, send_dead: SendDead,
                 valid_name: str, committed: Callable[[int], int | None], *, partitions: int, hold_s: float,
                 max_properties_bytes: int, max_request_bytes: int, read_valid: ReadValid | None = None,
                 held_rows_bytes: int = HELD_ROWS_MEMORY_BYTES):
        self.table, self.clock = store, clock
        self.send_accepted, self.send_links, self.send_dead = send_accepted, send_links, send_dead
        self.valid_name, self.committed = valid_name, committed
        self.partitions, self.hold_s, self.hold_ms = partitions, hold_s, int(hold_s * 1000)
        self.max_properties_bytes, self.max_request_bytes = max_properties_bytes, max_request_bytes
        self.released_source = held_source(valid_name)
        # with a way to read events.valid back, held rows are references to their batch's message (``HeldRow.at``)
        self.read_valid, self.held = read_valid, HeldRows(held_rows_bytes)
        self.on_accepted: Accepted | None = None

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
        r = apply_remaps(remaps, lambda keys: self.table.get_many(partition, keys), self.clock.now_ms(), offset)
        await self._apply(partition, offset, r.writes, r.before)
        metrics.IDENTITY_REMAPS.inc(r.applied)
        await self._release(r.released, partition, offset)
        crash_point("identity.remap_applied")
        return True

    async def _release(self, released: Released, partition: int, offset: int) -> None:
        """Send held rows let go to events.accepted, on the partition's own source (``held_source``): their
        source offsets are the partition's release counter, so a replay of the message sends the same rows with
        the same offsets, which the exporter drops."""
        released = await self._fill(released, partition)
        for wait in released.waits_ms:
            metrics.IDENTITY_HOLD_SECONDS.observe(wait / 1000)
        metrics.IDENTITY_UNANSWERED.inc(released.unanswered)
        if released.past_bound:
            log.warning("identity: %d held events of %s[%d]@%d exported without the user side's answer after "
                        "identity.hold_s (%gs): their user's properties and id, if known elsewhere, come with a later "
                        "remap; is the user side (identity.links) lagging?", released.past_bound, self.valid_name,
                        partition, offset, self.hold_s)
        sent: list[EventBatch] = []
        for batch in released_batches(released, Origin(self.valid_name, partition, offset), self.released_source):
            for part in batch.split(self.max_request_bytes // 2):
                await self.send_accepted(part.encode(), partition)
                sent.append(part)
        if sent and self.on_accepted is not None:
            await self.on_accepted(partition, sent, None)
        metrics.DEDUPE_ACCEPTED.inc(len(released.rows))     # written to events.accepted: now, not with their batch

    async def _fill(self, released: Released, partition: int) -> Released:
        """The rows let go with the bytes of those held by reference: from memory (``HeldRows``), else read back
        from events.valid."""
        counts = referred(released)
        if not counts:
            return released
        messages: dict[int, Message] = {}
        missing: list[int] = []
        for at in counts:
            m = self.held.get(partition, at)
            if m is None:
                missing.append(at)
            else:
                messages[at] = m
        if missing:
            messages.update(await self._read_back(partition, sorted(missing)))
            metrics.IDENTITY_READ_BACK.inc(sum(counts[at] for at in missing))
        fill(released, messages)
        for at, n in counts.items():
            self.held.let_go(partition, at, n)
        return released

    async def _read_back(self, partition: int, offsets: list[int]) -> dict[int, Message]:
        """The events.valid[partition] batch messages at ``offsets`` (ascending), read from the topic."""
        if self.read_valid is None:
            raise RuntimeError(f"identity: held rows of {self.valid_name}[{partition}] refer to its messages, and "
                               f"this worker has no reader of the topic: run the device side with its read_valid "
                               f"(stream.agents.identity.device_stage)")
        got = dict(await self.read_valid(partition, offsets[0], offsets[-1] + 1))
        out: dict[int, Message] = {}
        for at in offsets:
            if at not in got:
                raise RuntimeError(f"identity: rows held from {self.valid_name}[{partition}]@{at} cannot be read "
                                   f"back: the offset is no longer in the topic (its retention deleted it while the "
                                   f"rows were held); keep topics.retention_days well above the longest stop of a "
                                   f"worker, or reset the identity state of the partition")
            b = EventBatch.decode(got[at])
            out[at] = Message(b.lines, b.keys, b.uuids, b.segment)
        log.info("identity: held rows of %s[%d] read back from %d messages (offsets %d-%d)", self.valid_name,
                 partition, len(offsets), offsets[0], offsets[-1])
        return out

    async def batch(self, out: EventBatch, partition: int, offset: int, timestamp_ms: int,
                    index: Sequence[int] | None = None) -> EventBatch:
        """The accepted batch ``out`` (read at ``offset``) with ids and user fields; rejected rows dead-lettered.
        ``index``: per row of ``out``, its index in the events.valid message (held rows are then references to
        it, when the stage can read the topic back)."""
        await self._rollback(partition, offset)
        # a bound of 0 holds nothing new, and lets go what was held before the setting changed
        source, source_offsets = out.source_of_events()
        size = HeldRows.size(out.lines) if self.read_valid is not None and index is not None else 0
        by_ref = index if size and (self.held.fits(size) or (partition, offset) in self.held.batches) else None
        hold = Hold(timestamp_ms, self.hold_ms, out.hour, str(source), source_offsets, out.keys, out.uuids,
                    out.segment, out.segment_source, offset, by_ref)
        res = resolve_batch(out.lines, out.times, out.project, partition, format_ms(timestamp_ms),
                            lambda keys: self.table.get_many(partition, keys), self.max_properties_bytes, hold)
        if res.held_rows:
            assert by_ref is not None
            same = len(by_ref) == 0 or by_ref[-1] == len(by_ref) - 1     # no row of the message dropped before
            self.held.put(partition, offset, Message(out.lines, out.keys, out.uuids, out.segment,
                                                     None if same else {m: j for j, m in enumerate(by_ref)}),
                          len(res.held_rows), size)
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
                        offset, size, self.max_properties_bytes)
        if res.rejected:
            now = self.clock.now_ms()
            for i, err in res.rejected:
                why = Rejected(Reason(err.reason), err.field, f"{err.detail} (identity stage; source "
                               f"{source}@{source_offsets[i]})")
                await self.send_dead(deadletter.encode(why, self.valid_name, partition, offset, timestamp_ms, None,
                                                       out.lines[i], now, self.max_request_bytes // 2))
                metrics.EVENTS_DEAD_LETTERED.labels("identity", err.reason).inc()
        if res.rejected or res.held or res.replayed:
            out = out.select(res.keep, out.origin)
        out.lines = res.lines
        if out.lines and self.on_accepted is not None:    # the batch the dedupe stage sends to events.accepted next
            await self.on_accepted(partition, [out], [res.seen])
        if res.links:
            by_part: dict[int, list] = {}
            for link in res.links:
                by_part.setdefault(partition_for(link.user, self.partitions), []).append(link)
            for q, links in by_part.items():
                await self.send_links(enc.encode(Links(partition, offset, links)), q)
            metrics.IDENTITY_LINKS.inc(len(res.links))
            crash_point("identity.links_sent")
        return out


class UserStage:
    """The user side: per identity.links message, decide, send merges and remaps and wait for Kafka to have
    them, then write the state (see ``stream.identity.users`` for why this order)."""

    def __init__(self, store: Store, send_valid: Send, send_merges: Send, dead_letter: DeadLetter, links_name: str,
                 *, answer: bool):
        self.table, self.send_valid, self.send_merges, self.dead_letter = store, send_valid, send_merges, dead_letter
        self.links_name, self.answer = links_name, answer

    async def handle(self, event: Any) -> None:
        """One identity.links message (``.value``, ``.message.partition`` and ``.offset``)."""
        msg = event.message
        try:
            message = dec_links(event.value)
        except Exception as exc:   # not a links message
            await self.dead_letter(event, exc)
            return
        p = msg.partition
        await pause_point("identity.links_read")    # a test holds the user side's answers here
        d = decide(message, lambda keys: self.table.get_many(p, keys), answer=self.answer)
        if d.skipped:
            return
        sent = []
        for vp, remaps in d.remaps.items():
            sent.append(await self.send_valid(encode_remaps(remaps), vp))
        for (project, hour), ms in group_merges(d.merges).items():
            n = len(ms)
            name = self.links_name
            batch = EventBatch(project, hour, Origin(name, p, msg.offset), offsets=[msg.offset] * n,
                               keys=[b""] * n, times=[m.merge_server_time for m in ms],
                               uuids=[uuid5_bytes(f"{name}/{p}/{msg.offset}/{i}") for i in range(n)],
                               lines=[m.line() for m in ms], source=Source(name, p))
            sent.append(await self.send_merges(batch.encode(), 0))
        for fut in sent:
            await fut
        crash_point("identity.merges_sent")
        metrics.IDENTITY_MERGES.inc(len(d.merges))
        await self.table.write(p, d.writes)
        crash_point("identity.users_written")


def held_source(valid_name: str) -> str:
    """The source name of the rows the device side held and let go: ``<events.valid>.held``. Their source offsets
    count the rows released on the partition, apart from the offsets of the sources the events came from (a held
    row goes out after later rows of its source, which the exporter would take for a replay)."""
    return f"{valid_name}.held"


def released_batches(released: Released, origin: Origin, source: str) -> list[EventBatch]:
    """The released rows as batches of one project, hour and Segment source each, in order."""
    out: list[EventBatch] = []
    b: EventBatch | None = None
    for row, line, offset in released.rows:
        t = row.time
        hour = t - t % HOUR_MS
        if b is None or b.hour != hour or b.project != row.project or b.segment_source != row.segment_source:
            b = EventBatch(row.project, hour, origin, source=Source(source, origin.partition),
                           segment_source=row.segment_source)
            out.append(b)
            offsets, keys, times, uuids, lines, segment = b.offsets, b.keys, b.times, b.uuids, b.lines, b.segment
        offsets.append(offset)
        keys.append(row.key)
        times.append(t)
        uuids.append(row.uuid)
        lines.append(line)
        segment.append(row.segment)
    for b in out:
        if not any(b.segment):
            b.segment = []
    return out
