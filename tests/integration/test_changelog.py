"""State tables hand their changelog records to the Kafka producer itself, on the local broker.

faust commits an agent's offsets after ``producer.flush()``; that flush drains the Kafka producer but gives up on
faust's own buffer once a message has waited there 0.1 s. A changelog record must therefore never sit in that
buffer: once a write returns, the record is in the producer, and the flush before a commit delivers it.
"""

import asyncio

import pytest
from faust.types import TP

from stream.app import build_app
from stream.dedup.policy import decode_changelog, encode_changelog, encode_value
from stream.kafka import ensure_topics, read_all
from stream.topics import dedupe_changelog, identity_changelog

pytestmark = pytest.mark.integration


def test_a_written_batch_is_on_the_broker_after_the_flush_that_precedes_a_commit(deployment):
    settings = deployment[0]
    asyncio.run(ensure_topics(settings))
    app = build_app(settings)
    dedupe, identity = app.tables["dedupe"], app.tables["identity"]
    writes = [(b"424242/device-1/ins-1", encode_value(1_709_967_600_000, b"u" * 16))]

    async def write_and_flush():
        await app.producer.start()
        try:
            await dedupe.write_batch(1, writes, b"valid/1@7", encode_changelog(writes))
            assert app.producer.buffer.size == 0      # not in faust's buffer, which a flush may leave behind
            await identity.write(0, {b"k": b"v", b"gone": None})
            assert app.producer.buffer.size == 0
            await app.producer.flush()
        finally:
            await app.producer.stop()

    asyncio.run(write_and_flush())
    (rec,) = asyncio.run(read_all(settings, dedupe_changelog(settings)))
    assert (rec.partition, rec.key, decode_changelog(rec.value)) == (1, b"valid/1@7", writes)
    assert [(r.partition, r.key, r.value) for r in asyncio.run(read_all(settings, identity_changelog(settings)))] == [
        (0, b"k", b"v"), (0, b"gone", None)]
    # the state knows how far its changelog goes: recovery starts there
    assert dedupe.data.persisted_offset(TP(dedupe_changelog(settings), 1)) == rec.offset
    assert dedupe.get_many(1, [writes[0][0]]) == [writes[0][1]]
