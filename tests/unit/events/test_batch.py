import io
from types import SimpleNamespace

import fastavro
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.events import avro, deadletter
from stream.events.batch import EventBatch, Origin, Source
from stream.events.ingest import ingest_records
from stream.events.normalize import Rules
from stream.events.partitioning import partition_for

H = 1709967600000
NOW = H + 7_200_000


def rec(offset, value, key=None, ts=H + 5, headers=()):
    return SimpleNamespace(offset=offset, value=value, key=key, timestamp=ts, headers=headers)


def test_every_schema_parses():
    for name in ("event", "event_batch", "dead_letter", "export_ledger"):
        assert fastavro.parse_schema(avro.schema(name)) is not None


def test_partitioning_matches_kafkas_default_partitioner():
    # The Java client's Utils.murmur2("21") is -973932308; its partition is toPositive(hash) % n.
    java_hash = -973932308
    for n in (1, 3, 4, 12, 999):
        assert partition_for("21", n) == (java_hash & 0x7FFFFFFF) % n


def test_a_poll_becomes_batches_per_target_partition_and_hour_plus_dead_letters():
    recs = [rec(0, b'{"event_type":"a","device_id":"device-1","insert_id":"i1"}'),
            rec(1, b'{"event_type":"a","device_id":"device-2"}', ts=H + 3_600_000),
            rec(2, b'{"bad json'),
            rec(3, b'{"event_type":"b","device_id":"device-1"}', headers=(("project", b"7"),))]
    res = ingest_records(recs, "events.ingest", 0, projects=frozenset({424242, 7}), default_project=424242,
                         rules=Rules(), partitions=4, max_events=100, now_ms=H + 7_200_099)
    assert res.valid == 3
    assert dict(res.reasons) == {"malformed_json": 1}
    got = sorted((t, b.project, b.hour, b.offsets, b.origin) for t, b in res.batches)
    p1, p2 = partition_for("device-1", 4), partition_for("device-2", 4)
    assert got == sorted([(p1, 424242, H, [0], Origin("events.ingest", 0, 0)),
                          (p2, 424242, H + 3_600_000, [1], Origin("events.ingest", 0, 1)),
                          (p1, 7, H, [3], Origin("events.ingest", 0, 3))])
    (key, dl), = res.dead
    d = deadletter.decode(dl)
    assert (d["reason"], d["field"], d["topic"], d["partition"], d["offset"], d["value"], d["rejected_at"]) == \
        ("malformed_json", None, "events.ingest", 0, 2, b'{"bad json', H + 7_200_099)


def test_an_unknown_project_header_is_dead_lettered():
    res = ingest_records([rec(0, b'{"event_type":"a","device_id":"device-1"}', headers=(("project", b"5"),))],
                         "events.ingest", 0, projects=frozenset({1}), default_project=None, rules=Rules(),
                         partitions=1, max_events=10, now_ms=0)
    assert dict(res.reasons) == {"unknown_project": 1}
    assert deadletter.decode(res.dead[0][1])["detail"] == "project 5 is not configured (projects[].id)"


def test_batches_round_trip_and_select_keeps_the_masked_events():
    b = EventBatch(424242, H, Origin("events.ingest", 1, 9), [8, 9], [b"k1", b""], [H + 1, H + 2],
                   [b"a" * 16, b"b" * 16], [b'{"x":1}', b'{"x":2}'])
    assert EventBatch.decode(b.encode()) == b
    s = b.select([False, True], Origin("events.valid", 0, 3))
    assert (s.lines, s.keys, s.times, s.offsets, s.origin, s.source) == (
        [b'{"x":2}'], [b""], [H + 2], [9], Origin("events.valid", 0, 3), Source("events.ingest", 1))
    assert EventBatch.decode(s.encode()) == s
    direct = EventBatch(7, H, Origin("events.valid", 2, 40), [], [b"", b""], [H, H], [b"a" * 16] * 2, [b"1", b"2"])
    assert direct.select([True, True], Origin("events.valid", 2, 40)).source_of_events() == (
        Source("events.valid", 2), [40 << 16, (40 << 16) + 1])   # each event of the message its own offset


