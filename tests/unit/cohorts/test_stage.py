"""The cohorts stage on a fake clock: events re-keyed by user, folded into per-user state, and syncs that read the
state as of their time -- exact member sets and file bytes across daily and hourly syncs, replays, merges, expiry
by the day index, users kept beyond the events' retention."""

import asyncio
import calendar
import time

import orjson
import pytest

from stream.clock import FakeClock
from stream.cohorts import stage
from stream.cohorts.stage import (
    EXPIRY_LAG_DAYS,
    LocalStage,
    NotPassed,
    SyncView,
    decode_user,
    index_key,
    user_key,
)
from stream.cohorts.sync import jobs_of, run_syncs
from stream.events.batch import EventBatch, Origin, Source
from stream.s3.storage import MemoryStorage
from stream.settings import load_settings

P = 424242
BUCKET = "cohort-bucket"
DAY = 86_400_000


def ms(text: str) -> int:
    return calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M")) * 1000


T1, T2, T3 = ms("2024-03-10 00:00"), ms("2024-03-11 00:00"), ms("2024-03-12 00:00")


def settings(cohorts=None, cadence="daily", state_days=400):
    return load_settings(None, projects=[{"id": P}, {"id": 7}], cohort_state={"state_days": state_days},
                         cohorts=cohorts or [
        {"id": "pro-buyers", "project": P, "name": "Pro buyers", "rule": {"and": [
            {"performed": "purchase", "within_days": 1},
            {"user_property": "plan", "op": "=", "value": "pro"}]}},
        {"id": "other-project", "project": 7, "name": "Another project's", "rule": {
            "performed": "purchase", "within_days": 2}},
    ], cohort_destinations=[{"name": "crm", "bucket": BUCKET, "encryption": {"type": "none"}, "syncs": [
        {"cohort": (cohorts or [{"id": "pro-buyers"}])[0]["id"], "cadence": cadence, "properties": ["plan", "score"]}]}])


class Feed:
    """events.accepted as the stage reads it: one batch per event, each with its own source offset."""

    def __init__(self, s, partitions=3):
        self.s, self.partitions = s, partitions
        self.stage = LocalStage(s.cohort_set, partitions, s.cohort_state.state_days)
        self.offset = 0
        self.sent: list[tuple[int, EventBatch]] = []

    def event(self, aid, event_type, at, user_id=None, app=P, uploaded=None, **props):
        r = {"amplitude_id": aid, "app": app, "event_type": event_type, "event_time": at + ":00.000000",
             "user_id": user_id}
        if props:
            r["user_properties"] = props
        up = uploaded if uploaded is not None else ms(at) + 5_000
        self.offset += 1
        part = aid % self.partitions
        batch = EventBatch(app, up - up % 3_600_000, Origin("events.valid", part, self.offset), [self.offset],
                           [b"d"], [up], [b"u" * 16], [orjson.dumps(r)], Source("events.ingest", 0))
        self.sent.append((part, batch))
        self.stage.accepted(part, batch)

    def replay(self, n):
        """The last ``n`` batches delivered again (an upstream stage that wrote them twice)."""
        for part, batch in self.sent[-n:]:
            self.stage.accepted(part, batch)

    def merge(self, into, merged, at):
        self.stage.merge({"amplitude_id": into, "merged_amplitude_id": merged, "merge_time": at,
                          "merge_server_time": at, "scope": P})

    def advance(self, now):
        self.stage.advance(now)


def run(s, now, storage, source, cohort="pro-buyers"):
    return asyncio.run(run_syncs(s, jobs_of(s, cohort), now, lambda d: storage, source))


def objects(storage):
    return {k: v for (b, k), v in storage.objects.items() if b == BUCKET}


HEAD = b"amplitudeID,userID,plan,score\r\n"
F = "cohorts/424242_pro-buyers_"


