"""GET /admin/profiles/{project}/{user_id} and the console's profiles page without a broker: the parameters are
checked before anything is read (400 naming them), a project without a source of profiles is a 404 saying so."""

import asyncio

import orjson
from aiohttp.test_utils import TestClient, TestServer

from stream.admin.auth import Access
from stream.admin.openapi import OPENAPI
from stream.admin.service import Admin
from stream.health import Health
from stream.settings import load_settings
from stream.web import worker_app

TOKEN = "a-test-admin-token-of-32-chars-or-more"
CONVERTER = {"converterConfig": {"convertToAmplitudeFunc": {"user_id": "user", "user_properties": {"plan": "plan"}}}}


def settings():
    return load_settings(None, kafka={"bootstrap_servers": "127.0.0.1:9"}, admin={"token": TOKEN},
                         projects=[{"id": 7}, {"id": 8}],
                         sources=[{"name": "people", "project": 7, "bucket": "bkt", "converter": CONVERTER,
                                   "data_type": "profiles", "strategy": "mirror"}])


def app():
    return worker_app(Health(), admin=Admin(settings()), access=Access(TOKEN))


def test_bad_profile_lookups_are_answered_400_or_404_naming_why_before_anything_is_read():
    async def go():
        async with TestClient(TestServer(app())) as c:
            out = []
            for path in ("/admin/profiles/x/u", "/admin/profiles/-1/u", "/admin/profiles/4294967296/u",
                         "/admin/profiles/7/%20", "/admin/profiles/7/" + "u" * 1025, "/admin/profiles/8/u",
                         "/admin/profiles/9/u"):
                r = await c.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
                out.append((r.status, orjson.loads(await r.read())["error"]))
            r = await c.get("/admin/profiles/7/u")
            out.append((r.status,))
            return out
    assert asyncio.run(go()) == [
        (400, "project must be a whole number (a project id), 0 to 4294967295"),
        (400, "project must be between 0 and 4294967295"),
        (400, "project must be between 0 and 4294967295"),
        (400, "user_id must not be empty: give the user_id of the profile to show"),
        (400, "user_id must be at most 1024 characters"),
        (404, "project 8 has no source of profiles (data_type: profiles), so no profiles are kept for it; projects "
              "with one: 7"),
        (404, "project 9 has no source of profiles (data_type: profiles), so no profiles are kept for it; projects "
              "with one: 7"),
        (401,)]


def test_the_openapi_description_has_the_profile_lookup():
    op = OPENAPI["paths"]["/admin/profiles/{project}/{user_id}"]["get"]
    assert sorted(op["responses"]) == ["200", "400", "401", "404", "429", "503"]
    assert [(p["name"], p["in"], p["schema"]) for p in op["parameters"]] == [
        ("project", "path", {"type": "integer", "minimum": 0, "maximum": 4294967295}),
        ("user_id", "path", {"type": "string", "maxLength": 1024})]


def test_the_console_page_shows_a_refused_lookup_with_its_status_and_the_navigation_names_it():
    async def go():
        async with TestClient(TestServer(worker_app(Health(), admin=Admin(settings()), access=Access(TOKEN)))) as c:
            await c.post("/console/login", data={"token": TOKEN}, allow_redirects=False)
            empty = await c.get("/console/profiles")
            bad = await c.get("/console/profiles?project=7&user_id=")
            other = await c.get("/console/profiles?project=8&user_id=u")
            return [(r.status, await r.text()) for r in (empty, bad, other)]
    (s0, empty), (s1, bad), (s2, other) = asyncio.run(go())
    assert s0 == 200 and 'id="profile-error"' not in empty and '<option>7</option>' in empty
    assert '<a href="/console/profiles" aria-current="page">Profiles</a>' in empty
    assert "<script src=\"/console/static/console.js\">" in empty and "https://" not in empty
    assert s1 == 400 and ('<p class="error" role="alert" id="profile-error">400: user_id must not be empty: give '
                          'the user_id of the profile to show</p>') in bad
    assert s2 == 404 and "404: project 8 has no source of profiles" in other
    assert '<option selected>8</option>' not in other and '<option>7</option>' in other


def test_a_lookup_whose_read_of_the_changelog_stalls_is_answered_503_saying_so(monkeypatch):
    """The broker fetches nothing within the lookup's bound (stream.kafka.ReadStalled): 503 and why, not a 404 that
    the user has no profile (which a read cut short would have answered)."""
    from stream.admin import profiles
    from stream.kafka import ReadStalled
    stalled = ("nothing was fetched for 20s while reading to the end: it-profiles-applied-changelog[1] at offset 0 "
               "of 12; the broker is slow or unreachable (see its logs and the worker's connection errors), try "
               "again once it answers")

    async def read_profile(settings, project, user_id):
        raise ReadStalled(stalled)
    monkeypatch.setattr(profiles, "read_profile", read_profile)

    async def go():
        async with TestClient(TestServer(app())) as c:
            r = await c.get("/admin/profiles/7/u", headers={"Authorization": f"Bearer {TOKEN}"})
            return r.status, orjson.loads(await r.read())
    assert asyncio.run(go()) == (503, {"error": f"the profile of user 'u' in project 7 could not be read: {stalled}"})
