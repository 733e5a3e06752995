"""Throughput of one worker process (validate + dedupe + export to S3) against a raw aiokafka loop.

usage:
    python bench/bench_worker.py [--events N] [--repeats R] [--variant ingest|valid|ingest-split|all]
                                 [--[no-]identity] [--profile | --no-profile] [--seed S] [--timeout SECONDS]
                                 [--set KEY=VALUE ...]

Everything runs on 127.0.0.1: a Tansu broker (fresh for every run) and one
moto_server (for the whole session), started with stream.devstack.services and
stopped by their PIDs, as is every worker, baseline and py-spy process started
here. Needs the dev extras (pip install -e '.[dev]'); --profile needs py-spy.

Variants (the same N events, ~1 KB, ~2% re-sent duplicates, Kafka timestamps
spread over the 3 hours before the current one, 4 partitions everywhere):

  ingest (figure A)  pre-loaded on events.ingest, one JSON event per message keyed
                     by device_id; the worker runs ingest, dedupe and export.
  valid  (figure B)  pre-loaded on events.valid as EventBatch records (built with
                     stream.events.ingest.ingest_records, <= 500 events each, explicit
                     partition); the worker's ingest stage has nothing to read.
  ingest-split (A2)  as ingest, but the worker runs as two processes on the same
                     machine: `--stages ingest` and `--stages dedupe,export` (CPU and
                     RSS are their sums). Not part of --variant all.

Each repeat: fresh broker, pre-load, then the raw baseline (bench/raw_baseline.py,
a separate process reading the same topic) and a fresh worker
(``python -m stream worker -c cfg.yaml``) with its own topic prefix, app id and
data dir; the order of the two alternates between repeats.

Worker throughput = N / (t_last - t_first), where
  t_first = the earliest Kafka timestamp of the worker's first output: offset 0
            of every partition of events.valid (A) or events.accepted (B), i.e.
            the moment the first batch left the first stage (faust start-up,
            group joins and imports are before it, so excluded);
  t_last  = the Kafka timestamp of the ledger record (exports.ledger) with which
            the sum of exported events reaches the expected count, i.e. the
            moment the last object was on S3 and recorded.
CPU seconds of the worker, broker and moto are sampled from /proc every 50 ms and
interpolated at t_first and t_last; peak RSS is VmHWM just before the worker stops.

Results go to stdout (a Markdown table) and to bench/results.json; worker logs
and py-spy output stay in the printed /tmp directory. With --profile (default)
one extra, untimed worker run per variant is sampled with py-spy from its first
output to its last ledger record; a summary goes to bench/profile-<variant>.txt.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import workload  # noqa: E402

from stream.devstack.services import Service, local_aws_env, start_broker, start_moto  # noqa: E402
from stream.export.ledger import LedgerRecord  # noqa: E402
from stream.kafka import ensure_topics, until_quiet  # noqa: E402
from stream.settings import load_settings  # noqa: E402

PROJECT = 424242
BUCKET = "stream-bench"
RAW_BUCKET = "raw-baseline"
PARTITIONS = 4
VARIANTS = {"ingest": "A", "valid": "B", "ingest-split": "A2"}


def reads_ingest(variant: str) -> bool:
    return variant in ("ingest", "ingest-split")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------- /proc ----------

def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def status_kb(pid: int, name: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    return 0


class CpuSampler(threading.Thread):
    """(wall time, cpu seconds) of some processes every ``every`` seconds."""

    def __init__(self, pids: dict[str, int], every: float = 0.05):
        super().__init__(daemon=True)
        self.pids, self.every = pids, every
        self.samples: dict[str, list[tuple[float, float]]] = {k: [] for k in pids}
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            now = time.time()
            for k, pid in self.pids.items():
                try:
                    self.samples[k].append((now, cpu_seconds(pid)))
                except (OSError, ValueError, IndexError):
                    pass
            self._halt.wait(self.every)

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def at(self, name: str, t: float) -> float:
        """CPU seconds of ``name`` at wall time ``t`` (linear between samples)."""
        s = self.samples[name]
        if not s:
            return 0.0
        if t <= s[0][0]:
            return s[0][1]
        for (t0, c0), (t1, c1) in zip(s, s[1:]):
            if t0 <= t <= t1:
                return c0 + (c1 - c0) * (t - t0) / (t1 - t0) if t1 > t0 else c1
        return s[-1][1]

    def between(self, name: str, t0: float, t1: float) -> float:
        return self.at(name, t1) - self.at(name, t0)


# ---------------------------------------------------------------- config ----------

def worker_config(bootstrap: str, s3_url: str, prefix: str, app_id: str, data_dir: Path,
                  identity: bool = True, overrides: dict[str, Any] | None = None) -> dict:
    cfg = {
        "kafka": {"bootstrap_servers": bootstrap, "session_timeout_s": 2, "heartbeat_interval_s": 0.5},
        "topics": {"prefix": prefix, "partitions": PARTITIONS, "ingest_partitions": PARTITIONS},
        "ingest": {"default_project": PROJECT},
        # on by default (the default configuration); --no-identity measures the spine: validate, dedupe, export
        "identity": {"enabled": identity},
        "s3": {"endpoint_url": s3_url},
        "worker": {"app_id": app_id, "data_dir": str(data_dir), "log_level": "info", "http_port": None},
        "projects": [{"id": PROJECT, "name": "bench"}],
        "destinations": [{"name": "bench", "project": PROJECT, "bucket": BUCKET, "prefix": prefix,
                          "encryption": {"type": "sse-s3"}, "close_grace_s": 1, "idle_close_s": 0}],
    }
    for dotted, value in (overrides or {}).items():     # --set section.key=value
        *path, last = dotted.split(".")
        node = cfg
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return cfg


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """--set KEY=VALUE items: a dotted setting and its value as YAML (``kafka.compression_type=none``)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set {item!r}: expected a dotted setting, '=' and a value, such as "
                             f"kafka.compression_type=none")
        out[key] = yaml.safe_load(value)
    return out


