"""Cohorts in the admin API: the definitions, a cohort's history and member counts read from its sync records, its
files, a user's memberships from the latest existing files, and a static cohort's uploaded list, synced like any
cohort."""

import asyncio

import orjson
from aiohttp.test_utils import TestClient, TestServer

from stream.admin.auth import Access
from stream.admin.service import Admin
from stream.clock import FakeClock
from stream.cohorts.requests import MemoryRequestLog
from stream.cohorts.sync import jobs_of, run_syncs
from stream.health import Health
from stream.s3.storage import MemoryStorage
from stream.settings import load_settings
from stream.web import worker_app
from tests.unit.cohorts.test_sync import BUCKET, HISTORY, MERGES, T1, T2, T3, P, Source

TOKEN = "a-test-admin-token-of-32-chars-or-more"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DONE_AT = 1_710_300_000_000
RULE = {"and": [{"performed": "purchase", "within_days": 1}, {"user_property": "plan", "op": "=", "value": "pro"}]}


def settings():
    return load_settings(None, kafka={"bootstrap_servers": "127.0.0.1:9"}, admin={"token": TOKEN},
                         projects=[{"id": P}], cohorts=[
                             {"id": "pro-buyers", "project": P, "name": "Pro buyers", "rule": RULE},
                             {"id": "vips", "project": P, "name": "VIPs", "static": True},
                             {"id": "idle", "project": P, "name": "Idle", "static": True}],
                         cohort_destinations=[{"name": "crm", "bucket": BUCKET, "encryption": {"type": "none"},
                                               "syncs": [{"cohort": "pro-buyers", "cadence": "daily",
                                                          "properties": ["plan"]},
                                                         {"cohort": "vips", "cadence": "daily"}]}])


def sync(s, storage, cohort, now):
    return asyncio.run(run_syncs(s, jobs_of(s, cohort), now, lambda d: storage, Source(HISTORY, MERGES),
                                 clock_ms=lambda: DONE_AT))


def serve(s, storage, calls):
    admin = Admin(s, FakeClock(DONE_AT))
    admin.cohort_storage_of = lambda d: storage
    admin.sync_requests = MemoryRequestLog()
    app = worker_app(Health(), admin=admin, access=Access(TOKEN))

    async def go():
        out = []
        async with TestClient(TestServer(app)) as c:
            for method, path, body, headers in calls:
                r = await c.request(method, path, headers={**AUTH, **headers}, data=body)
                raw = await r.read()
                out.append((r.status, orjson.loads(raw) if r.content_type == "application/json" else
                            (r.content_type, r.headers.get("Content-Disposition"), raw)))
        return out
    return asyncio.run(go())


def get(path):
    return "GET", path, None, {}


def test_the_definitions_are_listed_with_their_syncs():
    ((status, doc),) = serve(settings(), MemoryStorage(), [get("/admin/cohorts")])
    sync_doc = {"destination": "crm", "bucket": BUCKET, "routing_key": "", "cadence": "daily", "time_zone": "UTC"}
    assert (status, doc) == (200, {"cohorts": [
        {"id": "pro-buyers", "project": P, "name": "Pro buyers", "static": False,
         "definition": {"id": "pro-buyers", "project": P, "name": "Pro buyers", "rule": RULE},
         "syncs": [{**sync_doc, "properties": ["plan"]}]},
        {"id": "vips", "project": P, "name": "VIPs", "static": True,
         "definition": {"id": "vips", "project": P, "name": "VIPs", "static": True},
         "syncs": [{**sync_doc, "properties": []}]},
        {"id": "idle", "project": P, "name": "Idle", "static": True,
         "definition": {"id": "idle", "project": P, "name": "Idle", "static": True}, "syncs": []}]})


