"""Rows held from a device's first event with a new user_id until the user side answers the link: a user known
elsewhere has the user's id and fields on every event from the first; holds past the bound go out as they are."""

import orjson
import pytest

from stream.identity.device import held_line
from stream.identity.records import HOLDS, RELEASED, decode_int
from tests.unit.identity.test_resolution import PROJECT, T, Partition, UserSide, ev

NOW = 1_800_000_000_000       # Kafka timestamps of the events.valid messages


def released(p):
    """(amplitude_id, user_id, user_properties, user_creation_time, source offset) of the rows let go."""
    return [(r["amplitude_id"], r["user_id"], r["user_properties"], r["user_creation_time"], o)
            for r, o in ((orjson.loads(line), o) for _, line, o in p.released.rows)]


def test_a_user_known_by_user_id_alone_has_its_id_and_properties_on_every_event_of_a_new_device():
    p0, p1, users = Partition(0), Partition(1), UserSide(0)
    # the user's properties imported by user_id alone: its own device, on its user_id's partition
    rows, res = p0.run(ev(None, "user-1111", event_type="$identify", user_properties={"$set": {"plan": "pro"}}),
                       now=NOW)
    assert (rows, res.held, res.keep) == ([], 1, [False])
    d = users.links(0, 0, res.links)
    assert (d.merges, p0.remap(d.remaps[0], now=NOW + 40)) == ([], 0)   # adopted: the answer moves nothing
    assert released(p0) == [(1024, "user-1111", {"plan": "pro"}, "2024-03-09 07:00:00.000000", 0)]
    assert p0.released.waits_ms == [40] and p0.released.unanswered == 0
    # then events of the user from a new device on another partition: held until the merge comes back
    rows, res = p1.run(ev("dev-bbbb2", "user-1111"), ev("dev-bbbb2", "user-1111"), ev("dev-cccc3"),
                       t=T + 60_000, now=NOW + 100)
    assert ([r["device_id"] for r in rows], res.held, res.keep) == (["dev-cccc3"], 2, [False, False, True])
    rows, res2 = p1.run(ev("dev-bbbb2"), t=T + 61_000, now=NOW + 150)   # the device's later rows wait behind
    assert (rows, res2.held, res2.links) == ([], 1, [])
    d = users.links(1, 0, res.links)
    assert [(m.amplitude_id, m.merged_amplitude_id) for m in d.merges] == [(1024, 1025)]
    assert p1.remap(d.remaps[1], now=NOW + 300) == 1
    assert released(p1) == [(1024, "user-1111", {"plan": "pro"}, "2024-03-09 07:00:00.000000", 0),
                            (1024, "user-1111", {"plan": "pro"}, "2024-03-09 07:00:00.000000", 1),
                            (1024, None, {"plan": "pro"}, "2024-03-09 07:00:00.000000", 2)]
    assert p1.released.waits_ms == [200]
    assert (HOLDS in p1.db, decode_int(p1.db[RELEASED], 0)) == (False, 3)   # nothing held; next offset 3
    rows, res = p1.run(ev("dev-bbbb2", "user-1111"), now=NOW + 400)          # from now on, at once
    assert [(r["amplitude_id"], r["user_properties"]) for r in rows] == [(1024, {"plan": "pro"})]
    assert res.held == 0


def test_a_row_keeps_its_own_updates_over_the_users_properties_and_every_other_byte():
    p0, p1, users = Partition(0), Partition(1), UserSide(0)
    _, res = p0.run(ev("dev-aaaa1", "user-1111", user_properties={"plan": "pro", "n": 1}), now=NOW)
    p0.remap(users.links(0, 0, res.links).remaps[0], now=NOW)
    _, res = p1.run(ev("dev-bbbb2", "user-1111", user_properties={"n": 2}, app_version="2.0"),
                    ev("dev-bbbb2", "user-1111", price=1.0), t=T + 5000, now=NOW)
    p1.remap(users.links(1, 0, res.links).remaps[1], now=NOW)
    rows = [orjson.loads(line) for _, line, _ in p1.released.rows]
    assert [(r["amplitude_id"], r["user_properties"], r["paying"], r["start_version"], r["user_creation_time"])
            for r in rows] == [(1024, {"plan": "pro", "n": 2}, False, "2.0", "2024-03-09 07:00:00.000000"),
                               (1024, {"plan": "pro", "n": 2}, True, "2.0", "2024-03-09 07:00:00.000000")]
    # the row's own columns are the ones the device side wrote: only the user's fields differ
    before = [orjson.loads(held_line(r)) for r, _, _ in p1.released.rows]
    assert [{k: v for k, v in r.items() if k not in ("amplitude_id", "user_properties", "paying",
                                                      "start_version", "user_creation_time")} for r in rows] == [
        {k: v for k, v in r.items() if k not in ("amplitude_id", "user_properties", "paying", "start_version",
                                                 "user_creation_time")} for r in before]