def test_segment_messages_travel_with_their_events_and_api_batches_take_their_coordinates_when_read():
    api = EventBatch(7, H, Origin("events.valid", 2, -1), [], [b"k1", b"k2", b"k3"], [H, H + 1, H + 2],
                     [b"a" * 16, b"b" * 16, b"c" * 16], [b'{"r":1}', b'{"r":2}', b'{"r":3}'],
                     segment_source="src-1", segment=[b'{"m":1}', b"", b'{"m":3}'])
    read = EventBatch.decode(api.encode())
    assert read == api
    read.arrived_at(Origin("events.valid", 2, 41))
    kept = read.select([True, False, True], Origin("events.valid", 2, 41))
    assert (kept.segment_source, kept.segment, kept.source_of_events()) == (
        "src-1", [b'{"m":1}', b'{"m":3}'], (Source("events.valid", 2), [41 << 16, (41 << 16) + 2]))
    from stream.events.batch import decode_rows
    rows = decode_rows(kept.encode())
    assert (rows.segment_source, rows.segment, rows.source, rows.offsets) == (
        "src-1", b'{"m":1}\xff{"m":3}', "events.valid[2]", [41 << 16, (41 << 16) + 2])
    ingested = EventBatch(7, H, Origin("events.ingest", 0, 9), [8, 9], [b"", b""], [H, H], [b"a" * 16] * 2,
                          [b"1", b"2"])
    ingested.arrived_at(Origin("events.valid", 2, 50))    # offsets from its source: kept as they are
    assert ingested.source_of_events() == (Source("events.ingest", 0), [8, 9])


def test_an_exporter_reads_a_batchs_rows_as_one_blob():
    from stream.events.batch import Rows, decode_rows
    b = EventBatch(7, H, Origin("events.valid", 2, 5), [], [b"k", b""], [H + 9, H + 4], [b"a" * 16, b"b" * 16],
                   [b'{"x":1}', b'{"x":2}'])
    assert decode_rows(b.encode()) == Rows(7, H, H + 4, H + 9, 2, b'{"x":1}\n{"x":2}', "events.valid[2]",
                                           [5 << 16, (5 << 16) + 1], "", b"")
    empty = EventBatch(7, H, Origin("events.valid", 2, 6))
    assert decode_rows(empty.encode()) == Rows(7, H, -1, -1, 0, b"", "events.valid[2]", [], "", b"")
    assert EventBatch.decode(empty.encode()) == empty


def test_the_fast_batch_encoding_is_plain_avro():
    b = EventBatch(424242, H, Origin("events.ingest", 3, 2**40), [1, 2**40], [b"k\x00a", b""], [H, -1],
                   [b"a" * 16, b"b" * 16], [b"x" * 300, b'{"y":2}'])
    full = avro.encode("event_batch", {
        "project": 424242, "hour": H, "origin": {"topic": "events.ingest", "partition": 3, "offset": 2**40},
        "source": {"topic": "events.ingest", "partition": 3},
        "offsets": (1).to_bytes(8, "little") + (2**40).to_bytes(8, "little"), "keys": b"k\x00a\xff",
        "times": H.to_bytes(8, "little") + (-1).to_bytes(8, "little", signed=True), "uuids": b"a" * 16 + b"b" * 16,
        "segment_source": "", "segment": b"", "events": b"x" * 300 + b'\n{"y":2}'})
    assert b.encode() == full
    head = {k: v for k, v in avro.decode("event_batch", full).items() if k != "events"}
    for n in (0, 1, 63, 64, 8191, 8192, 2**21):  # varint lengths of 1, 2, 3 and 4 bytes
        assert avro.encode_with_tail("event_batch", head, b"z" * n) == \
            avro.encode("event_batch", {**head, "events": b"z" * n})


