"""Accepted events -> one EventBatch per (target partition, project, hour), written as the API's own origin."""

import orjson

from stream.api.batching import group
from stream.events.batch import EventBatch, Origin
from stream.events.normalize import Rules, normalize
from stream.events.partitioning import partition_for

T = 1709968500000
HOUR = 3_600_000


def norm(device=None, user=None, t=T, i=0, project=424242):
    ev = {"event_type": "e", "insert_id": f"ins-{i}", **({"device_id": device} if device else {}),
          **({"user_id": user} if user else {})}
    return normalize(ev, project, t, f"http/x/{i}", Rules())


def test_events_go_to_the_partition_of_their_device_else_user():
    evs = [norm(device=f"device-{i:04d}", i=i) for i in range(20)] + [norm(user="user-12345", i=99)]
    out = group(evs, "p.events.valid", 4, 500, 1 << 20)
    for target, b in out:
        assert b.origin == Origin("p.events.valid", target, -1)
        assert b.offsets == [] and b.source is None and b.segment == [] and b.segment_source == ""
        for line in b.lines:
            row = orjson.loads(line)
            assert partition_for(row["device_id"] or row["user_id"], 4) == target
    assert sorted(len(b) for _, b in out) == sorted(
        [sum(1 for e in evs if partition_for(e.partition_key, 4) == p) for p in {t for t, _ in out}])
    assert sum(len(b) for _, b in out) == 21


def test_batches_split_by_project_hour_count_and_bytes():
    evs = [norm(device="device-0001", i=i) for i in range(5)] + [norm(device="device-0001", t=T + HOUR, i=9)] + \
          [norm(device="device-0001", i=10, project=7)]
    out = group(evs, "v", 1, 2, 1 << 20)
    assert [(b.project, b.hour, len(b)) for _, b in out] == [
        (424242, T - T % HOUR, 2), (424242, T - T % HOUR, 2), (424242, T - T % HOUR, 1),
        (424242, T - T % HOUR + HOUR, 1), (7, T - T % HOUR, 1)]
    small = group(evs[:5], "v", 1, 500, 1024 + 2 * (len(evs[0].line) + len(evs[0].dedupe_key) + 48))
    assert [len(b) for _, b in small] == [2, 2, 1]


def test_a_batch_round_trips_and_takes_its_coordinates_when_read():
    evs = [norm(device="device-0001", i=i) for i in range(3)]
    ((_, b),) = group(evs, "v", 1, 500, 1 << 20, segment=[b'{"m":1}', b'{"m":2}', b'{"m":3}'],
                           segment_source="src1")
    d = EventBatch.decode(b.encode())
    assert (d.lines, d.uuids, d.keys, d.times, d.segment, d.segment_source) == (
        [e.line for e in evs], [e.uuid for e in evs], [e.dedupe_key for e in evs], [T] * 3,
        [b'{"m":1}', b'{"m":2}', b'{"m":3}'], "src1")
    d.arrived_at(Origin("v", 0, 41))
    assert d.source_of_events()[1] == [(41 << 16) + i for i in range(3)]