def test_rows_held_past_the_bound_go_out_as_they_are_with_the_next_batch_and_are_counted():
    p1, users = Partition(1), UserSide(0)
    _, res = p1.run(ev("dev-bbbb2", "user-1111"), now=NOW, bound=1000)
    rows, res2 = p1.run(ev("dev-cccc3"), now=NOW + 999, bound=1000)
    assert ([r["amplitude_id"] for r in rows], res2.released.rows) == ([2049], [])
    rows, res3 = p1.run(ev("dev-cccc3"), now=NOW + 1000, bound=1000)
    assert [(orjson.loads(line)["amplitude_id"], o) for _, line, o in res3.released.rows] == [(1025, 0)]
    assert (res3.released.unanswered, res3.released.past_bound, res3.released.waits_ms, HOLDS in p1.db) == (
        1, 1, [1000], False)
    # the answer comes later: nothing is held any more; the pair still moves for the events after it
    d = users.links(1, 0, res.links)
    assert d.remaps[1][0].from_aid == d.remaps[1][0].to_aid          # the first link of the user: adopted
    assert (p1.remap(d.remaps[1], now=NOW + 5000), p1.released.rows) == (0, [])


def test_a_batch_resolved_again_on_the_same_state_holds_and_releases_the_same_rows():
    p, users = Partition(0), UserSide(0)
    _, res = p.run(ev("dev-aaaa1", "user-1111"), now=NOW, bound=1000)
    state = dict(p.db)
    rows1, r1 = p.run(ev("dev-aaaa1", "user-1111"), ev("dev-bbbb2", "user-2222"), now=NOW + 2000, bound=1000,
                      offsets=[1, 2])
    p.db, p.offset = dict(state), p.offset - 1
    rows2, r2 = p.run(ev("dev-aaaa1", "user-1111"), ev("dev-bbbb2", "user-2222"), now=NOW + 2000, bound=1000,
                      offsets=[1, 2])
    assert (rows1, r1.writes, r1.released, r1.held) == (rows2, r2.writes, r2.released, r2.held)
    # dev-aaaa1's hold was past the bound: its row goes out before the batch's, which goes out at once; dev-bbbb2's
    # first row waits
    assert ([o for _, _, o in r1.released.rows], r1.released.unanswered, r1.held) == ([0], 1, 1)
    assert [r["device_id"] for r in rows1] == ["dev-aaaa1"]


def test_a_bound_of_0_holds_nothing_new_and_lets_go_what_was_held():
    p = Partition(0)
    p.run(ev("dev-aaaa1", "user-1111"), now=NOW)
    rows, res = p.run(ev("dev-bbbb2", "user-2222"), ev("dev-aaaa1"), now=NOW + 10, bound=0)
    assert [r["device_id"] for r in rows] == ["dev-bbbb2", "dev-aaaa1"] and res.held == 0
    assert [(orjson.loads(line)["device_id"], o) for _, line, o in res.released.rows] == [("dev-aaaa1", 0)]
    assert (res.released.unanswered, HOLDS in p.db) == (1, False)


def test_released_rows_go_out_as_batches_of_one_hour_each_on_the_partitions_held_source():
    from stream.identity.stage import held_source, released_batches
    from stream.events.batch import Origin
    p, users = Partition(0), UserSide(0)
    _, res = p.run(ev("dev-aaaa1", "user-1111"), ev("dev-aaaa1"), now=NOW)
    p.run(ev("dev-aaaa1"), t=T - 3_600_000, now=NOW + 5)           # a batch of an earlier hour: held too
    p.run(ev("dev-aaaa1"), t=T + 50, now=NOW + 6)
    p.remap(users.links(0, 0, res.links).remaps[0], now=NOW + 10)
    batches = released_batches(p.released, Origin("events.valid", 0, 77), held_source("events.valid"))
    assert [(b.hour, b.offsets, b.keys, str(b.source), b.origin.offset, len(b.lines)) for b in batches] == [
        (T, [0, 1], [b"k0", b"k1"], "events.valid.held[0]", 77, 2),
        (T - 3_600_000, [2], [b"k0"], "events.valid.held[0]", 77, 1),
        (T, [3], [b"k0"], "events.valid.held[0]", 77, 1)]


