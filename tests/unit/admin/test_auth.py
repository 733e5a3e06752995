"""The access model of the worker's HTTP port: probes and metrics open, everything else behind the admin token."""

import asyncio

import orjson
from aiohttp.test_utils import TestClient, TestServer

from stream.admin.auth import refusal
from stream.health import Health
from stream.web import worker_app


def test_a_request_needs_the_configured_token_as_a_bearer():
    assert refusal("Bearer s3cret-token", "s3cret-token") is None
    assert refusal("bearer   s3cret-token ", "s3cret-token") is None
    assert refusal(None, "s3cret-token") == "send the admin token as Authorization: Bearer <token>"
    assert refusal("Basic czNjcmV0LXRva2VuOg==", "s3cret-token") == \
        "send the admin token as Authorization: Bearer <token>"
    assert refusal("Bearer wrong", "s3cret-token") == "the bearer token is not the admin token"
    assert refusal("Bearer anything", None) == ("the admin endpoints are closed: no admin token is configured (set "
                                                "STREAM_ADMIN__TOKEN, or admin.token)")


def test_the_worker_serves_probes_and_metrics_openly_and_the_status_only_with_the_token():
    async def go(token):
        app = worker_app(Health(), status=lambda hours: {"destinations": [], "hours": hours}, token=token)
        async with TestClient(TestServer(app)) as c:
            out = []
            for path, headers in [("/healthz", {}), ("/readyz", {}), ("/metrics", {}), ("/exports/status", {}),
                                  ("/exports/status?hours=3", {"Authorization": "Bearer t0ken-1"}),
                                  ("/nowhere", {})]:
                r = await c.get(path, headers=headers)
                body = await r.read()
                out.append((path, r.status, orjson.loads(body) if r.status == 401 or path.startswith("/exports")
                            else None))
            return out
    assert asyncio.run(go("t0ken-1")) == [
        ("/healthz", 200, None), ("/readyz", 200, None), ("/metrics", 200, None),
        ("/exports/status", 401, {"error": "unauthorized",
                                  "detail": "send the admin token as Authorization: Bearer <token>"}),
        ("/exports/status?hours=3", 200, {"destinations": [], "hours": 3}),
        ("/nowhere", 401, {"error": "unauthorized", "detail": "send the admin token as Authorization: Bearer <token>"})]
    closed = asyncio.run(go(None))
    assert [(p, s) for p, s, _ in closed] == [("/healthz", 200), ("/readyz", 200), ("/metrics", 200),
                                              ("/exports/status", 401), ("/exports/status?hours=3", 401),
                                              ("/nowhere", 401)]
