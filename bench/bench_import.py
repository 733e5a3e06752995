"""S3 import: rows/s of one worker against a raw loop, PutObject-to-row lag, and memory on a large file.

    python bench/bench_import.py [--files F] [--rows R] [--repeats N] [--lag-files L] [--lag-every S]
                                 [--lag-rows R] [--gigabytes G]
                                 [--parts throughput,lag,large,worker-profile,profile,converter,pipeline]
                                 [--quick] [--seed S] [--before CHECKOUT] [--processes N,M]

About 8.5 minutes on 2 cores with --gigabytes 0.5, about 10.5 with the defaults (the large file is imported at
~20,000 rows/s: 0.5 GB more is 2 minutes more), about 4 with --quick (6 files x 20,000 rows, 2 repeats, 10 lag
files, 0.25 GB).

One Tansu broker and one moto_server (S3 and SQS) for the session, started here and stopped by PID, as is every
worker and raw-loop process. Every run has its own app id, topic prefix and data dir; its topics are deleted
after it (the broker keeps them in memory). Workers run ``python -m stream worker -c <cfg> --stages import``
(the import agent alone; it creates its topics at start). The source's ``rate.events_per_s`` is set to 1e9 so
that the limiter (default 30,000 rows/s) never caps a measurement; ``files_per_s`` keeps its default (50).

Rows: gzip JSON lines (isal, level 1), ten fields each -- event, user, device, ts (epoch ms within the last hour)
and six properties (page, plan, price, qty, campaign, file) -- about 175 bytes a row uncompressed; the converter
maps them to event_type, user_id, device_id, time and event_properties (six keys). Every row converts and
validates; nothing is dead-lettered.

throughput   ``--files`` files of ``--rows`` rows under tput/, uploaded once. Each repeat runs, in alternating
             order, a fresh worker and the raw loop over the same objects.
             Worker: discovery records (found_by "scan", with size and etag) are produced onto imports.files
             before it starts. rows/s = rows / (t_last - t_first), where t_first is the earliest Kafka
             timestamp on events.valid (the first batch of the first file left the worker: its start-up,
             group join and the reading and converting of the first 2,000-row chunk come before it) and t_last
             the largest ``at_ms`` of the files' done states on ``<app_id>-import-files-changelog`` (the moment
             the last file's last batch was acknowledged by the broker: the agent writes the state only then).
             The run is checked exactly: every file done, the states' ``imported`` sum and the rows of every
             EventBatch on events.valid (read after the run, untimed) both equal the rows written. Also
             reported: the same rows over the time from the process spawn to t_last (start-up included).
             Raw loop (``--raw-loop``, a separate process): list the objects, then for each in turn GetObject
             (aiobotocore), read the body, gunzip (isal), split lines, orjson.loads each, append the line to
             a per-partition batch (crc32 of the device % 4) and produce each 500-line batch with the
             project's producer settings (stream.kafka.producer: acks=all, zstd, linger 5 ms) to a scratch
             topic, at most 4 chunks of 2,000 rows awaiting their acks, as the agent does. Timed from the
             first GetObject to the last ack. Its batches carry the raw lines (~175 bytes a row), the
             worker's the export rows (~1.3 KB a row). Medians of the repeats and the ratio of the medians.

             With ``--processes 0,1,2``, each repeat runs this checkout's worker once per value of
             ``worker.import_processes`` (in alternating order) beside the raw loop: the worker's CPU is then
             its process's and its conversion processes' (``/proc/<pid>/task/*/children``), and its own
             process's CPU is reported apart (``main_cpu_us_per_row``).

lag          A bucket of its own with a notification configuration (put_bucket_notification_configuration,
             s3:ObjectCreated:* under lag/) to a moto SQS queue; the source has that queue_url and no scan. A
             warm-up file goes first (its rows seen = the worker is polling); then ``--lag-files`` files of
             ``--lag-rows`` rows, one every ``--lag-every`` s. Each file's lag is from put_object returning to
             the moment a consumer tailing events.valid (fetch_max_wait 20 ms) has received the file's last
             row (rows told apart by event_properties.file). The Kafka timestamp of that last batch is
             reported beside it. The poller's long poll is WaitTimeSeconds = min(20, s3.read_timeout_s - 5).

large        One file of about ``--gigabytes`` uncompressed, written to a spool file and uploaded in 64 MB
             parts. A fresh worker starts; once faust is ready (and 3 s more) its idle VmRSS and VmHWM are
             read; then the file's discovery record is produced. VmRSS is sampled every 0.2 s while it imports;
             peak RSS is the worker's VmHWM, read from /proc/<pid>/status before it is stopped (not ru_maxrss,
             which a vfork'd child inherits from this process). rows/s as in throughput (first batch on
             events.valid to the done state's at_ms); the done state's ``imported`` must equal the rows written.

worker-profile  One more worker, untimed, run under ``python -m cProfile`` importing the first 5 throughput
             files: the main thread's busy time (its waits in epoll left out) by module, its top functions, and
             the cumulative time of the import's own steps per row. cProfile inflates Python-heavy code, so this
             says where the time goes, the profile part below how much each step costs.

profile      In this process, no Kafka: 50,000 rows through RowReader (gunzip, lines, JSON), rows.convert
             (converter, ids, normalize), batch.group, EventBatch.encode and zstd (cramjam, what aiokafka
             compresses with), in 2,000-row chunks as the agent does: each stage timed alone (best of 3), the
             converter, row ids and normalize also apart, then cProfile of the whole, top functions by own time.
             Alternatives timed beside them, on the same rows: the ten fields by plain dict lookups, normalize's
             msgspec fast path (normalize_message on the converted event re-encoded with orjson; checked to
             write the same lines), the UUID parse of the row's uuid; and the cost of opening an S3 client
             (stream.s3.client.target_client), which the agent does once per file.

pipeline     No Kafka: the importer's pure steps on ``--rows`` of the throughput part's rows, in a child process
             per tree (this checkout, and ``--before``'s in turn, ``--repeats`` rounds): read 1 MiB of gzip at a
             time into runs (gunzip, lines, JSON), cut chunks of 2,000 rows, convert, put the chunk's new devices'
             partitions in partition_for's memo (where the tree does), group and encode the batches, the chunk's
             rows and events dropped after it, as the agent does; partition_for's memo emptied at each pass (most
             devices new, as in the throughput part). Best of 5 passes, process CPU µs a row, the collector on
             after ``gc.freeze()`` as in the worker, and the collector's runs by generation.

converter    In this process, no Kafka: the benchmark's converter on 20,000 of its rows, ``Converter.__call__`` (a
             dict row through the function generated for the converter) against ``_evaluate`` (entry by entry),
             five alternating rounds, best of 7 each, process CPU time.

CPU seconds of the worker, broker and moto are sampled from /proc every 50 ms and interpolated at t_first and
t_last. Results go to stdout and bench/results-import.json; logs and configs stay in the printed /tmp directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import math
import os
import pstats
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections import deque
from pathlib import Path

import boto3
import orjson
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from isal import igzip, isal_zlib

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from bench_worker import CpuSampler, cpu_seconds, first_timestamps, log, status_kb, stop_proc, whole_topic
from profile_summary import summarise

from stream.devstack.services import local_aws_env, start_broker, start_moto
from stream.events.batch import decode_rows
from stream.imports.files import FileState, ImportFile, State
from stream.imports.importer import CHUNK_ROWS
from stream.kafka import ensure_topics
from stream.settings import load_settings

PROJECT = 424242
SOURCE = "bench"
PARTITIONS = 4
RATE = 1e9            # rows/s: far above anything measured here, so the source's limiter never waits
BATCH_ROWS = 500      # ingest.batch_max_events, the worker's batch size
MAX_CHUNKS_IN_FLIGHT = 4
PROPS = ("page", "plan", "price", "qty", "campaign", "file")
CONVERTER = {"converterConfig": {
    "fileType": "json", "compressionType": "gzip",
    "convertToAmplitudeFunc": {"event_type": "event", "user_id": "user", "device_id": "device", "time": "ts",
                               "event_properties": {k: k for k in PROPS}}}}
EVENTS = ["Play", "Pause", "View Page", "Add To Cart", "Search", "Purchase", "Sign Up", "Share"]
PAGES = ["/", "/pricing", "/product/12345", "/cart", "/checkout", "/search?q=running+shoes", "/account/settings"]
PLANS = ["free", "pro", "team", "enterprise"]
CAMPAIGNS = ["spring_sale", "retarget_q2", "brand", "newsletter_w14", "none"]


# ---------------------------------------------------------------- rows ----------

def rows_jsonl(rnd: random.Random, n: int, tag: str, now_ms: int) -> bytes:
    """``n`` JSON lines of ten fields; ``tag`` is every row's ``file`` property."""
    ev, page, plan, camp = (rnd.choices(pool, k=n) for pool in (EVENTS, PAGES, PLANS, CAMPAIGNS))
    dumps, rr = orjson.dumps, rnd.randrange
    lines = [dumps({"event": ev[i], "user": f"user-{rr(100_000):06d}", "device": f"device-{rr(250_000):07d}",
                    "ts": now_ms - rr(3_600_000), "page": page[i], "plan": plan[i], "price": rr(1, 50_000) / 100,
                    "qty": rr(1, 10), "campaign": camp[i], "file": tag}) for i in range(n)]
    return b"\n".join(lines) + b"\n"


def gz(data: bytes) -> bytes:
    return igzip.compress(data, 1)


# ---------------------------------------------------------------- deployment ----------

def source_cfg(bucket: str, prefix: str, queue_url: str | None = None) -> dict:
    src = {"name": SOURCE, "project": PROJECT, "bucket": bucket, "prefix": prefix, "converter": CONVERTER,
           "rate": {"events_per_s": RATE}, "scan": {"enabled": False}}
    if queue_url:
        src["queue_url"] = queue_url
    return src


