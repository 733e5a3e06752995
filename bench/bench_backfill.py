"""A backfill against the live exporter: the same hours of events.accepted, in the same run.

    python bench/bench_backfill.py [--hours H] [--gigabytes G] [--repeats R] [--seed S]

One broker and one moto_server for the session, started here and stopped by PID.
events.accepted is pre-loaded once with ``--hours`` whole past hours holding
``--gigabytes`` of export rows in all (EventBatch records as the dedupe stage
writes them, 4 partitions). Each repeat gets a fresh app id and two fresh
destinations of the same project, in the same bucket under their own prefixes:

  live      ``stream worker --stages export`` exports every hour to it;
  backfill  ``stream exports backfill`` rebuilds the same hours into a
            destination that is off (``enabled: false``, no live exporter: the
            migration case), with no worker running.

Which of the two goes first alternates between repeats. For both, the time is
from the process start to the ``written_at`` of the ledger record of the object
that completes the hours' event count (start-up included in both: faust's group
join for the worker, the claim for the backfill), and every run checks the
exported count exactly. Peak RSS is the process's VmHWM: read before the worker
is stopped; for the backfill, the last reading while it runs (sampled every
0.1s). Not the backfill's ``ru_maxrss``: on Linux, exec folds the high-water RSS
of the address space it replaces into it, and subprocess spawns through vfork,
whose address space is this process's -- gigabytes once the rows are built.

Results go to stdout and bench/results-backfill.json.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workload
from bench_export import config, ledger_records
from bench_worker import BUCKET, PARTITIONS, PROJECT, log, status_kb, stop_proc

from stream.devstack.services import local_aws_env, start_broker, start_moto
from stream.events.timefmt import HOUR_MS
from stream.export.ledger import LedgerRecord
from stream.kafka import ensure_topics
from stream.settings import load_settings

BENCH = Path(__file__).resolve().parent


def hours_of_rows(hours: int, gigabytes: float, seed: int) -> tuple[list[tuple[int, bytes, int]], int, list[int]]:
    """(partition, EventBatch, events) for ``hours`` whole past hours holding about ``gigabytes`` of rows."""
    now = int(time.time() * 1000)
    probe = workload.batches(workload.generate(2000, PARTITIONS, seed=seed, dup_rate=0.0, hours=1, now_ms=now),
                             "events.ingest", PROJECT, PARTITIONS)
    n = int(gigabytes * 1e9 / (sum(len(v) for _, v, _ in probe) / 2000))
    w = workload.generate(n, PARTITIONS, seed=seed, dup_rate=0.0, hours=hours, now_ms=now - now % HOUR_MS)
    items = workload.batches(w, "events.ingest", PROJECT, PARTITIONS)
    return items, n, sorted(w.hours)


def deployment(workdir: Path, bootstrap: str, s3_url: str, prefix: str, rep: int) -> Path:
    cfg = config(bootstrap, s3_url, prefix, workdir / f"data-{rep}", close_grace_s=1, idle_close_s=2)
    cfg["worker"]["app_id"] = f"{prefix.rstrip('.')}-r{rep}"
    live = cfg["destinations"][0]
    cfg["destinations"] = [{**live, "name": f"live-{rep}", "prefix": f"live-{rep}/"},
                           {**live, "name": f"backfill-{rep}", "prefix": f"backfill-{rep}/", "enabled": False}]
    path = workdir / f"stream-{rep}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class Ledger:
    """The export ledger's records, followed in a thread while a run goes on."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.records: list[LedgerRecord] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(ledger_records(bootstrap, topic, self._stop,
                                                                                self.records),))
        self._thread.start()

    def events(self, destination: str) -> int:
        return sum(r.events for r in list(self.records) if r.kind == "object" and r.destination == destination)

    def completed_at(self, destination: str, events: int) -> float:
        """written_at (s) of the object record with which the destination's events reach ``events``."""
        total = 0
        for r in list(self.records):
            if r.kind == "object" and r.destination == destination:
                total += r.events
                if total >= events:
                    return r.written_at / 1000
        raise AssertionError(f"{destination}: {total} events of {events}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def live_run(workdir: Path, cfg: Path, name: str, ledger: Ledger, events: int, timeout: float) -> dict:
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "stream", "worker", "-c", str(cfg), "--stages", "export"],
                            stdout=open(workdir / f"{name}.log", "wb"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True, env={**os.environ, **local_aws_env()})
    try:
        deadline = time.time() + timeout
        while ledger.events(name) < events and time.time() < deadline:
            time.sleep(0.5)
        hwm = status_kb(proc.pid, "VmHWM")
    finally:
        stop_proc(proc)
    done = ledger.events(name)
    assert done == events, f"{name}: exported {done} of {events} events (log {workdir / f'{name}.log'})"
    seconds = ledger.completed_at(name, events) - t0
    return {"kind": "live", "events": done, "seconds": seconds, "events_per_s": done / seconds,
            "peak_rss_mb": hwm / 1024}