@dataclass
class Stack:
    workdir: Path
    moto: Service
    s3_url: str
    broker: Service | None = None

    @property
    def bootstrap(self) -> str:
        assert self.broker is not None
        return f"127.0.0.1:{self.broker.port}"


@dataclass
class Run:
    variant: str
    repeat: int
    prefix: str
    app_id: str
    cfg_path: Path
    data_dir: Path
    settings: object = None
    result: dict = field(default_factory=dict)


# ---------------------------------------------------------------- kafka helpers ----------

async def first_timestamps(bootstrap: str, topic: str, partitions: int, offsets: dict[int, int] | None = None,
                           timeout: float = 20) -> dict[int, int]:
    """Kafka timestamp (ms) of the record at ``offsets[p]`` (default 0) of each partition."""
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
    await c.start()
    try:
        want = {p: (offsets or {}).get(p, 0) for p in range(partitions)}
        tps = {p: TopicPartition(topic, p) for p in want}
        c.assign(list(tps.values()))
        for p, o in want.items():
            c.seek(tps[p], o)
        out: dict[int, int] = {}
        deadline = time.monotonic() + timeout
        while len(out) < len(want) and time.monotonic() < deadline:
            polled = await c.getmany(*[tps[p] for p in want if p not in out], timeout_ms=500, max_records=1)
            for tp, recs in polled.items():
                for r in recs:
                    if r.offset == want[tp.partition]:
                        out[tp.partition] = r.timestamp
        return out
    finally:
        await c.stop()


async def whole_topic(bootstrap: str, topic: str, partitions: int, fetch_max_bytes: int = 50 << 20,
                      max_partition_fetch_bytes: int = 8 << 20) -> AsyncIterator[Any]:
    """Every record of a whole topic (read after a run, untimed), until two polls in a row come back empty
    (``stream.kafka.until_quiet``): Tansu's end offsets can be short."""
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100,
                         fetch_max_bytes=fetch_max_bytes, max_partition_fetch_bytes=max_partition_fetch_bytes)
    await c.start()
    try:
        c.assign([TopicPartition(topic, p) for p in range(partitions)])
        await c.seek_to_beginning()
        async for m in until_quiet(c, quiet_polls=2, poll_ms=500):
            yield m
    finally:
        await c.stop()


