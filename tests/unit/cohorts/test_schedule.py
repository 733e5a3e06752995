"""The cohort sync schedule on a fake clock: slots per cadence and time zone, what is due, retries with backoff,
what is late, and the worker's loop syncing each job on its cadence with failures isolated."""

import asyncio

from stream.clock import FakeClock
from stream.cohorts import schedule
from stream.cohorts.schedule import JobState, Scheduler, due, late, next_slot, next_wake, slot_start
from stream.cohorts.sync import jobs_of, latest_completed, run_syncs
from stream.s3.storage import MemoryStorage
from stream.settings import load_settings
from tests.unit.cohorts.test_sync import BUCKET, HISTORY, MERGES, P, Source, ms
from tests.unit.cohorts.test_sync_records import Refusing

H, MIN = 3_600_000, 60_000


def test_slots_per_cadence_and_time_zone():
    now = ms("2024-03-10 07:42") + 13_000
    assert slot_start("hourly", "UTC", now) == ms("2024-03-10 07:00")
    assert slot_start("daily", "UTC", now) == ms("2024-03-10 00:00")
    assert slot_start("once", "UTC", now) == ms("2024-03-10 07:42")
    assert slot_start("daily", "UTC", ms("2024-03-10 00:00")) == ms("2024-03-10 00:00")
    assert slot_start("daily", "UTC", ms("2024-03-10 00:00") - 1) == ms("2024-03-09 00:00")
    # Paris is UTC+1 in winter: its midnight is 23:00 UTC the day before
    assert slot_start("daily", "Europe/Paris", now) == ms("2024-03-09 23:00")
    assert slot_start("daily", "Europe/Paris", ms("2024-03-09 22:59")) == ms("2024-03-08 23:00")
    # India is UTC+5:30: its hours start at half past UTC hours
    assert slot_start("hourly", "Asia/Kolkata", now) == ms("2024-03-10 07:30")
    assert next_slot("hourly", "UTC", ms("2024-03-10 07:00")) == ms("2024-03-10 08:00")
    assert next_slot("daily", "UTC", ms("2024-03-10 00:00")) == ms("2024-03-11 00:00")
    assert next_slot("once", "UTC", now) is None
    # the day of the spring change in Paris lasts 23 hours, the autumn one 25
    assert next_slot("daily", "Europe/Paris", ms("2024-03-30 23:00")) == ms("2024-03-31 22:00")
    assert next_slot("daily", "Europe/Paris", ms("2024-10-26 22:00")) == ms("2024-10-27 23:00")


def test_due_retry_backoff_and_late_on_a_fake_clock():
    clock = FakeClock(ms("2024-03-10 07:42"))
    st = JobState("daily", "UTC", since_ms=clock.now_ms())
    assert due(st, clock.now_ms()) == ms("2024-03-10 00:00")
    schedule.failed(st, ms("2024-03-10 00:00"), clock.now_ms())
    assert (st.failures, st.retry_at_ms) == (1, ms("2024-03-10 07:43"))
    assert due(st, clock.now_ms()) is None and next_wake(st, clock.now_ms()) == ms("2024-03-10 07:43")
    clock.advance(MIN)
    assert due(st, clock.now_ms()) == ms("2024-03-10 00:00")
    schedule.failed(st, ms("2024-03-10 00:00"), clock.now_ms())
    assert st.retry_at_ms == clock.now_ms() + 2 * MIN     # doubled
    for _ in range(10):
        schedule.failed(st, ms("2024-03-10 00:00"), clock.now_ms())
    assert st.retry_at_ms == clock.now_ms() + 30 * MIN    # at most 30 minutes
    # the next day's slot is due at once, whatever the backoff of the failing one
    assert due(st, ms("2024-03-11 00:00")) == ms("2024-03-11 00:00")
    schedule.completed(st, ms("2024-03-11 00:00"))
    assert (st.failures, st.retry_at_ms, due(st, ms("2024-03-11 05:00"))) == (0, None, None)
    assert next_wake(st, ms("2024-03-11 05:00")) == ms("2024-03-12 00:00")
    # late: no completed slot for more than two cadences
    assert not late(st, ms("2024-03-13 00:00"))
    assert late(st, ms("2024-03-13 00:00") + 1)
    fresh = JobState("hourly", "UTC", since_ms=ms("2024-03-10 07:42"))
    assert not late(fresh, ms("2024-03-10 09:42")) and late(fresh, ms("2024-03-10 09:42") + 1)
    assert not late(JobState("once", "UTC", since_ms=0), ms("2024-03-10 09:42"))


