"""Ids, merges and user fields, decided by the pure device and user sides on in-memory state."""

import orjson
import pytest

from stream.events.normalize import Rules, normalize_message
from stream.identity import ids
from stream.identity.device import Hold, apply_remaps, resolve_batch
from stream.identity.records import Links, Remap
from stream.identity.users import decide

T = 1709967600000   # 2024-03-09 07:00 UTC
PROJECT = 7


class Partition:
    """One partition's identity state in a dict, and the batches applied to it."""

    def __init__(self, number):
        self.number, self.db, self.offset, self.sourced = number, {}, 0, 0

    def get_many(self, keys):
        return [self.db.get(k) for k in keys]

    def commit(self, writes):
        for k, v in writes.items():
            if v is None:
                self.db.pop(k, None)
            else:
                self.db[k] = v

    def run(self, *events, t=T, now=None, bound=30_000, source="events.ingest[0]", offsets=None):
        """Resolve a batch of ``events``; with ``now`` (the batch's Kafka timestamp), holding rows for answers."""
        lines = [normalize_message(orjson.dumps(e), None, PROJECT, t + i, f"in/0/{i}", Rules()).line
                 for i, e in enumerate(events)]
        hold = None
        if now is not None:
            if offsets is None:       # the next events of the source
                offsets = list(range(self.sourced, self.sourced + len(lines)))
                self.sourced += len(lines)
            hold = Hold(now, bound, t - t % 3_600_000, source, offsets,
                        [b"k%d" % i for i in range(len(lines))],
                        [b"u%015d" % i for i in range(len(lines))], [], "", self.offset)
        res = resolve_batch(lines, [t + i for i in range(len(lines))], PROJECT, self.number,
                            "2024-03-09 07:30:00.000000", self.get_many, hold=hold)
        self.commit(res.writes)
        self.offset += 1
        return [orjson.loads(x) for x in res.lines], res

    def remap(self, remaps, now=0):
        r = apply_remaps(remaps, self.get_many, now, self.offset)
        self.commit(r.writes)
        self.offset += 1
        self.released = r.released
        return r.applied


class UserSide(Partition):
    def links(self, origin_partition, origin_offset, links):
        d = decide(Links(origin_partition, origin_offset, links), self.get_many)
        self.commit(d.writes)
        return d


def ev(device=None, user=None, **kw):
    return {"event_type": kw.pop("event_type", "Page Viewed"), **({"device_id": device} if device else {}),
            **({"user_id": user} if user else {}), **kw}


def test_ids_are_a_partition_counter_times_1024_plus_the_partition():
    assert ids.allocate(0, 3) == (1027, 1)
    assert ids.allocate(41, 999) == (42 * 1024 + 999, 42)
    assert ids.partition_of(42 * 1024 + 999) == 999
    with pytest.raises(ValueError):
        ids.allocate(0, 1024)


def test_a_new_device_gets_a_new_id_and_keeps_it():
    p = Partition(2)
    rows, res = p.run(ev("dev-aaaa1"), ev("dev-bbbb2"), ev("dev-aaaa1"))
    assert [r["amplitude_id"] for r in rows] == [1026, 2050, 1026]
    assert (res.links, res.allocated) == ([], 2)
    rows, _ = p.run(ev("dev-bbbb2"), ev("dev-cccc3"))
    assert [r["amplitude_id"] for r in rows] == [2050, 3074]


def test_a_user_seen_for_the_first_time_adopts_the_id_of_its_device():
    p, users = Partition(0), UserSide(0)
    rows, res = p.run(ev("dev-aaaa1"), ev("dev-aaaa1", "user-1111"), ev("dev-aaaa1", "user-1111"))
    assert [r["amplitude_id"] for r in rows] == [1024] * 3
    assert [(x.user, x.device, x.aid) for x in res.links] == [("user-1111", "dev-aaaa1", 1024)]   # one link
    d = users.links(0, 0, res.links)       # no merge; an answer that moves nothing
    assert (d.merges, d.remaps) == ([], {0: [Remap(PROJECT, "dev-aaaa1", "user-1111", 1024, 1024, None, None, False,
                                                   b"{}")]})
    before = dict(p.db)
    assert (p.remap(d.remaps[0]), p.db) == (0, before)


