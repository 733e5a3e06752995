"""Guessing the admin token is limited per client address; forwarded headers are believed from trusted proxies
only; the console's cookies are Secure behind a TLS-terminating proxy; the probes name parts, never errors."""

import asyncio
import ipaddress

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY

from stream.admin.auth import Access, client_address, networks, secure_cookies
from stream.admin.console import COOKIE, FLASH, SESSION_S
from stream.admin.sessions import Revoked, decode, record
from stream.attempts import FailedAttempts
from stream.clock import FakeClock
from stream.errors import ConfigError
from stream.health import Health
from stream.settings import load_settings
from stream.web import worker_app

TOKEN = "a-test-admin-token-of-32-chars-or-more"
PROXIES = networks(["10.0.0.0/8", "127.0.0.1"])


class NoAdmin:
    settings = None


def failures(surface, outcome):
    return REGISTRY.get_sample_value("stream_auth_failures_total", {"surface": surface, "outcome": outcome}) or 0


def test_the_client_address_comes_from_x_forwarded_for_only_through_trusted_proxies():
    assert client_address("203.0.113.9", "198.51.100.1", PROXIES) == "203.0.113.9"          # not a proxy: ignored
    assert client_address("10.1.2.3", "198.51.100.1", PROXIES) == "198.51.100.1"
    # the client's own header value is further left: the last hop before the trusted proxies counts
    assert client_address("10.1.2.3", "1.1.1.1, 198.51.100.1, 10.9.9.9", PROXIES) == "198.51.100.1"
    assert client_address("10.1.2.3", "10.7.7.7, 10.9.9.9", PROXIES) == "10.7.7.7"
    assert client_address("10.1.2.3", None, PROXIES) == "10.1.2.3"
    assert client_address("10.1.2.3", "198.51.100.1", ()) == "10.1.2.3"
    assert client_address(None, None, PROXIES) == "unknown"
    assert networks(["10.0.0.0/8"]) == (ipaddress.ip_network("10.0.0.0/8"),)


def test_cookies_are_secure_over_tls_behind_a_trusted_proxy_saying_https_or_when_forced():
    assert secure_cookies(True, "203.0.113.9", None, (), False) is True
    assert secure_cookies(False, "203.0.113.9", None, (), False) is False
    assert secure_cookies(False, "10.1.2.3", "https", PROXIES, False) is True
    assert secure_cookies(False, "10.1.2.3", "HTTPS, http", PROXIES, False) is True
    assert secure_cookies(False, "10.1.2.3", "http", PROXIES, False) is False
    assert secure_cookies(False, "203.0.113.9", "https", PROXIES, False) is False           # not a trusted proxy
    assert secure_cookies(False, "203.0.113.9", None, (), True) is True


def test_a_short_admin_token_is_refused_at_load_with_the_command_that_makes_a_good_one(tmp_path):
    path = tmp_path / "stream.yaml"
    path.write_text(orjson.dumps({"admin": {"token": "x" * 31}}).decode())
    with pytest.raises(ConfigError) as refused:
        load_settings(path)
    assert str(refused.value) == (
        f"invalid configuration in {path}: admin.token: Value error, the admin token has 31 characters, fewer "
        "than 32: a short one is guessed; make one with python3 -c 'import secrets; "
        "print(secrets.token_urlsafe(32))' (or openssl rand -base64 32) and set it in STREAM_ADMIN__TOKEN")
    path.write_text(orjson.dumps({"admin": {"token": "x" * 32, "trusted_proxies": ["10.0.0.0/8"]}}).decode())
    assert load_settings(path).admin.token.get_secret_value() == "x" * 32
    path.write_text(orjson.dumps({"admin": {"token": "x" * 32, "trusted_proxies": ["ten"]}}).decode())
    with pytest.raises(ConfigError, match=r"admin.trusted_proxies: Value error, 'ten' is not an address or a CIDR"):
        load_settings(path)


