"""The exporter's core with in-memory storage and a fake clock: exact keys, contents, commits."""

import asyncio
import gzip
import itertools

from stream.clock import FakeClock
from stream.events.batch import EventBatch, Origin, Source
from stream.export.exporter import Exporter
from stream.export.ledger import LedgerIndex, LedgerRecord
from stream.s3.storage import MemoryStorage
from stream.settings import load_settings

H7 = 1709967600000  # 2024-03-09 07:00 UTC
HOUR = 3_600_000


def settings(**dest):
    return load_settings(None, projects=[{"id": 424242}, {"id": 7}], destinations=[
        {"name": "main", "project": 424242, "bucket": "bkt", "prefix": "amp/", "close_grace_s": 20, "idle_close_s": 0,
         **dest}])


_source_offsets = itertools.count()


def batch(hour, lines, times=None, project=424242, offsets=None, source=Source("events.ingest", 0)):
    """A batch as events.accepted carries it; by default its events are the next ones of events.ingest[0]."""
    times = times or [hour + 1000] * len(lines)
    offsets = offsets if offsets is not None else [next(_source_offsets) for _ in lines]
    return EventBatch(project, hour, Origin("events.valid", 0, 0), offsets, [b""] * len(lines), times,
                      [b"u" * 16] * len(lines), lines, source).encode()


def make(tmp_path, ledger=None, **dest):
    s = settings(**dest)
    records = []

    async def append(rec):
        records.append(rec)
    storage = MemoryStorage()
    ex = Exporter(s, s.destinations[0], storage, FakeClock(H7 + 2 * HOUR), tmp_path, append, ledger or LedgerIndex())
    return ex, storage, records


def finish_all(ex, closed):
    async def go():
        for obj in closed:
            await ex.finish(obj)
    asyncio.run(go())


def test_an_hour_is_written_once_its_partition_moves_past_it(tmp_path):
    ex, storage, records = make(tmp_path)
    assert ex.add(3, 10, batch(H7, [b'{"a":1}', b'{"a":2}'])) == []
    assert ex.add(3, 11, batch(H7, [b'{"a":3}'])) == []
    assert ex.committable() == {3: 10}
    closed = ex.add(3, 12, batch(H7 + HOUR, [b'{"b":1}'], [H7 + HOUR + 20_000]))
    assert [c.key for c in closed] == ["amp/424242/424242_2024-03-09_7#10003.json.gz"]
    finish_all(ex, closed)
    assert gzip.decompress(storage.objects[("bkt", "amp/424242/424242_2024-03-09_7#10003.json.gz")]) == \
        b'{"a":1}\n{"a":2}\n{"a":3}\n'
    assert [(r.key, r.start_offset, r.end_offset, r.events, r.reason) for r in records] == [
        ("amp/424242/424242_2024-03-09_7#10003.json.gz", 10, 11, 3, "hour_closed")]
    assert ex.committable() == {3: 12}   # hour 8 is still open from offset 12


def test_other_projects_are_skipped_but_their_offsets_committed(tmp_path):
    ex, storage, _ = make(tmp_path)
    assert ex.add(0, 0, batch(H7, [b"x"], project=7)) == []
    assert ex.committable() == {0: 1}


def test_a_straggler_for_a_closed_hour_goes_into_a_new_object(tmp_path):
    ex, storage, _ = make(tmp_path)
    ex.add(0, 0, batch(H7, [b"a"]))
    finish_all(ex, ex.add(0, 1, batch(H7 + HOUR, [b"b"], [H7 + HOUR + 30_000])))
    assert ex.add(0, 2, batch(H7, [b"late"])) == []
    assert ex.add(0, 3, batch(H7, [b"later"])) == []      # the same straggler object
    closed = ex.tick(caught_up={0})  # the clock is past the straggler's deadline, not hour 8's
    assert [c.key for c in closed] == ["amp/424242/424242_2024-03-09_7#2000.json.gz"]
    finish_all(ex, closed)
    assert set(storage.objects) == {("bkt", "amp/424242/424242_2024-03-09_7#0.json.gz"),
                                    ("bkt", "amp/424242/424242_2024-03-09_7#2000.json.gz")}
    assert gzip.decompress(storage.objects[("bkt", "amp/424242/424242_2024-03-09_7#2000.json.gz")]) == \
        b"late\nlater\n"
    assert ex.committable() == {0: 1}   # hour 8, open since offset 1


def test_objects_rotate_at_the_size_limit(tmp_path):
    ex, storage, records = make(tmp_path, max_object_bytes=10)
    assert ex.add(0, 0, batch(H7, [b"12345"])) == []
    closed = ex.add(0, 1, batch(H7, [b"67890"]))
    assert [(c.key, c.reason.value) for c in closed] == [("amp/424242/424242_2024-03-09_7#0.json.gz", "size")]
    finish_all(ex, closed)
    ex.add(0, 2, batch(H7, [b"x"]))
    assert ex.committable() == {0: 2}


def test_after_a_restart_events_already_in_a_written_object_are_skipped(tmp_path):
    written = LedgerRecord("main", 424242, "events.accepted", 0, H7, "bkt", "amp/424242/424242_2024-03-09_7#0.json.gz",
                           0, 4, 9, {}, 100, "hour_closed", 0)
    ex, storage, _ = make(tmp_path, ledger=LedgerIndex([written]))
    assert ex.add(0, 3, batch(H7, [b"old"])) == []        # inside #0 already
    ex.add(0, 5, batch(H7, [b"new"]))
    closed = ex.tick(caught_up={0})
    assert [c.key for c in closed] == ["amp/424242/424242_2024-03-09_7#5000.json.gz"]
    finish_all(ex, closed)
    assert gzip.decompress(storage.objects[("bkt", closed[0].key)]) == b"new\n"


