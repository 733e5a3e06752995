"""POST /admin/cohorts/{id}/syncs: "sync now" through the worker's scheduler, never beside its own syncs."""

import asyncio

import orjson
from aiohttp.test_utils import TestClient, TestServer

from stream.admin.auth import Access
from stream.admin.service import Admin
from stream.clock import FakeClock
from stream.cohorts import schedule
from stream.cohorts.schedule import Scheduler
from stream.cohorts.sync import jobs_of
from stream.health import Health
from stream.settings import load_settings
from stream.web import worker_app
from tests.unit.cohorts.test_sync import P, ms

TOKEN = "a-test-admin-token-of-32-chars-or-more"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def settings():
    return load_settings(None, kafka={"bootstrap_servers": "127.0.0.1:9"}, admin={"token": TOKEN},
                         projects=[{"id": P}], cohorts=[
                             {"id": "buyers", "project": P, "name": "Buyers", "rule": {"performed": "purchase",
                                                                                       "within_days": 1}},
                             {"id": "vips", "project": P, "name": "VIPs", "static": True}],
                         cohort_destinations=[
                             {"name": "crm", "bucket": "crm-bucket",
                              "syncs": [{"cohort": "buyers", "cadence": "hourly"}]},
                             {"name": "ads", "bucket": "ads-bucket",
                              "syncs": [{"cohort": "buyers", "cadence": "daily"}]}])


class Result:
    def __init__(self, job, error=None):
        self.job, self.error = job, error


def test_sync_now_runs_a_backed_off_sync_at_the_schedulers_next_look():
    s, clock, calls = settings(), FakeClock(ms("2024-03-10 07:30")), []
    fail = {"crm"}

    async def run(group, slot):
        calls.append((clock.now_ms(), slot, [j.destination.name for j in group]))
        return [Result(j, "boom" if j.destination.name in fail else None) for j in group]

    async def latest(job):
        return {"scheduled_ms": ms("2024-03-10 00:00")} if job.destination.name == "ads" else None

    async def nothing(_):
        return None

    sched = Scheduler(jobs_of(s, "buyers"), clock.now_ms, latest, run, nothing, requests=schedule.NOW)
    app = worker_app(Health(), admin=Admin(s, clock), access=Access(TOKEN))

    async def go():
        await sched.start()
        await sched.tick()                                    # crm's 07:00 fails: retried at 07:31
        assert sched.states["buyers -> crm"].retry_at_ms == ms("2024-03-10 07:31")
        clock.advance(10_000)
        schedule.NOW.scheduler, schedule.NOW.pending = sched, set()
        try:
            async with TestClient(TestServer(app)) as c:
                r = await c.post("/admin/cohorts/buyers/syncs", headers=AUTH)
                body = (r.status, orjson.loads(await r.read()))
            fail.clear()
            await sched.tick()
        finally:
            schedule.NOW.scheduler, schedule.NOW.pending = None, set()
        return body

    status, body = asyncio.run(go())
    assert (status, body) == (202, {"cohort": "buyers", "syncs": [
        {"destination": "crm", "routing_key": "", "cadence": "hourly", "state": "queued",
         "scheduled_ms": ms("2024-03-10 07:00"), "latest_completed_ms": None, "failures": 1},
        {"destination": "ads", "routing_key": "", "cadence": "daily", "state": "complete",
         "scheduled_ms": None, "latest_completed_ms": ms("2024-03-10 00:00"), "failures": 0}]})
    # the request is run at once, not at 07:31
    assert calls == [(ms("2024-03-10 07:30"), ms("2024-03-10 07:00"), ["crm"]),
                     (ms("2024-03-10 07:30") + 10_000, ms("2024-03-10 07:00"), ["crm"])]
    assert sched.states["buyers -> crm"].completed_ms == ms("2024-03-10 07:00")


