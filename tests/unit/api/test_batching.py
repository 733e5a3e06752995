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


def group_reference(events, valid_topic, partitions, max_events, max_bytes, segment=None, segment_source=""):
    """group as first written: one (target, project, hour) key an event, each batch's size summed event by event."""
    from stream.api.batching import BATCH_OVERHEAD, _size
    from stream.events.timefmt import HOUR_MS
    by_key: dict = {}
    for i, ev in enumerate(events):
        by_key.setdefault((partition_for(ev.partition_key, partitions), ev.project,
                           ev.upload_ms - ev.upload_ms % HOUR_MS), []).append(i)
    out = []
    for (target, project, hour), members in by_key.items():
        runs, run, used = [], [], BATCH_OVERHEAD
        for i in members:
            size = _size(events[i], i, segment)
            if run and (len(run) >= max_events or used + size > max_bytes):
                runs.append(run)
                run, used = [], BATCH_OVERHEAD
            run.append(i)
            used += size
        runs.append(run)
        for chunk in runs:
            evs = [events[i] for i in chunk]
            out.append((target, EventBatch(
                project, hour, Origin(valid_topic, target, -1), keys=[e.dedupe_key for e in evs],
                times=[e.upload_ms for e in evs], uuids=[e.uuid for e in evs], lines=[e.line for e in evs],
                segment_source=segment_source, segment=[segment[i] for i in chunk] if segment else [])))
    return out


def test_group_gives_the_reference_batches_on_generated_requests():
    import random
    rnd = random.Random(7)
    one = norm(device="device-0001")
    per_event = len(one.line) + len(one.dedupe_key) + 48
    for case in range(300):
        n = rnd.choice([0, 1, 2, 5, 30, 100])
        hours = rnd.choice([[0], [0], [0, 1], [0, -1, 2]])
        projects = rnd.choice([[424242], [424242], [424242, 7]])
        evs = []
        for i in range(n):
            who = rnd.randrange(12)
            kind = rnd.random()
            evs.append(norm(device=f"device-{who:04d}" if kind < 0.6 else None,
                            user=f"user-{who:05d}" if kind >= 0.4 else None,
                            t=T + rnd.choice(hours) * HOUR + rnd.randrange(-5, 5) * 60_000,
                            i=i, project=rnd.choice(projects)))
        segment = [b'{"m":%d}' % i * rnd.randrange(1, 4) for i in range(n)] if rnd.random() < 0.3 else None
        partitions = rnd.choice([1, 2, 4, 7])
        max_events = rnd.choice([1, 3, 500])
        max_bytes = rnd.choice([1 << 20, 1024 + 2 * per_event, 1024 + 5 * per_event + 40])
        got = group(evs, "p.events.valid", partitions, max_events, max_bytes, segment, "src" if segment else "")
        want = group_reference(evs, "p.events.valid", partitions, max_events, max_bytes, segment,
                               "src" if segment else "")
        assert [(t, b.encode()) for t, b in got] == [(t, b.encode()) for t, b in want], case
        assert [(t, b) for t, b in got] == want, case


def test_the_partition_memo_holds_partition_fors_answers_and_is_emptied_when_full(monkeypatch):
    from aiokafka.partitioner import murmur2

    from stream.events import partitioning
    monkeypatch.setattr(partitioning, "_MEMOS", {})
    monkeypatch.setattr(partitioning, "MEMO_KEYS", 3)
    keys = ["device-0001", "device-0002", "device-0003", "device-0004"]
    assert [partition_for(k, 7) for k in keys[:3]] == [(murmur2(k.encode()) & 0x7FFFFFFF) % 7 for k in keys[:3]]
    assert partitioning.partition_memo(7) == {k: (murmur2(k.encode()) & 0x7FFFFFFF) % 7 for k in keys[:3]}
    assert partitioning.partition_memo(4) == {}
    assert partition_for(keys[3], 7) == (murmur2(keys[3].encode()) & 0x7FFFFFFF) % 7
    assert list(partitioning.partition_memo(7)) == [keys[3]]   # full at 3 keys: emptied, then the new key
