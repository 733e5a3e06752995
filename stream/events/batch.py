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
from itertools import compress
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
        lines, keys, segment = self.lines, self.keys, self.segment
        n = len(lines)
        if len(keys) == n and (not segment or len(segment) == n):
            # the rows' sizes summed in C first: a batch that fits (nearly every one) needs no size a row
            size = sum(map(len, lines)) + sum(map(len, keys)) + PER_EVENT_BYTES * n
            if segment:
                size += sum(map(len, segment))
            if size + BATCH_HEAD_BYTES <= max_bytes:
                return [self]
        sizes = [len(ln) + len(k) + PER_EVENT_BYTES for ln, k in zip(lines, keys)]
        if segment:
            sizes = [n + len(m) for n, m in zip(sizes, segment)]
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
        lines = self.lines
        if len(lines) < JOIN_ONCE_ROWS:
            events = b"\n".join(lines)
            return b"".join((*self._head(), avro.bytes_of(events), events))
        rows = [b"\n"] * (2 * len(lines) - 1)   # the rows and their newlines, joined once with the rest
        rows[::2] = lines
        return b"".join((*self._head(), avro.long_of(sum(map(len, lines)) + len(lines) - 1), *rows))

    def _head(self) -> tuple[bytes, ...]:
        """The Avro binary of every field before the rows (``events``, the last field), in pieces."""
        o = self.origin
        src = self.source or Source(o.topic, o.partition)
        offsets, times = _pack(self.offsets), _pack(self.times)
        keys, uuids = b"\xff".join(self.keys), b"".join(self.uuids)
        segment = b"\xff".join(self.segment) if any(self.segment) else b""
        long_of, bytes_of, string_of = avro.long_of, avro.bytes_of, avro.string_of
        return (long_of(self.project), long_of(self.hour),
                string_of(o.topic), long_of(o.partition), long_of(o.offset),   # origin
                string_of(src.topic), long_of(src.partition),                   # source
                bytes_of(offsets), offsets, bytes_of(keys), keys, bytes_of(times), times, bytes_of(uuids), uuids,
                string_of(self.segment_source), bytes_of(segment), segment)

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
        """The batch of a message: its fields read here (``ReadBatch``), its rows split into lines; a message not
        in the form every writer gives is read by fastavro's reader of the schema (``decode_slowly``, the
        reference the tests compare it with), and what that refuses raises its error."""
        return ReadBatch.read(data).batch()

    @classmethod
    def decode_slowly(cls, data: bytes) -> EventBatch:
        """``decode`` through fastavro's reader of the schema."""
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
        return EventBatch(   # itertools.compress: the comprehensions' selection, without a bytecode loop a row
            project=self.project, hour=self.hour, origin=origin, offsets=list(compress(offsets, mask)),
            keys=list(compress(self.keys, mask)), times=list(compress(self.times, mask)),
            uuids=list(compress(self.uuids, mask)), lines=list(compress(self.lines, mask)),
            source=source, segment_source=self.segment_source,
            segment=list(compress(self.segment, mask)) if self.segment else [])


class _Unusual(Exception):
    """A message not in the form every writer gives: fastavro's reader of the schema decides what it holds."""


_long_at = avro.long_at


def _span_at(data: bytes, i: int) -> tuple[int, int]:
    """(start, end) of the Avro bytes or string at ``data[i]``."""
    size, i = _long_at(data, i)
    if size < 0 or i + size > len(data):
        raise _Unusual
    return i, i + size


def _head_of(data: bytes) -> tuple | None:
    """The fields of an EventBatch message up to its rows, and where its rows are (start, end); None for a message
    not in the form every writer gives (a varint of more than 64 bits, a length past the end, a string not UTF-8)."""
    try:
        project, i = _long_at(data, 0)
        hour, i = _long_at(data, i)
        s, i = _span_at(data, i)
        otopic = data[s:i].decode()
        opartition, i = _long_at(data, i)   # an int: fastavro reads it as a long
        ooffset, i = _long_at(data, i)
        s, i = _span_at(data, i)
        stopic = data[s:i].decode()
        spartition, i = _long_at(data, i)
        s, i = _span_at(data, i)
        offsets = data[s:i]
        s, i = _span_at(data, i)
        keys = data[s:i]
        s, i = _span_at(data, i)
        times = data[s:i]
        s, i = _span_at(data, i)
        uuids = data[s:i]
        s, i = _span_at(data, i)
        segment_source = data[s:i].decode()
        s, i = _span_at(data, i)
        segment = data[s:i]
        at, end = _span_at(data, i)
    except (IndexError, UnicodeDecodeError, avro.NotALong, _Unusual):
        return None
    return (project, hour, otopic, opartition, ooffset, stopic, spartition, offsets, keys, times, uuids,
            segment_source, segment, at, end)


