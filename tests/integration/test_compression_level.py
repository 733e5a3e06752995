"""kafka.compression_level on the local broker: what the producers send is compressed at the level set."""

import asyncio

import aiokafka.codec
import aiokafka.record.default_records as py_records
import cramjam
import pytest

from stream import kafka
from stream.app import build_app
from stream.dedup.policy import encode_changelog, encode_value
from stream.kafka import ensure_topics, read_all
from stream.topics import dedupe_changelog

pytestmark = pytest.mark.integration

MODULES = [py_records]
try:
    import aiokafka.record._crecords.default_records as c_records
    MODULES.append(c_records)
except ImportError:  # aiokafka without its extensions
    pass


@pytest.fixture
def fetched(monkeypatch):
    """The compressed records sections the consumers decompress in this test (aiokafka's readers call their
    module's zstd_decode); aiokafka's encoders put back afterwards."""
    seen: list[bytes] = []
    monkeypatch.setattr(kafka, "_APPLIED", [])
    for m in MODULES:
        monkeypatch.setattr(m, "zstd_encode", aiokafka.codec.zstd_encode)
        real = m.zstd_decode

        def decode(data, real=real):
            seen.append(bytes(data))
            return real(data)
        monkeypatch.setattr(m, "zstd_decode", decode)
    return seen


def _at_level(section: bytes, level: int) -> bool:
    return section == bytes(cramjam.zstd.compress(bytes(cramjam.zstd.decompress(section)), level=level))


def _value(n: int) -> bytes:
    return b"".join(b'{"event_type":"page %d","user_id":"user-%d","n":%d}\n' % (i % 37, i % 1013, i)
                    for i in range(n))


def test_a_producer_built_by_stream_sends_its_batches_at_the_level(deployment, fetched):
    settings = deployment[0]
    topic = settings.topics.name("dead_letter")
    asyncio.run(ensure_topics(settings))
    assert settings.kafka.compression_level == 2

    async def send() -> None:
        p = kafka.producer(settings.kafka)
        await p.start()
        try:
            await p.send_and_wait(topic, _value(3000), partition=0)
        finally:
            await p.stop()

    asyncio.run(send())
    (rec,) = asyncio.run(read_all(settings, topic))
    assert rec.value == _value(3000)
    (section,) = fetched
    assert _at_level(section, 2)
    assert not _at_level(section, 3)       # aiokafka's own level makes other bytes of these records


def test_the_workers_changelog_batches_are_sent_at_the_level(deployment, fetched):
    settings = deployment[0]
    asyncio.run(ensure_topics(settings))
    app = build_app(settings)
    writes = [(b"424242/device-%d/ins-%d" % (i % 50, i), encode_value(1_709_967_600_000 + i, b"u" * 16))
              for i in range(2000)]

    async def write() -> None:
        await app.producer.start()
        try:
            await app.tables["dedupe"].write_batch(1, writes, b"valid/1@7", encode_changelog(writes))
            await app.producer.flush()
        finally:
            await app.producer.stop()

    asyncio.run(write())
    (rec,) = asyncio.run(read_all(settings, dedupe_changelog(settings)))
    assert rec.value == encode_changelog(writes)
    (section,) = fetched
    assert _at_level(section, 2)
    assert not _at_level(section, 3)
