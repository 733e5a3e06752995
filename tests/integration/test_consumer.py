"""The worker's consumer seeks a partition without a committed offset back to its beginning, on the real broker."""

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from stream.consumer import seek_to_committed
from stream.kafka import ensure_topics

pytestmark = pytest.mark.integration


async def _fetched_three_then_sought(settings, seek):
    """Fetch the first three records of a fresh topic in a group that never committed, then ``seek``; the
    position after it."""
    await ensure_topics(settings)
    topic = settings.topics.name("identity_links")
    p = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    await p.start()
    try:
        for i in range(3):
            await p.send_and_wait(topic, b"m%d" % i, partition=0)
    finally:
        await p.stop()
    c = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka.bootstrap_servers, group_id=topic + "-g",
                         auto_offset_reset="earliest", enable_auto_commit=False)
    await c.start()
    try:
        tp = TopicPartition(topic, 0)
        got = []
        while len(got) < 3:
            got += (await c.getmany(tp, timeout_ms=1000)).get(tp, [])
        assert [m.value for m in got] == [b"m0", b"m1", b"m2"] and await c.position(tp) == 3
        await seek(c)
        return await c.position(tp)
    finally:
        await c.stop()


def test_a_partition_without_a_committed_offset_is_sought_to_its_beginning(deployment):
    assert asyncio.run(_fetched_three_then_sought(deployment[0], seek_to_committed)) == 0


def test_aiokafkas_own_seek_to_committed_leaves_such_a_partition_where_the_fetcher_was(deployment):
    """Why ``stream.consumer`` exists: records fetched while faust recovers its tables are dropped and never read
    again (this test fails once aiokafka seeks such partitions itself; stream.consumer can then go)."""
    assert asyncio.run(_fetched_three_then_sought(deployment[0], lambda c: c.seek_to_committed())) == 3