def test_batches_stay_under_the_byte_limit_but_never_split_an_event():
    big = b'{"event_type":"a","device_id":"device-1","event_properties":{"x":"' + b"y" * 3000 + b'"}}'
    recs = [rec(i, big) for i in range(5)]
    res = ingest_records(recs, "events.ingest", 0, projects=frozenset({1}), default_project=1, rules=Rules(),
                         partitions=1, max_events=100, max_bytes=9000, now_ms=NOW)
    assert [b.offsets for _, b in res.batches] == [[0, 1], [2, 3], [4]]
    alone = ingest_records(recs[:2], "events.ingest", 0, projects=frozenset({1}), default_project=1, rules=Rules(),
                           partitions=1, max_events=100, max_bytes=100, now_ms=NOW)
    assert [b.offsets for _, b in alone.batches] == [[0], [1]]
    assert [b.origin.offset for _, b in res.batches] == [1, 3, 4]


def test_a_server_time_ahead_of_the_ingest_clock_is_replaced_and_a_replay_replaces_it_the_same_way():
    from stream.events.clamps import ClampIndex, encode
    three_days = 3 * 24 * 3_600_000
    recs = [rec(0, b'{"event_type":"a","device_id":"device-1"}', ts=H + three_days),             # record timestamp
            rec(1, b'{"event_type":"a","device_id":"device-1","server_upload_time":%d}' % (H + three_days)),
            rec(2, b'{"event_type":"a","device_id":"device-1"}', ts=H + 1000),                     # the past: kept
            rec(3, b'{"event_type":"a","device_id":"device-1"}', ts=NOW + 299_000)]                # within skew
    res = ingest_records(recs, "events.ingest", 0, projects=frozenset({1}), default_project=1,
                         rules=Rules(max_clock_skew_ms=300_000), partitions=1, max_events=100, now_ms=NOW)
    assert (res.clamped, res.new_clamps) == (2, {0: NOW, 1: NOW})
    times = sorted((o, t) for _, b in res.batches for o, t in zip(b.offsets, b.times))
    assert times == [(0, NOW), (1, NOW), (2, H + 1000), (3, NOW + 299_000)]
    rows = {o: orjson.loads(line) for _, b in res.batches for o, line in zip(b.offsets, b.lines)}
    assert (rows[1]["server_upload_time"], rows[1]["server_received_time"]) == (
        "2024-03-09 09:00:00.000000", "2024-03-09 07:00:00.005000")   # received: the record's own, in the past
    # a replay two hours later reads what the first pass recorded: the same times, so the same hours
    key, value = encode("events.ingest", 0, res.new_clamps)
    index = ClampIndex("events.ingest")
    assert (key, index.load([value, encode("other", 0, {5: 1})[1]], [0])) == (b"events.ingest[0]", 2)
    replay = ingest_records(recs, "events.ingest", 0, projects=frozenset({1}), default_project=1,
                            rules=Rules(max_clock_skew_ms=300_000), partitions=1, max_events=100,
                            now_ms=NOW + 7_200_000, clamps=index.of(0))
    assert (replay.clamped, replay.new_clamps) == (2, {})
    assert [b.encode() for _, b in replay.batches] == [b.encode() for _, b in res.batches]
    index.prune(0, 1)
    assert index.of(0) == {1: NOW}


def test_a_batch_grown_past_the_limit_is_split_in_order_and_each_event_keeps_its_source_offset():
    lines = [b'{"p":"' + b"x" * 400 + b'"}' for _ in range(10)]
    b = EventBatch(7, H, Origin("events.valid", 1, 12), [], [b"k"] * 10, [H + i for i in range(10)],
                   [bytes([i]) * 16 for i in range(10)], lines, segment_source="s", segment=[b"m"] * 10)
    assert b.split(1 << 20) == [b]
    parts = b.split(2000)      # header 1024 + about 460 bytes an event: two events a part
    assert [len(p) for p in parts] == [2] * 5
    assert [o for p in parts for o in p.source_of_events()[1]] == [(12 << 16) + i for i in range(10)]
    assert [t for p in parts for t in p.times] == b.times and [x for p in parts for x in p.lines] == lines
    assert {(p.origin, p.source, p.segment_source) for p in parts} == {
        (Origin("events.valid", 1, 12), Source("events.valid", 1), "s")}
    decoded = [EventBatch.decode(p.encode()) for p in parts]
    assert [d.source_of_events()[1] for d in decoded] == [p.offsets for p in parts]
    # an event over the limit goes alone
    assert [len(p) for p in b.split(100)] == [1] * 10


