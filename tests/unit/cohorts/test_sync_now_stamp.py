""""Sync now" of a ``once`` sync is answered by a sync stamped at or after the request, so that it counts every
event accepted before the user asked: never by a pending sync stamped before the request, nor by a resync stamped
at the request's minute rounded down."""

import asyncio

from stream.clock import FakeClock
from stream.cohorts import schedule
from stream.cohorts.requests import Follower, MemoryRequestLog, request_record
from stream.cohorts.schedule import JobState, Scheduler, SyncNow, due, next_wake, request_answer
from stream.cohorts.sync import jobs_of
from tests.unit.cohorts.test_sync import ms
from tests.unit.cohorts.test_sync_now import Result, settings

T = ms("2026-12-06 11:14")


def test_a_resync_asked_at_11_14_45_is_stamped_11_15():
    st = schedule.completed(JobState("once", "UTC"), ms("2026-12-06 10:00"))
    schedule.sync_now(st, T + 45_000)
    assert schedule.planned(st, T + 45_000) == schedule.resync_slot(st, T + 45_000) == T + 60_000
    assert due(st, T + 45_000) is None and next_wake(st, T + 45_000) == T + 60_000
    assert due(st, T + 60_000) == T + 60_000
    # asked on the minute exactly: that minute, at once
    exact = schedule.completed(JobState("once", "UTC"), ms("2026-12-06 10:00"))
    schedule.sync_now(exact, T)
    assert due(exact, T) == T


def test_the_answer_to_a_request_at_11_14_45_names_a_sync_stamped_11_15():
    (job,) = jobs_of(settings("once"), "buyers", "crm")
    assert [request_answer(job, latest, T + 45_000)["scheduled_ms"] for latest in (ms("2026-12-06 10:00"), None)] \
        == [T + 60_000, T + 60_000]
    # asked within the minute after the latest completed sync: the minute after it
    assert request_answer(job, T + 60_000, T + 65_000)["scheduled_ms"] == T + 120_000
    # an hourly sync cannot make its slot earlier: the current hour's, stamped before the request
    (hourly,) = jobs_of(settings("hourly"), "buyers", "crm")
    assert request_answer(hourly, None, T + 45_000)["scheduled_ms"] == ms("2026-12-06 11:00")


def run_scheduler(first_fails: bool):
    """The worker starts at 11:14:00 and schedules its once sync (stamped 11:14:00); "sync now" is asked at
    11:14:45, after the events it should count were accepted."""
    s, clock, log = settings("once"), FakeClock(T), MemoryRequestLog()
    jobs = jobs_of(s, "buyers", "crm")
    now_q, calls = SyncNow(), []
    fail = [first_fails]

    async def run(group, slot):
        calls.append((clock.now_ms(), slot, sched.run_args(group, slot)["requests"][group[0].name]))
        return [Result(j, "the cohort state had not passed the sync's time" if fail[0] else None) for j in group]

    async def latest(job):
        return None

    async def nothing(_):
        return None

    sched = Scheduler(jobs, clock.now_ms, latest, run, nothing, requests=now_q)

    async def go():
        await sched.start()
        follower = Follower(s, clock.now_ms, jobs, sched.ran, now_q, log.append, worker="w")
        sched.on_requests = follower.finished
        waits = [await sched.tick()]                 # the start-up sync of 11:14:00: fails, or completes
        fail[0] = False
        clock.t = T + 45_000
        log.records.append(request_record("sr-1", "buyers", "crm", jobs, clock.now_ms(), "api"))
        await follower.start(await log.read())
        waits.append(await sched.tick())
        clock.t = T + 60_000
        waits.append(await sched.tick())
        return waits

    waits = asyncio.run(go())
    dones = [r for r in (__import__("orjson").loads(v) for _, v in log.records) if r["kind"] == "done"]
    return calls, waits, sched.states[jobs[0].name], dones


def test_a_request_at_11_14_45_is_not_run_by_the_failed_sync_stamped_11_14_pending():
    calls, waits, state, dones = run_scheduler(first_fails=True)
    # the pending 11:14 sync runs again at once (no backoff), without the request; the request's sync, stamped
    # 11:15, runs at 11:15, after it
    assert calls == [(T, T, []), (T + 45_000, T, []), (T + 60_000, T + 60_000, ["sr-1"])]
    assert waits == [60.0, 15.0, 60.0]
    assert (state.completed_ms, state.requested, state.requested_ms) == (T + 60_000, False, None)
    assert [(d["id"], d["syncs"]) for d in dones] == [
        ("sr-1", [{"destination": "crm", "routing_key": "", "state": "complete"}])]


def test_a_request_at_11_14_45_after_the_sync_stamped_11_14_completed_runs_one_stamped_11_15():
    calls, waits, state, dones = run_scheduler(first_fails=False)
    assert calls == [(T, T, []), (T + 60_000, T + 60_000, ["sr-1"])]
    assert waits == [60.0, 15.0, 60.0]
    assert (state.completed_ms, state.requested) == (T + 60_000, False)
    assert [d["id"] for d in dones] == ["sr-1"]


def test_a_request_waiting_behind_a_sync_found_completed_by_another_run_gets_a_sync_after_it():
    """sr-2 (11:13:30) waits behind the failed attempt of 11:13, which, tried again, finds a sync of 11:14 completed
    by another run (the former holder of the duty) that does not list sr-2: sr-2 runs in a sync after it."""
    (job,) = jobs_of(settings("once"), "buyers", "crm")
    clock, now_q, calls = FakeClock(ms("2026-12-06 11:13")), SyncNow(), []
    outcomes = [Result(job, "the cohort state had not passed the sync's time"), Result(job), Result(job)]
    outcomes[1].superseded = [{"scheduled_ms": ms("2026-12-06 11:14"), "requests": ["sr-other"]}]

    async def run(group, slot):
        calls.append((clock.now_ms(), slot, sched.run_args(group, slot)["requests"][job.name]))
        return [outcomes.pop(0)]

    async def latest(job):
        return {"scheduled_ms": ms("2026-12-06 11:10")}

    async def nothing(_):
        return None

    sched = Scheduler([job], clock.now_ms, latest, run, nothing, requests=now_q)

    async def go():
        await sched.start()
        now_q.add([job.name], "sr-1", ms("2026-12-06 11:12") + 30_000)
        await sched.tick()                               # 11:13 for sr-1: fails
        clock.t = ms("2026-12-06 11:13") + 30_000
        now_q.add([job.name], "sr-2", clock.now_ms())
        waits = [await sched.tick()]                     # 11:13 again, without sr-2: found superseded by 11:14
        clock.t = ms("2026-12-06 11:15")
        waits.append(await sched.tick())
        return waits

    waits = asyncio.run(go())
    assert calls == [(ms("2026-12-06 11:13"), ms("2026-12-06 11:13"), ["sr-1"]),
                     (ms("2026-12-06 11:13") + 30_000, ms("2026-12-06 11:13"), []),
                     (ms("2026-12-06 11:15"), ms("2026-12-06 11:15"), ["sr-2"])]
    assert waits == [60.0, 60.0]                        # 11:15 is 90 s away: the loop looks again in 60
    state = sched.states[job.name]
    assert (state.completed_ms, state.requested, sched.asked) == (ms("2026-12-06 11:15"), False, {})