def test_a_cohorts_history_counts_and_files_come_from_its_sync_records():
    s, storage = settings(), MemoryStorage()
    sync(s, storage, "pro-buyers", T1 + 60_000)
    sync(s, storage, "pro-buyers", T2 + 60_000)
    # a failed attempt recorded for the third day
    storage.objects[(BUCKET, "_stream/cohorts/crm/424242_pro-buyers/failed/2024-03-12T00-00.json")] = orjson.dumps(
        {"cohort": "pro-buyers", "project": P, "destination": "crm", "routing_key": "", "scheduled_ms": T3,
         "stamp": "2024-03-12T00:00", "reason": "AccessDenied", "error": "ClientError: denied",
         "failed_at_ms": DONE_AT})
    key = "cohorts/424242_pro-buyers_2024-03-11T00:00_exiting.csv"
    (status, doc), file, other, nokey, nope = serve(s, storage, [
        get("/admin/cohorts/pro-buyers"), get(f"/admin/cohorts/pro-buyers/file?key={key}"),
        get("/admin/cohorts/pro-buyers/file?key=_stream/cohorts/crm/424242_pro-buyers/latest.json"),
        get("/admin/cohorts/pro-buyers/file"), get("/admin/cohorts/nope")])
    keys = {t: f"cohorts/424242_pro-buyers_{{}}_{t}.csv" for t in ("entering", "exiting", "existing")}
    assert status == 200
    assert doc["history"] == [
        {"destination": "crm", "routing_key": "", "stamp": "2024-03-10T00:00", "scheduled_ms": T1,
         "state": "complete", "members": 2, "entering": 2, "exiting": 0, "previous": None,
         "completed_at_ms": DONE_AT, "bucket": BUCKET, "keys": {t: k.format("2024-03-10T00:00") for t, k in keys.items()}},
        {"destination": "crm", "routing_key": "", "stamp": "2024-03-11T00:00", "scheduled_ms": T2,
         "state": "complete", "members": 1, "entering": 1, "exiting": 2, "previous": "2024-03-10T00:00",
         "completed_at_ms": DONE_AT, "bucket": BUCKET, "keys": {t: k.format("2024-03-11T00:00") for t, k in keys.items()}},
        {"destination": "crm", "routing_key": "", "stamp": "2024-03-12T00:00", "scheduled_ms": T3,
         "state": "failed", "reason": "AccessDenied", "error": "ClientError: denied", "failed_at_ms": DONE_AT}]
    assert doc["counts"] == [{"destination": "crm", "routing_key": "", "points": [
        {"stamp": "2024-03-10T00:00", "scheduled_ms": T1, "members": 2, "entering": 2, "exiting": 0},
        {"stamp": "2024-03-11T00:00", "scheduled_ms": T2, "members": 1, "entering": 1, "exiting": 2}]}]
    assert "uploaded" not in doc and doc["name"] == "Pro buyers"
    assert file == (200, ("text/csv", 'attachment; filename="424242_pro-buyers_2024-03-11T00:00_exiting.csv"',
                          b"amplitudeID,userID,plan\r\n10,u-10,pro\r\n20,u-20,free\r\n"))
    assert other == (404, {"error": "'_stream/cohorts/crm/424242_pro-buyers/latest.json' is not a file of a "
                                    "completed sync of cohort pro-buyers: the cohort's history lists its files"})
    assert nokey == (400, {"error": "give key: the S3 key of one of the cohort's files (its history lists them)"})
    assert nope == (404, {"error": "no cohort 'nope' in the settings (cohorts: pro-buyers, vips, idle)"})


def test_a_users_memberships_are_read_from_the_latest_existing_files():
    s, storage = settings(), MemoryStorage()
    sync(s, storage, "pro-buyers", T2 + 60_000)
    sync(s, storage, "pro-buyers", T3 + 60_000)
    by_aid, by_user, absent, both, neither, project = serve(s, storage, [
        get("/admin/memberships?amplitude_id=30"), get("/admin/memberships?user_id=u-40"),
        get("/admin/memberships?user_id=u-10"), get("/admin/memberships?user_id=u-40&amplitude_id=40"),
        get("/admin/memberships"), get("/admin/memberships?user_id=u-40&project=7")])
    checked = [{"cohort": "pro-buyers", "destination": "crm", "routing_key": "", "stamp": "2024-03-12T00:00"},
               {"cohort": "vips", "destination": "crm", "routing_key": "", "stamp": None}]
    existing = "cohorts/424242_pro-buyers_2024-03-12T00:00_existing.csv"
    member = {"cohort": "pro-buyers", "destination": "crm", "routing_key": "", "name": "Pro buyers", "project": P,
              "stamp": "2024-03-12T00:00", "bucket": BUCKET, "key": existing}
    assert by_aid == (200, {"user_id": None, "amplitude_id": 30, "project": None, "checked": checked,
                            "memberships": [{**member, "amplitude_id": 30, "user_id": 'u,30 "jr"'}]})
    assert by_user == (200, {"user_id": "u-40", "amplitude_id": None, "project": None, "checked": checked,
                             "memberships": [{**member, "amplitude_id": 40, "user_id": "u-40"}]})
    assert absent == (200, {"user_id": "u-10", "amplitude_id": None, "project": None, "checked": checked,
                            "memberships": []})
    error = {"error": "give user_id or amplitude_id (one of them): the user to look up"}
    assert both == neither == (400, error)
    assert project == (200, {"user_id": "u-40", "amplitude_id": None, "project": 7, "checked": [],
                             "memberships": []})