def test_a_hold_keeps_each_version_of_the_users_properties_once():
    from stream.identity.records import held_chunk_key, held_key
    p = Partition(0)
    big = {f"p{i:03d}": "v" * 1000 for i in range(50)}
    p.run(ev("dev-aaaa1", "user-1111", event_type="$identify", user_properties={"$set": big}),
          *[ev("dev-aaaa1", "user-1111") for _ in range(30)], now=NOW)
    # the properties once (51 KB) and each row's own columns (under 1.1 KB each), not 31 copies (1.6 MB)
    assert 51_000 < len(p.db[held_chunk_key(held_key(PROJECT, "dev-aaaa1"), 0, 0)]) < 51_000 + 31 * 1100
    rows, res = p.run(ev("dev-cccc3"), now=NOW + 60_000)
    assert [orjson.loads(line)["user_properties"] for _, line, _ in res.released.rows] == [big] * 31


def test_a_hold_is_let_go_before_the_rows_of_a_later_hour_so_that_its_rows_stay_in_their_hours_object():
    p = Partition(0)
    p.run(ev("dev-aaaa1", "user-1111"), now=NOW)
    rows, res = p.run(ev("dev-bbbb2"), ev("dev-aaaa1"), t=T + 3_600_000 + 60_000, now=NOW + 5)
    assert [(r["device_id"], r["amplitude_id"]) for r in rows] == [("dev-bbbb2", 2048), ("dev-aaaa1", 1024)]
    assert [(orjson.loads(line)["server_upload_time"], o) for _, line, o in res.released.rows] == [
        ("2024-03-09 07:00:00.000000", 0)]
    assert (res.released.unanswered, res.released.past_bound, res.held, HOLDS in p.db) == (1, 0, 0, False)


def test_an_event_that_went_through_a_hold_and_comes_again_from_upstream_is_dropped():
    """Dedupe lets the same event through again (an import that read its file again, an ingest replay); held, it
    went out on the held rows' source, where the exporter cannot know it: the device side drops it."""
    p, users = Partition(0), UserSide(0)
    rows, res = p.run(ev("dev-aaaa1"), ev("dev-aaaa1", "user-1111"), ev("dev-aaaa1"), now=NOW, offsets=[10, 11, 12])
    assert ([r["device_id"] for r in rows], res.held) == (["dev-aaaa1"], 2)      # the first went out at once
    p.remap(users.links(0, 0, res.links).remaps[0], now=NOW + 5)
    assert [o for _, _, o in p.released.rows] == [0, 1]
    # the same three events again (their source offsets), and a new one; from another source, the same offsets
    rows, res = p.run(ev("dev-aaaa1"), ev("dev-aaaa1", "user-1111"), ev("dev-aaaa1"), ev("dev-aaaa1"),
                      now=NOW + 10, offsets=[10, 11, 12, 13])
    # every event of the device from that source up to the last one held went out already: dropped
    assert ([r["amplitude_id"] for r in rows], res.keep, res.replayed) == ([1024], [False, False, False, True], 3)
    rows, res = p.run(ev("dev-aaaa1", "user-1111"), now=NOW + 20, offsets=[11], source="imports.files[0]")
    assert (len(rows), res.replayed) == (1, 0)