def _row_ends(data: bytes, at: int, end: int, n: int) -> list[int] | None:
    """Where each of the ``n`` rows in ``data[at:end]`` ends (its newline, or ``end``); None when they are not
    ``n`` lines. ``find`` looks for each newline with memchr: ``split`` compares byte by byte, several times slower
    on rows of a kilobyte."""
    find, ends = data.find, []
    p = at - 1
    for _ in range(n - 1):
        p = find(b"\n", p + 1, end)
        if p < 0:
            return None
        ends.append(p)
    if find(b"\n", p + 1, end) >= 0:
        return None
    ends.append(end)
    return ends


@dataclass(slots=True)
class ReadBatch:
    """A batch as read from a message, its rows left where they are until asked for: the dedupe stage sends most of
    them on unchanged. Its columns are ``EventBatch.decode``'s; ``batch()`` is that batch."""

    project: int
    hour: int
    origin: Origin
    offsets: list[int]
    keys: list[bytes]
    times: list[int]
    uuids: list[bytes]
    source: Source | None
    segment_source: str
    segment: list[bytes]
    data: bytes                        # the message
    at: int                            # its rows: data[at:end]
    end: int
    uuid_bytes: int                    # the length of the uuids field
    read_slowly: EventBatch | None     # an unusual message, read by fastavro's reader: its batch, rows split
    ends: list[int] | None = None      # where each row ends (``_row_ends``), once looked for
    looked: bool = False

    @classmethod
    def read(cls, data: bytes) -> ReadBatch:
        h = _head_of(data)
        if h is None:
            b = EventBatch.decode_slowly(data)
            return cls(b.project, b.hour, b.origin, b.offsets, b.keys, b.times, b.uuids, b.source, b.segment_source,
                       b.segment, data, 0, 0, 16 * len(b.uuids), b)
        (project, hour, otopic, opartition, ooffset, stopic, spartition, offsets, keys, times, u, segment_source,
         segment, at, end) = h
        times_ = _unpack(times)   # decode_slowly's order: the times' error before the offsets'
        n = len(times_)
        origin = Origin(otopic, opartition, ooffset)
        source = None if (stopic, spartition) == (otopic, opartition) else Source(stopic, spartition)
        return cls(project, hour, origin, _unpack(offsets), keys.split(b"\xff") if n else [], times_,
                   [u[i:i + 16] for i in range(0, 16 * n, 16)], source, segment_source,
                   segment.split(b"\xff") if segment else [], data, at, end, len(u), None)

    @property
    def lines(self) -> list[bytes]:
        """The rows split into lines, as ``EventBatch.decode`` splits them (on each newline, none when it holds no
        event); each cut where ``_row_ends`` found its newline when they are its events' count."""
        if self.read_slowly is not None:
            return self.read_slowly.lines
        if not self.times:
            return []
        data, ends = self.data, self._ends()
        if ends is None:
            return data[self.at:self.end].split(b"\n")
        return [data[s + 1:e] for s, e in zip([self.at - 1, *ends], ends)]

    def _ends(self) -> list[int] | None:
        """``_row_ends`` of the rows, looked for once."""
        if not self.looked and self.read_slowly is None:
            self.ends, self.looked = _row_ends(self.data, self.at, self.end, len(self.times)), True
        return self.ends

    def __len__(self) -> int:
        """Its rows, as ``len`` of its ``EventBatch``: its events' count when its rows are as many lines."""
        return len(self.times) if self.times and self._ends() is not None else len(self.lines)

    def batch(self) -> EventBatch:
        """This batch with its rows split into lines: ``EventBatch.decode`` of the message, with its arrival."""
        return EventBatch(self.project, self.hour, self.origin, self.offsets, self.keys, self.times, self.uuids,
                          self.lines, self.source, self.segment_source, self.segment)

    def arrived_at(self, origin: Origin) -> None:
        """``EventBatch.arrived_at``."""
        if not self.offsets:
            self.origin, self.source = origin, None

    def _ends_of_columns(self, mask: list[bool]) -> list[int] | None:
        """``_ends()`` when every column and the mask are its events' count and its rows as many lines; None
        otherwise (the batch then goes through ``batch()``, as fastavro's reading gives it)."""
        n = len(self.times)
        if (n and self.read_slowly is None and len(self.keys) == n == len(mask) and self.uuid_bytes == 16 * n
                and len(self.offsets) in (0, n) and len(self.segment) in (0, n)):
            return self._ends()
        return None

    def _source_of_events(self) -> tuple[Source, list[int]]:
        """``EventBatch.source_of_events`` of a batch whose rows are its events' count."""
        own = Source(self.origin.topic, self.origin.partition)
        if self.offsets:
            return self.source or own, self.offsets
        return own, own_offsets(self.origin.offset, len(self.times))

    def select(self, mask: list[bool], origin: Origin) -> EventBatch:
        """``batch().select(mask, origin)``, with only the kept rows cut from the message."""
        ends = self._ends_of_columns(mask)
        if ends is None:
            return self.batch().select(mask, origin)
        source, offsets = self._source_of_events()
        data = self.data
        return EventBatch(
            self.project, self.hour, origin, list(compress(offsets, mask)), list(compress(self.keys, mask)),
            list(compress(self.times, mask)), list(compress(self.uuids, mask)),
            [data[s + 1:e] for s, e in compress(zip([self.at - 1, *ends], ends), mask)], source, self.segment_source,
            list(compress(self.segment, mask)) if self.segment else [])

    def select_encoded(self, mask: list[bool], origin: Origin, max_bytes: int) -> tuple[list[bytes], int]:
        """(messages, rows): the events whose mask is true as a batch derived from ``origin``, encoded in parts of
        about ``max_bytes`` at most, and how many rows they hold: the messages of ``batch().select(mask,
        origin).split(max_bytes)``, none when no row is kept. The kept rows are copied from the message into the new
        one in runs, never split into lines: only the newlines are looked for, so that a batch whose rows are not
        its events' count, or whose columns are not, is handed to ``batch()`` and goes that way."""
        n, keys, segment = len(self.times), self.keys, self.segment
        ends = self._ends_of_columns(mask)
        if ends is None:
            out = self.batch().select(mask, origin)
            if not out.lines:
                return [], 0
            return [part.encode() for part in out.split(max_bytes)], len(out.lines)
        source, offsets = self._source_of_events()
        kept_keys = list(compress(keys, mask))
        k = len(kept_keys)
        if not k:
            return [], 0
        kept_segment = list(compress(segment, mask)) if segment else []
        view, runs, row, at = memoryview(self.data), [], 0, self.at
        while row < n:   # the runs of kept rows between dropped ones
            try:
                drop = mask.index(False, row)
            except ValueError:
                drop = n
            if drop > row:
                runs.append(view[ends[row - 1] + 1 if row else at:ends[drop - 1]])
            row = drop + 1
        size = sum(map(len, runs)) + len(runs) - 1
        rows_size = size - (k - 1) + sum(map(len, kept_keys)) + PER_EVENT_BYTES * k + sum(map(len, kept_segment))
        if rows_size + BATCH_HEAD_BYTES > max_bytes:   # more than one part: EventBatch.split's cut
            return [part.encode() for part in self.batch().select(mask, origin).split(max_bytes)], k
        out = EventBatch(self.project, self.hour, origin, list(compress(offsets, mask)), kept_keys,
                         list(compress(self.times, mask)), list(compress(self.uuids, mask)), [], source,
                         self.segment_source, kept_segment)
        pieces = [*out._head(), avro.long_of(size)]
        for j, run in enumerate(runs):
            if j:
                pieces.append(b"\n")
            pieces.append(run)
        return [b"".join(pieces)], k


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


JOIN_ONCE_ROWS = 200
"""The rows of a batch of this many events or more are joined into its message in one pass with the rest, not first
into a copy of their own: a copy of a megabyte allocated and freed a batch faulted in its pages anew each time
(about 420 page faults a batch of 500 rows of 1.8 KB, 1.2 against 0.4 µs an event); for fewer rows the join of the
rows alone is as cheap or cheaper (0.53 against 0.56 µs an event for batches of 25 such rows)."""
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