def test_daily_syncs_while_traffic_flows_write_the_exact_files():
    """The history of ``test_sync``: the same bytes, though each sync runs once the state has also taken events
    uploaded after its time (they are not counted: the state is viewed as of T)."""
    s, storage = settings(), MemoryStorage()
    f = Feed(s)
    f.event(10, "purchase", "2024-03-09 12:00", "u-10", plan="pro")
    f.event(50, "purchase", "2024-03-09 12:00", "u-50", app=7, plan="pro")
    f.event(20, "purchase", "2024-03-09 13:00", "u-20", plan="pro")
    # after T1: a purchase of the 9th uploaded late (not counted by the sync of T1), 20's next rows
    f.event(60, "purchase", "2024-03-09 23:50", "u-60", uploaded=T1 + 60_000, plan="pro")
    # and one of a user seen before T1: its counter of the 9th is taken off as of T1
    f.event(70, "view", "2024-03-09 10:00", "u-70", plan="pro")
    f.event(70, "purchase", "2024-03-09 23:55", "u-70", uploaded=T1 + 120_000, plan="pro")
    f.event(20, "purchase", "2024-03-10 09:00", "u-20", plan="pro")
    f.advance(T1 + 10 * 60_000)
    (r1,) = run(s, T1 + 7 * 3_600_000, storage, f.stage)
    assert (r1.scheduled_ms, r1.members, r1.entering, r1.error) == (T1, 2, 2, None)
    files = objects(storage)
    assert files[F + "2024-03-10T00:00_entering.csv"] == HEAD + b"10,u-10,pro,\r\n20,u-20,pro,\r\n"
    assert files[F + "2024-03-10T00:00_exiting.csv"] == HEAD
    assert files[F + "2024-03-10T00:00_existing.csv"] == HEAD + b"10,u-10,pro,\r\n20,u-20,pro,\r\n"

    f.event(20, "view", "2024-03-10 10:00", "u-20", plan="free")
    f.event(30, "purchase", "2024-03-10 15:00", "u,30 \"jr\"", plan="pro", score=2.5)
    f.event(40, "view", "2024-03-10 16:00", "u-40", plan="pro")
    # after T2: 20 back on the pro plan (a property of after T2: not in the sync of T2)
    f.event(20, "view", "2024-03-11 00:05", "u-20", plan="pro")
    f.advance(T2 + 10 * 60_000)
    (r2,) = run(s, T2 + 60_000, storage, f.stage)
    assert (r2.scheduled_ms, r2.members, r2.entering, r2.exiting, r2.previous) == (T2, 1, 1, 2, "2024-03-10T00:00")
    files = objects(storage)
    assert files[F + "2024-03-11T00:00_entering.csv"] == HEAD + b'30,"u,30 ""jr""",pro,2.5\r\n'
    assert files[F + "2024-03-11T00:00_exiting.csv"] == HEAD + b"10,u-10,pro,\r\n20,u-20,free,\r\n"
    assert files[F + "2024-03-11T00:00_existing.csv"] == HEAD + b'30,"u,30 ""jr""",pro,2.5\r\n'

    f.event(30, "purchase", "2024-03-11 08:00", "u,30 \"jr\"", plan="pro")
    f.event(41, "purchase", "2024-03-11 05:00")
    f.merge(40, 41, ms("2024-03-11 06:00"))
    f.advance(T3 + 10 * 60_000)
    (r3,) = run(s, T3, storage, f.stage)
    assert (r3.members, r3.entering, r3.exiting) == (2, 1, 0)
    files = objects(storage)
    assert files[F + "2024-03-12T00:00_entering.csv"] == HEAD + b"40,u-40,pro,\r\n"
    assert files[F + "2024-03-12T00:00_exiting.csv"] == HEAD
    assert files[F + "2024-03-12T00:00_existing.csv"] == HEAD + b'30,"u,30 ""jr""",pro,\r\n40,u-40,pro,\r\n'
    done = orjson.loads(files["_stream/cohorts/crm/424242_pro-buyers/done/2024-03-12T00-00.done"])
    assert (done["scheduled_ms"], done["previous"], done["members"]) == (T3, "2024-03-11T00:00", 2)