def test_once_keeps_the_slot_of_its_first_attempt_across_retries():
    st = JobState("once", "UTC", since_ms=ms("2024-03-10 07:42"))
    first = due(st, ms("2024-03-10 07:42") + 30_000)
    assert first == ms("2024-03-10 07:42")
    schedule.failed(st, first, ms("2024-03-10 07:43"))
    assert due(st, ms("2024-03-10 07:44")) == first
    schedule.completed(st, first)
    assert due(st, ms("2024-03-11 07:44")) is None and next_wake(st, ms("2024-03-11 07:44")) is None


def test_sync_now_of_a_complete_once_sync_runs_another_at_a_minute_of_its_own():
    # the once sync was stamped as the stage started, before the events it should count: it completed with what
    # was there, and "sync now" asks for another
    clock = FakeClock(ms("2024-03-10 07:42") + 5_000)
    st = JobState("once", "UTC", since_ms=clock.now_ms())
    first = due(st, clock.now_ms())
    assert first == ms("2024-03-10 07:42")
    schedule.completed(st, first)
    clock.advance(20_000)
    assert due(st, clock.now_ms()) is None and next_wake(st, clock.now_ms()) is None
    schedule.sync_now(st, clock.now_ms())
    # asked within the minute of the completed sync: stamped, and due, at the next minute
    assert due(st, clock.now_ms()) is None
    assert next_wake(st, clock.now_ms()) == schedule.planned(st, clock.now_ms()) == ms("2024-03-10 07:43")
    clock.advance(35_000)
    assert due(st, clock.now_ms()) == ms("2024-03-10 07:43")
    # a failed attempt keeps its minute across retries, after the backoff
    schedule.failed(st, ms("2024-03-10 07:43"), clock.now_ms())
    assert due(st, clock.now_ms() + 59_000) is None and next_wake(st, clock.now_ms()) == clock.now_ms() + 60_000
    assert due(st, ms("2024-03-10 07:50")) == ms("2024-03-10 07:43")
    schedule.completed(st, ms("2024-03-10 07:43"))
    assert (st.completed_ms, st.requested, st.once_slot) == (ms("2024-03-10 07:43"), False, None)
    assert due(st, ms("2024-03-10 09:10")) is None and next_wake(st, ms("2024-03-10 09:10")) is None
    # asked later, at 09:10:40: stamped 09:11, after the request (it counts every event accepted before it), due then
    schedule.sync_now(st, ms("2024-03-10 09:10") + 40_000)
    assert due(st, ms("2024-03-10 09:10") + 40_000) is None
    assert next_wake(st, ms("2024-03-10 09:10") + 40_000) == ms("2024-03-10 09:11")
    assert due(st, ms("2024-03-10 09:11")) == ms("2024-03-10 09:11")
    # taken late (the loop busy with other syncs until 09:13:05): now to the minute
    assert due(st, ms("2024-03-10 09:13") + 5_000) == ms("2024-03-10 09:13")
    # an hourly sync whose hour is complete has nothing due: sync now changes nothing
    hourly = schedule.completed(JobState("hourly", "UTC"), ms("2024-03-10 09:00"))
    schedule.sync_now(hourly, ms("2024-03-10 09:10"))
    assert due(hourly, ms("2024-03-10 09:10")) is None and schedule.planned(hourly, ms("2024-03-10 09:10")) is None
    assert next_wake(hourly, ms("2024-03-10 09:10")) == ms("2024-03-10 10:00")


def settings_with(*dests):
    return load_settings(None, projects=[{"id": P}], cohorts=[
        {"id": "pro-buyers", "project": P, "name": "Pro buyers", "rule": {"and": [
            {"performed": "purchase", "within_days": 1}, {"user_property": "plan", "op": "=", "value": "pro"}]}}],
        cohort_destinations=list(dests))


