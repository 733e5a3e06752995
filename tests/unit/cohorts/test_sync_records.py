"""Cohort syncs: the window a sync counts, where the sync records go, the pointer to the latest completed sync, the
chain of diffs, failures isolated per job, and the settings that would make file names ambiguous."""

import asyncio

import orjson
import pytest

from stream import metrics
from stream.cohorts import schedule
from stream.clock import FakeClock
from stream.cohorts.schedule import Scheduler
from stream.cohorts.sync import Chain, Membership, jobs_of, latest_completed, pointer_behind, run_syncs, sync_job
from stream.errors import ConfigError
from stream.s3.storage import MemoryStorage
from stream.settings import load_settings
from tests.unit.cohorts.test_sync import BUCKET, HISTORY, MERGES, P, T1, T2, T3, Source, row, settings

DAY = 86_400_000
REC = "_stream/cohorts/crm/424242_pro-buyers/"


def run(s, now, storage, source, cohort="pro-buyers", **kw):
    return asyncio.run(run_syncs(s, jobs_of(s, cohort), now, lambda d: storage, source, **kw))


def window_settings(days):
    return load_settings(None, projects=[{"id": P}], cohorts=[
        {"id": "buyers", "project": P, "name": "Buyers", "rule": {"performed": "purchase", "within_days": days}}],
        cohort_destinations=[{"name": "crm", "bucket": BUCKET, "encryption": {"type": "none"},
                              "syncs": [{"cohort": "buyers", "cadence": "daily"}]}])