def deployment(workdir: Path, bootstrap: str, s3_url: str, run: str, src: dict, processes: int | None = None):
    worker = {"app_id": run, "data_dir": str(workdir / run / "data"), "log_level": "info", "http_port": None}
    if processes is not None:   # worker.import_processes (a checkout from before the setting gets none)
        worker["import_processes"] = processes
    cfg = {
        "kafka": {"bootstrap_servers": bootstrap, "session_timeout_s": 6, "heartbeat_interval_s": 1},
        "topics": {"prefix": f"{run}.", "partitions": PARTITIONS},
        "s3": {"endpoint_url": s3_url},
        "worker": worker,
        "projects": [{"id": PROJECT, "name": "bench"}],
        "sources": [src],
    }
    path = workdir / f"{run}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    settings = load_settings(path)
    asyncio.run(ensure_topics(settings))
    return path, settings


def changelog(run: str) -> str:
    return f"{run}-import-files-changelog"   # the processed-files table's changelog: <worker.app_id>-import-...


async def drop_topics(bootstrap: str, run: str) -> int:
    """Delete every topic of a run (its prefix, the changelog, faust's internal ones): the broker is in memory."""
    a = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await a.start()
    try:
        names = [t for t in await a.list_topics() if t.startswith(run)]
        if names:
            await a.delete_topics(names)
        return len(names)
    finally:
        await a.close()


def drop(bootstrap: str, run: str) -> None:
    try:
        asyncio.run(drop_topics(bootstrap, run))
    except Exception as exc:   # noqa: BLE001 -- only memory is at stake
        log(f"  (could not delete the topics of {run}: {exc})")


async def discover(bootstrap: str, topic: str, records: list[ImportFile]) -> float:
    """Produce discovery records as the scan writes them; the time the last was acknowledged."""
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await p.start()
    try:
        for r in records:
            await p.send_and_wait(topic, r.encode(), key=r.kafka_key)
        return time.time()
    finally:
        await p.stop()


# ---------------------------------------------------------------- processes ----------

class Worker:
    """``stream worker --stages import``, its log, and its memory read from /proc."""

    def __init__(self, workdir: Path, cfg: Path, name: str, profile_to: Path | None = None,
                 tree: Path | None = None) -> None:
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 -- the worker's stdout until stop()
        self.t_spawn = time.time()
        under = ["-m", "cProfile", "-o", str(profile_to)] if profile_to else []
        env = {**os.environ, **local_aws_env(), **({"PYTHONPATH": str(tree)} if tree else {})}
        self.proc = subprocess.Popen([sys.executable, *under, "-m", "stream", "worker", "-c", str(cfg), "--stages",
                                      "import"],
                                     stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, env=env, cwd=tree)
        self.max_rss_kb = 0
        self.rss_trace: list[tuple[float, int]] = []

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def sample(self) -> None:
        if self.alive():
            try:
                rss = status_kb(self.pid, "VmRSS")
            except OSError:
                return
            self.max_rss_kb = max(self.max_rss_kb, rss)
            if not self.rss_trace or time.time() - self.rss_trace[-1][0] >= 5:
                self.rss_trace.append((time.time(), rss))

    def ready(self) -> bool:
        return "Worker]: Ready" in self.log_path.read_text(errors="replace")     # faust's [^StreamWorker]: Ready

    def stop(self) -> None:
        try:
            stop_proc(self.proc)
        finally:
            self._log.close()


async def await_files(bootstrap: str, topic: str, keys: set[bytes], w: Worker, timeout: float,
                      every: float = 0.2) -> tuple[str, dict[bytes, FileState]]:
    """Follow the processed-files changelog until every key has a state (or the worker dies / time runs out),
    sampling the worker's memory meanwhile."""
    # metadata refreshed every second: the topic is created while this waits for it, and a partition whose
    # leader was not known yet would otherwise wait for aiokafka's next refresh (5 minutes by default)
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100,
                         metadata_max_age_ms=1000)
    await c.start()
    states: dict[bytes, FileState] = {}
    deadline = time.monotonic() + timeout
    try:
        while topic not in await c.topics() or not c.partitions_for_topic(topic):   # faust creates it at start
            w.sample()
            if not w.alive():
                return f"worker exited with status {w.proc.returncode}", states
            if time.monotonic() > deadline:
                return f"timeout after {timeout:.0f}s (no changelog)", states
            await asyncio.sleep(every)
        c.assign([TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic))])
        await c.seek_to_beginning()
        while not keys <= states.keys():
            w.sample()
            if not w.alive():
                return f"worker exited with status {w.proc.returncode}", states
            if time.monotonic() > deadline:
                return f"timeout after {timeout:.0f}s", states
            for recs in (await c.getmany(timeout_ms=int(every * 1000))).values():
                for m in recs:
                    if m.value is not None:
                        states[m.key] = FileState.decode(m.value)
        return "ok", states
    finally:
        await c.stop()


async def valid_rows(bootstrap: str, topic: str) -> dict:
    """Rows, records and the first Kafka timestamp of a whole events.valid (read after a run, untimed)."""
    rows = records = 0
    first = None
    async for m in whole_topic(bootstrap, topic, PARTITIONS, fetch_max_bytes=64 << 20,
                               max_partition_fetch_bytes=16 << 20):
        rows += decode_rows(m.value).count
        records += 1
        first = m.timestamp if first is None else min(first, m.timestamp)
    return {"rows": rows, "records": records, "first": (first or 0) / 1000}


# ---------------------------------------------------------------- throughput ----------

