"""Where an object goes and what its lines are: Amplitude's raw-export layout, or Segment's S3 layout.

A layout is the partitioner, naming and format seams of the exporter: ``group``
splits an hour's events (Segment: by source), ``key`` names an object from data
alone, ``lines`` gives the bytes to write for a batch, ``marker_key`` names an
hour's completion marker (if the layout has one), ``takes`` says whether the layout exports a batch's events at
all (the Segment layout does not export the events a mirror import inserted, ``MIRROR_SOURCE``).

Amplitude:

``<prefix><project>/<project>_<yyyy-MM-dd>_<H>#<n>.json.gz`` (FORMATS.md §1.2)
with the hour of server_upload_time in UTC, unpadded. ``n`` encodes the Kafka
partition and the first offset the object holds, ``n = start_offset * 1000 +
partition``, so an object rebuilt after a crash gets the same key and
overwrites instead of duplicating; the first objects of a fresh topic are
``#0``, ``#1``... one per partition, as Amplitude's own files are numbered.

Numbering by start offset rather than by a per-hour counter keeps the key a
function of the data alone: a ledger read short (or lost) can only make an
object be written again under the key it already has, never under the key of
another object.

Once every partition has sealed an hour, ``<prefix><project>/<project>_<yyyy-MM-dd>_<H>_complete``
(an empty object) tells readers the hour is complete -- an hour with no events
then has a marker and no objects, a late hour has neither.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from stream.events.batch import Rows
from stream.events.segment import from_amplitude_row
from stream.events.timefmt import hour_label

MIRROR_SOURCE = "$mirror"
"""The ``segment_source`` of the batches of events a mirror import inserted (``stream.agents.mirror``): no
Segment-layout destination exports them, as the vendor's mirrored events reach none of its streaming
destinations; the Amplitude layout exports them as any event. No Segment source id can be it (source ids are
letters, digits, ``_`` and ``-``), it is not written to any object, and a batch keeps it through dedupe, the
identity stage and its holds, which carry a batch's Segment source along with its rows."""

PARTITION_SLOTS = 1000
"""Partitions the key number can tell apart (topics.partitions is capped below it)."""


def object_number(partition: int, start_offset: int) -> int:
    if not 0 <= partition < PARTITION_SLOTS:
        raise ValueError(f"partition {partition} does not fit the key number (0..{PARTITION_SLOTS - 1})")
    return start_offset * PARTITION_SLOTS + partition


def amplitude_key(prefix: str, project: int, hour_ms: int, partition: int, start_offset: int) -> str:
    """The key of the object of ``project``'s hour starting at ``start_offset`` of ``partition``."""
    day, hour = hour_label(hour_ms)
    return f"{prefix}{project}/{project}_{day}_{hour}#{object_number(partition, start_offset)}.json.gz"


def amplitude_marker_key(prefix: str, project: int, hour_ms: int) -> str:
    """The ``_complete`` marker of ``project``'s hour: every partition has sealed it (FORMATS.md §1.2)."""
    day, hour = hour_label(hour_ms)
    return f"{prefix}{project}/{project}_{day}_{hour}_complete"


def written_prefixes(dest: Any, segment_sources: Iterable[str] = ()) -> list[tuple[str, str]]:
    """(data set, key prefix) of every place the destination writes: what ``stream check`` and ``stream exports
    verify`` probe and what its generated bucket policy grants. ``segment_sources``: the source ids of the
    project's Segment sources (the Segment layout writes a folder per source)."""
    out: list[tuple[str, str]] = []
    if dest.exports_events():
        if dest.layout == "segment":
            for src in sorted({dest.segment_source_id or str(dest.project), *segment_sources}):
                out.append(("events", f"{dest.prefix}segment-logs/{src}/"))
        else:
            out.append(("events", f"{dest.prefix}{dest.project}/{dest.project}_"))
    if dest.exports_merged_ids():
        out.append(("merged_ids", f"{dest.prefix}{dest.project}/-{dest.org_id}_"))
    if getattr(dest, "exports_profiles", lambda: False)():
        out.append(("profiles", f"{dest.prefix}{dest.project}/profiles/{dest.project}_profiles_"))
    return out


def hour_prefixes(layout: Any, hour_ms: int, groups: Iterable[str] = ("",)) -> list[str]:
    """The key prefixes under which ``layout`` puts the objects of an hour (one per group for the Segment layout):
    what a rebuild lists to find the objects it replaces."""
    day, hour = hour_label(hour_ms)
    if isinstance(layout, SegmentLayout):
        day_ms = hour_ms - hour_ms % SEGMENT_DAY_MS
        return [f"{layout.prefix}segment-logs/{g}/{day_ms}/{hour_ms}-" for g in groups]
    if isinstance(layout, MergedIdsLayout):
        return [f"{layout.prefix}{layout.project}/-{layout.org_id}_{day}_{hour}"]
    return [f"{layout.prefix}{layout.project}/{layout.project}_{day}_{hour}#"]


def number_of(key: str) -> int | None:
    """The object number in a key written by any layout (``#<n>.json.gz``, ``-<n>.gz``); None when it has none
    (an hour's first merged-IDs file) or is not an object of ours."""
    base = key.rsplit("/", 1)[-1]
    for sep, end in (("#", ".json.gz"), ("-", ".gz")):
        if sep in base and base.endswith(end):
            digits = base.rsplit(sep, 1)[1][: -len(end)]
            if digits.isdigit():
                return int(digits)
    return None


