"""The console's cohort screens: the list and a user's memberships, a cohort's page with its definition, member
counts chart, history and file links, "sync now", a static cohort's upload, and the per-hour charts of the
destinations and dead-letter pages."""

import asyncio
import re
import urllib.parse

import orjson
from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer

from stream.admin.auth import Access
from stream.admin.service import Admin
from stream.clock import FakeClock
from stream.cohorts.requests import MemoryRequestLog
from stream.health import Health
from stream.s3.storage import MemoryStorage
from stream.settings import load_settings
from stream.web import worker_app
from tests.unit.admin.test_cohorts_admin import BUCKET, DONE_AT, T2, T3, TOKEN, settings, sync


def console(storage, steps, admin_of=None):
    admin = Admin(settings(), FakeClock(DONE_AT))
    admin.cohort_storage_of = lambda d: storage
    admin.sync_requests = MemoryRequestLog()
    if admin_of:
        admin_of(admin)
    app = worker_app(Health(), admin=admin, access=Access(TOKEN))

    async def go():
        out = []
        async with TestClient(TestServer(app)) as c:
            await c.post("/console/login", data={"token": TOKEN}, allow_redirects=False)
            page = await (await c.get("/console/cohorts")).text()
            csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)
            for method, path, data in steps:
                if isinstance(data, dict):
                    data = {**data, "csrf": csrf}
                elif isinstance(data, FormData):
                    data.add_field("csrf", csrf)
                r = await c.request(method, path, data=data, allow_redirects=False)
                out.append((r.status, r.headers.get("Location"), r.cookies.get("stream_console_flash"),
                            await r.read()))
        return out
    return asyncio.run(go())


def test_the_cohorts_page_lists_them_and_looks_up_a_users_memberships():
    s, storage = settings(), MemoryStorage()
    sync(s, storage, "pro-buyers", T3 + 60_000)
    (status, _, _, page), (_, _, _, found), (bad, _, _, refused) = console(storage, [
        ("GET", "/console/cohorts", None), ("GET", "/console/cohorts?user_id=u-40", None),
        ("GET", "/console/cohorts?amplitude_id=x", None)])
    page, found, refused = page.decode(), found.decode(), refused.decode()
    assert status == 200
    assert ('<tr><td><a href="/console/cohorts/pro-buyers">pro-buyers</a></td><td>Pro buyers</td><td>424242</td>\n'
            "    <td>rule</td>\n    <td>crm, daily</td></tr>") in page
    assert '<td>static</td>\n    <td><span class="muted">nowhere</span></td></tr>' in page
    key = "cohorts/424242_pro-buyers_2024-03-12T00:00_existing.csv"
    assert ('<tr><td><a href="/console/cohorts/pro-buyers">pro-buyers</a></td><td>crm</td>\n'
            "    <td>2024-03-12T00:00</td><td>40</td><td>u-40</td>\n"
            f'    <td><a href="/console/cohorts/pro-buyers/file?key=cohorts/424242_pro-buyers_2024-03-12T00%3A00_existing.csv">'
            f"<code>{key}</code></a></td></tr>") in found
    assert "Looked at 2 syncs: vips to crm has no completed sync yet." in found
    assert bad == 400 and ('<p class="error" id="lookup-error">400: amplitude_id must be a whole number (an '
                           "amplitude_id, at most 18 digits)</p>") in refused


def test_a_cohorts_page_charts_its_member_counts_and_links_its_files():
    s, storage = settings(), MemoryStorage()
    sync(s, storage, "pro-buyers", T2 + 60_000)
    sync(s, storage, "pro-buyers", T3 + 60_000)
    key = "cohorts/424242_pro-buyers_2024-03-12T00%3A00_existing.csv"
    (status, _, _, page), download, other = console(storage, [
        ("GET", "/console/cohorts/pro-buyers", None), ("GET", f"/console/cohorts/pro-buyers/file?key={key}", None),
        ("GET", "/console/cohorts/pro-buyers/file?key=_stream/cohorts/crm/424242_pro-buyers/latest.json", None)])
    page = page.decode()
    assert status == 200 and "<h1>Cohort pro-buyers: Pro buyers</h1>" in page
    assert '&#34;performed&#34;: &#34;purchase&#34;' in page
    assert ('<svg xmlns="http://www.w3.org/2000/svg" class="chart chart-line" viewBox="0 0 640 200" width="640" '
            'height="200" role="img" aria-label="pro-buyers to crm: members per sync">') in page
    assert page.count("<polyline") == 3
    assert '<circle cx="64.0" cy="98.0" r="3" fill="#0b5cad"><title>members 2024-03-11 00:00: 1</title></circle>' in page
    assert "<tr><td>2024-03-12T00:00</td><td>2</td><td>1</td><td>0</td></tr>" in page
    assert ('<td><a href="/console/cohorts/pro-buyers/file?key=cohorts/424242_pro-buyers_2024-03-12T00%3A00_entering.csv" '
            'title="s3://cohort-bucket/cohorts/424242_pro-buyers_2024-03-12T00:00_entering.csv">entering</a>, ') in page
    assert page.index("<td>2024-03-12T00:00</td><td>crm</td>") < page.index("<td>2024-03-11T00:00</td><td>crm</td>")
    assert '<button type="submit" id="sync-now">Sync now</button>' in page
    assert "<script>" not in page
    assert download[0] == 200 and download[3] == b'amplitudeID,userID,plan\r\n30,"u,30 ""jr""",pro\r\n40,u-40,pro\r\n'
    assert other[0] == 404 and b"is not a file of a completed sync of cohort pro-buyers" in other[3]