def upload_throughput(s3, bucket: str, files: int, rows: int, seed: int) -> tuple[list[ImportFile], int, int]:
    rnd = random.Random(seed)
    now = int(time.time() * 1000)
    records, raw, packed = [], 0, 0
    t = time.monotonic()
    for i in range(files):
        data = rows_jsonl(rnd, rows, f"t{i:03d}", now)
        body = gz(data)
        key = f"tput/part-{i:05d}.json.gz"
        etag = s3.put_object(Bucket=bucket, Key=key, Body=body)["ETag"].strip('"')
        records.append(ImportFile(SOURCE, bucket, key, now, "scan", len(body), etag))
        raw += len(data)
        packed += len(body)
        if (i + 1) % 5 == 0 or i + 1 == files:
            log(f"  uploaded {i + 1}/{files} files ({(i + 1) * rows:,} rows, {raw / 1e6:.0f} MB, "
                f"{packed / 1e6:.0f} MB gzip) in {time.monotonic() - t:.0f}s")
    return records, raw, packed


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and of its children (the worker's import processes) that are alive."""
    total = cpu_seconds(pid)
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                for child in f.read().split():
                    with contextlib.suppress(OSError, ValueError, IndexError):
                        total += cpu_seconds(int(child))
    return total


class TreeSampler(CpuSampler):
    """CpuSampler whose "worker" is the worker's process and its children."""

    def run(self) -> None:
        while not self._halt.is_set():
            now = time.time()
            for k, pid in self.pids.items():
                try:
                    self.samples[k].append((now, tree_cpu_seconds(pid) if k == "worker" else cpu_seconds(pid)))
                except (OSError, ValueError, IndexError):
                    pass
            self._halt.wait(self.every)


def worker_run(workdir: Path, stack: dict, run: str, bucket: str, records: list[ImportFile], rows: int,
               timeout: float, profile_to: Path | None = None, tree: Path | None = None,
               spy_to: Path | None = None, processes: int | None = None) -> dict:
    cfg, settings = deployment(workdir, stack["bootstrap"], stack["s3"], run, source_cfg(bucket, "tput/"), processes)
    asyncio.run(discover(stack["bootstrap"], settings.topics.name("import_files"), records))
    w = Worker(workdir, cfg, run, profile_to, tree)
    sampler = TreeSampler({"worker": w.pid, "main": w.pid, "broker": stack["broker_pid"], "moto": stack["moto_pid"]})
    sampler.start()
    spy = None
    if spy_to is not None:   # py-spy on the whole run (start-up included), raw collapsed stacks
        py_spy = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or "py-spy"
        spy = subprocess.Popen([py_spy, "record", "--pid", str(w.pid), "--format", "raw", "--rate", "100",
                                "--nonblocking", "-o", str(spy_to)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        status, states = asyncio.run(await_files(stack["bootstrap"], changelog(run), {r.kafka_key for r in records},
                                                 w, timeout))
        hwm = status_kb(w.pid, "VmHWM") if w.alive() else 0
    finally:
        sampler.stop()
        w.stop()
        if spy is not None:
            spy.wait(30)   # py-spy writes its file once the process it samples has exited
    res: dict = {"status": status, "files_done": sum(s.state is State.DONE for s in states.values()),
                 "log": str(w.log_path), "peak_rss_mb": hwm / 1024, "loadavg_end": os.getloadavg()}
    if status != "ok":
        return res
    seen = asyncio.run(valid_rows(stack["bootstrap"], settings.topics.name("valid")))
    imported = sum(s.imported for s in states.values())
    t_first, t_last = seen["first"], max(s.at_ms for s in states.values()) / 1000
    wall = t_last - t_first
    cpu = sampler.between("worker", t_first, t_last)
    ends = sorted(s.at_ms / 1000 - t_first for s in states.values())
    res.update({"rows": rows, "imported": imported, "valid_rows": seen["rows"], "valid_records": seen["records"],
                "wall_s": wall, "rows_per_s": rows / wall, "startup_s": t_first - w.t_spawn,
                "rows_per_s_from_spawn": rows / (t_last - w.t_spawn), "cpu_s": cpu, "cpu_util": cpu / wall,
                "cpu_us_per_row": 1e6 * cpu / rows,
                "main_cpu_us_per_row": 1e6 * sampler.between("main", t_first, t_last) / rows,
                "processes": processes, "broker_cpu_s": sampler.between("broker", t_first, t_last),
                "moto_cpu_s": sampler.between("moto", t_first, t_last),
                "file_done_after_s": [round(x, 2) for x in ends]})
    if imported != rows or seen["rows"] != rows or res["files_done"] != len(records):
        res["status"] = (f"count mismatch: {res['files_done']} files done, imported {imported}, "
                         f"{seen['rows']} rows on events.valid, {rows} written")
    return res


def raw_run(workdir: Path, stack: dict, run: str, bucket: str, rows: int, timeout: float) -> dict:
    topic = f"{run}.raw-scratch"

    async def create() -> None:
        a = AIOKafkaAdminClient(bootstrap_servers=stack["bootstrap"])
        await a.start()
        try:
            await a.create_topics([NewTopic(topic, PARTITIONS, 1)])
        finally:
            await a.close()
    asyncio.run(create())
    errf = open(workdir / f"{run}-raw.log", "wb")  # noqa: SIM115 -- closed below
    t_spawn = time.time()
    proc = subprocess.Popen([sys.executable, __file__, "--raw-loop", "--bootstrap", stack["bootstrap"], "--s3",
                             stack["s3"], "--bucket", bucket, "--key-prefix", "tput/", "--topic", topic],
                            stdout=subprocess.PIPE, stderr=errf, stdin=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, **local_aws_env()})
    sampler = CpuSampler({"raw": proc.pid, "broker": stack["broker_pid"], "moto": stack["moto_pid"]})
    sampler.start()
    hwm = 0
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                hwm = max(hwm, status_kb(proc.pid, "VmHWM"))   # 0 once it is a zombie
            except OSError:
                pass
            time.sleep(0.1)
        if proc.poll() is None:
            stop_proc(proc)
            raise RuntimeError(f"the raw loop did not finish in {timeout:.0f}s")
        out = proc.stdout.read().decode()
    finally:
        sampler.stop()
        errf.close()
    t_exit = time.time()
    if proc.returncode != 0:
        raise RuntimeError(f"the raw loop failed (status {proc.returncode}); see {errf.name}")
    res = json.loads(out.strip().splitlines()[-1])
    res.update({"status": "ok" if res["rows"] == rows else f"read {res['rows']} rows, {rows} written",
                "peak_rss_mb": hwm / 1024, "startup_s": res["t_first"] - t_spawn,
                "rows_per_s_from_spawn": rows / (res["t_last"] - t_spawn), "process_s": t_exit - t_spawn,
                "broker_cpu_s": sampler.between("broker", res["t_first"], res["t_last"]),
                "moto_cpu_s": sampler.between("moto", res["t_first"], res["t_last"])})
    return res


async def raw_loop(a: argparse.Namespace) -> dict:
    """The raw loop itself (runs in its own process; see the module docstring)."""
    import aiobotocore.session

    from stream.kafka import producer
    from stream.settings import KafkaSettings

    session = aiobotocore.session.get_session()
    async with session.create_client("s3", endpoint_url=a.s3, region_name="us-east-1") as s3:
        listing = await s3.list_objects_v2(Bucket=a.bucket, Prefix=a.key_prefix)
        keys = sorted(o["Key"] for o in listing.get("Contents", []))
        p = producer(KafkaSettings(bootstrap_servers=a.bootstrap))
        await p.start()
        try:
            loads, crc, join, send = orjson.loads, zlib.crc32, b"\n".join, p.send
            rows = batches = 0
            inflight: deque[list] = deque()
            pending: list = []
            t_first, cpu0 = time.time(), cpu_seconds(os.getpid())
            for key in keys:
                resp = await s3.get_object(Bucket=a.bucket, Key=key)
                data = igzip.decompress(await resp["Body"].read())
                open_: list[list[bytes]] = [[] for _ in range(PARTITIONS)]
                for line in data.split(b"\n"):
                    if not line:
                        continue
                    row = loads(line)
                    part = crc(row["device"].encode()) % PARTITIONS
                    b = open_[part]
                    b.append(line)
                    rows += 1
                    if len(b) >= BATCH_ROWS:
                        pending.append(await send(a.topic, join(b), partition=part))
                        open_[part] = []
                        batches += 1
                    if rows % CHUNK_ROWS == 0:
                        inflight.append(pending)
                        pending = []
                        while len(inflight) > MAX_CHUNKS_IN_FLIGHT:
                            for f in inflight.popleft():
                                await f
                for part, b in enumerate(open_):
                    if b:
                        pending.append(await send(a.topic, join(b), partition=part))
                        batches += 1
            inflight.append(pending)
            for fs in inflight:
                for f in fs:
                    await f
            t_last, cpu1 = time.time(), cpu_seconds(os.getpid())
        finally:
            await p.stop()
    wall = t_last - t_first
    return {"rows": rows, "files": len(keys), "batches": batches, "t_first": t_first, "t_last": t_last,
            "wall_s": wall, "rows_per_s": rows / wall, "cpu_s": cpu1 - cpu0, "cpu_util": (cpu1 - cpu0) / wall,
            "cpu_us_per_row": 1e6 * (cpu1 - cpu0) / rows}


_FILES: dict = {}


def throughput_files(s3, session: str, a: argparse.Namespace) -> tuple[list[ImportFile], int, int]:
    """The throughput part's objects, uploaded once a session."""
    if not _FILES:
        s3.create_bucket(Bucket=f"imp-{session}-src")
        log(f"throughput: generating and uploading {a.files} files x {a.rows:,} rows")
        _FILES["v"] = upload_throughput(s3, f"imp-{session}-src", a.files, a.rows, a.seed)
    return _FILES["v"]


def n_rows(a: argparse.Namespace) -> int:
    return a.files * a.rows


def throughput(workdir: Path, stack: dict, s3, session: str, a: argparse.Namespace) -> dict:
    bucket = f"imp-{session}-src"
    records, raw_bytes, gz_bytes = throughput_files(s3, session, a)
    n = a.files * a.rows
    runs = []
    procs = [int(x) for x in a.processes.split(",")] if a.processes else []
    for rep in range(a.repeats):
        order: tuple[str, ...] = ("raw", "worker") if rep % 2 == 0 else ("worker", "raw")
        if a.before:   # the other checkout's worker right before or after this one's
            order = ("raw", "worker", "before") if rep % 2 == 0 else ("before", "worker", "raw")
        if procs:      # this checkout's worker with each worker.import_processes, alternating
            kinds = ("raw", *(f"p{n}" for n in procs), *(("before",) if a.before else ()))
            order = kinds if rep % 2 == 0 else kinds[::-1]
        one: dict = {"repeat": rep, "order": list(order), "loadavg": os.getloadavg()}
        run = f"imp-{session}-t{rep}"
        try:
            for kind in order:
                if kind == "before":
                    x = one["before"] = worker_run(workdir, stack, f"{run}b", bucket, records, n, a.timeout,
                                                   tree=Path(a.before).resolve())
                    log(f"  repeat {rep} worker of {a.before}: {x.get('rows_per_s', 0):,.0f} rows/s, cpu "
                        f"{x.get('cpu_us_per_row', 0):.1f} µs/row, {x['status']}")
                elif kind.startswith("p"):
                    pn = int(kind[1:])
                    spy = a.py_spy and rep == 0 and pn == procs[-1]   # the worker's own process, not its children
                    x = one[kind] = worker_run(workdir, stack, f"{run}{kind}", bucket, records, rows=n_rows(a),
                                               timeout=a.timeout, processes=pn,
                                               spy_to=workdir / "worker.pyspy" if spy else None)
                    if spy:
                        Path(a.py_spy).write_text(summarise(workdir / "worker.pyspy", "stream worker --stages import "
                                                            f"with worker.import_processes {pn}, its own process, the "
                                                            f"throughput part's first repeat ({n_rows(a):,} rows)"))
                    drop(stack["bootstrap"], f"{run}{kind}")
                    log(f"  repeat {rep} worker, import_processes {pn}: {x.get('rows_per_s', 0):,.0f} rows/s, cpu "
                        f"{x.get('cpu_util', 0):.0%} of a core ({x.get('cpu_us_per_row', 0):.1f} µs/row, its own "
                        f"process {x.get('main_cpu_us_per_row', 0):.1f}), load {os.getloadavg()[0]:.2f}, "
                        f"{x['status']}")
                elif kind == "raw":
                    x = one["raw"] = raw_run(workdir, stack, run, bucket, n, a.timeout)
                    log(f"  repeat {rep} raw loop: {x['rows_per_s']:,.0f} rows/s (wall {x['wall_s']:.2f}s, cpu "
                        f"{x['cpu_util']:.0%} of a core, {x['cpu_us_per_row']:.1f} µs/row), rss "
                        f"{x['peak_rss_mb']:.0f} MB, {x['status']}")
                else:
                    x = one["worker"] = worker_run(workdir, stack, run, bucket, records, n, a.timeout,
                                                   spy_to=workdir / "worker.pyspy" if a.py_spy and rep == 0 else None)
                    if a.py_spy and rep == 0:
                        Path(a.py_spy).write_text(summarise(workdir / "worker.pyspy", "stream worker --stages import, "
                                                            f"the throughput part's first repeat ({n:,} rows)"))
                    if "rows_per_s" not in x:
                        log(f"  repeat {rep} worker FAILED: {x['status']}; log {x['log']}")
                    else:
                        log(f"  repeat {rep} worker: {x['rows_per_s']:,.0f} rows/s (wall {x['wall_s']:.2f}s after a "
                            f"{x['startup_s']:.1f}s start-up; {x['rows_per_s_from_spawn']:,.0f} rows/s from spawn), "
                            f"cpu {x['cpu_util']:.0%} of a core ({x['cpu_us_per_row']:.1f} µs/row), broker cpu "
                            f"{x['broker_cpu_s']:.1f}s, rss {x['peak_rss_mb']:.0f} MB, {x['status']}")
        finally:
            drop(stack["bootstrap"], run)
            if a.before:
                drop(stack["bootstrap"], f"{run}b")
        runs.append(one)
    if procs:
        by: dict = {}
        for n in procs:
            ok = [r[f"p{n}"] for r in runs if r.get(f"p{n}", {}).get("status") == "ok"]
            if ok:
                by[str(n)] = {"rows_per_s": statistics.median(x["rows_per_s"] for x in ok),
                              "rows_per_s_runs": [x["rows_per_s"] for x in ok],
                              "cpu_us_per_row": statistics.median(x["cpu_us_per_row"] for x in ok),
                              "main_cpu_us_per_row": statistics.median(x["main_cpu_us_per_row"] for x in ok),
                              "cpu_util": statistics.median(x["cpu_util"] for x in ok)}
        pairs = [r[f"p{procs[-1]}"]["rows_per_s"] / r[f"p{procs[0]}"]["rows_per_s"] for r in runs
                 if r.get(f"p{procs[0]}", {}).get("status") == "ok" and r.get(f"p{procs[-1]}", {}).get("status") == "ok"]
        ok_r = [r["raw"] for r in runs if r.get("raw", {}).get("status") == "ok"]
        summary = {"files": a.files, "rows_per_file": a.rows, "rows": n_rows(a), "bytes": raw_bytes,
                   "gzip_bytes": gz_bytes, "bytes_per_row": raw_bytes / n_rows(a), "by_import_processes": by,
                   f"ratio_p{procs[-1]}_over_p{procs[0]}_per_repeat": pairs,
                   "raw_rows_per_s": statistics.median(x["rows_per_s"] for x in ok_r) if ok_r else None,
                   "loadavg_per_repeat": [r["loadavg"] for r in runs]}
        for n, x in by.items():
            log(f"  import_processes {n}: {x['rows_per_s']:,.0f} rows/s (runs "
                f"{', '.join(f'{v:,.0f}' for v in x['rows_per_s_runs'])}), {x['cpu_us_per_row']:.1f} µs CPU/row, "
                f"{x['main_cpu_us_per_row']:.1f} in the worker's own process")
        log(f"  p{procs[-1]} / p{procs[0]} per repeat: {', '.join(f'{v:.2f}' for v in pairs)}")
        ok_b = [r["before"] for r in runs if r.get("before", {}).get("status") == "ok"]
        if ok_b:
            summary["before"] = {"tree": a.before, "rows_per_s_runs": [x["rows_per_s"] for x in ok_b],
                                 "cpu_us_per_row_runs": [x["cpu_us_per_row"] for x in ok_b],
                                 "cpu_us_per_row": statistics.median(x["cpu_us_per_row"] for x in ok_b)}
            log(f"  {a.before}: {', '.join(f'{x:,.0f}' for x in summary['before']['rows_per_s_runs'])} rows/s, "
                f"{', '.join(f'{x:.1f}' for x in summary['before']['cpu_us_per_row_runs'])} µs CPU/row")
        return {"summary": summary, "runs": runs}
    ok_w = [r["worker"] for r in runs if r.get("worker", {}).get("status") == "ok"]
    ok_b = [r["before"] for r in runs if r.get("before", {}).get("status") == "ok"]
    ok_r = [r["raw"] for r in runs if r.get("raw", {}).get("status") == "ok"]
    med = statistics.median
    summary: dict = {"files": a.files, "rows_per_file": a.rows, "rows": n, "bytes": raw_bytes, "gzip_bytes": gz_bytes,
                     "bytes_per_row": raw_bytes / n}
    if ok_w and ok_r:
        w, r = med(x["rows_per_s"] for x in ok_w), med(x["rows_per_s"] for x in ok_r)
        summary.update({
            "worker_rows_per_s": w, "raw_rows_per_s": r, "ratio": w / r,
            "ratio_per_repeat": [x["worker"]["rows_per_s"] / x["raw"]["rows_per_s"] for x in runs
                                 if x.get("worker", {}).get("status") == "ok"
                                 and x.get("raw", {}).get("status") == "ok"],
            "worker_rows_per_s_runs": [x["rows_per_s"] for x in ok_w],
            "raw_rows_per_s_runs": [x["rows_per_s"] for x in ok_r],
            "worker_rows_per_s_from_spawn": med(x["rows_per_s_from_spawn"] for x in ok_w),
            "raw_rows_per_s_from_spawn": med(x["rows_per_s_from_spawn"] for x in ok_r),
            "worker_startup_s": med(x["startup_s"] for x in ok_w),
            "worker_cpu_us_per_row": med(x["cpu_us_per_row"] for x in ok_w),
            "raw_cpu_us_per_row": med(x["cpu_us_per_row"] for x in ok_r),
            "worker_cpu_util": med(x["cpu_util"] for x in ok_w),
            "worker_peak_rss_mb": max(x["peak_rss_mb"] for x in ok_w),
            "target_rows_per_s_met": w >= 30_000, "target_ratio_met": w / r >= 0.5})
    if ok_w and ok_b:
        b = med(x["rows_per_s"] for x in ok_b)
        summary.update({"before": a.before, "before_rows_per_s": b,
                        "before_rows_per_s_runs": [x["rows_per_s"] for x in ok_b],
                        "before_cpu_us_per_row": med(x["cpu_us_per_row"] for x in ok_b),
                        "worker_over_before": med(x["rows_per_s"] for x in ok_w) / b})
        log(f"  this checkout / {a.before}: {summary['worker_over_before']:.2f} "
            f"({summary['worker_cpu_us_per_row']:.1f} vs {summary['before_cpu_us_per_row']:.1f} µs/row)")
    return {"summary": summary, "runs": runs}


# ---------------------------------------------------------------- lag ----------

def lag(workdir: Path, stack: dict, s3, session: str, a: argparse.Namespace) -> dict:
    run = f"imp-{session}-lag"
    bucket = run
    sqs = boto3.client("sqs", endpoint_url=stack["s3"])
    s3.create_bucket(Bucket=bucket)
    queue_url = sqs.create_queue(QueueName=run)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={"QueueConfigurations": [{
        "QueueArn": arn, "Events": ["s3:ObjectCreated:*"],
        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "lag/"}]}}}]})
    cfg, settings = deployment(workdir, stack["bootstrap"], stack["s3"], run, source_cfg(bucket, "lag/", queue_url))
    wait_s = max(0, min(20, int(settings.s3.read_timeout_s) - 5))     # stream.imports.discovery.poll_queue
    rnd = random.Random(a.seed + 1)
    tags = [f"lag-{i:03d}" for i in range(a.lag_files)]
    log(f"lag: {a.lag_files} files of {a.lag_rows} rows, one every {a.lag_every:g}s, through s3:ObjectCreated -> "
        f"SQS (long poll {wait_s}s) -> imports.files -> events.valid")
    w = Worker(workdir, cfg, run)
    try:
        out = asyncio.run(_lag(stack, settings.topics.name("valid"), s3, bucket, tags, rnd, w, a))
    finally:
        w.stop()
        drop(stack["bootstrap"], run)
    out["long_poll_wait_s"] = wait_s
    out["log"] = str(w.log_path)
    return out