def test_an_event_held_and_come_again_from_upstream_while_its_hold_lasts_is_dropped_and_the_device_keeps_its_offset():
    """While a hold lasts, the highest source offset of its rows is in the hold's record, not yet the device's: an
    upstream replay of a held row is dropped all the same, and once the hold is let go the device's record has it."""
    from stream.identity.records import dec_device, dec_held, device_key, held_key
    p = Partition(0)
    dk, hk = device_key(PROJECT, "dev-aaaa1"), held_key(PROJECT, "dev-aaaa1")
    rows, res = p.run(ev("dev-aaaa1", "user-1111"), ev("dev-aaaa1"), now=NOW, bound=10**9, offsets=[10, 11])
    assert (rows, res.held, dec_device(p.db[dk]).held, dec_held(p.db[hk]).offsets) == (
        [], 2, {}, {"events.ingest[0]": 11})
    rows, res = p.run(ev("dev-aaaa1", "user-1111"), ev("dev-aaaa1"), ev("dev-aaaa1"), now=NOW + 1, bound=10**9,
                      offsets=[10, 11, 12])
    assert (res.keep, res.replayed, res.held) == ([False, False, False], 2, 1)    # 10 and 11 again; 12 held
    assert (dk in res.writes, dec_held(p.db[hk]).offsets) == (False, {"events.ingest[0]": 12})
    rows, res = p.run(ev("dev-cccc3"), now=NOW + 10**9 + 1, bound=10**9)          # past the bound: let go
    assert ([o for _, _, o in res.released.rows], hk in p.db, dec_device(p.db[dk]).held) == (
        [0, 1, 2], False, {"events.ingest[0]": 12})
    rows, res = p.run(ev("dev-aaaa1"), ev("dev-aaaa1"), now=NOW + 10**9 + 2, offsets=[12, 13])
    assert ([r["device_id"] for r in rows], res.replayed) == (["dev-aaaa1"], 1)


def test_holding_a_batch_writes_that_batchs_rows_and_the_holds_record_not_the_rows_held_before_nor_the_device():
    from stream.identity.records import (Held, dec_held, dec_held_rows, dec_keys, device_key, enc, held_chunk_key,
                                         held_key, profile_key, unused_key)
    p = Partition(0)
    hk, dk, ak = held_key(PROJECT, "dev-aaaa1"), device_key(PROJECT, "dev-aaaa1"), profile_key(PROJECT, 1024)
    _, res = p.run(ev("dev-aaaa1", "user-1111"), now=NOW, bound=10**9)
    assert set(res.writes) >= {hk, held_chunk_key(hk, 0, 0)}
    sizes = []
    for n in range(1, 41):
        _, res = p.run(*[ev("dev-aaaa1", user_properties={"n": n}) for _ in range(3)], now=NOW + n, bound=10**9)
        chunk = held_chunk_key(hk, 0, n)
        assert (res.held, set(res.writes), res.before[chunk]) == (3, {ak, hk, chunk}, None)
        # the highest source offset held is the hold's (the device's record takes it when the hold is let go)
        assert dec_held(res.writes[hk]) == Held(NOW, ["user-1111"], [], n + 1, 0, {"events.ingest[0]": 3 * n})
        # the batch's rows, the user's properties once (the rows after the first show the same)
        assert [(r.key, r.uuid, r.props) for r in dec_held_rows(res.writes[chunk])] == [
            (b"k0", b"u%015d" % 0, b'{"n":%d}' % n), (b"k1", b"u%015d" % 1, b""), (b"k2", b"u%015d" % 2, b"")]
        sizes.append(sum(len(v) for v in res.writes.values()) + sum(len(v or b"") for v in res.before.values()))
    # the bytes written (and journaled) by a batch are those of its own rows, however many rows are held already
    assert sizes[39] - sizes[0] <= 16, sizes          # (the digits of n and of offsets grow)
    assert enc.encode(Held(NOW, ["user-1111"], [], 41, 0, {"events.ingest[0]": 120})) == p.db[hk]
    rows, res = p.run(ev("dev-cccc3"), now=NOW + 10**9)               # past the bound: all 121 go, in order
    assert [(orjson.loads(line)["user_properties"], o) for _, line, o in res.released.rows] == [({}, 0)] + [
        ({"n": n}, 1 + 3 * (n - 1) + i) for n in range(1, 41) for i in range(3)]
    # the record deleted; its 41 chunks listed as unused by the batch (offset 41), not deleted with a pre-image each
    assert (hk in p.db, dec_keys(p.db[unused_key(41)])) == (False, [held_chunk_key(hk, 0, n) for n in range(41)])
    assert [k for k in res.writes if k[:1] == b"Q"] == [] and max(len(v or b"") for v in res.before.values()) < 100


def _chunk_keys(hk, h):
    from stream.identity.records import held_chunk_key, held_rows_key
    return [held_rows_key(hk, n) if h.first < 0 else held_chunk_key(hk, h.first, n) for n in range(h.chunks)]


