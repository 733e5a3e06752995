"""One destination's export: batches in, objects on S3, ledger records out. No Kafka consumer here.

The export agent (``stream.agents.export``) feeds it the batches of the
partitions it owns, in offset order, and drives one cycle per poll:

1. ``add`` each batch (objects that reach their size or event limit close);
2. ``tick`` closes the objects whose hour is over (by the data, or by the clock
   once a partition has stayed idle for ``idle_close_s``);
3. ``finish`` each closed object: upload it, then append its ledger record
   (acknowledged by Kafka) -- only then are its offsets committable;
4. ``seal`` the partitions whose hours are over (a ledger record each), after
   their objects are written;
5. ``write_markers`` (the exporter that owns partition 0 only): the
   ``_complete`` marker of each hour every partition has sealed, then its record;
6. the agent commits ``committable()``.

A crash between any two steps is replayed from the committed offsets, and
deterministic keys plus the ledger's marks make the replay converge.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from stream import metrics
from stream.clock import Clock
from stream.crashpoints import crash_point
from stream.events.batch import decode_rows
from stream.export.completion import ExportBook, iso_hour
from stream.export.layout import AmplitudeLayout, MergedIdsLayout, SegmentLayout
from stream.export.ledger import Claim, Kind, LedgerIndex, LedgerRecord
from stream.export.notify import NoticeBook, Notifier
from stream.export.writer import ClosedObject, Limits, PartitionWriter
from stream.retry import Failure, retry_until_done
from stream.s3.arn import s3_arn
from stream.s3.client import target_of
from stream.s3.errors import classify as s3_failure
from stream.s3.errors import explain
from stream.s3.storage import PutRequest, Storage
from stream.settings import DestinationSettings, Settings

log = logging.getLogger(__name__)

ERROR_RECORD_INTERVAL_MS = 60_000
"""A failure that goes on is recorded in the ledger again after this long (or at once when its reason changes)."""

AppendLedger = Callable[[LedgerRecord], Awaitable[None]]


def layout_for(dest: DestinationSettings) -> AmplitudeLayout | SegmentLayout:
    if dest.layout == "segment":
        return SegmentLayout(dest.prefix, dest.segment_source_id or str(dest.project))
    return AmplitudeLayout(dest.prefix, dest.project)


@dataclass(frozen=True)
class ExportInput:
    """What one exporter of a destination reads and writes: its name in the ledger, topic and layout. Both topics
    carry EventBatch records."""

    name: str
    topic: str
    layout: Any


MERGED_IDS_SUFFIX = ".merged-ids"
"""The merged-IDs exporter of destination d is ``d.merged-ids`` in the ledger, metrics and its consumer group (a
destination name cannot hold a dot)."""


def exporters_of(dest: DestinationSettings) -> list[tuple[str, str]]:
    """(name in the ledger, what it exports: ``events`` or ``merged_ids``) of each exporter of ``dest``."""
    out = []
    if dest.exports_events():
        out.append((dest.name, "events"))
    if dest.exports_merged_ids():
        out.append((dest.name + MERGED_IDS_SUFFIX, "merged_ids"))
    return out


def export_input(settings: Settings, dest: DestinationSettings, topic: str = "accepted") -> ExportInput:
    """The events (``accepted``) or merged-IDs (``identity_merges``) export of ``dest``."""
    if topic == "identity_merges":
        return ExportInput(dest.name + MERGED_IDS_SUFFIX, settings.topics.name(topic),
                           MergedIdsLayout(dest.prefix, dest.project, dest.org_id or 0))
    return ExportInput(dest.name, settings.topics.name(topic), layout_for(dest))


class Exporter:
    def __init__(self, settings: Settings, dest: DestinationSettings, storage: Storage, clock: Clock,
                 spool_dir: Path, append_ledger: AppendLedger, ledger: LedgerIndex, partitions: int | None = None,
                 source: ExportInput | None = None):
        self.settings, self.dest, self.storage, self.clock = settings, dest, storage, clock
        source = source or export_input(settings, dest)
        self.name = source.name
        self.layout = source.layout
        self.spool_dir = spool_dir
        self.append_ledger = append_ledger
        self.ledger = ledger
        self.topic = source.topic
        self.book = ExportBook(self.name, partitions if partitions is not None else settings.topics.partitions)
        self.writers: dict[int, PartitionWriter] = {}
        self.limits = Limits(dest.max_object_bytes, dest.max_object_events, int(dest.close_grace_s * 1000))
        self._markers_written: set[int] = set()
        self._retry = {"max_delay": settings.s3.retry_max_s, "permanent_delay": settings.s3.permanent_retry_s}
        self.target = target_of(dest, settings.s3, self.name)
        self.notices = NoticeBook()
        self.notifier = Notifier(settings, dest, self.name, self.target)
        self._idle_ms = int(dest.idle_close_s * 1000)
        self._idle_since: dict[int, int] = {}      # partition -> when it was first seen caught up, in a row
        self._idle: set[int] = set()
        self._last_error: tuple[str, int] | None = None     # (reason, when recorded)

    # --- taking batches -------------------------------------------------------------------------------------------
    def writer(self, partition: int) -> PartitionWriter:
        w = self.writers.get(partition)
        if w is None:
            w = self.writers[partition] = PartitionWriter(partition, self.layout.key, self.spool_dir, self.ledger,
                                                          self.limits, getattr(self.layout, "first_key", None))
        return w

    def add(self, partition: int, offset: int, value: bytes) -> list[ClosedObject]:
        """Take the batch at ``offset``; raises if the message is not a batch."""
        rows = decode_rows(value)
        w = self.writer(partition)
        if rows.project != self.dest.project or not rows.count or not self.layout.takes(rows):
            w.skip(offset)
            return []
        skipped = w.skipped_events
        closed = w.add(offset, rows.hour, self.layout.group(rows), self.layout.lines(rows), rows.count,
                       rows.earliest_ms, rows.latest_ms, rows.source, rows.offsets)
        crash_point("export.added")
        if w.skipped_events != skipped:
            metrics.EXPORT_SKIPPED.labels(self.name).inc(w.skipped_events - skipped)
        return closed

    def tick(self, caught_up: set[int]) -> list[ClosedObject]:
        """Close what is due. ``caught_up``: the partitions whose poll fetched nothing and whose position is at
        their end; one that stays so for ``idle_close_s`` is idle, and the clock may close its past hours."""
        now = self.clock.now_ms()
        for p in self.writers:
            if p in caught_up:
                self._idle_since.setdefault(p, now)
            else:
                self._idle_since.pop(p, None)
        self._idle = {p for p, since in self._idle_since.items() if now - since >= self._idle_ms}
        return [obj for p, w in self.writers.items() for obj in w.tick(now, idle=p in self._idle)]

    # --- writing --------------------------------------------------------------------------------------------------
    async def finish(self, obj: ClosedObject) -> LedgerRecord:
        """Upload, then record in the ledger; only then may the offsets be committed."""
        crash_point("export.closed")
        d = self.dest
        req = PutRequest(d.bucket, obj.key, obj.path, obj.size, self.layout.content_type,
                         self.layout.content_encoding, {
            "stream-topic": self.topic, "stream-partition": str(obj.partition),
            "stream-start-offset": str(obj.start_offset), "stream-end-offset": str(obj.end_offset),
            "stream-events": str(obj.events)})
        await retry_until_done(f"upload of s3://{d.bucket}/{obj.key}", lambda: self.storage.put_file(req),
                               classify=s3_failure, on_failure=lambda f, exc: self._upload_failed(f, exc, obj),
                               **self._retry)
        self._succeeded()
        crash_point("export.uploaded")
        rec = LedgerRecord(self.name, d.project, self.topic, obj.partition, obj.hour, d.bucket, obj.key,
                           obj.start_offset, obj.end_offset, obj.events, obj.marks, obj.size, obj.reason.value,
                           self.clock.now_ms(), group=obj.group)
        await self.append_ledger(rec)
        crash_point("export.ledgered")
        before = self.ledger.object(obj.key)
        self.ledger.add(rec)
        if (w := self.writers.get(obj.partition)) is not None:   # None: revoked during the upload
            w.written(obj)
        obj.path.unlink(missing_ok=True)
        # each key counts once: an object written again under its key (a replay, a partition that moved) adds only
        # what it holds beyond its previous version
        metrics.EXPORT_EVENTS.labels(self.name).inc(max(0, obj.events - (before.events if before else 0)))
        metrics.EXPORT_BYTES.labels(self.name).inc(max(0, obj.size - (before.bytes if before else 0)))
        if before is None:
            metrics.EXPORT_OBJECTS.labels(self.name, obj.reason.value).inc()
        log.info("export %s: wrote s3://%s/%s (%d events, %d bytes, offsets %d-%d, %s%s)", self.name, d.bucket, obj.key,
                 obj.events, obj.size, obj.start_offset, obj.end_offset, obj.reason.value,
                 ", a straggler of a sealed hour" if obj.straggler else "")
        return rec

    async def seal(self) -> list[LedgerRecord]:
        """Record the hours each partition has finished; call after ``tick`` and after every closed object is
        finished."""
        now, d = self.clock.now_ms(), self.dest
        out = []
        for p, w in sorted(self.writers.items()):
            due = w.seal_due(now, idle=p in self._idle)
            if due is None:
                continue
            hour, reason = due
            rec = LedgerRecord.seal(self.name, d.project, self.topic, p, hour, d.bucket, reason.value, now)
            await self.append_ledger(rec)
            crash_point("export.sealed")
            w.sealed(hour)
            out.append(rec)
        return out

    async def write_markers(self) -> list[str]:
        """Write the ``_complete`` marker of every hour all partitions have sealed (by the ledger as read so far)."""
        d = self.dest
        due = [h for h in self.book.markers_due(self.clock.now_ms()) if h not in self._markers_written]
        keys = []
        for hour in due:
            key = self.layout.marker_key(hour)
            if key is None:
                continue
            await retry_until_done(f"marker s3://{d.bucket}/{key}",
                                   lambda: self.storage.put_bytes(d.bucket, key, b"", "application/octet-stream"),
                                   classify=s3_failure, on_failure=lambda f, exc: self._upload_failed(f, exc, None),
                                   **self._retry)
            self._succeeded()
            crash_point("export.marker_uploaded")
            await self.append_ledger(LedgerRecord.marker(self.name, d.project, self.topic, hour, d.bucket, key,
                                                         self.clock.now_ms()))
            crash_point("export.marker_ledgered")
            self._markers_written.add(hour)
            metrics.EXPORT_MARKERS.labels(self.name).inc()
            log.info("export %s: hour complete on every partition: wrote s3://%s/%s", self.name, d.bucket, key)
            keys.append(key)
        return keys

    async def record_gap(self, partition: int, first: int, end: int) -> LedgerRecord:
        """Offsets ``[first, end)`` of ``partition`` were deleted by the topic's retention before this exporter wrote
        them: the loss is said in the ledger (the status view shows it), a metric and the log, with the cure."""
        d, now = self.dest, self.clock.now_ms()
        written = self.ledger.hours(partition)
        after = max(written) if written else None
        since = f"the hours after {iso_hour(after)} (the last hour written from this partition)" if after is not None \
            else "hours this destination never exported"
        detail = (f"offsets {first}-{end - 1} of {self.topic}[{partition}] were deleted by the topic's retention "
                  f"(topics.retention_days) before destination {self.name} exported them; their events are missing "
                  f"from {since}. Rebuild those hours from the archive: stream exports backfill {d.name} --from "
                  f"<hour> --to <hour> --source archive; and keep a destination disabled or failing for less than the "
                  "retention")
        rec = LedgerRecord(self.name, d.project, self.topic, partition, after if after is not None else -1, d.bucket,
                           "", first, end - 1, 0, {}, 0, "retention", now, Kind.GAP.value, detail)
        await self.append_ledger(rec)
        self.book.add(rec)
        metrics.EXPORT_LOST.labels(self.name).inc(end - first)
        log.error("export %s: DATA LOST: %s", self.name, detail)
        return rec

    # --- failures -------------------------------------------------------------------------------------------------
    async def _upload_failed(self, failure: Failure, exc: BaseException, obj: ClosedObject | None) -> None:
        d = self.dest
        metrics.EXPORT_UPLOAD_FAILURES.labels(self.name, failure.reason).inc()
        metrics.EXPORT_RETRYING.labels(self.name).set(1)
        if failure.kind == "permanent":
            metrics.EXPORT_FAILING.labels(self.name).set(1)
        prefix = obj.key.rsplit("/", 1)[0] + "/" if obj is not None else d.prefix
        detail = explain(exc, self.target, "s3:PutObject",
                         s3_arn(d.bucket, f"{prefix}*", region=self.target.region)).message
        if failure.kind == "permanent":
            log.error("export %s: %s; uploads retry every %.0fs until it is fixed", self.name, detail,
                      self.settings.s3.permanent_retry_s)
        now = self.clock.now_ms()
        if self._last_error is not None and self._last_error[0] == failure.reason and \
                now - self._last_error[1] < ERROR_RECORD_INTERVAL_MS:
            return
        self._last_error = (failure.reason, now)
        rec = LedgerRecord.error(self.name, d.project, self.topic, obj.partition if obj else -1,
                                 obj.hour if obj else -1, d.bucket, obj.key if obj else "", failure.reason, detail,
                                 now)
        self.book.add(rec)   # the status view shows it now; the ledger tail is not read while the upload retries
        self.notices.add(rec)
        try:   # every worker's status view; never let a slow broker hold the retries up
            await asyncio.wait_for(self.append_ledger(rec), 5)
        except Exception as e:
            log.warning("export %s: could not record the failure in the ledger: %s", self.name, e)
        await self.notify()

    async def notify(self) -> None:
        """Send a failure (or resolution) notification when one is due; the owner of partition 0 speaks for the
        destination (``stream.export.notify``). A notification that cannot be sent never holds the export up."""
        if 0 not in self.writers:
            return
        try:
            await asyncio.wait_for(self.notifier.notify(self.notices, self.append_ledger, self.clock.now_ms()), 60)
        except Exception as e:
            log.warning("export %s: notification not sent: %s", self.name, e)

    def _succeeded(self) -> None:
        metrics.EXPORT_FAILING.labels(self.name).set(0)
        metrics.EXPORT_RETRYING.labels(self.name).set(0)
        self._last_error = None

    # --- progress -------------------------------------------------------------------------------------------------
    def committable(self) -> dict[int, int]:
        return {p: o for p, w in self.writers.items() if (o := w.committable()) is not None}

    def oldest_unwritten_ms(self) -> int | None:
        times = [t for w in self.writers.values() if (t := w.oldest_unwritten_ms()) is not None]
        return min(times) if times else None

    def update_gauges(self) -> None:
        d, now = self.name, self.clock.now_ms()
        oldest = self.oldest_unwritten_ms()
        metrics.EXPORT_OLDEST_AGE.labels(d).set(max(0, now - oldest) / 1000 if oldest is not None else 0)
        through = self.book.sealed_through()
        if through is not None:
            metrics.EXPORT_LAST_SEALED.labels(d).set(through / 1000)

    def use_ledger(self, ledger: LedgerIndex) -> None:
        self.ledger = ledger
        for w in self.writers.values():
            w.use_ledger(ledger)

    # --- backfills --------------------------------------------------------------------------------------------------
    def claim(self, claim: Claim) -> dict[int, int]:
        """Honour a backfill's claim of hours (the ledger index counts them as written below the claim's end
        offsets, so their events there are skipped from now on). A partition with an open object of a claimed hour
        that began below the end is reset: its open objects are dropped, and it is returned with the offset to read
        it again from (its committable offset) -- the events of other hours in them are written again under the
        same keys, those of the claimed hours are the backfill's."""
        hours, resets = set(claim.hours), {}
        for p, w in list(self.writers.items()):
            end = claim.ends.get(p)
            if end is not None and any(h in hours and start < end for h, start in w.open_starts()):
                offset = w.committable()
                self.revoke({p})
                if offset is not None:
                    resets[p] = offset
        return resets

    async def acknowledge(self, claim: Claim, partitions: set[int]) -> None:
        """Tell the backfill that this exporter will write no event of its hours below its end offsets."""
        d = self.dest
        await self.append_ledger(LedgerRecord(
            self.name, d.project, self.topic, -1, min(claim.hours), d.bucket, "", -1, -1, 0, {}, 0, "claim_ack",
            self.clock.now_ms(), Kind.CLAIM_ACK.value,
            orjson.dumps({"job": claim.job, "partitions": sorted(partitions)}).decode()))

    def revoke(self, partitions: set[int]) -> None:
        for p in partitions:
            w = self.writers.pop(p, None)
            if w is not None:
                w.discard()

    def discard_all(self) -> None:
        self.revoke(set(self.writers))