async def _lag(stack: dict, topic: str, s3, bucket: str, tags: list[str], rnd: random.Random, w: Worker,
               a: argparse.Namespace) -> dict:
    tail = AIOKafkaConsumer(bootstrap_servers=stack["bootstrap"], enable_auto_commit=False, fetch_max_wait_ms=20)
    await tail.start()
    tail.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
    await tail.seek_to_beginning()
    seen: dict[str, list] = {}      # tag -> [rows, wall time the last of them was received, its Kafka timestamp]

    async def follow() -> None:
        while True:
            polled = await tail.getmany(timeout_ms=50)
            now = time.time()
            for recs in polled.values():
                for m in recs:
                    for line in decode_rows(m.value).blob.split(b"\n"):
                        tag = orjson.loads(line)["event_properties"]["file"]
                        s = seen.setdefault(tag, [0, 0.0, 0])
                        s[0] += 1
                        s[1] = now
                        s[2] = max(s[2], m.timestamp)

    async def put(tag: str) -> float:
        body = gz(rows_jsonl(rnd, a.lag_rows, tag, int(time.time() * 1000)))
        await asyncio.to_thread(s3.put_object, Bucket=bucket, Key=f"lag/{tag}.json.gz", Body=body)
        return time.time()

    async def until(cond, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not cond():
            if not w.alive() or time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    follower = asyncio.create_task(follow())
    try:
        t_warm = await put("warmup")
        if not await until(lambda: seen.get("warmup", [0])[0] >= a.lag_rows, 180):
            raise RuntimeError(f"the warm-up file's rows never reached events.valid; see {w.log_path}")
        log(f"  warm-up file on events.valid {time.time() - t_warm:.1f}s after its put "
            f"({time.time() - w.t_spawn:.1f}s after the worker's spawn)")
        puts: dict[str, float] = {}
        began = time.monotonic()
        for i, tag in enumerate(tags):
            puts[tag] = await put(tag)
            await asyncio.sleep(max(0.0, began + (i + 1) * a.lag_every - time.monotonic()))
        complete = await until(lambda: all(seen.get(t, [0])[0] >= a.lag_rows for t in tags), 60)
    finally:
        follower.cancel()
        try:
            await follower
        except asyncio.CancelledError:
            pass
        await tail.stop()
    per = []
    for t in tags:
        rows, last, ts = seen.get(t, [0, 0.0, 0])
        per.append({"file": t, "rows": rows, "lag_s": last - puts[t] if rows >= a.lag_rows else None,
                    "lag_kafka_ts_s": ts / 1000 - puts[t] if rows >= a.lag_rows else None})
    lags = sorted(x["lag_s"] for x in per if x["lag_s"] is not None)
    kts = sorted(x["lag_kafka_ts_s"] for x in per if x["lag_kafka_ts_s"] is not None)

    def pct(xs: list[float], q: float) -> float | None:     # nearest rank
        return xs[max(0, math.ceil(q * len(xs)) - 1)] if xs else None
    res = {"files": len(tags), "rows_per_file": a.lag_rows, "every_s": a.lag_every, "complete": complete,
           "files_seen": len(lags), "p50_s": statistics.median(lags) if lags else None, "p90_s": pct(lags, 0.9),
           "max_s": lags[-1] if lags else None, "min_s": lags[0] if lags else None,
           "kafka_ts_p50_s": statistics.median(kts) if kts else None, "kafka_ts_max_s": kts[-1] if kts else None,
           "per_file": per}
    res["target_p50_met"] = res["p50_s"] is not None and res["p50_s"] <= 2.0 and complete
    return res


# ---------------------------------------------------------------- large file ----------

def write_large(path: Path, gigabytes: float, seed: int) -> tuple[int, int]:
    """A gzip JSON-lines file of about ``gigabytes`` uncompressed, one gzip member, written a block at a time."""
    rnd = random.Random(seed + 2)
    target = int(gigabytes * 1e9)
    now = int(time.time() * 1000)
    z = isal_zlib.compressobj(1, isal_zlib.DEFLATED, 31)
    rows = raw = 0
    t, said = time.monotonic(), 0
    with open(path, "wb") as out:
        while raw < target:
            n = 100_000 if not rows else max(1000, min(100_000, int((target - raw) / (raw / rows)) + 1))
            block = rows_jsonl(rnd, n, "large", now)
            out.write(z.compress(block))
            rows += n
            raw += len(block)
            if raw * 10 // target > said:
                said = raw * 10 // target
                log(f"  generated {rows:,} rows, {raw / 1e9:.2f} GB ({path.stat().st_size / 1e6:.0f} MB gzip so far) "
                    f"in {time.monotonic() - t:.0f}s")
        out.write(z.flush())
    return rows, raw


def large(workdir: Path, stack: dict, s3, session: str, a: argparse.Namespace) -> dict:
    from boto3.s3.transfer import TransferConfig

    run = f"imp-{session}-large"
    bucket = f"imp-{session}-src"
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
        s3.create_bucket(Bucket=bucket)     # the throughput part's, when it ran
    key = "large/one.json.gz"
    spool = workdir / "large.json.gz"
    log(f"large: generating one file of about {a.gigabytes:g} GB uncompressed")
    rows, raw = write_large(spool, a.gigabytes, a.seed)
    size = spool.stat().st_size
    t = time.monotonic()
    sent = [0, 0]

    def progress(n: int) -> None:
        sent[0] += n
        if sent[0] - sent[1] >= max(size // 5, 1) or sent[0] == size:
            sent[1] = sent[0]
            log(f"  uploaded {sent[0] / 1e6:.0f} of {size / 1e6:.0f} MB")
    s3.upload_file(str(spool), bucket, key, Callback=progress,
                   Config=TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=64 << 20, max_concurrency=2))
    head = s3.head_object(Bucket=bucket, Key=key)
    spool.unlink()
    log(f"  {rows:,} rows, {raw / 1e9:.2f} GB ({size / 1e6:.0f} MB gzip) on S3 in {time.monotonic() - t:.0f}s")
    cfg, settings = deployment(workdir, stack["bootstrap"], stack["s3"], run, source_cfg(bucket, "large/"))
    rec = ImportFile(SOURCE, bucket, key, int(time.time() * 1000), "scan", size, head["ETag"].strip('"'))
    w = Worker(workdir, cfg, run)
    res: dict = {"rows": rows, "bytes": raw, "gzip_bytes": size, "log": str(w.log_path)}
    try:
        deadline = time.monotonic() + 120
        while not w.ready():
            if not w.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not get ready; see {w.log_path}")
            time.sleep(0.2)
        ready_at = time.time() - w.t_spawn
        time.sleep(3)
        res.update({"ready_after_s": ready_at, "idle_rss_mb": status_kb(w.pid, "VmRSS") / 1024,
                    "idle_hwm_mb": status_kb(w.pid, "VmHWM") / 1024})
        log(f"  worker ready {ready_at:.1f}s after spawn; idle RSS {res['idle_rss_mb']:.0f} MB (VmHWM "
            f"{res['idle_hwm_mb']:.0f} MB); importing")
        t_rec = asyncio.run(discover(stack["bootstrap"], settings.topics.name("import_files"), [rec]))
        timeout = max(a.timeout, rows / 2000)
        status, states = asyncio.run(await_files(stack["bootstrap"], changelog(run), {rec.kafka_key}, w, timeout))
        res["peak_rss_mb"] = status_kb(w.pid, "VmHWM") / 1024 if w.alive() else 0
        res["max_sampled_rss_mb"] = w.max_rss_kb / 1024
        res["rss_trace_mb"] = [(round(t - t_rec, 1), round(kb / 1024)) for t, kb in w.rss_trace if t >= t_rec]
    finally:
        w.stop()
    res["status"] = status
    if status == "ok":
        st = states[rec.kafka_key]
        firsts = asyncio.run(first_timestamps(stack["bootstrap"], settings.topics.name("valid"), PARTITIONS))
        t_first, t_last = min(firsts.values()) / 1000, st.at_ms / 1000
        res.update({"imported": st.imported, "state": st.state.value, "wall_s": t_last - t_first,
                    "rows_per_s": rows / (t_last - t_first), "from_record_s": t_last - t_rec,
                    "rss_growth_mb": res["peak_rss_mb"] - res["idle_rss_mb"]})
        if st.imported != rows or st.state is not State.DONE:
            res["status"] = f"{st.state.value}: imported {st.imported} of {rows} rows ({st.message})"
    drop(stack["bootstrap"], run)
    s3.delete_object(Bucket=bucket, Key=key)
    return res


# ---------------------------------------------------------------- profile ----------

BUCKETS = [   # where a function's own time is counted, by its file (first match)
    ("converter (stream/imports/converter)", "stream/imports/converter/"),
    ("normalize (stream/events/normalize)", "stream/events/normalize"),
    ("rows.convert, shape, ids", "stream/imports/rows"),
    ("reader (gunzip, lines, JSON)", "stream/imports/reader"),
    ("batch.group, encode", "stream/events/batch"),
    ("avro", "stream/events/avro"),
    ("other stream code", "/stream/"),
    ("aiokafka", "aiokafka/"),
    ("faust, mode", ("faust/", "mode/")),
    ("aiobotocore, botocore, aiohttp", ("aiobotocore/", "botocore/", "aiohttp/", "urllib3/")),
    ("asyncio, selectors", ("asyncio/", "selectors")),
]


def bucket_of(filename: str, name: str) -> str:
    for label, pat in BUCKETS:
        if any(p in filename for p in ((pat,) if isinstance(pat, str) else pat)):
            return label
    return f"built-in: {name}" if filename == "~" else "other Python code"


def worker_profile(workdir: Path, stack: dict, s3, session: str, a: argparse.Namespace) -> dict:
    """One untimed worker under cProfile (main thread: the event loop that reads, converts and produces) importing
    the first files of the throughput part; its own time summed by module and its top functions."""
    records, _, _ = throughput_files(s3, session, a)
    records = records[:max(1, min(5, len(records)))]
    rows = len(records) * a.rows
    run = f"imp-{session}-prof"
    out = workdir / f"{run}.pstats"
    log(f"worker profile: {len(records)} files ({rows:,} rows) under cProfile, untimed")
    try:
        res = worker_run(workdir, stack, run, f"imp-{session}-src", records, rows, a.timeout, out)
    finally:
        drop(stack["bootstrap"], run)
    if not out.exists():
        return {"status": f"no profile written ({res['status']})", "log": res["log"]}
    st = pstats.Stats(str(out))
    idle = sum(v[2] for (_, _, name), v in st.stats.items() if name == "<method 'poll' of 'select.epoll' objects>")
    total = sum(v[2] for v in st.stats.values()) - idle      # busy: the event loop's waits left out
    by: dict[str, float] = {}
    builtins: dict[str, float] = {}
    for (fn, _, name), (_, _, tt, _, _) in st.stats.items():
        if name == "<method 'poll' of 'select.epoll' objects>":
            continue
        label = bucket_of(fn, name)
        if label.startswith("built-in"):
            builtins[label] = builtins.get(label, 0.0) + tt
            label = "built-ins (C functions, by name below)"
        by[label] = by.get(label, 0.0) + tt
    top = [{"function": f"{fn.replace(str(BENCH.parent) + '/', '')}:{line}({name})", "calls": nc,
            "tottime_s": round(tt, 3), "cumtime_s": round(ct, 3)}
           for (fn, line, name), (_, nc, tt, ct, _) in sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:25]]
    cum = {}
    for (fn, line, name), (_, nc, tt, ct, _) in st.stats.items():
        short = f"{fn.replace(str(BENCH.parent) + '/', '')}:{line}({name})"
        if (name in ("flush", "_once", "convert", "group", "encode", "send", "aiter_rows", "_chunks", "normalize",
                     "__call__", "target_client") and ("stream/" in fn or "aiokafka" in fn)
                or (name == "_create_client" and "aiobotocore" in fn)):
            cum[short] = {"calls": nc, "cumtime_s": round(ct, 3), "us_per_row": round(1e6 * ct / rows, 2)}
    log(f"  profiled worker: {res.get('rows_per_s', 0):,.0f} rows/s under cProfile ({res['status']}); "
        f"main thread busy {total:.1f}s (start-up included), waiting {idle:.1f}s")
    return {"status": res["status"], "rows": rows, "files": len(records),
            "rows_per_s_under_profile": res.get("rows_per_s"), "main_thread_busy_s": round(total, 2),
            "main_thread_waiting_s": round(idle, 2), "pstats": str(out),
            "share_by_module": {k: round(v / total, 3) for k, v in sorted(by.items(), key=lambda kv: -kv[1])},
            "top_builtins_s": {k: round(v, 3) for k, v in sorted(builtins.items(), key=lambda kv: -kv[1])[:10]},
            "cumulative": dict(sorted(cum.items(), key=lambda kv: -kv[1]["cumtime_s"])), "top": top}