def test_a_sync_waits_until_every_partition_has_passed_its_time():
    """A partition behind T (a stall, or traffic still arriving) fails the sync (retried by the scheduler) instead
    of writing files from a part of the events."""
    s, storage = settings(), MemoryStorage()
    f = Feed(s)
    f.event(10, "purchase", "2024-03-09 12:00", "u-10", plan="pro")
    f.stage.deliver(f.stage.rekeyer.advance(0, T1 + 60_000, True))
    f.stage.deliver(f.stage.rekeyer.advance(1, T1 + 60_000, True))     # partition 2 has sent nothing past T1
    f.stage.deliver(f.stage.rekeyer.advance(2, T1 - 60_000, True))
    (r,) = run(s, T1 + 3_600_000, storage, f.stage)
    assert (r.reason, r.error) == ("events", "NotPassed: the cohort state has passed 2024-03-09T23:59:00Z only, not "
                                             "the sync's time 2024-03-10T00:00:00Z")
    assert objects(storage).keys() == {"_stream/cohorts/crm/424242_pro-buyers/failed/2024-03-10T00-00.json"}
    f.advance(T1 + 60_000)
    (r,) = run(s, T1 + 3_600_000, storage, f.stage)
    assert (r.error, r.members) == (None, 1)


def test_progress_follows_the_latest_upload_read_or_the_clock_when_caught_up():
    p = stage.Progress(grace_ms=60_000)
    clock = FakeClock(T1)
    assert p.advance(0, clock.now_ms(), caught_up=False) is None     # nothing read, not caught up
    p.saw(0, T1 - 30_000)
    assert p.advance(0, clock.now_ms(), caught_up=False) == T1 - 90_000
    assert p.advance(0, clock.now_ms(), caught_up=False) is None     # did not move
    clock.advance(600_000)
    assert p.advance(0, clock.now_ms(), caught_up=True) == T1 + 540_000
    p.saw(0, T1)                                                      # a late batch never moves it back
    assert p.advance(0, clock.now_ms(), caught_up=False) is None


def test_a_partition_caught_up_with_a_stale_end_has_passed_the_time_that_end_was_read_not_the_clock():
    """A consumer that stopped fetching a partition at T1 (paused, its records waiting in the agent's buffer) still
    reports the end read then: the agent caught up with it at T1 + 10 minutes has not seen what came after T1."""
    p = stage.Progress(grace_ms=60_000)
    p.saw(0, T1 - 120_000)
    assert p.advance(0, T1 + 600_000, True, T1) == T1 - 60_000
    assert p.advance(0, T1 + 660_000, True, T1) is None               # the same end: no further
    assert p.advance(0, T1 + 700_000, True, T1 + 650_000) == T1 + 590_000     # fetched again, caught up with it
    assert p.advance(0, T1 + 710_000, True, T1 + 720_000) == T1 + 650_000     # a fetch stamped ahead: the clock
    r = stage.Rekeyer(settings().cohort_set, 2, 60_000)
    r.progress.saw(1, T1 - 120_000)
    (q0, key, value), _ = r.advance(1, T1 + 600_000, True, T1)
    assert (q0, key, [(x.kind, x.partition, x.uploaded_ms) for x in stage.decode_all(value)]) == (
        0, b"\x00\x00\x00\x01", [("PROGRESS", 1, T1 - 60_000)])


def test_replays_delivered_twice_count_once():
    s = settings([{"id": "twice", "project": P, "name": "Bought twice", "rule": {
        "performed": "purchase", "count": {"op": "at_least", "n": 2}, "within_days": 3}}])
    f = Feed(s)
    f.event(10, "purchase", "2024-03-09 12:00", "u-10")
    f.event(20, "purchase", "2024-03-09 12:00", "u-20")
    f.event(20, "purchase", "2024-03-09 13:00", "u-20")
    f.replay(3)
    f.replay(3)
    f.advance(T1 + 60_000)
    view = asyncio.run(f.stage.view(s.cohort_set, T1))
    assert list(view.members(s.cohort_set.cohort("twice"))) == [20]
    assert (f.stage.totals.applied, f.stage.totals.replayed) == (3, 6)


