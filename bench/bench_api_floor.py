"""The pure steps of a `stream api` request, timed in one process on bench_api.py's bodies: the floor under its CPU
an event, without HTTP, the event loop or the producer's I/O.

    python bench/bench_api_floor.py [--tree CHECKOUT] [--repeats 7] [--json PATH]
    python bench/bench_api_floor.py --mixed EPS [--large-every 20] [--large-events 2000] [--seconds 5] [--tree ...]

Each step as the service runs it (stream.api.service.Ingestor.amplitude): parse the body and validate its events
(``amplitude.parse``, ``amplitude.validate``), the throttle, grouping by target partition, ``EventBatch.encode``,
and the producer's compression of the batches (zstd level 3, aiokafka's; zstd level 1, lz4 and none beside it
for comparison, not in the total). CPU time of each step over the 200 bodies of 100 events, best of --repeats,
in µs an event, with the garbage collector's start-up objects frozen as ``stream api`` does. --tree runs the steps
of another checkout (e.g. the code before a change) with this script, so two trees can be timed in turns.

--mixed EPS: instead, an open loop inside this process, without HTTP or a broker: ``Ingestor.amplitude`` handles
requests due at EPS events/s offered (request i at start + i / rate, started by the event loop's clock whatever the
others do), every --large-every-th a body of --large-events events, the producer a stand-in that acknowledges on the
next turn of the loop; the latency of each request from its due time to its reply, the 100-event requests' and the
large ones' apart. What it shows is how long the requests wait behind each other on the one event loop.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", default=str(ROOT), help="the checkout whose stream package is timed")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", help="append the result, as one JSON line, to this file")
    ap.add_argument("--mixed", type=float, metavar="EPS", help="the in-process open loop at EPS events/s offered")
    ap.add_argument("--large-every", type=int, default=20)
    ap.add_argument("--large-events", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    sys.path.insert(0, str(Path(args.tree).resolve()))
    sys.path.insert(1, str(ROOT / "bench"))
    if args.mixed:
        mixed(args)
        return
    import cramjam
    from aiokafka.codec import lz4_encode, zstd_encode

    from stream.api import amplitude   # from --tree, before bench_api puts this checkout first on the path
    from bench_api import bodies  # noqa: I001
    from stream.api.batching import group
    from stream.api.throttle import Throttle
    from stream.events.normalize import Rules

    with tempfile.TemporaryDirectory() as tmp:
        bodies(Path(tmp) / "bodies.ndjson")
        reqs = (Path(tmp) / "bodies.ndjson").read_bytes().splitlines()
    rules, now = Rules(), int(time.time() * 1000)
    one_pass = hasattr(amplitude, "parse_slowly")

    def validate() -> list:
        out = []
        for b in reqs:
            req = amplitude.parse(b, 2000)
            out.append(amplitude.validate(req.events, 424242, now, amplitude.request_nonce(), rules).accepted)
        return out

    checked = validate()
    n = sum(map(len, checked))
    assert n == 100 * len(reqs), n
    throttle = Throttle(1e9, 30)
    grouped = [group(a, "events.valid", 4, 500, 1 << 20) for a in checked]
    encoded = [b.encode() for g in grouped for _, b in g]
    gc.freeze()

    def timed(f) -> float:
        best = float("inf")
        for _ in range(args.repeats):
            t = time.process_time()
            f()
            best = min(best, time.process_time() - t)
        return round(best / n * 1e6, 2)

    steps = {
        "parse and validate": timed(validate),
        "throttle": timed(lambda: [throttle.admit([e.device_id for e in a], [e.user_id for e in a], now)
                                   for a in checked]),
        "group by partition": timed(lambda: [group(a, "events.valid", 4, 500, 1 << 20) for a in checked]),
        "EventBatch.encode": timed(lambda: [b.encode() for g in grouped for _, b in g]),
        "zstd-3 (the producer's)": timed(lambda: [zstd_encode(v) for v in encoded]),
    }
    codecs = {
        "zstd-1": timed(lambda: [cramjam.zstd.compress(v, level=1) for v in encoded]),
        "lz4 (aiokafka's, level 9)": timed(lambda: [lz4_encode(v) for v in encoded]),
        "lz4 level 0": timed(lambda: [lz4_encode(v, level=0) for v in encoded]),
    }
    sizes = {"rows": sum(map(len, encoded)) / n, "zstd-3": sum(len(zstd_encode(v)) for v in encoded) / n,
             "zstd-1": sum(len(cramjam.zstd.compress(v, level=1)) for v in encoded) / n,
             "lz4 level 0": sum(len(lz4_encode(v, level=0)) for v in encoded) / n}
    total = round(sum(steps.values()), 2)
    steps_whole = {"Ingestor.amplitude, 16 requests at a time (the steps, metrics, sends to a stand-in producer)": whole(reqs, args, n)}
    width = max(map(len, [*steps, *codecs]))
    assert Path(amplitude.__file__).resolve().is_relative_to(Path(args.tree).resolve()), amplitude.__file__
    print(f"{args.tree} ({'envelope in one pass' if one_pass else 'envelope in two passes'}), {n} events")
    for k, v in steps.items():
        print(f"  {k:<{width}}  {v:6.2f} µs/event")
    print(f"  {'total':<{width}}  {total:6.2f} µs/event (one core: at most {1e6 / total:,.0f} events/s)")
    for k, v in steps_whole.items():
        print(f"  {k}  {v:6.2f} µs/event (without the producer's compression)")
    for k, v in codecs.items():
        print(f"  {k:<{width}}  {v:6.2f} µs/event (instead of zstd-3)")
    print("  bytes an event: " + ", ".join(f"{k} {v:,.0f}" for k, v in sizes.items()))
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps({"tree": args.tree, "one_pass": one_pass, "events": n, "repeats": args.repeats,
                                "us_per_event": steps, "total": total, **steps_whole, "codecs_us_per_event": codecs,
                                "bytes_per_event": {k: round(v, 1) for k, v in sizes.items()}}) + "\n")


def whole(reqs: list[bytes], args, n: int) -> float:
    """The service's own handling of every body, ``Ingestor.amplitude`` as the HTTP route calls it, its producer
    a stand-in that acknowledges each send at once, 16 requests at a time: CPU µs an event, the median of
    --repeats passes (the collector running: a request's objects alive at once cost its passes)."""
    import asyncio

    from bench_api import API_KEY

    from stream.api.service import Ingestor
    from stream.clock import FakeClock
    from stream.health import Health
    from stream.settings import Settings

    class Producer:
        async def send(self, topic, value, partition=None):
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done

    settings = Settings(projects=[{"id": 424242, "api_keys": [API_KEY]}], api={"batch_device_eps": 1e9})
    ing = Ingestor(settings, FakeClock(int(time.time() * 1000)), Health())
    ing.producer = Producer()

    async def one(b: bytes) -> None:
        reply = await ing.amplitude("/batch", b, ing.clock.now_ms(), "203.0.113.9")
        assert reply.status == 200, reply.body

    async def run() -> float:   # 16 requests at a time, as a server holds several: the median pass
        passes = []
        for _ in range(args.repeats):
            t = time.process_time()
            for i in range(0, len(reqs), 16):
                await asyncio.gather(*(one(b) for b in reqs[i:i + 16]))
            passes.append(time.process_time() - t)
        return sorted(passes)[len(passes) // 2]
    return round(asyncio.run(run()) / n * 1e6, 2)


def mixed(args) -> None:
    """--mixed: the in-process open loop (see the module's docstring)."""
    import asyncio
    import os

    import orjson

    from stream.api import service   # from --tree, before bench_api puts this checkout first on the path
    from stream.clock import SystemClock
    from stream.devstack.sample import SampleEvents
    from stream.health import Health
    from stream.settings import Settings
    from bench_api import API_KEY, bodies  # noqa: I001
    assert Path(service.__file__).resolve().is_relative_to(Path(args.tree).resolve()), service.__file__
    Ingestor = service.Ingestor

    with tempfile.TemporaryDirectory() as tmp:
        bodies(Path(tmp) / "bodies.ndjson")
        small = (Path(tmp) / "bodies.ndjson").read_bytes().splitlines()
    s, t = SampleEvents(seed=12, users=5000), int(time.time() * 1000)
    large = [orjson.dumps({"api_key": API_KEY, "events": [s.event(t) for _ in range(args.large_events)]})
             for _ in range(4)]

    class Producer:   # acknowledges on the loop's next turn, as a broker's answer arrives later
        async def send(self, topic, value, partition=None):
            loop = asyncio.get_running_loop()
            done = loop.create_future()
            loop.call_soon(done.set_result, None)
            return done

    settings = Settings(projects=[{"id": 424242, "api_keys": [API_KEY]}], api={"batch_device_eps": 1e9})
    ing = Ingestor(settings, SystemClock(), Health())
    ing.producer = Producer()
    per_request = 100 + (args.large_events - 100) / args.large_every
    rate = args.mixed / per_request
    n = int(rate * args.seconds)
    lat: dict[bool, list[float]] = {False: [], True: []}

    async def one(due: float, body: bytes, is_large: bool) -> None:
        reply = await ing.amplitude("/batch", body, ing.clock.now_ms(), "203.0.113.9")
        assert reply.status == 200, reply.body
        lat[is_large].append(asyncio.get_running_loop().time() - due)

    async def run() -> float:
        loop = asyncio.get_running_loop()
        start, tasks, cpu = loop.time() + 0.05, [], time.process_time()
        for i in range(n):
            due = start + i / rate
            if due > loop.time():   # wait for the due time on the loop's clock
                at = loop.create_future()
                loop.call_at(due, at.set_result, None)
                await at
            is_large = i % args.large_every == args.large_every - 1
            body = large[i % len(large)] if is_large else small[i % len(small)]
            tasks.append(asyncio.ensure_future(one(due, body, is_large)))
        await asyncio.gather(*tasks)
        return time.process_time() - cpu

    # the CPU of each callback the loop runs (a task's step: a request's handling up to its next await), timed on
    # this thread's clock, which other processes on the cores do not move
    turns: list[float] = []
    handle_run = asyncio.events.Handle._run

    def timed_run(self) -> None:
        t0 = time.thread_time()
        handle_run(self)
        turns.append(time.thread_time() - t0)
    asyncio.events.Handle._run = timed_run
    gc.freeze()
    cpu = asyncio.run(run())
    asyncio.events.Handle._run = handle_run

    def pct(xs: list[float], p: float) -> float | None:
        xs = sorted(xs)
        return round(xs[min(len(xs) - 1, int(p / 100 * len(xs)))] * 1000, 2) if xs else None
    out = {"tree": args.tree, "mixed_eps": args.mixed, "large_every": args.large_every,
           "large_events": args.large_events, "seconds": args.seconds, "requests": n, "load": os.getloadavg()[0],
           "cpu_share": round(cpu / args.seconds, 2),
           "small_ms": {"p50": pct(lat[False], 50), "p99": pct(lat[False], 99), "max": pct(lat[False], 100)},
           "large_ms": {"p50": pct(lat[True], 50), "p99": pct(lat[True], 99), "max": pct(lat[True], 100)},
           "turn_cpu_ms": {"p99": pct(turns, 99), "p99.9": pct(turns, 99.9), "max": pct(turns, 100),
                           "over_5ms": sum(1 for x in turns if x > 0.005)}}
    print(json.dumps(out))
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
