"""Servers for bench_api.py, each one process: ``python bench/api_servers.py KIND CONFIG PORT``.

KIND:
  ceiling-aiohttp   POST any path: read the body, split it (the same msgspec envelope parse as the API), produce
                    it whole as one message (acks=all, the configured compression); answer 200. The most any
                    endpoint on this stack and broker can do.
  ceiling-uvicorn   the same as a raw ASGI app on uvicorn (uvloop, httptools)
  ceiling-granian   the same ASGI app on granian
  validate-aiohttp  the ceiling plus what no implementation can skip: every event through normalize_message
                    (the ingest stage's validator), the results thrown away
  api-uvicorn       the real service (stream.api.service.Ingestor, BodyReader) behind a raw ASGI adapter on
                    uvicorn, to compare stacks with the same work per request
(``stream api`` itself, aiohttp, is started by bench_api.py with ``python -m stream api``.)
"""

from __future__ import annotations

import gc
import itertools
import sys
import time

import msgspec
import orjson

from stream import kafka
from stream.events.normalize import Rules, normalize_message
from stream.settings import load_settings

_envelope = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
_events = msgspec.json.Decoder(list[msgspec.Raw]).decode
OK = b'{"code":200}'


class Ceiling:
    """Parse the body's envelope and produce the body as one message."""

    validate = False

    def __init__(self, config: str):
        self.settings = load_settings(config)
        self.topic = self.settings.topics.name("valid")
        self.parts = itertools.cycle(range(self.settings.topics.partitions))
        self.producer = None
        self.rules = Rules()

    async def start(self) -> None:
        self.producer = kafka.producer(self.settings.kafka)
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()

    async def handle(self, body: bytes) -> tuple[int, bytes]:
        try:
            events = _events(_envelope(body)["events"])
        except (msgspec.DecodeError, msgspec.ValidationError, KeyError):
            return 400, b'{"code":400}'
        n = len(events)
        if self.validate:
            now = int(time.time() * 1000)
            for i, e in enumerate(events):
                normalize_message(bytes(e), None, 424242, now, f"bench/{i}", self.rules)
        await (await self.producer.send(self.topic, body, partition=next(self.parts)))
        return 200, b'{"code":200,"events_ingested":%d}' % n


def aiohttp_ceiling(config: str, port: int, validate: bool = False) -> None:
    from aiohttp import web
    c = Ceiling(config)
    c.validate = validate

    async def post(request: web.Request) -> web.Response:
        status, body = await c.handle(await request.read())
        return web.Response(body=body, status=status, content_type="application/json")

    async def lifecycle(_):
        await c.start()
        yield
        await c.stop()
    app = web.Application(client_max_size=32 << 20)
    app.router.add_post("/{tail:.*}", post)
    app.cleanup_ctx.append(lifecycle)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


async def _read_body(receive) -> bytes:
    parts = []
    while True:
        m = await receive()
        parts.append(m.get("body", b""))
        if not m.get("more_body"):
            return b"".join(parts)


async def _send(send, status: int, body: bytes, headers: list | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive, send, start, stop) -> None:
    while True:
        m = await receive()
        if m["type"] == "lifespan.startup":
            await start()
            gc.collect()
            gc.freeze()  # as stream api does: the long-lived objects of the imports stay out of every collection
            await send({"type": "lifespan.startup.complete"})
        elif m["type"] == "lifespan.shutdown":
            await stop()
            await send({"type": "lifespan.shutdown.complete"})
            return


def asgi_ceiling(config: str):
    c = Ceiling(config)

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            return await _lifespan(receive, send, c.start, c.stop)
        if scope["method"] != "POST":
            return await _send(send, 200, b"{}")
        status, body = await c.handle(await _read_body(receive))
        await _send(send, status, body)
    return app


def asgi_api(config: str):
    """The real service behind a minimal ASGI adapter (the same Ingestor and BodyReader as ``stream api``)."""
    from stream.api.body import BodyError, BodyReader, check_headers
    from stream.api.routes import ROUTES, body_limit, body_problem
    from stream.api.service import Ingestor
    settings = load_settings(config)
    ingestor = Ingestor(settings)

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            return await _lifespan(receive, send, ingestor.start, ingestor.stop)
        route = ROUTES.get(scope["path"])
        if route is None or scope["method"] != "POST":
            ok, body = ingestor.health.readiness()
            return await _send(send, 200 if ok else 503, orjson.dumps(body))
        received_ms = ingestor.clock.now_ms()
        h = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        limit = body_limit(route, settings.api)
        try:
            reader = BodyReader(limit, check_headers(h.get("content-type"), h.get("content-encoding"),
                                                     h.get("content-length"), limit))
            while True:
                m = await receive()
                reader.feed(m.get("body", b""))
                if not m.get("more_body"):
                    break
            body = reader.finish()
        except BodyError as exc:
            status, err = body_problem(route, exc.problem, exc.detail)
            return await _send(send, status, orjson.dumps(err))
        if route.vendor == "amplitude":
            reply = await ingestor.amplitude(route.path, body, received_ms, scope["client"][0])
        else:
            reply = await ingestor.segment(route.path, route.call_type, body, h.get("authorization"), received_ms)
        await _send(send, reply.status, orjson.dumps(reply.body),
                    [(k.lower().encode(), v.encode()) for k, v in reply.headers.items()])
    return app


def main() -> None:
    kind, config, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if kind in ("ceiling-aiohttp", "validate-aiohttp"):
        return aiohttp_ceiling(config, port, validate=kind == "validate-aiohttp")
    if kind in ("ceiling-uvicorn", "api-uvicorn"):
        import uvicorn
        app = asgi_ceiling(config) if kind == "ceiling-uvicorn" else asgi_api(config)
        uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", access_log=False,
                    log_level="warning", lifespan="on")
        return
    if kind == "ceiling-granian":
        from granian import Granian
        Granian("api_servers:GRANIAN_APP", address="127.0.0.1", port=port, interface="asgi", workers=1,
                log_enabled=False).serve()
        return
    raise SystemExit(f"unknown server kind {kind}")


if __name__ == "__main__":
    main()
elif __name__ == "api_servers":   # imported by granian's worker
    import os
    GRANIAN_APP = asgi_ceiling(os.environ["BENCH_CONFIG"])
