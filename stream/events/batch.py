"""The batch record of the internal topics (schemas/event_batch.avsc) and how batches are formed.

One Kafka message carries many events of one project, one target partition and
one server_upload_time hour, so faust's per-message cost is paid once per batch
and the exporter writes a batch's rows without decoding them.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from stream.events import avro
from stream.events.normalize import Normalized
from stream.events.partitioning import partition_for, partition_memo
from stream.events.timefmt import HOUR_MS


@dataclass(frozen=True, slots=True)
class Origin:
    """Source coordinates: ``topic[partition]@offset``."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True, slots=True)
class Source:
    """Where events first entered Kafka: ``topic[partition]``; their offsets there identify them."""

    topic: str
    partition: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]"


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
    source: Source | None = None   # None: the events entered Kafka in this batch's origin topic and partition
    segment_source: str = ""       # the Segment source id of the events, "" when not from Segment's API
    segment: list[bytes] = field(default_factory=list)   # per event, its Segment message; [] when none has one

    def __len__(self) -> int:
        return len(self.lines)

    def source_of_events(self) -> tuple[Source, list[int]]:
        """(source, per-event source offsets); a batch written directly to its first topic is its own source, and
        its i-th event's source offset is ``offset * SOURCE_SLOTS + i`` (``own_offsets``)."""
        if self.offsets:
            return self.source or Source(self.origin.topic, self.origin.partition), self.offsets
        return Source(self.origin.topic, self.origin.partition), own_offsets(self.origin.offset, len(self.lines))

    def split(self, max_bytes: int) -> list[EventBatch]:
        """This batch as batches of about ``max_bytes`` of rows at most (an event larger than that goes alone), in
        order. Every part keeps its events' source offsets and the batch's origin, so the exporter tells the parts'
        events apart, and each from a replay. For batches grown after they were sized: the identity stage adds each
        user's properties to the rows, and a batch must stay within the producer's largest message."""
        sizes = [len(ln) + len(k) + PER_EVENT_BYTES for ln, k in zip(self.lines, self.keys)]
        if self.segment:
            sizes = [n + len(m) for n, m in zip(sizes, self.segment)]
        if sum(sizes) + BATCH_HEAD_BYTES <= max_bytes:
            return [self]
        source, offsets = self.source_of_events()
        parts: list[EventBatch] = []
        start, used = 0, BATCH_HEAD_BYTES
        for i, n in enumerate(sizes + [max_bytes]):   # the sentinel closes the last part
            if i == len(sizes) or (i > start and used + n > max_bytes):
                sl = slice(start, i)
                parts.append(EventBatch(self.project, self.hour, self.origin, offsets[sl], self.keys[sl],
                                        self.times[sl], self.uuids[sl], self.lines[sl], source, self.segment_source,
                                        self.segment[sl] if self.segment else []))
                start, used = i, BATCH_HEAD_BYTES
            used += n
        return parts

    def encode(self) -> bytes:
        """Avro binary of schemas/event_batch.avsc, its fields written one after the other here (every field is a
        long, an int, a string or bytes): the bytes fastavro's writer gives (``encode_slowly``, compared by the
        tests), in a third of its time."""
        o = self.origin
        src = self.source or Source(o.topic, o.partition)
        offsets, times = _pack(self.offsets), _pack(self.times)
        keys, uuids = b"\xff".join(self.keys), b"".join(self.uuids)
        segment = b"\xff".join(self.segment) if any(self.segment) else b""
        events = b"\n".join(self.lines)
        long_of, bytes_of, string_of = avro.long_of, avro.bytes_of, avro.string_of
        return b"".join((
            long_of(self.project), long_of(self.hour),
            string_of(o.topic), long_of(o.partition), long_of(o.offset),   # origin
            string_of(src.topic), long_of(src.partition),                   # source
            bytes_of(offsets), offsets, bytes_of(keys), keys, bytes_of(times), times, bytes_of(uuids), uuids,
            string_of(self.segment_source), bytes_of(segment), segment, bytes_of(events), events))

    def encode_slowly(self) -> bytes:
        """``encode`` through fastavro's writer of the schema: the reference the tests compare it with."""
        src = self.source or Source(self.origin.topic, self.origin.partition)
        return avro.encode_with_tail("event_batch", {
            "project": self.project, "hour": self.hour,
            "origin": {"topic": self.origin.topic, "partition": self.origin.partition, "offset": self.origin.offset},
            "source": {"topic": src.topic, "partition": src.partition},
            "offsets": _pack(self.offsets), "keys": b"\xff".join(self.keys), "times": _pack(self.times),
            "uuids": b"".join(self.uuids), "segment_source": self.segment_source,
            "segment": b"\xff".join(self.segment) if any(self.segment) else b""}, b"\n".join(self.lines))

    @classmethod
    def decode(cls, data: bytes) -> EventBatch:
        r = avro.decode("event_batch", data)
        o, src = r["origin"], r["source"]
        times = _unpack(r["times"])
        n = len(times)
        u = r["uuids"]
        origin = Origin(o["topic"], o["partition"], o["offset"])
        source = Source(src["topic"], src["partition"])
        return cls(project=r["project"], hour=r["hour"], origin=origin,
                   offsets=_unpack(r["offsets"]), keys=r["keys"].split(b"\xff") if n else [], times=times,
                   uuids=[u[i:i + 16] for i in range(0, 16 * n, 16)],
                   lines=r["events"].split(b"\n") if n else [],
                   source=None if source == Source(origin.topic, origin.partition) else source,
                   segment_source=r["segment_source"], segment=r["segment"].split(b"\xff") if r["segment"] else [])

    def arrived_at(self, origin: Origin) -> None:
        """This batch was read at ``origin``; when it was written there directly (no per-event offsets, as the
        HTTP API writes events.valid), that message is where its events entered Kafka."""
        if not self.offsets:
            self.origin, self.source = origin, None

    def select(self, mask: list[bool], origin: Origin) -> EventBatch:
        """The events whose mask is true, as a batch derived from ``origin``; the events keep their source."""
        source, offsets = self.source_of_events()
        return EventBatch(
            project=self.project, hour=self.hour, origin=origin,
            offsets=[o for o, m in zip(offsets, mask) if m],
            keys=[k for k, m in zip(self.keys, mask) if m], times=[t for t, m in zip(self.times, mask) if m],
            uuids=[u for u, m in zip(self.uuids, mask) if m], lines=[ln for ln, m in zip(self.lines, mask) if m],
            source=source, segment_source=self.segment_source,
            segment=[s for s, m in zip(self.segment, mask) if m] if self.segment else [])


