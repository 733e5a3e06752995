"""POST /admin/cohorts/{id}/syncs: "sync now" from any worker, recorded on the sync requests topic and run by the
worker holding the sync duty, in turn with its scheduled syncs, once."""

import asyncio
import re

import orjson
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY

from stream.admin.auth import Access
from stream.admin.service import Admin
from stream.clock import FakeClock
from stream.cohorts import requests
from stream.cohorts.duty import SyncDuty
from stream.cohorts.requests import Book, Follower, MemoryRequestLog, Runs, done_record, holder_record, \
    request_record
from stream.cohorts.schedule import Scheduler, SyncNow
from stream.cohorts.sync import jobs_of, pointer_key, run_syncs
from stream.health import Health
from stream.s3.storage import MemoryStorage
from stream.settings import load_settings
from stream.web import worker_app
from tests.unit.cohorts.test_sync import BUCKET, HISTORY, MERGES, T3, P, Source, ms

TOKEN = "a-test-admin-token-of-32-chars-or-more"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ID = re.compile(r"sr-\d{8}T\d{6}-[0-9a-f]{6}")


def settings(crm="hourly"):
    return load_settings(None, kafka={"bootstrap_servers": "127.0.0.1:9"}, admin={"token": TOKEN},
                         projects=[{"id": P}], cohorts=[
                             {"id": "buyers", "project": P, "name": "Buyers", "rule": {"performed": "purchase",
                                                                                       "within_days": 1}},
                             {"id": "vips", "project": P, "name": "VIPs", "static": True}],
                         cohort_destinations=[
                             {"name": "crm", "bucket": "crm-bucket",
                              "syncs": [{"cohort": "buyers", "cadence": crm}]},
                             {"name": "ads", "bucket": "ads-bucket",
                              "syncs": [{"cohort": "buyers", "cadence": "daily"}]}])


def requests_count(outcome):
    return REGISTRY.get_sample_value("stream_cohort_sync_requests_total", {"outcome": outcome}) or 0.0


class Result:
    def __init__(self, job, error=None):
        self.job, self.error = job, error


def admin_of(s, clock, storage, log, held=None):
    admin = Admin(s, clock)
    admin.cohort_storage_of = lambda d: storage
    admin.sync_requests = log
    admin.duty = SyncDuty(held)
    return admin


def call(admin, calls):
    app = worker_app(Health(), admin=admin, access=Access(TOKEN))

    async def go():
        out = []
        async with TestClient(TestServer(app)) as c:
            for method, path, body in calls:
                r = await c.request(method, path, headers=AUTH, data=body)
                out.append((r.status, orjson.loads(await r.read())))
        return out
    return asyncio.run(go())


