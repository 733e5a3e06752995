"""Cohort syncs from scripted user histories on a fixed clock: the exact bytes of three syncs' files, merges,
completion records, and one sync per scheduled time."""

import asyncio
import calendar
import time

import orjson
import pytest

from stream.cohorts import sync
from stream.cohorts.sync import Membership, completed, jobs_of, run_syncs, scheduled_time
from stream.s3.storage import MemoryStorage
from stream.settings import load_settings

P = 424242
BUCKET = "cohort-bucket"


def ms(text: str) -> int:
    return calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M")) * 1000


T1, T2, T3 = ms("2024-03-10 00:00"), ms("2024-03-11 00:00"), ms("2024-03-12 00:00")


def row(aid, event_type, at, user_id=None, **props):
    r = {"amplitude_id": aid, "app": P, "event_type": event_type, "event_time": at + ":00.000000",
         "user_id": user_id}
    if props:
        r["user_properties"] = props
    return r, ms(at) + 5_000   # uploaded five seconds after it happened


HISTORY = [
    # 10: bought on the 9th: a member at the sync of the 10th, out of the window at the 11th's (exits: it passed)
    row(10, "purchase", "2024-03-09 12:00", "u-10", plan="pro"),
    # 20: bought on the 9th and the 10th, then switched to the free plan on the 10th (exits: a property changed)
    row(20, "purchase", "2024-03-09 13:00", "u-20", plan="pro"),
    row(20, "purchase", "2024-03-10 09:00", "u-20", plan="pro"),
    row(20, "view", "2024-03-10 10:00", "u-20", plan="free"),
    # 30: first bought on the 10th (after the first sync: enters at the second), again on the 11th (stays)
    row(30, "purchase", "2024-03-10 15:00", "u,30 \"jr\"", plan="pro", score=2.5),
    row(30, "purchase", "2024-03-11 08:00", "u,30 \"jr\"", plan="pro"),
    # 40 is on the pro plan but never bought; 41, an anonymous device, bought on the 11th and is merged into 40
    row(40, "view", "2024-03-10 16:00", "u-40", plan="pro"),
    row(41, "purchase", "2024-03-11 05:00"),
    # 50 is another project's user: never a member
    ({**row(50, "purchase", "2024-03-09 12:00", "u-50", plan="pro")[0], "app": 7}, ms("2024-03-09 12:00")),
]
MERGES = [{"amplitude_id": 40, "merged_amplitude_id": 41, "merge_time": ms("2024-03-11 05:00"),
           "merge_server_time": ms("2024-03-11 06:00"), "scope": P}]


class Source:
    def __init__(self, rows, merges):
        self.rows, self.merges, self.reads = rows, merges, 0

    async def fold(self, membership: Membership) -> None:
        self.reads += 1
        for r, uploaded in self.rows:
            membership.add_row(r, uploaded)
        for m in self.merges:
            membership.add_merge(m)
        membership.apply_merges()


def settings(cadence="daily", **dest):
    return load_settings(None, projects=[{"id": P}, {"id": 7}], cohorts=[
        {"id": "pro-buyers", "project": P, "name": "Pro buyers", "rule": {"and": [
            {"performed": "purchase", "within_days": 1},   # a daily sync at D 00:00 counts day D-1
            {"user_property": "plan", "op": "=", "value": "pro"}]}},
        {"id": "other-project", "project": 7, "name": "Another project's", "rule": {
            "performed": "purchase", "within_days": 2}},
    ], cohort_destinations=[{"name": "crm", "bucket": BUCKET, "encryption": {"type": "none"}, **dest,
                             "syncs": [{"cohort": "pro-buyers", "cadence": cadence, "properties": ["plan", "score"],
                                        **({"routing_key": "crm"} if "routing" in dest.get("path_prefix", "") else {})
                                        }]}])


def run(s, now, storage, source, cohort="pro-buyers"):
    return asyncio.run(run_syncs(s, jobs_of(s, cohort), now, lambda d: storage, source))


def objects(storage):
    return {k: v for (b, k), v in storage.objects.items() if b == BUCKET}


HEAD = b"amplitudeID,userID,plan,score\r\n"


