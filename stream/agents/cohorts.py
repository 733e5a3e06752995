"""The cohorts stage's faust agents (wiring only; the work is ``stream.cohorts.stage``).

- The rekey step. With ``cohort_state.rekey_in_identity``, in a worker that also runs the dedupe stage with identity
  on, the identity stage's device side hands it each batch it gives events.accepted (``register_folded``:
  ``DeviceStage.on_accepted``), so each row is rekeyed once it has its ids, not fetched from events.accepted,
  decompressed and decoded a second time; a timer sends
  each events.valid partition's progress for the events.accepted partition of its number (caught up: the group has
  committed events.valid to the end its last fetch read). Otherwise ``cohorts-rekey`` reads events.accepted a take at
  a time (``REKEY_TAKE_MAX`` batches, ``REKEY_TAKE_BYTES``) and sends the take's records, one message per target
  partition (``Rekeyer.take``: the records in the order of the batches, as a message per batch sent them), and the
  timer each events.accepted partition's progress (caught up: the agent has handled every record up to the end).
  Either way, for the projects with cohorts, compact records go to the cohorts topic, the same for the same batches.
  identity.merges, when identity is on, is read by ``cohorts-merges`` into MERGE_OUT records.
- ``cohorts-state`` folds the cohorts topic, a take of messages at a time (``TAKE_MAX``), into the ``cohorts-state``
  table (RocksDB, per partition), each write also a record of its key on the table's compacted changelog
  (``stream.topics.cohorts_changelog``), which the syncs read (``stream.cohorts.changelog``). A record read again
  after a crash or a rebalance is dropped by the source offsets each user's state keeps. faust commits an offset
  once its take is handled and the producer is flushed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import faust
import orjson

from stream import metrics
from stream.agents.contiguous import Contiguous, Record
from stream.agents.takes import take_bursts
from stream.clock import Clock
from stream.cohorts.stage import CohortState, RdictStore, Rekeyer, Sent
from stream.crashpoints import crash_point
from stream.dedup.table import DedupeTable, KeyedChangelog
from stream.events.batch import EventBatch
from stream.identity.device import Seen
from stream.identity.stage import DeviceStage
from stream.kafka import client_args
from stream.settings import Settings
from stream.topics import cohorts_changelog

log = logging.getLogger(__name__)
PROGRESS_INTERVAL_S = 2.0
"""How often each assigned events.accepted partition's progress is looked at (and sent when it moved)."""
TAKE_MAX, TAKE_QUIET_S, TAKE_WITHIN_S = 64, 0.05, 0.5
"""The cohorts topic's messages a take of the state step holds at most, and when it closes: once no message came for
``TAKE_QUIET_S``, or ``TAKE_WITHIN_S`` after its first (``stream.agents.takes``). A user's state is decoded, encoded
and written to its changelog once per take (and partition) rather than once per message."""
REKEY_TAKE_MAX, REKEY_TAKE_BYTES = 32, 512 * 1024
"""The events.accepted batches a take of the rekey step holds at most (closed as the state step's takes are), and
the most bytes of batches whose records go in one message per cohorts partition (a message's records are smaller
than the rows they come from; a larger take sends a message per partition for each part of it): fewer, larger
messages for the producer, the broker and the state step than one per batch and partition."""


def end_read_ms(consumer: object, tp: object) -> int | None:
    """When the faust consumer's last fetch of ``tp`` answered (aiokafka's ``last_poll_timestamp``, the time its
    highwater was read, wall clock ms); None when unknown."""
    try:
        return consumer._thread._ensure_consumer().last_poll_timestamp(tp)  # type: ignore[attr-defined]
    except Exception:          # not assigned any more, or no fetch answered yet
        return None


def committed_offset(consumer: object, tp: object) -> int | None:
    """The offset faust's consumer last committed (or found committed) for ``tp``; None when unknown."""
    try:
        return consumer._committed_offset.get(tp)  # type: ignore[attr-defined]
    except Exception:          # a faust that keeps it elsewhere: not caught up, progress by upload times alone
        return None