def test_any_worker_records_the_request_and_answers_what_is_queued_and_who_runs_it():
    s, clock, storage, log = settings(), FakeClock(ms("2024-03-10 07:30")), MemoryStorage(), MemoryRequestLog()
    ads = jobs_of(s, "buyers", "ads")[0]
    # the ads sync's day is complete (its pointer in its bucket); crm's hour is not
    storage.objects[("ads-bucket", pointer_key(ads))] = orjson.dumps({"scheduled_ms": ms("2024-03-10 00:00")})
    queued = requests_count("queued")
    admin = admin_of(s, clock, storage, log)
    (first,) = call(admin, [("POST", "/admin/cohorts/buyers/syncs", None)])
    log.records.append(holder_record("worker-1 (pid 7)", ms("2024-03-10 07:29")))       # a duty holder said so
    second, third, page = call(admin, [("POST", "/admin/cohorts/buyers/syncs", b'{"destination": "crm"}'),
                                       ("POST", "/admin/cohorts/buyers/syncs", b'{"destination": "ads"}'),
                                       ("GET", "/admin/cohorts/buyers", None)])
    from stream.admin.openapi import SYNC_NOW
    assert list(first[1]) == SYNC_NOW["required"]           # the answer is the one the OpenAPI document describes
    assert list(first[1]["syncs"][0]) == list(SYNC_NOW["properties"]["syncs"]["items"]["properties"])
    ids = [doc[1].pop("request") for doc in (first, second, third)]
    assert all(ID.fullmatch(i) for i in ids) and len(set(ids)) == 3
    syncs = [{"destination": "crm", "routing_key": "", "cadence": "hourly", "state": "queued",
              "scheduled_ms": ms("2024-03-10 07:00"), "latest_completed_ms": None},
             {"destination": "ads", "routing_key": "", "cadence": "daily", "state": "complete",
              "scheduled_ms": None, "latest_completed_ms": ms("2024-03-10 00:00")}]
    assert first == (202, {
        "cohort": "buyers", "destination": None, "syncs": syncs, "runs_on": None, "waiting_for_worker": True,
        "note": "queued on cohorts.sync-requests, waiting for a worker running the cohorts stage: none has held the "
                "sync duty in the last 3 minutes. A worker with cohorts in worker.stages runs it once it starts, "
                "unless the request is more than 24 hours old by then"})
    holder_note = ("queued on cohorts.sync-requests: the worker holding the sync duty (worker-1 (pid 7)) runs it in "
                   "turn with its scheduled syncs")
    assert second == (202, {"cohort": "buyers", "destination": "crm", "syncs": syncs[:1], "runs_on": "worker-1 (pid 7)",
                            "waiting_for_worker": False, "note": holder_note})
    assert third == (202, {"cohort": "buyers", "destination": "ads", "syncs": syncs[1:], "runs_on": "worker-1 (pid 7)",
                           "waiting_for_worker": False, "note": holder_note})
    now = ms("2024-03-10 07:30")
    crm, both = {"destination": "crm", "routing_key": ""}, [{"destination": "crm", "routing_key": ""},
                                                            {"destination": "ads", "routing_key": ""}]
    assert [orjson.loads(v) for _, v in log.records] == [
        {"kind": "request", "id": ids[0], "cohort": "buyers", "destination": None, "syncs": both, "at": now,
         "by": "api"},
        {"kind": "holder", "worker": "worker-1 (pid 7)", "at": ms("2024-03-10 07:29")},
        {"kind": "request", "id": ids[1], "cohort": "buyers", "destination": "crm", "syncs": [crm], "at": now,
         "by": "api"},
        {"kind": "request", "id": ids[2], "cohort": "buyers", "destination": "ads", "syncs": both[1:], "at": now,
         "by": "api"}]
    assert [k for k, _ in log.records] == [f"request/{ids[0]}".encode(), b"holder", f"request/{ids[1]}".encode(),
                                           f"request/{ids[2]}".encode()]
    assert requests_count("queued") - queued == 3
    # the cohort's document shows the requests not run yet
    assert page[0] == 200 and page[1]["requested"] == [
        {"request": ids[0], "at_ms": now, "by": "api", "destination": None, "syncs": both},
        {"request": ids[1], "at_ms": now, "by": "api", "destination": "crm", "syncs": [crm]},
        {"request": ids[2], "at_ms": now, "by": "api", "destination": "ads", "syncs": both[1:]}]


def test_a_worker_running_the_cohorts_stage_answers_that_the_holder_runs_it():
    s, log = settings(), MemoryRequestLog()
    admin = admin_of(s, FakeClock(ms("2024-03-10 07:30")), MemoryStorage(), log, held=False)
    ((status, doc),) = call(admin, [("POST", "/admin/cohorts/buyers/syncs", None)])
    assert (status, doc["runs_on"], doc["waiting_for_worker"], doc["note"]) == (
        202, None, False, "queued on cohorts.sync-requests: the worker holding the sync duty runs it in turn with "
                          "its scheduled syncs")


def test_a_cohorts_document_without_the_requests_topic_still_shows_its_history():
    class Down(MemoryRequestLog):
        async def read(self):
            raise ConnectionError("no broker")
    log = Down()
    admin = admin_of(settings(), FakeClock(ms("2024-03-10 07:30")), MemoryStorage(), log)
    ((status, doc), (posted, answer)) = call(admin, [("GET", "/admin/cohorts/buyers", None),
                                                     ("POST", "/admin/cohorts/buyers/syncs", None)])
    assert (status, doc["requested"], doc["history"]) == (200, None, [])
    # the request is recorded; whether a worker holds the duty could not be told
    assert (posted, answer["runs_on"], answer["waiting_for_worker"], len(log.records)) == (202, None, False, 1)
    assert answer["note"] == ("queued on cohorts.sync-requests; whether a worker holds the sync duty could not be "
                              "read: the worker holding it runs the request in turn with its scheduled syncs")


def test_sync_now_queues_nothing_when_a_bucket_cannot_be_read():
    class Refusing(MemoryStorage):
        def read(self, bucket, key):
            raise PermissionError("AccessDenied")
    log = MemoryRequestLog()
    admin = admin_of(settings(), FakeClock(ms("2024-03-10 07:30")), Refusing(), log)
    ((status, doc),) = call(admin, [("POST", "/admin/cohorts/buyers/syncs", b'{"destination": "crm"}')])
    assert (status, doc) == (502, {"error": (
        "the sync records of buyers -> crm could not be read from s3://crm-bucket/_stream/cohorts/crm/424242_buyers/ "
        "(PermissionError: AccessDenied); nothing was queued: check this worker's access to the bucket (stream "
        "policy crm) and ask again")})
    assert log.records == []