def test_sync_now_of_a_once_sync_that_completed_runs_another_recorded_after_it():
    s = load_settings(None, kafka={"bootstrap_servers": "127.0.0.1:9"}, admin={"token": TOKEN},
                      projects=[{"id": P}], cohorts=[{"id": "buyers", "project": P, "name": "Buyers", "rule": {
                          "performed": "purchase", "within_days": 1}}],
                      cohort_destinations=[{"name": "crm", "bucket": "crm-bucket",
                                            "syncs": [{"cohort": "buyers", "cadence": "once"}]}])
    clock, calls = FakeClock(ms("2024-03-10 07:42") + 20_000), []

    async def run(group, slot):
        calls.append((clock.now_ms(), slot))
        return [Result(j) for j in group]

    async def latest(job):      # completed as the stage started, before the events it should count had arrived
        return {"scheduled_ms": ms("2024-03-10 07:42")}

    async def nothing(_):
        return None

    sched = Scheduler(jobs_of(s, "buyers"), clock.now_ms, latest, run, nothing, requests=schedule.NOW)
    app = worker_app(Health(), admin=Admin(s, clock), access=Access(TOKEN))

    async def go():
        await sched.start()
        waits = [await sched.tick()]                          # nothing due: the once sync is complete
        schedule.NOW.scheduler, schedule.NOW.pending = sched, set()
        bodies = []
        try:
            async with TestClient(TestServer(app)) as c:
                r = await c.post("/admin/cohorts/buyers/syncs", headers=AUTH)
                bodies.append((r.status, orjson.loads(await r.read())))
                waits.append(await sched.tick())              # due at 07:43, the minute after the completed one
                clock.advance(40_000)
                waits.append(await sched.tick())
                r = await c.post("/admin/cohorts/buyers/syncs", headers=AUTH)
                bodies.append((r.status, orjson.loads(await r.read())))
        finally:
            schedule.NOW.scheduler, schedule.NOW.pending = None, set()
        return waits, bodies

    waits, bodies = asyncio.run(go())
    assert bodies == [(202, {"cohort": "buyers", "syncs": [
        {"destination": "crm", "routing_key": "", "cadence": "once", "state": "queued",
         "scheduled_ms": ms("2024-03-10 07:43"), "latest_completed_ms": ms("2024-03-10 07:42"), "failures": 0}]}),
        (202, {"cohort": "buyers", "syncs": [
            {"destination": "crm", "routing_key": "", "cadence": "once", "state": "queued",
             "scheduled_ms": ms("2024-03-10 07:44"), "latest_completed_ms": ms("2024-03-10 07:43"), "failures": 0}]})]
    assert calls == [(ms("2024-03-10 07:43") + 0, ms("2024-03-10 07:43"))]
    assert waits == [60.0, 40.0, 60.0]
    assert sched.states["buyers -> crm"].completed_ms == ms("2024-03-10 07:43")


def test_sync_now_answers_what_is_wrong():
    s = settings()
    app = worker_app(Health(), admin=Admin(s, FakeClock(0)), access=Access(TOKEN))

    async def go():
        out = []
        async with TestClient(TestServer(app)) as c:
            for path, body in (("/admin/cohorts/buyers/syncs", None), ("/admin/cohorts/nope/syncs", None),
                               ("/admin/cohorts/vips/syncs", None),
                               ("/admin/cohorts/buyers/syncs", b'{"destination": 3}'),
                               ("/admin/cohorts/buyers/syncs", b'{"destination": "nope"}')):
                r = await c.post(path, headers=AUTH, data=body)
                out.append((r.status, orjson.loads(await r.read())["error"]))
            r = await c.post("/admin/cohorts/buyers/syncs")
            out.append((r.status, None))
        return out

    assert asyncio.run(go()) == [
        (409, "this worker does not run the cohort syncs: it does not run the cohorts stage (worker.stages), has "
              "not started it yet, or is not the worker assigned partition 0 of cohorts.activity, the one that runs "
              "them (its log says so): ask that worker, or run stream cohorts sync buyers"),
        (404, "no cohort 'nope' in the settings (cohorts)"),
        (404, "cohort 'vips' is synced to no cohort destination (cohort_destinations[].syncs)"),
        (400, "destination must be a string: the name of one of the cohort's destinations"),
        (404, "no cohort destination 'nope' (cohort_destinations)"),
        (401, None)]
