"""The dead-letter record (schemas/dead_letter.avsc): the original bytes, a reason code, the field, the source.

The original bytes are kept as they came, except credentials: the value of a ``writeKey`` or ``api_key`` field
is replaced by ``"[redacted]"`` (``stream.redact``), so a rejected Segment call never stores its write key.
"""

from __future__ import annotations

from typing import Any

from stream.events import avro
from stream.events.normalize import Reason, Rejected
from stream.redact import redact_json


def encode(rejected: Rejected, topic: str, partition: int, offset: int, timestamp_ms: int,
           key: bytes | None, value: bytes | None, rejected_at_ms: int, max_value_bytes: int) -> bytes:
    return avro.encode("dead_letter", {
        "reason": rejected.reason.value, "field": rejected.field, "detail": rejected.detail,
        "topic": topic, "partition": partition, "offset": offset, "timestamp": timestamp_ms,
        "key": key, "value": redact_json(value[:max_value_bytes]) if value is not None else None,
        "rejected_at": rejected_at_ms,
    })


def decode(data: bytes) -> dict[str, Any]:
    return avro.decode("dead_letter", data)


def not_a_batch(topic: str, partition: int, offset: int, timestamp_ms: int, key: bytes | None, value: bytes | None,
                exc: Exception, max_value_bytes: int) -> bytes:
    """The dead letter of a message on an internal topic that is not an EventBatch."""
    import time
    why = Rejected(Reason.INVALID_BATCH, None, f"the message is not an EventBatch (schemas/event_batch.avsc): "
                   f"{type(exc).__name__}: {exc}. Only stream and its HTTP API write to this topic.")
    return encode(why, topic, partition, offset, timestamp_ms, key, value, time.time_ns() // 1_000_000,
                  max_value_bytes)
