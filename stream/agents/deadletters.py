"""What the faust agents do with a message of their internal topic that they cannot decode."""

from __future__ import annotations

import faust

from stream import metrics
from stream.events.deadletter import not_a_batch
from stream.events.normalize import Reason


async def keep_undecodable(dead: faust.TopicT, event: faust.EventT, exc: Exception, stage: str,
                           max_value_bytes: int) -> None:
    """Keep the message in the dead-letter topic (never retried: the same bytes fail the same way) and count it
    under ``stage``; only stream writes these topics, so such a message is a bug or a stranger's write."""
    msg = event.message
    await dead.send(key=msg.key, value=not_a_batch(msg.topic, msg.partition, msg.offset, int(msg.timestamp * 1000),
                                                   msg.key, event.value, exc, max_value_bytes))
    metrics.EVENTS_DEAD_LETTERED.labels(stage, Reason.INVALID_BATCH.value).inc()
