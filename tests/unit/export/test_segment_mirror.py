"""The events a mirror import inserted reach the Amplitude layout and not the Segment layout: the mirror stage
sends them to events.valid with the Segment source ``MIRROR_SOURCE``, which no Segment-layout export takes."""

import asyncio
import gzip

import orjson

from stream.agents.mirror import new_events_sender
from stream.clock import FakeClock
from stream.events.batch import EventBatch, Origin, Source, decode_rows
from stream.export.backfill import Request
from stream.export.exporter import Exporter
from stream.export.layout import MIRROR_SOURCE, AmplitudeLayout, SegmentLayout
from stream.export.ledger import LedgerIndex
from stream.export.mirror import Mutation, Op
from stream.export.mirror_apply import Targeted
from stream.s3.storage import MemoryStorage
from stream.settings import load_settings
from tests.unit.export import test_backfill_race
from tests.unit.export.test_backfill_race import JOB, Interleaved, Run
from tests.unit.export.test_writer import settings as writer_settings

H7 = 1709967600000          # 2024-03-09 07:00 UTC
DAY = 1709942400000         # 2024-03-09 00:00 UTC
HOUR = 3_600_000
PROJECT = 424242


def row(insert_id, event_type, **kw):
    return {"$insert_id": insert_id, "event_type": event_type, "user_id": "u-77", "device_id": "d-1",
            "event_time": "2024-03-09 07:15:00.000000", "server_received_time": "2024-03-09 07:15:01.000000",
            "server_upload_time": "2024-03-09 07:15:01.000000",
            "uuid": f"6f1d2c3a-9b1e-5c7d-8e2f-3a4b5c6d7e{kw.pop('n', 0):02x}", **kw}


class Valid:
    """events.valid: what the mirror stage sends to it."""

    def __init__(self):
        self.sent: list[tuple[int, bytes]] = []

    async def send(self, value, partition=None):
        self.sent.append((partition, value))


def settings():
    return load_settings(None, projects=[{"id": PROJECT}], destinations=[
        {"name": "seg", "project": PROJECT, "bucket": "seg-bkt", "prefix": "", "layout": "segment",
         "close_grace_s": 1, "idle_close_s": 0},
        {"name": "amp", "project": PROJECT, "bucket": "amp-bkt", "prefix": "", "close_grace_s": 1,
         "idle_close_s": 0}], topics={"partitions": 1})


def mirror_batch(s) -> bytes:
    valid = Valid()
    insert = Mutation("m-1", Op.INSERT, (1, "s3://src/m1.json", 1), None, row("m-1", "Mirrored", n=1))
    asyncio.run(new_events_sender(valid, s)(0, [Targeted(PROJECT, insert, offset=7)]))
    [(partition, value)] = valid.sent
    assert partition == 0
    return value


def normal_batch() -> bytes:
    line = orjson.dumps(row("a-1", "Viewed", n=2))
    return EventBatch(PROJECT, H7, Origin("events.valid", 0, 0), [0], [b""], [H7 + 1000], [b"u" * 16], [line],
                      Source("events.valid", 0)).encode()


def test_the_mirror_stage_sends_its_new_events_with_the_mirror_segment_source():
    rows = decode_rows(mirror_batch(settings()))
    assert (rows.project, rows.hour, rows.count, rows.segment_source, rows.segment) == (PROJECT, H7, 1, "$mirror", b"")
    assert rows.segment_source == MIRROR_SOURCE
    assert orjson.loads(rows.blob)["$insert_id"] == "m-1"
    assert SegmentLayout("", str(PROJECT)).takes(rows) is False
    assert AmplitudeLayout("", PROJECT).takes(rows) is True
    assert SegmentLayout("", str(PROJECT)).takes(decode_rows(normal_batch())) is True


def export(s, name, batches, tmp_path):
    records, storage = [], MemoryStorage()

    async def append(rec):
        records.append(rec)
    dest = next(d for d in s.destinations if d.name == name)
    ex = Exporter(s, dest, storage, FakeClock(H7 + 2 * HOUR), tmp_path / name, append, LedgerIndex(), partitions=1)
    for offset, value in enumerate(batches):
        ex.add(0, offset, value)

    async def finish():
        for obj in ex.tick({0}):
            await ex.finish(obj)
    asyncio.run(finish())
    return ({k: gzip.decompress(v) for (_, k), v in storage.objects.items() if not k.endswith("_complete")},
            ex.committable())