def test_three_syncs_write_the_exact_files_and_diffs():
    s, storage, source = settings(), MemoryStorage(), Source(HISTORY, MERGES)

    # the first sync, due at 07:30 on the 10th, is stamped with the day's start and sees what was uploaded before it
    (r1,) = run(s, T1 + 7 * 3_600_000 + 1_800_000, storage, source)
    assert (r1.scheduled_ms, r1.skipped, r1.previous) == (T1, False, None)
    files = objects(storage)
    assert files["cohorts/424242_pro-buyers_2024-03-10T00:00_entering.csv"] == (
        HEAD + b"10,u-10,pro,\r\n20,u-20,pro,\r\n")
    assert files["cohorts/424242_pro-buyers_2024-03-10T00:00_exiting.csv"] == HEAD
    assert files["cohorts/424242_pro-buyers_2024-03-10T00:00_existing.csv"] == (
        HEAD + b"10,u-10,pro,\r\n20,u-20,pro,\r\n")

    # the second: 10 exits (its purchase left the window), 20 exits (now on the free plan), 30 enters
    (r2,) = run(s, T2 + 60_000, storage, source)
    assert (r2.scheduled_ms, r2.members, r2.entering, r2.exiting, r2.previous) == (T2, 1, 1, 2, "2024-03-10T00:00")
    files = objects(storage)
    assert files["cohorts/424242_pro-buyers_2024-03-11T00:00_entering.csv"] == HEAD + b'30,"u,30 ""jr""",pro,2.5\r\n'
    assert files["cohorts/424242_pro-buyers_2024-03-11T00:00_exiting.csv"] == (
        HEAD + b"10,u-10,pro,\r\n20,u-20,free,\r\n")
    assert files["cohorts/424242_pro-buyers_2024-03-11T00:00_existing.csv"] == HEAD + b'30,"u,30 ""jr""",pro,2.5\r\n'

    # the third: 41's purchase counts for 40 once merged into it (41 alone is in no cohort: no plan), 30 stays
    (r3,) = run(s, T3, storage, source)
    assert (r3.members, r3.entering, r3.exiting) == (2, 1, 0)
    files = objects(storage)
    assert files["cohorts/424242_pro-buyers_2024-03-12T00:00_entering.csv"] == HEAD + b"40,u-40,pro,\r\n"
    assert files["cohorts/424242_pro-buyers_2024-03-12T00:00_exiting.csv"] == HEAD
    assert files["cohorts/424242_pro-buyers_2024-03-12T00:00_existing.csv"] == (
        HEAD + b'30,"u,30 ""jr""",pro,\r\n40,u-40,pro,\r\n')   # 30's latest properties have no score

    done = orjson.loads(files["_stream/cohorts/crm/424242_pro-buyers/done/2024-03-12T00-00.done"])
    assert done["keys"]["existing"] == "cohorts/424242_pro-buyers_2024-03-12T00:00_existing.csv"
    assert (done["scheduled_ms"], done["previous"], done["members"]) == (T3, "2024-03-11T00:00", 2)
    assert len(files) == 3 * 3 + 3 + 1    # three syncs of three files, their records, the pointer


def test_without_the_merge_the_merged_users_purchase_is_not_the_survivors():
    s, storage = settings(), MemoryStorage()
    run(s, T3, storage, Source(HISTORY, []))
    assert objects(storage)["cohorts/424242_pro-buyers_2024-03-12T00:00_existing.csv"] == (
        HEAD + b'30,"u,30 ""jr""",pro,\r\n')


def test_a_scheduled_time_never_gets_two_syncs():
    s, storage, source = settings(), MemoryStorage(), Source(HISTORY, MERGES)
    run(s, T2, storage, source)
    puts, first = list(storage.puts), dict(storage.objects)
    # later the same day, with a new member's events meanwhile: the day's sync is complete, nothing is written
    source.rows = HISTORY + [row(60, "purchase", "2024-03-10 20:00", "u-60", plan="pro")]
    (again,) = run(s, T2 + 23 * 3_600_000, storage, source)
    assert again.skipped and again.scheduled_ms == T2
    assert storage.puts == puts and storage.objects == first and source.reads == 1


