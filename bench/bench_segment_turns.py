"""The longest turn of the event loop while ``stream api`` handles one large Segment /v1/batch, in one process without
HTTP or a broker.

    python bench/bench_segment_turns.py [--tree CHECKOUT] [--messages 2000] [--over-limit] [--repeats 7] [--json PATH]

``Ingestor.segment`` handles a body of --messages typical track messages (context, properties, ids), the producer a
stand-in that acknowledges on the next turn of the loop. The CPU of each callback the loop runs (a task's step: the
request's handling up to its next await) is timed on this thread's clock, which other processes on the cores do not
move; the longest is how long the request holds the other requests in flight. --over-limit: instead, --messages
of the smallest track messages (30,000 fill the 500 KB a batch may be), more than api.segment_max_batch_messages,
so that each is dead-lettered. Best (lowest) and median over
--repeats requests. --tree runs another checkout's ``stream`` package (e.g. the code before a change).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WRITE_KEY = "bench-write-key"


def message(i: int) -> dict:
    return {"type": "track", "event": f"Product Viewed {i % 17}", "anonymousId": f"anon-{i % 700:06d}",
            "userId": f"user-{i % 300:06d}" if i % 3 else None, "messageId": f"msg-{i:08d}",
            "timestamp": "2026-12-06T10:00:00.000Z",
            "properties": {"product_id": f"p-{i % 97}", "price": 19.99 + i % 10, "currency": "EUR",
                           "category": "shoes", "tags": ["sale", "new"], "quantity": 1 + i % 3},
            "context": {"library": {"name": "analytics.js", "version": "4.1.0"}, "ip": "203.0.113.9",
                        "locale": "en-GB", "page": {"path": "/p/123", "url": "https://shop.example/p/123",
                                                    "title": "Shoes", "referrer": "https://search.example/"},
                        "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36"}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", default=str(ROOT), help="the checkout whose stream package is timed")
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--over-limit", action="store_true", help="the smallest messages, each dead-lettered")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", help="append the result, as one JSON line, to this file")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(args.tree).resolve()))
    import orjson

    from stream.api import service
    from stream.clock import SystemClock
    from stream.health import Health
    from stream.settings import Settings
    assert Path(service.__file__).resolve().is_relative_to(Path(args.tree).resolve()), service.__file__

    class Producer:   # acknowledges on the loop's next turn, as a broker's answer arrives later
        async def send(self, topic, value, partition=None):
            loop = asyncio.get_running_loop()
            done = loop.create_future()
            loop.call_soon(done.set_result, None)
            return done

    settings = Settings(projects=[{"id": 424242, "segment_sources": [{"write_key": WRITE_KEY, "source_id": "s"}]}],
                        api={"segment_device_eps": 1e9, "segment_max_batch_bytes": 1 << 30})
    ing = service.Ingestor(settings, SystemClock(), Health())
    ing.producer = Producer()
    if args.over_limit:
        body = orjson.dumps({"batch": [{"type": "track"}] * args.messages})
    else:
        body = orjson.dumps({"batch": [message(i) for i in range(args.messages)]})
    auth = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()

    turns: list[float] = []
    handle_run = asyncio.events.Handle._run

    def timed_run(self) -> None:
        t0 = time.thread_time()
        handle_run(self)
        turns.append(time.thread_time() - t0)

    async def one() -> None:
        reply = await ing.segment("/v1/batch", None, body, auth, ing.clock.now_ms())
        assert reply.status == 200, reply.body
        assert reply.body.get("rejected", 0) == (args.messages if args.over_limit else 0), reply.body

    gc.freeze()
    longest, total = [], []
    asyncio.events.Handle._run = timed_run
    try:
        for _ in range(args.repeats):
            turns.clear()
            asyncio.run(one())
            longest.append(max(turns))
            total.append(sum(turns))
    finally:
        asyncio.events.Handle._run = handle_run

    def ms(xs: list[float]) -> dict[str, float]:
        xs = sorted(xs)
        return {"best": round(xs[0] * 1000, 2), "median": round(xs[len(xs) // 2] * 1000, 2)}
    out = {"tree": args.tree, "messages": args.messages, "over_limit": args.over_limit, "body_bytes": len(body),
           "repeats": args.repeats, "load": os.getloadavg()[0], "longest_turn_ms": ms(longest),
           "request_cpu_ms": ms(total)}
    print(json.dumps(out))
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