def profile(rows: int, seed: int) -> dict:
    """The agent's pure steps in this process, timed alone and under cProfile (see the module docstring)."""
    import copy
    import uuid as uuidlib

    import cramjam

    from stream.events.batch import group
    from stream.events.normalize import Rules, normalize, normalize_message
    from stream.imports.reader import RowReader
    from stream.imports.rows import FileContext, convert, row_ids, shape
    from stream.settings import Settings

    settings = Settings(projects=[{"id": PROJECT}], sources=[source_cfg("bucket", "tput/")])
    src, ing = settings.sources[0], settings.ingest
    rules = Rules(ing.max_event_bytes, ing.min_id_length, ing.unknown_fields == "keep",
                  int(ing.max_clock_skew_s * 1000))
    now = int(time.time() * 1000)
    f = ImportFile(SOURCE, "bucket", "tput/part-00000.json.gz", now, "scan")
    ctx = FileContext(src, f, 0, now, rules, ing.max_event_bytes)
    body = gz(rows_jsonl(random.Random(seed), rows, "t000", now))
    topic, max_bytes = "imports.files", settings.kafka.max_request_bytes // 2

    def read():
        r = RowReader("json", "gzip")
        items = []
        for i in range(0, len(body), 1 << 20):
            items.extend(r.feed(body[i:i + (1 << 20)]))
        items.extend(r.finish())
        return items
    items = read()
    chunks = [items[i:i + CHUNK_ROWS] for i in range(0, len(items), CHUNK_ROWS)]
    outs = [convert(ctx, c, now) for c in chunks]
    batches = [b for o in outs for _, b in group(o.events, topic, 0, PARTITIONS, ing.batch_max_events, max_bytes)]
    encoded = [b.encode() for b in batches]
    converted = []
    for it in items:
        ev = shape(src.compiled.convert(it.value, now)[0], src)
        ev["insert_id"] = ev["uuid"] = row_ids(src.name, f.key, it.number)
        converted.append(ev)

    def best(fn, n: int = 3) -> float:
        out = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
        return min(out)

    def do_normalize():
        evs = copy.deepcopy(converted)
        t = time.perf_counter()
        for i, ev in enumerate(evs):
            normalize(ev, PROJECT, now, f"{f.url}#{i + 1}", rules, now)
        return time.perf_counter() - t

    stages = {
        "read (gunzip, lines, JSON)": best(read),
        "rows.convert (all of it)": best(lambda: [convert(ctx, c, now) for c in chunks]),
        "  converter alone": best(lambda: [src.compiled.convert(it.value, now) for it in items]),
        "  row ids (uuid5) alone": best(lambda: [row_ids(src.name, f.key, it.number) for it in items]),
        "  normalize alone": min(do_normalize() for _ in range(3)),
        "batch.group": best(lambda: [list(group(o.events, topic, 0, PARTITIONS, ing.batch_max_events, max_bytes))
                                     for o in outs]),
        "EventBatch.encode": best(lambda: [b.encode() for b in batches]),
        "zstd (producer compression)": best(lambda: [bytes(cramjam.zstd.compress(e)) for e in encoded]),
    }
    fields = CONVERTER["converterConfig"]["convertToAmplitudeFunc"]
    simple = {k: v for k, v in fields.items() if isinstance(v, str)}

    def lookups():      # the same ten fields without the converter's machinery (no errors, no paths)
        return [{**{k: it.value[v] for k, v in simple.items()}, "event_properties": {k: it.value[k] for k in PROPS}}
                for it in items]

    def fast_path():   # the ingest stage's msgspec path, fed the converted event re-encoded
        evs = copy.deepcopy(converted)
        t = time.perf_counter()
        for i, ev in enumerate(evs):
            normalize_message(orjson.dumps(ev), None, PROJECT, now, f"{f.url}#{i + 1}", rules, now)
        return time.perf_counter() - t

    whatif = {
        "the 10 fields by plain dict lookups (instead of the converter)": best(lookups),
        "orjson.dumps + normalize_message, msgspec fast path (instead of normalize)":
            min(fast_path() for _ in range(3)),
        "uuid.UUID(str) of the row's uuid, in normalize": best(lambda: [uuidlib.UUID(ev["uuid"]).bytes
                                                                         for ev in converted]),
    }
    from stream.s3.client import target_client, target_of

    async def clients(n: int) -> float:    # what _chunks does for every file: a new session and S3 client
        t = time.perf_counter()
        for _ in range(n):
            async with target_client(target_of(src, settings.s3), settings.s3):
                pass
        return (time.perf_counter() - t) / n
    asyncio.run(clients(1))
    client_ms = 1000 * asyncio.run(clients(5))
    same = all(normalize(copy.copy(ev), PROJECT, now, "o", rules, now).line ==
               normalize_message(orjson.dumps(ev), None, PROJECT, now, "o", rules, now).line for ev in converted[:2000])
    us = {k: round(1e6 * v / rows, 2) for k, v in stages.items()}
    top_level = [k for k in stages if not k.startswith("  ")]
    pure = sum(us[k] for k in top_level)

    def pipeline():
        got = read()
        for i in range(0, len(got), CHUNK_ROWS):
            out = convert(ctx, got[i:i + CHUNK_ROWS], now)
            for _, b in group(out.events, topic, 0, PARTITIONS, ing.batch_max_events, max_bytes):
                bytes(cramjam.zstd.compress(b.encode()))
    pr = cProfile.Profile()
    pr.enable()
    pipeline()
    pr.disable()
    buf = io.StringIO()
    st = pstats.Stats(pr, stream=buf)
    st.sort_stats("tottime").print_stats(18)
    top = []
    for (fn, line, name), (cc, nc, tt, ct, _) in sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:18]:
        top.append({"function": f"{fn.replace(str(BENCH.parent) + '/', '')}:{line}({name})", "calls": nc,
                    "tottime_s": round(tt, 3), "cumtime_s": round(ct, 3)})
    return {"rows": rows, "bytes_per_row_in": len(rows_jsonl(random.Random(seed), 100, "t000", now)) / 100,
            "bytes_per_row_out": sum(len(x) for x in encoded) / rows, "us_per_row": us,
            "pure_steps_us_per_row": round(pure, 2), "pure_steps_rows_per_s": round(1e6 / pure),
            "what_if_us_per_row": {k: round(1e6 * v / rows, 2) for k, v in whatif.items()},
            "fast_path_writes_the_same_lines": same, "s3_client_per_file_ms": round(client_ms, 1),
            "cprofile_total_s": round(sum(v[2] for v in st.stats.values()), 3), "cprofile_top": top}


