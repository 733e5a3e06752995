"""The worker's HTTP endpoints on worker.http_port: /metrics, /healthz, /readyz (open); /exports/status and the admin
API under /admin (``stream.admin.api``), with the admin token (``stream.admin.auth``); the web console under
/console/ (``stream.admin.console``) when a token is configured, behind its own sign-in with that token."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from stream.admin.auth import REALM, Access, is_open, refusal, too_many
from stream.health import HEALTH, Health
from stream.metrics import AUTH_FAILURES


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body, option=orjson.OPT_INDENT_2), status=status,
                        content_type="application/json", headers=headers)


def admin_guard(access: Access, own_auth: tuple[str, ...] = ()):
    """A middleware answering 401 to any request of a path that is not open without the admin token, and 429 to
    an address that failed too often (before its token is compared); paths under ``own_auth`` (the console) check
    their sessions themselves."""
    @web.middleware
    async def guard(request: web.Request, handler) -> web.StreamResponse:
        if not is_open(request.path) and not any(request.path == p or request.path.startswith(p + "/")
                                                 for p in own_auth):
            if access.token is not None:
                address = access.client(request.remote, request.headers.get("X-Forwarded-For"))
                wait = access.retry_after_s(address)
                if wait is not None:
                    AUTH_FAILURES.labels("admin", "limited").inc()
                    return _json({"error": "too many requests", "detail": too_many(wait)}, 429,
                                 {"Retry-After": str(wait)})
            why = refusal(request.headers.get("Authorization"), access.token)
            if why is not None:
                if access.token is not None:
                    # only a credential sent counts against the address: a browser asking for /favicon.ico next
                    # to the console is no guess
                    if request.headers.get("Authorization"):
                        access.failed(address)
                    AUTH_FAILURES.labels("admin", "refused").inc()
                return _json({"error": "unauthorized", "detail": why}, 401, {"WWW-Authenticate": REALM})
        return await handler(request)
    return guard


def worker_app(health: Health = HEALTH, status: Callable[[], Any] | None = None,
               token: str | None = None, admin: Any = None, access: Access | None = None,
               revoked: Any = None, publish: Any = None) -> web.Application:
    """``status(hours)`` returns the export status document listing the latest ``hours`` hours of each destination
    (``stream.agents.export.export_status``); None: the worker exports nothing. ``token``: the admin token;
    ``access``: the admin side's access settings (``Access.of(settings)``; without it, ``token`` and the
    defaults); ``revoked``, ``publish``: the console's logged-out sessions and how to tell the other workers
    (``stream.admin.console.Console``)."""
    access = access or Access(token)
    token = access.token

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        ok, body = health.live()
        return _json(body, 200 if ok else 503)

    async def readyz(_: web.Request) -> web.Response:
        ok, body = health.readiness()
        return _json(body, 200 if ok else 503)

    async def exports_status(request: web.Request) -> web.Response:
        if status is None:
            return _json({"error": "this worker does not run the export stage (worker.stages)"}, 404)
        from stream.admin.api import hours_query
        from stream.admin.service import AdminError
        try:
            hours = hours_query(request)
        except AdminError as exc:
            return _json({"error": str(exc)}, exc.status)
        return _json(status(hours))

    async def health_details(_: web.Request) -> web.Response:
        doc = health.details()      # why each part failed: error texts, with the configured secrets cut out
        return _json({**doc, "failed": {part: access.scrub(why) for part, why in doc["failed"].items()}})

    console = admin is not None and token is not None
    app = web.Application(middlewares=[admin_guard(access, ("/console",) if console else ())])
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/exports/status", exports_status)
    app.router.add_get("/admin/health", health_details)
    if admin is not None:
        from stream.admin.api import add_routes
        add_routes(app, admin)
    if console:
        from stream.admin import console as web_console
        web_console.add_routes(app, admin, access, revoked, publish)
    return app


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Start serving ``app``; the caller awaits ``runner.cleanup()`` to stop."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


def port_free(host: str, port: int) -> str | None:
    """None if ``host:port`` can be listened on, else why not (checked before the worker starts)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None