def test_sync_now_answers_what_is_wrong():
    s, log = settings(), MemoryRequestLog()
    admin = admin_of(s, FakeClock(0), MemoryStorage(), log)

    async def go():
        out = []
        async with TestClient(TestServer(worker_app(Health(), admin=admin, access=Access(TOKEN)))) as c:
            for path, body in (("/admin/cohorts/nope/syncs", None), ("/admin/cohorts/vips/syncs", None),
                               ("/admin/cohorts/buyers/syncs", b'{"destination": 3}'),
                               ("/admin/cohorts/buyers/syncs", b'{"destination": "nope"}')):
                r = await c.post(path, headers=AUTH, data=body)
                out.append((r.status, orjson.loads(await r.read())["error"]))
            r = await c.post("/admin/cohorts/buyers/syncs")
            out.append((r.status, None))
        return out

    assert asyncio.run(go()) == [
        (404, "no cohort 'nope' in the settings (cohorts)"),
        (404, "cohort 'vips' is synced to no cohort destination (cohort_destinations[].syncs)"),
        (400, "destination must be a string: the name of one of the cohort's destinations"),
        (404, "no cohort destination 'nope' (cohort_destinations)"),
        (401, None)]
    assert log.records == []        # nothing recorded for a refused request


def test_the_book_of_requests_folds_pending_done_and_the_holder_lease():
    now = ms("2024-03-10 07:30")
    syncs = [{"destination": "crm", "routing_key": ""}]
    book = Book().add_all(v for _, v in [
        request_record("r1", "buyers", None, [], now - 25 * 3_600_000, "api"),      # too old: never pending
        request_record("r2", "buyers", "crm", [], now - 60_000, "console"),
        request_record("r3", "vips", None, [], now - 30_000, "api"),
        request_record("r4", "buyers", None, [], now - 20_000, "api"),
        done_record("r2", "run", syncs, now - 10_000, "w"),
        holder_record("w", now - 180_000), (b"x", b"not json"), (b"x", b'{"kind": "later"}')])
    assert [r["id"] for r in book.pending(now)] == ["r3", "r4"]
    assert [r["id"] for r in book.pending(now, "buyers")] == ["r4"]
    assert book.holder_at(now) == {"kind": "holder", "worker": "w", "at": now - 180_000}
    assert book.holder_at(now + 1) is None       # older than the lease: no worker is known to hold the duty


def test_runs_admit_each_request_once_and_not_what_a_completed_sync_ran():
    s, now = settings(), ms("2024-03-10 07:30")
    jobs = jobs_of(s, "buyers")
    runs = Runs(jobs)

    def req(rid, at=now, syncs=None):
        return orjson.loads(request_record(rid, "buyers", None, jobs, at, "api")[1]) if syncs is None else \
            {"id": rid, "cohort": "buyers", "destination": None, "syncs": syncs, "at": at, "by": "api"}

    assert runs.admit(req("r1"), False, {}, now) == ("run", ["buyers -> crm", "buyers -> ads"])
    assert runs.admit(req("r1"), False, {}, now) == ("skip", [])                 # read again: taken already
    assert runs.admit(req("r0"), True, {}, now) == ("skip", [])                  # done
    assert runs.admit(req("old", now - 24 * 3_600_000 - 1), False, {}, now) == ("drop", [])
    assert runs.admit(req("r2"), False, {"buyers -> crm": {"r2"}}, now) == ("run", ["buyers -> ads"])
    assert runs.admit(req("r3"), False, {"buyers -> crm": {"r3"}, "buyers -> ads": {"r3"}}, now) == ("done", [])
    assert runs.admit(req("r4", syncs=[{"destination": "gone", "routing_key": ""}]), False, {}, now) == ("done", [])
    assert runs.finished("buyers -> crm", ["r1", "r2"], "complete") == []
    (t,) = runs.finished("buyers -> ads", ["r1"], "failed")
    assert t.syncs() == [{"destination": "crm", "routing_key": "", "state": "complete"},
                         {"destination": "ads", "routing_key": "", "state": "failed"}]