def at(aid, when_ms, uploaded_ms):
    import time
    text = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(when_ms // 1000)) + ".%06d" % (when_ms % 1000 * 1000)
    return {"amplitude_id": aid, "app": P, "event_type": "purchase", "event_time": text}, uploaded_ms


# --- the window --------------------------------------------------------------------------------------------------

def test_a_daily_sync_at_midnight_counts_the_n_days_before_it_exactly():
    assert schedule.counted_day(T2) == T2 // DAY - 1
    assert schedule.counted_day(T2 + 1) == T2 // DAY
    for days in (1, 3):
        start = T2 - days * DAY
        rows = [at(1, start, start + 1),                 # the window's first millisecond: counts
                at(2, start - 1, start + 1),             # the millisecond before it: does not
                at(3, T2 - 1, T2 - 1),                   # uploaded at the last millisecond before the sync: counts
                at(4, T2 - 1, T2)]                       # uploaded at the sync's time: the next sync's
        m = Membership(window_settings(days).cohort_set, [P], T2)
        for r, uploaded in rows:
            m.add_row(r, uploaded)
        assert m.members(window_settings(days).cohort_set.cohort("buyers")) == [1, 3], days


def test_within_days_1_at_a_daily_sync_holds_the_previous_days_users():
    s, storage = window_settings(1), MemoryStorage()
    (r,) = asyncio.run(run_syncs(s, jobs_of(s, "buyers"), T2 + 60_000, lambda d: storage,
                                 Source([at(7, T2 - 3_600_000, T2 - 3_590_000)], [])))
    assert (r.scheduled_ms, r.members, r.entering) == (T2, 1, 1)


def test_the_user_id_is_that_of_the_latest_upload_whatever_the_reading_order():
    cohorts = settings().cohort_set
    m = Membership(cohorts, [P], T3)
    newer, _ = row(10, "view", "2024-03-10 12:00", "u-new")
    older, _ = row(10, "view", "2024-03-09 12:00", "u-old")
    m.add_row(newer, T2 + 5)
    m.add_row(older, T1 + 5)                 # read after, uploaded before
    assert m.states[10].user_id == "u-new"
    m.add_row({**older, "user_id": None}, T2 + 9)   # a later row without user_id keeps it
    assert m.states[10].user_id == "u-new"


# --- records, pointer, chain -------------------------------------------------------------------------------------

def test_sync_records_go_to_their_own_prefix_by_default_and_where_the_setting_says():
    s, storage = settings(), MemoryStorage()
    run(s, T1, storage, Source(HISTORY, MERGES))
    keys = sorted(k for (_, k) in storage.objects)
    assert keys == [REC + "done/2024-03-10T00-00.done", REC + "latest.json",
                    "cohorts/424242_pro-buyers_2024-03-10T00:00_entering.csv",
                    "cohorts/424242_pro-buyers_2024-03-10T00:00_existing.csv",
                    "cohorts/424242_pro-buyers_2024-03-10T00:00_exiting.csv"]
    s, storage = settings(records_prefix="cohorts/_records/"), MemoryStorage()
    run(s, T1, storage, Source(HISTORY, MERGES))
    assert sorted(k for (_, k) in storage.objects if not k.endswith(".csv")) == [
        "cohorts/_records/crm/424242_pro-buyers/done/2024-03-10T00-00.done",
        "cohorts/_records/crm/424242_pro-buyers/latest.json"]
    assert orjson.loads(storage.objects[(BUCKET, "cohorts/_records/crm/424242_pro-buyers/latest.json")])[
        "scheduled_ms"] == T1


def test_a_sync_reads_the_pointer_and_lists_only_the_records_after_it():
    s, storage, source = settings(), MemoryStorage(), Source(HISTORY, MERGES)
    for t in (T1 - 2 * DAY, T1 - DAY, T1, T2):
        run(s, t, storage, source)
    storage.reads.clear()
    storage.lists.clear()
    (r,) = run(s, T3, storage, source)
    assert r.previous == "2024-03-11T00:00"
    # the pointer, then the previous sync's existing file: no other record is read, however many there are
    assert storage.reads == [REC + "latest.json", "cohorts/424242_pro-buyers_2024-03-11T00:00_existing.csv"]
    after = REC + "done/2024-03-11T00-00.done"
    assert storage.lists == [(REC + "done/", after), (REC + "done/", after)]   # before the diff, before the record
    assert orjson.loads(storage.objects[(BUCKET, REC + "latest.json")])["scheduled_ms"] == T3


def test_without_the_pointer_the_records_are_listed_and_the_pointer_written_again():
    s, storage, source = settings(), MemoryStorage(), Source(HISTORY, MERGES)
    run(s, T1, storage, source)
    run(s, T2, storage, source)
    del storage.objects[(BUCKET, REC + "latest.json")]
    storage.lists.clear()
    (r,) = run(s, T3, storage, source)
    assert r.previous == "2024-03-11T00:00"
    assert storage.lists[0] == (REC + "done/", "")
    assert orjson.loads(storage.objects[(BUCKET, REC + "latest.json")])["scheduled_ms"] == T3


def test_a_pointer_left_behind_by_a_crash_is_passed_and_caught_up():
    s, storage, source = settings(), MemoryStorage(), Source(HISTORY, MERGES)
    run(s, T1, storage, source)
    run(s, T2, storage, source)
    # died between T2's completion record and its pointer: the pointer still names T1
    storage.objects[(BUCKET, REC + "latest.json")] = storage.objects[(BUCKET, REC + "done/2024-03-10T00-00.done")]
    (again,) = run(s, T2 + 3_600_000, storage, source)
    assert again.skipped
    assert orjson.loads(storage.objects[(BUCKET, REC + "latest.json")])["scheduled_ms"] == T2
    storage.objects[(BUCKET, REC + "latest.json")] = storage.objects[(BUCKET, REC + "done/2024-03-10T00-00.done")]
    (r,) = run(s, T3, storage, source)
    assert r.previous == "2024-03-11T00:00"    # not T1, which the pointer named


def test_the_pointer_is_behind_when_missing_or_older_than_the_latest_completion_record():
    r1, r2 = {"scheduled_ms": T1, "stamp": "a"}, {"scheduled_ms": T2, "stamp": "b"}
    assert pointer_behind(Chain(None, [])) is None           # no sync complete: no pointer to write
    assert pointer_behind(Chain(None, [r1, r2])) == r2       # missing (killed after a first sync's record)
    assert pointer_behind(Chain(r1, [r1, r2])) == r2         # one sync behind
    assert pointer_behind(Chain(r2, [r2])) is None           # names the latest


def test_a_first_sync_killed_before_its_pointer_gets_it_when_next_found_complete():
    s, storage, source = settings(), MemoryStorage(), Source(HISTORY, MERGES)
    run(s, T1, storage, source)
    done = storage.objects[(BUCKET, REC + "done/2024-03-10T00-00.done")]
    # died between T1's completion record and its pointer, T1 being the job's first sync: no pointer at all
    del storage.objects[(BUCKET, REC + "latest.json")]
    (again,) = run(s, T1 + 3_600_000, storage, source)      # the sync of T1 run again (the CLI)
    assert (again.skipped, again.error) == (True, None)
    assert storage.objects[(BUCKET, REC + "latest.json")] == done
    # the worker's scheduler, started again, reads each job's latest completed sync: it writes the pointer
    del storage.objects[(BUCKET, REC + "latest.json")]
    calls = []

    async def latest(job):
        return await latest_completed(storage, job)

    async def sync(group, slot):
        calls.append(slot)
        return []

    async def pause(_):
        return None

    sched = Scheduler(jobs_of(s, "pro-buyers"), FakeClock(T1 + 3_600_000).now_ms, latest, sync, pause)
    asyncio.run(sched.start())
    assert sched.states["pro-buyers -> crm"].completed_ms == T1
    assert storage.objects[(BUCKET, REC + "latest.json")] == done
    asyncio.run(sched.tick())
    assert calls == []                                         # complete: not synced again
    storage.puts.clear()
    asyncio.run(sched.start())                                 # the pointer names it: nothing written
    assert storage.puts == []


def test_a_sync_older_than_the_latest_completed_one_is_refused():
    s, storage, source = settings(), MemoryStorage(), Source(HISTORY, MERGES)
    run(s, T1, storage, source)
    run(s, T3, storage, source)
    (r,) = run(s, T2, storage, source)
    assert r.reason == "chain" and r.error == (
        "ChainError: pro-buyers -> crm: the sync of 2024-03-12T00:00 is complete already; a sync of the earlier "
        "2024-03-11T00:00 now would break the chain of entering and exiting files (each relative to the previous "
        "completed sync): sync a later time")
    assert (BUCKET, REC + "done/2024-03-11T00-00.done") not in storage.objects
    (done,) = run(s, T1 + 3_600_000, storage, source)     # an older time that is complete is simply skipped
    assert done.skipped and done.error is None


class Racing(MemoryStorage):
    """Another run completes the sync of ``sneak`` while this one writes its first file."""

    def __init__(self, sneak):
        super().__init__()
        self.sneak = sneak

    async def put_file(self, req):
        await super().put_file(req)
        if self.sneak is not None:
            record = orjson.loads(self.objects[(BUCKET, REC + "latest.json")])
            record["scheduled_ms"], record["stamp"], self.sneak = self.sneak, "2024-03-11T00:00", None
            self.objects[(BUCKET, REC + "done/2024-03-11T00-00.done")] = orjson.dumps(record)


def test_a_sync_during_which_another_run_completed_the_one_before_it_is_not_completed():
    s, source = settings(), Source(HISTORY, MERGES)
    storage = Racing(None)
    run(s, T1, storage, source)
    storage.sneak = T2
    (r,) = run(s, T3, storage, source)
    assert r.reason == "chain" and r.error == (
        "ChainError: pro-buyers -> crm: the sync of 2024-03-11T00:00 was completed by another run while this sync of "
        "2024-03-12T00:00 was diffed against 2024-03-10T00:00; not completed (its files are overwritten by the next "
        "run): run it again")
    assert (BUCKET, REC + "done/2024-03-12T00-00.done") not in storage.objects
    (again,) = run(s, T3, storage, source)
    assert again.error is None and again.previous == "2024-03-11T00:00"


# --- failures ----------------------------------------------------------------------------------------------------

class Refusing(MemoryStorage):
    async def put_file(self, req):
        from botocore.exceptions import ClientError
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "PutObject")