class Rows(NamedTuple):
    """What an exporter needs of a batch: its rows as one newline-joined blob, and their source offsets."""

    project: int
    hour: int
    earliest_ms: int     # the smallest server_upload_time of the rows
    latest_ms: int       # the largest
    count: int
    blob: bytes
    source: str          # "topic[partition]" where the events first entered Kafka
    offsets: list[int]   # per row, its offset there
    segment_source: str  # the Segment source id, "" when the events did not come through Segment's API
    segment: bytes       # the rows' Segment messages joined by 0xFF, b"" when none has one


def decode_rows(data: bytes) -> Rows:
    r = avro.decode("event_batch", data)
    times = array("q", r["times"])
    if sys.byteorder == "big":
        times.byteswap()
    n = len(times)
    offsets = _unpack(r["offsets"])
    src = r["source"]
    if not offsets:  # written directly to its first topic: the batch is its own source
        o = r["origin"]
        src, offsets = o, own_offsets(o["offset"], n)
    return Rows(r["project"], r["hour"], min(times) if n else -1, max(times) if n else -1, n, r["events"],
                f"{src['topic']}[{src['partition']}]", offsets, r["segment_source"], r["segment"])


SOURCE_SLOTS = 1 << 16
"""Events one batch written directly to its first topic may hold (the HTTP API writes events.valid so): their
source offsets are the message's offset times this, plus their index, so that each event of such a batch has a
source offset of its own, even once the batch is split."""
BATCH_HEAD_BYTES = 1024
PER_EVENT_BYTES = 48
"""Bytes of a batch message besides its rows: the header, and per event its offset, time, uuid and separators."""


def own_offsets(offset: int, n: int) -> list[int]:
    """The source offsets of the ``n`` events of a batch that entered Kafka as the message at ``offset``."""
    base = offset * SOURCE_SLOTS
    return list(range(base, base + n))


def _pack(values: list[int]) -> bytes:
    a = array("q", values)
    if sys.byteorder == "big":  # the wire format is little-endian
        a.byteswap()
    return a.tobytes()


def _unpack(data: bytes) -> list[int]:
    a = array("q", data)
    if sys.byteorder == "big":
        a.byteswap()
    return a.tolist()


def group(events: Iterable[tuple[int, Normalized]], topic: str, partition: int, partitions: int,
          max_events: int, max_bytes: int = 4 << 20) -> Iterator[tuple[int, EventBatch]]:
    """(target partition, batch) for events read from ``topic[partition]``, in offset order.

    ``events`` are (source offset, event). Each batch holds one project, one hour,
    at most ``max_events`` events and, unless one event alone is larger, at most
    about ``max_bytes`` of rows, all for one target partition (Kafka's default
    partitioner on the event's device_id), in their source order.
    """
    open_: dict[tuple[int, int, int], EventBatch] = {}
    sizes: dict[tuple[int, int, int], int] = {}
    targets = partition_memo(partitions)   # partition_for's memo: a device seen before (in any call) is looked up
    for offset, (project, dedupe_key, upload_ms, uuid, line, device_id, user_id, _) in events:
        key = device_id if device_id is not None else user_id   # ev.partition_key, without its call
        target = targets.get(key)  # type: ignore[arg-type]
        if target is None:
            target = partition_for(key, partitions)  # type: ignore[arg-type]
        hour = upload_ms - upload_ms % HOUR_MS
        k = (target, project, hour)
        b = open_.get(k)
        size = len(line) + len(dedupe_key) + 40
        if b is not None and sizes[k] + size > max_bytes:
            del open_[k]
            b.origin = Origin(topic, partition, b.offsets[-1])
            yield target, b
            b = None
        if b is None:
            b = open_[k] = EventBatch(project, hour, Origin(topic, partition, offset))
            sizes[k] = size
        else:
            sizes[k] += size
        b.offsets.append(offset)
        b.keys.append(dedupe_key)
        b.times.append(upload_ms)
        b.uuids.append(uuid)
        b.lines.append(line)
        if len(b.lines) >= max_events:
            del open_[k]
            b.origin = Origin(topic, partition, offset)
            yield target, b
    for (target, _, _), b in open_.items():
        b.origin = Origin(topic, partition, b.offsets[-1])
        yield target, b
