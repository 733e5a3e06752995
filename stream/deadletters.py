"""Reading the dead-letter topic: the latest records, those since a time, and following new ones."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from stream import kafka
from stream.events import deadletter
from stream.settings import Settings


def _consumer(settings: Settings, **consumer: Any) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(**{**kafka.client_args(settings.kafka), "enable_auto_commit": False, **consumer})


async def _partitions(c: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    return [TopicPartition(topic, p) for p in sorted(await kafka.partitions(c, topic))]


async def read_dead_letters(settings: Settings, *, since_ms: int | None = None, last: int | None = None,
                            follow: bool = False, **consumer: Any) -> AsyncIterator[dict[str, Any] | None]:
    """Dead letters, oldest first: those rejected since ``since_ms`` (the broker's time index finds where to
    start; a broker without one is read from the beginning), or the ``last`` ones of each partition, or all, up to
    the topic's end offsets as they are when the read starts, however slowly the broker answers
    (``stream.kafka.to_end``); with ``follow``, then None once caught up, then every new one as it arrives, until
    cancelled. ``consumer``: more aiokafka consumer settings."""
    topic = settings.topics.name("dead_letter")
    c = _consumer(settings, **consumer)
    await c.start()
    try:
        tps = await _partitions(c, topic)
        if not tps:
            return
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        if since_ms is not None:
            found = await c.offsets_for_times({tp: since_ms for tp in tps})
            for tp, at in found.items():
                if at is not None:
                    c.seek(tp, at.offset)
        elif last is not None:
            begin, end = await c.beginning_offsets(tps), await c.end_offsets(tps)
            for tp in tps:
                # end offsets may be reported short (Tansu): then a few more than ``last`` are read, never fewer
                c.seek(tp, max(begin[tp], end[tp] - last))
        async for m in kafka.records_to_end(c):
            d = deadletter.decode(m.value)
            if since_ms is None or d["rejected_at"] >= since_ms:
                yield d
        if follow:
            yield None
        while follow:
            for recs in (await c.getmany(timeout_ms=1000)).values():
                for m in recs:
                    yield deadletter.decode(m.value)
    finally:
        await kafka.stop_all(c)