def test_the_same_user_on_a_second_device_merges_that_devices_id_into_the_users():
    p0, p1, users = Partition(0), Partition(1), UserSide(0)
    _, res0 = p0.run(ev("dev-aaaa1", "user-1111"))
    users.links(0, 0, res0.links)
    rows, res1 = p1.run(ev("dev-bbbb2"), ev("dev-bbbb2", "user-1111"), t=T + 5000)
    assert [r["amplitude_id"] for r in rows] == [1025, 1025]     # the merge is in flight: the device's own id
    d = users.links(1, 0, res1.links)
    assert [m.line() for m in d.merges] == [
        b'{"amplitude_id":1024,"merged_amplitude_id":1025,"merge_time":1709967605001,'
        b'"merge_server_time":1709967605001,"scope":7}']
    assert p1.remap(d.remaps[1]) == 1
    rows, res = p1.run(ev("dev-bbbb2", "user-1111"), ev("dev-bbbb2"))
    assert [r["amplitude_id"] for r in rows] == [1024, 1024] and res.links == []
    assert p1.remap(d.remaps[1]) == 0                            # a remap read twice changes nothing


def test_a_user_id_that_changes_on_one_device_gets_its_own_id_and_keeps_it_when_it_comes_back():
    p = Partition(0)
    rows, res = p.run(ev("dev-aaaa1", "user-1111"), ev("dev-aaaa1", "user-2222"), ev("dev-aaaa1"),
                      ev("dev-aaaa1", "user-1111"))
    assert [r["amplitude_id"] for r in rows] == [1024, 2048, 2048, 1024]
    assert [(x.user, x.aid) for x in res.links] == [("user-1111", 1024), ("user-2222", 2048)]


def test_an_event_with_only_a_user_id_is_its_own_device():
    p = Partition(0)
    rows, res = p.run(ev(user="user-1111"), ev(user="user-1111"))
    assert [r["amplitude_id"] for r in rows] == [1024, 1024]
    assert [x.device for x in res.links] == ["\x01user-1111"]


def test_user_fields_follow_the_events_in_order():
    p = Partition(0)
    rows, _ = p.run(
        ev("dev-aaaa1", "user-1111", user_properties={"plan": "free"}, app_version="1.0", time=T - 60_000),
        ev("dev-aaaa1", event_type="$identify", user_properties={"$set": {"plan": "pro"}, "$add": {"logins": 1}}),
        ev("dev-aaaa1", app_version="2.0", price=9.5),
        ev("dev-aaaa1", event_type="$identify", user_properties={"$unset": {"plan": "-"}, "$add": {"logins": 2}}))
    assert [r["user_properties"] for r in rows] == [{"plan": "free"}, {"plan": "pro", "logins": 1},
                                                    {"plan": "pro", "logins": 1}, {"logins": 3}]
    assert [r["start_version"] for r in rows] == ["1.0"] * 4
    assert [r["paying"] for r in rows] == [False, False, True, True]
    assert {r["user_creation_time"] for r in rows} == {"2024-03-09 06:59:00.000000"}
    assert {r["processed_time"] for r in rows} == {"2024-03-09 07:30:00.000000"}
    assert [r["amplitude_event_type"] for r in rows] == [None, "$identify", None, "$identify"]
    rows, _ = p.run(ev("dev-aaaa1"))                            # the next batch reads them from the state
    assert (rows[0]["user_properties"], rows[0]["paying"], rows[0]["start_version"]) == ({"logins": 3}, True, "1.0")


def test_only_a_revenue_property_of_the_event_makes_the_user_paying():
    p = Partition(0)
    rows, _ = p.run(ev("dev-aaaa1", user_properties={"$revenue": 5, "$price": 1}),
                    ev("dev-aaaa1", event_properties={"note": "$revenue"}),
                    ev("dev-aaaa1", event_properties={"$revenue": 3.5}),
                    ev("dev-bbbb2", event_properties={"$price": 2}))
    assert [r["paying"] for r in rows] == [False, False, True, True]


