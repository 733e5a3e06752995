"""The dedupe stage on the real table (RocksDB through faust's Table, no broker), its sends kept in lists."""

import asyncio
from types import SimpleNamespace

from stream.app import build_app
from stream.dedup.policy import DAY_MS, decode_changelog, encode_value
from stream.dedup.stage import DedupeStage
from stream.events.batch import SOURCE_SLOTS, EventBatch, Origin, Source
from stream.settings import load_settings

H = 1709967600000     # 2024-03-09 07:00 UTC
WINDOW = 7 * DAY_MS


def table(tmp_path, name="dedupe"):
    s = load_settings(None, worker={"app_id": "unit", "data_dir": str(tmp_path)}, projects=[{"id": 1}])
    t = build_app(s).tables[name]
    t.sent = []
    t.send_changelog = lambda partition, key, value, **kw: t.sent.append((partition, key, value))
    return t


class Stage:
    """A DedupeStage and what it sent: accepted batches (partition, batch) and dead letters (offset, error)."""

    def __init__(self, tmp_path, max_request_bytes=1 << 20, device=None):
        self.table, self.accepted, self.dead = table(tmp_path), [], []

        async def send(value, partition):
            self.accepted.append((partition, EventBatch.decode(value)))

        async def dead_letter(event, exc):
            self.dead.append((event.message.offset, type(exc).__name__))
        self.stage = DedupeStage(self.table, send, dead_letter, "events.valid", WINDOW, max_request_bytes, device)

    def handle(self, value, partition=0, offset=0, timestamp=1_800_000_000.0):
        msg = SimpleNamespace(topic="events.valid", partition=partition, offset=offset, timestamp=timestamp, key=None)
        asyncio.run(self.stage.handle(SimpleNamespace(value=value, message=msg)))


def batch(*events, offsets=None, source=None):
    """A batch of (key, time, uuid byte, line) events as the HTTP API writes it (no offsets: its own source)."""
    return EventBatch(1, H, Origin("events.ingest", 0, 9), offsets=offsets or [], keys=[e[0] for e in events],
                      times=[e[1] for e in events], uuids=[bytes([e[2]]) * 16 for e in events],
                      lines=[e[3] for e in events], source=source).encode()


def rows(b):
    return (str(b.source_of_events()[0]), b.source_of_events()[1], b.origin, b.lines)


def test_a_batch_keeps_first_occurrences_writes_them_in_one_changelog_record_and_sends_one_accepted_batch(tmp_path):
    s = Stage(tmp_path)
    s.handle(batch((b"k1", H, 1, b'{"a":1}'), (b"k1", H + 5, 2, b'{"a":2}'), (b"", H + 6, 3, b'{"b":1}'),
                   (b"k2", H + 7, 4, b'{"c":1}')), partition=2, offset=40)
    assert [(p, rows(b)) for p, b in s.accepted] == [
        (2, ("events.valid[2]", [40 * SOURCE_SLOTS, 40 * SOURCE_SLOTS + 2, 40 * SOURCE_SLOTS + 3],
             Origin("events.valid", 2, 40), [b'{"a":1}', b'{"b":1}', b'{"c":1}']))]
    ((p, key, value),) = s.table.sent
    assert (p, key, decode_changelog(value)) == (2, b"events.valid[2]@40", [
        (b"k1", encode_value(H, b"\1" * 16)), (b"k2", encode_value(H + 7, b"\4" * 16))])
    assert s.table.get_many(2, [b"k1", b"k2"]) == [encode_value(H, b"\1" * 16), encode_value(H + 7, b"\4" * 16)]
    assert s.dead == []


def test_a_replayed_message_sends_the_same_rows_again_and_writes_nothing_new(tmp_path):
    s = Stage(tmp_path)
    b = batch((b"k1", H, 1, b"x"), (b"k1", H, 2, b"y"), offsets=[5, 6], source=Source("events.ingest", 0))
    s.handle(b, offset=3)
    s.handle(b, offset=3)
    assert [rows(b) for _, b in s.accepted] == [("events.ingest[0]", [5], Origin("events.valid", 0, 3), [b"x"])] * 2
    assert len(s.table.sent) == 1


def test_a_key_seen_before_the_window_is_accepted_and_remembered_anew(tmp_path):
    s = Stage(tmp_path)
    s.handle(batch((b"k1", H, 1, b"x")), offset=0)
    s.handle(batch((b"k1", H + WINDOW - 1, 2, b"y")), offset=1)
    s.handle(batch((b"k1", H + WINDOW, 3, b"z")), offset=2)
    assert [b.lines for _, b in s.accepted] == [[b"x"], [b"z"]]
    assert s.table.get_many(0, [b"k1"]) == [encode_value(H + WINDOW, b"\3" * 16)]


def test_a_message_that_is_not_a_batch_is_dead_lettered_and_nothing_is_sent(tmp_path):
    s = Stage(tmp_path)
    s.handle(b"\xff\xff not avro", offset=12)
    assert (s.dead, s.accepted, s.table.sent) == ([(12, "EOFError")], [], [])


def test_a_batch_larger_than_half_a_request_goes_out_in_parts_that_keep_their_source_offsets(tmp_path):
    s = Stage(tmp_path, max_request_bytes=2 * (1024 + 2 * (48 + 2 + 400)))
    s.handle(batch(*[(b"k%d" % i, H + i, i, b"r" * 400) for i in range(5)], offsets=[10, 11, 12, 13, 14],
                   source=Source("events.ingest", 3)), partition=1, offset=7)
    assert [(p, b.offsets, len(b.lines), b.origin) for p, b in s.accepted] == [
        (1, [10, 11], 2, Origin("events.valid", 1, 7)), (1, [12, 13], 2, Origin("events.valid", 1, 7)),
        (1, [14], 1, Origin("events.valid", 1, 7))]


class Device:
    """A device side that takes the messages starting with b"remap" and marks the rows it enriches."""

    def __init__(self):
        self.calls = []

    async def remaps(self, value, partition, offset):
        self.calls.append(("remaps", partition, offset))
        return value.startswith(b"remap")

    async def batch(self, out, partition, offset, timestamp_ms, index=None):
        self.calls.append(("batch", partition, offset, timestamp_ms, len(out), index))
        out.lines = [ln + b"+" for ln in out.lines]
        return out


def test_with_identity_a_remap_message_goes_to_the_device_side_and_the_kept_rows_through_it(tmp_path):
    d = Device()
    s = Stage(tmp_path, device=d)
    s.handle(b"remap message", offset=1)
    s.handle(batch((b"k1", H, 1, b"x"), (b"k1", H, 2, b"y")), offset=2, timestamp=1_800_000_000.5)
    s.handle(batch((b"k1", H, 3, b"z")), offset=3)                  # all duplicates: the device side is not asked
    s.handle(batch((b"k1", H, 4, b"w"), (b"k2", H, 5, b"v")), offset=4, timestamp=1_800_000_001.0)
    # with each kept row's index in the message (the second of offset 4: its first is a duplicate)
    assert d.calls == [("remaps", 0, 1), ("remaps", 0, 2), ("batch", 0, 2, 1_800_000_000_500, 1, [0]),
                       ("remaps", 0, 3), ("remaps", 0, 4), ("batch", 0, 4, 1_800_000_001_000, 1, [1])]
    assert ([b.lines for _, b in s.accepted], s.dead) == ([[b"x+"], [b"v+"]], [])
