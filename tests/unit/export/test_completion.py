"""Sealing hours, _complete markers, failures and the status view, with in-memory storage and a fake clock."""

import asyncio
import gzip

from botocore.exceptions import ClientError

from stream import metrics
from stream.clock import FakeClock
from stream.export.completion import ExportBook, iso_ms
from stream.export.exporter import Exporter
from stream.export.ledger import LedgerIndex, LedgerRecord
from stream.s3.storage import MemoryStorage
from tests.unit.export.test_writer import batch, settings

H7 = 1709967600000  # 2024-03-09 07:00 UTC
HOUR = 3_600_000
GRACE = 60_000


def make(tmp_path, storage=None, partitions=2, now=H7):
    s = settings(close_grace_s=60, idle_close_s=0)
    records = []

    async def append(rec):
        records.append(rec)
    clock = FakeClock(now)
    ex = Exporter(s, s.destinations[0], storage or MemoryStorage(), clock, tmp_path, append, LedgerIndex(),
                  partitions=partitions)
    return ex, ex.storage, records, clock


def add(ex, partition, offset, value):
    """Take a batch as the export agent does, keeping what it closes for the next cycle."""
    ex.__dict__.setdefault("closed", []).extend(ex.add(partition, offset, value))


def cycle(ex, records, idle=frozenset()):
    """One loop of the export agent: tick, finish, seal, the tail's reading, markers."""
    async def go():
        closed, ex.closed = ex.__dict__.get("closed", []), []
        for obj in closed + ex.tick(set(idle)):
            await ex.finish(obj)
        await ex.seal()
        for r in records[len(ex.book_seen):]:
            ex.book.add(r)
        ex.book_seen[:] = records
        return await ex.write_markers()
    ex.__dict__.setdefault("book_seen", [])
    return asyncio.run(go())


def test_an_hour_is_marked_complete_once_every_partition_sealed_it(tmp_path):
    ex, storage, records, clock = make(tmp_path)
    add(ex, 0, 0, batch(H7, [b'{"p":0}']))
    add(ex, 1, 0, batch(H7, [b'{"p":1}']))
    add(ex, 0, 1, batch(H7 + HOUR, [b'{"p":0,"h":8}'], [H7 + HOUR + GRACE]))   # partition 0 moves past 7:00 + grace
    clock.t = H7 + HOUR + 30_000
    assert cycle(ex, records) == []
    assert [(r.kind, r.partition, r.hour, r.reason) for r in records] == [
        ("object", 0, H7, "hour_closed"), ("seal", 0, H7, "hour_closed"),
        ("seal", 1, H7 - 2 * HOUR, "hour_closed")]              # partition 1's data is past 5:00 only
    assert ex.book.sealed_through() == H7 - 2 * HOUR
    clock.t = H7 + HOUR + GRACE                                 # partition 1 idle, the clock past 8:00 + grace
    assert cycle(ex, records, idle={1}) == ["amp/424242/424242_2024-03-09_7_complete"]
    assert [(r.kind, r.partition, r.hour, r.reason) for r in records[3:]] == [
        ("object", 1, H7, "idle"), ("seal", 1, H7, "idle"),
        ("marker", -1, H7, "complete")]
    assert storage.objects[("bkt", "amp/424242/424242_2024-03-09_7_complete")] == b""
    assert cycle(ex, records, idle={1}) == []                   # written once


def test_an_hour_without_events_gets_its_marker_too(tmp_path):
    ex, storage, records, clock = make(tmp_path, partitions=1)
    add(ex, 0, 0, batch(H7, [b"a"]))
    add(ex, 0, 1, batch(H7 + 2 * HOUR, [b"c"], [H7 + 3 * HOUR + GRACE]))   # nothing at 8:00; 9:00 passed too
    clock.t = H7 + 3 * HOUR + GRACE
    assert cycle(ex, records) == ["amp/424242/424242_2024-03-09_7_complete",
                                  "amp/424242/424242_2024-03-09_8_complete",
                                  "amp/424242/424242_2024-03-09_9_complete"]
    assert sorted(k for _, k in storage.objects) == [
        "amp/424242/424242_2024-03-09_7#0.json.gz", "amp/424242/424242_2024-03-09_7_complete",
        "amp/424242/424242_2024-03-09_8_complete", "amp/424242/424242_2024-03-09_9#1000.json.gz",
        "amp/424242/424242_2024-03-09_9_complete"]