def _inline(p):
    """The partition's holds as a version without chunks stored them: every row in the hold's record."""
    from stream.identity.records import dec_held, dec_held_rows, enc
    import msgspec
    for hk in [k for k in p.db if k[:1] == b"H"]:
        h = dec_held(p.db[hk])
        rows = list(h.rows)
        for k in _chunk_keys(hk, h):
            chunk = dec_held_rows(p.db.pop(k))
            for i in range(1, len(chunk)):
                if not chunk[i].props:
                    chunk[i].props = chunk[i - 1].props
            rows += chunk
        rows = [msgspec.structs.replace(r, props=b"") if i and r.props == rows[i - 1].props else r
                for i, r in enumerate(rows)]
        p.db[hk] = enc.encode([h.since, h.waiting, rows])


def _numbered(p):
    """The partition's holds as the version before stored them: chunks numbered from 0 under ``held_rows_key``,
    deleted by the message that let their rows go (so nothing is listed as unused)."""
    from stream.identity.records import UNUSED, dec_held, dec_keys, enc, held_rows_key
    for k in [k for k in p.db if k[:1] == UNUSED]:
        for chunk in dec_keys(p.db.pop(k)):
            p.db.pop(chunk)
    for hk in [k for k in p.db if k[:1] == b"H"]:
        h = dec_held(p.db[hk])
        values = [p.db.pop(k) for k in _chunk_keys(hk, h)]
        for n, v in enumerate(values):
            p.db[held_rows_key(hk, n)] = v
        p.db[hk] = enc.encode([h.since, h.waiting, h.rows, len(values)])


