"""The console's mounting and sessions without a deployment: served only with a token, its cookie signed, its
CSRF token per session, its static files and security headers."""

import asyncio
import re

from aiohttp.test_utils import TestClient, TestServer

from stream.admin.console import COOKIE, SESSION_S, Console
from stream.health import Health
from stream.web import worker_app


class NoAdmin:
    settings = None


def test_the_console_is_served_only_when_a_token_is_configured_and_signs_in_with_it():
    async def go(token):
        app = worker_app(Health(), token=token, admin=NoAdmin())
        async with TestClient(TestServer(app)) as c:
            login = await c.get("/console/login")
            page = await login.text()
            if token is None:
                return login.status, None, None, None
            refused = await c.post("/console/login", data={"token": "nope"}, allow_redirects=False)
            ok = await c.post("/console/login", data={"token": token}, allow_redirects=False)
            css = await c.get("/console/static/console.css")
            other = await c.get("/console/static/stream.yaml")
            return login.status, (page, dict(login.headers)), (refused.status, ok.status, ok.headers.get("Location"),
                                                              ok.cookies[COOKIE]), (css.status, other.status)
    assert asyncio.run(go(None))[0] == 401                     # no token: no console, and the guard's refusal
    status, (page, headers), (refused, ok, location, cookie), (css, other) = asyncio.run(go("t0ken-1"))
    assert status == 200 and '<label for="token">' in page and 'name="viewport"' in page
    assert "form-action 'self'" in headers["Content-Security-Policy"] and headers["X-Frame-Options"] == "DENY"
    assert (refused, ok, location) == (401, 303, "/console/")
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/console"
    assert cookie["max-age"] == str(SESSION_S)
    assert re.fullmatch(r"\d+\.[\w-]+\.[0-9a-f]{64}", cookie.value)
    assert (css, other) == (200, 404)


def test_a_session_is_signed_with_the_token_and_its_csrf_token_is_its_own():
    a, b = Console(NoAdmin(), "token-a"), Console(NoAdmin(), "token-b")

    class Req:
        def __init__(self, value):
            self.cookies = {COOKIE: value}
    s1, s2 = a.new_session(), a.new_session()
    n1, n2 = a.session(Req(s1)), a.session(Req(s2))
    assert n1 and n2 and n1 != n2 and a.csrf(n1) != a.csrf(n2)
    assert Console(NoAdmin(), "token-a").session(Req(s1)) == n1      # any worker with the token accepts it
    assert b.session(Req(s1)) is None                                  # another token (a rotated one) does not
    issued, nonce, sig = s1.split(".")
    assert a.session(Req(f"{int(issued) + 1}.{nonce}.{sig}")) is None              # tampered
    old = f"{int(issued) - SESSION_S * 1000 - 1}.{nonce}"
    assert a.session(Req(f"{old}.{a._sign('session:' + old)}")) is None            # expired
    asyncio.run(a.revoke(n1, int(issued)))
    assert a.session(Req(s1)) is None and a.session(Req(s2)) == n2
