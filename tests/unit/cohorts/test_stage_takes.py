"""The state step applying several cohorts-topic messages at once (a take): the same stores byte for byte as one
message at a time, each user's state written once per take; the rekey step reading only the fields of a row its
cohorts need."""

import orjson

from stream.cohorts.stage import CohortState, MemoryStore, Rekeyer, decode_user, row_decoder, row_fields, user_key
from stream.events.batch import EventBatch, Origin, Source
from stream.settings import load_settings

P = 424242
T = 1_710_028_800_000            # 2024-03-10 00:00 UTC
DAY = 19_792                     # its day number
HOUR, MIN = 3_600_000, 60_000


def settings():
    return load_settings(None, projects=[{"id": P}], cohorts=[
        {"id": "pro-buyers", "project": P, "name": "Pro buyers", "rule": {"and": [
            {"performed": "purchase", "within_days": 1}, {"user_property": "plan", "op": "=", "value": "pro"}]}},
        {"id": "berlin-viewers", "project": P, "name": "Viewers in Berlin", "rule": {
            "performed": "view", "within_days": 3, "where": [
                {"property": "country", "op": "=", "value": "Germany"},
                {"property": "event_properties.page", "op": "=", "value": "/cart"}]}},
    ])


def row(aid, event_type, at, **extra):
    return orjson.dumps({"amplitude_id": aid, "app": P, "event_type": event_type, "device_id": "d-%d" % aid,
                         "event_time": _fmt(at), "user_id": "u-%d" % aid, "user_properties": {"plan": "pro"},
                         "country": "Germany", "event_properties": {"page": "/cart"}, **extra})


def _fmt(at):
    import time
    return time.strftime("%Y-%m-%d %H:%M:%S.000000", time.gmtime(at / 1000))


def batch(offset, rows):
    """An events.accepted batch of ``rows`` (line, upload ms), source offsets from ``offset * 10``."""
    return EventBatch(P, rows[0][1] - rows[0][1] % HOUR, Origin("events.valid", 0, offset),
                      [offset * 10 + i for i in range(len(rows))], [b"d"] * len(rows), [at for _, at in rows],
                      [b"u" * 16] * len(rows), [line for line, _ in rows], Source("events.ingest", 0))


def messages():
    """The cohorts-topic messages (partition, key, value) of three accepted batches of users 10 and 12 (one cohorts
    partition of two), each batch followed by its partition's progress; the last a day and more later, so that the
    progress after it expires the first days' counters."""
    s = settings()
    r = Rekeyer(s.cohort_set, 2, 0)
    out = []
    days = [(T + HOUR, [(10, "purchase"), (12, "view"), (10, "view")]),
            (T + 2 * HOUR, [(12, "purchase"), (10, "purchase"), (12, "view")]),
            (T + 4 * 86_400_000, [(10, "view"), (12, "purchase")])]
    for n, (at, evs) in enumerate(days):
        rows = [(row(aid, et, at + i * MIN), at + i * MIN + 5_000) for i, (aid, et) in enumerate(evs)]
        out += r.batch(0, batch(n + 1, rows))
        out += r.advance(0, at + HOUR, False)
    return [m for m in out if m[0] == 0]


def state():
    s = settings()
    store = MemoryStore()
    return CohortState(s.cohort_set, 2, 400, lambda q: store), store


def test_a_take_of_messages_leaves_the_stores_of_one_message_at_a_time_and_writes_each_user_once():
    msgs = messages()
    assert len(msgs) == 6
    one, one_store = state()
    per_message = []
    for _, k, v in msgs:
        applied = one.apply(0, [(k, v)])
        one_store.write(applied.writes)
        per_message.append(applied)
    take, take_store = state()
    applied = take.apply(0, [(k, v) for _, k, v in msgs])
    take_store.write(applied.writes)
    assert take_store.data == one_store.data
    assert (applied.applied, applied.replayed, applied.expired) == (
        sum(a.applied for a in per_message), 0, sum(a.expired for a in per_message)) == (8, 0, 2)
    users = [k for k, v in applied.writes if k[:1] == b"u"]
    assert sorted(users) == [user_key(10), user_key(12)]
    assert sum(1 for a in per_message for k, _ in a.writes if k[:1] == b"u") == 8
    u = decode_user(take_store.data[user_key(10)])
    # its purchases of the first day expired (a window of 1 day), its views of the first and the last day kept
    assert (u.last_day, u.marks, u.index_day) == (DAY + 4, {"0/events.ingest[0]": 30}, DAY + 3)
    assert {u.keys[i]: days for i, days in u.counts.items()} == {
        c.key: {DAY: 1, DAY + 4: 1} for c in settings().cohort_set.conditions.values() if c.event_type == "view"}
    # the same messages again (a replay after a crash): every record dropped, nothing written
    again = take.apply(0, [(k, v) for _, k, v in msgs])
    assert (again.applied, again.replayed, again.writes) == (0, 8, [])


def test_row_fields_are_the_ones_the_rekey_step_reads_and_the_filtered_ones():
    assert row_fields(settings().cohort_set) == (
        "amplitude_id", "app", "country", "event_properties", "event_time", "event_type", "server_upload_time",
        "user_id", "user_properties")