def test_the_duty_holder_runs_a_request_in_turn_once_and_drops_the_too_old():
    """The follower reads the topic whole, hands the pending request to the scheduler, which runs its syncs at its
    next look (not after the failed attempt's backoff) and writes the request in the completion record; the done
    record follows. A later holder reading the same topic runs nothing again."""
    s, clock, calls, log = settings(), FakeClock(ms("2024-03-10 07:30")), [], MemoryRequestLog()
    jobs = jobs_of(s, "buyers")
    fail = {"crm"}
    now_q = SyncNow()

    async def run(group, slot):
        calls.append((clock.now_ms(), slot, [(j.destination.name, sched.asked.get(j.name, [])) for j in group]))
        return [Result(j, "boom" if j.destination.name in fail else None) for j in group]

    async def latest(job):
        return {"scheduled_ms": ms("2024-03-10 00:00")} if job.destination.name == "ads" else None

    async def nothing(_):
        return None

    log.records += [request_record("sr-old", "buyers", None, jobs, ms("2024-03-09 07:29"), "api"),
                    request_record("sr-1", "buyers", None, jobs, ms("2024-03-10 07:30"), "console"),
                    request_record("sr-0", "buyers", None, jobs, ms("2024-03-10 06:00"), "api"),
                    done_record("sr-0", "run", [], ms("2024-03-10 06:01"), "w0")]
    sched = Scheduler(jobs, clock.now_ms, latest, run, nothing, requests=now_q)
    counts = [requests_count(o) for o in ("run", "dropped")]

    async def go():
        await sched.start()
        follower = Follower(s, clock.now_ms, jobs, sched.ran, now_q, log.append, worker="w1")
        sched.on_requests = follower.finished
        await sched.tick()                               # crm's 07:00 fails: retried at 07:31
        assert sched.states["buyers -> crm"].retry_at_ms == ms("2024-03-10 07:31")
        clock.advance(10_000)
        await follower.beat()
        await follower.start(await log.read())
        fail.clear()
        await sched.tick()
        return follower

    asyncio.run(go())
    # the request is run at once, not at 07:31; ads's day is complete: nothing to run for it
    assert calls == [(ms("2024-03-10 07:30"), ms("2024-03-10 07:00"), [("crm", [])]),
                     (ms("2024-03-10 07:30") + 10_000, ms("2024-03-10 07:00"), [("crm", ["sr-1"])])]
    at = ms("2024-03-10 07:30") + 10_000
    assert [orjson.loads(v) for _, v in log.records[4:]] == [
        {"kind": "holder", "worker": "w1", "at": at},
        {"kind": "done", "id": "sr-old", "outcome": "dropped", "syncs": [], "at": at, "worker": "w1"},
        {"kind": "done", "id": "sr-1", "outcome": "run", "syncs": [
            {"destination": "crm", "routing_key": "", "state": "complete"},
            {"destination": "ads", "routing_key": "", "state": "complete"}], "at": at, "worker": "w1"}]
    assert [requests_count(o) for o in ("run", "dropped")] == [counts[0] + 1, counts[1] + 1]
    assert Book().add_all(v for _, v in log.records).pending(at) == []

    # a later holder (a restart, a rebalance) reads the topic again: nothing to run, nothing written
    again = SyncNow()

    async def later():
        follower = Follower(s, clock.now_ms, jobs, {}, again, log.append, worker="w2")
        follower.beat_at = at
        await follower.start(await log.read())
    n = len(log.records)
    asyncio.run(later())
    assert again.pending == {} and len(log.records) == n


def test_a_request_whose_sync_completed_before_its_holder_died_is_not_run_again():
    """Killed between a once sync's completion record (which lists the request) and the request's done record:
    the next holder finds the request in the sync's latest completion record, and records it done."""
    s, clock, log = settings("once"), FakeClock(ms("2024-03-10 07:50")), MemoryRequestLog()
    jobs = jobs_of(s, "buyers", "crm")
    log.records.append(request_record("sr-1", "buyers", "crm", jobs, ms("2024-03-10 07:42"), "api"))
    now_q = SyncNow()

    async def run(group, slot):
        raise AssertionError("the request ran already")

    async def latest(job):
        return {"scheduled_ms": ms("2024-03-10 07:43"), "requests": ["sr-1"]}

    async def nothing(_):
        return None

    sched = Scheduler(jobs, clock.now_ms, latest, run, nothing, requests=now_q)

    async def go():
        await sched.start()
        follower = Follower(s, clock.now_ms, jobs, sched.ran, now_q, log.append, worker="w2")
        sched.on_requests = follower.finished
        await follower.start(await log.read())
        return await sched.tick()

    assert asyncio.run(go()) == 60.0
    assert now_q.pending == {}
    assert orjson.loads(log.records[-1][1]) == {
        "kind": "done", "id": "sr-1", "outcome": "run", "syncs": [
            {"destination": "crm", "routing_key": "", "state": "complete"}], "at": ms("2024-03-10 07:50"),
        "worker": "w2"}


