"""The batch record of the internal topics (schemas/event_batch.avsc) and how batches are formed.

One Kafka message carries many events of one project, one target partition and
one server_upload_time hour, so faust's per-message cost is paid once per batch
and the exporter writes a batch's rows without decoding them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator

from stream.events import avro
from stream.events.normalize import Normalized
from stream.events.partitioning import partition_for
from stream.events.timefmt import hour_start


@dataclass(frozen=True, slots=True)
class Origin:
    """Source coordinates: ``topic[partition]@offset``."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(slots=True)
class EventBatch:
    project: int
    hour: int
    origin: Origin
    offsets: list[int] = field(default_factory=list)
    keys: list[bytes] = field(default_factory=list)
    times: list[int] = field(default_factory=list)
    uuids: list[bytes] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.lines)

    def encode(self) -> bytes:
        return avro.encode("event_batch", {
            "project": self.project, "hour": self.hour,
            "origin": {"topic": self.origin.topic, "partition": self.origin.partition, "offset": self.origin.offset},
            "offsets": self.offsets, "keys": self.keys, "times": self.times, "uuids": self.uuids,
            "events": b"\n".join(self.lines),
        })

    @classmethod
    def decode(cls, data: bytes) -> "EventBatch":
        r = avro.decode("event_batch", data)
        o = r["origin"]
        events = r["events"]
        return cls(project=r["project"], hour=r["hour"], origin=Origin(o["topic"], o["partition"], o["offset"]),
                   offsets=r["offsets"], keys=r["keys"], times=r["times"], uuids=r["uuids"],
                   lines=events.split(b"\n") if events else [])

    def select(self, mask: list[bool], origin: Origin) -> "EventBatch":
        """The events whose mask is true, as a batch derived from ``origin``."""
        return EventBatch(
            project=self.project, hour=self.hour, origin=origin, offsets=[],
            keys=[k for k, m in zip(self.keys, mask) if m], times=[t for t, m in zip(self.times, mask) if m],
            uuids=[u for u, m in zip(self.uuids, mask) if m], lines=[ln for ln, m in zip(self.lines, mask) if m])


def group(events: Iterable[tuple[int, Normalized]], topic: str, partition: int, partitions: int,
          max_events: int) -> Iterator[tuple[int, EventBatch]]:
    """(target partition, batch) for events read from ``topic[partition]``, in offset order.

    ``events`` are (source offset, event). Each batch holds one project, one hour
    and at most ``max_events`` events, all for one target partition (Kafka's
    default partitioner on the event's device_id), in their source order.
    """
    open_: dict[tuple[int, int, int], EventBatch] = {}
    for offset, ev in events:
        target = partition_for(ev.partition_key, partitions)
        hour = hour_start(ev.upload_ms)
        k = (target, ev.project, hour)
        b = open_.get(k)
        if b is None:
            b = open_[k] = EventBatch(ev.project, hour, Origin(topic, partition, offset))
        b.offsets.append(offset)
        b.keys.append(ev.dedupe_key)
        b.times.append(ev.upload_ms)
        b.uuids.append(ev.uuid)
        b.lines.append(ev.line)
        b.origin = Origin(topic, partition, offset)
        if len(b.lines) >= max_events:
            del open_[k]
            yield target, b
    for (target, _, _), b in open_.items():
        yield target, b