# ---------------------------------------------------------------- main ----------

def pool_part(files: int, rows: int, seed: int, processes: list[int], rounds: int) -> dict:
    """The import engine alone, in this process, no Kafka or S3: ``FileImporter`` imports ``files`` in-memory gzip
    files of ``rows`` rows (the throughput part's rows, read in 1 MiB pieces) with senders that acknowledge at
    once, once per value of ``worker.import_processes`` per round, in alternating order; a warm-up chunk starts
    the pool's processes before the clock. Wall time and CPU (this process, and the pool's processes from
    /proc) per row."""
    from stream.clock import SystemClock
    from stream.imports.importer import FileImporter, Senders
    from stream.imports.pool import ConvertPool, Job
    from stream.imports.reader import aiter_lines, aiter_rows
    rnd = random.Random(seed)
    now = int(time.time() * 1000)
    bodies = [gz(rows_jsonl(rnd, rows, f"t{i:03d}", now)) for i in range(files)]
    work = Path(tempfile.mkdtemp(prefix="stream-bench-import-pool-"))

    def settings_of(n: int):
        path = work / f"p{n}.yaml"
        path.write_text(yaml.safe_dump({
            "topics": {"partitions": PARTITIONS}, "projects": [{"id": PROJECT, "name": "bench"}],
            "worker": {"data_dir": str(work / "data"), "import_processes": n},
            "sources": [{**source_cfg("bench-src", "tput/"), "scan": {"enabled": False}}]}))
        return load_settings(path)

    class Memory:
        def __init__(self) -> None:
            self.valid = self.states = 0

        async def send_valid(self, value: bytes, partition: int):
            self.valid += 1
            return asyncio.sleep(0)

        async def send_dead(self, key: bytes, value: bytes):
            return asyncio.sleep(0)

        def get(self, key: bytes):
            return None

        async def put(self, key: bytes, value: bytes, partition: int) -> None:
            self.states += 1

    class InMemory:
        def __init__(self) -> None:
            self.bodies: dict[str, bytes] = {}

        async def _chunks(self, body: bytes):
            for i in range(0, len(body), 1 << 20):
                yield body[i:i + (1 << 20)]

        def rows(self, src, f, fetched):
            return aiter_rows(self._chunks(self.bodies[f.key]), "json", "gzip")

        def lines(self, src, f, fetched):
            return aiter_lines(self._chunks(self.bodies[f.key]), "gzip")

    async def one(n: int) -> dict:
        s = settings_of(n)
        pool = ConvertPool(s, n) if n else None
        mem, files_ = Memory(), InMemory()
        imp = FileImporter(s, SystemClock(), Senders(mem.send_valid, mem.send_dead), mem, files_, "imports.files",
                           pool=pool)
        records = []
        for i, body in enumerate(bodies):
            f = ImportFile(SOURCE, "bench-src", f"tput/part-{i:05d}.json.gz", now, "scan", len(body), "e")
            files_.bodies[f.key] = body
            records.append(f)
        pids: list[int] = []
        if pool is not None:   # the processes started (spawn, imports, compiling) before the clock
            warm = Job(SOURCE, records[0], 0, now, "imports.files/0/0", "imports.files", 0, now, 1, [b"{}"])
            await asyncio.gather(*(pool.submit(warm) for _ in range(2 * n)))
            pids = list(pool._pool._processes)   # type: ignore[union-attr]
        cpu0 = [cpu_seconds(os.getpid())] + [cpu_seconds(p) for p in pids]
        t0 = time.perf_counter()
        for i, f in enumerate(records):
            await imp.handle(f, f.kafka_key, 0, i, now)
        wall = time.perf_counter() - t0
        cpu1 = [cpu_seconds(os.getpid())] + [cpu_seconds(p) for p in pids]
        if pool is not None:
            pool.close()
        total = files * rows
        assert mem.states == files, f"{mem.states} files done of {files}"
        own, children = cpu1[0] - cpu0[0], sum(cpu1[1:]) - sum(cpu0[1:])
        return {"processes": n, "rows_per_s": total / wall, "wall_s": wall, "cpu_us_per_row": 1e6 * (own + children)
                / total, "own_cpu_us_per_row": 1e6 * own / total, "children_cpu_us_per_row": 1e6 * children / total,
                "loadavg": os.getloadavg()[0]}

    runs = []
    for r in range(rounds):
        for n in (processes if r % 2 == 0 else processes[::-1]):
            x = asyncio.run(one(n))
            x["round"] = r
            runs.append(x)
            log(f"  pool round {r}, import_processes {n}: {x['rows_per_s']:,.0f} rows/s, {x['cpu_us_per_row']:.1f} µs "
                f"CPU/row ({x['own_cpu_us_per_row']:.1f} in this process), load {x['loadavg']:.2f}")
    med = statistics.median
    by = {str(n): {"rows_per_s": med(x["rows_per_s"] for x in runs if x["processes"] == n),
                   "rows_per_s_runs": [x["rows_per_s"] for x in runs if x["processes"] == n],
                   "cpu_us_per_row": med(x["cpu_us_per_row"] for x in runs if x["processes"] == n),
                   "own_cpu_us_per_row": med(x["own_cpu_us_per_row"] for x in runs if x["processes"] == n)}
          for n in processes}
    for n, x in by.items():
        log(f"  pool, import_processes {n}: {x['rows_per_s']:,.0f} rows/s (median), {x['cpu_us_per_row']:.1f} µs "
            f"CPU/row, {x['own_cpu_us_per_row']:.1f} in the importer's process")
    return {"files": files, "rows_per_file": rows, "by_import_processes": by, "runs": runs}