async def topic_span(bootstrap: str, topic: str, partitions: int) -> dict:
    """First and last Kafka timestamp (s), records and bytes of a whole topic (read after the run, untimed)."""
    lo, hi, n, size = None, None, 0, 0
    async for m in whole_topic(bootstrap, topic, partitions):
        lo = m.timestamp if lo is None else min(lo, m.timestamp)
        hi = m.timestamp if hi is None else max(hi, m.timestamp)
        n += 1
        size += len(m.value or b"")
    return {"first": (lo or 0) / 1000, "last": (hi or 0) / 1000, "records": n, "bytes": size}


async def watch_ledger(bootstrap: str, topic: str, expected: int, proc: subprocess.Popen, timeout: float,
                       on_first_output=None, first_topic: str | None = None) -> dict:
    """Read exports.ledger until the exported events reach ``expected`` (or the worker dies / time runs out)."""
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
    await c.start()
    first = None
    if on_first_output is not None:
        first = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
        await first.start()
        first.assign([TopicPartition(first_topic, p) for p in range(PARTITIONS)])
        await first.seek_to_beginning()
    try:
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        await c.seek_to_beginning(tp)
        records: list[tuple[int, LedgerRecord]] = []
        total = 0
        deadline = time.monotonic() + timeout
        status = "ok"
        while total < expected:
            if proc.poll() is not None:
                status = f"worker exited with status {proc.returncode}"
                break
            if time.monotonic() > deadline:
                status = f"timeout after {timeout:.0f}s"
                break
            if first is not None:
                if await first.getmany(timeout_ms=20, max_records=1):
                    on_first_output()
                    await first.stop()
                    first = None
            polled = await c.getmany(timeout_ms=200)
            for recs in polled.values():
                for m in recs:
                    r = LedgerRecord.decode(m.value)
                    records.append((m.timestamp, r))
                    total += r.events
        return {"status": status, "exported": total, "ledger": records}
    finally:
        await c.stop()
        if first is not None:
            await first.stop()


# ---------------------------------------------------------------- one run ----------

def prepare(stack: Stack, variant: str, repeat: int, session: str, identity: bool = True,
            overrides: dict[str, Any] | None = None) -> Run:
    tag = f"{variant}{repeat}"
    prefix = f"bench-{session}-{tag}."
    run_dir = stack.workdir / tag
    run_dir.mkdir(parents=True, exist_ok=True)
    r = Run(variant, repeat, prefix, f"bench-{session}-{tag}", run_dir / "stream.yaml", run_dir / "data")
    cfg = worker_config(stack.bootstrap, stack.s3_url, prefix, r.app_id, r.data_dir, identity, overrides)
    r.cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    r.settings = load_settings(r.cfg_path)
    asyncio.run(ensure_topics(r.settings))
    return r


def run_raw(stack: Stack, r: Run, w: workload.Workload) -> dict:
    t = r.settings.topics
    topic = t.name("ingest") if reads_ingest(r.variant) else t.name("valid")
    cmd = [sys.executable, str(BENCH / "raw_baseline.py"), "--bootstrap", stack.bootstrap, "--s3", stack.s3_url,
           "--topic", topic, "--shape", "events" if reads_ingest(r.variant) else "batches", "--events", str(w.n),
           "--partitions", str(PARTITIONS), "--bucket", RAW_BUCKET, "--key-prefix", r.prefix,
           "--broker-pid", str(stack.broker.pid), "--data-dir", str(stack.workdir)]
    errf = open(stack.workdir / f"raw-{r.variant}{r.repeat}.log", "wb")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errf, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"the raw baseline (pid {proc.pid}) did not finish in 600 s")
    finally:
        errf.close()
    if proc.returncode != 0:
        raise RuntimeError(f"the raw baseline failed (status {proc.returncode}); see {errf.name}")
    res = json.loads(out.decode().strip().splitlines()[-1])
    if res["kept"] != w.originals:
        res["warning"] = f"kept {res['kept']} events, expected {w.originals}"
    return res


