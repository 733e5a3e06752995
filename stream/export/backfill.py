"""Backfills: rebuild a destination's hours so that each holds every event of the hour exactly once.

``stream exports backfill DESTINATION --from H --to H`` (and ``POST /admin/backfills``) rebuilds the hours
``[from, to)`` of a destination, in its layout, whatever it held before: objects already written are written
again under the same keys with the same bytes (the rebuild cuts objects where the live export cut them), a
partial export is completed, and objects the rebuild does not write again are removed. Two sources:

- ``events.accepted`` (``identity.merges`` for merged IDs) while its retention holds the hour: every event of
  the hour is in it;
- older hours from the archive: the destination the settings name as the system of record (``archive: true``,
  Amplitude layout), read back from S3 object by object.

An hour neither holds is refused before anything is written, naming the earliest available hour.

**Order, and why it converges.** Hours are rebuilt a chunk (``backfill.chunk_hours``) at a time:

1. ``claim``: a ledger record naming the chunk's hours and, per partition, the topic's end offset now. From the
   moment a live exporter of the destination reads it, it writes no event of those hours below those offsets:
   they are the rebuild's (``Exporter.claim``); it drops an open object of those hours and reads the partition
   again, and acknowledges (``claim_ack``). The rebuild waits for every partition's acknowledgement, or for the
   live export to have no consumer at all (it is off, or no worker runs): then no upload of it is in flight.
   Until it reads the claim, a live exporter may write an object that holds events below the end and events
   that arrived after the claim; the rebuild writes that (partition, hour) through the object's last offset
   (``Acknowledgements``), so that its own object of those events holds the later ones too;
2. the events of the chunk's hours below the end offsets are read in offset order and written as the live
   exporter writes them (same writer, same rotation, replays dropped by their source offsets, objects cut where
   the live ledger says the live export cut them), each object uploaded and recorded (``object`` with the job);
3. for each hour: every other object of the hour whose first offset lies below the end offset -- what the live
   export wrote before the claim -- is deleted (``deleted``); objects from the end offset on are the live
   export's stragglers and stay; then the ``_complete`` marker;
4. a ``job`` record with the progress; a cancellation takes effect here, between chunks.

**Mirror.** Given the project's mirror log (``stream.export.mirror_apply.MirrorLog``), every rebuild of an hour in
the Amplitude layout applies the mutations kept for that hour to the rows it reads (``stream.export.mirror``): the
mirror's own rebuilds, and any backfill, which would otherwise undo them. A batch whose rows are all deleted writes
nothing, and the objects are still cut where the live export cut them. Segment-layout and merged-IDs exports get
no mirror mutations, and a Segment-layout export leaves out the events a mirror import inserted
(``layout.takes``). With a mirror log, the archive destination's own hours past the topic's retention are rebuilt
from its own objects: each is read whole, then written again, with the mutations applied, under its key.

A crash anywhere leaves at worst a chunk partly rebuilt: the same backfill run again writes the same objects
under the same keys and deletes the same others. Memory is bounded: objects stream through gzip into spool files
and multipart uploads.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from isal import isal_zlib

from stream import kafka
from stream.clock import Clock
from stream.crashpoints import crash_point, pause_point
from stream.events.batch import decode_rows
from stream.events.timefmt import HOUR_MS, hour_start
from stream.export.exporter import ExportInput, export_input
from stream.export.format import GzipLinesSpool
from stream.export.layout import hour_prefixes, number_of, parse_number
from stream.export.ledger import Claim, Kind, LedgerIndex, LedgerRecord, facts
from stream.export.mirror import Mutation, Outcome, count_unmatched, insert_ids, rewrite_batch
from stream.export.mirror_apply import MirrorLog
from stream.export.mirror_kept import KeptMutations
from stream.export.rotation import CloseReason
from stream.export.writer import ClosedObject, Limits, PartitionWriter
from stream.s3.storage import PutRequest, Storage
from stream.settings import DestinationSettings, Settings

log = logging.getLogger(__name__)

SOURCES = ("auto", "accepted", "archive")


class BackfillRefused(Exception):
    """A backfill that cannot run as asked; nothing was written."""


# --- the request and its plan (pure) ------------------------------------------------------------------------------
def parse_hour(text: str) -> int:
    """``2024-03-01T00``, ``2024-03-01T00:00[:00][Z]`` or ``2024-03-01`` (its first hour) -> epoch ms of the UTC
    hour."""
    t = text.strip().rstrip("Z")
    for fmt in ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H", "%Y-%m-%d %H", "%Y-%m-%d"):
        try:
            return calendar.timegm(time.strptime(t, fmt)) * 1000
        except ValueError:
            continue
    raise BackfillRefused(f"{text!r} is not an hour: write it as 2024-03-01T07 (UTC)")


def hour_text(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H", time.gmtime(ms // 1000))


def new_job_id(now_ms: int) -> str:
    return f"bf-{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now_ms // 1000))}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class Request:
    destination: str
    first: int               # first hour, epoch ms
    end: int                 # first hour after the range
    exports: str = "all"     # events, merged_ids, or all that the destination exports
    source: str = "auto"
    job: str = ""
    by: str = ""

    def hours(self) -> list[int]:
        return list(range(self.first, self.end, HOUR_MS))


@dataclass(frozen=True)
class Availability:
    """Which hours a source holds whole. ``accepted_from``: the first hour the topic holds every event of (None:
    it never deleted a record, so it holds every hour); ``archive``: the hours the archive destination has
    objects or a marker of (None: no archive)."""

    accepted_from: int | None
    archive: frozenset[int] | None

    def source_of(self, hour: int, wanted: str) -> str | None:
        if wanted in ("auto", "accepted") and (self.accepted_from is None or hour >= self.accepted_from):
            return "accepted"
        if wanted in ("auto", "archive") and self.archive is not None and hour in self.archive:
            return "archive"
        return None

    def earliest(self, wanted: str) -> int | None:
        options = []
        if wanted in ("auto", "archive") and self.archive:
            options.append(min(self.archive))
        if wanted in ("auto", "accepted") and self.accepted_from is not None:
            options.append(self.accepted_from)
        return min(options) if options else None


def plan(request: Request, availability: Availability) -> list[tuple[int, str]]:
    """(hour, source) of every hour of the request, or BackfillRefused naming the earliest available hour."""
    if request.end <= request.first:
        raise BackfillRefused(f"--to ({hour_text(request.end)}) must come after --from ({hour_text(request.first)})")
    out, missing = [], []
    for h in request.hours():
        src = availability.source_of(h, request.source)
        if src is None:
            missing.append(h)
        else:
            out.append((h, src))
    if missing:
        earliest = availability.earliest(request.source)
        hint = (f"the earliest hour available is {hour_text(earliest)}" if earliest is not None else
                "no hour is available from it")
        what = {"auto": "neither events.accepted nor the archive destination holds",
                "accepted": "events.accepted does not hold", "archive": "the archive destination does not hold"}
        raise BackfillRefused(f"{what[request.source]} hour {hour_text(missing[0])} ({len(missing)} hour(s) of the "
                              f"range are not held); {hint}; nothing was written")
    return out


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def cuts(records: Sequence[LedgerRecord], hours: set[int]) -> set[tuple[int, int]]:
    """(partition, end offset) of every object the live export wrote for ``hours`` and did not lose since: a
    rebuild closes its objects at the same offsets, so that a complete hour is rebuilt byte for byte."""
    gone = {r.key for r in records if r.kind == Kind.DELETED.value}
    return {(r.partition, r.end_offset) for r in records
            if r.kind == Kind.OBJECT.value and r.hour in hours and r.key not in gone and not facts(r).get("job")}


class Acknowledgements:
    """What the live export answered a backfill's claim, from the ledger records read after it: the partitions it
    acknowledged and, per (partition, hour, group) of the claimed hours, the last offset of an object it wrote
    across the claim's end before it read the claim.

    Such an object holds events at and past the end (they arrived after the claim and were read before it); the
    rebuild writes its own object of the same events below the end, under the same key or deleting the live one,
    so it must hold those later events too: it writes that (partition, hour, group) up to the object's end. The
    live exporter skips them already (they lie inside a written object, ``LedgerIndex.written_through``)."""

    def __init__(self, claim: Claim):
        self.claim = claim
        self.acked: set[int] = set()
        self.through: dict[tuple[int, int, str], int] = {}
        self._hours = set(claim.hours)

    def take(self, records: Sequence[LedgerRecord]) -> None:
        for r in records:
            if r.kind == Kind.CLAIM_ACK.value and facts(r).get("job") == self.claim.job:
                self.acked |= set(facts(r).get("partitions", []))
            elif (r.kind == Kind.OBJECT.value and r.hour in self._hours and r.partition not in self.acked
                  and not facts(r).get("job")):
                end = self.claim.ends.get(r.partition)
                if end is not None and r.start_offset < end <= r.end_offset:
                    k = (r.partition, r.hour, r.group)
                    self.through[k] = max(self.through.get(k, -1), r.end_offset)

    def done(self) -> bool:
        return set(self.claim.ends) <= self.acked

    def end(self, partition: int, hour: int, group: str) -> int:
        """The offset below which the rebuild writes the events of (partition, hour, group)."""
        return max(self.claim.ends.get(partition, 0), self.through.get((partition, hour, group), -1) + 1)

    def read_ends(self) -> dict[int, int]:
        """Per partition, the offset the rebuild reads the topic up to."""
        out = dict(self.claim.ends)
        for (p, _, _), last in self.through.items():
            out[p] = max(out.get(p, 0), last + 1)
        return out


# --- progress ------------------------------------------------------------------------------------------------------
@dataclass
class Progress:
    job: str
    destination: str
    first: str
    end: str
    hours_total: int
    source: str
    state: str = "running"
    hours_done: int = 0
    events: int = 0
    objects: int = 0
    bytes: int = 0
    deleted: int = 0
    started_ms: int = 0
    updated_ms: int = 0
    error: str = ""
    hours_written: list[int] = field(default_factory=list)

    def doc(self) -> dict[str, Any]:
        elapsed = max(self.updated_ms - self.started_ms, 1) / 1000
        rate = self.events / elapsed
        eta = None
        if self.hours_done and self.state == "running":
            eta = round(elapsed / self.hours_done * (self.hours_total - self.hours_done), 1)
        return {"job": self.job, "destination": self.destination, "from": self.first, "to": self.end,
                "source": self.source, "state": self.state, "hours_total": self.hours_total,
                "hours_done": self.hours_done, "events": self.events, "objects": self.objects, "bytes": self.bytes,
                "deleted": self.deleted, "events_per_s": round(rate, 1), "eta_s": eta,
                "started_at": self.started_ms, "updated_at": self.updated_ms, "error": self.error,
                "hours_written": self.hours_written}


# --- the runner ------------------------------------------------------------------------------------------------------
AppendLedger = Callable[[LedgerRecord], Any]


class Backfill:
    """One backfill job of one destination: every data set it exports (events, merged IDs) that the request
    names, hour chunk by hour chunk (see the module)."""

    def __init__(self, settings: Settings, request: Request, storage: Storage, append_ledger: AppendLedger,
                 clock: Clock, spool_dir: Path, cancelled: Callable[[], bool] = lambda: False,
                 on_progress: Callable[[dict[str, Any]], None] = lambda doc: None,
                 archive_storage: Storage | None = None, mirror: MirrorLog | None = None):
        dest = settings.destination(request.destination)
        if dest is None:
            raise BackfillRefused(f"no destination {request.destination!r} in the settings "
                                  f"({', '.join(d.name for d in settings.destinations) or 'none'})")
        self.settings, self.dest, self.request = settings, dest, request
        self.storage, self.archive_storage = storage, archive_storage or storage
        self.append_ledger, self.clock, self.spool_dir = append_ledger, clock, spool_dir
        self.cancelled, self.on_progress = cancelled, on_progress
        self.mirror = mirror
        self.mirror_outcomes: Counter[tuple[str, Outcome]] = Counter()
        wanted = {"all": ("events", "merged_ids"), "events": ("events",), "merged_ids": ("merged_ids",),
                  "both": ("events", "merged_ids")}.get(request.exports)
        if wanted is None:
            raise BackfillRefused(f"exports must be events, merged_ids or all, not {request.exports!r}")
        self.inputs: list[ExportInput] = []
        if "events" in wanted and dest.exports_events():
            self.inputs.append(export_input(settings, dest, "accepted"))
        if "merged_ids" in wanted and dest.exports_merged_ids():
            self.inputs.append(export_input(settings, dest, "identity_merges"))
        if not self.inputs:
            raise BackfillRefused(f"destination {dest.name} does not export {request.exports} "
                                  f"(exports: {dest.exports})")
        self.limits = Limits(dest.max_object_bytes, dest.max_object_events, int(dest.close_grace_s * 1000))
        self.progress = Progress(request.job, dest.name, hour_text(request.first), hour_text(request.end),
                                 len(request.hours()) * len(self.inputs), request.source)
        self._last_report = 0

    # -- availability ------------------------------------------------------------------------------------------
    async def availability(self, source: ExportInput) -> Availability:
        return Availability(await self._accepted_from(source.topic), await self._archive_hours(source))

    async def _accepted_from(self, topic: str) -> int | None:
        """The first hour ``topic`` holds every event of, None when it never deleted a record."""
        c = AIOKafkaConsumer(**{**kafka.client_args(self.settings.kafka), "enable_auto_commit": False})
        await c.start()
        try:
            tps = [TopicPartition(topic, p) for p in sorted(await kafka.partitions(c, topic))]
            if not tps:
                return None
            begins = await c.beginning_offsets(tps)
            deleted = [tp for tp in tps if begins[tp] > 0]
            if not deleted:
                return None
            c.assign(deleted)
            firsts = []
            for tp in deleted:
                c.seek(tp, begins[tp])
            async for m in kafka.until_quiet(c, quiet_polls=1):
                firsts.append(m.timestamp)
                break
            # an event of hour H is accepted no earlier than H - the allowed clock skew: every hour from the first
            # record kept, plus that skew, rounded up, is whole
            first = max(firsts) if firsts else self.clock.now_ms()
            return hour_start(first + int(self.settings.ingest.max_clock_skew_s * 1000)) + HOUR_MS
        finally:
            await kafka.stop_all(c)

    async def _archive_hours(self, source: ExportInput) -> frozenset[int] | None:
        archive = self.settings.archive_of(self.dest.project)
        # the archive destination itself is rebuilt from its own objects only to apply mirror mutations (each object
        # is read whole, then written again under its key): otherwise that would rebuild nothing
        if archive is None or (archive.name == self.dest.name and self.mirror is None):
            return None
        hours = set()
        if source.layout.name == "merged_ids":
            if not archive.exports_merged_ids():
                return frozenset()
            prefix = f"{archive.prefix}{archive.project}/-{archive.org_id}_"
        else:
            prefix = f"{archive.prefix}{archive.project}/{archive.project}_"
        async for o in self.archive_storage.list(archive.bucket, prefix):
            label = o.key[len(prefix):].split("#", 1)[0].removesuffix("_complete").removesuffix(".json.gz")
            day, _, h = label.rpartition("_")
            try:
                hours.add(calendar.timegm(time.strptime(day, "%Y-%m-%d")) * 1000 + int(h) * HOUR_MS)
            except ValueError:
                continue
        return frozenset(hours)

    # -- running --------------------------------------------------------------------------------------------------
    async def run(self) -> dict[str, Any]:
        """Rebuild every hour of the request; returns the final progress document (state done, cancelled or
        failed). Raises BackfillRefused, before writing anything, for hours nobody holds."""
        plans = [(source, plan(self.request, await self.availability(source))) for source in self.inputs]
        now = self.clock.now_ms()
        self.progress.started_ms = self.progress.updated_ms = now
        await self._report(force=True)
        try:
            for source, hours in plans:
                for chunk in chunks(hours, self.settings.backfill.chunk_hours):
                    if self.cancelled():
                        self.progress.state = "cancelled"
                        return await self._report(force=True)
                    accepted = [h for h, s in chunk if s == "accepted"]
                    if accepted:
                        await self._rebuild_from_topic(source, accepted)
                    for h in [h for h, s in chunk if s == "archive"]:
                        await self._rebuild_from_archive(source, h)
            self.progress.state = "done"
        except asyncio.CancelledError:
            self.progress.state = "cancelled"
            await self._report(force=True)
            raise
        except Exception as exc:
            self.progress.state, self.progress.error = "failed", f"{type(exc).__name__}: {exc}"
            log.exception("backfill %s failed", self.request.job)
        return await self._report(force=True)

    async def _report(self, force: bool = False) -> dict[str, Any]:
        now = self.clock.now_ms()
        self.progress.updated_ms = now
        doc = self.progress.doc()
        if force or now - self._last_report >= self.settings.backfill.progress_interval_s * 1000:
            self._last_report = now
            d = self.dest
            await self.append_ledger(LedgerRecord(
                d.name, d.project, "", -1, self.request.first, d.bucket, self.request.job, -1, -1,
                self.progress.events, {}, self.progress.bytes, self.progress.state, now, Kind.JOB.value,
                orjson.dumps(doc).decode()))
            crash_point("backfill.progress")
        self.on_progress(doc)
        return doc

    async def _record(self, source: ExportInput, kind: str, partition: int, hour: int, key: str,
                      obj: ClosedObject | None = None, reason: str = "") -> None:
        d = self.dest
        detail = orjson.dumps({"job": self.request.job}).decode()
        if obj is not None:
            rec = LedgerRecord(source.name, d.project, source.topic, obj.partition, obj.hour, d.bucket, obj.key,
                               obj.start_offset, obj.end_offset, obj.events, obj.marks, obj.size,
                               CloseReason.REBUILT.value, self.clock.now_ms(), Kind.OBJECT.value, detail, obj.group)
        else:
            rec = LedgerRecord(source.name, d.project, source.topic, partition, hour, d.bucket, key, -1, -1, 0, {}, 0,
                               reason, self.clock.now_ms(), kind, detail)
        await self.append_ledger(rec)

    async def _upload(self, source: ExportInput, obj: ClosedObject) -> None:
        d = self.dest
        await self.storage.put_file(PutRequest(d.bucket, obj.key, obj.path, obj.size, source.layout.content_type,
                                               source.layout.content_encoding, {
            "stream-topic": source.topic, "stream-partition": str(obj.partition),
            "stream-start-offset": str(obj.start_offset), "stream-end-offset": str(obj.end_offset),
            "stream-events": str(obj.events), "stream-job": self.request.job}))
        crash_point("backfill.uploaded")
        await self._record(source, Kind.OBJECT.value, obj.partition, obj.hour, obj.key, obj)
        obj.path.unlink(missing_ok=True)
        self.progress.objects += 1
        self.progress.events += obj.events
        self.progress.bytes += obj.size
        await self._report()

    async def _mutations(self, source: ExportInput, hour: int,
                         kept: KeptMutations | None) -> Mapping[str, Sequence[Mutation]]:
        """The mirror mutations kept for the hour, which every rebuild of it applies; none for a layout other than
        Amplitude's (mirror events do not reach Segment-layout destinations, as the vendor's do not reach its
        streaming destinations) or without a mirror source."""
        if kept is None or self.mirror is None or source.layout.name != "amplitude":
            return {}
        return await self.mirror.keep(self.dest.project, hour, kept)

    def _kept(self, source: ExportInput, spool: Path) -> KeptMutations | None:
        """Where a pass spills its hours' kept mutations (none without a mirror log for this layout)."""
        if self.mirror is None or source.layout.name != "amplitude":
            return None
        return KeptMutations(spool / f"mirror-{self.request.job}")

    # -- from the topic -------------------------------------------------------------------------------------------
    async def _live_ledger(self, source: ExportInput) -> list[LedgerRecord]:
        """The records of ``source``'s ledger so far (the live export's cuts and objects)."""
        from stream.export.feed import load_ledger
        return (await load_ledger(self.settings, source.name))[1]

    async def _end_offsets(self, topic: str) -> dict[int, int]:
        return await kafka.end_offsets(self.settings, topic)

    async def _rebuild_from_topic(self, source: ExportInput, hours: list[int]) -> None:
        spool = self.spool_dir / source.name.replace("/", "_")
        spool.mkdir(parents=True, exist_ok=True)
        kept = self._kept(source, spool)
        # the hours' kept mutations read while the ledger is read, the hours claimed and the topic's reading starts
        mutations = asyncio.ensure_future(self._load_mutations(source, hours, kept))
        try:
            await self._claim_and_rebuild(source, hours, spool, mutations)
        finally:
            mutations.cancel()
            await asyncio.gather(mutations, return_exceptions=True)
            if kept is not None:
                kept.close()

    async def _load_mutations(self, source: ExportInput, hours: list[int],
                              kept: KeptMutations | None) -> dict[int, Mapping[str, Sequence[Mutation]]]:
        """The kept mutations of each hour (the hours' logs read together, at most mirror_apply.LOG_READS objects
        at once, not an hour after another)."""
        reads = [asyncio.ensure_future(self._mutations(source, h, kept)) for h in hours]
        try:
            return dict(zip(hours, await asyncio.gather(*reads)))
        except BaseException:
            for t in reads:
                t.cancel()
            await asyncio.gather(*reads, return_exceptions=True)
            raise

    async def _claim_and_rebuild(self, source: ExportInput, hours: list[int], spool: Path,
                                 mutations: asyncio.Future[dict[int, Mapping[str, Sequence[Mutation]]]]) -> None:
        live = await self._live_ledger(source)
        ends = await self._end_offsets(source.topic)
        claim = Claim(self.request.job, tuple(hours), ends)
        await self.append_ledger(claim.record(source.name, self.dest.project, source.topic, self.dest.bucket,
                                              self.clock.now_ms()))
        crash_point("backfill.claimed")
        await pause_point("backfill.claimed")
        acks = await self._await_acknowledgements(source, claim)
        wanted, hour_cuts = set(hours), cuts(live, set(hours))
        await self._rebuild_pass(source, hours, live, ends, acks, hour_cuts, wanted, spool, mutations)

    async def _rebuild_pass(self, source: ExportInput, hours: list[int], live: list[LedgerRecord],
                            ends: dict[int, int], acks: Acknowledgements, hour_cuts: set[tuple[int, int]],
                            wanted: set[int], spool: Path,
                            loading: asyncio.Future[dict[int, Mapping[str, Sequence[Mutation]]]]) -> None:
        written: set[str] = set()
        writers: dict[int, PartitionWriter] = {}
        mutations: dict[int, Mapping[str, Sequence[Mutation]]] = {}
        ids: dict[int, frozenset[bytes]] = {}
        matched: dict[int, dict[str, set[int]]] = {h: {} for h in hours}
        insert_is_update = self.mirror is not None and self.mirror.insert_is_update
        loaded = False
        async for partition, offset, value in self._read(source.topic, acks.read_ends()):
            if not loaded:          # the first record: the topic's consumer was started meanwhile
                mutations, loaded = await loading, True
                ids = {h: insert_ids(mutations[h]) for h in hours if mutations[h]}
            w = writers.get(partition)
            if w is None:
                w = writers[partition] = PartitionWriter(partition, source.layout.key, spool, LedgerIndex(),
                                                         self.limits, getattr(source.layout, "first_key", None))
            rows = decode_rows(value)
            group = source.layout.group(rows) if rows.count else ""
            if rows.project != self.dest.project or rows.hour not in wanted or not rows.count or \
                    not source.layout.takes(rows) or offset >= acks.end(partition, rows.hour, group):
                w.skip(offset)
                continue
            blob, offsets = source.layout.lines(rows), rows.offsets
            if mutations[rows.hour]:
                blob, offsets = rewrite_batch(blob, offsets, mutations[rows.hour], insert_is_update,
                                              self.mirror_outcomes, matched[rows.hour], ids[rows.hour])
            if offsets:
                closed = w.add(offset, rows.hour, group, blob, len(offsets), rows.earliest_ms, rows.latest_ms,
                               rows.source, offsets)
            else:                      # every row of the batch deleted: the object is cut where it was all the same
                w.skip(offset)
                closed = []
            if (partition, offset) in hour_cuts:
                closed += w.close_open(CloseReason.REBUILT, rows.hour)
            for obj in closed:
                await self._upload(source, obj)
                w.written(obj)
                written.add(obj.key)
        for p, w in writers.items():
            for obj in w.close_open(CloseReason.REBUILT):
                await self._upload(source, obj)
                w.written(obj)
                written.add(obj.key)
        mutations = await loading
        for h in hours:
            count_unmatched(mutations[h], matched[h], self.mirror_outcomes)
        crash_point("backfill.written")
        groups = self._groups(source)
        for h in hours:
            await self._clean_hour(source, h, written, ends, groups, live)
            self.progress.hours_done += 1
            self.progress.hours_written.append(h)
            await self._report(force=True)

    def _groups(self, source: ExportInput) -> list[str]:
        if source.layout.name != "segment":
            return [""]
        own = [s.source_id for p in self.settings.projects if p.id == self.dest.project for s in p.segment_sources]
        return sorted({source.layout.default_source, *own})

    async def _await_acknowledgements(self, source: ExportInput, claim: Claim) -> Acknowledgements:
        """Until the live exporters of ``source`` acknowledged the claim on every partition, or have no consumer
        (the live export is off, or no worker runs it: no upload of it is in flight)."""
        from stream.export.feed import LedgerTail
        group = f"{self.settings.worker.app_id}-export-{source.name}"
        tail = LedgerTail(self.settings, source.name)
        await tail.start()
        acks = Acknowledgements(claim)
        acked = acks.acked
        deadline = time.monotonic() + self.settings.backfill.ack_timeout_s
        try:
            while True:
                acks.take(await tail.poll())
                if acks.done() or not await self._group_members(group):
                    return acks
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the live export of {source.name} did not acknowledge the claim of hours "
                        f"{hour_text(min(claim.hours))}..{hour_text(max(claim.hours))} within "
                        f"{self.settings.backfill.ack_timeout_s:g}s (partitions {sorted(set(claim.ends) - acked)} "
                        "silent; is its upload failing?): nothing of these hours was changed; run the backfill "
                        "again once the destination's status is ok")
                await asyncio.sleep(0.5)
        finally:
            await tail.stop()

    async def _group_members(self, group: str) -> int:
        from aiokafka.admin import AIOKafkaAdminClient
        admin = AIOKafkaAdminClient(**kafka.client_args(self.settings.kafka))
        await admin.start()
        try:
            answers = await admin.describe_consumer_groups([group])
        finally:
            await admin.close()
        return sum(len(g[5]) for a in answers for g in a.groups if g[1] == group)

    async def _read(self, topic: str, ends: dict[int, int]) -> AsyncIterator[tuple[int, int, bytes]]:
        """Every record of ``topic`` below ``ends``, partition by partition interleaved, in offset order."""
        c = AIOKafkaConsumer(**{**kafka.client_args(self.settings.kafka), "enable_auto_commit": False,
                                "max_partition_fetch_bytes": max(self.settings.kafka.max_request_bytes, 1 << 20)})
        await c.start()
        try:
            todo = {TopicPartition(topic, p): e for p, e in ends.items() if e > 0}
            if not todo:
                return
            c.assign(list(todo))
            await c.seek_to_beginning(*todo)
            while todo:
                polled = await c.getmany(timeout_ms=1000, max_records=500)
                for tp, recs in polled.items():
                    for r in recs:
                        if tp in todo and r.offset < todo[tp]:
                            yield tp.partition, r.offset, r.value
                for tp in list(todo):
                    if await c.position(tp) >= todo[tp]:
                        del todo[tp]
                        c.pause(tp)
        finally:
            await kafka.stop_all(c)

    async def _clean_hour(self, source: ExportInput, hour: int, written: set[str], ends: dict[int, int],
                          groups: list[str], live: Sequence[LedgerRecord]) -> None:
        """Remove the hour's objects the rebuild replaces (first offset below the claim's end), then mark it."""
        d = self.dest
        starts = {r.key: (r.partition, r.start_offset) for r in live if r.kind == Kind.OBJECT.value}
        for prefix in hour_prefixes(source.layout, hour, groups):
            async for o in self.storage.list(d.bucket, prefix):
                rest = o.key[len(prefix):]
                if o.key in written or (source.layout.name == "merged_ids" and rest[:1] not in (".", "#")):
                    continue
                n = number_of(o.key)
                partition, start = parse_number(n) if n is not None else starts.get(o.key, (None, None))
                if partition is None or start >= ends.get(partition, 0):
                    continue       # a straggler the live export wrote past the claim: its own
                await self.storage.delete(d.bucket, o.key)
                crash_point("backfill.deleted")
                await self._record(source, Kind.DELETED.value, partition, hour, o.key)
                self.progress.deleted += 1
        await self._mark(source, hour)

    async def _mark(self, source: ExportInput, hour: int) -> None:
        key = source.layout.marker_key(hour)
        if key is None:
            return
        await self.storage.put_bytes(self.dest.bucket, key, b"", "application/octet-stream")
        await self._record(source, Kind.MARKER.value, -1, hour, key, reason="complete")
        crash_point("backfill.marked")

    # -- from the archive -----------------------------------------------------------------------------------------
    async def _rebuild_from_archive(self, source: ExportInput, hour: int) -> None:
        """The hour's objects of the archive destination, each read back and written as one object of this
        destination, numbered as the archive's (so a migration to a new bucket gets the same keys)."""
        archive = self.settings.archive_of(self.dest.project)
        assert archive is not None
        kept = self._kept(source, self.spool_dir / f"{source.name}-archive")
        try:
            await self._rebuild_archive_hour(source, hour, archive, kept)
        finally:
            if kept is not None:
                kept.close()

    async def _rebuild_archive_hour(self, source: ExportInput, hour: int, archive: DestinationSettings,
                                    kept: KeptMutations | None) -> None:
        mutations = await self._mutations(source, hour, kept)
        from stream.events.batch import Rows
        from stream.export.layout import MergedIdsLayout
        if source.layout.name == "merged_ids":
            arch = MergedIdsLayout(archive.prefix, archive.project, archive.org_id or 0)
            prefixes = hour_prefixes(arch, hour)
        else:
            prefixes = [f"{archive.prefix}{archive.project}/{archive.project}_"
                        f"{time.strftime('%Y-%m-%d', time.gmtime(hour // 1000))}_{time.gmtime(hour // 1000).tm_hour}#"]
        written: set[str] = set()
        spool = self.spool_dir / f"{source.name}-archive"
        spool.mkdir(parents=True, exist_ok=True)
        ids = insert_ids(mutations) if mutations else None
        matched: dict[str, set[int]] = {}       # across the hour's objects: a mutation matches in one of them
        for prefix in prefixes:
            async for o in self.archive_storage.list(archive.bucket, prefix):
                rest = o.key[len(prefix):]
                if not (rest.endswith(".json.gz") and (rest[:1] in (".", "#") or prefix.endswith("#"))):
                    continue
                n = number_of(o.key)
                partition, start = parse_number(n) if n is not None else (0, 0)
                lines = [ln async for ln in self._archive_lines(archive.bucket, o.key)]
                if mutations:
                    blob, kept_rows = rewrite_batch(b"\n".join(lines), range(len(lines)), mutations,
                                                    self.mirror is not None and self.mirror.insert_is_update,
                                                    self.mirror_outcomes, matched, ids)
                    lines = blob.split(b"\n") if kept_rows else []
                if not lines:
                    continue
                rows = Rows(self.dest.project, hour, hour, hour, len(lines), b"\n".join(lines), "archive",
                            [0] * len(lines), "", b"")
                group = source.layout.group(rows)
                key = (source.layout.first_key(hour, group, partition, start) if n is None and
                       hasattr(source.layout, "first_key") else source.layout.key(hour, group, partition, start))
                path = spool / f"a{partition}-{start}-{hour}.json.gz.part"
                gz = GzipLinesSpool(path)
                gz.write_rows(source.layout.lines(rows), len(lines))
                size = gz.close()
                obj = ClosedObject(partition, hour, group, key, start, start, len(lines), gz.raw_bytes, size, path,
                                   CloseReason.REBUILT, {}, hour, False)
                await self._upload(source, obj)
                written.add(key)
        if mutations:
            count_unmatched(mutations, matched, self.mirror_outcomes)
        await self._clean_archive_hour(source, hour, written)
        self.progress.hours_done += 1
        self.progress.hours_written.append(hour)
        await self._report(force=True)

    async def _archive_lines(self, bucket: str, key: str) -> AsyncIterator[bytes]:
        z = isal_zlib.decompressobj(31)
        rest = b""
        async for chunk in self.archive_storage.read(bucket, key):
            data = rest + z.decompress(chunk)
            *lines, rest = data.split(b"\n")
            for ln in lines:
                if ln:
                    yield ln
        data = rest + z.flush()
        for ln in data.split(b"\n"):
            if ln:
                yield ln

    async def _clean_archive_hour(self, source: ExportInput, hour: int, written: set[str]) -> None:
        d = self.dest
        for prefix in hour_prefixes(source.layout, hour, self._groups(source)):
            async for o in self.storage.list(d.bucket, prefix):
                rest = o.key[len(prefix):]
                if o.key in written or (source.layout.name == "merged_ids" and rest[:1] not in (".", "#")):
                    continue
                await self.storage.delete(d.bucket, o.key)
                crash_point("backfill.deleted")
                n = number_of(o.key)
                await self._record(source, Kind.DELETED.value, parse_number(n)[0] if n is not None else 0, hour,
                                   o.key)
                self.progress.deleted += 1
        await self._mark(source, hour)


def destination_of(settings: Settings, name: str) -> DestinationSettings:
    d = settings.destination(name)
    if d is None:
        raise BackfillRefused(f"no destination {name!r} in the settings")
    return d