PIPELINE_CHILD = r"""
import gc, json, random, sys, time
tree, bench, rows, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
sys.path[:0] = [tree, bench]
from bench_import import CHUNK_ROWS, PARTITIONS, PROJECT, SOURCE, gz, rows_jsonl, source_cfg
import stream
from stream.events import partitioning
from stream.events.batch import group
from stream.events.normalize import Rules
from stream.imports.files import ImportFile
from stream.imports.reader import RowReader
from stream.imports.rows import FileContext, convert
from stream.settings import Settings
try:
    from stream.imports.rows import remember_targets
except ImportError:     # a tree from before it
    remember_targets = None
assert stream.__file__.startswith(tree), (stream.__file__, tree)
settings = Settings(projects=[{"id": PROJECT}], sources=[source_cfg("bucket", "tput/")])
src, ing = settings.sources[0], settings.ingest
rules = Rules(ing.max_event_bytes, ing.min_id_length, ing.unknown_fields == "keep", int(ing.max_clock_skew_s * 1000))
now = 1_765_000_000_000
ctx = FileContext(src, ImportFile(SOURCE, "bucket", "tput/part-00000.json.gz", now, "scan"), 7, now, rules,
                  ing.max_event_bytes, "imports.files/0/7")
body = gz(rows_jsonl(random.Random(seed), rows, "t000", now))
topic, max_bytes = "events.valid", settings.kafka.max_request_bytes // 2


def pipeline():
    partitioning._MEMOS.clear()
    reader, chunk = RowReader("json", "gzip"), []

    def flush():
        out = convert(ctx, chunk, now)
        chunk.clear()
        if remember_targets is not None:
            remember_targets(out, PARTITIONS)
        for _, batch in group(out.events, topic, 0, PARTITIONS, ing.batch_max_events, max_bytes):
            batch.encode()

    def runs():
        for i in range(0, len(body), 1 << 20):
            yield from reader.feed_runs(body[i:i + (1 << 20)])
        yield from reader.finish_runs()

    for run in runs():
        at = 0
        while at < len(run):
            took = CHUNK_ROWS - len(chunk)
            chunk.extend(run[at:at + took])
            at += took
            if len(chunk) >= CHUNK_ROWS:
                flush()
    if chunk:
        flush()


gc.collect()
gc.freeze()
before = [g["collections"] for g in gc.get_stats()]
passes = []
for _ in range(5):
    t = time.process_time()
    pipeline()
    passes.append(time.process_time() - t)
print(json.dumps({"us_per_row": min(passes) * 1e6 / rows, "passes_us_per_row": [x * 1e6 / rows for x in passes],
                  "collections": [g["collections"] - b for g, b in zip(gc.get_stats(), before)]}))
"""


def pipeline_part(rows: int, seed: int, before: str | None, rounds: int) -> dict:
    """The importer's pure steps in a child process per tree, alternating (see the module docstring)."""
    trees = {"this": str(BENCH.parent)} | ({"before": str(Path(before).resolve())} if before else {})
    runs = []
    for r in range(rounds):
        for name in (list(trees) if r % 2 == 0 else list(trees)[::-1]):
            got = subprocess.run([sys.executable, "-c", PIPELINE_CHILD, trees[name], str(BENCH), str(rows), str(seed)],
                                 capture_output=True, text=True, check=True, cwd=trees[name])
            x = {"tree": name, "round": r, "loadavg": os.getloadavg()[0], **json.loads(got.stdout)}
            runs.append(x)
            log(f"  pipeline round {r}, {name}: {x['us_per_row']:.2f} µs CPU a row (best of 5), collections "
                f"{x['collections']}, load {x['loadavg']:.2f}")
    med = statistics.median
    summary = {name: {"us_per_row": med(x["us_per_row"] for x in runs if x["tree"] == name),
                      "us_per_row_runs": [round(x["us_per_row"], 3) for x in runs if x["tree"] == name]}
               for name in trees}
    if before:
        summary["ratio"] = summary["this"]["us_per_row"] / summary["before"]["us_per_row"]
    for name, x in summary.items():
        if name != "ratio":
            log(f"  pipeline, {name}: {x['us_per_row']:.2f} µs CPU a row (median of {x['us_per_row_runs']})")
    return {"rows": rows, "trees": trees, "summary": summary, "runs": runs}


