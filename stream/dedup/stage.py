"""The dedupe stage: events.valid -> events.accepted, one batch message at a time.

Per message:

1. a remap message of the identity stage (when identity is on) updates the device state, and that is all;
2. anything else must be a batch (``EventBatch``): a message that is not one goes to the dead-letter topic;
3. the batch's keys are read in one multi-get, ``policy.decide`` says which events to keep and what to remember,
   and those writes go to the state in one WriteBatch with one changelog record (crash point
   ``dedupe.state_written``);
4. the events kept, as a batch derived from the message's offset, go through the identity stage's device side
   (ids and user fields, on the same partition), then to events.accepted, split so that each message stays within
   the producer's limit (``dedupe.sent``). Without the identity stage their rows are never split into lines: they
   go from the message into the new one in runs (``ReadBatch.select_encoded``).

A replay of the message (a crash before the commit of its offset) decides the same: the state remembers each
first occurrence with its uuid, and a replayed event is not a duplicate of itself; the exporter drops the rows it
has already written by their source offsets.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from itertools import compress
from typing import Any, Protocol

from stream import metrics
from stream.crashpoints import crash_point
from stream.dedup.policy import decide, encode_changelog
from stream.events.batch import EventBatch, Origin, ReadBatch


class Store(Protocol):
    def get_many(self, partition: int, keys: list[bytes]) -> list[bytes | None]: ...

    async def write_batch(self, partition: int, writes: list[tuple[bytes, bytes]], changelog_key: bytes,
                          changelog_value: bytes) -> None: ...


class Device(Protocol):
    """The identity stage's device side (``stream.identity.stage.DeviceStage``)."""

    async def remaps(self, value: bytes, partition: int, offset: int) -> bool: ...

    async def batch(self, out: EventBatch, partition: int, offset: int, timestamp_ms: int,
                    index: Sequence[int] | None = None) -> EventBatch: ...


Send = Callable[[bytes, int], Awaitable[Any]]
"""(value, partition): hand a message to the producer."""
DeadLetter = Callable[[Any, Exception], Awaitable[None]]
"""(record, why): keep a message that is not a batch in the dead-letter topic."""


class DedupeStage:
    """The dedupe engine of one worker. ``handle`` takes records shaped as faust's events: ``.value`` and
    ``.message`` (``topic``, ``partition``, ``offset``, ``timestamp`` in seconds, ``key``)."""

    def __init__(self, store: Store, send_accepted: Send, dead_letter: DeadLetter, valid_name: str, window_ms: int,
                 max_request_bytes: int, device: Device | None = None):
        self.store, self.send_accepted, self.dead_letter = store, send_accepted, dead_letter
        self.valid_name, self.window_ms, self.max_request_bytes, self.device = (
            valid_name, window_ms, max_request_bytes, device)

    async def handle(self, event: Any) -> None:
        """One events.valid message: a batch, or a remap message of the identity stage."""
        msg = event.message
        crash_point("dedupe.received")
        if self.device is not None and await self.device.remaps(event.value, msg.partition, msg.offset):
            return
        try:
            batch = ReadBatch.read(event.value)
        except Exception as exc:  # not a batch
            await self.dead_letter(event, exc)
            return
        origin = Origin(self.valid_name, msg.partition, msg.offset)
        batch.arrived_at(origin)
        d = decide(batch.keys, batch.times, batch.uuids, self.store.get_many(msg.partition, batch.keys),
                   self.window_ms)
        if d.writes:
            await self.store.write_batch(msg.partition, d.writes, str(origin).encode(), encode_changelog(d.writes))
            crash_point("dedupe.state_written")
        if self.device is None:   # the kept rows go on as they came, never split into lines
            messages, accepted = batch.select_encoded(d.keep, origin, self.max_request_bytes // 2)
        else:
            out = batch.select(d.keep, origin)
            if out.lines:
                out = await self.device.batch(out, msg.partition, msg.offset, int(msg.timestamp * 1000),
                                              list(compress(range(len(d.keep)), d.keep)))
            # the identity stage grew the rows after the batch was sized: keep each message within the
            # producer's limit (the parts keep their events' source offsets, so replays stay harmless)
            messages = [part.encode() for part in out.split(self.max_request_bytes // 2)] if out.lines else []
            accepted = len(out.lines)
        for value in messages:
            await self.send_accepted(value, msg.partition)
        if messages:
            crash_point("dedupe.sent")
        metrics.DEDUPE_EVENTS.inc(len(batch))
        metrics.DEDUPE_DUPLICATES.inc(d.duplicates)
        metrics.DEDUPE_ACCEPTED.inc(accepted)
