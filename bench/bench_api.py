"""Throughput and latency of one `stream api` process, against the ceiling of the same stack, in one run.

    python bench/bench_api.py [--duration 10] [--repeat 3] [--connections 32] [--profile] [--only NAME,...]
                              [--open-loop 10000,25000,40000] [--no-closed] [--processes 1,2] [--before CHECKOUT]

Starts a Tansu broker on loopback (stream.devstack.services.start_broker; a fresh one for every server run),
creates the topics, writes request bodies of 100 realistic events each (stream.devstack.sample.SampleEvents,
Amplitude /batch bodies), and runs the servers in turn, --repeat times (one process each, started here and
stopped by PID): wrk (`apt-get install -y wrk`) with 32 connections posts those bodies for --duration seconds
after a 3 s warm-up. Every answer must be 200. Prints each run and the median run per server, and writes
bench/results-api.json. --profile adds a run of `stream api` recorded by py-spy (bench/profile-api.txt).

The closed loop (wrk) measures the most a server takes in, but its latencies are those of 32 clients that wait
for each answer before sending again: a server that stalls also stops the load, so the stall shows in few
samples (coordinated omission). --open-loop adds runs at fixed offered rates (events/s; a fresh broker and
server process each): request i is due at start + i / rate and is sent then, on an idle keep-alive connection
or a new one (at most --max-connections), whatever the earlier answers do, and its latency is counted from the
moment it was due. Prints p50 / p99 / p99.9 / max per offered rate, the answers (every one must be a 200) and
the CPU of the server and of the client (this process). --before CHECKOUT runs `stream api` from another
checkout (e.g. `git archive HEAD | tar -x -C /tmp/before`) in the same rounds, as stream-api-aiohttp@before.

Servers (default: the first five; any of them with --only):
  stream-api-aiohttp         `stream api` as shipped (aiohttp)
  stream-api-uvicorn         the same service (Ingestor, BodyReader) behind a raw ASGI adapter on uvicorn with
                             uvloop and httptools
  validate-aiohttp           the ceiling plus normalize_message on every event (the validation every
                             implementation must do)
  ceiling-aiohttp            a raw endpoint that only splits the body's JSON envelope and produces the whole
                             body as one message (acks=all, the configured compression)
  ceiling-uvicorn            the same as raw ASGI on uvicorn + uvloop + httptools
  ceiling-granian            the same on granian
  stream-api-aiohttp-uvloop  `stream api` with uvloop's event loop
  stream-api-aiohttp-pN      `stream api --processes N` (--processes 1,N): N serving processes on one port
The comparison stacks are not dependencies of stream: `pip install uvicorn uvloop httptools granian` (a server
whose packages are missing is skipped).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import orjson
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stream.devstack.sample import SampleEvents  # noqa: E402
from stream.devstack.services import free_port, start_broker  # noqa: E402
from stream.kafka import ensure_topics  # noqa: E402
from stream.settings import load_settings  # noqa: E402

API_KEY = "bench-key"
EVENTS_PER_REQUEST = 100
BODIES = 200
WARMUP_S = 3.0

SERVERS = {
    # name: (command, description)
    "stream-api-aiohttp": ("stream api (aiohttp)", "the service as shipped"),
    "stream-api-aiohttp-uvloop": ("stream api (aiohttp) on uvloop", "the service, uvloop's event loop"),
    "stream-api-uvicorn": ("service on uvicorn+uvloop+httptools", "same service, raw ASGI adapter"),
    "ceiling-aiohttp": ("ceiling on aiohttp", "parse envelope, produce body as one message"),
    "validate-aiohttp": ("ceiling + normalize on aiohttp", "the ceiling plus normalize_message per event"),
    "ceiling-uvicorn": ("ceiling on uvicorn+uvloop+httptools", "same, raw ASGI"),
    "ceiling-granian": ("ceiling on granian (ASGI)", "same, raw ASGI"),
}


BEFORE = "@before"
"""Suffix of a server run from the checkout --before names (``stream-api-aiohttp@before``)."""
DEFAULT_SERVERS = ["stream-api-aiohttp", "stream-api-uvicorn", "validate-aiohttp", "ceiling-aiohttp",
                   "ceiling-uvicorn"]


def bodies(path: Path) -> tuple[int, int]:
    """BODIES request bodies of EVENTS_PER_REQUEST events, one per line; returns (bytes per body, per event)."""
    s = SampleEvents(seed=11, users=5000)
    t = int(time.time() * 1000)
    total = 0
    with open(path, "wb") as f:
        for _ in range(BODIES):
            body = orjson.dumps({"api_key": API_KEY, "events": [s.event(t) for _ in range(EVENTS_PER_REQUEST)]})
            total += len(body)
            f.write(body + b"\n")
    return total // BODIES, total // BODIES // EVENTS_PER_REQUEST


def command(name: str, config: Path, port: int) -> list[str]:
    processes = 1
    if name.startswith("stream-api-aiohttp-p"):   # stream api --processes N
        name, processes = "stream-api-aiohttp", int(name.rsplit("-p", 1)[1])
    if name == "stream-api-aiohttp":
        return [sys.executable, "-m", "stream", "api", "-c", str(config), "--host", "127.0.0.1",
                "--port", str(port)] + (["--processes", str(processes)] if processes > 1 else [])
    if name == "stream-api-aiohttp-uvloop":
        return [sys.executable, "-c",
                ("import asyncio, uvloop; asyncio.set_event_loop_policy(uvloop.EventLoopPolicy());"
                 " from stream.cli import main; main()"),
                "api", "-c", str(config), "--host", "127.0.0.1", "--port", str(port)]
    kind = {"stream-api-uvicorn": "api-uvicorn"}.get(name, name)
    return [sys.executable, str(ROOT / "bench" / "api_servers.py"), kind, str(config), str(port)]


def wait_up(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            body = orjson.dumps({"api_key": API_KEY, "events": [{"event_type": "warm", "device_id": "dev-00001"}]})
            req = urllib.request.Request(f"http://127.0.0.1:{port}/batch", data=body,
                                         headers={"Content-Type": "application/json"})
            if urllib.request.urlopen(req, timeout=2).status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server on port {port} did not answer within {timeout}s")


def wrk(port: int, bodies_file: Path, duration: float, connections: int, threads: int) -> dict:
    out = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration:g}s",
                          "--timeout", "10s", "-s", str(ROOT / "bench" / "post.lua"),
                          f"http://127.0.0.1:{port}/batch", "--", str(bodies_file)],
                         capture_output=True, text=True, check=True)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1]
    return json.loads(line)


# --- open loop ----------------------------------------------------------------------------------------------

class OpenLoop:
    """Requests sent at a fixed offered rate, by the clock, whatever the answers do (not a closed loop).

    Request i is due at ``start + i / rate``; it is written on an idle keep-alive connection, or on a new one when
    every open connection is busy (up to ``max_connections``; past that it waits for one). Its latency is counted
    from the moment it was due, not from when it could be written, so a server that falls behind shows its
    queueing in the latencies instead of slowing the client down (no coordinated omission)."""

    def __init__(self, port: int, bodies_: list[bytes], rate_rps: float, duration_s: float, max_connections: int,
                 timeout_s: float = 30.0, large: list[bytes] | None = None, large_every: int = 0,
                 large_events: int = 0):
        self.port, self.rate, self.duration, self.max_connections = port, rate_rps, duration_s, max_connections
        self.timeout = timeout_s

        def post(b: bytes) -> bytes:
            return (b"POST /batch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(b), b))
        self.requests = [post(b) for b in bodies_]
        self.large = [post(b) for b in large or []]
        self.large_every, self.large_events = large_every, large_events
        self.large_latencies: list[float] = []
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened = 0
        self.waiters: list[asyncio.Future] = []
        self.latencies: list[float] = []
        self.errors = 0
        self.statuses: dict[int, int] = {}

    async def _connection(self):
        if self.idle:
            return self.idle.pop()
        if self.opened < self.max_connections:
            self.opened += 1
            try:
                return await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                self.opened -= 1
                raise
        fut = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        return await fut

    def _release(self, conn) -> None:
        while self.waiters:
            fut = self.waiters.pop(0)
            if not fut.done():
                fut.set_result(conn)
                return
        self.idle.append(conn)

    async def _one(self, due: float, request: bytes, is_large: bool = False) -> None:
        loop = asyncio.get_running_loop()
        conn = None
        try:
            async with asyncio.timeout(self.timeout):
                conn = await self._connection()
                reader, writer = conn
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
            (self.large_latencies if is_large else self.latencies).append(loop.time() - due)
            self.statuses[status] = self.statuses.get(status, 0) + 1
            self._release(conn)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            self.errors += 1
            if conn is not None:
                conn[1].close()
                self.opened -= 1

    async def run(self) -> dict:
        loop = asyncio.get_running_loop()
        n = int(self.rate * self.duration)
        tasks: list[asyncio.Task] = []
        done = asyncio.Event()
        start = loop.time() + 0.05
        i = 0

        def fire() -> None:  # every request due by now is started, then the next due time is scheduled
            nonlocal i
            now = loop.time()
            while i < n and start + i / self.rate <= now:
                due = start + i / self.rate
                if self.large_every and i % self.large_every == self.large_every - 1:
                    tasks.append(loop.create_task(self._one(due, self.large[i % len(self.large)], True)))
                else:
                    tasks.append(loop.create_task(self._one(due, self.requests[i % len(self.requests)])))
                i += 1
            if i < n:
                loop.call_at(start + i / self.rate, fire)
            else:
                done.set()

        loop.call_at(start, fire)
        await done.wait()
        sent_s = loop.time() - start
        await asyncio.gather(*tasks)
        for _, writer in self.idle:
            writer.close()
        lat, big = sorted(self.latencies), sorted(self.large_latencies)

        def pct(p: float, lat: list[float] = lat) -> float:
            return lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1e6 if lat else float("nan")
        out = {"offered_rps": self.rate, "requests": n, "answered": len(lat) + len(big), "errors": self.errors,
               "statuses": {str(k): v for k, v in sorted(self.statuses.items())}, "send_s": sent_s,
               "connections": self.opened + 0, "p50_us": pct(50), "p90_us": pct(90), "p99_us": pct(99),
               "p999_us": pct(99.9), "max_us": lat[-1] * 1e6 if lat else float("nan"),
               "events": len(lat) * EVENTS_PER_REQUEST}
        if self.large_every:   # the percentiles above are the 100-event requests'; the large ones' apart
            out.update({"large_every": self.large_every, "large_answered": len(big),
                        "large_p50_us": pct(50, big), "large_p99_us": pct(99, big),
                        "large_max_us": big[-1] * 1e6 if big else float("nan")})
            out["events"] += len(big) * self.large_events
        return out


def large_bodies(path: Path, events: int) -> None:
    """A few request bodies of ``events`` events each (--large-every), one per line, as ``bodies`` writes them."""
    s = SampleEvents(seed=12, users=5000)
    t = int(time.time() * 1000)
    with open(path, "wb") as f:
        for _ in range(4):
            f.write(orjson.dumps({"api_key": API_KEY, "events": [s.event(t) for _ in range(events)]}) + b"\n")


def open_loop(port: int, bodies_file: Path, rate_eps: float, duration: float, max_connections: int,
              large_every: int = 0, large_events: int = 0) -> dict:
    """The open loop at ``rate_eps`` events/s offered; with ``large_every`` K, every K-th request is a body of
    ``large_events`` events (bodies_file's sibling large.ndjson), the rate of requests lowered to keep the events'."""
    bodies_ = bodies_file.read_bytes().splitlines()
    large = (bodies_file.parent / "large.ndjson").read_bytes().splitlines() if large_every else []
    per_request = EVENTS_PER_REQUEST + ((large_events - EVENTS_PER_REQUEST) / large_every if large_every else 0)
    return asyncio.run(OpenLoop(port, bodies_, rate_eps / per_request, duration, max_connections,
                                large=large, large_every=large_every, large_events=large_events).run())


def run_one(name: str, config: Path, bodies_file: Path, args, logs: Path, profile: bool = False,
            rate_eps: float | None = None) -> dict:
    """One server process: warm-up, then the closed loop (wrk), or the open loop at ``rate_eps`` events/s."""
    port = free_port()
    tree = ROOT
    if name.endswith(BEFORE):   # the same server run from another checkout (--before)
        name, tree = name[:-len(BEFORE)], Path(args.before).resolve()
    env = {**os.environ, "BENCH_CONFIG": str(config), "PYTHONPATH": f"{tree / 'bench'}:{tree}"}
    log = open(logs / f"{name}.log", "wb")
    proc = subprocess.Popen(command(name, config, port), stdout=log, stderr=subprocess.STDOUT,
                            env=env, start_new_session=True, cwd=tree)
    spy = None
    try:
        try:
            wait_up(port, proc)
        except RuntimeError:
            log.flush()
            tail = (logs / f"{name}.log").read_text(errors="replace").splitlines()[-15:]
            raise RuntimeError(f"{name} from {tree} did not start; the end of its log:\n" + "\n".join(tail)) from None
        if rate_eps is not None:
            open_loop(port, bodies_file, rate_eps, WARMUP_S, args.max_connections, args.large_every,
                      args.large_events)
        else:
            wrk(port, bodies_file, WARMUP_S, args.connections, args.threads)
        if profile:
            py_spy = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or "py-spy"
            spy = subprocess.Popen([py_spy, "record", "--pid", str(proc.pid), "--format", "raw", "--rate", "200",
                                    "--duration", str(int(args.duration)), "--nonblocking",
                                    "-o", str(logs / "api.folded")], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        cpu0, loop0, t0 = _cpu_seconds(proc.pid), _loop_cpu_seconds(proc.pid), time.process_time()
        load0 = os.getloadavg()[0]
        if rate_eps is not None:
            r = open_loop(port, bodies_file, rate_eps, args.duration, args.max_connections, args.large_every,
                          args.large_events)
            r["client_cpu_s"] = time.process_time() - t0
        else:
            r = wrk(port, bodies_file, args.duration, args.connections, args.threads)
        r["server_cpu_s"] = _cpu_seconds(proc.pid) - cpu0
        r["server_loop_cpu_s"] = _loop_cpu_seconds(proc.pid) - loop0
        r["loadavg_1m"] = [load0, os.getloadavg()[0]]
        if spy is not None:
            spy.wait(args.duration + 30)
            what = "closed loop" if rate_eps is None else f"open loop, {rate_eps:,.0f} events/s offered"
            _summarise_profile(logs / "api.folded", Path(args.profile_out), f"stream api, {what}")
        return r
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (granian runs its worker as a child)."""
    total = 0.0
    pids = [pid]
    try:
        kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        pids += [int(k) for k in kids]
    except FileNotFoundError:
        pass
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError):
            pass
    return total