def test_an_event_that_skips_the_user_properties_sync_shows_its_properties_but_does_not_keep_them():
    rows, _ = Partition(0).run(
        ev("dev-aaaa1", user_properties={"plan": "free"}),
        ev("dev-aaaa1", user_properties={"plan": "pro", "seats": 3}, **{"$skip_user_properties_sync": True}),
        ev("dev-aaaa1"),
        ev("dev-aaaa1", user_properties={"seats": 5}, **{"$skip_user_properties_sync": False}))
    assert [r["user_properties"] for r in rows] == [{"plan": "free"}, {"plan": "pro", "seats": 3}, {"plan": "free"},
                                                    {"plan": "free", "seats": 5}]


def test_operations_on_a_non_identify_event_are_not_applied():
    rows, _ = Partition(0).run(ev("dev-aaaa1", user_properties={"$set": {"a": 1}, "b": 2}))
    assert rows[0]["user_properties"] == {"b": 2}


def test_group_identify_sets_group_properties_that_events_of_the_group_then_show():
    p = Partition(0)
    rows, _ = p.run(
        ev("dev-aaaa1", event_type="$groupidentify", groups={"company": "Acme"},
           group_properties={"$set": {"size": 10}}),
        ev("dev-bbbb2", groups={"company": ["Acme", "Globex"]}),
        ev("dev-bbbb2"))
    assert [r["group_properties"] for r in rows] == [{"company": {"Acme": {"size": 10}}},
                                                     {"company": {"Acme": {"size": 10}, "Globex": {}}}, {}]
    assert rows[0]["amplitude_event_type"] == "$groupidentify"


@pytest.mark.parametrize("event, reason", [
    (ev("dev-aaaa1", event_type="$identify", user_properties={"$set": "plan"}), "invalid_identify"),
    (ev("dev-aaaa1", event_type="$identify", user_properties={"$add": {"n": "1"}}), "invalid_identify"),
    (ev("dev-aaaa1", event_type="$identify", user_properties={"$set": {"bio": "x" * 100_000}}), "invalid_value"),
    (ev("dev-aaaa1", event_type="$identify", user_properties={"$set": {f"p{i}": i for i in range(2000)}}),
     "too_many_properties"),
    (ev("dev-aaaa1", user_properties={f"p{i}": i for i in range(2000)}), "too_many_properties"),
    (ev("dev-aaaa1", event_type="$groupidentify", groups={"company": "Acme"}, group_properties={"$add": {"n": "x"}}),
     "invalid_identify"),
])
def test_a_bad_update_rejects_its_event_and_changes_nothing(event, reason):
    p = Partition(0)
    rows, res = p.run(ev("dev-aaaa1", user_properties={"a": 1}), event, ev("dev-aaaa1"))
    assert res.keep == [True, False, True]
    assert [(i, e.reason) for i, e in res.rejected] == [(1, reason)]
    assert [r["user_properties"] for r in rows] == [{"a": 1}, {"a": 1}]


def test_the_user_side_merges_every_later_id_into_the_first_and_skips_replayed_links():
    p0, p1, users = Partition(0), Partition(1), UserSide(0)
    _, a = p0.run(ev("dev-aaaa1", "user-1111", app_version="3.0"), t=T + 10_000)
    _, b = p1.run(ev("dev-bbbb2", "user-1111", app_version="1.0", user_properties={"x": 1}), t=T)
    _, c = p1.run(ev("dev-cccc3", "user-1111"), t=T + 20_000)
    assert users.links(1, 0, b.links).merges == []                  # partition 1's link came first: its id wins
    d = users.links(0, 0, a.links)
    assert [(m.amplitude_id, m.merged_amplitude_id) for m in d.merges] == [(1025, 1024)]
    (remap,) = d.remaps[0]
    assert (remap.created, remap.start_version, orjson.loads(remap.props)) == (
        "2024-03-09 07:00:00.000000", "1.0", {"x": 1})             # the earliest creation and its version
    assert users.links(0, 0, a.links).skipped                       # the same batch linked again: dropped
    assert [(m.amplitude_id, m.merged_amplitude_id) for m in users.links(1, 1, c.links).merges] == [(1025, 2049)]
    p0.remap(d.remaps[0])
    rows, _ = p0.run(ev("dev-aaaa1", "user-1111"))
    assert (rows[0]["amplitude_id"], rows[0]["user_creation_time"], rows[0]["start_version"],
            rows[0]["user_properties"]) == (1025, "2024-03-09 07:00:00.000000", "1.0", {"x": 1})