def register_folded(device: DeviceStage, rekeyer: Rekeyer, send: Callable[[list[Sent]], Awaitable[None]]) -> None:
    """The rekey step in the device side of this worker's dedupe stage (``DeviceStage.on_accepted``): the batches it
    hands to events.accepted are rekeyed as they are, not read back from the topic, decompressed and decoded again.
    A replayed events.valid message hands over the same batches (the identity stage's replays are exact), so the
    same records, which the state step drops by their source offsets. The rows' fields are read from what the device
    side read of them (``seen``, ``stream.identity.device.Seen``), not parsed again."""
    async def rekey_accepted(partition: int, batches: list[EventBatch], seen: list[list[Seen | None]] | None) -> None:
        # a hold let go hands over every part of its rows at once: their records go in a message per cohorts
        # partition for each REKEY_TAKE_BYTES of rows, as the events.accepted reader sends them, never one message
        # the producer would refuse
        start, size = 0, 0
        for i, b in enumerate(batches):
            n = sum(map(len, b.lines))
            if i > start and size + n > REKEY_TAKE_BYTES:
                await send(rekeyer.take([(partition, x) for x in batches[start:i]],
                                        seen[start:i] if seen is not None else None))
                start, size = i, 0
            size += n
        await send(rekeyer.take([(partition, x) for x in batches[start:]],
                                seen[start:] if seen is not None else None))
        crash_point("cohorts.rekeyed")

    device.on_accepted = rekey_accepted


class CohortsTable(KeyedChangelog, DedupeTable):
    """The cohort state: ``stream.cohorts.stage`` keys -> values; each changelog record is one key's."""