def test_a_bytes_key_goes_to_the_partition_kafkas_default_partitioner_gives_it():
    from aiokafka.partitioner import DefaultPartitioner

    from stream.events.partitioning import partition_of
    from stream.export.mirror_index import key
    for k in (key(1, "a"), key(424242, "ins-" * 20), b"\x00"):
        assert partition_of(k, 12) == DefaultPartitioner()(k, list(range(12)), list(range(12)))


_ints64 = st.integers(-(1 << 63), (1 << 63) - 1)
_ints32 = st.integers(-(1 << 31), (1 << 31) - 1)
_texts = st.text(max_size=40)


@st.composite
def batches(draw) -> EventBatch:
    """A batch with any values of its fields' Avro types: every long and int at and between their limits, any
    text (of any script) for the strings, events with and without offsets, keys, segment messages and a source."""
    n = draw(st.integers(0, 6))
    lines = [draw(st.binary(max_size=300)) for _ in range(n)]
    segment = [draw(st.binary(max_size=50)) for _ in range(n)] if draw(st.booleans()) else []
    return EventBatch(
        draw(_ints64), draw(_ints64), Origin(draw(_texts), draw(_ints32), draw(_ints64)),
        offsets=draw(st.lists(_ints64, min_size=n, max_size=n)) if draw(st.booleans()) else [],
        keys=[draw(st.binary(max_size=30)) for _ in range(n)],
        times=draw(st.lists(_ints64, min_size=n, max_size=n)),
        uuids=[draw(st.binary(min_size=16, max_size=16)) for _ in range(n)], lines=lines,
        source=Source(draw(_texts), draw(_ints32)) if draw(st.booleans()) else None,
        segment_source=draw(_texts), segment=segment)


@settings(max_examples=500, deadline=None)
@given(batches())
def test_a_batch_encodes_to_fastavros_bytes_of_the_schema(b):
    assert b.encode() == b.encode_slowly()
    d = fastavro.schemaless_reader(io.BytesIO(b.encode()), avro.schema("event_batch"), None)
    assert (d["project"], d["hour"], d["origin"], d["segment_source"], d["events"]) == (
        b.project, b.hour, {"topic": b.origin.topic, "partition": b.origin.partition, "offset": b.origin.offset},
        b.segment_source, b"\n".join(b.lines))


def test_a_batch_as_the_api_writes_it_encodes_to_fastavros_bytes():
    b = EventBatch(424242, H, Origin("bench.events.valid", 3, -1), keys=[b"424242\x00d\x00i-1", b""],
                   times=[H + 5, H + 6], uuids=[bytes(range(16)), bytes(16)], lines=[b'{"a":1}', b'{"b":2}'])
    assert b.encode() == b.encode_slowly()
    assert b.encode()[:8] == bytes([0xE4, 0xE4, 0x33]) + avro.long_of(H)[:5]   # 424242 and the hour, zig-zag


def test_avro_longs_are_fastavros_at_each_length_boundary():
    edges = {0, -1, (1 << 63) - 1, -(1 << 63)}
    for k in range(1, 10):   # a zig-zag value of 7k bits is the last of k bytes: either side of it, either sign
        for n in ((1 << (7 * k - 1)) - 1, 1 << (7 * k - 1), -(1 << (7 * k - 1)), -(1 << (7 * k - 1)) - 1):
            edges.update({n - 1, n, n + 1})
    for n in sorted(e for e in edges if -(1 << 63) <= e < (1 << 63)):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, "long", n)
        assert avro.long_of(n) == buf.getvalue(), n


