"""Every admin query parameter is checked before anything is read: a 400 naming it, within the documented bounds."""

import asyncio

import orjson
import pytest

from aiohttp.test_utils import TestClient, TestServer

from stream.admin.api import bool_param, int_param, text_param
from stream.admin.auth import Access
from stream.admin.openapi import OPENAPI
from stream.admin.service import Admin, AdminError
from stream.health import Health
from stream.settings import load_settings
from stream.web import worker_app

TOKEN = "a-test-admin-token-of-32-chars-or-more"


def test_whole_number_and_boolean_parameters():
    assert int_param(None, "samples", 20, 0, 500, "x") == 20
    assert int_param(" 7 ", "samples", 20, 0, 500, "x") == 7
    for bad in ("x", "", "1.5", "1e3", "٣", "9" * 40, "0x10"):
        with pytest.raises(AdminError, match="^samples must be a whole number \\(x\\), 0 to 500$"):
            int_param(bad, "samples", 20, 0, 500, "x")
    for bad in ("-1", "501"):
        with pytest.raises(AdminError, match="^samples must be between 0 and 500$"):
            int_param(bad, "samples", 20, 0, 500, "x")
    assert [bool_param(v, "e") for v in (None, "true", "1", "FALSE", "0")] == [False, True, True, False, False]
    with pytest.raises(AdminError, match="^e must be true or false$"):
        bool_param("yes", "e")
    with pytest.raises(AdminError, match="^key must be at most 1024 characters$"):
        text_param("k" * 1025, "key")


def test_bad_admin_parameters_are_answered_400_naming_them_before_anything_is_read(tmp_path):
    settings = load_settings(None, kafka={"bootstrap_servers": "127.0.0.1:9"}, admin={"token": TOKEN})
    app = worker_app(Health(), status=lambda hours: {"hours": hours}, admin=Admin(settings),
                     access=Access(TOKEN))

    async def go():
        async with TestClient(TestServer(app)) as c:
            out = []
            for path in ("/admin/deadletters?samples=x", "/admin/deadletters?samples=501",
                         "/admin/deadletters?hours=0", "/admin/status?hours=1e9", "/exports/status?hours=x",
                         "/admin/destinations/main/history?hours=-3", "/admin/imports/s/preview?rows=x",
                         "/admin/destinations/main/policy?enforce_encryption=maybe",
                         "/admin/backfills?destination=" + "d" * 1025):
                r = await c.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
                out.append((r.status, orjson.loads(await r.read())["error"]))
            r = await c.post("/admin/backfills", headers={"Authorization": f"Bearer {TOKEN}"},
                             data=orjson.dumps({"destination": "d", "from": "2024-03-01T00", "to": "2024-03-02T00",
                                                "source": ["auto"]}))
            out.append((r.status, orjson.loads(await r.read())["error"]))
            return out
    assert asyncio.run(go()) == [
        (400, "samples must be a whole number (the latest dead letters to show), 0 to 500"),
        (400, "samples must be between 0 and 500"),
        (400, "hours must be between 1 and 8784"),
        (400, "hours must be a whole number (the number of latest hours to list), 1 to 8784"),
        (400, "hours must be a whole number (the number of latest hours to list), 1 to 8784"),
        (400, "hours must be between 1 and 8784"),
        (400, "rows must be a whole number (the rows to preview), 1 to 100"),
        (400, "enforce_encryption must be true or false"),
        (400, "destination must be at most 1024 characters"),
        (400, "source must be auto, accepted or archive")]


def test_the_openapi_description_states_the_bounds():
    params = {(path, p["name"]): p["schema"] for path, ops in OPENAPI["paths"].items() for op in ops.values()
              for p in op.get("parameters", ())}
    assert params[("/admin/deadletters", "samples")] == {"type": "integer", "minimum": 0, "maximum": 500,
                                                         "default": 20}
    assert params[("/admin/deadletters", "hours")] == {"type": "integer", "minimum": 1, "maximum": 8784}
    assert params[("/admin/imports/{name}/preview", "key")] == {"type": "string", "maxLength": 1024}
    assert sorted(OPENAPI["paths"]["/admin/deadletters"]["get"]["responses"]) == ["200", "400", "401", "429"]
    assert all("429" in op["responses"] for ops in OPENAPI["paths"].values() for op in ops.values())