def two_destinations():
    return load_settings(None, projects=[{"id": P}], cohorts=[
        {"id": "pro-buyers", "project": P, "name": "Pro buyers", "rule": {"performed": "purchase",
                                                                           "within_days": 1}}],
        cohort_destinations=[{"name": name, "bucket": name + "-bucket", "encryption": {"type": "none"},
                              "syncs": [{"cohort": "pro-buyers"}]} for name in ("broken", "crm")])


def test_a_failing_job_is_recorded_and_counted_and_the_others_go_on():
    s = two_destinations()
    storages = {"broken": Refusing(), "crm": MemoryStorage()}
    failures = metrics.COHORT_SYNC_FAILURES.labels(cohort="pro-buyers", destination="broken", reason="access_denied")
    before = failures._value.get()
    results = asyncio.run(run_syncs(s, jobs_of(s, "pro-buyers"), T2, lambda d: storages[d.name],
                                    Source(HISTORY, MERGES), clock_ms=lambda: T2 + 7))
    assert [(r.job.destination.name, r.reason, r.skipped) for r in results] == [
        ("broken", "access_denied", False), ("crm", None, False)]
    assert results[0].error == "ClientError: An error occurred (AccessDenied) when calling the PutObject " \
        "operation: Access Denied"
    assert failures._value.get() == before + 1
    record = orjson.loads(storages["broken"].objects[
        ("broken-bucket", "_stream/cohorts/broken/424242_pro-buyers/failed/2024-03-11T00-00.json")])
    assert record == {"cohort": "pro-buyers", "project": P, "destination": "broken", "routing_key": "",
                      "scheduled_ms": T2, "stamp": "2024-03-11T00:00", "reason": "access_denied",
                      "error": results[0].error, "failed_at_ms": T2 + 7}
    assert ("crm-bucket", "_stream/cohorts/crm/424242_pro-buyers/done/2024-03-11T00-00.done") in \
        storages["crm"].objects