def _loop_cpu_seconds(pid: int) -> float:
    """User + system CPU of the process's main thread (its event loop), without its other threads; NaN for
    ``stream api --processes N``, whose main process only supervises its serving processes."""
    if "--processes" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
        return float("nan")
    try:
        fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError):
        return float("nan")


def _summarise_profile(folded: Path, out: Path, title: str = "") -> None:
    """Self time and total time by function, from py-spy's raw (folded) output."""
    if not folded.exists():
        return
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        count = int(n)
        total += count
        frames = stack.split(";")
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for f in set(frames):
            inclusive[f] = inclusive.get(f, 0) + count
    lines = ([title] if title else []) + [f"py-spy samples: {total}", "", "self %  function"]
    lines += [f"{100 * c / total:6.1f}  {f}" for f, c in sorted(own.items(), key=lambda kv: -kv[1])[:40]]
    lines += ["", "total %  function"]
    lines += [f"{100 * c / total:6.1f}  {f}" for f, c in sorted(inclusive.items(), key=lambda kv: -kv[1])[:40]]
    out.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="wrk threads (1 leaves the most CPU to the server)")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--only", help="comma-separated subset of " + ",".join(SERVERS))
    ap.add_argument("--profile", action="store_true", help="py-spy one more stream api run (closed loop, or the "
                    "first --open-loop rate with --no-closed)")
    ap.add_argument("--profile-out", default=str(ROOT / "bench" / "profile-api.txt"),
                    help="where --profile writes its summary")
    ap.add_argument("--repeat", type=int, default=3, help="run the servers in turn this many times; the run with "
                    "the median throughput of each server is reported")
    ap.add_argument("--open-loop", default="", metavar="EPS,...",
                    help="also run each server under an open loop at these offered rates (events/s), e.g. "
                    "10000,25000,40000: latency counted from each request's scheduled send time")
    ap.add_argument("--no-closed", action="store_true", help="skip the closed-loop (wrk) runs")
    ap.add_argument("--large-every", type=int, default=0, metavar="K",
                    help="in the open loop, every K-th request is a body of --large-events events (the percentiles "
                    "printed first are the 100-event requests'; the offered events/s include the large ones)")
    ap.add_argument("--large-events", type=int, default=2000, help="events of a --large-every request")
    ap.add_argument("--max-connections", type=int, default=256,
                    help="the open loop's most connections (a request finding all busy waits for one)")
    ap.add_argument("--processes", default="1", metavar="N,...",
                    help="run stream-api-aiohttp with each of these --processes (N > 1: as stream-api-aiohttp-pN)")
    ap.add_argument("--before", metavar="CHECKOUT", help="also run stream-api-aiohttp from this checkout (a git "
                    "worktree of an earlier commit), as stream-api-aiohttp@before, in the same rounds")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results-api.json"), help="where to write the results")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench_api.py needs wrk: apt-get install -y wrk")
    names = args.only.split(",") if args.only else DEFAULT_SERVERS
    needs = {"stream-api-aiohttp-uvloop": ["uvloop"], "stream-api-uvicorn": ["uvicorn", "uvloop", "httptools"],
             "ceiling-uvicorn": ["uvicorn", "uvloop", "httptools"], "ceiling-granian": ["granian"]}
    missing = {n: [m for m in needs.get(n, []) if importlib.util.find_spec(m) is None] for n in names}
    for n, mods in missing.items():
        if mods:
            print(f"skipping {n}: pip install {' '.join(mods)} (the comparison stacks are not dependencies of stream)")
    names = [n for n in names if not missing[n]]
    procs = [int(p) for p in args.processes.split(",")]
    names = [m for n in names for m in ([n if p == 1 else f"{n}-p{p}" for p in procs] if n == "stream-api-aiohttp"
                                         else [n])]
    if args.before:
        names = [m for n in names for m in ([n, n + BEFORE] if n == "stream-api-aiohttp" else [n])]
    rates: list[float | None] = ([] if args.no_closed else [None]) + [
        float(r) for r in args.open_loop.split(",") if r.strip()]
    work = Path(tempfile.mkdtemp(prefix="bench-api-"))
    load_start = os.getloadavg()
    try:
        body_bytes, event_bytes = bodies(work / "bodies.ndjson")
        if args.large_every:
            large_bodies(work / "large.ndjson", args.large_events)
        runs: dict[str, list[dict]] = {}
        opened: dict[str, dict[str, list[dict]]] = {}
        plan = [(n, rate) for n in names for rate in rates]
        for name, rate in plan * args.repeat + ([("profile", rates[0] if rates else None)] if args.profile else []):
            # a fresh broker per server: the in-memory broker slows down as it fills, which would favour the
            # servers measured first
            broker = start_broker(work)
            try:
                config = work / "stream.yaml"
                config.write_text(yaml.safe_dump({
                    "kafka": {"bootstrap_servers": f"127.0.0.1:{broker.port}"},
                    "topics": {"prefix": "bench.", "partitions": args.partitions},
                    "projects": [{"id": 424242, "api_keys": [API_KEY]}],
                    # every body is sent many times: the per-device limit is not the subject here
                    "api": {"batch_device_eps": 1e9},
                    "worker": {"log_level": "warning"},
                }))
                asyncio.run(ensure_topics(load_settings(config)))
                if name == "profile":  # an extra run, so that the sampler's cost is in no measured one
                    run_one("stream-api-aiohttp", config, work / "bodies.ndjson", args, work, profile=True,
                            rate_eps=rate)
                    continue
                r = run_one(name, config, work / "bodies.ndjson", args, work, rate_eps=rate)
            finally:
                broker.stop()
            if rate is not None:
                r["offered_events_per_s"] = rate
                r["events_per_s"] = r["events"] / args.duration
                r["cpu_us_per_event"] = 1e6 * r["server_cpu_s"] / max(1, r["events"])
                r["loop_cpu_us_per_event"] = 1e6 * r["server_loop_cpu_s"] / max(1, r["events"])
                large = (f"  large requests ({args.large_events} events): p50 {r['large_p50_us'] / 1000:.1f} ms  "
                         f"p99 {r['large_p99_us'] / 1000:.1f} ms  max {r['large_max_us'] / 1000:.1f} ms"
                         if args.large_every else "")
                opened.setdefault(name, {}).setdefault(f"{rate:.0f}", []).append(r)
                print(f"{name:26s} open loop {rate:>9,.0f} events/s offered: p50 {r['p50_us'] / 1000:7.1f} ms  "
                      f"p99 {r['p99_us'] / 1000:7.1f} ms  p99.9 {r['p999_us'] / 1000:7.1f} ms  "
                      f"max {r['max_us'] / 1000:7.1f} ms  answered {r['answered']}/{r['requests']} "
                      f"{r['statuses']}  errors {r['errors']}  connections {r['connections']}  "
                      f"server CPU {r['cpu_us_per_event']:.1f} us/event (event loop {r['loop_cpu_us_per_event']:.1f})  "
                      f"client CPU {r['client_cpu_s']:.2f} s  load {r['loadavg_1m'][0]:.1f}-{r['loadavg_1m'][1]:.1f}"
                      + large, flush=True)
                continue
            secs = r["duration_us"] / 1e6
            r["requests_per_s"] = r["requests"] / secs
            r["events_per_s"] = r["requests_per_s"] * EVENTS_PER_REQUEST
            r["cpu_us_per_event"] = 1e6 * r["server_cpu_s"] / (r["requests"] * EVENTS_PER_REQUEST)
            r["loop_cpu_us_per_event"] = 1e6 * r["server_loop_cpu_s"] / (r["requests"] * EVENTS_PER_REQUEST)
            runs.setdefault(name, []).append(r)
            print(f"{name:26s} {r['events_per_s']:>9,.0f} events/s  p50 {r['p50_us'] / 1000:6.1f} ms  "
                  f"p99 {r['p99_us'] / 1000:6.1f} ms  non-2xx {r['non2xx']}  socket errors {r['socket_errors']}  "
                  f"server CPU {r['cpu_us_per_event']:.1f} us/event (event loop {r['loop_cpu_us_per_event']:.1f})  "
                  f"load {r['loadavg_1m'][0]:.1f}-{r['loadavg_1m'][1]:.1f}", flush=True)
        results = {}
        for name, rs in runs.items():
            rs.sort(key=lambda r: r["events_per_s"])
            results[name] = {**rs[(len(rs) - 1) // 2], "all_events_per_s": [round(r["events_per_s"]) for r in rs]}
            assert all(r["non2xx"] == 0 and r["socket_errors"] == 0 for r in rs), f"{name}: errors"
        if args.repeat > 1:
            print("median runs:")
            for name, r in results.items():
                print(f"{name:26s} {r['events_per_s']:>9,.0f} events/s  p50 {r['p50_us'] / 1000:6.1f} ms  "
                      f"p99 {r['p99_us'] / 1000:6.1f} ms  (all: {r['all_events_per_s']})")
        ceiling = max((r["events_per_s"] for n, r in results.items() if n.startswith("ceiling")), default=None)
        same_stack = results.get("ceiling-aiohttp", {}).get("events_per_s")
        summary = {"events_per_request": EVENTS_PER_REQUEST, "body_bytes": body_bytes, "event_bytes": event_bytes,
                   "connections": args.connections, "duration_s": args.duration, "partitions": args.partitions,
                   "repeat": args.repeat, "processes": procs, "cpus": os.cpu_count(),
                   "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
                   "results": results}
        summary["runs"] = runs   # every closed-loop run, per server, by events/s
        summary["open_loop_runs"] = opened   # every open-loop run, per server and offered rate
        if opened:   # per server and offered rate, the run with the median p99
            summary["open_loop"] = {name: {rate: sorted(rs, key=lambda r: r["p99_us"])[(len(rs) - 1) // 2]
                                           for rate, rs in by_rate.items()} for name, by_rate in opened.items()}
        if "stream-api-aiohttp" in results and same_stack:
            summary["ratio_to_ceiling_same_stack"] = results["stream-api-aiohttp"]["events_per_s"] / same_stack
            print(f"stream api / ceiling on aiohttp: {summary['ratio_to_ceiling_same_stack']:.2f}")
        if "stream-api-aiohttp" in results and ceiling:
            summary["ratio_to_best_ceiling"] = results["stream-api-aiohttp"]["events_per_s"] / ceiling
            print(f"stream api / best ceiling:       {summary['ratio_to_best_ceiling']:.2f}")
        if "stream-api-aiohttp" in results and "validate-aiohttp" in results:
            summary["ratio_to_validate_only"] = (results["stream-api-aiohttp"]["events_per_s"]
                                                 / results["validate-aiohttp"]["events_per_s"])
            print(f"stream api / ceiling + normalize: {summary['ratio_to_validate_only']:.2f}")
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
