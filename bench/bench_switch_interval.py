"""The event loop's rocksdict multi-gets beside a thread running Python, at several switch intervals.

usage:
    python bench/bench_switch_interval.py [--gets 400] [--keys 500] [--stored 100000]
                                          [--intervals 5,2,1,0.5] [--repeats 3] [--results PATH]

rocksdict's multi-get (the dedupe table's ``get_many``, the identity tables' reads) lets the GIL go while RocksDB
reads; with another thread running Python (faust's consumer thread in the worker) the reading thread gets it back
only when that thread is asked to drop it, after the switch interval. Here the event loop's thread runs the
multi-gets from a coroutine while a second thread counts in a loop; the wall time and the main thread's CPU of the
multi-gets, alone and beside the busy thread at each interval, alternating the intervals between repeats.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import threading
import time

from rocksdict import Options, Rdict


def busy(stop: threading.Event, counter: list[int]) -> None:
    n = 0
    while not stop.is_set():
        n += 1
    counter.append(n)


async def gets(db: Rdict, batches: list[list[bytes]]) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.thread_time()
    for keys in batches:
        db.get(keys)
        await asyncio.sleep(0)      # a turn of the loop between batches, as the stage's batches have
    return time.perf_counter() - w0, time.thread_time() - c0


def one(db: Rdict, batches: list[list[bytes]], interval_ms: float | None) -> dict:
    stop, counter = threading.Event(), []
    t = None
    if interval_ms is not None:
        sys.setswitchinterval(interval_ms / 1000)
        t = threading.Thread(target=busy, args=(stop, counter), daemon=True)
        t.start()
        time.sleep(0.05)
    try:
        wall, cpu = asyncio.run(gets(db, batches))
    finally:
        stop.set()
        if t is not None:
            t.join()
        sys.setswitchinterval(0.005)
    return {"interval_ms": interval_ms, "wall_s": round(wall, 3), "main_cpu_s": round(cpu, 3),
            "busy_thread_count": counter[0] if counter else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gets", type=int, default=400)
    ap.add_argument("--keys", type=int, default=500)
    ap.add_argument("--stored", type=int, default=100_000)
    ap.add_argument("--intervals", default="5,2,1,0.5")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--results", default=None)
    a = ap.parse_args()
    intervals = [float(x) for x in a.intervals.split(",")]
    rnd = random.Random(7)
    with tempfile.TemporaryDirectory() as d:
        db = Rdict(os.path.join(d, "t"), Options(raw_mode=True))
        stored = [rnd.randbytes(16) for _ in range(a.stored)]
        for k in stored:
            db[k] = b"\x01" * 12
        db.flush()
        # half the keys stored, half not (re-sent duplicates are the few; most reads miss)
        batches = [[rnd.choice(stored) if i % 2 else rnd.randbytes(16) for i in range(a.keys)] for _ in range(a.gets)]
        runs = []
        for rep in range(a.repeats):
            order = [None] + (intervals if rep % 2 == 0 else intervals[::-1])
            for ms in order:
                r = one(db, batches, ms) | {"repeat": rep}
                runs.append(r)
                print(f"repeat {rep} {'alone' if ms is None else f'{ms:g} ms'}: wall {r['wall_s']:.3f} s, "
                      f"main thread CPU {r['main_cpu_s']:.3f} s", flush=True)
        db.close()
    print("median wall s:")
    for ms in [None] + intervals:
        ws = sorted(r["wall_s"] for r in runs if r["interval_ms"] == ms)
        print(f"  {'alone' if ms is None else f'{ms:g} ms':>7}: {ws[len(ws) // 2]:.3f}  ({', '.join(map(str, ws))})")
    if a.results:
        with open(a.results, "w") as f:
            json.dump({"argv": sys.argv[1:], "load_average": os.getloadavg(), "runs": runs}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