def converter_part(rows: int, seed: int, rounds: int = 5) -> dict:
    """The benchmark's converter on its rows, in this process: ``Converter.__call__`` (a dict row through the
    generated function) against the entry-by-entry evaluation (``_evaluate``, what it did before), alternating,
    best of 7 runs each per round, process CPU time, after ``gc.freeze()``."""
    import gc
    from stream.imports.converter import Ctx, parse_converter_config
    from stream.imports.converter.converter import _evaluate
    now = int(time.time() * 1000)
    data = [orjson.loads(x) for x in rows_jsonl(random.Random(seed), rows, "t", now).splitlines()]
    conv = parse_converter_config(CONVERTER).convert
    entries, ctx = conv._entries, Ctx(now)

    def generated() -> None:
        for r in data:
            conv(r, now)

    def by_entry() -> None:
        for r in data:
            errors: list = []
            _evaluate(entries, r, ctx, errors)

    def best(fn, n: int = 7) -> float:
        t = []
        for _ in range(n):
            t0 = time.process_time()
            fn()
            t.append(time.process_time() - t0)
        return min(t) / rows * 1e6
    gc.freeze()
    runs = []
    for i in range(rounds):
        pair = (best(generated), best(by_entry)) if i % 2 == 0 else tuple(reversed((best(by_entry), best(generated))))
        runs.append({"generated_us_per_row": pair[0], "by_entry_us_per_row": pair[1]})
        log(f"  converter round {i}: generated {pair[0]:.2f} µs/row, entry by entry {pair[1]:.2f}")
    med = statistics.median
    return {"rows": rows, "runs": runs, "generated_us_per_row": med(r["generated_us_per_row"] for r in runs),
            "by_entry_us_per_row": med(r["by_entry_us_per_row"] for r in runs), "loadavg": os.getloadavg()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=20, help="throughput: files (default 20)")
    ap.add_argument("--rows", type=int, default=50_000, help="throughput: rows per file (default 50000)")
    ap.add_argument("--repeats", type=int, default=3, help="throughput: repeats of worker and raw loop; pipeline: rounds (default 3)")
    ap.add_argument("--lag-files", type=int, default=20, help="lag: files (default 20)")
    ap.add_argument("--lag-rows", type=int, default=100, help="lag: rows per file (default 100)")
    ap.add_argument("--lag-every", type=float, default=2.0, help="lag: seconds between puts (default 2)")
    ap.add_argument("--gigabytes", type=float, default=1.0, help="large: uncompressed size of the file (default 1)")
    ap.add_argument("--parts", default="throughput,lag,large,worker-profile,profile",
                    help="which parts to run, comma-separated (default all)")
    ap.add_argument("--quick", action="store_true",
                    help="6 files x 20000 rows, 2 repeats, 10 lag files, 0.25 GB (unless given explicitly)")
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--before", metavar="CHECKOUT", help="throughput and pipeline: also run the worker (the steps) of this checkout (a copy "
                    "of an earlier commit, e.g. git archive HEAD | tar -x -C /tmp/before) in every repeat, beside "
                    "this one's, on the same files")
    ap.add_argument("--processes", metavar="N,M", help="throughput: run this checkout's worker once with each "
                    "worker.import_processes listed (e.g. 0,2), in alternating order, instead of once with the "
                    "default; CPU is the worker's and its children's")
    ap.add_argument("--timeout", type=float, default=600, help="seconds one run may take (default 600)")
    ap.add_argument("--results", default=str(BENCH / "results-import.json"))
    ap.add_argument("--py-spy", metavar="OUT", help="throughput: sample the first repeat's worker with py-spy and "
                    "write a summary of where its CPU goes to OUT (bench/profile_summary.py); with --processes, the "
                    "worker with the last value's own process")
    # the raw loop's own process
    ap.add_argument("--raw-loop", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--bootstrap", help=argparse.SUPPRESS)
    ap.add_argument("--s3", help=argparse.SUPPRESS)
    ap.add_argument("--bucket", help=argparse.SUPPRESS)
    ap.add_argument("--key-prefix", help=argparse.SUPPRESS)
    ap.add_argument("--topic", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.raw_loop:
        print(json.dumps(asyncio.run(raw_loop(a))), flush=True)
        return 0
    if a.quick:
        given = {x.split("=")[0] for x in sys.argv[1:] if x.startswith("--")}
        for name, value in (("files", 6), ("rows", 20_000), ("repeats", 2), ("lag_files", 10), ("gigabytes", 0.25)):
            if f"--{name.replace('_', '-')}" not in given:
                setattr(a, name, value)
    parts = {p.strip() for p in a.parts.split(",") if p.strip()}
    unknown = parts - {"throughput", "lag", "large", "worker-profile", "profile", "converter", "pool", "pipeline"}
    if unknown:
        ap.error(f"unknown parts: {', '.join(sorted(unknown))}")

    os.environ.update(local_aws_env())
    session = uuid.uuid4().hex[:6]
    workdir = Path(tempfile.mkdtemp(prefix=f"stream-bench-import-{session}-"))
    log(f"work dir (logs, configs) {workdir}")
    internal = ("raw_loop", "bootstrap", "s3", "bucket", "key_prefix", "topic")
    meta = {"session": session, "cpus": os.cpu_count(), "python": sys.version.split()[0], "workdir": str(workdir),
            "loadavg_start": os.getloadavg(), "rate_events_per_s": RATE,
            "args": {k: v for k, v in vars(a).items() if k not in internal}}
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=BENCH.parent, capture_output=True, text=True, check=False).stdout
    try:
        meta["commit"] = git("rev-parse", "HEAD").strip()
        meta["modified"] = [x[3:] for x in git("status", "--porcelain", "stream").splitlines()]
    except OSError:
        pass
    out: dict = {"meta": meta}
    started = time.monotonic()
    if "converter" in parts:
        log("converter: the benchmark's converter on 20,000 rows, generated function against entry by entry")
        out["converter"] = converter_part(20_000, a.seed)
    if "pipeline" in parts:
        log(f"pipeline: the importer's pure steps on {a.rows:,} rows in a child process per tree, {a.repeats} rounds")
        out["pipeline"] = pipeline_part(a.rows, a.seed, a.before, a.repeats)
    if "pool" in parts:
        procs = [int(x) for x in (a.processes or "0,1,2").split(",")]
        log(f"pool: the import engine alone on {a.files} in-memory files of {a.rows:,} rows, import_processes "
            f"{procs}, {a.repeats} rounds")
        out["pool"] = pool_part(a.files, a.rows, a.seed, procs, a.repeats)
    if parts - {"profile", "converter", "pool", "pipeline"}:
        moto, broker = start_moto(workdir), start_broker(workdir)
        stack = {"bootstrap": f"127.0.0.1:{broker.port}", "s3": f"http://127.0.0.1:{moto.port}",
                 "broker_pid": broker.pid, "moto_pid": moto.pid}
        log(f"broker {stack['bootstrap']} pid {broker.pid}, moto_server {stack['s3']} pid {moto.pid}")
        s3 = boto3.client("s3", endpoint_url=stack["s3"])
        try:
            if "throughput" in parts:
                out["throughput"] = throughput(workdir, stack, s3, session, a)
            if "lag" in parts:
                out["lag"] = lag(workdir, stack, s3, session, a)
                x = out["lag"]
                log(f"  lag: p50 {x['p50_s']:.2f}s, p90 {x['p90_s']:.2f}s, max {x['max_s']:.2f}s "
                    f"({x['files_seen']}/{x['files']} files)" if x["p50_s"] is not None else
                    f"  lag: no file seen: {x}")
            if "large" in parts:
                out["large"] = large(workdir, stack, s3, session, a)
                x = out["large"]
                log(f"  large: {x.get('rows_per_s', 0):,.0f} rows/s, peak RSS {x.get('peak_rss_mb', 0):.0f} MB "
                    f"(idle {x.get('idle_rss_mb', 0):.0f} MB), {x['status']}")
            if "worker-profile" in parts:
                out["worker_profile"] = worker_profile(workdir, stack, s3, session, a)
        finally:
            broker.stop()
            moto.stop()
    if "profile" in parts:
        log("profile: 50,000 rows through the agent's pure steps, in this process")
        out["profile"] = profile(50_000, a.seed)
    meta["loadavg_end"] = os.getloadavg()
    meta["seconds"] = time.monotonic() - started
    Path(a.results).write_text(json.dumps(out, indent=1, default=str) + "\n")
    report(out)
    print(f"\nresults: {a.results}; logs: {workdir}")
    return 0


def report(out: dict) -> None:
    print()
    if "throughput" in out:
        s = out["throughput"]["summary"]
        if "by_import_processes" in s:
            for n, x in s["by_import_processes"].items():
                print(f"throughput ({s['files']} files x {s['rows_per_file']:,} rows), worker.import_processes {n}: "
                      f"{x['rows_per_s']:,.0f} rows/s (runs {', '.join(f'{v:,.0f}' for v in x['rows_per_s_runs'])}),"
                      f" {x['cpu_us_per_row']:.1f} µs CPU/row ({x['main_cpu_us_per_row']:.1f} in the worker's own "
                      f"process); >= 60,000 rows/s {'met' if x['rows_per_s'] >= 60_000 else 'NOT met'}")
        elif "ratio" in s:
            print(f"throughput ({s['files']} files x {s['rows_per_file']:,} rows, {s['bytes_per_row']:.0f} B/row): "
                  f"worker {s['worker_rows_per_s']:,.0f} rows/s (runs "
                  f"{', '.join(f'{x:,.0f}' for x in s['worker_rows_per_s_runs'])}), raw loop "
                  f"{s['raw_rows_per_s']:,.0f} rows/s (runs "
                  f"{', '.join(f'{x:,.0f}' for x in s['raw_rows_per_s_runs'])}),"
                  f" ratio {s['ratio']:.2f}; worker {s['worker_cpu_us_per_row']:.1f} µs CPU/row against "
                  f"{s['raw_cpu_us_per_row']:.1f}; targets: >= 30,000 rows/s "
                  f"{'met' if s['target_rows_per_s_met'] else 'NOT met'}, >= 0.5 of raw "
                  f"{'met' if s['target_ratio_met'] else 'NOT met'}")
        else:
            print(f"throughput: failed runs, see {out['meta']['workdir']}")
    if "lag" in out and out["lag"]["p50_s"] is not None:
        x = out["lag"]
        print(f"lag PutObject -> last row on events.valid ({x['files_seen']}/{x['files']} files, long poll "
              f"{x['long_poll_wait_s']}s): p50 {x['p50_s']:.2f}s, p90 {x['p90_s']:.2f}s, max {x['max_s']:.2f}s; "
              f"target p50 <= 2 s {'met' if x['target_p50_met'] else 'NOT met'}")
    if "large" in out and "rows_per_s" in out["large"]:
        x = out["large"]
        print(f"large file ({x['bytes'] / 1e9:.2f} GB, {x['gzip_bytes'] / 1e6:.0f} MB gzip, {x['rows']:,} rows): "
              f"{x['rows_per_s']:,.0f} rows/s, peak RSS {x['peak_rss_mb']:.0f} MB against {x['idle_rss_mb']:.0f} MB "
              f"idle (start-up VmHWM {x['idle_hwm_mb']:.0f} MB)")
    if "worker_profile" in out and "share_by_module" in out["worker_profile"]:
        x = out["worker_profile"]
        print(f"worker under cProfile, share of the main thread's own time: "
              f"{', '.join(f'{k} {v:.0%}' for k, v in list(x['share_by_module'].items())[:8])}")
    if "pipeline" in out:
        x = out["pipeline"]["summary"]
        print(f"pipeline ({out['pipeline']['rows']:,} rows), µs CPU a row: this tree {x['this']['us_per_row']:.2f}"
              + (f", before {x['before']['us_per_row']:.2f} (ratio {x['ratio']:.3f})" if "before" in x else ""))
    if "profile" in out:
        p = out["profile"]
        print(f"profile, µs per row: {p['us_per_row']}; pure steps {p['pure_steps_us_per_row']} µs/row = "
              f"{p['pure_steps_rows_per_s']:,} rows/s on one core")


if __name__ == "__main__":
    sys.exit(main())
