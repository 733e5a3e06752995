"""The exporter under two loads: how soon a closed hour is on S3, and how much memory an hour of 1 GB takes.

``--mode latency``: a caught-up pipeline and an hour boundary. One worker (all
stages) reads a steady stream of sample events (``--rate`` per second) from a
producer whose Kafka timestamps (server_upload_time) run ``shift`` ahead of the
clock, so that an hour ends ``--lead`` seconds after the stream starts instead
of at the next wall-clock hour. The stream goes on past the hour's end plus the
grace (``--grace``, the destination's ``close_grace_s``). For the hour that
ended, per run: when each partition's last object of the hour was complete on
S3 (its ledger record's ``written_at``) and when the ``_complete`` marker was,
both in the stream's time and counted from the hour's end. The issue's bound is
grace + 30 s. Every run is a fresh deployment (topic prefix, app id, data dir)
on the same broker and S3.

``--mode memory``: one hour of ``--gigabytes`` of export rows (events built as
``stream.events.ingest`` builds them, pre-loaded on events.valid as the HTTP API
writes them), exported by a worker running dedupe and export, with the default
object size (256 MiB of rows: several objects per partition, multipart uploads).
Peak RSS (VmHWM) of the worker and the throughput, for the full hour and for a
tenth of it in the same session, once with the export stage alone (batches
pre-loaded on events.accepted) and once with dedupe and export (on
events.valid): if objects sat in memory, RSS would grow with the hour.

    python bench/bench_export.py --mode latency --runs 5
    python bench/bench_export.py --mode memory --gigabytes 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import boto3
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workload
from bench_worker import BUCKET, PARTITIONS, PROJECT, CpuSampler, log, status_kb, stop_proc

from stream.devstack.sample import SampleEvents
from stream.devstack.services import local_aws_env, start_broker, start_moto
from stream.events.timefmt import HOUR_MS
from stream.export.ledger import LedgerRecord
from stream.kafka import ensure_topics
from stream.settings import load_settings

BENCH = Path(__file__).resolve().parent


def config(bootstrap: str, s3_url: str, prefix: str, data_dir: Path, **dest) -> dict:
    return {
        "kafka": {"bootstrap_servers": bootstrap, "session_timeout_s": 2, "heartbeat_interval_s": 0.5},
        "topics": {"prefix": prefix, "partitions": PARTITIONS, "ingest_partitions": PARTITIONS},
        "ingest": {"default_project": PROJECT},
        "s3": {"endpoint_url": s3_url},
        "worker": {"app_id": prefix.rstrip("."), "data_dir": str(data_dir), "log_level": "info", "http_port": None},
        "projects": [{"id": PROJECT, "name": "bench"}],
        "destinations": [{"name": "bench", "project": PROJECT, "bucket": BUCKET, "prefix": prefix,
                          "encryption": {"type": "sse-s3"}, **dest}],
    }


def start_worker(workdir: Path, cfg_path: Path, name: str, *stages: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "stream", "worker", "-c", str(cfg_path)] + (["--stages", ",".join(stages)]
                                                                          if stages else [])
    return subprocess.Popen(cmd, stdout=open(workdir / f"{name}.log", "wb"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True, env={**os.environ, **local_aws_env()})


async def ledger_records(bootstrap: str, topic: str, stop: threading.Event, out: list[LedgerRecord]) -> None:
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await c.start()
    try:
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        await c.seek_to_beginning(tp)
        while not stop.is_set():
            for recs in (await c.getmany(timeout_ms=200)).values():
                out += [LedgerRecord.decode(m.value) for m in recs]
    finally:
        await c.stop()


# ------------------------------------------------------------------------------------------------- latency ------

def latency_run(workdir: Path, bootstrap: str, s3_url: str, n: int, rate: float, lead: float, grace: float,
                after: float) -> dict:
    prefix = f"lat{n}-{uuid.uuid4().hex[:6]}."
    run_dir = workdir / prefix.rstrip(".")
    run_dir.mkdir()
    cfg_path = run_dir / "stream.yaml"
    cfg_path.write_text(yaml.safe_dump(config(bootstrap, s3_url, prefix, run_dir / "data", close_grace_s=grace)))
    settings = load_settings(cfg_path)
    asyncio.run(ensure_topics(settings))
    proc = start_worker(workdir, cfg_path, f"worker-latency-{n}")
    time.sleep(6)                                  # start-up and group joins, before the stream begins
    now = int(time.time() * 1000)
    boundary = now - now % HOUR_MS + 2 * HOUR_MS   # an hour end ahead of the clock: only the data closes it
    shift = boundary - int((time.time() + lead) * 1000)
    ledger: list[LedgerRecord] = []
    stop = threading.Event()
    watcher = threading.Thread(target=asyncio.run, args=(ledger_records(bootstrap, settings.topics.name(
        "export_ledger"), stop, ledger),))
    watcher.start()

    async def stream() -> int:
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        await p.start()
        samples, sent = SampleEvents(seed=n, duplicate_rate=0, invalid_rate=0), 0
        try:
            t_end = time.time() + lead + grace + after
            while time.time() < t_end:
                tick = time.time()
                ts = int(tick * 1000) + shift
                for s in samples.stream(ts, ts + 100, max(1, int(rate / 10))):
                    await p.send(settings.topics.name("ingest"), s.value, key=s.key, timestamp_ms=s.timestamp_ms)
                    sent += 1
                await asyncio.sleep(max(0.0, 0.1 - (time.time() - tick)))
            await p.flush()
        finally:
            await p.stop()
        return sent
    sent = asyncio.run(stream())
    hour = boundary - HOUR_MS
    deadline = time.time() + 60
    while time.time() < deadline and not any(r.kind == "marker" and r.hour == hour for r in ledger):
        time.sleep(0.5)
    stop.set()
    watcher.join()
    stop_proc(proc)
    objects = [r for r in ledger if r.kind == "object" and r.hour == hour]
    markers = [r for r in ledger if r.kind == "marker" and r.hour == hour]
    last_by_partition: dict[int, int] = {}
    for r in objects:
        last_by_partition[r.partition] = max(last_by_partition.get(r.partition, 0), r.written_at)
    after_end = {p: (t + shift - boundary) / 1000 for p, t in last_by_partition.items()}
    return {"events_sent": sent, "objects_of_hour": len(objects), "events_of_hour": sum(r.events for r in objects),
            "last_object_after_hour_end_s": after_end,
            "marker_after_hour_end_s": (markers[0].written_at + shift - boundary) / 1000 if markers else None,
            "grace_s": grace}


def latency(a) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="stream-bench-latency-"))
    log(f"work dir {workdir}")
    os.environ.update(local_aws_env())
    moto, broker = start_moto(workdir), start_broker(workdir)
    s3_url, bootstrap = f"http://127.0.0.1:{moto.port}", f"127.0.0.1:{broker.port}"
    boto3.client("s3", endpoint_url=s3_url).create_bucket(Bucket=BUCKET)
    runs = []
    try:
        for n in range(a.runs):
            r = latency_run(workdir, bootstrap, s3_url, n, a.rate, a.lead, a.grace, a.after)
            log(f"run {n}: last object of the hour per partition "
                f"{ {p: round(v, 2) for p, v in sorted(r['last_object_after_hour_end_s'].items())} } s after the "
                f"hour's end, marker {r['marker_after_hour_end_s']} s (grace {a.grace:g} s)")
            runs.append(r)
    finally:
        broker.stop()
        moto.stop()
    lasts = [v for r in runs for v in r["last_object_after_hour_end_s"].values()]
    marks = [r["marker_after_hour_end_s"] for r in runs if r["marker_after_hour_end_s"] is not None]
    summary = {"runs": len(runs), "rate_events_per_s": a.rate, "grace_s": a.grace,
               "last_object_after_hour_end_s": {"min": min(lasts), "median": statistics.median(lasts),
                                                "max": max(lasts)},
               "marker_after_hour_end_s": {"min": min(marks), "median": statistics.median(marks), "max": max(marks)}
               if marks else None,
               "markers_written": len(marks)}
    log(json.dumps(summary))
    return {"summary": summary, "runs": runs}


# -------------------------------------------------------------------------------------------------- memory ------

def hour_of_rows(gigabytes: float, seed: int) -> tuple[list[tuple[int, bytes, int]], int, int]:
    """(partition, EventBatch, events) for one past hour holding about ``gigabytes`` of export rows."""
    base = int(time.time() * 1000)
    base = base - base % HOUR_MS - HOUR_MS           # the hour before the current one
    probe = workload.batches(workload.generate(2000, PARTITIONS, seed=seed, dup_rate=0.0, hours=1, now_ms=base),
                             "events.ingest", PROJECT, PARTITIONS)
    per_event = sum(len(v) for _, v, _ in probe) / 2000
    n = int(gigabytes * 1e9 / per_event)
    t0 = time.monotonic()
    w = workload.generate(n, PARTITIONS, seed=seed, dup_rate=0.0, hours=1, now_ms=base)
    items = workload.batches(w, "events.ingest", PROJECT, PARTITIONS)
    size = sum(len(v) for _, v, _ in items)
    log(f"built {n:,} events in {len(items):,} batches, {size / 1e9:.2f} GB, in {time.monotonic() - t0:.0f}s")
    return items, n, size


def memory_run(workdir: Path, s3_url: str, items, events: int, label: str, stages: tuple[str, ...],
               identity: bool = True) -> dict:
    broker = start_broker(workdir)
    bootstrap = f"127.0.0.1:{broker.port}"
    prefix = f"mem-{label}-{uuid.uuid4().hex[:6]}."
    run_dir = workdir / prefix.rstrip(".")
    run_dir.mkdir()
    cfg_path = run_dir / "stream.yaml"
    cfg = config(bootstrap, s3_url, prefix, run_dir / "data", close_grace_s=1, idle_close_s=2)
    cfg["identity"] = {"enabled": identity}    # on by default; it runs in the dedupe stage
    cfg_path.write_text(yaml.safe_dump(cfg))
    settings = load_settings(cfg_path)
    try:
        asyncio.run(ensure_topics(settings))
        t0 = time.monotonic()
        topic = "valid" if "dedupe" in stages else "accepted"
        asyncio.run(workload.preload_batches(bootstrap, settings.topics.name(topic), items))
        log(f"  {label}, {'+'.join(stages)}: pre-loaded {len(items):,} batches on events.{topic} in "
            f"{time.monotonic() - t0:.0f}s")
        proc = start_worker(workdir, cfg_path, f"worker-memory-{label}-{'-'.join(stages)}", *stages)
        sampler = CpuSampler({"worker": proc.pid})
        sampler.start()
        ledger: list[LedgerRecord] = []
        stop = threading.Event()
        watcher = threading.Thread(target=asyncio.run, args=(ledger_records(bootstrap, settings.topics.name(
            "export_ledger"), stop, ledger),))
        watcher.start()
        t_start, rss_peak, deadline = time.time(), 0, time.time() + 1800
        while time.time() < deadline and sum(r.events for r in ledger if r.kind == "object") < events:
            time.sleep(1)
            rss_peak = max(rss_peak, status_kb(proc.pid, "VmRSS"))
        hwm = status_kb(proc.pid, "VmHWM")
        stop.set()
        watcher.join()
        sampler.stop()
        stop_proc(proc)
        objects = [r for r in ledger if r.kind == "object"]
        written = sum(r.events for r in objects)
        t_first = min(r.written_at for r in objects) / 1000 if objects else t_start
        t_last = max(r.written_at for r in objects) / 1000 if objects else t_start
        raw = sum(len(v) for _, v, _ in items)
        return {"label": label, "stages": "+".join(stages), "identity": identity and "dedupe" in stages,
                "events": events, "exported": written, "batch_bytes": raw,
                "objects": len(objects), "object_bytes_max": max((r.bytes for r in objects), default=0),
                "peak_rss_mb": hwm / 1024, "rss_sampled_max_mb": rss_peak / 1024,
                "seconds_to_last_object": t_last - t_start, "events_per_s": written / (t_last - t_start),
                "first_object_after_s": t_first - t_start}
    finally:
        broker.stop()


def memory(a) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="stream-bench-memory-"))
    log(f"work dir {workdir}")
    os.environ.update(local_aws_env())
    items, events, size = hour_of_rows(a.gigabytes, a.seed)
    moto = start_moto(workdir)
    s3_url = f"http://127.0.0.1:{moto.port}"
    boto3.client("s3", endpoint_url=s3_url).create_bucket(Bucket=BUCKET)
    # a tenth of the hour: the first tenth of every partition's batches (their order kept), so that both sizes
    # keep all partitions busy and differ only in how much each object holds
    by_part: dict[int, list] = {}
    for it in items:
        by_part.setdefault(it[0], []).append(it)
    tenth = [it for part in by_part.values() for it in part[: max(1, len(part) // 10)]]
    runs = []
    try:
        for stages, identity in ((("export",), False), (("dedupe", "export"), False), (("dedupe", "export"), True)):
            for label, these in (("tenth", tenth), ("full", items)):
                r = memory_run(workdir, s3_url, these, sum(n for _, _, n in these), label, stages, identity)
                log(f"  {json.dumps(r)}")
                runs.append(r)
    finally:
        moto.stop()
    return {"gigabytes_of_batches": size / 1e9, "runs": runs}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=["latency", "memory"], required=True)
    ap.add_argument("--runs", type=int, default=5, help="latency: hour ends measured (default 5)")
    ap.add_argument("--rate", type=float, default=400, help="latency: events per second (default 400)")
    ap.add_argument("--lead", type=float, default=15, help="latency: seconds of stream before the hour ends")
    ap.add_argument("--grace", type=float, default=10, help="latency: the destination's close_grace_s")
    ap.add_argument("--after", type=float, default=15, help="latency: seconds of stream after the grace")
    ap.add_argument("--gigabytes", type=float, default=1.0, help="memory: size of the hour's rows")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--results", default=None, help="where to write the JSON results")
    a = ap.parse_args()
    out = latency(a) if a.mode == "latency" else memory(a)
    path = Path(a.results or BENCH / f"results-{a.mode}.json")
    path.write_text(json.dumps(out, indent=2) + "\n")
    log(f"results in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