def stop_proc(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_worker(stack: Stack, r: Run, w: workload.Workload, timeout: float, profile_to: Path | None = None) -> dict:
    env = {**os.environ, **local_aws_env()}
    log_path = stack.workdir / f"worker-{r.variant}{r.repeat}{'-profile' if profile_to else ''}.log"
    logf = open(log_path, "wb")
    t_spawn = time.time()
    split = r.variant == "ingest-split"
    cmd = [sys.executable, "-m", "stream", "worker", "-c", str(r.cfg_path)]
    proc = subprocess.Popen(cmd + (["--stages", "dedupe,export"] if split else []), stdout=logf,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env)
    others = [subprocess.Popen(cmd + ["--stages", "ingest"], stdout=logf, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True, env=env)] if split else []
    pids = {"worker": proc.pid, "broker": stack.broker.pid, "moto": stack.moto.pid}
    pids.update({f"worker{i + 2}": o.pid for i, o in enumerate(others)})
    sampler = CpuSampler(pids)
    sampler.start()
    t = r.settings.topics
    first_topic = t.name("valid") if reads_ingest(r.variant) else t.name("accepted")
    spy: list[subprocess.Popen] = []

    def start_spy() -> None:
        spy.append(subprocess.Popen(
            ["py-spy", "record", "--pid", str(proc.pid), "--rate", "100", "--format", "raw", "--threads",
             "--nonblocking", "-o", str(profile_to)], stdout=subprocess.DEVNULL,
            stderr=open(stack.workdir / "py-spy.log", "ab"), stdin=subprocess.DEVNULL, start_new_session=True))

    hwm_kb = 0
    try:
        watched = asyncio.run(watch_ledger(stack.bootstrap, t.name("export_ledger"), w.originals, proc, timeout,
                                           start_spy if profile_to else None, first_topic))
        hwm_kb = sum(status_kb(p.pid, "VmHWM") for p in [proc, *others] if p.poll() is None)
    finally:
        try:
            for s in spy:
                stop_proc(s, signal.SIGINT, 60)
            sampler.stop()
            worker_cpu_total = sum(sampler.samples[k][-1][1] for k in pids if k.startswith("worker")
                                   and sampler.samples[k])
        finally:
            for p in [proc, *others]:
                stop_proc(p)
            logf.close()
    res: dict = {"status": watched["status"], "exported": watched["exported"], "expected": w.originals,
                 "log": str(log_path), "peak_rss_mb": hwm_kb / 1024, "worker_cpu_total_s": worker_cpu_total}
    ledger = watched["ledger"]
    if watched["status"] != "ok":
        return res
    firsts = asyncio.run(first_timestamps(stack.bootstrap, first_topic, PARTITIONS))
    t_first = min(firsts.values()) / 1000
    t_last = max(ts for ts, _ in ledger) / 1000
    # when the last accepted batch was written: the idle-close rule adds the time after it
    last_end = {}
    for _, rec in ledger:
        last_end[rec.partition] = max(last_end.get(rec.partition, -1), rec.end_offset)
    lasts = asyncio.run(first_timestamps(stack.bootstrap, t.name("accepted"), PARTITIONS, last_end))
    t_last_accepted = max(lasts.values()) / 1000 if lasts else float("nan")
    wall = t_last - t_first
    spans = {"valid": asyncio.run(topic_span(stack.bootstrap, t.name("valid"), PARTITIONS))} \
        if reads_ingest(r.variant) else {}
    spans["accepted"] = asyncio.run(topic_span(stack.bootstrap, t.name("accepted"), PARTITIONS))
    res["timeline_s"] = {f"{k}_{e}": round(v[e] - t_first, 3) for k, v in spans.items() for e in ("first", "last")}
    res["timeline_s"]["ledger_last"] = round(t_last - t_first, 3)
    res["topic_bytes"] = {k: v["bytes"] for k, v in spans.items()}
    res["topic_records"] = {k: v["records"] for k, v in spans.items()}
    marks = log_times(log_path)
    res["milestones_after_first_output_s"] = {k: round(v - t_first, 3) for k, v in marks.items()}
    reasons: dict[str, int] = {}
    for _, rec in ledger:
        reasons[rec.reason] = reasons.get(rec.reason, 0) + 1
    res.update({
        "wall_s": wall, "events_per_s": w.n / wall, "startup_s": t_first - t_spawn,
        "tail_after_last_accepted_s": t_last - t_last_accepted, "objects": len(ledger), "close_reasons": reasons,
        "cpu_s": sum(sampler.between(k, t_first, t_last) for k in pids if k.startswith("worker")),
        "broker_cpu_s": sampler.between("broker", t_first, t_last),
        "moto_cpu_s": sampler.between("moto", t_first, t_last)})
    return res


LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})\]")