def test_a_user_without_events_inside_the_retention_stays_for_property_not_and_at_most_cohorts():
    s = settings([
        {"id": "pro", "project": P, "name": "Pro", "rule": {"user_property": "plan", "op": "=", "value": "pro"}},
        {"id": "idle", "project": P, "name": "Idle", "rule": {"not": {"performed": "view", "within_days": 7}}},
        {"id": "rare", "project": P, "name": "Rare", "rule": {
            "performed": "view", "count": {"op": "at_most", "n": 1}, "within_days": 30}},
        {"id": "month", "project": P, "name": "Viewed in 30 days", "rule": {"performed": "view", "within_days": 30}},
    ])
    f = Feed(s)
    f.event(10, "view", "2024-02-10 12:00", "u-10", plan="pro")     # 29 days before T1: beyond 7 days' retention
    f.event(20, "view", "2024-03-08 12:00", "u-20", plan="free")
    f.event(20, "view", "2024-03-09 12:00", "u-20", plan="free")
    f.advance(T1 + 60_000)
    view = asyncio.run(f.stage.view(s.cohort_set, T1))
    members = {c.id: list(view.members(c)) for c in s.cohort_set.cohorts}
    assert members == {"pro": [10], "idle": [10], "rare": [10], "month": [10, 20]}


def test_windows_expire_by_the_day_index_and_state_is_forgotten_after_state_days():
    """Only the users the index names for a day are read and written; the days are those of the uploads read (a
    replay of old events, or a quiet stream, expires nothing by the clock alone)."""
    s = settings([{"id": "week", "project": P, "name": "Viewed this week", "rule": {
        "performed": "view", "within_days": 7}}], state_days=20)
    f = Feed(s)
    f.event(10, "view", "2024-03-01 12:00", "u-10")
    f.event(20, "view", "2024-03-05 12:00", "u-20")
    day = T1 // DAY                                                 # 10 March
    store10 = f.stage.stores[10 % 3]
    assert decode_user(store10.get(user_key(10))).index_day == day - 9 + 7   # 1 March + 7: when it leaves
    assert store10.get(index_key(day - 2, 10)) == b""
    f.event(99, "other", "2024-03-10 00:00")   # windows move with the uploads read: the 10th's
    f.advance(ms("2024-03-10 00:05"))   # expired as of 8 March (two days back): 10's counter only
    assert f.stage.totals.expired == 1
    u10 = decode_user(store10.get(user_key(10)))
    assert (u10.counts, u10.index_day, u10.uids) == ({}, day - 9 + 20, [(ms("2024-03-01 12:00") + 5_000, "u-10")])
    assert decode_user(f.stage.stores[20 % 3].get(user_key(20))).counts != {}
    f.event(99, "other", "2024-03-24 00:00")
    f.advance(ms("2024-03-24 00:05"))   # 22 March: 10 is forgotten (1 March + 20 days), 20's counter expired
    assert (f.stage.totals.expired, f.stage.totals.forgotten) == (2, 1)
    assert store10.get(user_key(10)) is None
    assert [k for k, _ in store10.scan(b"x", b"y")] == []


def test_a_sync_older_than_the_expired_windows_is_refused():
    s = settings()
    f = Feed(s)
    f.event(10, "purchase", "2024-03-09 12:00", "u-10", plan="pro")
    f.event(20, "view", "2024-03-13 00:00", "u-20")
    f.advance(T1 + (EXPIRY_LAG_DAYS + 1) * DAY)
    with pytest.raises(ValueError, match="more than 2 days older than the cohort state"):
        asyncio.run(f.stage.view(s.cohort_set, T1))


