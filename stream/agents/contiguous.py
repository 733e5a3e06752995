"""Every record of an agent's input, in order: what faust passed over is read from Kafka and handed over first.

faust can pass over a record around a rebalance and acknowledge it anyway, so
that the next commit moves past it (``stream.consumer``): an events.valid batch
lost that way is a batch of events never exported. An agent therefore checks,
partition by partition, that each record follows on from the previous one, or,
for the first record after a seek, from where the seek left the partition
(``stream.consumer.App.starts``). The records of a gap are read with a plain
Kafka consumer and handed to the agent before the record that revealed it. A record that comes
again (a seek back to the committed offset) is handed over again: every stage
drops what it had already handled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping, Sequence
from typing import Any, NamedTuple

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition

from stream import metrics
from stream.kafka import stop_all

log = logging.getLogger(__name__)


class Record(NamedTuple):
    """A record read back, shaped as the agents read faust's events: ``.value`` and ``.message``."""

    value: bytes
    message: Any


class _Message(NamedTuple):
    topic: str
    partition: int
    offset: int
    timestamp: float        # seconds, as faust's
    key: bytes | None
    value: bytes


def gap(expected: int | None, offset: int) -> tuple[int, int] | None:
    """The offsets ``[first, end)`` missing before ``offset`` when ``expected`` was next (None: nothing known)."""
    if expected is None or offset <= expected:
        return None
    return expected, offset


READ_TIMEOUT_S = 120.0


async def read_range(client_args: Mapping[str, Any], topic: str, partition: int, first: int,
                     end: int, timeout_s: float = READ_TIMEOUT_S) -> list[Record]:
    """The records of ``topic[partition]`` from ``first`` up to ``end`` (excluded); offsets the retention deleted
    are skipped (the read starts at the partition's first offset). The record at ``end`` exists (it revealed the
    gap), so the read ends; a broker that does not serve it within ``timeout_s`` raises TimeoutError, and the
    agent stops rather than go on past records it has not had."""
    c = AIOKafkaConsumer(**{**client_args, "enable_auto_commit": False, "group_id": None,
                            "auto_offset_reset": "earliest"})
    await c.start()
    try:
        tp = TopicPartition(topic, partition)
        c.assign([tp])
        c.seek(tp, first)
        out: list[Record] = []
        last = first - 1
        deadline = asyncio.get_running_loop().time() + timeout_s
        while last < end - 1:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"offsets {first}-{end - 1} of {topic}[{partition}] could not be read back within "
                                   f"{timeout_s:.0f}s (read up to {last}): is the broker reachable?")
            for r in (await c.getmany(tp, timeout_ms=500)).get(tp, []):
                last = r.offset
                if r.offset >= end:
                    break
                out.append(Record(r.value, _Message(r.topic, r.partition, r.offset, r.timestamp / 1000, r.key,
                                                    r.value)))
        return out
    finally:
        await stop_all(c)


class Contiguous:
    """The gaps of one agent's input topic (see the module docstring)."""

    def __init__(self, app: faust.App, topic: str, client_args: Mapping[str, Any], stage: str,
                 read: Callable[..., Awaitable[list[Record]]] = read_range):
        self.app, self.topic, self.client_args, self.stage, self.read = app, topic, client_args, stage, read
        self._next: dict[int, int] = {}
        self._seeks = -1

    async def each(self, stream: faust.StreamT, handle: Callable[[Any], Awaitable[None]]) -> None:
        """Hand every record of the agent's ``stream`` to ``handle``, in order: the records passed over before
        one (``missed``) first, then the one itself. The loop is over faust's own iterator, which acknowledges an
        event once ``handle`` has returned for it and for the records read back before it."""
        async for event in stream.events():
            for missed in await self.missed(event.message.partition, event.message.offset):
                await handle(missed)
            await handle(event)

    async def takes(self, takes: AsyncIterable[Sequence[Any]], handle: Callable[[list[Any]], Awaitable[None]]) -> None:
        """Hand the records of the agent's stream to ``handle`` a take at a time (``takes``: its events a take at a
        time, e.g. ``stream.agents.takes.take_bursts``), in order within each partition: the records passed over
        before one (``missed``) first, then the one itself. A take's events are acknowledged once ``handle`` has
        returned for it (when the next take is asked for)."""
        async for events in takes:
            records: list[Any] = []
            for event in events:
                records += await self.missed(event.message.partition, event.message.offset)
                records.append(event)
            await handle(records)

    async def missed(self, partition: int, offset: int) -> list[Record]:
        """The records of ``partition`` before ``offset`` that the agent should have had and did not, in order."""
        seeks = getattr(self.app, "seeks", 0)     # stream.consumer.App counts them
        if seeks != self._seeks:                  # a seek: each partition follows on from where it left it
            self._seeks = seeks
            self._next = {tp.partition: o for tp, o in getattr(self.app, "starts", {}).items()
                          if tp.topic == self.topic}
        missing = gap(self._next.get(partition), offset)
        self._next[partition] = offset + 1
        if missing is None:
            return []
        first, end = missing
        records = await self.read(self.client_args, self.topic, partition, first, end)
        metrics.RECORDS_READ_BACK.labels(self.stage).inc(len(records))
        log.warning("%s: offsets %d-%d of %s[%d] were not handed over by the consumer after its last seek (around a "
                    "rebalance); read back from Kafka: %d records (any handled already are dropped downstream as "
                    "replays)", self.stage, first, end - 1, self.topic, partition, len(records))
        return records