def test_a_static_cohorts_uploaded_list_is_stored_in_its_bucket_and_synced_as_three_files():
    s, storage = settings(), MemoryStorage()
    ok, text, rule, nowhere, bad, not_json, (_, doc) = serve(s, storage, [
        ("PUT", "/admin/cohorts/vips/members", orjson.dumps({"user_ids": ["u-40", "u-20", "nobody", "u-20"]}),
         {"Content-Type": "application/json"}),
        ("PUT", "/admin/cohorts/vips/members", b"userID\nu-40\r\n\n u-20 \nnobody\n", {"Content-Type": "text/plain"}),
        ("PUT", "/admin/cohorts/pro-buyers/members", b'{"user_ids": ["a"]}', {}),
        ("PUT", "/admin/cohorts/idle/members", b'{"user_ids": ["a"]}', {}),
        ("PUT", "/admin/cohorts/vips/members", b'{"user_ids": ["a", ""]}', {}),
        ("PUT", "/admin/cohorts/vips/members", b"u-1", {"Content-Type": "application/json"}),
        get("/admin/cohorts/vips")])
    key = "_stream/cohorts/crm/static/424242_vips.json"
    answer = {"cohort": "vips", "project": P, "members": 3, "uploaded_at_ms": DONE_AT,
              "stored": [f"s3://{BUCKET}/{key}"]}
    assert ok == (200, answer) and text == (200, answer)
    assert orjson.loads(storage.objects[(BUCKET, key)]) == {
        "cohort": "vips", "project": P, "user_ids": ["nobody", "u-20", "u-40"], "uploaded_at_ms": DONE_AT,
        "by": "api"}
    assert rule == (409, {"error": "cohort pro-buyers is defined by a rule, not a list: only a cohort with static: "
                                   "true takes uploaded members"})
    assert nowhere == (409, {"error": "cohort idle is synced to no cohort destination, and its list is kept in the "
                                      "buckets it is synced to: add a sync of it (cohort_destinations[].syncs) first"})
    assert bad == (400, {"error": "user id 2 is '': every member must be a non-empty string (a user_id)"})
    assert not_json[0] == 400 and not_json[1]["error"].startswith("the body is not JSON: ")
    assert doc["uploaded"] == {"members": 3, "uploaded_at_ms": DONE_AT, "by": "api"} and doc["history"] == []

    (r,) = sync(s, storage, "vips", T3 + 60_000)
    assert (r.error, r.members, r.entering, r.exiting) == (None, 2, 2, 0)
    files = {k: v for (_, k), v in storage.objects.items() if "vips_2024" in k}
    # 20 and 40 have events and a listed user_id (41 was merged into 40); "nobody" has no events: no amplitudeID
    assert files == {"cohorts/424242_vips_2024-03-12T00:00_entering.csv": b"amplitudeID,userID\r\n20,u-20\r\n"
                                                                         b"40,u-40\r\n",
                     "cohorts/424242_vips_2024-03-12T00:00_exiting.csv": b"amplitudeID,userID\r\n",
                     "cohorts/424242_vips_2024-03-12T00:00_existing.csv": b"amplitudeID,userID\r\n20,u-20\r\n"
                                                                         b"40,u-40\r\n"}


def test_a_static_cohort_before_any_upload_syncs_no_member():
    s, storage = settings(), MemoryStorage()
    (r,) = sync(s, storage, "vips", T3 + 60_000)
    assert (r.error, r.members, r.entering, r.exiting) == (None, 0, 0, 0)
    assert storage.objects[(BUCKET, "cohorts/424242_vips_2024-03-12T00:00_existing.csv")] == b"amplitudeID,userID\r\n"


def test_the_openapi_description_has_the_cohort_routes():
    from openapi_spec_validator import validate

    from stream.admin.openapi import OPENAPI
    validate(OPENAPI)
    assert {p: sorted(OPENAPI["paths"][p]) for p in OPENAPI["paths"] if "cohort" in p or "membership" in p} == {
        "/admin/cohorts": ["get"], "/admin/cohorts/{id}": ["get"], "/admin/cohorts/{id}/file": ["get"],
        "/admin/cohorts/{id}/members": ["put"], "/admin/cohorts/{id}/syncs": ["post"], "/admin/memberships": ["get"]}
    members = OPENAPI["paths"]["/admin/cohorts/{id}/members"]["put"]
    assert sorted(members["requestBody"]["content"]) == ["application/json", "text/plain"]
    assert sorted(members["responses"]) == ["200", "400", "401", "404", "409", "429", "502"]
    assert list(OPENAPI["paths"]["/admin/cohorts/{id}/file"]["get"]["responses"]["200"]["content"]) == ["text/csv"]
    assert [p["name"] for p in OPENAPI["paths"]["/admin/memberships"]["get"]["parameters"]] == [
        "user_id", "amplitude_id", "project"]
    sync_now = OPENAPI["paths"]["/admin/cohorts/{id}/syncs"]["post"]
    assert sorted(sync_now["responses"]) == ["202", "400", "401", "404", "429", "502"]
    assert sync_now["responses"]["202"]["content"]["application/json"]["schema"]["required"] == [
        "request", "cohort", "destination", "syncs", "runs_on", "waiting_for_worker", "note"]