def test_a_row_decoded_for_its_fields_is_the_full_rows_fields_with_none_for_the_missing_ones():
    decode = row_decoder(("amplitude_id", "app", "event_properties", "server_upload_time", "user_id"))
    line = (b'{"$insert_id":"x","amplitude_id":7,"app":424242,"data":{"a":[1,2]},"event_properties":'
            b'{"page":"/cart","n":1.5,"ok":true},"user_id":null,"zz":"last"}')
    assert decode(line) == {"amplitude_id": 7, "app": 424242, "event_properties": {"page": "/cart", "n": 1.5,
                                                                                   "ok": True},
                            "server_upload_time": None, "user_id": None}


def test_the_rekey_step_sends_the_bytes_of_a_full_parse():
    s = settings()
    rows = [(row(10, "view", T + HOUR, city="Berlin"), T + HOUR + 5_000),
            (row(12, "purchase", T + HOUR, user_properties={"plan": "free", "other": 1}), T + HOUR + 6_000),
            (orjson.dumps({"amplitude_id": 14, "app": P, "event_type": "view", "server_upload_time":
                           "2024-03-10 01:00:00.000000", "country": "Germany"}), T + HOUR + 7_000)]
    r = Rekeyer(s.cohort_set, 2, 0)
    full = [rec for i, (line, at) in enumerate(rows)
            if (rec := r.activity(orjson.loads(line), 0, "events.ingest[0]", 10 + i, at)) is not None]
    sent = r.batch(0, batch(1, rows))
    from stream.cohorts.stage import decode_all
    got = [rec for _, _, v in sent for rec in decode_all(v)]
    assert [g.encode() for g in got] == [f.encode() for f in full]
    assert [(g.amplitude_id, len(g.conditions), g.properties) for g in got] == [
        (10, 1, b'{"plan":"pro"}'), (12, 1, b'{"plan":"free"}'), (14, 0, None)]


def test_trim_joins_a_minute_into_the_hours_bucket_before_it_in_place_and_makes_the_buckets_again_otherwise():
    from stream.cohorts.stage import StoredUser, _trim
    h = T + HOUR
    # the hour's bucket is there before its minute: the minute is added into it, the order kept
    u = StoredUser(project=P, first_ms=h, last_day=DAY, keys=["a", "b"],
                   recent={h: {DAY: [1]}, h + MIN: {DAY: [0, 2], DAY - 1: [1]}, h + 40 * MIN: {DAY: [1]}})
    buckets = u.recent
    assert _trim(u, h + 40 * MIN) is u and u.recent is buckets
    assert list(u.recent.items()) == [(h, {DAY: [1, 2], DAY - 1: [1]}), (h + 40 * MIN, {DAY: [1]})]
    # no bucket of the hour yet: the buckets made again, the hour's where its first minute was
    u = StoredUser(project=P, first_ms=h, last_day=DAY, keys=["a", "b"],
                   recent={h + MIN: {DAY: [1]}, h + 2 * MIN: {DAY + 1: [0, 1]}, h + 40 * MIN: {DAY: [3]}})
    _trim(u, h + 40 * MIN)
    assert list(u.recent.items()) == [(h, {DAY: [1], DAY + 1: [0, 1]}), (h + 40 * MIN, {DAY: [3]})]
    # a bucket older than RECENT_MS and its hour before the latest upload is dropped; properties and user_ids
    # before the cutoff go but the one in force then
    u = StoredUser(project=P, first_ms=h - 30 * HOUR, last_day=DAY, keys=["a"],
                   recent={h - 30 * HOUR: {DAY - 2: [1]}, h: {DAY: [2]}},
                   props=[(h - 30 * HOUR, {"plan": "free"}), (h - 28 * HOUR, {"plan": "pro"}), (h, {"plan": "x"})],
                   uids=[(h - 30 * HOUR, "u-1")])
    _trim(u, h)
    assert (list(u.recent.items()), u.props, u.uids) == (
        [(h, {DAY: [2]})], [(h - 28 * HOUR, {"plan": "pro"}), (h, {"plan": "x"})], [(h - 30 * HOUR, "u-1")])


def test_a_takes_progress_is_written_after_every_state_it_covers():
    """A sync trusts a partition's progress once it has read it, and reads the changelog no further than its end
    offsets: the progress an apply writes must follow, in the changelog, every state the records before it changed.
    In a take, a user first seen after an earlier message's progress (user 14, in the second batch) is written
    before the progress, whose key the first message already wrote."""
    r = Rekeyer(settings().cohort_set, 2, 0)
    msgs = []
    for n, (at, aid) in enumerate([(T + HOUR, 10), (T + 2 * HOUR, 14)]):
        msgs += r.batch(0, batch(n + 1, [(row(aid, "purchase", at), at + 5_000)]))
        msgs += r.advance(0, at + HOUR, False)
    msgs = [(k, v) for p, k, v in msgs if p == 0]
    take, _ = state()
    writes = [k for k, _ in take.apply(0, msgs).writes]
    assert user_key(14) in writes and user_key(10) in writes
    states = [i for i, k in enumerate(writes) if k[:1] in (b"u", b"x")]
    progress = [i for i, k in enumerate(writes) if k[:1] == b"p"]
    assert progress and max(states) < min(progress), writes