def test_merges_fold_into_the_survivor_with_the_newest_properties_by_time():
    s = settings([{"id": "buyers", "project": P, "name": "Buyers", "rule": {"and": [
        {"performed": "purchase", "count": {"op": "at_least", "n": 2}, "within_days": 7},
        {"user_property": "plan", "op": "=", "value": "pro"}]}}])
    f = Feed(s)
    f.event(40, "purchase", "2024-03-09 08:00", "u-40", plan="free")
    f.event(41, "purchase", "2024-03-09 09:00", plan="pro")     # newer than the survivor's properties
    f.merge(40, 41, ms("2024-03-09 10:00"))
    f.merge(40, 41, ms("2024-03-09 10:00"))                     # identity.merges read again: nothing twice
    f.event(41, "view", "2024-03-09 11:00")                     # a late event of the merged id: the survivor's
    f.advance(T1 + 60_000)
    view = asyncio.run(f.stage.view(s.cohort_set, T1))
    assert list(view.members(s.cohort_set.cohort("buyers"))) == [40]
    st = view.states[40]
    assert (st.user_id, st.properties, st.counts) == ("u-40", {"plan": "pro"},
                                                      {s.cohort_set.cohorts[0].conditions[0].key: {T1 // DAY - 1: 2}})
    assert 41 not in view.states
    assert [aid for aid, _ in view.users()] == [40]


def test_a_window_longer_than_the_event_retention_is_answered_from_state():
    s = settings([{"id": "quarter", "project": P, "name": "Bought this quarter", "rule": {
        "performed": "purchase", "count": {"op": "at_least", "n": 2}, "within_days": 90}}])
    assert s.topics.retention_days == 7
    f = Feed(s)
    f.event(10, "purchase", "2024-01-02 12:00", "u-10")
    f.advance(ms("2024-01-03 00:00"))
    f.event(10, "purchase", "2024-02-20 12:00", "u-10")
    f.event(20, "purchase", "2024-02-20 12:00", "u-20")
    for day in range(1, 20):                                       # the days go by, no event
        f.advance(ms("2024-02-21 00:00") + day * DAY)
    view = asyncio.run(f.stage.view(s.cohort_set, ms("2024-03-10 00:00")))
    assert list(view.members(s.cohort_set.cohort("quarter"))) == [10]


def test_hourly_syncs_enter_and_exit_within_a_day():
    s = settings([{"id": "hour", "project": P, "name": "Pro buyers today", "rule": {"and": [
        {"performed": "purchase", "within_days": 1},
        {"user_property": "plan", "op": "=", "value": "pro"}]}}], cadence="hourly")
    storage = MemoryStorage()
    f = Feed(s)
    h = ms("2024-03-10 08:00")
    f.event(10, "purchase", "2024-03-10 07:10", "u-10", plan="pro")
    f.event(30, "view", "2024-03-10 07:20", "u-30", plan="pro")
    f.event(20, "purchase", "2024-03-10 08:10", "u-20", plan="pro")     # after 08:00
    f.event(30, "purchase", "2024-03-10 08:15", "u-30", plan="pro")     # a user of before 08:00, a purchase after
    f.advance(h + 20 * 60_000)
    (r,) = run(s, h + 30 * 60_000, storage, f.stage, "hour")
    assert (r.scheduled_ms, r.members) == (h, 1)
    assert objects(storage)["cohorts/424242_hour_2024-03-10T08:00_existing.csv"] == (
        b"amplitudeID,userID,plan,score\r\n10,u-10,pro,\r\n")
    hh = b"amplitudeID,userID,plan,score\r\n"
    f.event(10, "view", "2024-03-10 08:30", "u-10", plan="free")
    f.advance(h + 3_600_000 + 60_000)
    (r,) = run(s, h + 3_600_000 + 60_000, storage, f.stage, "hour")
    files = objects(storage)
    g = "cohorts/424242_hour_2024-03-10T09:00_"
    assert (files[g + "entering.csv"], files[g + "exiting.csv"], files[g + "existing.csv"]) == (
        hh + b"20,u-20,pro,\r\n30,u-30,pro,\r\n", hh + b"10,u-10,free,\r\n", hh + b"20,u-20,pro,\r\n30,u-30,pro,\r\n")


def test_the_sync_view_streams_members_in_amplitude_id_order_across_partitions():
    s = settings([{"id": "any", "project": P, "name": "Any", "rule": {"performed": "view", "within_days": 2}}])
    f = Feed(s, partitions=4)
    ids = [97, 3, 1_000_000_007, 12, 5, 64]
    for aid in ids:
        f.event(aid, "view", "2024-03-09 12:00")
    f.advance(T1 + 60_000)
    view = SyncView(s.cohort_set, f.stage.stores, 4, T1)
    view.check()
    assert list(view.members(s.cohort_set.cohort("any"))) == sorted(ids)


def test_a_window_longer_than_the_state_is_refused_when_the_settings_load():
    with pytest.raises(Exception) as e:
        settings([{"id": "long", "project": P, "name": "Long", "rule": {"performed": "view", "within_days": 30}}],
                 state_days=20)
    assert ("cohorts[0] (long): a window of 30 days, longer than the 20 days a user's cohort state is kept after its "
            "latest event (cohort_state.state_days): raise cohort_state.state_days to at least 30, or shorten the "
            "window") in str(e.value)


def test_the_records_have_the_fields_of_their_schema_in_its_order():
    import json
    from pathlib import Path

    import msgspec

    schema = json.loads((Path(stage.__file__).parents[2] / "schemas" / "cohort_record.avsc").read_text())
    assert [f["name"] for f in schema["fields"]] == list(stage.CohortRecord.__struct_fields__)
    rec = stage.CohortRecord("ACTIVITY", 7, 1, "events.ingest[0]", 42, T1, P, 19791, ["k"], "u", b"{}")
    assert msgspec.msgpack.decode(stage._array([rec.encode(), rec.encode()])) == [
        ["ACTIVITY", 7, 1, "events.ingest[0]", 42, T1, P, 19791, ["k"], "u", b"{}", -1, None]] * 2
    assert stage.decode_all(stage._array([rec.encode()] * 20)) == [rec] * 20


def test_an_active_users_state_grows_with_changes_and_hours_not_events():
    s = settings([{"id": "buyers", "project": P, "name": "Buyers", "rule": {
        "performed": "purchase", "count": {"op": "at_least", "n": 200}, "within_days": 1}}])
    f = Feed(s)
    start = ms("2024-03-10 00:00")
    for i in range(300):                                # a purchase a minute for five hours, the same properties
        at = time.strftime("%Y-%m-%d %H:%M", time.gmtime((start + i * 60_000) / 1000))
        f.event(10, "purchase", at, "u-10", plan="pro")
    u = decode_user(f.stage.stores[10 % 3].get(user_key(10)))
    # the last 15 minutes by minute (04:45 to 04:59), the uploads before by hour (00:00 to 04:00)
    assert (len(u.props), len(u.uids), sorted(u.recent)) == (
        1, 1, [start + h * 3_600_000 for h in range(5)] + [start + 4 * 3_600_000 + m * 60_000 for m in range(45, 60)])
    f.advance(start + 6 * 3_600_000)
    view = asyncio.run(f.stage.view(s.cohort_set, start + 3 * 3_600_000))   # read three hours late: exact
    assert list(view.members(s.cohort_set.cohort("buyers"))) == []          # 180 purchases before 03:00
    view = asyncio.run(f.stage.view(s.cohort_set, start + 4 * 3_600_000))
    assert list(view.members(s.cohort_set.cohort("buyers"))) == [10]        # 240
    assert sum(view.states[10].counts[s.cohort_set.cohorts[0].conditions[0].key].values()) == 240


def _generated(seed, per_batch):
    """A generated day and a half of a few very active users (properties and user_ids that change, merges, late
    events, progress that expires windows), fed in batches of ``per_batch`` events: the stores' keys and values,
    the stage's totals."""
    import hashlib
    import random
    s = settings([
        {"id": "buyers", "project": P, "name": "Buyers", "rule": {"and": [
            {"performed": "purchase", "count": {"op": "at_least", "n": 3}, "within_days": 1},
            {"user_property": "plan", "op": "=", "value": "pro"}]}},
        {"id": "idle", "project": P, "name": "Idle", "rule": {"not": {"performed": "view", "within_days": 2}}},
        {"id": "any", "project": P, "name": "Any", "rule": {"or": [
            {"performed": "purchase", "within_days": 3}, {"performed": "view", "within_days": 1}]}},
    ])
    r = random.Random(seed)
    st = LocalStage(s.cohort_set, 3, s.cohort_state.state_days)
    start, t, offset = ms("2024-03-10 00:00"), 0, 0
    pending: dict[int, list] = {}
    sent: list = []

    def flush(part):
        nonlocal offset
        evs = pending.pop(part, [])
        if evs:
            offset += 1
            sent.append((part, EventBatch(P, 0, Origin("events.valid", part, offset), [e[0] for e in evs],
                                          [b"d"] * len(evs), [e[1] for e in evs], [b"u" * 16] * len(evs),
                                          [e[2] for e in evs], Source("events.ingest", part))))
            st.accepted(*sent[-1])
    for i in range(1500):
        t += r.randint(0, 400_000)
        aid = r.randint(1, 7)
        up = start + t
        at = up - r.choice([0, 0, 0, 5_000, 3_600_000, 30 * 3_600_000])        # some late events
        row = {"amplitude_id": aid, "app": P, "event_type": r.choice(["purchase", "view", "other"]),
               "event_time": time.strftime("%Y-%m-%d %H:%M:%S.000000", time.gmtime(at / 1000)),
               "user_id": r.choice([None, f"u-{aid}", f"u-{aid}-{r.randint(0, 2)}"]),
               "user_properties": {"plan": r.choice(["pro", "pro", "free"])}}
        part = aid % 3
        pending.setdefault(part, []).append((i, up, orjson.dumps(row)))
        if len(pending[part]) >= per_batch:
            flush(part)
        if i % 200 == 199:
            for part in list(pending):
                flush(part)
            st.merge({"amplitude_id": r.randint(1, 7), "merged_amplitude_id": r.randint(1, 7),
                      "merge_server_time": up})
            st.advance(up)
            st.accepted(*sent[-1])                      # a batch delivered again
    for part in list(pending):
        flush(part)
    st.advance(start + t + 3 * DAY)
    h = hashlib.sha256()
    for q in sorted(st.stores):
        for k in sorted(st.stores[q].data):
            v = st.stores[q].data[k]
            h.update(k + b"=" + (_plain(decode_user(v)) if k[:1] == b"u" else v) + b";")
    return h.hexdigest(), (st.totals.applied, st.totals.replayed, st.totals.expired, st.totals.forgotten)


def _plain(u):
    """A state by condition key, whatever its layout (keys sorted: JSON)."""
    return orjson.dumps([u.project, u.first_ms, u.last_day, stage.counts_by_key(u), stage.recent_by_key(u), u.props,
                         u.uids,
                         u.marks, u.index_day, u.merged_into],
                        option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


def test_a_users_records_taken_together_change_its_state_as_before():
    """A message's records of one user change its state decoded once and written once (``stage._Txn``), in place,
    its condition keys written once (``StoredUser.keys``): every state holds, by condition key, what the stage held
    when it decoded, copied and encoded the state for each record and wrote each key in every bucket (the digests,
    taken from that version; the other keys byte for byte), with one record a message and with many of a user's in
    one."""
    assert _generated(5, 1) == ("76f824576a2547df9a32a4618298390774912ea274f6aff1f8fad1989847d519", (1505, 7, 3, 0))
    assert _generated(5, 40) == ("16f9a9f1efddf66b7f3b8689d40d5a91b7abd8a0df63753eaec093b911e81c6e", (1510, 55, 3, 0))
    assert _generated(5, 400) == ("5700f853be93290a305a63a0ca7011d3503af400f277b586a1092f08215ddf24",
                                  (1568, 426, 3, 0))


def test_a_users_profile_replaces_the_properties_its_rows_carried_when_a_sync_reads_the_state():
    """A project with a source of profiles: a user_property condition reads the user's profile (only the names the
    cohorts and their syncs read: not age); a user without a profile, with a deleted one (None), or without a user_id keeps its rows'."""
    s = settings([{"id": "french", "project": P, "name": "French", "rule": {"user_property": "country", "op": "=",
                                                                            "value": "FR"}}])
    f = Feed(s, partitions=4)
    for aid, user_id, country in [(1, "u1", "DE"), (2, "u2", "FR"), (3, "u3", "FR"), (4, "u4", "FR"),
                                  (5, None, "FR")]:
        f.event(aid, "view", "2024-03-09 12:00", user_id, country=country)
    f.advance(T1 + 60_000)
    profiles = {(P, "u1"): {"country": "FR", "plan": "pro", "age": 40},     # the profile says FR
                (P, "u2"): {"country": "US"},                    # the profile says US
                (7, "u4"): {"country": "US"}}                    # another project's user of the same id

    def profile_of(project, user_id):
        return profiles.get((project, user_id))
    french = s.cohort_set.cohort("french")
    view = SyncView(s.cohort_set, f.stage.stores, 4, T1, profile_of)
    view.check()
    assert list(view.members(french)) == [1, 3, 4, 5]
    assert (view.states[1].properties, view.states[2].properties) == ({"country": "FR", "plan": "pro"},
                                                                      {"country": "US"})
    plain = SyncView(s.cohort_set, f.stage.stores, 4, T1)
    assert list(plain.members(french)) == [2, 3, 4, 5]