def test_sync_now_of_a_once_sync_that_completed_runs_another_recorded_after_it():
    s = load_settings(None, kafka={"bootstrap_servers": "127.0.0.1:9"}, admin={"token": TOKEN},
                      projects=[{"id": P}], cohorts=[{"id": "buyers", "project": P, "name": "Buyers", "rule": {
                          "performed": "purchase", "within_days": 1}}],
                      cohort_destinations=[{"name": "crm", "bucket": "crm-bucket",
                                            "syncs": [{"cohort": "buyers", "cadence": "once"}]}])
    clock, calls, log, storage = FakeClock(ms("2024-03-10 07:42") + 20_000), [], MemoryRequestLog(), MemoryStorage()
    (job,) = jobs_of(s, "buyers")
    storage.objects[("crm-bucket", pointer_key(job))] = orjson.dumps({"scheduled_ms": ms("2024-03-10 07:42")})
    now_q = SyncNow()

    async def run(group, slot):
        calls.append((clock.now_ms(), slot, sched.asked.get(job.name)))
        return [Result(j) for j in group]

    async def latest(job):      # completed as the stage started, before the events it should count had arrived
        return {"scheduled_ms": ms("2024-03-10 07:42")}

    async def nothing(_):
        return None

    sched = Scheduler([job], clock.now_ms, latest, run, nothing, requests=now_q)
    admin = admin_of(s, clock, storage, log, held=True)

    async def go():
        await sched.start()
        follower = Follower(s, clock.now_ms, [job], sched.ran, now_q, log.append, worker="w")
        sched.on_requests = follower.finished
        waits = [await sched.tick()]                          # nothing due: the once sync is complete
        answer = await admin.cohort_sync("buyers")
        await follower.start(await log.read())
        waits.append(await sched.tick())                      # due at 07:43, the minute after the completed one
        clock.advance(40_000)
        waits.append(await sched.tick())
        return waits, answer

    waits, answer = asyncio.run(go())
    assert answer["syncs"] == [{"destination": "crm", "routing_key": "", "cadence": "once", "state": "queued",
                                "scheduled_ms": ms("2024-03-10 07:43"),
                                "latest_completed_ms": ms("2024-03-10 07:42")}]
    assert calls == [(ms("2024-03-10 07:43"), ms("2024-03-10 07:43"), [answer["request"]])]
    assert waits == [60.0, 40.0, 60.0]
    assert sched.states["buyers -> crm"].completed_ms == ms("2024-03-10 07:43")
    assert orjson.loads(log.records[-1][1])["id"] == answer["request"]


def test_a_completion_record_lists_the_requests_its_sync_ran():
    s = load_settings(None, projects=[{"id": P}], cohorts=[
        {"id": "pro-buyers", "project": P, "name": "Pro buyers", "rule": {"performed": "purchase",
                                                                          "within_days": 1}}],
        cohort_destinations=[{"name": "crm", "bucket": BUCKET, "encryption": {"type": "none"},
                              "syncs": [{"cohort": "pro-buyers", "cadence": "daily"}]}])
    storage = MemoryStorage()
    (job,) = jobs_of(s, "pro-buyers")
    (r,) = asyncio.run(run_syncs(s, [job], T3 + 60_000, lambda d: storage, Source(HISTORY, MERGES),
                                 clock_ms=lambda: T3, requests={job.name: ["sr-1", "sr-2"]}))
    assert r.error is None
    record = orjson.loads(storage.objects[(BUCKET, r.done_key)])
    assert record["requests"] == ["sr-1", "sr-2"]
    assert orjson.loads(storage.objects[(BUCKET, pointer_key(job))]) == record
    # a sync no request asked for has no such key (its record is the same as before requests existed)
    (r2,) = asyncio.run(run_syncs(s, [job], T3 + 86_400_000 + 60_000, lambda d: storage, Source(HISTORY, MERGES),
                                  clock_ms=lambda: T3))
    assert "requests" not in orjson.loads(storage.objects[(BUCKET, r2.done_key)])


def test_requests_are_kept_longer_than_they_may_wait():
    from stream.topics import topic_specs
    s = settings()
    (spec,) = [t for t in topic_specs(s) if t.name == "cohorts.sync-requests"]
    assert (spec.partitions, spec.config) == (1, {"retention.ms": str(2 * 86_400_000)})
    assert requests.MAX_AGE_MS == 86_400_000