def log_times(path: Path) -> dict[str, float]:
    """Wall times of the worker's start-up milestones, from its log (local time, ms)."""
    marks = {"faust_ready": "[^Worker]: Ready", "ingest_reading": "ingest: reading",
             "export_reading": "export bench: reading"}
    out: dict[str, float] = {}
    for line in path.read_text(errors="replace").splitlines():
        m = LOG_TIME.match(line)
        if not m:
            continue
        for k, text in marks.items():
            if k not in out and text in line:
                out[k] = time.mktime(time.strptime(m[1], "%Y-%m-%d %H:%M:%S")) + int(m[2]) / 1000
    return out


def clean(r: Run) -> None:
    shutil.rmtree(r.data_dir, ignore_errors=True)


# ---------------------------------------------------------------- report ----------

def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def summarise(results: list[dict], n: int) -> str:
    lines = ["| figure | pipeline | events/s (median) | runs (events/s) | ratio worker/raw | peak RSS MB | "
             "CPU s: process / broker | µs CPU per event |", "|---|---|---|---|---|---|---|---|"]
    for variant, fig in VARIANTS.items():
        rs = [x for x in results if x["variant"] == variant]
        if not rs:
            continue
        rows = {}
        for kind in ("raw", "worker"):
            ok = [x[kind] for x in rs if x[kind].get("status", "ok") == "ok" and "events_per_s" in x[kind]]
            rows[kind] = ok
        raw_m = med([x["events_per_s"] for x in rows["raw"]])
        worker_label = "stream worker (2 processes)" if variant == "ingest-split" else "stream worker (1 process)"
        for kind, label in (("raw", "raw aiokafka loop"), ("worker", worker_label)):
            ok = rows[kind]
            if not ok:
                lines.append(f"| {fig} ({variant}) | {label} | failed | | | | | |")
                continue
            eps = med([x["events_per_s"] for x in ok])
            runs = ", ".join(f"{x['events_per_s']:,.0f}" for x in ok)
            ratio = f"{eps / raw_m:.2f}" if kind == "worker" else "1.00"
            lines.append(
                f"| {fig} ({variant}) | {label} | {eps:,.0f} | {runs} | {ratio} | "
                f"{med([x['peak_rss_mb'] for x in ok]):,.0f} | {med([x['cpu_s'] for x in ok]):.1f} / "
                f"{med([x['broker_cpu_s'] for x in ok]):.1f} | {1e6 * med([x['cpu_s'] for x in ok]) / n:.0f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description="Worker throughput vs a raw aiokafka loop (see the module docstring).")
    ap.add_argument("--events", type=int, default=200_000, help="events per run (default 200000)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per variant and pipeline (default 3)")
    ap.add_argument("--variant", choices=["ingest", "valid", "ingest-split", "all"], default="all")
    ap.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True,
                    help="one extra py-spy-sampled worker run per variant (default on)")
    ap.add_argument("--identity", action=argparse.BooleanOptionalAction, default=True,
                    help="the worker's identity stage (default on, as deployed; --no-identity: the spine alone)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a worker setting, dotted, with its value as YAML (kafka.compression_type=none); repeatable")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--timeout", type=float, default=300, help="seconds a worker run may take (default 300)")
    ap.add_argument("--results", default=str(BENCH / "results.json"))
    a = ap.parse_args()
    overrides = parse_overrides(a.set)
    variants = ["ingest", "valid"] if a.variant == "all" else [a.variant]
    if a.profile and shutil.which("py-spy") is None:
        ap.error("--profile needs py-spy on PATH (pip install py-spy), or pass --no-profile")

    os.environ.update(local_aws_env())
    session = uuid.uuid4().hex[:6]
    workdir = Path(tempfile.mkdtemp(prefix=f"stream-bench-{session}-"))
    log(f"work dir (logs, configs) {workdir}")
    t0 = time.monotonic()
    w = workload.generate(a.events, PARTITIONS, seed=a.seed)
    log(f"generated {w.n:,} events ({w.mean_bytes:,.0f} bytes on average, {w.n - w.originals:,} duplicates) "
        f"in {time.monotonic() - t0:.1f}s")
    batched = None
    if "valid" in variants:
        t0 = time.monotonic()
        batched = workload.batches(w, "events.ingest", PROJECT, PARTITIONS)
        log(f"built {len(batched):,} EventBatch records ({w.n / len(batched):.0f} events each on average, "
            f"{sum(len(v) for _, v, _ in batched) / w.n:,.0f} bytes per event) in {time.monotonic() - t0:.1f}s")

    results: list[dict] = []
    stack = Stack(workdir, start_moto(workdir), "")
    stack.s3_url = f"http://127.0.0.1:{stack.moto.port}"
    log(f"moto_server {stack.s3_url} pid {stack.moto.pid}")
    s3 = boto3.client("s3", endpoint_url=stack.s3_url)
    s3.create_bucket(Bucket=BUCKET)
    s3.create_bucket(Bucket=RAW_BUCKET)
    profiles: dict[str, str] = {}
    try:
        for variant in variants:
            for rep in range(a.repeats + (1 if a.profile else 0)):
                profiling = rep == a.repeats
                stack.broker = start_broker(workdir)
                r = None
                try:
                    r = prepare(stack, variant, rep, session, a.identity, overrides)
                    t0 = time.monotonic()
                    if reads_ingest(variant):
                        asyncio.run(workload.preload_events(stack.bootstrap, r.settings.topics.name("ingest"), w))
                    else:
                        asyncio.run(workload.preload_batches(stack.bootstrap, r.settings.topics.name("valid"),
                                                             batched))
                    log(f"{variant} run {rep}{' (profile)' if profiling else ''}: broker pid {stack.broker.pid}, "
                        f"pre-loaded in {time.monotonic() - t0:.1f}s")
                    if profiling:
                        raw_path = workdir / f"profile-{variant}.raw"
                        res = run_worker(stack, r, w, a.timeout, raw_path)
                        log(f"  profiled worker: {res.get('events_per_s', 0):,.0f} ev/s ({res['status']})")
                        if raw_path.exists():
                            import profile_summary
                            out = BENCH / f"profile-{variant}.txt"
                            out.write_text(profile_summary.summarise(
                                raw_path, f"variant {variant} ({VARIANTS[variant]}), {w.n:,} events, "
                                f"worker at {res.get('events_per_s', 0):,.0f} ev/s under py-spy"))
                            profiles[variant] = str(out)
                        continue
                    one = {"variant": variant, "repeat": rep, "identity": a.identity, "settings": overrides}
                    order = ("raw", "worker") if rep % 2 == 0 else ("worker", "raw")
                    for kind in order:
                        if kind == "raw":
                            one["raw"] = run_raw(stack, r, w)
                            x = one["raw"]
                            log(f"  raw baseline: {x['events_per_s']:,.0f} ev/s, {x['kept']:,} kept, cpu "
                                f"{x['cpu_s']:.1f}s, broker cpu {x['broker_cpu_s']:.1f}s, "
                                f"rss {x['peak_rss_mb']:.0f} MB")
                        else:
                            one["worker"] = run_worker(stack, r, w, a.timeout)
                            x = one["worker"]
                            if x["status"] != "ok":
                                log(f"  worker FAILED: {x['status']}, exported {x['exported']:,} of "
                                    f"{x['expected']:,}; log {x['log']}")
                            else:
                                log(f"  worker: {x['events_per_s']:,.0f} ev/s (wall {x['wall_s']:.2f}s, start-up "
                                    f"{x['startup_s']:.1f}s, idle-close tail {x['tail_after_last_accepted_s']:.2f}s), "
                                    f"{x['exported']:,} exported in {x['objects']} objects, cpu {x['cpu_s']:.1f}s, "
                                    f"broker cpu {x['broker_cpu_s']:.1f}s, rss {x['peak_rss_mb']:.0f} MB; "
                                    f"timeline {x['timeline_s']}")
                    results.append(one)
                finally:
                    if r is not None:
                        clean(r)
                    stack.broker.stop()
                    stack.broker = None
    finally:
        if stack.broker is not None:
            stack.broker.stop()
        stack.moto.stop()
    table = summarise(results, w.n)
    meta = {"events": w.n, "mean_event_bytes": w.mean_bytes, "duplicates": w.n - w.originals,
            "repeats": a.repeats, "cpus": os.cpu_count(), "python": sys.version.split()[0], "workdir": str(workdir),
            "profiles": profiles}
    Path(a.results).write_text(json.dumps({"meta": meta, "runs": results}, indent=1, default=str))
    print()
    print(table)
    print(f"\nresults: {a.results}; logs: {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