def test_failed_bearer_tokens_of_an_address_are_answered_429_before_the_token_is_compared():
    clock = FakeClock(1_000_000)
    access = Access(TOKEN, FailedAttempts(3, 60), networks(["127.0.0.1"]), clock=clock)
    app = worker_app(Health(), status=lambda hours: {"hours": hours}, access=access)
    refused, limited = failures("admin", "refused"), failures("admin", "limited")

    async def go():
        async with TestClient(TestServer(app)) as c:
            async def get(token, forwarded_for="198.51.100.1"):
                r = await c.get("/exports/status?hours=2", headers={"Authorization": f"Bearer {token}",
                                                                    "X-Forwarded-For": forwarded_for})
                return r.status, r.headers.get("Retry-After"), orjson.loads(await r.read())
            for _ in range(5):                                  # no credential at all: refused, not a guess
                r = await c.get("/favicon.ico", headers={"X-Forwarded-For": "198.51.100.1"})
                assert r.status == 401
            out = [await get("wrong") for _ in range(3)]
            out.append(await get(TOKEN))                        # the right token, unseen: the address waits
            out.append(await get(TOKEN, "198.51.100.2"))       # another address is not held up
            clock.advance(20_000)                              # one failure drained
            out.append(await get(TOKEN))
            return out
    out = asyncio.run(go())
    assert out[:3] == [(401, None, {"error": "unauthorized", "detail": "the bearer token is not the admin token"})] * 3
    assert out[3] == (429, "20", {"error": "too many requests", "detail": (
        "too many failed authentications from this address: try again in 20 s, with the admin token (admin.token)")})
    assert out[4] == (200, None, {"hours": 2})
    assert out[5] == (200, None, {"hours": 2})
    assert (failures("admin", "refused") - refused, failures("admin", "limited") - limited) == (8, 1)


def test_refused_console_sign_ins_are_limited_too():
    clock = FakeClock(1_000_000)
    access = Access(TOKEN, FailedAttempts(2, 60), clock=clock)
    app = worker_app(Health(), admin=NoAdmin(), access=access)
    refused, limited = failures("console", "refused"), failures("console", "limited")

    async def go():
        async with TestClient(TestServer(app)) as c:
            out = []
            for token in ("nope", "nope", TOKEN):
                r = await c.post("/console/login", data={"token": token}, allow_redirects=False)
                out.append((r.status, r.headers.get("Retry-After"), "login-error" in await r.text()))
            clock.advance(30_000)
            r = await c.post("/console/login", data={"token": TOKEN}, allow_redirects=False)
            out.append((r.status, r.headers.get("Location")))
            return out
    assert asyncio.run(go()) == [(401, None, True), (401, None, True), (429, "30", True), (303, "/console/")]
    assert (failures("console", "refused") - refused, failures("console", "limited") - limited) == (2, 1)


def test_the_console_cookies_are_secure_behind_a_trusted_proxy_that_says_https():
    def set_cookies(access, headers, publish=None):
        app = worker_app(Health(), admin=NoAdmin(), access=access, revoked=Revoked(SESSION_S * 1000),
                         publish=publish)

        async def go():
            async with TestClient(TestServer(app)) as c:
                r = await c.post("/console/login", data={"token": TOKEN}, headers=headers, allow_redirects=False)
                login = r.headers.getall("Set-Cookie")
                c.session.cookie_jar.clear()                  # sent by hand: the jar keeps Secure ones for https
                signed_in = {**headers, "Cookie": login[0].split(";")[0]}
                page = await (await c.get("/console/cohorts", headers=signed_in)).text()
                csrf = page.split('name="csrf" value="')[1].split('"')[0]
                r = await c.post("/console/logout", data={"csrf": csrf}, headers=signed_in, allow_redirects=False)
                return login, sorted(r.headers.getall("Set-Cookie"))
        return asyncio.run(go())

    async def unreachable(rec):
        raise ConnectionError("no broker")
    proxy = Access(TOKEN, trusted=networks(["127.0.0.1"]))
    (login,), logout = set_cookies(proxy, {"X-Forwarded-Proto": "https"}, unreachable)
    value = login.split(";")[0]
    assert login == f"{value}; HttpOnly; Max-Age={SESSION_S}; Path=/console; SameSite=Strict; Secure"
    assert value.startswith(f"{COOKIE}=")
    flash = logout[1].split(";")[0]
    assert flash.startswith(f"{FLASH}=logged%20out%20on%20this%20worker")
    assert logout == [f'{COOKIE}=""; expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; Max-Age=0; Path=/console; '
                      "SameSite=Strict; Secure",
                      f"{flash}; HttpOnly; Path=/console; SameSite=Strict; Secure"]
    (login,), logout = set_cookies(proxy, {"X-Forwarded-Proto": "http"}, unreachable)
    assert login == f"{login.split(';')[0]}; HttpOnly; Max-Age={SESSION_S}; Path=/console; SameSite=Strict"
    assert logout[1] == f"{logout[1].split(';')[0]}; HttpOnly; Path=/console; SameSite=Strict"
    (login,), _ = set_cookies(Access(TOKEN), {"X-Forwarded-Proto": "https"})          # no trusted proxy
    assert not login.endswith("Secure")
    (login,), _ = set_cookies(Access(TOKEN, force_secure=True), {})
    assert login.endswith("; Secure")