def test_a_straggler_for_a_sealed_hour_becomes_an_extra_object_and_the_marker_stays(tmp_path):
    ex, storage, records, clock = make(tmp_path, partitions=1)
    add(ex, 0, 0, batch(H7, [b"a"]))
    add(ex, 0, 1, batch(H7 + HOUR, [b"b"], [H7 + HOUR + GRACE]))
    clock.t = H7 + HOUR + GRACE
    assert cycle(ex, records) == ["amp/424242/424242_2024-03-09_7_complete"]
    add(ex, 0, 2, batch(H7, [b"late"], [H7 + 10]))                       # 7:00 again, after its seal
    add(ex, 0, 3, batch(H7 + HOUR, [b"c"], [H7 + 2 * HOUR + GRACE]))      # the data moves on past 8:00 and the grace
    clock.t = H7 + 2 * HOUR + GRACE
    assert cycle(ex, records) == ["amp/424242/424242_2024-03-09_8_complete"]
    objects = [(r.key, r.events) for r in records if r.kind == "object"]
    assert objects == [("amp/424242/424242_2024-03-09_7#0.json.gz", 1),
                       ("amp/424242/424242_2024-03-09_7#2000.json.gz", 1),
                       ("amp/424242/424242_2024-03-09_8#1000.json.gz", 2)]
    assert gzip.decompress(storage.objects[("bkt", "amp/424242/424242_2024-03-09_7#2000.json.gz")]) == b"late\n"
    assert [r.hour for r in records if r.kind == "marker"] == [H7, H7 + HOUR]   # 7:00's marker not rewritten


def test_a_restarted_exporter_keeps_its_seals_and_marks_a_straggler_as_such(tmp_path):
    sealed = LedgerRecord.seal("main", 424242, "events.accepted", 0, H7, "bkt", "hour_closed", 0)
    ex, storage, records, clock = make(tmp_path, partitions=1)
    ex.use_ledger(LedgerIndex([sealed]))
    clock.t = H7 + HOUR + 1
    assert ex.writer(0).sealed_through == H7
    add(ex, 0, 5, batch(H7, [b"late"]))
    ex.tick(set())
    asyncio.run(ex.seal())
    assert [r.kind for r in records] == []                       # nothing new is sealed by a straggler
    clock.t = H7 + HOUR + GRACE
    closed = ex.tick({0})
    assert [(c.key, c.straggler) for c in closed] == [("amp/424242/424242_2024-03-09_7#5000.json.gz", True)]


def test_the_oldest_unwritten_event_is_tracked_until_its_object_is_on_s3(tmp_path):
    ex, storage, records, clock = make(tmp_path)
    assert ex.oldest_unwritten_ms() is None
    add(ex, 0, 0, batch(H7, [b"a", b"b"], [H7 + 500, H7 + 200]))
    add(ex, 1, 0, batch(H7, [b"c"], [H7 + 900]))
    assert ex.oldest_unwritten_ms() == H7 + 200
    clock.t = H7 + HOUR + GRACE
    cycle(ex, records, idle={0, 1})
    assert ex.oldest_unwritten_ms() is None
    ex.update_gauges()
    assert metrics.EXPORT_OLDEST_AGE.labels("main")._value.get() == 0
    assert metrics.EXPORT_LAST_SEALED.labels("main")._value.get() == H7 / 1000


