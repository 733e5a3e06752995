"""The HTTP server of ``stream api`` (aiohttp): thin views over ``Ingestor``, plus /healthz, /readyz, /metrics.

Each ingestion view checks the headers, reads the body through ``BodyReader`` (limits enforced while reading),
hands it to the Ingestor and writes the reply; requests are counted by route template and status.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

from stream import metrics
from stream.api.body import BodyError, BodyReader, check_headers
from stream.api.budget import Budget, Claim
from stream.api.processes import MULTIPROC_ENV
from stream.api.routes import (
    ROUTES,
    Route,
    body_limit,
    body_problem,
    busy,
    cors_headers,
    method_not_allowed,
    not_found,
    timeout,
)
from stream.api.service import RETRY_AFTER_S, Ingestor, Reply
from stream.health import Health

log = logging.getLogger(__name__)
_INGESTOR = web.AppKey("ingestor", Ingestor)
_HEALTH = web.AppKey("health", Health)
_BUDGET = web.AppKey("budget", Budget)
_REGISTRY = web.AppKey("registry", CollectorRegistry)
READ_CHUNK = 64 * 1024


def _json(status: int, body: dict, headers: dict[str, str] | None = None, close: bool = False) -> web.Response:
    resp = web.Response(body=orjson.dumps(body), status=status, content_type="application/json",
                        headers=headers)
    if close:
        resp.force_close()
    return resp


def _client_ip(request: web.Request, trust_forwarded_for: bool) -> str | None:
    if trust_forwarded_for:
        forwarded = request.headers.get("X-Forwarded-For")
        if forwarded:
            return forwarded.rsplit(",", 1)[-1].strip() or None
    return request.remote


async def _read(request: web.Request, route: Route, ingestor: Ingestor, claim: Claim) -> bytes | web.Response:
    """The body, within its limit and the process's budget of request bytes (``stream.api.budget``)."""
    api = ingestor.settings.api
    limit = body_limit(route, api)
    h = request.headers
    try:
        gz = check_headers(h.get("Content-Type"), h.get("Content-Encoding"), h.get("Content-Length"), limit)
        declared = request.content_length or 0
        if not claim.grow_to(0 if gz else declared):     # an announced body: refused before it is sent
            return _busy(route, api.max_inflight_bytes)
        reader = BodyReader(limit, gz)
        async with asyncio.timeout(api.request_timeout_s):
            async for chunk in request.content.iter_chunked(READ_CHUNK):
                reader.feed(chunk)
                if not claim.grow_to(reader.held):
                    return _busy(route, api.max_inflight_bytes)
        return reader.finish()
    except BodyError as exc:
        status, body = body_problem(route, exc.problem, exc.detail)
        return _json(status, body, close=not request.content.is_eof())
    except TimeoutError:
        status, body = timeout(route, api.request_timeout_s)
        return _json(status, body, close=True)


def _busy(route: Route, limit: int) -> web.Response:
    metrics.API_BUSY.inc()
    status, body = busy(route, limit)   # read or not, the body is not held: the connection closes
    return _json(status, body, {"Retry-After": str(RETRY_AFTER_S)}, close=True)


async def _ingest(request: web.Request) -> web.Response:
    ingestor = request.app[_INGESTOR]
    route = ROUTES[request.match_info.route.resource.canonical]
    received_ms = ingestor.clock.now_ms()
    claim = Claim(request.app[_BUDGET])
    try:
        body = await _read(request, route, ingestor, claim)
        if isinstance(body, web.Response):
            return body
        client_ip = _client_ip(request, ingestor.settings.api.trust_forwarded_for)
        if route.vendor == "amplitude":
            reply: Reply = await ingestor.amplitude(route.path, body, received_ms, client_ip, claim.grow_to)
        else:
            reply = await ingestor.segment(route.path, route.call_type, body, request.headers.get("Authorization"),
                                           received_ms, claim.grow_to, client_ip)
        return _json(reply.status, reply.body, reply.headers)
    finally:
        claim.release()


async def _preflight(request: web.Request) -> web.Response:
    return web.Response(status=204)  # the CORS headers are added by the middleware


async def _not_allowed(request: web.Request) -> web.Response:
    return _json(405, method_not_allowed(request.method, request.path), {"Allow": "POST, OPTIONS"})


async def _healthz(request: web.Request) -> web.Response:
    ok, body = request.app[_HEALTH].live()
    return _json(200 if ok else 503, body)


async def _readyz(request: web.Request) -> web.Response:
    ok, body = request.app[_HEALTH].readiness()
    return _json(200 if ok else 503, body)


def metrics_registry() -> CollectorRegistry:
    """What /metrics shows: this process's metrics, or those of every process of the group when the processes
    share a directory of multiprocess files (``stream api --processes N``: PROMETHEUS_MULTIPROC_DIR)."""
    if not os.environ.get(MULTIPROC_ENV):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(request.app[_REGISTRY]), headers={"Content-Type": CONTENT_TYPE_LATEST})


def _middleware(cors_origins: list[str]):
    @web.middleware
    async def observe(request: web.Request, handler) -> web.StreamResponse:
        started = time.perf_counter()
        resource = request.match_info.route.resource
        template = resource.canonical if resource is not None else "other"
        try:
            resp = await handler(request)
        except web.HTTPException as exc:  # aiohttp's own 404/405: answered in JSON like ours
            resp = _json(exc.status, not_found(request.path) if exc.status == 404 else
                         method_not_allowed(request.method, request.path))
        except Exception:  # a bug: the client retries (both SDKs retry a 500), the log says what happened
            log.exception("unexpected error answering %s %s", request.method, request.path)
            resp = _json(500, {"code": 500, "error": "Internal server error",
                               "detail": "unexpected error; the request was not stored, send it again"})
        cors = cors_headers(request.headers.get("Origin"), cors_origins, request.method == "OPTIONS",
                            request.headers.get("Access-Control-Request-Headers"))
        resp.headers.update(cors)
        metrics.HTTP_REQUESTS.labels(template, str(resp.status)).inc()
        metrics.HTTP_DURATION.labels(template).observe(time.perf_counter() - started)
        return resp
    return observe


def api_app(ingestor: Ingestor) -> web.Application:
    app = web.Application(middlewares=[_middleware(ingestor.settings.api.cors_origins)])
    app[_INGESTOR] = ingestor
    app[_HEALTH] = ingestor.health
    app[_BUDGET] = Budget(ingestor.settings.api.max_inflight_bytes)
    app[_REGISTRY] = metrics_registry()
    for path in ROUTES:
        app.router.add_post(path, _ingest)
        app.router.add_route("OPTIONS", path, _preflight)
        app.router.add_get(path, _not_allowed)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)

    async def lifecycle(_: web.Application):
        await ingestor.start()
        yield
        await ingestor.stop()
    app.cleanup_ctx.append(lifecycle)
    return app


async def serve(ingestor: Ingestor, host: str, port: int, reuse_port: bool = False) -> web.AppRunner:
    """Start serving; the caller awaits ``runner.cleanup()`` to stop (which also stops the producer).
    ``reuse_port``: listen with SO_REUSEPORT, one of the processes of ``stream api --processes N``."""
    # auto_decompress off: BodyReader decodes gzip itself, within the limit; a short lingering time bounds how
    # long the unread rest of a rejected body is drained before the connection closes
    runner = web.AppRunner(api_app(ingestor), access_log=None, auto_decompress=False, lingering_time=5.0,
                           handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=1024, reuse_port=reuse_port or None).start()
    return runner