def backfill_run(workdir: Path, cfg: Path, name: str, ledger: Ledger, events: int, first: str, end: str,
                 timeout: float) -> dict:
    t0 = time.time()
    out = open(workdir / f"{name}.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "stream", "exports", "backfill", name, "--from", first, "--to",
                             end, "--json", "-c", str(cfg)], stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True, env={**os.environ, **local_aws_env()})
    deadline = time.time() + timeout
    hwm = 0
    while time.time() < deadline:
        pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        hwm = max(hwm, status_kb(proc.pid, "VmHWM"))   # 0 once it exited (a zombie has no memory)
        time.sleep(0.1)
    else:
        stop_proc(proc)
        raise AssertionError(f"{name}: the backfill took longer than {timeout}s (log {workdir / f'{name}.log'})")
    proc.returncode = os.waitstatus_to_exitcode(status)
    exited = time.time()
    assert proc.returncode == 0, f"{name}: exit {proc.returncode} (log {workdir / f'{name}.log'})"
    deadline = time.time() + 30
    while ledger.events(name) < events and time.time() < deadline:
        time.sleep(0.2)
    done = ledger.events(name)
    assert done == events, f"{name}: exported {done} of {events} events (log {workdir / f'{name}.log'})"
    seconds = ledger.completed_at(name, events) - t0
    return {"kind": "backfill", "events": done, "seconds": seconds, "events_per_s": done / seconds,
            "process_seconds": exited - t0, "peak_rss_mb": hwm / 1024}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hours", type=int, default=1, help="whole past hours pre-loaded (default 1)")
    ap.add_argument("--gigabytes", type=float, default=1.0, help="export rows in all those hours (default 1)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--timeout", type=float, default=900, help="seconds one run may take")
    ap.add_argument("--results", default=str(BENCH / "results-backfill.json"))
    a = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="stream-bench-backfill-"))
    log(f"work dir {workdir}")
    os.environ.update(local_aws_env())
    t = time.monotonic()
    items, events, hours = hours_of_rows(a.hours, a.gigabytes, a.seed)
    size = sum(len(v) for _, v, _ in items)
    log(f"built {events:,} events over {a.hours} hour(s) in {len(items):,} batches, {size / 1e9:.2f} GB, in "
        f"{time.monotonic() - t:.0f}s")
    first, end = (time.strftime("%Y-%m-%dT%H", time.gmtime(ms / 1000)) for ms in (hours[0], hours[-1] + HOUR_MS))
    moto, broker = start_moto(workdir), start_broker(workdir)
    s3_url, bootstrap = f"http://127.0.0.1:{moto.port}", f"127.0.0.1:{broker.port}"
    boto3.client("s3", endpoint_url=s3_url).create_bucket(Bucket=BUCKET)
    prefix = f"bf-{uuid.uuid4().hex[:6]}."
    runs: list[dict] = []
    try:
        settings = load_settings(deployment(workdir, bootstrap, s3_url, prefix, 0))
        asyncio.run(ensure_topics(settings))
        t = time.monotonic()
        asyncio.run(workload.preload_batches(bootstrap, settings.topics.name("accepted"), items))
        log(f"pre-loaded events.accepted in {time.monotonic() - t:.0f}s; hours {first} .. {end}")
        ledger = Ledger(bootstrap, settings.topics.name("export_ledger"))
        try:
            for rep in range(a.repeats):
                cfg = deployment(workdir, bootstrap, s3_url, prefix, rep)
                order = ("live", "backfill") if rep % 2 == 0 else ("backfill", "live")
                for kind in order:
                    name = f"{kind}-{rep}"
                    r = (live_run(workdir, cfg, name, ledger, events, a.timeout) if kind == "live" else
                         backfill_run(workdir, cfg, name, ledger, events, first, end, a.timeout))
                    r["repeat"] = rep
                    runs.append(r)
                    log(f"  {name}: {r['events']:,} events in {r['seconds']:.1f}s = {r['events_per_s']:,.0f} ev/s, "
                        f"{60 * a.hours / r['seconds']:.1f} hours/min, peak RSS {r['peak_rss_mb']:.0f} MB")
        finally:
            ledger.stop()
    finally:
        broker.stop()
        moto.stop()
    live = statistics.median(r["events_per_s"] for r in runs if r["kind"] == "live")
    back = statistics.median(r["events_per_s"] for r in runs if r["kind"] == "backfill")
    ratios = [b["events_per_s"] / lv["events_per_s"] for lv in runs if lv["kind"] == "live"
              for b in runs if b["kind"] == "backfill" and b["repeat"] == lv["repeat"]]
    summary = {"hours": a.hours, "gigabytes": size / 1e9, "events": events,
               "live_events_per_s": live, "backfill_events_per_s": back, "ratio_of_medians": back / live,
               "ratio_per_repeat": ratios,
               "live_hours_per_min": statistics.median(60 * a.hours / r["seconds"] for r in runs if r["kind"] == "live"),
               "backfill_hours_per_min": statistics.median(60 * a.hours / r["seconds"] for r in runs
                                                           if r["kind"] == "backfill"),
               "live_peak_rss_mb": max(r["peak_rss_mb"] for r in runs if r["kind"] == "live"),
               "backfill_peak_rss_mb": max(r["peak_rss_mb"] for r in runs if r["kind"] == "backfill")}
    log(json.dumps(summary))
    Path(a.results).write_text(json.dumps({"summary": summary, "runs": runs}, indent=2) + "\n")
    log(f"results in {a.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
