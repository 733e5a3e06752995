"""The stored layout of a user's cohort state: condition keys written once, counters of recent buckets as columns;
a state stored in the layout before is read as the same state and written in the new one by its user's next
write."""

import asyncio

import msgspec

from stream.cohorts import stage
from stream.cohorts.stage import (
    CohortRecord,
    LocalStage,
    StoredUser,
    StoredUserV1,
    counts_by_key,
    decode_user,
    encode_user,
    recent_by_key,
    user_key,
    view,
)
from stream.events.batch import EventBatch, Origin, Source
from stream.settings import load_settings

P = 424242
T = 1_710_028_800_000            # 2024-03-10 00:00 UTC
DAY = 19_792                     # its day number

# a state as the layout before wrote it (its encoder's bytes): two condition keys, each written in ``counts`` and in
# each bucket of ``recent`` that has it
OLD_STATE = bytes.fromhex(
    "9ace00067932cf0000018e25a8c000cd4d5082a86275794b6579303182cd4d4f02cd4d5001a8766965774b65793281cd4d500382cf00"
    "00018e25a8c00082a86275794b6579303182cd4d4f01cd4d5001a8766965774b65793281cd4d5002cf0000018e25dfae8081a876696577"
    "4b65793281cd4d50019192cf0000018e25a8c00081a4706c616ea370726f9192cf0000018e25a8c000a4752d313081b2302f6576656e74"
    "732e696e676573745b305d29cd4d51c0")
OLD = StoredUserV1(project=P, first_ms=T, last_day=DAY,
                   counts={"buyKey01": {DAY - 1: 2, DAY: 1}, "viewKey2": {DAY: 3}},
                   recent={T: {"buyKey01": {DAY - 1: 1, DAY: 1}, "viewKey2": {DAY: 2}},
                           T + 3_600_000: {"viewKey2": {DAY: 1}}},
                   props=[(T, {"plan": "pro"})], uids=[(T, "u-10")], marks={"0/events.ingest[0]": 41},
                   index_day=DAY + 1)


def test_the_layout_before_is_the_v1_struct_byte_for_byte():
    assert msgspec.msgpack.encode(OLD) == OLD_STATE


def test_a_state_of_the_layout_before_decodes_to_the_same_state():
    u = decode_user(OLD_STATE)
    assert u == StoredUser(project=P, first_ms=T, last_day=DAY, keys=["buyKey01", "viewKey2"],
                           counts={0: {DAY - 1: 2, DAY: 1}, 1: {DAY: 3}},
                           recent={T: {DAY - 1: [1], DAY: [1, 2]}, T + 3_600_000: {DAY: [0, 1]}},
                           props=[(T, {"plan": "pro"})], uids=[(T, "u-10")], marks={"0/events.ingest[0]": 41},
                           index_day=DAY + 1)
    assert (counts_by_key(u), recent_by_key(u)) == (OLD.counts, OLD.recent)
    # a sync sees it as it saw the state before, at any time (the later bucket taken off, or not)
    for t in (T + 1, T + 3_600_000, T + 3_600_001):
        old_counts = {k: dict(days) for k, days in OLD.counts.items()}
        for m, bucket in OLD.recent.items():
            if m >= t:
                for k, days in bucket.items():
                    for d, n in days.items():
                        left = old_counts[k][d] - n
                        if left > 0:
                            old_counts[k][d] = left
                        else:
                            del old_counts[k][d]
        st = view(u, t)
        assert (st.project, st.user_id, st.properties, st.counts) == (P, "u-10", {"plan": "pro"}, old_counts)
    assert view(u, T) is None              # first seen at T: not there yet
    # written again: the new layout, tag 2 first, each key once
    again = encode_user(u)
    assert (again[:2], len(again), len(OLD_STATE)) == (b"\x9c\x02", 155, 180)
    assert decode_user(again) == u


def _settings():
    return load_settings(None, projects=[{"id": P}], cohorts=[
        {"id": "buyers", "project": P, "name": "Buyers", "rule": {"performed": "purchase", "within_days": 7}},
        {"id": "viewers", "project": P, "name": "Viewers", "rule": {"performed": "view", "within_days": 7}}])


def _batch(offset, aid, event_type, at_ms):
    import orjson
    import time
    row = {"amplitude_id": aid, "app": P, "event_type": event_type, "user_id": f"u-{aid}",
           "event_time": time.strftime("%Y-%m-%d %H:%M:%S.000000", time.gmtime(at_ms / 1000))}
    return EventBatch(P, 0, Origin("events.valid", 0, offset), [offset], [b"d"], [at_ms], [b"u" * 16],
                      [orjson.dumps(row)], Source("events.ingest", 0))


