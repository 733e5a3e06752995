"""The worker's consumer, on the real broker: a partition without a committed offset is sought back to its beginning,
the end offsets recovery reads up to are checked by fetching, and an agent reads back what the consumer passed
over."""

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faust.types import TP
from prometheus_client import REGISTRY

from stream.agents.contiguous import Contiguous, read_range
from stream.app import build_app
from stream.consumer import read_ends, seek_to_committed
from stream.kafka import client_args, ensure_topics

pytestmark = pytest.mark.integration


async def _records_on_partition_0(settings, n):
    """The name of a fresh topic of two partitions (identity.links) with ``n`` records on its partition 0."""
    await ensure_topics(settings)
    topic = settings.topics.name("identity_links")
    p = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    await p.start()
    try:
        for i in range(n):
            await p.send_and_wait(topic, b"m%d" % i, partition=0)
    finally:
        await p.stop()
    return topic


async def _fetched_three_then_sought(settings, seek):
    """Fetch the first three records of a fresh topic in a group that never committed, then ``seek``; the
    position after it."""
    topic = await _records_on_partition_0(settings, 3)
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


async def _ends_of_five_and_none(settings, reported):
    topic = await _records_on_partition_0(settings, 5)
    return await read_ends(client_args(settings.kafka), {TP(topic, 0): reported[0], TP(topic, 1): reported[1]})


@pytest.mark.parametrize("reported", [(0, 0), (3, 0), (5, 0)])
def test_an_end_offset_reported_short_is_read_past_to_the_last_record(deployment, reported):
    """Partition 0 holds 5 records, partition 1 none: whatever end the broker reports up to the real one, the
    end found by fetching is 5 and 0."""
    settings = deployment[0]
    topic = settings.topics.name("identity_links")
    assert asyncio.run(_ends_of_five_and_none(settings, reported)) == {TP(topic, 0): 5, TP(topic, 1): 0}


def test_an_end_offset_reported_short_is_read_past_to_the_last_record_when_the_broker_answers_slower_than_polls(
        deployment):
    """The broker holds each fetch 1 s (it waits for 50 MB that never come), far longer than the polls: the end found
    by fetching is still 5 and 0."""
    settings = deployment[0]
    topic = settings.topics.name("identity_links")
    slow = {**client_args(settings.kafka), "fetch_min_bytes": 50 << 20, "fetch_max_wait_ms": 1000}

    async def ends():
        await _records_on_partition_0(settings, 5)
        return await read_ends(slow, {TP(topic, 0): 2, TP(topic, 1): 0})
    assert asyncio.run(ends()) == {TP(topic, 0): 5, TP(topic, 1): 0}


def test_an_agent_reads_back_what_the_consumer_passed_over_and_nothing_else(deployment):
    """``stream.agents.contiguous``: from where the last seek left a partition, a record past the next expected
    offset brings the records in between, read from Kafka; a record that comes again brings nothing."""
    settings = deployment[0]
    topic = asyncio.run(_records_on_partition_0(settings, 10))
    app = build_app(settings)
    gaps = Contiguous(app, topic, client_args(settings.kafka), "identity")

    def missed(offset):
        return [(r.message.partition, r.message.offset, r.message.key, r.value)
                for r in asyncio.run(gaps.missed(0, offset))]

    def read_back():
        return REGISTRY.get_sample_value("stream_agent_records_read_back_total", {"stage": "identity"}) or 0

    before = read_back()
    app.sought({TP(topic, 0): 2, TP(topic, 1): 0, TP("another", 0): 0})
    assert missed(2) == []                                              # where the seek left it
    assert missed(5) == [(0, 3, None, b"m3"), (0, 4, None, b"m4")]      # 3 and 4 passed over
    assert missed(6) == []
    assert missed(4) == [] and missed(5) == [] and missed(6) == []      # again after a seek back: no gap
    app.sought({TP(topic, 0): 8})
    assert missed(9) == [(0, 8, None, b"m8")]                           # a new seek: from where it left it
    assert read_back() - before == 3


def test_a_read_back_that_cannot_reach_its_end_stops_with_a_message(deployment):
    settings = deployment[0]
    topic = asyncio.run(_records_on_partition_0(settings, 3))
    with pytest.raises(TimeoutError, match=rf"offsets 1-9 of {topic}\[0\] could not be read back within 1s "
                                           r"\(read up to 2\)"):
        asyncio.run(read_range(client_args(settings.kafka), topic, 0, 1, 10, timeout_s=1))