def test_a_rerun_after_a_crash_rewrites_the_same_bytes():
    s, storage, source = settings(), MemoryStorage(), Source(HISTORY, MERGES)
    run(s, T1, storage, source)
    run(s, T2, storage, source)
    written = dict(storage.objects)
    # as if the run had died before its completion record: the files stay, the record does not
    records = "_stream/cohorts/crm/424242_pro-buyers/"
    first = storage.objects[(BUCKET, records + "done/2024-03-10T00-00.done")]
    storage.objects[(BUCKET, records + "latest.json")] = first
    del storage.objects[(BUCKET, records + "done/2024-03-11T00-00.done")]
    source.rows = HISTORY + [row(60, "purchase", "2024-03-11 00:30", "u-60", plan="pro")]  # uploaded after T2
    (r,) = run(s, T2 + 3_600_000, storage, source)
    assert not r.skipped and r.previous == "2024-03-10T00:00"
    assert {k: v for k, v in storage.objects.items() if k[1].endswith(".csv")} == {
        k: v for k, v in written.items() if k[1].endswith(".csv")}


def test_hourly_and_once_schedules():
    now = ms("2024-03-10 07:42") + 13_000
    assert scheduled_time("hourly", now) == ms("2024-03-10 07:00")
    assert scheduled_time("daily", now) == ms("2024-03-10 00:00")
    assert scheduled_time("once", now) == ms("2024-03-10 07:42")
    assert scheduled_time("once", now + 86_400_000, [{"scheduled_ms": ms("2024-03-10 07:42")}]) == ms(
        "2024-03-10 07:42")

    s, storage, source = settings("once"), MemoryStorage(), Source(HISTORY, MERGES)
    (r1,) = run(s, now, storage, source)
    (r2,) = run(s, now + 86_400_000, storage, source)
    assert r1.scheduled_ms == r2.scheduled_ms == ms("2024-03-10 07:42") and r2.skipped
    # "sync now" of the completed once sync: the scheduler's next minute, diffed against it, then the latest
    (r3,) = asyncio.run(run_syncs(s, jobs_of(s, "pro-buyers"), now, lambda d: storage, source,
                                  at_ms=ms("2024-03-10 07:43")))
    assert (r3.skipped, r3.previous, r3.members, r3.entering, r3.exiting) == (False, "2024-03-10T07:42", r1.members,
                                                                              0, 0)
    assert [r["scheduled_ms"] for r in asyncio.run(completed(storage, jobs_of(s, "pro-buyers")[0]))] == [
        ms("2024-03-10 07:42"), ms("2024-03-10 07:43")]
    (r4,) = run(s, now + 86_400_000, storage, source)       # the CLI's once: that of the latest completed sync
    assert r4.scheduled_ms == ms("2024-03-10 07:43") and r4.skipped


def test_hyphen_time_routing_key_and_user_id_property():
    s = settings(path_prefix="routing/", hyphen_time=True, user_id_property="score")
    storage = MemoryStorage()
    run(s, T2, storage, Source(HISTORY, MERGES))
    files = objects(storage)
    assert files["routing/424242_pro-buyers_2024-03-11T00-00_existing_crm.csv"] == HEAD + b"30,2.5,pro,2.5\r\n"
    assert "_stream/cohorts/crm/424242_pro-buyers_crm/done/2024-03-11T00-00.done" in files
    (r,) = run(s, T2, storage, Source(HISTORY, MERGES))
    assert r.skipped


def test_the_settings_check_cohort_syncs():
    from stream.errors import ConfigError
    with pytest.raises(ConfigError, match=r"cohort_destinations\[0\]\.syncs\[0\]\.cohort: no cohort 'nope'"):
        load_settings(None, cohort_destinations=[{"name": "crm", "bucket": BUCKET, "syncs": [{"cohort": "nope"}]}])
    with pytest.raises(ConfigError, match=r"cohorts\[0\]\.rule\.within_days"):
        load_settings(None, cohorts=[{"id": "x", "project": 1, "name": "X", "rule": {"performed": "a",
                                                                                     "within_days": 0}}])
    with pytest.raises(ConfigError, match="duplicate destination name"):
        load_settings(None, cohort_destinations=[{"name": "crm", "bucket": BUCKET}, {"name": "crm", "bucket": "bkt2"}])
    s = settings()
    assert s.cohort_set.cohort("pro-buyers").project == P
    assert {"plan", "score"} <= s.cohort_set.properties_of(P)
    with pytest.raises(sync.SyncError, match="synced to no cohort destination"):
        jobs_of(s, "other-project")
