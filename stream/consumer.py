"""faust's Kafka consumer, whose seek to the committed offsets also covers partitions without a committed offset.

After every rebalance faust's recovery pauses the stream partitions, restores the
tables, then seeks the stream partitions to their committed offsets and resumes
them. Records fetched in between -- the fetcher runs while the changelogs are
read -- are dropped (faust moves its read offset past a record it could not hand
over while the flow was suspended), and the seek is what fetches them again.
aiokafka's ``seek_to_committed`` skips a partition whose committed offset is
missing or 0 (``if offset and offset > 0``), so such a partition resumes where
the fetcher left it, and the records fetched during recovery are lost for good:
the next commit moves past them. That is every partition of a topic whose
consumer group has not committed yet -- events.valid after a crash before the
first commit, identity.links whose first message killed the worker -- and it
lost whole batches of links (and so merges) in the crash tests.

Here such partitions are sought to their beginning, where ``auto_offset_reset =
earliest`` would have started them. Records read again are harmless: every
stage drops what it had already handled (events.valid batches by the export
ledger's source offsets and the identity journal, identity.links messages by
the user side's watermarks).

Even so, a record can still be passed over. In the crash tests a restarted
worker's consumer handed an events.valid batch to faust's conductor as recovery
resumed the stream partitions, and the agent never received it: faust's stream
skips a record it dequeues while its flow control is suspended, or one fetched
in an earlier generation, *and acknowledges it*, so the next commit moves past
it. Each seek therefore records where it left every partition (``App.sought``),
and the agents check that their records follow on from there
(``stream.agents.contiguous``).

Recovery also reads each changelog up to its end offset (the highwater) as
ListOffsets reports it, and stops there. A broker whose answer lags behind its
log (the local Tansu broker: short by about one produce batch) would have a
table restored without its last writes -- for the identity state, a user
adopted or a merge decided again. So the reported end is checked by fetching
from it (``read_ends``): the end is the high watermark of the first fetch
response; on a broker that answers exactly, one empty fetch per recovery.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.drivers import aiokafka as driver
from faust.types import TP

from stream.kafka import fetched_ends, stop_all

log = logging.getLogger(__name__)


async def seek_to_committed(consumer: AIOKafkaConsumer) -> Mapping[Any, int]:
    """Seek every assigned partition to its committed offset, or to its beginning when it has none (or 0)."""
    committed = await consumer.seek_to_committed()
    uncommitted = [tp for tp, offset in committed.items() if not offset or offset < 0]
    if uncommitted:
        await consumer.seek_to_beginning(*uncommitted)
    return committed


async def _seek_and_say_where(consumer: AIOKafkaConsumer) -> tuple[Mapping[Any, int], dict[TP, int]]:
    """``seek_to_committed``, and where it left each partition: its committed offset, or its first offset."""
    committed = await seek_to_committed(consumer)
    uncommitted = [tp for tp, offset in committed.items() if not offset or offset < 0]
    starts = {TP(tp.topic, tp.partition): offset for tp, offset in committed.items() if tp not in uncommitted}
    if uncommitted:
        for tp, offset in (await consumer.beginning_offsets(uncommitted)).items():
            starts[TP(tp.topic, tp.partition)] = offset
    return committed, starts


async def read_ends(client_args: Mapping[str, Any], reported: Mapping[Any, int], poll_ms: int = 500) -> dict[TP, int]:
    """Each partition's end offset as fetching finds it: the ``reported`` end offset, raised to the high watermark of
    the first fetch response for the partition (``stream.kafka.fetched_ends``: a slow broker makes this slower, not
    short; one that answers no fetch for a minute raises ``stream.kafka.ReadStalled``)."""
    ends = {TP(tp.topic, tp.partition): offset for tp, offset in reported.items()}
    if not ends:
        return ends
    c = AIOKafkaConsumer(**{**client_args, "enable_auto_commit": False, "group_id": None})
    await c.start()
    try:
        c.assign([TopicPartition(tp.topic, tp.partition) for tp in ends])
        for tp, offset in ends.items():
            c.seek(TopicPartition(tp.topic, tp.partition), max(offset, 0))
        for tp, end in (await fetched_ends(c, poll_ms)).items():
            key = TP(tp.topic, tp.partition)
            ends[key] = max(ends[key], end)
        for tp, end in ends.items():
            if end != reported.get(tp, end):
                log.info("recovery: %s[%d] ends at offset %d, not %d as the broker reported", tp.topic, tp.partition,
                         end, reported[tp])
        return ends
    finally:
        await stop_all(c)


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    async def seek_to_committed(self) -> Mapping[TP, int]:
        committed, starts = await self.call_thread(_seek_and_say_where, self._ensure_consumer())
        app = self.consumer.app
        if isinstance(app, App):
            app.sought(starts)
        return committed

    async def _highwaters(self, partitions: Any) -> Mapping[TP, int]:
        reported = await super()._highwaters(partitions)
        client_args = getattr(self.consumer.app, "kafka_client_args", None)
        if client_args is None or self.consumer.in_transaction:
            return reported
        return await read_ends(client_args, reported)


class Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(driver.Transport):
    Consumer = Consumer


class App(faust.App):
    """A faust App on the Kafka transport above. ``kafka_client_args``: how to connect a plain aiokafka client
    (``stream.kafka.client_args``), for the recovery's end-offset check; without them the check is skipped.

    ``seeks`` counts the consumer's seeks to the committed offsets and ``starts`` holds where the last one left
    each partition (``stream.agents.contiguous`` reads them)."""

    kafka_client_args: Mapping[str, Any] | None = None
    seeks: int = 0
    starts: dict[TP, int] = {}

    def sought(self, starts: dict[TP, int]) -> None:
        self.starts = starts
        self.seeks += 1

    def _new_transport(self) -> Transport:
        return Transport(self.conf.broker_consumer, self)