class Flaky(MemoryStorage):
    """Refuses the first ``n`` uploads with ``code``."""

    def __init__(self, n, code, status, message="Access Denied"):
        super().__init__()
        self.left, self.code, self.status, self.message = n, code, status, message

    async def put_file(self, req):
        if self.left:
            self.left -= 1
            raise ClientError({"Error": {"Code": self.code, "Message": self.message},
                               "ResponseMetadata": {"HTTPStatusCode": self.status}}, "PutObject")
        await super().put_file(req)


def test_an_access_error_is_recorded_with_the_missing_permission_and_retried(tmp_path, monkeypatch):
    async def no_sleep(_):
        pass
    monkeypatch.setattr(asyncio, "sleep", no_sleep)
    ex, storage, records, clock = make(tmp_path, storage=Flaky(3, "AccessDenied", 403), partitions=1)
    before = metrics.EXPORT_UPLOAD_FAILURES.labels("main", "access_denied")._value.get()
    add(ex, 0, 0, batch(H7, [b"a"]))
    clock.t = H7 + HOUR + GRACE
    cycle(ex, records, idle={0})
    errors = [(r.kind, r.reason, r.key, r.detail) for r in records if r.kind == "error"]
    assert errors == [("error", "access_denied", "amp/424242/424242_2024-03-09_7#0.json.gz",
                       "missing s3:PutObject on arn:aws:s3:::bkt/amp/424242/* (or a bucket policy denies it, e.g. one "
                       "that requires another server-side encryption than encryption.type)")]
    # once: the same reason within a minute
    assert metrics.EXPORT_UPLOAD_FAILURES.labels("main", "access_denied")._value.get() - before == 3
    assert metrics.EXPORT_FAILING.labels("main")._value.get() == 0          # the fourth attempt succeeded
    assert [r.kind for r in records] == ["error", "object", "seal", "marker"]


def test_the_status_view_shows_each_hour_and_the_last_error():
    book = ExportBook("main", 2)
    obj = LedgerRecord("main", 424242, "events.accepted", 0, H7, "bkt", "amp/424242/424242_2024-03-09_7#0.json.gz",
                       0, 9, 10, {}, 321, "hour_closed", H7 + HOUR + GRACE)
    for r in [obj, obj,   # a rewritten object counts once
              LedgerRecord.seal("main", 424242, "events.accepted", 0, H7, "bkt", "hour_closed", H7 + HOUR),
              LedgerRecord.seal("main", 424242, "events.accepted", 1, H7, "bkt", "idle", H7 + HOUR),
              LedgerRecord.marker("main", 424242, "events.accepted", H7, "bkt",
                                  "amp/424242/424242_2024-03-09_7_complete", H7 + HOUR + 2),
              LedgerRecord.error("main", 424242, "events.accepted", 1, H7 + HOUR, "bkt",
                                 "amp/424242/424242_2024-03-09_8#1.json.gz", "no_such_bucket",
                                 "bucket bkt does not exist", H7 + 2 * HOUR),
              LedgerRecord.seal("other", 7, "events.accepted", 0, H7 + 5 * HOUR, "bkt", "idle", 0)]:
        book.add(r)
    assert book.status() == {
        "destination": "main", "state": "failing", "sealed_through": "2024-03-09T07:00:00Z",
        "partitions": {"0": "2024-03-09T07:00:00Z", "1": "2024-03-09T07:00:00Z"},
        "last_error": {"at": "2024-03-09T09:00:00.000Z", "reason": "no_such_bucket",
                       "detail": "bucket bkt does not exist", "key": "amp/424242/424242_2024-03-09_8#1.json.gz",
                       "partition": 1},
        "data_lost": [],
        "hours": [
            {"hour": "2024-03-09T08:00:00Z", "state": "open", "complete_marker": None, "objects": 0, "events": 0,
             "bytes": 0, "last_error": {"at": "2024-03-09T09:00:00.000Z", "reason": "no_such_bucket",
                                        "detail": "bucket bkt does not exist",
                                        "key": "amp/424242/424242_2024-03-09_8#1.json.gz", "partition": 1}},
            {"hour": "2024-03-09T07:00:00Z", "state": "sealed",
             "complete_marker": "amp/424242/424242_2024-03-09_7_complete", "objects": 1, "events": 10, "bytes": 321,
             "last_error": None}]}