def test_a_value_outside_avros_long_is_refused_like_fastavro_refuses_it():
    for n in (1 << 63, (1 << 63) + 1, -(1 << 63) - 1, -(1 << 64), 1 << 64, (1 << 64) + 5, 1 << 70, -(1 << 70)):
        with pytest.raises(OverflowError) as e:
            avro.long_of(n)
        assert str(e.value) == (f"{n} is outside an Avro long's range (-2**63 to 2**63 - 1) and cannot be written; "
                                "the value must fit a signed 64-bit integer")
        with pytest.raises(OverflowError):
            fastavro.schemaless_writer(io.BytesIO(), "long", n)
    # a project id past the long: the batch is not written (it was written wrapped, read back as -1)
    b = EventBatch(1 << 63, H, Origin("events.valid", 0, -1), keys=[b"k"], times=[H], uuids=[bytes(16)],
                   lines=[b"{}"])
    with pytest.raises(OverflowError):
        b.encode()
    with pytest.raises(OverflowError):
        b.encode_slowly()


def group_reference(events, topic, partition, partitions, max_events, max_bytes=4 << 20):
    """``group`` as it was written first (each event's ``partition_key`` and fields by name, a memo per call): the
    reference the grouping is compared with."""
    from stream.events.timefmt import HOUR_MS
    open_, sizes, targets = {}, {}, {}
    for offset, ev in events:
        key = ev.partition_key
        target = targets.get(key)
        if target is None:
            target = targets[key] = partition_for(key, partitions)
        hour = ev.upload_ms - ev.upload_ms % HOUR_MS
        k = (target, ev.project, hour)
        b = open_.get(k)
        size = len(ev.line) + len(ev.dedupe_key) + 40
        if b is not None and sizes[k] + size > max_bytes:
            del open_[k]
            b.origin = Origin(topic, partition, b.offsets[-1])
            yield target, b
            b = None
        if b is None:
            b = open_[k] = EventBatch(ev.project, hour, Origin(topic, partition, offset))
            sizes[k] = 0
        sizes[k] += size
        b.offsets.append(offset)
        b.keys.append(ev.dedupe_key)
        b.times.append(ev.upload_ms)
        b.uuids.append(ev.uuid)
        b.lines.append(ev.line)
        if len(b.lines) >= max_events:
            del open_[k]
            b.origin = Origin(topic, partition, offset)
            yield target, b
    for (target, _, _), b in open_.items():
        b.origin = Origin(topic, partition, b.offsets[-1])
        yield target, b


_ids = st.sampled_from(["device-0000001", "device-0000002", "dev-x", "user-42", "\u00e9" * 6]) | st.text(min_size=1,
                                                                                                       max_size=12)


@st.composite
def normalized_events(draw):
    from stream.events.normalize import Normalized
    out = []
    offset = draw(st.integers(0, 2**40))
    for _ in range(draw(st.integers(0, 40))):
        device, user = draw(st.none() | _ids), draw(_ids)
        out.append((offset, Normalized(draw(st.sampled_from([1, 1, 1, 7])), draw(st.binary(max_size=30)),
                                       draw(st.sampled_from([H, H + 5, H + 3_599_999, H + 3_600_000, H - 1])),
                                       draw(st.binary(min_size=16, max_size=16)), draw(st.binary(max_size=400)),
                                       device, user if device is None or draw(st.booleans()) else None)))
        offset += draw(st.integers(1, 3))
    return out


@settings(max_examples=300, deadline=None)
@given(normalized_events(), st.sampled_from([1, 4, 12]), st.sampled_from([1, 3, 500]),
       st.sampled_from([300, 1000, 4 << 20]))
def test_group_gives_the_reference_batches_on_generated_events(events, partitions, max_events, max_bytes):
    from stream.events.batch import group
    got = [(t, b.encode(), b.origin) for t, b in group(events, "imports.files", 3, partitions, max_events, max_bytes)]
    want = [(t, b.encode(), b.origin) for t, b in group_reference(events, "imports.files", 3, partitions, max_events,
                                                                   max_bytes)]
    assert got == want