def test_the_loop_syncs_each_job_on_its_cadence_one_at_a_time_with_failures_isolated():
    s = settings_with(
        {"name": "crm", "bucket": BUCKET, "encryption": {"type": "none"},
         "syncs": [{"cohort": "pro-buyers", "cadence": "daily"}]},
        {"name": "ads", "bucket": "ads-bucket", "encryption": {"type": "none"},
         "syncs": [{"cohort": "pro-buyers", "cadence": "hourly"}]})
    storages = {"crm": MemoryStorage(), "ads": Refusing()}
    clock = FakeClock(ms("2024-03-10 22:30"))
    source = Source(HISTORY, MERGES)
    calls, attempts, pauses, running = [], [], [], set()

    async def run(group, slot):
        names = {j.name for j in group}
        assert not names & running          # one sync per (cohort, destination) at a time
        running.update(names)
        calls.append((slot, sorted(j.destination.name for j in group)))
        attempts.append(clock.now_ms())
        try:
            return await run_syncs(s, group, slot, lambda d: storages[d.name], source, at_ms=slot,
                                   clock_ms=clock.now_ms)
        finally:
            running.difference_update(names)

    async def pause(seconds):
        pauses.append(seconds)
        clock.advance(int(seconds * 1000))

    async def latest(job):
        return await latest_completed(storages[job.destination.name], job)

    jobs = jobs_of(s, "pro-buyers")
    sched = Scheduler(jobs, clock.now_ms, latest, run, pause)

    async def drive(until):
        await sched.start()
        while clock.now_ms() < until:
            await pause(await sched.tick())

    asyncio.run(drive(ms("2024-03-10 23:01")))
    crm, ads = (sched.states[j.name] for j in jobs)
    # 22:30: both due (daily 10 March, hourly 22:00), one slot group each, oldest first; ads fails (access denied)
    # and is tried again 1, 2, 4, 8 minutes later; at 23:00 its next hour is due whatever the backoff; crm's day is
    # complete and waits for 11 March
    assert calls == [(ms("2024-03-10 00:00"), ["crm"])] + [(ms("2024-03-10 22:00"), ["ads"])] * 5 + [
        (ms("2024-03-10 23:00"), ["ads"])]
    assert attempts == [ms(f"2024-03-10 {t}") for t in ("22:30", "22:30", "22:31", "22:33", "22:37", "22:45",
                                                         "23:00")]
    assert max(pauses) == 60.0       # it looks again at least every minute
    assert crm.completed_ms == ms("2024-03-10 00:00") and crm.failures == 0
    assert ads.completed_ms is None and ads.failures == 6 and ads.retry_at_ms == ms("2024-03-10 23:30")
    assert (BUCKET, "_stream/cohorts/crm/424242_pro-buyers/done/2024-03-10T00-00.done") in storages["crm"].objects
    assert sorted(k for (_, k) in storages["ads"].objects) == [
        "_stream/cohorts/ads/424242_pro-buyers/failed/2024-03-10T22-00.json",
        "_stream/cohorts/ads/424242_pro-buyers/failed/2024-03-10T23-00.json"]
    assert schedule.gauges(jobs, sched.states) == {
        ("pro-buyers", "crm"): (ms("2024-03-10 00:00") / 1000, 86400.0, 0),
        ("pro-buyers", "ads"): (ms("2024-03-10 22:30") / 1000, 3600.0, 6)}


def test_the_loop_starts_from_the_latest_completed_sync():
    s = settings_with({"name": "crm", "bucket": BUCKET, "encryption": {"type": "none"},
                       "syncs": [{"cohort": "pro-buyers", "cadence": "daily"}]})
    storage = MemoryStorage()
    asyncio.run(run_syncs(s, jobs_of(s, "pro-buyers"), ms("2024-03-10 05:00"), lambda d: storage,
                          Source(HISTORY, MERGES)))   # a CLI run
    clock = FakeClock(ms("2024-03-10 22:30"))
    calls = []

    async def run(group, slot):
        calls.append(slot)
        return []

    async def latest(job):
        return await latest_completed(storage, job)

    async def nothing(_):
        return None

    sched = Scheduler(jobs_of(s, "pro-buyers"), clock.now_ms, latest, run, nothing)
    asyncio.run(sched.start())
    wait = asyncio.run(sched.tick())
    assert calls == [] and wait == 60.0      # complete already; it looks again within a minute
    clock.t = ms("2024-03-11 00:00")
    asyncio.run(sched.tick())
    assert calls == [ms("2024-03-11 00:00")]