def test_an_upstream_replay_is_dropped_whole_or_in_part(tmp_path):
    ex, storage, records = make(tmp_path)
    ex.add(0, 0, batch(H7, [b"a", b"b", b"c"], offsets=[10, 11, 12]))
    ex.add(0, 1, batch(H7, [b"b", b"c"], offsets=[11, 12]))                 # replayed whole
    ex.add(0, 2, batch(H7, [b"c", b"d", b"e"], offsets=[12, 13, 14]))       # replayed in part
    ex.add(0, 3, batch(H7, [b"x"], offsets=[5], source=Source("events.api", 0)))   # another source
    closed = ex.tick(caught_up={0})
    finish_all(ex, closed)
    assert gzip.decompress(storage.objects[("bkt", "amp/424242/424242_2024-03-09_7#0.json.gz")]) == \
        b"a\nb\nc\nd\ne\nx\n"
    assert ex.writers[0].skipped_events == 3
    assert records[0].marks == {"events.ingest[0]": 14, "events.api[0]": 5}


def test_after_a_restart_the_ledger_marks_drop_replays_of_written_events(tmp_path):
    written = LedgerRecord("main", 424242, "events.accepted", 0, H7, "bkt", "amp/424242/424242_2024-03-09_7#0.json.gz",
                           0, 4, 3, {"events.ingest[0]": 12}, 100, "hour_closed", 0)
    ex, storage, _ = make(tmp_path, ledger=LedgerIndex([written]))
    ex.add(0, 9, batch(H7, [b"b", b"c", b"d"], offsets=[11, 12, 13]))      # a dedupe replay after the object
    ex.add(0, 10, batch(H7 + HOUR, [b"z"], offsets=[12]))                   # another hour: not the same mark
    finish_all(ex, ex.tick(caught_up={0}))
    assert gzip.decompress(storage.objects[("bkt", "amp/424242/424242_2024-03-09_7#9000.json.gz")]) == b"d\n"
    assert ex.writers[0].skipped_events == 2


def merged_ids(tmp_path, ledger=None, **dest):
    from stream.export.exporter import export_input
    s = settings(exports="both", org_id=99, **dest)
    records = []

    async def append(rec):
        records.append(rec)
    storage = MemoryStorage()
    ex = Exporter(s, s.destinations[0], storage, FakeClock(H7 + 2 * HOUR), tmp_path, append, ledger or LedgerIndex(),
                  partitions=1, source=export_input(s, s.destinations[0], "identity_merges"))
    return ex, storage, records


def test_merged_ids_go_to_one_file_per_hour_named_by_org_then_numbered_objects(tmp_path):
    ex, storage, records = merged_ids(tmp_path, max_object_bytes=20)
    src = Source("identity.links", 0)
    ex.add(0, 0, batch(H7, [b'{"m":1}'], offsets=[0], source=src))
    closed = ex.add(0, 1, batch(H7, [b'{"m":2}', b'{"m":3}'], offsets=[1, 1], source=src))    # over 20 bytes
    finish_all(ex, closed)
    ex.add(0, 2, batch(H7, [b'{"m":4}'], offsets=[2], source=src))
    finish_all(ex, ex.add(0, 3, batch(H7 + HOUR, [b'{"m":5}'], [H7 + HOUR + 30_000], offsets=[3], source=src)))
    assert sorted(k for _, k in storage.objects) == ["amp/424242/-99_2024-03-09_7#2000.json.gz",
                                                     "amp/424242/-99_2024-03-09_7.json.gz"]
    assert gzip.decompress(storage.objects[("bkt", "amp/424242/-99_2024-03-09_7.json.gz")]) == \
        b'{"m":1}\n{"m":2}\n{"m":3}\n'
    assert {r.destination for r in records} == {"main.merged-ids"}
    assert ex.topic == "identity.merges"
    # after a restart the ledger has the hour's first object: a rebuilt later object keeps its number
    ex2, storage2, _ = merged_ids(tmp_path, LedgerIndex(records[:1]), max_object_bytes=20)
    ex2.add(0, 2, batch(H7, [b'{"m":4}'], offsets=[2], source=src))
    closed = ex2.add(0, 3, batch(H7 + HOUR, [b'{"m":5}'], [H7 + HOUR + 30_000], offsets=[3], source=src))
    assert [c.key for c in closed] == ["amp/424242/-99_2024-03-09_7#2000.json.gz"]


def test_an_object_written_again_under_its_key_is_counted_once_in_the_metrics(tmp_path):
    from stream import metrics

    def counts():
        return (metrics.EXPORT_EVENTS.labels("main")._value.get(),
                sum(metrics.EXPORT_OBJECTS.labels("main", r)._value.get() for r in ("hour_closed", "idle")))
    ex, _, records = make(tmp_path)
    ex.add(3, 20, batch(H7, [b'{"a":1}', b'{"a":2}']))
    before = counts()
    finish_all(ex, ex.add(3, 21, batch(H7 + HOUR, [b'{"b":1}'], [H7 + HOUR + 20_000])))
    assert counts() == (before[0] + 2, before[1] + 1)
    # the next owner of the partition reads the same offsets from the last commit and writes the object again,
    # now holding one more event
    ex2, _, _ = make(tmp_path, LedgerIndex(records[:0]))
    ex2.ledger.add(records[0])
    ex2.writer(3)._ledger = LedgerIndex()            # its ledger was read before the first owner's record
    ex2.add(3, 20, batch(H7, [b'{"a":1}', b'{"a":2}', b'{"a":3}']))
    finish_all(ex2, ex2.add(3, 21, batch(H7 + HOUR, [b'{"b":1}'], [H7 + HOUR + 20_000])))
    assert counts() == (before[0] + 3, before[1] + 1)