def test_a_state_of_the_layout_before_is_rewritten_in_the_new_one_by_its_next_write():
    s = _settings()
    buy, view_key = (s.cohort_set.cohort(c).conditions[0].key for c in ("buyers", "viewers"))
    st = LocalStage(s.cohort_set, 1, 400)
    old = StoredUserV1(project=P, first_ms=T, last_day=DAY, counts={view_key: {DAY: 3}, buy: {DAY - 1: 2}},
                       recent={T: {view_key: {DAY: 3}}}, props=[], uids=[(T, "u-10")],
                       marks={"0/events.ingest[0]": 41}, index_day=DAY + 6)
    st.stores[0].data[user_key(10)] = msgspec.msgpack.encode(old)
    st.accepted(0, _batch(41, 10, "purchase", T + 60_000))     # a replay of what the old state took: dropped
    assert (st.totals.applied, st.totals.replayed, st.stores[0].data[user_key(10)][:1]) == (0, 1, b"\x9a")
    st.accepted(0, _batch(42, 10, "purchase", T + 120_000))
    raw = st.stores[0].data[user_key(10)]
    assert raw[:2] == b"\x9c\x02"
    u = decode_user(raw)
    assert (u.keys, counts_by_key(u), recent_by_key(u), u.marks) == (
        [view_key, buy], {view_key: {DAY: 3}, buy: {DAY - 1: 2, DAY: 1}},
        {T: {view_key: {DAY: 3}}, T + 120_000: {buy: {DAY: 1}}}, {"0/events.ingest[0]": 42})
    st.advance(T + 200_000)
    v = asyncio.run(st.view(s.cohort_set, T + 180_000))
    assert list(v.members(s.cohort_set.cohort("buyers"))) == [10]
    assert v.states[10].counts == {view_key: {DAY: 3}, buy: {DAY - 1: 2, DAY: 1}}


def test_a_merged_state_of_the_layout_before_joins_its_survivor():
    s = _settings()
    buy, view_key = (s.cohort_set.cohort(c).conditions[0].key for c in ("buyers", "viewers"))
    st = LocalStage(s.cohort_set, 1, 400)
    st.accepted(0, _batch(1, 20, "view", T + 60_000))
    merged = StoredUserV1(project=P, first_ms=T - 1000, last_day=DAY, counts={buy: {DAY: 2}},
                          recent={T - 60_000: {buy: {DAY: 2}}}, uids=[(T - 1000, "u-21")],
                          marks={"0/events.ingest[0]": 7})
    rec = CohortRecord(stage.MERGE_IN, 21, uploaded_ms=T + 90_000, into=20, state=msgspec.msgpack.encode(merged))
    st.deliver([(0, user_key(20)[1:], stage._array([rec.encode()]))])
    u = decode_user(st.stores[0].data[user_key(20)])
    assert (u.keys, counts_by_key(u), recent_by_key(u), u.first_ms, u.uids) == (
        [view_key, buy], {view_key: {DAY: 1}, buy: {DAY: 2}},
        {T - 60_000: {buy: {DAY: 2}}, T + 60_000: {view_key: {DAY: 1}}}, T - 1000,
        [(T - 1000, "u-21"), (T + 60_000, "u-20")])


def test_a_sync_reads_a_state_of_either_layout_without_its_marks():
    """``decode_seen`` (what a sync decodes) leaves the marks encoded and sees the same user as ``decode_user``."""
    new = encode_user(decode_user(OLD_STATE))
    for raw in (OLD_STATE, new):
        seen, full = stage.decode_seen(raw), decode_user(raw)
        for t in (T + 1, T + 3_600_000, T + 3_600_001):
            assert view(seen, t) == view(full, t)
    seen = stage.decode_seen(new)
    assert (type(seen).__name__, bytes(seen.marks), seen.keys) == (
        "SeenUser", msgspec.msgpack.encode({"0/events.ingest[0]": 41}), ["buyKey01", "viewKey2"])


def test_keys_that_nothing_counts_any_more_leave_the_table_and_the_others_move_down():
    u = StoredUser(project=P, keys=["gone0001", "kept0002", "recent03"], counts={1: {DAY: 2}},
                   recent={T: {DAY: [0, 2, 1]}, T + 60_000: {DAY - 1: [0, 0, 1]}})
    kept = stage._unused_keys_dropped(u)
    assert (kept.keys, kept.counts, kept.recent) == (
        ["kept0002", "recent03"], {0: {DAY: 2}}, {T: {DAY: [2, 1]}, T + 60_000: {DAY - 1: [0, 1]}})
    assert (counts_by_key(kept), recent_by_key(kept)) == (counts_by_key(u), recent_by_key(u))
    assert stage._unused_keys_dropped(kept) is kept          # nothing to drop: the same state
