"""The dead-letter record (schemas/dead_letter.avsc): the original bytes, a reason code, the field, the source.

The original bytes are kept as they came, except credentials: the value of a ``writeKey`` or ``api_key`` field
is replaced by ``"[redacted]"`` (``stream.redact``: on the parsed value when the bytes are JSON, so an escaped field
name is no way around it), so a rejected Segment call never stores its write key. Redaction sees the whole value;
what is kept is then cut to ``max_value_bytes``.
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
        "key": key, "value": redact_json(value)[:max_value_bytes] if value is not None else None,
        "rejected_at": rejected_at_ms,
    })


FILE_ROW = -2
"""The partition of a dead letter from an import file: its topic is ``s3://bucket/key`` and its offset the row
number (0: the whole file)."""


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


def source_of(d: dict[str, Any]) -> str:
    """Where a dead letter's input came from: ``topic[partition]@offset``, or for the HTTP API, which has no
    offsets, the route and the event's index in its request (``http:/2/httpapi event 3``); for an import file, its
    URL and row (``s3://bucket/key#12``)."""
    if d["partition"] == FILE_ROW:
        return f"{d['topic']}#{d['offset']}" if d["offset"] else d["topic"]
    if d["partition"] < 0:
        return f"{d['topic']} event {d['offset']}"
    return f"{d['topic']}[{d['partition']}]@{d['offset']}"


def describe(d: dict[str, Any], value_chars: int = 160) -> str:
    """One line for a person: when, why (reason and field), where from, what is wrong, and the input's start."""
    import time
    at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(d["rejected_at"] // 1000))
    value = d["value"] or b""
    shown = value[:value_chars].decode("utf-8", "backslashreplace")
    more = f"... ({len(value)} bytes)" if len(value) > value_chars else ""
    field = f" {d['field']}" if d.get("field") else ""
    return f"{at}Z {d['reason']}{field} from {source_of(d)}: {d['detail']} | {shown}{more}"


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Dead letters by reason, most frequent first: the count, the sources they came from (topic, or HTTP route)
    with counts, the first and last rejection times, and the latest one's source coordinates and detail."""
    by: dict[str, dict[str, Any]] = {}
    for d in records:
        s = by.get(d["reason"])
        if s is None:
            s = by[d["reason"]] = {"reason": d["reason"], "count": 0, "sources": {}, "first_at": d["rejected_at"],
                                   "last_at": d["rejected_at"], "latest": None}
        s["count"] += 1
        s["sources"][d["topic"]] = s["sources"].get(d["topic"], 0) + 1
        s["first_at"] = min(s["first_at"], d["rejected_at"])
        if d["rejected_at"] >= s["last_at"] or s["latest"] is None:
            s["last_at"] = d["rejected_at"]
            s["latest"] = {"source": source_of(d), "field": d.get("field"), "detail": d["detail"]}
    return sorted(by.values(), key=lambda s: (-s["count"], s["reason"]))
