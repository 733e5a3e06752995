"""The Segment layout: keys by source and received day, full Segment messages as lines."""

import asyncio
import gzip

import orjson

from stream.clock import FakeClock
from stream.events.batch import EventBatch, Origin, Source, decode_rows
from stream.export.exporter import Exporter
from stream.export.layout import SegmentLayout
from stream.export.ledger import LedgerIndex
from stream.s3.storage import MemoryStorage
from stream.settings import load_settings

H7 = 1709967600000          # 2024-03-09 07:00 UTC
DAY = 1709942400000         # 2024-03-09 00:00 UTC
HOUR = 3_600_000
ROW = {"$insert_id": "ins-1", "event_type": "Plan Upgraded", "user_id": "u-77", "device_id": "d-1",
       "event_properties": {"plan": "pro"}, "client_event_time": "2024-03-09 07:15:00.000000",
       "client_upload_time": "2024-03-09 07:15:01.000000", "event_time": "2024-03-09 07:15:00.000000",
       "server_received_time": "2024-03-09 07:15:01.000000", "uuid": "6f1d2c3a-9b1e-5c7d-8e2f-3a4b5c6d7e8f",
       "platform": "iOS", "os_name": "ios", "library": "amplitude-swift/1.2.3", "user_properties": {}}


def batch(lines, segment=(), source_id="", offsets=(0,)):
    return EventBatch(424242, H7, Origin("events.valid", 0, 0), list(offsets), [b""] * len(lines),
                      [H7 + 1000] * len(lines), [b"u" * 16] * len(lines), lines, Source("events.valid", 0),
                      segment_source=source_id, segment=list(segment)).encode()


def test_keys_follow_segments_layout_with_the_received_day_in_epoch_ms():
    layout = SegmentLayout("logs/", "424242")
    assert layout.key(H7, "VhBYQcAjH5", 3, 12) == f"logs/segment-logs/VhBYQcAjH5/{DAY}/{H7}-12003.gz"
    assert layout.key(H7 + 17 * HOUR, "src", 0, 0) == f"logs/segment-logs/src/{DAY + 24 * HOUR}/{H7 + 17 * HOUR}-0.gz"
    assert layout.marker_key(H7) is None


def test_lines_are_the_segment_messages_or_track_messages_made_from_the_rows():
    layout = SegmentLayout("", "424242")
    msg = b'{"type":"identify","userId":"u-1","traits":{"a":1}}'
    row = orjson.dumps(ROW)
    rows = decode_rows(batch([b'{"r":1}', row], segment=[msg, b""], source_id="src-1", offsets=(0, 1)))
    assert layout.group(rows) == "src-1"
    first, second = layout.lines(rows).split(b"\n")
    assert first == msg
    assert orjson.loads(second) == {
        "type": "track", "event": "Plan Upgraded", "messageId": "ins-1", "userId": "u-77", "anonymousId": "d-1",
        "properties": {"plan": "pro"},
        "context": {"device": {"type": "iOS"}, "os": {"name": "ios"},
                    "library": {"name": "amplitude-swift", "version": "1.2.3"}},
        "integrations": {}, "originalTimestamp": "2024-03-09T07:15:00.000Z", "sentAt": "2024-03-09T07:15:01.000Z",
        "timestamp": "2024-03-09T07:15:00.000Z", "receivedAt": "2024-03-09T07:15:01.000Z"}
    amplitude_only = decode_rows(batch([row]))
    assert layout.group(amplitude_only) == "424242"
    assert orjson.loads(layout.lines(amplitude_only))["messageId"] == "ins-1"
    every = decode_rows(batch([b"{}", b"{}"], segment=[b'{"m":1}', b'{"m":2}'], source_id="s", offsets=(0, 1)))
    assert layout.lines(every) == b'{"m":1}\n{"m":2}'


def test_an_exporter_with_the_segment_layout_writes_one_object_per_source(tmp_path):
    s = load_settings(None, projects=[{"id": 424242}], destinations=[
        {"name": "seg", "project": 424242, "bucket": "bkt", "prefix": "", "layout": "segment", "close_grace_s": 1,
         "idle_close_s": 0}])
    records, storage = [], MemoryStorage()

    async def append(rec):
        records.append(rec)
    ex = Exporter(s, s.destinations[0], storage, FakeClock(H7 + 2 * HOUR), tmp_path, append, LedgerIndex(),
                  partitions=1)
    ex.add(0, 0, batch([b"{}"], segment=[b'{"m":"a1"}'], source_id="src-a", offsets=(0,)))
    ex.add(0, 1, batch([b"{}"], segment=[b'{"m":"b1"}'], source_id="src-b", offsets=(1,)))
    ex.add(0, 2, batch([b"{}"], segment=[b'{"m":"a2"}'], source_id="src-a", offsets=(2,)))

    async def finish():
        for obj in ex.tick({0}):
            await ex.finish(obj)
    asyncio.run(finish())
    assert {k: gzip.decompress(v) for (_, k), v in storage.objects.items()} == {
        f"segment-logs/src-a/{DAY}/{H7}-0.gz": b'{"m":"a1"}\n{"m":"a2"}\n',
        f"segment-logs/src-b/{DAY}/{H7}-1000.gz": b'{"m":"b1"}\n'}
    assert sorted((r.group, r.start_offset, r.end_offset) for r in records) == [("src-a", 0, 2), ("src-b", 1, 1)]
    assert ex.committable() == {0: 3}
    assert s.destinations[0].max_object_bytes == 100_000_000
