"""Reads of a topic to its end against the broker when each fetch takes 1 s, longer than the polls of 300 ms after
which a read used to take the broker's silence for the end: every record up to the end is read, and the ends found
are those of the records written (the local broker reports its end offsets short: a partition of several batches
reads as fewer)."""

import asyncio

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from stream import kafka

pytestmark = pytest.mark.integration

SLOW = {"fetch_min_bytes": 50 << 20, "fetch_max_wait_ms": 1000}
"""Consumer settings that make the broker hold each fetch 1 s (it waits for 50 MB that never come)."""


async def write(settings, topic, counts):
    """``counts[p]`` records to partition p of a new topic: one batch each for half of them, then one batch of the
    rest (the local broker reports the end offset of a partition as one past the first offset of its last batch)."""
    bootstrap = settings.kafka.bootstrap_servers
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, len(counts), 1)])
    finally:
        await admin.close()
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=50)
    await p.start()
    try:
        for partition, n in enumerate(counts):
            for i in range(n // 2):
                await p.send_and_wait(topic, b"v%d" % i, partition=partition)
            await asyncio.gather(*[await p.send(topic, b"v%d" % i, partition=partition) for i in range(n // 2, n)])
    finally:
        await p.stop()


def test_the_end_offsets_of_a_topic_are_past_its_last_records_when_the_broker_answers_slower_than_the_polls(
        deployment):
    settings, _ = deployment
    topic = settings.topics.prefix + "ends"
    asyncio.run(write(settings, topic, [10, 0, 7]))
    assert asyncio.run(kafka.end_offsets(settings, topic, **SLOW)) == {0: 10, 1: 0, 2: 7}
    assert asyncio.run(kafka.end_offsets(settings, topic)) == {0: 10, 1: 0, 2: 7}
    assert asyncio.run(kafka.end_offsets(settings, settings.topics.prefix + "none")) == {}


def test_read_all_reads_every_record_of_a_topic_when_the_broker_answers_slower_than_the_polls(deployment):
    settings, _ = deployment
    topic = settings.topics.prefix + "all"
    asyncio.run(write(settings, topic, [10, 0, 7]))
    got = asyncio.run(kafka.read_all(settings, topic, **SLOW))
    assert sorted((r.partition, r.offset, r.value) for r in got) == (
        [(0, i, b"v%d" % i) for i in range(10)] + [(2, i, b"v%d" % i) for i in range(7)])


def test_the_dead_letters_listed_are_every_one_when_the_broker_answers_slower_than_the_polls(deployment):
    """stream deadletters and GET /admin/deadletters: all of them, and the last ones of each partition."""
    from stream.deadletters import read_dead_letters
    from stream.events import deadletter
    from stream.kafka import ensure_topics
    settings, _ = deployment
    topic = settings.topics.name("dead_letter")

    async def go():
        await ensure_topics(settings)
        p = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
        await p.start()
        try:
            for i in range(6):
                await p.send_and_wait(topic, deadletter.not_a_batch("t", 0, i, 1000 + i, None, b"x%d" % i,
                                                                    ValueError("bad"), 100))
        finally:
            await p.stop()
        every = [d async for d in read_dead_letters(settings, **SLOW)]
        last = [d async for d in read_dead_letters(settings, last=2, **SLOW)]
        return [d["offset"] for d in every], [d["offset"] for d in last]
    assert asyncio.run(go()) == (list(range(6)), [4, 5])


def test_a_consumer_started_before_its_topic_exists_is_assigned_every_partition_once_the_topic_is_created(deployment):
    """A tail that starts before the worker has created the topic it follows (the demo's tail of the import files,
    a console reading a topic not written yet) finds the topic's partitions at its next try, not only when the
    client's background metadata refresh comes round (every 5 minutes)."""
    settings, _ = deployment
    topic = settings.topics.prefix + "later"

    async def run():
        from aiokafka import AIOKafkaConsumer
        c = AIOKafkaConsumer(**kafka.client_args(settings.kafka), enable_auto_commit=False)
        await c.start()
        try:
            assert await kafka.assign_from_beginning(c, topic) is False
            await write(settings, topic, [2, 3])
            assert await kafka.assign_from_beginning(c, topic) is True
            got = [r async for r in kafka.records_to_end(c)]
            return sorted((r.partition, r.offset) for r in got)
        finally:
            await c.stop()

    assert asyncio.run(run()) == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]