def parse_number(n: int) -> tuple[int, int]:
    """(partition, start offset) of a key number."""
    return n % PARTITION_SLOTS, n // PARTITION_SLOTS


class AmplitudeLayout:
    """Amplitude's raw export: the export rows as they are, one object per (partition, hour, run of offsets)."""

    name = "amplitude"
    content_type = "application/gzip"
    content_encoding = None

    def __init__(self, prefix: str, project: int):
        self.prefix, self.project = prefix, project

    def takes(self, rows: Rows) -> bool:
        return True

    def group(self, rows: Rows) -> str:
        return ""

    def lines(self, rows: Rows) -> bytes:
        return rows.blob

    def key(self, hour: int, group: str, partition: int, start_offset: int) -> str:
        return amplitude_key(self.prefix, self.project, hour, partition, start_offset)

    def marker_key(self, hour: int) -> str | None:
        return amplitude_marker_key(self.prefix, self.project, hour)


SEGMENT_DAY_MS = 86_400_000


class SegmentLayout:
    """Segment's S3 destination: ``<prefix>segment-logs/<source_id>/<received_day>/<file>.gz`` (FORMATS.md §3.4).

    ``received_day`` is the epoch milliseconds of 00:00 UTC of the day the events were received
    (server_upload_time, stamped on arrival), as Segment's own keys show it. The file name, which Segment does
    not document, is ``<hour start, epoch ms>-<n>.gz`` with Amplitude's layout's ``n = start_offset * 1000 +
    partition``: one object per partition, hour and source, rolled sooner by size (100 MB by default), and the
    same key for an object rebuilt after a crash. Each line is a full Segment message: the one the tracking API
    received (completed as Segment completes it), or, for an event that did not come through it, the ``track``
    message its Amplitude row maps to (``stream.events.segment.from_amplitude_row``). Events that did not come
    through Segment's API go to the folder of ``default_source``. The events a mirror import inserted
    (``MIRROR_SOURCE``) are not exported.
    """

    name = "segment"
    content_type = "text/plain"
    content_encoding = "gzip"

    def __init__(self, prefix: str, default_source: str):
        self.prefix, self.default_source = prefix, default_source

    def takes(self, rows: Rows) -> bool:
        return rows.segment_source != MIRROR_SOURCE

    def group(self, rows: Rows) -> str:
        return rows.segment_source or self.default_source

    def lines(self, rows: Rows) -> bytes:
        messages = rows.segment.split(b"\xff") if rows.segment else [b""] * rows.count
        if all(messages):
            return b"\n".join(messages)                         # every event came through Segment's API
        return b"\n".join(m or _track_message(line) for m, line in zip(messages, rows.blob.split(b"\n")))

    def key(self, hour: int, group: str, partition: int, start_offset: int) -> str:
        day = hour - hour % SEGMENT_DAY_MS
        return f"{self.prefix}segment-logs/{group}/{day}/{hour}-{object_number(partition, start_offset)}.gz"

    def marker_key(self, hour: int) -> str | None:
        return None    # Segment writes no completion markers


def _track_message(row: bytes) -> bytes:
    return orjson.dumps(from_amplitude_row(orjson.loads(row)))


def merged_ids_key(prefix: str, project: int, org_id: int, hour_ms: int, number: int | None = None) -> str:
    """``<prefix><project>/-<org_id>_<yyyy-MM-dd>_<H>.json.gz``: Amplitude's file name (FORMATS.md §1.5) in the
    project's folder, beside its events; ``#<number>`` before ``.json.gz`` for an hour's further objects."""
    day, hour = hour_label(hour_ms)
    return f"{prefix}{project}/-{org_id}_{day}_{hour}{'' if number is None else f'#{number}'}.json.gz"


class MergedIdsLayout:
    """Amplitude's merged Amplitude IDs files: one per hour of merge_server_time (FORMATS.md §1.5).

    Amplitude names the file by org (``-<org_id>_<day>_<H>.json.gz``; the leading ``-`` is part of its
    pattern), while its lines belong to one project (``scope``). Several projects of one org may export to one
    bucket and prefix, so the file goes into the project's folder, ``<prefix><project>/``, where the project's
    events are: the file name stays Amplitude's, and two projects' files never share a key.

    The lines are the merge records as identity.merges carries them (``stream.identity.users``). identity.merges
    has one partition, so an hour's records go into one object, named as Amplitude names it (no number). An
    object of an hour that already has one -- a straggler after the hour was sealed, or the next part of an hour
    over max_object_bytes -- is ``..._<H>#<n>.json.gz`` with the events' ``n = start_offset * 1000 +
    partition``: a key from the data, stable across replays (the writer's ``first_key_for``). No ``_complete``
    markers (Amplitude documents none for these files).
    """

    name = "merged_ids"
    content_type = "application/gzip"
    content_encoding = None

    def __init__(self, prefix: str, project: int, org_id: int):
        self.prefix, self.project, self.org_id = prefix, project, org_id

    def takes(self, rows: Rows) -> bool:
        return True

    def group(self, rows: Rows) -> str:
        return ""

    def lines(self, rows: Rows) -> bytes:
        return rows.blob

    def key(self, hour: int, group: str, partition: int, start_offset: int) -> str:
        return merged_ids_key(self.prefix, self.project, self.org_id, hour, object_number(partition, start_offset))

    def first_key(self, hour: int, group: str, partition: int, start_offset: int) -> str:
        return merged_ids_key(self.prefix, self.project, self.org_id, hour)

    def marker_key(self, hour: int) -> str | None:
        return None
