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
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer
from faust.transport.drivers import aiokafka as driver
from faust.types import TP


async def seek_to_committed(consumer: AIOKafkaConsumer) -> Mapping[Any, int]:
    """Seek every assigned partition to its committed offset, or to its beginning when it has none (or 0)."""
    committed = await consumer.seek_to_committed()
    uncommitted = [tp for tp, offset in committed.items() if not offset or offset < 0]
    if uncommitted:
        await consumer.seek_to_beginning(*uncommitted)
    return committed


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    async def seek_to_committed(self) -> Mapping[TP, int]:
        return await self.call_thread(seek_to_committed, self._ensure_consumer())


class Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(driver.Transport):
    Consumer = Consumer


class App(faust.App):
    """A faust App on the Kafka transport above."""

    def _new_transport(self) -> Transport:
        return Transport(self.conf.broker_consumer, self)