def register(app: faust.App, settings: Settings, clock: Clock) -> None:
    """The cohorts stage's agents and table (the syncs themselves are scheduled by ``schedule.run_stage``)."""
    t, c = settings.topics, settings.cohort_state
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    accepted = app.topic(t.name("accepted"), partitions=t.partitions, **raw)
    cohorts_topic = app.topic(t.name("cohorts"), partitions=t.partitions, **raw)
    changelog = app.topic(cohorts_changelog(settings), partitions=t.partitions, internal=True, retention=None,
                          compacting=True, deleting=False, **raw)
    table = app.tables.add(CohortsTable(app, name="cohorts-state", partitions=t.partitions,
                                        changelog_topic=changelog, help="a user's cohort state, the day index",
                                        key_type=bytes, value_type=bytes))
    rekeyer = Rekeyer(settings.cohort_set, t.partitions, int(c.grace_s * 1000))
    state = CohortState(settings.cohort_set, t.partitions, c.state_days, lambda q: RdictStore(table.db(q)))
    accepted_name, cohorts_name = accepted.get_topic_name(), cohorts_topic.get_topic_name()
    args = client_args(settings.kafka)

    handled: dict[int, int] = {}     # events.accepted partition -> the offset after the last record rekeyed

    async def send(sends: list[Sent]) -> None:
        for q, key, value in sends:
            await cohorts_topic.send(key=key, value=value, partition=q)

    # with cohort_state.rekey_in_identity (resolved by the worker command: stream.cohorts.rekey_mode; auto, unresolved,
    # reads events.accepted), the device side of this worker's dedupe stage (identity on) rekeys the batches it hands
    # to events.accepted
    device = getattr(app, "identity_device", None) if c.rekey_in_identity is True else None
    if device is not None:
        read_name = device.valid_name
        register_folded(device, rekeyer, send)
    else:
        read_name = accepted_name

        @app.agent(accepted, name="cohorts-rekey")
        async def rekey(stream: faust.StreamT) -> None:
            gaps = Contiguous(app, accepted_name, args, "cohorts-rekey")
            await gaps.takes(take_bursts(stream, REKEY_TAKE_MAX, TAKE_QUIET_S, TAKE_WITHIN_S,
                                         lambda: clock.now_ms() / 1000), rekey_take)

    async def rekey_take(events: list[faust.EventT | Record]) -> None:
        batches: list[tuple[int, EventBatch]] = []
        ends: dict[int, int] = {}        # partition -> the offset after its last batch in ``batches``
        size = 0
        for event in events:
            try:
                batch = EventBatch.decode(event.value)
            except Exception as exc:     # the exporter dead-letters it; here it has nothing a cohort counts
                log.warning("cohorts: %s[%d]@%d is not an event batch (%s): skipped", accepted_name,
                            event.message.partition, event.message.offset, exc)
                continue
            if batches and size + len(event.value) > REKEY_TAKE_BYTES:
                await rekeyed(batches, ends)
                batches, ends, size = [], {}, 0
            batches.append((event.message.partition, batch))
            ends[event.message.partition] = event.message.offset + 1
            size += len(event.value)
        if batches:
            await rekeyed(batches, ends)

    async def rekeyed(batches: list[tuple[int, EventBatch]], ends: dict[int, int]) -> None:
        await send(rekeyer.take(batches))
        handled.update(ends)
        crash_point("cohorts.rekeyed")

    @app.timer(interval=PROGRESS_INTERVAL_S)
    async def cohorts_progress() -> None:
        """Each assigned events.accepted partition's progress, to every cohorts partition when it moved (folded: the
        events.valid partition's, whose device side sends to the events.accepted partition of its number)."""
        consumer = app.consumer
        starts = getattr(app, "starts", {})     # where each partition was sought to (stream.consumer.App)
        for tp in list(consumer.assignment()):
            if tp.topic != read_name:
                continue
            try:
                high = consumer.highwater(tp)     # None until a fetch answered for the partition
            except Exception:       # not assigned any more
                high = None
            # caught up: the agent has handled every record up to the end (the consumer's position is what it
            # fetched, which may wait in the stream's buffer); the end is the one the consumer's last fetch of the
            # partition answered, stale while it does not fetch it (paused): caught up with it, the partition has
            # passed the time of that fetch, not the clock's (unknown: not caught up)
            if device is None:
                done = handled.get(tp.partition, starts.get(tp))
            else:       # every message of events.valid before the committed offset was handled, its sends flushed
                done = committed_offset(consumer, tp)
                if done is None:
                    done = starts.get(tp)
            read_ms = end_read_ms(consumer, tp)
            caught_up = high is not None and done is not None and done >= high and read_ms is not None
            await send(rekeyer.advance(tp.partition, clock.now_ms(), caught_up, read_ms))

    if settings.identity.enabled:
        merges = app.topic(t.name("identity_merges"), **raw)

        @app.agent(merges, name="cohorts-merges")
        async def merge(stream: faust.StreamT) -> None:
            async for event in stream.events():
                try:
                    lines = EventBatch.decode(event.value).lines
                except Exception as exc:
                    log.warning("cohorts: an identity.merges record is not a batch (%s): skipped", exc)
                    continue
                for line in lines:
                    await send(rekeyer.merge(orjson.loads(line)))

    state_gaps = Contiguous(app, cohorts_name, args, "cohorts-state")

    @app.agent(cohorts_topic, name="cohorts-state")
    async def fold(stream: faust.StreamT) -> None:
        await state_gaps.takes(take_bursts(stream, TAKE_MAX, TAKE_QUIET_S, TAKE_WITHIN_S,
                                           lambda: clock.now_ms() / 1000), fold_take)

    async def fold_take(events: list[faust.EventT | Record]) -> None:
        by_partition: dict[int, list[tuple[bytes | None, bytes]]] = {}
        for event in events:
            by_partition.setdefault(event.message.partition, []).append((event.message.key, event.value))
        for q, records in by_partition.items():
            applied = state.apply(q, records)
            if applied.writes:
                RdictStore(table.db(q)).write(applied.writes)
                await table.send_records(q, applied.writes)
            crash_point("cohorts.state_written")
            await send(applied.sends)
            for outcome in ("applied", "replayed", "expired", "forgotten"):
                if n := getattr(applied, outcome):
                    metrics.COHORT_STATE_RECORDS.labels(outcome).inc(n)