@pytest.mark.parametrize("earlier", [_inline, _numbered])
def test_holds_stored_in_chunks_or_in_one_record_let_go_the_same_rows_in_the_same_order(earlier):
    """Generated batches and answers, on a partition whose holds are chunked and on one whose holds are turned
    after every step into those of an earlier version (every row in the hold's record; chunks numbered from 0 and
    deleted when let go): the same rows out, byte for byte."""
    import random
    for seed in range(12):
        rnd = random.Random(seed)
        chunked, inline, users_c, users_i = Partition(0), Partition(0), UserSide(0), UserSide(0)
        pending: list = []
        out_c, out_i = [], []
        now = NOW
        for step in range(40):
            now += rnd.choice([1, 50, 400])
            if pending and rnd.random() < 0.3:
                links = pending.pop(0)
                for p, users, out in ((chunked, users_c, out_c), (inline, users_i, out_i)):
                    d = users.links(0, step, links)
                    p.remap(d.remaps.get(0, []), now=now)
                    out.append([(line, o) for _, line, o in p.released.rows])
                earlier(inline)
                continue
            events = [ev(f"dev-{rnd.randrange(4)}", rnd.choice([None, None, f"user-{rnd.randrange(3)}"]),
                         user_properties={"$set": {"v": rnd.randrange(3)}}) for _ in range(rnd.randrange(1, 6))]
            t = T + rnd.choice([0, 0, 0, 3_600_000]) * (step // 20)
            res_c = chunked.run(*events, t=t, now=now, bound=1000)
            res_i = inline.run(*events, t=t, now=now, bound=1000)
            earlier(inline)
            assert res_c[0] == res_i[0] and res_c[1].keep == res_i[1].keep
            out_c.append([(line, o) for _, line, o in res_c[1].released.rows])
            out_i.append([(line, o) for _, line, o in res_i[1].released.rows])
            if res_c[1].links:
                pending.append(res_c[1].links)
        assert out_c == out_i
        assert sum(map(len, out_c)) > 5, seed        # the generated steps do hold and let go rows


def test_holding_and_letting_go_read_no_chunk_before_writing_it():
    """A chunk's key (and the list of unused chunks) is written by one message only: its pre-image is None
    without a read of the state."""
    p, users = Partition(0), UserSide(0)
    asked: list[bytes] = []
    get_many = p.get_many
    p.get_many = lambda keys: asked.extend(keys) or get_many(keys)
    _, res = p.run(ev("dev-aaaa1", "user-1111"), now=NOW)
    p.run(ev("dev-aaaa1"), now=NOW + 1)
    assert [k[:1] for k in res.writes if k[:1] == b"Q"] == [b"Q"] and [k for k in asked if k[:1] in b"Qx"] == []
    p.remap(users.links(0, 0, res.links).remaps[0], now=NOW + 2)
    assert len(p.released.rows) == 2
    # the chunks are read to let their rows go; nothing else of them or of the unused list
    assert sorted(k[-4:] for k in asked if k[:1] == b"Q") == [b"\0\0\0\0", b"\0\0\0\1"]
    assert [k for k in asked if k[:1] == b"x"] == []


class _ByRef:
    """A partition whose rows are held as references to their batch's message (``Hold.index``), filled from the
    messages when let go (``fill``); the messages' rows are behind a row that dedupe dropped."""

    def __init__(self, p):
        self.p, self.messages = p, {}
        self.db = p.db

    def run(self, *events, **kw):
        from stream.identity.device import Hold, Message, fill, resolve_batch
        from stream.events.normalize import Rules, normalize_message
        from tests.unit.identity.test_resolution import T
        t, now, bound = kw.get("t", T), kw["now"], kw.get("bound", 30_000)
        p = self.p
        lines = [normalize_message(orjson.dumps(e), None, PROJECT, t + i, f"in/0/{i}", Rules()).line
                 for i, e in enumerate(events)]
        n = len(lines)
        offsets = list(range(p.sourced, p.sourced + n))
        p.sourced += n
        keys, uuids = [b"k%d" % i for i in range(n)], [b"u%015d" % i for i in range(n)]
        self.messages[p.offset] = Message([b"dup"] + lines, [b"kd"] + keys, [b"ud"] + uuids, [])
        hold = Hold(now, bound, t - t % 3_600_000, "events.ingest[0]", offsets, keys, uuids, [], "", p.offset,
                    list(range(1, n + 1)))
        res = resolve_batch(lines, [t + i for i in range(n)], PROJECT, p.number, "2024-03-09 07:30:00.000000",
                            p.get_many, hold=hold)
        assert res.held_rows == [i for i, k in enumerate(res.keep) if not k]
        fill(res.released, self.messages)
        p.commit(res.writes)
        p.offset += 1
        return [orjson.loads(x) for x in res.lines], res

    def remap(self, remaps, now=0):
        from stream.identity.device import fill
        applied = self.p.remap(remaps, now)
        fill(self.p.released, self.messages)
        self.released = self.p.released
        return applied


def test_rows_held_by_reference_let_go_the_rows_held_as_copies_byte_for_byte():
    """Generated batches and answers on a partition whose rows are held as copies and on one whose rows are held as
    references to their messages: the same rows out, in the same order, and chunks without the rows' bytes."""
    import random
    from stream.identity.records import dec_held_rows
    from tests.unit.identity.test_resolution import T
    for seed in range(12):
        rnd = random.Random(seed)
        copies, refs, users_c, users_r = Partition(0), _ByRef(Partition(0)), UserSide(0), UserSide(0)
        pending: list = []
        out_c, out_r = [], []
        now, referred = NOW, 0
        for step in range(40):
            now += rnd.choice([1, 50, 400])
            if pending and rnd.random() < 0.3:
                links = pending.pop(0)
                for p, users, out in ((copies, users_c, out_c), (refs, users_r, out_r)):
                    d = users.links(0, step, links)
                    p.remap(d.remaps.get(0, []), now=now)
                    out.append([(r.key, r.uuid, line, o) for r, line, o in p.released.rows])
                continue
            events = [ev(f"dev-{rnd.randrange(4)}", rnd.choice([None, None, f"user-{rnd.randrange(3)}"]),
                         user_properties={"$set": {"v": rnd.randrange(3)}}) for _ in range(rnd.randrange(1, 6))]
            t = T + rnd.choice([0, 0, 0, 3_600_000]) * (step // 20)
            res_c = copies.run(*events, t=t, now=now, bound=1000)
            res_r = refs.run(*events, t=t, now=now, bound=1000)
            assert res_c[0] == res_r[0] and res_c[1].keep == res_r[1].keep
            out_c.append([(r.key, r.uuid, line, o) for r, line, o in res_c[1].released.rows])
            out_r.append([(r.key, r.uuid, line, o) for r, line, o in res_r[1].released.rows])
            if res_c[1].links:
                pending.append(res_c[1].links)
            referred += sum(r.at >= 0 for k, v in refs.db.items() if k[:1] == b"Q" for r in dec_held_rows(v))
        assert out_c == out_r
        assert sum(map(len, out_c)) > 5 and referred > 5, seed    # the generated steps do hold and let go rows


def test_a_batch_reads_the_hold_of_a_device_only_when_the_partitions_holds_list_it():
    """The partition's holds list (``HOLDS``) names every hold: a device it does not name has none, and its H key is
    not read; a held device's is read once, in one multi-get."""
    p = Partition(0)
    calls: list[list[bytes]] = []
    get_many = p.get_many
    p.get_many = lambda keys: calls.append(sorted(keys)) or get_many(keys)
    _, res = p.run(ev("dev-aaaa1", "user-1111"), ev("dev-bbbb2"), now=NOW)
    assert [k for c in calls for k in c if k[:1] == b"H"] == []      # no hold yet: none read
    assert [k for k in res.writes if k[:1] == b"H"] == [b"H%d\x00dev-aaaa1" % PROJECT]
    assert res.before[b"H%d\x00dev-aaaa1" % PROJECT] is None
    calls.clear()
    _, res = p.run(ev("dev-aaaa1"), ev("dev-bbbb2"), ev("dev-cccc3"), now=NOW + 1)
    assert [[k for k in c if k[:1] == b"H"] for c in calls if any(k[:1] == b"H" for k in c)] == [
        [b"H%d\x00dev-aaaa1" % PROJECT]]
    assert res.held == 1 and res.keep == [False, True, True]


def _get_reading_every_hold(self, hk):
    """``_HoldBook.get`` as it was: every device's H key read, whether the holds list names it or not (the
    reference the holds list's path is compared with)."""
    from stream.identity.records import dec_held
    if hk not in self.held:
        v = self.st.get(hk)
        h = self.held[hk] = dec_held(v) if v is not None else None
        self.stored[hk] = (h.first, h.chunks) if h is not None else (-1, 0)
        if h is not None:
            self._unshare(h.rows)
    return self.held[hk]


def test_holds_found_by_the_holds_list_hold_and_let_go_what_reading_every_hold_does(monkeypatch):
    """Generated batches and answers on two partitions, one finding its holds by the partition's holds list and one
    reading every device's H key (the reference): the same rows out, held and let go, and the same writes with the
    same pre-images, byte for byte."""
    import random
    from stream.identity import device
    current = device._HoldBook.get
    for seed in range(16):
        rnd = random.Random(seed)
        listed, every, users_l, users_e = Partition(0), Partition(0), UserSide(0), UserSide(0)
        pending: list = []
        now, held, let_go = NOW, 0, 0
        for step in range(40):
            now += rnd.choice([1, 50, 400])
            if pending and rnd.random() < 0.3:
                links = pending.pop(0)
                out = []
                for p, users, get in ((listed, users_l, current), (every, users_e, _get_reading_every_hold)):
                    monkeypatch.setattr(device._HoldBook, "get", get)
                    d = users.links(0, step, links)
                    r = device.apply_remaps(d.remaps.get(0, []), p.get_many, now, p.offset)
                    p.commit(r.writes)
                    p.offset += 1
                    out.append((r.writes, r.before, r.applied, [(line, o) for _, line, o in r.released.rows]))
                assert out[0] == out[1], (seed, step)
                let_go += len(out[0][3])
                continue
            events = [ev(f"dev-{rnd.randrange(6)}", rnd.choice([None, None, f"user-{rnd.randrange(4)}"]),
                         user_properties={"$set": {"v": rnd.randrange(3)}}) for _ in range(rnd.randrange(1, 7))]
            t = T + rnd.choice([0, 0, 0, 3_600_000]) * (step // 20)
            bound = rnd.choice([1000, 30_000])
            monkeypatch.setattr(device._HoldBook, "get", current)
            lines_l, res_l = listed.run(*events, t=t, now=now, bound=bound)
            monkeypatch.setattr(device._HoldBook, "get", _get_reading_every_hold)
            lines_e, res_e = every.run(*events, t=t, now=now, bound=bound)
            assert (lines_l, res_l.keep, res_l.writes, res_l.before, res_l.links) == (
                lines_e, res_e.keep, res_e.writes, res_e.before, res_e.links), (seed, step)
            assert ([(line, o) for _, line, o in res_l.released.rows] ==
                    [(line, o) for _, line, o in res_e.released.rows]), (seed, step)
            held += res_l.held
            let_go += len(res_l.released.rows)
            if res_l.links:
                pending.append(res_l.links)
        monkeypatch.setattr(device._HoldBook, "get", current)
        assert held > 5 and let_go > 5, seed        # the generated steps do hold and let go rows