def test_the_same_batch_resolved_again_on_the_same_state_gives_the_same_rows():
    p = Partition(0)
    events = [ev("dev-aaaa1", "user-1111", user_properties={"n": 1}),
              ev("dev-aaaa1", event_type="$identify", user_properties={"$add": {"n": 1}})]
    before = dict(p.db)
    rows1, res1 = p.run(*events)
    p.db = before
    rows2, res2 = p.run(*events)
    assert rows1 == rows2 and res1.links == res2.links and res1.writes == res2.writes


def test_a_rows_identity_columns_are_replaced_at_its_end_and_every_other_byte_is_kept():
    tricky = {"user_properties": {"amplitude_id": None}, "amplitude_event_type": None, "x": "\"paying\":null}"}
    line = normalize_message(orjson.dumps(ev("device-1", event_properties=tricky, user_properties=tricky)), None,
                             PROJECT, T, "in/0/0", Rules()).line
    cut = line.index(b'"amplitude_event_type":null,"amplitude_id":null')
    res = resolve_batch([line], [T], PROJECT, 3, "2024-03-09 07:30:00.000000", Partition(3).get_many)
    props = orjson.dumps(tricky)
    assert res.lines == [
        line[:cut] + b'"amplitude_event_type":null,"amplitude_id":1027,"group_properties":{},"paying":false,'
        b'"processed_time":"2024-03-09 07:30:00.000000","start_version":null,'
        b'"user_creation_time":"2024-03-09 07:00:00.000000","user_properties":' + props + b'}']


def test_a_row_in_another_column_order_or_already_enriched_is_enriched_the_same():
    line = normalize_message(orjson.dumps(ev("device-1", "user-1", event_type="$identify",
                                             user_properties={"$set": {"plan": "pro"}})), None, PROJECT, T,
                             "in/0/0", Rules()).line
    row = orjson.loads(line)
    reordered = orjson.dumps({**row, "amplitude_id": 99, "paying": True}, option=orjson.OPT_SORT_KEYS)
    assert reordered != line
    outs = [resolve_batch([x], [T], PROJECT, 3, "2024-03-09 07:30:00.000000", Partition(3).get_many).lines[0]
            for x in (line, reordered)]
    assert outs[0] == outs[1]
    got = orjson.loads(outs[0])
    assert list(got) == list(row)
    assert (got["amplitude_id"], got["amplitude_event_type"], got["user_properties"], got["paying"]) == (
        1027, "$identify", {"plan": "pro"}, False)


def test_an_update_that_would_grow_a_users_properties_past_the_bound_is_not_applied_and_the_event_is_kept():
    p = Partition(3)
    big = {f"p{i}": "v" * 900 for i in range(4)}       # about 3.6 KB of properties
    lines = [normalize_message(orjson.dumps(e), None, PROJECT, T + i, f"in/0/{i}", Rules()).line for i, e in enumerate([
        ev("device-1", "user-1", event_type="$identify", user_properties={"$set": big}),
        ev("device-1", "user-1", event_type="$identify", user_properties={"$set": {"p9": "w" * 900}}),   # too much
        ev("device-1", "user-1", event_type="$identify", user_properties={"$unset": {"p0": "-"}}),       # fits
        ev("device-1", "user-1", event_type="$groupidentify", groups={"org": "acme"},
           group_properties={"$set": {f"g{i}": "x" * 1000 for i in range(5)}})])]                          # too much
    res = resolve_batch(lines, [T + i for i in range(4)], PROJECT, 3, "2024-03-09 07:30:00.000000", p.get_many,
                        max_props_bytes=4000)
    rows = [orjson.loads(x) for x in res.lines]
    assert res.keep == [True] * 4 and res.rejected == []
    assert [(i, size > 4000) for i, size in res.dropped] == [(1, True), (3, True)]
    assert rows[0]["user_properties"] == rows[1]["user_properties"] == big
    assert rows[2]["user_properties"] == {k: v for k, v in big.items() if k != "p0"}
    assert rows[3]["group_properties"] == {"org": {"acme": {}}}