def test_a_segment_layout_destination_exports_no_mirror_inserted_event_and_an_amplitude_one_does(tmp_path):
    s = settings()
    (tmp_path / "seg").mkdir()
    (tmp_path / "amp").mkdir()
    mirrored, normal = mirror_batch(s), normal_batch()
    seg, seg_committable = export(s, "seg", [normal, mirrored], tmp_path)
    assert seg == {f"segment-logs/{PROJECT}/{DAY}/{H7}-0.gz":
                   b'{"type":"track","event":"Viewed","messageId":"a-1","userId":"u-77","anonymousId":"d-1",'
                   b'"properties":{},"context":{},"integrations":{},"originalTimestamp":null,"sentAt":null,'
                   b'"timestamp":"2024-03-09T07:15:00.000Z","receivedAt":"2024-03-09T07:15:01.000Z"}\n'}
    assert seg_committable == {0: 2}
    amp, amp_committable = export(s, "amp", [normal, mirrored], tmp_path)
    mirrored_line = decode_rows(mirrored).blob
    assert b'"$skip_user_properties_sync":true' in mirrored_line
    assert amp == {f"{PROJECT}/{PROJECT}_2024-03-09_7#0.json.gz": orjson.dumps(row("a-1", "Viewed", n=2)) + b"\n" +
                   mirrored_line + b"\n"}
    assert amp_committable == {0: 2}


def test_a_backfill_of_a_segment_layout_destination_leaves_the_mirror_inserted_events_out(tmp_path, monkeypatch):
    monkeypatch.setattr(test_backfill_race, "settings", lambda **kw: writer_settings(layout="segment", **kw))
    run = Run(tmp_path, max_object_events=10, per_poll=10)
    run.topic.values[0] += [normal_batch(), mirror_batch(settings())]
    run.live(3)
    key = f"amp/segment-logs/{PROJECT}/{DAY}/{H7}-0.gz"
    live = {k: gzip.decompress(v) for (_, k), v in run.storage.objects.items()}
    assert list(live) == [key] and [orjson.loads(x)["messageId"] for x in live[key].splitlines()] == ["a-1"]
    b = Interleaved(run.topic, run.ledger, run.cycle.step, lambda: None, settings=run.s,
                    request=Request("main", H7, H7 + HOUR, job=JOB), storage=run.storage,
                    append_ledger=run.append, clock=run.clock, spool_dir=run.tmp / "bf")
    asyncio.run(b._rebuild_from_topic(b.inputs[0], [H7]))
    assert {k: gzip.decompress(v) for (_, k), v in run.storage.objects.items()} == live
    assert [(r.key, r.start_offset, r.end_offset, r.events, r.reason) for r in run.ledger if r.kind == "object"] == [
        (key, 0, 0, 1, "idle"), (key, 0, 0, 1, "rebuilt")]


def test_mirror_rebuilds_touch_the_enabled_amplitude_layout_destinations_of_the_project_only():
    from types import SimpleNamespace

    from stream.agents.mirror import Rebuilds
    s = load_settings(None, projects=[{"id": PROJECT}, {"id": 7}], destinations=[
        {"name": "seg", "project": PROJECT, "bucket": "bkt", "layout": "segment"},
        {"name": "amp", "project": PROJECT, "bucket": "bkt", "prefix": "amp/", "archive": True},
        {"name": "off", "project": PROJECT, "bucket": "bkt", "prefix": "off/", "enabled": False},
        {"name": "other", "project": 7, "bucket": "bkt", "prefix": "o/"}])
    r = Rebuilds(s, FakeClock(H7), SimpleNamespace(storages=None, producers=None))
    assert (r.destinations(PROJECT), r.clients_of(PROJECT), r.destinations(7)) == (["amp"], ["amp"], ["other"])