def test_history_shows_completed_syncs_and_failures():
    from stream.cohorts.sync import history
    s = two_destinations()
    storages = {"broken": Refusing(), "crm": MemoryStorage()}
    asyncio.run(run_syncs(s, jobs_of(s, "pro-buyers"), T2, lambda d: storages[d.name], Source(HISTORY, MERGES)))
    rows = asyncio.run(history(s, jobs_of(s, "pro-buyers"), lambda d: storages[d.name]))
    assert [(j.destination.name, r["stamp"], r.get("reason")) for j, r in rows] == [
        ("broken", "2024-03-11T00:00", "access_denied"), ("crm", "2024-03-11T00:00", None)]


def test_a_failed_reading_of_the_events_fails_each_job_that_needed_it():
    class Down:
        async def fold(self, membership):
            raise ConnectionError("broker unreachable")
    s = two_destinations()
    storages = {"broken": MemoryStorage(), "crm": MemoryStorage()}
    results = asyncio.run(run_syncs(s, jobs_of(s, "pro-buyers"), T2, lambda d: storages[d.name], Down()))
    assert [(r.reason, r.error) for r in results] == [("events", "ConnectionError: broker unreachable")] * 2


# --- settings ----------------------------------------------------------------------------------------------------

def dest(name, bucket="bk1", prefix="cohorts/", syncs=(("x", ""),), **kw):
    return {"name": name, "bucket": bucket, "path_prefix": prefix,
            "syncs": [{"cohort": c, "routing_key": rk} for c, rk in syncs], **kw}


def load(*dests, cohort_ids=("x", "y")):
    return load_settings(None, projects=[{"id": P}], cohorts=[
        {"id": c, "project": P, "name": c, "rule": {"performed": "a", "within_days": 1}} for c in cohort_ids],
        cohort_destinations=list(dests))


def test_settings_refuse_names_a_reader_could_not_split_or_tell_apart():
    with pytest.raises(ConfigError, match=r"cohort_destinations\[0\]\.syncs\[0\]\.cohort: 'a_b' has an '_', which "
                       r"separates the parts of the file names"):
        load(dest("crm", syncs=[("a_b", "")]), cohort_ids=("a_b",))
    with pytest.raises(ConfigError, match=r"'c_rm': a routing key has letters, digits, '\.' and '-' only"):
        load(dest("crm", syncs=[("x", "c_rm")]))
    with pytest.raises(ConfigError, match=r"crm and ads both sync cohort 'x' without a routing key to "
                       r"s3://bk1/cohorts/: they would write the same files"):
        load(dest("crm"), dest("ads"))
    with pytest.raises(ConfigError, match=r"the path_prefix 'cohorts/4' of ads extends 'cohorts/', the path_prefix "
                       r"of crm, on the same bucket bk1: their file names could coincide"):
        load(dest("crm"), dest("ads", prefix="cohorts/4", syncs=[("y", "")]))
    with pytest.raises(ConfigError, match=r"syncs\[0\]\.routing_key: require_suffix is set, so every sync of crm "
                       r"needs a routing_key"):
        load(dest("crm", require_suffix=True))
    with pytest.raises(ConfigError, match=r"'Mars/Olympus' is not an IANA time zone"):
        load({**dest("crm"), "syncs": [{"cohort": "x", "time_zone": "Mars/Olympus"}]})
    # what cannot collide is accepted: another routing key, another folder, another bucket, a letter after the prefix
    load(dest("crm"), dest("ads", syncs=[("x", "ads")]))
    load(dest("crm"), dest("ads", prefix="cohorts/ads/"))
    load(dest("crm"), dest("ads", bucket="bk2"))
    load(dest("crm"), dest("ads", prefix="cohorts/a"))
    s = load(dest("crm", syncs=[("x", "crm")], require_suffix=True))
    assert s.cohort_destinations[0].records_prefix == "_stream/cohorts/"


def test_require_suffix_names_every_file_with_the_routing_key():
    s = settings(path_prefix="routing/", require_suffix=True)
    storage = MemoryStorage()
    run(s, T2, storage, Source(HISTORY, MERGES))
    assert sorted(k for (_, k) in storage.objects if k.endswith(".csv")) == [
        f"routing/424242_pro-buyers_2024-03-11T00:00_{t}_crm.csv" for t in ("entering", "existing", "exiting")]


def test_sync_job_alone_still_takes_a_membership():
    s, storage = settings(), MemoryStorage()
    m = Membership(s.cohort_set, [P], T1)
    for r, uploaded in HISTORY:
        m.add_row(r, uploaded)
    (job,) = jobs_of(s, "pro-buyers")
    r = asyncio.run(sync_job(storage, job, T1, m))
    assert (r.members, r.entering) == (2, 2)


def test_identity_merges_are_kept_as_long_as_the_events_they_join():
    from stream.topics import topic_specs
    s = load_settings(None, topics={"retention_days": 10})
    kept = {t.name: t.config.get("retention.ms") for t in topic_specs(s)}
    assert kept["identity.merges"] == kept["events.accepted"] == str(10 * DAY)