def test_sync_now_from_the_console_is_the_admin_apis_action():
    storage, logs = MemoryStorage(), []

    def keep(admin):
        logs.append(admin.sync_requests)
    ((status, location, flash, _), (_, _, _, page), (_, _, _, refused)) = console(storage, [
        ("POST", "/console/cohorts/pro-buyers/sync", {}), ("GET", "/console/cohorts/pro-buyers", None),
        ("POST", "/console/cohorts/nope/sync", {})], keep)
    (record,) = [orjson.loads(v) for _, v in logs[0].records]
    assert (status, location) == (303, "/console/cohorts/pro-buyers")
    assert urllib.parse.unquote(flash.value) == (
        f"sync now of pro-buyers (request {record['id']}): crm: queued; it waits for a worker running the cohorts "
        "stage")
    assert record == {"kind": "request", "id": record["id"], "cohort": "pro-buyers", "destination": None,
                      "syncs": [{"destination": "crm", "routing_key": ""}], "at": DONE_AT, "by": "console"}
    # the cohort's page lists it until it is run
    assert ('<h3>Requested, not run yet</h3>\n<ul id="requested">\n  <li>2024-03-13 03:20:00Z by console (request '
            f'{record["id"]}): crm</li>\n</ul>') in page.decode()
    assert "no cohort &#39;nope&#39; in the settings (cohorts)" in refused.decode()


def test_a_static_cohorts_list_is_uploaded_from_the_console():
    s, storage = settings(), MemoryStorage()
    form = FormData()
    form.add_field("file", b"userID\nu-40\nu-20\n", filename="vips.txt", content_type="text/plain")
    (status, location, flash, _), (_, _, _, page), (bad, _, _, refused), (none, _, _, empty) = console(storage, [
        ("POST", "/console/cohorts/vips/members", form), ("GET", "/console/cohorts/vips", None),
        ("POST", "/console/cohorts/vips/members", {"user_ids": "a\n" + "x" * 1025}),
        ("POST", "/console/cohorts/vips/members", {"user_ids": " "})])
    assert (status, location) == (303, "/console/cohorts/vips")
    assert "2%20user%20ids%20stored%20in%20s3%3A//cohort-bucket/_stream/cohorts/crm/static/424242_vips.json" in \
        flash.value
    assert '<p id="uploaded">2 user ids, uploaded 2024-03-13 03:20:00Z by console.</p>' in page.decode()
    assert 'enctype="multipart/form-data"' in page.decode()
    assert bad == 400 and "user id 2 is 1025 characters long: at most 1024" in refused.decode()
    assert none == 400 and "choose a file or paste the user ids, one per line" in empty.decode()
    (r,) = sync(s, storage, "vips", T3 + 60_000)
    assert storage.objects[(BUCKET, "cohorts/424242_vips_2024-03-12T00:00_existing.csv")] == \
        b"amplitudeID,userID\r\n20,u-20\r\n40,u-40\r\n"


def test_the_destinations_and_dead_letter_pages_chart_their_counts_per_hour():
    hours = [{"hour": "2024-03-10T02:00:00Z", "events": 30, "state": "sealed", "objects": 1, "complete_marker": True,
              "last_error": None},
             {"hour": "2024-03-10T00:00:00Z", "events": 10, "state": "sealed", "objects": 1, "complete_marker": True,
              "last_error": None}]

    def fake(admin):
        async def status(hours_=48):
            return {"generated_at": "now", "destinations": [
                {"destination": "main", "exports": "events", "enabled": True, "state": "ok", "sealed_through": None,
                 "last_error": None, "data_lost": [], "hours": hours}]}

        async def dead_letters(hours_=24, samples=20):
            return {"hours": 24, "total": 3, "by_reason": [{"reason": "invalid", "count": 3, "sources": {},
                                                             "first_at": 0, "last_at": 0, "latest": None}],
                    "by_hour": [{"hour": "2024-03-10T05", "reasons": {"invalid": 2, "too_large": 1}}], "samples": []}
        admin.status, admin.dead_letters = status, dead_letters
        admin.settings = load_settings(None, projects=[{"id": 424242}], destinations=[
            {"name": "main", "project": 424242, "bucket": "events-bucket"}])
    (_, _, _, dests), (_, _, _, dead) = console(MemoryStorage(), [("GET", "/console/", None),
                                                                  ("GET", "/console/deadletters", None)], fake)
    dests, dead = dests.decode(), dead.decode()
    assert 'aria-label="main: events per hour"' in dests
    # three hours, the one between without exports at 0
    assert dests.count('<rect class="bar"') == 3
    assert ('<rect class="bar" x="78.8" y="142.4" width="150.4" height="29.6" fill="#0b5cad"><title>events '
            "03-10 00h: 10</title></rect>") in dests
    assert "<title>events 03-10 01h: 0</title>" in dests
    assert ('<rect class="bar" x="454.8" y="83.2" width="150.4" height="88.8" fill="#0b5cad"><title>events '
            "03-10 02h: 30</title></rect>") in dests
    assert ('<rect class="bar" x="116.4" y="83.2" width="451.2" height="88.8" fill="#0b5cad"><title>dead letters '
            "03-10 05h: 3</title></rect>") in dead
    assert 'aria-label="Dead letters per hour"' in dead