def test_a_logout_is_published_for_the_other_workers_and_their_revocations_are_followed():
    published = []

    async def publish(rec):
        published.append(rec)
    revoked = Revoked(SESSION_S * 1000)
    app = worker_app(Health(), admin=NoAdmin(), access=Access(TOKEN), revoked=revoked, publish=publish)

    async def go():
        async with TestClient(TestServer(app)) as c:
            await c.post("/console/login", data={"token": TOKEN}, allow_redirects=False)
            page = await (await c.get("/console/cohorts")).text()
            csrf = page.split('name="csrf" value="')[1].split('"')[0]
            await c.post("/console/logout", data={"csrf": csrf}, allow_redirects=False)
    asyncio.run(go())
    ((key, value),) = published
    nonce, issued = decode(value)
    assert key == nonce.encode() and nonce in revoked
    # a worker that has not read the revocations yet lets no session in
    starting = worker_app(Health(), admin=NoAdmin(), access=Access(TOKEN), revoked=Revoked(1000, ready=False))

    async def before_reading():
        async with TestClient(TestServer(starting)) as c:
            r = await c.post("/console/login", data={"token": TOKEN}, allow_redirects=False)
            r = await c.get("/console/cohorts", allow_redirects=False)
            return r.status, r.headers.get("Retry-After"), "reading the sessions logged out" in await r.text()
    assert asyncio.run(before_reading()) == (503, "5", True)
    # what another worker's follower does with the record, and with records that are not revocations
    other = Revoked(1000)
    other.add_record(record("n1", 5_000, 5_100)[1], 5_100)
    other.add_record(b"not json", 5_100)
    other.add_record(b'{"nonce": "n2", "issued_ms": true}', 5_100)
    assert other.until == {"n1": 6_000}
    other.add("n3", 4_000, 6_500)               # expired already: not kept; n1 expired meanwhile: forgotten
    assert other.until == {}


def test_the_probes_name_the_failed_parts_and_the_admin_health_says_why_without_the_secrets():
    health = Health()
    health.expect("ingest", "export")
    health.mark_ready("ingest")
    health.mark_failed("export", f"export main failed 5 times in a row, last: AuthError: token {TOKEN} refused")
    app = worker_app(health, access=Access(TOKEN, secrets=(TOKEN,)))

    async def go():
        async with TestClient(TestServer(app)) as c:
            out = []
            for path, headers in (("/healthz", {}), ("/readyz", {}), ("/admin/health", {}),
                                  ("/admin/health", {"Authorization": f"Bearer {TOKEN}"})):
                r = await c.get(path, headers=headers)
                out.append((r.status, orjson.loads(await r.read())))
            return out
    healthz, readyz, closed, details = asyncio.run(go())
    assert healthz == (503, {"status": "failed", "failed": {"export": "failed"}})
    assert readyz == (503, {"status": "not ready", "ready": ["ingest"], "waiting": [],
                            "failed": {"export": "failed"}})
    assert closed[0] == 401
    assert details == (200, {"status": "not ready", "ready": ["ingest"], "waiting": [], "failed": {
        "export": "export main failed 5 times in a row, last: AuthError: token [redacted] refused"}})