def test_old_data_marks_its_own_hours_and_only_the_recent_empty_ones():
    now = H7 + 30 * 24 * HOUR                      # a month after the data
    book = ExportBook("main", 1)
    book.add(LedgerRecord("main", 424242, "events.accepted", 0, H7, "bkt", "k7", 0, 0, 1, {}, 1, "idle", 0))
    book.add(LedgerRecord("main", 424242, "events.accepted", 0, H7 + 2 * HOUR, "bkt", "k9", 1, 1, 1, {}, 1, "idle", 0))
    book.add(LedgerRecord.seal("main", 424242, "events.accepted", 0, now - 2 * HOUR, "bkt", "idle", now))
    due = book.markers_due(now)
    assert due[:2] == [H7, H7 + 2 * HOUR]          # 8:00 of that day, empty and long ago, is not marked
    assert due[2:] == list(range(now - 48 * HOUR, now - HOUR, HOUR))


def test_a_partition_must_stay_caught_up_for_idle_close_s_before_the_clock_closes_its_hour(tmp_path):
    s = settings(close_grace_s=60, idle_close_s=10)
    records = []

    async def append(rec):
        records.append(rec)
    clock = FakeClock(H7 + 5 * HOUR)       # long past 7:00: old data
    ex = Exporter(s, s.destinations[0], MemoryStorage(), clock, tmp_path, append, LedgerIndex(), partitions=1)
    ex.add(0, 0, batch(H7, [b"a"]))
    assert ex.tick({0}) == []              # caught up just now
    clock.advance(9_999)
    assert ex.tick({0}) == []
    ex.add(0, 1, batch(H7, [b"b"]))        # more of the hour trickles in: not idle any more
    clock.advance(5_000)
    assert ex.tick(set()) == [] and ex.tick({0}) == []
    clock.advance(10_000)
    (closed,) = ex.tick({0})               # ten seconds caught up in a row
    assert (closed.events, closed.reason.value) == (2, "idle")


def test_offsets_lost_to_the_retention_are_recorded_in_the_ledger_the_status_the_metrics_and_the_log(tmp_path, caplog):
    from stream import metrics
    ex, storage, records, clock = make(tmp_path, partitions=2)
    add(ex, 1, 0, batch(H7, [b"a"]))
    clock.t = H7 + HOUR + GRACE
    cycle(ex, records, idle={1})
    before = metrics.EXPORT_LOST.labels("main")._value.get()
    rec = asyncio.run(ex.record_gap(1, 120, 456))
    assert (rec.kind, rec.partition, rec.start_offset, rec.end_offset, rec.hour, rec.reason) == (
        "gap", 1, 120, 455, H7, "retention")
    assert rec.detail == (
        "offsets 120-455 of events.accepted[1] were deleted by the topic's retention (topics.retention_days) before "
        "destination main exported them; their events are missing from the hours after 2024-03-09T07:00:00Z (the "
        "last hour written from this partition). Rebuild those hours from the archive: stream exports backfill main "
        "--from <hour> --to <hour> --source archive; and keep a destination disabled or failing for less than the "
        "retention")
    assert records[-1] == rec
    assert metrics.EXPORT_LOST.labels("main")._value.get() - before == 336
    assert ex.book.status()["data_lost"] == [{"at": iso_ms(rec.written_at), "partition": 1, "first_offset": 120,
                                              "last_offset": 455, "detail": rec.detail}]
    assert f"export main: DATA LOST: {rec.detail}" in caplog.text
