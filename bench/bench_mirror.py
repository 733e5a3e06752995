"""Mirror mutations against a backfill of the same hours, in the same run; the mirror index's size and lookup cost.

    python bench/bench_mirror.py [--hours H] [--events-per-hour N [N ...]] [--mutation-share S] [--repeats R]
                                 [--shuffle] [--within S [S ...]] [--py-spy DIR] [--lookup-keys N]
    python bench/bench_mirror.py --rewrite-only ROWS [--mutation-share S] --results FILE

For each ``--events-per-hour`` value, a session of its own: one broker and one moto_server, started here and
stopped by PID. events.accepted is pre-loaded with ``--hours`` whole hours (the last ones before the current
hour) of N events each (EventBatch records as the dedupe stage writes them, 4 partitions), built and sent an hour
at a time: this process keeps each hour's count, the index keys of up to ``--lookup-keys`` events (the lookup
microbenchmark's) and the events the mirror runs update (drawn before the hours are built), so its memory is an
hour's whatever the run's size. One destination of
the project, the archive destination (``archive: true``), and a mirror source of the project (``strategy:
mirror``, never scanned: the mutations are produced straight to events.mutations, as the importer would
write them: with ``stream.imports.mutations.encode``, and, for a worker's tree whose importer writes records of
many mutations (``grouped`` in its ``stream/imports/mutations.py``), grouped as it groups them, each 2,000
(``CHUNK_ROWS``) a record per partition). One ``stream worker --stages export,mirror`` exports
every hour and indexes every event; the script waits for the whole count on the ledger and for the worker's
consumer group to have committed the end of events.accepted and of mirror.index. Then, per repeat, a pair (the
order alternates: backfill first in even repeats, mirror first in odd ones). Before every run the mirror log (every
kept mutation, under ``mirror.log_prefix`` of the archive bucket) is deleted, so that the backfill rebuilds the hours
with no kept mutation and the mirror run applies its own UPDATEs only: each pair compares like with like (before,
every run kept its mutations and every later rebuild, a later backfill too, applied all of them).

  backfill  ``stream exports backfill`` of the hours of the destination (the live exporter still running, as
            when the mirror rebuilds them): time from the process start to the ``written_at`` of its ``done`` job
            record, once its rebuilt objects hold the hours' event count (checked exactly); rate = events / time.
            (Until this version, to the rebuilt object that completed the count, while the mirror run was timed to
            its done record: 0.5-0.8 s later in a 6-20 s rebuild. Both are kept: ``to_last_object_s``.)
  mirror    UPDATEs of ``--mutation-share`` of the events, drawn at random over all hours, produced to
            events.mutations: time from the first send to the ``written_at`` of the last ``done`` job record of
            the rebuilds (by the mirror), once the worker's log lines "mirror: N mutations ... applied" add up
            to every mutation and a line "mirror: hours rebuilt" follows the last of them; rate = events of the
            touched hours / time. The mutations are sent in the order of their events' hours, or, with
            ``--shuffle``, in a random order (as an import file in no such order: every take touches every hour).
            With several ``--within`` values, a mirror run per value and repeat, the worker restarted before it
            with ``mirror.rebuild_within_s`` set to it (0: every take's hours rebuilt before the next take, as
            the stage did before the hours were kept pending; more: the takes of a backlog rebuilt once).

Per run: the 1-minute load average before and after; its CPU seconds (the backfill process's, from its rusage; the
worker's from the first send to the rebuild's log line, from /proc: ``cpu_s``, and per pair ``cpu_ratio``, the
backfill's over the mirror's: the work each did, which the machine's other load moves less than the time); the seconds
after its start of its ledger records (job started, claim, last acknowledgement, first and last rebuilt object, done:
``phases``). ``--py-spy DIR`` records the worker with py-spy during each mirror run (collapsed stacks,
``DIR/mirror-<events per hour>-<repeat>.txt``).

Peak RSS: of the backfill, its VmHWM sampled every 0.1 s; of the worker, its VmHWM reset (``echo 5 >
/proc/<pid>/clear_refs``) before the mutations are sent and read once they are applied, so that it is the
peak while it applies them, not while it exported the hours.

After the repeats, the index: the worker is stopped, and the size of its mirror-index RocksDB directories and
the bytes of the index's changelog topic are divided by the events. Then a microbenchmark in this process: a
rocksdict DB of every event's index key and value (the table's options: bloom filter 10 bits, no WAL, flushed),
and ``MirrorApplier.route`` over batches of 5,000 UPDATEs of held events against it (one multi-get, decode,
hours_of per mutation): µs per mutation.

``--spill-only N [N ...]`` runs only the RSS growth of a rebuild pass's spill file (``KeptMutations``) that takes N
kept UPDATEs of about 1 KB over 24 hours and reads each back, a process per N.

``--rewrite-only ROWS`` runs only a microbenchmark of an hour's rewrite, in this process: ``rewrite_batch`` over
batches of 500 rows with the hour's mutations spilled as a rebuild reads them, every row parsed (the reference)
against rows found by their insert_id's bytes, in turns, outputs checked equal (µs per row); and ``named_rows`` alone
against the version that searched for the field's whole key (``reference_named_rows`` of the unit tests).

``--trees DIR [DIR ...]``: a mirror run per source tree and repeat (the worker restarted from the tree, the same
mutations in each), beside the repeat's backfill: the versions compared in one session. Every mirror run records the
worker's RSS every 0.2 s (``rss_samples``) and its peak before the rebuild's job started (the take) and after (the
rebuild).

Results go to stdout and bench/results-mirror.json.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from dataclasses import dataclass
from pathlib import Path

import boto3
import orjson
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workload
from bench_backfill import Ledger
from bench_export import config
from bench_worker import BUCKET, PARTITIONS, PROJECT, log, status_kb, stop_proc, topic_span

from stream.clock import FakeClock
from stream.devstack.services import local_aws_env, start_broker, start_moto
from stream.events.normalize import Rules
from stream.events.partitioning import partition_of
from stream.events.timefmt import HOUR_MS
from stream.export import mirror_index
from stream.export.ledger import facts
from stream.export import mirror_log
from stream.export.mirror import Mutation, Op, by_insert_id
from stream.export.mirror_apply import MirrorApplier, Targeted
from stream.imports import mutations as records
from stream.kafka import ensure_topics
from stream.settings import load_settings
from stream.topics import mirror_index_changelog

BENCH = Path(__file__).resolve().parent
FILE = "s3://bench-src/mirror/corrections.json"
BUILD_CHUNK = 100_000
APPLIED = re.compile(rb"mirror: (\d+) mutations of \S+ applied")
REBUILT = re.compile(rb"mirror: hours rebuilt")


@dataclass
class Loaded:
    """What a session keeps of the events it pre-loaded: not the events (built and sent an hour at a time), but each
    hour's count, the (insert_id, device_id, hour) of up to ``--lookup-keys`` of them for the lookup microbenchmark,
    and the values of the events each mirror run updates (drawn before the hours are built)."""

    hours: list[int]
    per_hour: int
    keys: list[tuple[str, str, int]]
    picked: dict[int, tuple[bytes, int]]
    """Global index of an event drawn by some mirror run -> (its value as sent, its hour)."""

    @property
    def n(self) -> int:
        return self.per_hour * len(self.hours)


def draws(total: int, share: float, seeds: list[int]) -> dict[int, list[int]]:
    """Per seed, the global indexes of the events a mirror run with it updates: ``share`` of ``total``, at random."""
    return {s: random.Random(s).sample(range(total), max(1, round(share * total))) for s in seeds}


def build_and_load(hours: int, per_hour: int, seed: int, picks: set[int], lookup_keys: int, bootstrap: str,
                   topic: str) -> tuple[Loaded, int]:
    """Build and pre-load ``hours`` whole hours (the last before the current one) of ``per_hour`` events each, one
    hour at a time and at most ``BUILD_CHUNK`` events at a time (so the harness's memory is a chunk's, not the run's
    or an hour's): EventBatch items as dedupe writes them, 4 partitions. (what is kept, the bytes sent)."""
    now = int(time.time() * 1000)
    end = now - now % HOUR_MS
    first = end - hours * HOUR_MS
    loaded = Loaded([first + h * HOUR_MS for h in range(hours)], per_hour, [], {})
    sent = 0
    for h, hour in enumerate(loaded.hours):
        # an hour of more than BUILD_CHUNK events is built and sent BUILD_CHUNK at a time, its offsets on from the
        # chunk before (so the harness's memory is a chunk's whatever the hour's size)
        next_offset = [0] * PARTITIONS
        for c0 in range(0, per_hour, BUILD_CHUNK):
            size = min(BUILD_CHUNK, per_hour - c0)
            w = workload.generate(size, PARTITIONS, seed=seed + 7919 * h + 104_729 * (c0 // BUILD_CHUNK),
                                  dup_rate=0.0, hours=1, now_ms=hour + HOUR_MS)
            assert len(w.records) == size and w.hours == [hour], (len(w.records), w.hours, hour)
            if c0:
                w.records[:] = [dataclasses.replace(r, offset=r.offset + next_offset[r.partition]) for r in w.records]
            for r in w.records:
                next_offset[r.partition] = max(next_offset[r.partition], r.offset + 1)
            base = h * per_hour + c0
            for j, r in enumerate(w.records):
                i = base + j
                if i in picks:
                    loaded.picked[i] = (r.value, hour)
                if len(loaded.keys) < lookup_keys:
                    ev = orjson.loads(r.value)
                    loaded.keys.append((ev["insert_id"], ev["device_id"], hour))
            items = workload.batches(w, "events.ingest", PROJECT, PARTITIONS)
            del w
            sent += sum(len(v) for _, v, _ in items)
            asyncio.run(workload.preload_batches(bootstrap, topic, items))
            del items
    return loaded, sent


def writes_many(tree: str | None) -> bool:
    """Does the importer of this tree (None: this process's) write records of many mutations (``grouped``)?"""
    if tree is None:
        return hasattr(records, "grouped")
    return "\ndef grouped(" in (Path(tree.split(",")[0]) / "stream/imports/mutations.py").read_text()


def mutation_records(loaded: Loaded, chosen: list[int], shuffle: bool = False, seed: int = 0,
                     many: bool = False) -> tuple[list[tuple[int, bytes, bytes]], set[int]]:
    """(partition, key, value) of UPDATEs of the ``chosen`` events, in the order of their events (``shuffle``: in a
    random order); the hours they touch. ``many``: as the importer writes them since records carry many mutations,
    each ``CHUNK_ROWS`` of them a record per partition (``mutations.grouped``); else a record each."""
    out, touched = [], set()
    modified = int(time.time() * 1000)
    for n, i in enumerate(sorted(chosen)):
        value, hour = loaded.picked[i]
        ev = orjson.loads(value)
        ev["user_id"] = ev.get("user_id") or f"user-{i}"
        ev["event_properties"] = {**ev.get("event_properties", {}), "corrected": True}
        m = records.mutation_of({"$mutation_type": "UPDATE", **ev}, PROJECT, (modified, FILE, n), f"derived-{n}",
                                modified, f"{FILE}#{n}", Rules(), modified)
        assert not hasattr(m, "reason"), m
        key, value = records.encode(PROJECT, m)
        out.append((partition_of(key, PARTITIONS), key, value))
        touched.add(hour)
    if shuffle:
        random.Random(seed).shuffle(out)
    if many:
        from stream.imports.importer import CHUNK_ROWS
        out = [r for i in range(0, len(out), CHUNK_ROWS)
               for r in records.grouped([(k, v) for _, k, v in out[i:i + CHUNK_ROWS]], PARTITIONS)]
    return out, touched


def mutations_in(recs: list[tuple[int, bytes, bytes]]) -> int:
    return sum(records.count_of(v) if hasattr(records, "count_of") else 1 for _, _, v in recs)


def clear_kept(s3_url: str, bucket: str, prefix: str) -> int:
    """Delete every kept mutation (the mirror log under ``prefix``), so that the next run starts with none: a
    backfill then rewrites the hours as exported, and a mirror run applies its own mutations only. The objects
    deleted."""
    s3 = boto3.client("s3", endpoint_url=s3_url)
    n = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})
            n += len(keys)
    rest = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("KeyCount", 0)
    assert rest == 0, f"{rest} objects of the mirror log are left under s3://{bucket}/{prefix}"
    return n


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


async def send(bootstrap: str, topic: str, recs: list[tuple[int, bytes, bytes]]) -> None:
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks=1)
    await p.start()
    try:
        futs = [await p.send(topic, value, key=key, partition=part) for part, key, value in recs]
        await asyncio.gather(*futs)
    finally:
        await p.stop()


async def caught_up(bootstrap: str, group: str, topics: list[str]) -> bool:
    """Has ``group`` committed the end offset of every partition of ``topics``?"""
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await c.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
        ends = await c.end_offsets(tps)
        committed = {tp: await c.committed(tp) for tp in tps}
    finally:
        await c.stop()
    return all(ends[tp] == 0 or (committed[tp] or 0) >= ends[tp] for tp in tps)


def deployment(workdir: Path, bootstrap: str, s3_url: str, prefix: str) -> Path:
    cfg = config(bootstrap, s3_url, prefix, workdir / "data", close_grace_s=1, idle_close_s=2, archive=True)
    cfg["destinations"][0]["name"] = "mirrored"
    cfg["sources"] = [{"name": "corrections", "project": PROJECT, "bucket": "bench-src", "prefix": "mirror/",
                       "strategy": "mirror", "scan": {"enabled": False},
                       "converter": {"converterConfig": {"convertToAmplitudeFunc": {
                           "event_type": "event_type", "user_id": "user_id", "device_id": "device_id",
                           "insert_id": "insert_id", "$mutation_type": "op"}}}}]
    path = workdir / "stream.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def rebuilt(ledger: Ledger, dest: str, since_ms: int) -> list:
    return [r for r in list(ledger.records) if r.destination == dest and r.written_at >= since_ms]


def phases(recs: list, t0: float) -> dict:
    """Seconds after ``t0`` of a rebuild's ledger records: its first job record, its claim, the last acknowledgement
    of the claim by the live exporter, its first and last rebuilt objects, its done record."""
    def at(kind: str, pick=min, reason: str | None = None) -> float | None:
        ts = [r.written_at for r in recs if r.kind == kind and (reason is None or r.reason == reason)]
        return round(pick(ts) / 1000 - t0, 3) if ts else None
    return {"job_started": at("job"), "claimed": at("claim"), "acknowledged": at("claim_ack", max),
            "first_object": at("object", min, "rebuilt"), "last_object": at("object", max, "rebuilt"),
            "done": at("job", max, "done")}


def backfill_run(workdir: Path, cfg: Path, name: str, ledger: Ledger, events: int, first: str, end: str,
                 timeout: float, rep: int, profile: Path | None = None) -> dict:
    t0 = time.time()
    out = workdir / f"backfill-{rep}.log"
    proc = subprocess.Popen([sys.executable, "-m", "stream", "exports", "backfill", name, "--from", first, "--to",
                             end, "--json", "-c", str(cfg)], stdout=open(out, "wb"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True, env={**os.environ, **local_aws_env()})
    spy = None
    if profile is not None:     # collapsed stacks of the backfill process, from just after its start
        spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--nonblocking", "--rate", "100",
                                "--format", "raw", "-o", str(profile), "-p", str(proc.pid)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline, hwm = time.time() + timeout, 0
    while time.time() < deadline:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        hwm = max(hwm, status_kb(proc.pid, "VmHWM"))
        time.sleep(0.1)
    else:
        stop_proc(proc)
        raise AssertionError(f"the backfill took longer than {timeout}s (log {out})")
    exited = time.time()
    if spy is not None:
        spy.wait(60)            # it ends with the process it records
    assert os.waitstatus_to_exitcode(status) == 0, f"backfill exit {status} (log {out})"
    time.sleep(1.0)                     # the ledger follower's last records
    recs = rebuilt(ledger, name, int(t0 * 1000))
    objs = [r for r in recs if r.kind == "object" and r.reason == "rebuilt"]
    total, done_at = 0, None
    for r in objs:
        total += r.events
        if done_at is None and total >= events:
            done_at = r.written_at / 1000
    assert total == events and done_at is not None, f"backfill rebuilt {total} events of {events} (log {out})"
    jobs = [facts(r) for r in recs if r.kind == "job" and r.reason == "done"]
    assert len(jobs) == 1, f"the backfill recorded {len(jobs)} done job records (log {out})"
    # to its done record, as the mirror run is timed (its last rebuilt object: ``to_last_object_s``)
    seconds = max(r.written_at for r in recs if r.kind == "job" and r.reason == "done") / 1000 - t0
    return {"kind": "backfill", "repeat": rep, "events": events, "seconds": seconds, "events_per_s": events / seconds,
            "to_last_object_s": done_at - t0, "phases": phases(recs, t0),
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "process_seconds": exited - t0, "peak_rss_mb": hwm / 1024, "jobs": jobs}


def mirror_run(workdir: Path, bootstrap: str, settings, worker: subprocess.Popen, worker_log: Path, ledger: Ledger,
               name: str, loaded: Loaded, chosen: list[int], seed: int, timeout: float, rep: int,
               shuffle: bool = False, within: float | None = None, profile: Path | None = None) -> dict:
    many = writes_many(within if isinstance(within, str) else None)
    recs, touched = mutation_records(loaded, chosen, shuffle, seed, many)
    count = mutations_in(recs)
    spy = None
    if profile is not None:     # collapsed stacks of the worker's threads, sampled while it applies the mutations
        spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--nonblocking", "--rate", "100",
                                "--format", "raw", "-o", str(profile), "-p", str(worker.pid)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(1.0)
    touched_events = loaded.per_hour * len(touched)
    log_from = worker_log.stat().st_size
    Path(f"/proc/{worker.pid}/clear_refs").write_text("5")      # VmHWM := VmRSS
    rss_before = status_kb(worker.pid, "VmRSS")
    cpu_before = cpu_s(worker.pid)
    t0 = time.time()
    asyncio.run(send(bootstrap, settings.topics.name("mutations"), recs))
    sent = time.time()
    deadline, applied, hwm, lines, rebuilt_after = t0 + timeout, 0, 0, [], False
    rss: list[tuple[float, float]] = []     # (seconds after t0, the worker's VmRSS in MB), every 0.2 s
    while time.time() < deadline:
        rss.append((round(time.time() - t0, 2), round(status_kb(worker.pid, "VmRSS") / 1024, 1)))
        with open(worker_log, "rb") as f:
            f.seek(log_from)
            all_lines = f.read().splitlines()
        lines = [ln for ln in all_lines if APPLIED.search(ln)]
        applied = sum(int(APPLIED.search(ln).group(1)) for ln in lines)
        last = max((i for i, ln in enumerate(all_lines) if APPLIED.search(ln)), default=None)
        rebuilt_after = last is not None and any(REBUILT.search(ln) for ln in all_lines[last + 1:])
        hwm = max(hwm, status_kb(worker.pid, "VmHWM"))
        if applied >= count and rebuilt_after:
            break
        assert worker.poll() is None, f"the worker exited {worker.returncode} (log {worker_log})"
        time.sleep(0.2)
    seen = time.time()
    cpu = cpu_s(worker.pid) - cpu_before
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(60)
    assert applied == count and rebuilt_after, \
        f"{applied} of {count} mutations applied in {timeout}s, rebuilt after: {rebuilt_after} (log {worker_log})"
    rebuild_lines = [ln.decode(errors="replace")[-400:] for ln in all_lines if REBUILT.search(ln)]
    hwm = max(hwm, status_kb(worker.pid, "VmHWM"))
    time.sleep(1.0)
    recs_l = rebuilt(ledger, name, int(t0 * 1000))
    jobs = [r for r in recs_l if r.kind == "job" and r.reason == "done"]
    assert jobs, "no rebuild job recorded done"
    done_at = max(r.written_at for r in jobs) / 1000
    seconds = done_at - t0
    objs = [r for r in recs_l if r.kind == "object" and r.reason == "rebuilt"]
    docs = [facts(r) for r in jobs]
    ph = phases(recs_l, t0)
    started = ph.get("job_started") or seconds
    before, during = [m for t, m in rss if t < started], [m for t, m in rss if t >= started]
    return {"kind": "mirror", "cpu_s": cpu, "rss_samples": rss, "rss_peak_before_rebuild_mb": max(before, default=None),
            "rss_peak_in_rebuild_mb": max(during, default=None), "repeat": rep, "within_s": within,
            "shuffled": shuffle, "t0": t0,
            "mutations": count, "records": len(recs), "records_of_many": many, "hours_touched": len(touched),
            "rebuild_lines": rebuild_lines,
            "events": touched_events, "seconds": seconds, "events_per_s": touched_events / seconds,
            "send_seconds": sent - t0, "log_seen_seconds": seen - t0, "phases": ph, "peak_rss_mb": hwm / 1024,
            "rss_before_mb": rss_before / 1024, "applied_lines": [ln.decode(errors="replace")[-400:] for ln in lines],
            "rebuild_jobs": len(jobs), "hours_rebuilt": sum(d.get("hours_total", 0) for d in docs),
            "events_rewritten": sum(r.events for r in objs),
            "jobs": [{**{k: d.get(k) for k in ("job", "from", "to", "hours_total", "events", "events_per_s")},
                      "started_s": d["started_at"] / 1000 - t0, "done_s": d["updated_at"] / 1000 - t0}
                     for d in docs]}


def cpu_s(pid: int) -> float:
    """The CPU seconds (user and system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def phase(run: dict, name: str) -> str:
    """A run's phase (seconds after its start) as text."""
    t = run["phases"].get(name)
    return "?" if t is None else f"{t:.1f}"


def held_mutation_bytes(loaded: Loaded, chosen: list[int]) -> dict:
    """Python heap a rebuild holds per kept mutation: ``mirror_log.decode`` of the mutations' log object, grouped
    with ``by_insert_id`` as ``Backfill._mutations`` holds them for every hour of its pass (tracemalloc)."""
    recs, _ = mutation_records(loaded, chosen)
    muts = [records.decode(v)[1] for _, _, v in recs]
    data = mirror_log.encode(muts)
    del muts
    tracemalloc.start()
    held = by_insert_id(mirror_log.decode(data))
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    n = sum(len(v) for v in held.values())
    return {"mutations": n, "log_object_bytes": len(data), "heap_bytes": size, "heap_bytes_per_mutation": size / n}


def rewrite_bench(rows: int, share: float, seed: int, workdir: Path, repeats: int = 3) -> dict:
    """µs per row of an hour's rewrite (``rewrite_batch`` over batches of 500 rows), each row parsed (the reference)
    against rows found by their insert_id's bytes (``ids``), in turns in this process, with the hour's UPDATEs
    (``share`` of the rows; every third a DELETE) spilled to a ``KeptMutations`` file as a rebuild reads them;
    both outputs checked equal."""
    from collections import Counter
    from stream.export.mirror import insert_ids, rewrite_batch
    from stream.export.mirror_kept import KeptMutations
    now = int(time.time() * 1000)
    w = workload.generate(rows, PARTITIONS, seed=seed, dup_rate=0.0, hours=1, now_ms=now - now % HOUR_MS)
    r = random.Random(seed)
    lines = []
    for rec in w.records:
        ev = orjson.loads(rec.value)
        lines.append(orjson.dumps({"$insert_id": ev.pop("insert_id"), "uuid": str(uuid.UUID(int=r.getrandbits(128))),
                                   "amplitude_id": 1, "app": 1, **ev}))
    chosen = r.sample(range(rows), max(1, round(share * rows)))
    kept = KeptMutations(workdir / "rewrite-spill")
    hour = 0
    kept.add(hour, [Mutation(orjson.loads(lines[i])["$insert_id"], Op.DELETE if n % 3 == 0 else Op.UPDATE, (1, FILE, n),
                             None, None if n % 3 == 0 else {**orjson.loads(lines[i]), "corrected": True})
                    for n, i in enumerate(chosen)])
    muts = kept.hour(hour)
    batches = [(b"\n".join(lines[i:i + 500]), list(range(i, min(i + 500, rows)))) for i in range(0, rows, 500)]

    def run(fast: bool) -> tuple[float, list, Counter]:
        outcomes: Counter = Counter()
        matched: dict = {}
        t = time.perf_counter()
        ids = insert_ids(muts) if fast else None
        out = [rewrite_batch(b, o, muts, False, outcomes, matched, ids) for b, o in batches]
        return (time.perf_counter() - t) / rows * 1e6, out, outcomes

    sys.path.insert(0, str(BENCH.parent))
    from stream.export.mirror import named_rows
    from tests.unit.export.test_mirror import reference_named_rows     # by the field's whole key (the version before)
    ids = insert_ids(muts)

    def find(f) -> float:
        t = time.perf_counter()
        for b, _ in batches:
            f(b, ids)
        return (time.perf_counter() - t) / rows * 1e6

    pairs, finds = [], []
    for _ in range(repeats):
        ref, fast = run(False), run(True)
        assert ref[1:] == fast[1:], "the rows found by their bytes must give the reference's output"
        pairs.append((ref[0], fast[0]))
        finds.append((find(reference_named_rows), find(named_rows)))
    kept.close()
    return {"rows": rows, "row_bytes": sum(map(len, lines)) / rows, "mutations": len(chosen),
            "parse_every_row_us_per_row": [a for a, _ in pairs], "by_insert_id_bytes_us_per_row": [b for _, b in pairs],
            "named_rows_by_whole_key_us_per_row": [a for a, _ in finds],
            "named_rows_by_dollar_us_per_row": [b for _, b in finds]}


def spill_rss(mutations: int, workdir: Path) -> dict:
    """RSS growth of this process while a ``KeptMutations`` file takes ``mutations`` UPDATEs of about 1 KB spread
    over 24 hours and every one is read back by its insert_id, as a rebuild pass does (run in a process of its
    own per size: ``--spill-only``)."""
    from stream.export.mirror_kept import KeptMutations

    def rss_mb() -> float:
        return status_kb(os.getpid(), "VmRSS") / 1024
    r = random.Random(mutations)
    row = {"event_type": "Video Played", "event_properties": {f"p{i}": "x" * 20 for i in range(30)},
           "user_properties": {f"u{i}": i for i in range(20)}}
    start = rss_mb()
    kept = KeptMutations(workdir / f"spill-{mutations}")
    per_hour = mutations // 24
    for h in range(24):
        ids = [str(uuid.UUID(int=r.getrandbits(128))) for _ in range(per_hour)]
        kept.add(h, [Mutation(i, Op.UPDATE, (1, FILE, n), None, {**row, "$insert_id": i}) for n, i in enumerate(ids)])
    added = rss_mb()
    r = random.Random(mutations)
    for h in range(24):
        hour = kept.hour(h)
        for _ in range(per_hour):
            assert len(hour[str(uuid.UUID(int=r.getrandbits(128)))]) == 1
    read = rss_mb()
    kept.close()
    return {"mutations": mutations, "rss_start_mb": start, "after_add_mb": added - start, "after_reads_mb": read - start,
            "peak_mb": status_kb(os.getpid(), "VmHWM") / 1024}


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def lookup_bench(keys: list[tuple[str, str, int]], batch: int, seed: int, workdir: Path) -> dict:
    """Index size and ``MirrorApplier.route`` µs per mutation against a rocksdict DB of every event's entry."""
    from rocksdict import BlockBasedOptions, Options, Rdict, WriteBatch, WriteOptions
    path = workdir / "lookup-db"
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    table = BlockBasedOptions()
    table.set_bloom_filter(10, block_based=True)
    opts.set_block_based_table_factory(table)
    db = Rdict(str(path), opts)
    wo = WriteOptions()
    wo.disable_wal = True
    db.set_write_options(wo)
    wb = WriteBatch(raw_mode=True)
    events = keys
    for n, (insert_id, device_id, hour) in enumerate(events):
        wb.put(mirror_index.key(PROJECT, insert_id), mirror_index.encode([mirror_index.entry(hour, device_id)]))
        if n % 10000 == 9999:
            db.write(wb)
            wb = WriteBatch(raw_mode=True)
    db.write(wb)
    db.flush()
    db.compact_range(None, None)
    size = dir_bytes(path)

    class Reader:
        def get_many(self, keys):
            return db.get(keys)

    async def nothing(project, hours):
        return None

    applier = MirrorApplier(FakeClock(int(time.time() * 1000)), Reader(), None, "_stream/mirror/", 90, False, nothing)
    r = random.Random(seed)
    rounds = []
    for _ in range(5):
        picks = r.sample(range(len(events)), min(batch, len(events)))
        batch_ = []
        for n, i in enumerate(picks):
            insert_id, device_id, _ = events[i]
            m = Mutation(insert_id, Op.UPDATE, (1, FILE, n), device_id, {"event_type": "x"})
            batch_.append(Targeted(PROJECT, m, n))
        t = time.perf_counter()
        applied, per_hour = applier.route(batch_)
        rounds.append((time.perf_counter() - t) / len(batch_) * 1e6)
        assert applied.routed[("UPDATE", "routed")] == len(batch_), applied.routed
        keys = [mirror_index.key(PROJECT, t.mutation.insert_id) for t in batch_]
        t = time.perf_counter()
        db.get(keys)
        rounds[-1] = (rounds[-1], (time.perf_counter() - t) / len(batch_) * 1e6)
    db.close()
    shutil.rmtree(path, ignore_errors=True)
    return {"keys": len(events), "db_bytes": size, "db_bytes_per_event": size / len(events),
            "route_us_per_mutation": [a for a, _ in rounds], "multiget_us_per_key": [b for _, b in rounds],
            "route_us_median": statistics.median(a for a, _ in rounds),
            "multiget_us_median": statistics.median(b for _, b in rounds), "batch": batch}


def session(a, per_hour: int, workdir: Path) -> dict:
    n = a.hours * per_hour
    withins: list = a.trees or a.within or [None]
    seed_of = {(rep, w): a.seed + 100 + rep + (0 if a.trees else 1000 * k)   # the trees apply the same mutations
               for rep in range(a.repeats) for k, w in enumerate(withins)}
    chosen = draws(n, a.mutation_share, sorted(seed_of.values()))
    sdir = workdir / f"eph-{per_hour}"
    sdir.mkdir()
    moto, broker = start_moto(sdir), start_broker(sdir)
    s3_url, bootstrap = f"http://127.0.0.1:{moto.port}", f"127.0.0.1:{broker.port}"
    boto3.client("s3", endpoint_url=s3_url).create_bucket(Bucket=BUCKET)
    prefix = f"mr-{uuid.uuid4().hex[:6]}."
    runs: list[dict] = []
    worker = None
    out: dict = {"events_per_hour": per_hour, "hours": a.hours, "events": n, "mutation_share": a.mutation_share}
    try:
        cfg = deployment(sdir, bootstrap, s3_url, prefix)
        settings = load_settings(cfg)
        name = settings.destinations[0].name
        asyncio.run(ensure_topics(settings))
        t = time.monotonic()
        loaded, sent = build_and_load(a.hours, per_hour, a.seed, {i for c in chosen.values() for i in c},
                                      a.lookup_keys, bootstrap, settings.topics.name("accepted"))
        first, end = (time.strftime("%Y-%m-%dT%H", time.gmtime(ms / 1000))
                      for ms in (loaded.hours[0], loaded.hours[-1] + HOUR_MS))
        out["preload"] = {"seconds": time.monotonic() - t, "bytes": sent,
                          "harness_peak_rss_mb": status_kb(os.getpid(), "VmHWM") / 1024}
        log(f"[{per_hour}/h] built and pre-loaded {n:,} events ({sent / 1e9:.2f} GB) an hour at a time in "
            f"{time.monotonic() - t:.0f}s; hours {first} .. {end}; this process's peak RSS "
            f"{out['preload']['harness_peak_rss_mb']:.0f} MB")
        ledger = Ledger(bootstrap, settings.topics.name("export_ledger"))
        try:
            worker_log = sdir / "worker.log"
            t0 = time.time()

            def start(within: float | str | None) -> subprocess.Popen:
                env, cwd = {**os.environ, **local_aws_env()}, None
                if isinstance(within, str):         # --trees: the worker runs the stream package of that tree
                    tree, *assignments = within.split(",")
                    env["PYTHONPATH"], cwd = tree, tree
                    env.update(a.split("=", 1) for a in assignments)
                elif within is not None:
                    env["STREAM_MIRROR__REBUILD_WITHIN_S"] = str(within)
                return subprocess.Popen([sys.executable, "-m", "stream", "worker", "-c", str(cfg), "--stages",
                                         "export,mirror"], stdout=open(worker_log, "ab"), stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True, env=env, cwd=cwd)
            running = withins[0]
            worker = start(running)
            group = f"{settings.worker.app_id}-export-mirror"
            topics = [settings.topics.name("accepted"), settings.topics.name("mirror_index")]
            deadline, exported, indexed = time.time() + a.timeout, None, None
            while time.time() < deadline and (exported is None or indexed is None):
                assert worker.poll() is None, f"the worker exited {worker.returncode} (log {worker_log})"
                if exported is None and sum(r.events for r in list(ledger.records)
                                            if r.kind == "object" and r.destination == name) >= n:
                    exported = time.time() - t0
                if indexed is None and asyncio.run(caught_up(bootstrap, group, topics)):
                    indexed = time.time() - t0
                time.sleep(1.0)
            assert exported is not None and indexed is not None, \
                f"not exported ({exported}) or not indexed ({indexed}) in {a.timeout}s (log {worker_log})"
            out["worker_export_and_index"] = {"exported_s": exported, "indexed_s": indexed,
                                              "peak_rss_mb": status_kb(worker.pid, "VmHWM") / 1024}
            log(f"[{per_hour}/h] worker: every hour exported after {exported:.0f}s, every event indexed after "
                f"{indexed:.0f}s (committed offsets), peak RSS {out['worker_export_and_index']['peak_rss_mb']:.0f} MB")
            for rep in range(a.repeats):
                kinds = [("backfill", None)] + [("mirror", w) for w in withins]
                order = kinds if rep % 2 == 0 else kinds[::-1]
                for kind, within in order:
                    if kind == "mirror" and within != running:
                        stop_proc(worker)
                        mark = worker_log.stat().st_size
                        worker, running = start(within), within
                        ready = time.time() + a.timeout
                        while b"Worker ready" not in worker_log.read_bytes()[mark:]:
                            assert worker.poll() is None and time.time() < ready, \
                                f"the worker restarted with {within} is not ready (log {worker_log})"
                            time.sleep(0.5)
                        time.sleep(5.0)     # its consumers' partitions assigned
                        log(f"  [{per_hour}/h] worker restarted with {within}")
                    cleared = clear_kept(s3_url, BUCKET, settings.mirror.log_prefix)
                    load = loadavg()
                    if kind == "backfill":
                        r = backfill_run(sdir, cfg, name, ledger, n, first, end, a.timeout, rep,
                                         Path(a.py_spy) / f"backfill-{per_hour}-{rep}.txt" if a.py_spy else None)
                        log(f"  [{per_hour}/h] backfill {rep}: {n:,} events of {a.hours} hours in {r['seconds']:.1f}s"
                            f" = {r['events_per_s']:,.0f} ev/s ({r['cpu_s']:.1f} s of CPU), peak RSS "
                            f"{r['peak_rss_mb']:.0f} MB; start -> job "
                            f"{phase(r, 'job_started')}s, first -> last object {phase(r, 'first_object')} -> "
                            f"{phase(r, 'last_object')}s")
                    else:
                        seed = seed_of[(rep, within)]
                        r = mirror_run(sdir, bootstrap, settings, worker, worker_log, ledger, name, loaded,
                                       chosen[seed], seed, a.timeout, rep, a.shuffle, within,
                                       Path(a.py_spy) / f"mirror-{per_hour}-{rep}.txt" if a.py_spy else None)
                        log(f"  [{per_hour}/h] mirror {rep} (rebuild_within_s {within}): {r['mutations']:,} UPDATEs "
                            f"over {r['hours_touched']} "
                            f"hours ({r['events']:,} events) in {r['seconds']:.1f}s = {r['events_per_s']:,.0f} ev/s "
                            f"(the worker's CPU {r['cpu_s']:.1f} s); "
                            f"{r['rebuild_jobs']} rebuild jobs, {r['hours_rebuilt']} hours rebuilt, "
                            f"{r['events_rewritten']:,} events rewritten; worker peak RSS {r['peak_rss_mb']:.0f} MB "
                            f"(from {r['rss_before_mb']:.0f}; before its rebuild "
                            f"{r['rss_peak_before_rebuild_mb'] or 0:.0f}, in it "
                            f"{r['rss_peak_in_rebuild_mb'] or 0:.0f}); "
                            f"first send -> job {phase(r, 'job_started')}s, first -> last object "
                            f"{phase(r, 'first_object')} -> {phase(r, 'last_object')}s")
                    r["kept_objects_deleted_before"] = cleared
                    r["loadavg_before"], r["loadavg_after"] = load, loadavg()
                    log(f"  [{per_hour}/h] load average {load[0]:.1f} before, {r['loadavg_after'][0]:.1f} after "
                        f"({cleared} kept mutation objects deleted before the run)")
                    runs.append(r)
        finally:
            ledger.stop()
            if worker is not None:
                stop_proc(worker)
        index_dirs = [p for p in (sdir / "data").rglob("*") if p.is_dir() and "mirror-index" in p.name
                      and not any("mirror-index" in q.name for q in p.parents)]
        index_bytes = sum(dir_bytes(p) for p in index_dirs)
        sst_bytes = sum(f.stat().st_size for p in index_dirs for f in p.rglob("*.sst"))
        span = asyncio.run(topic_span(bootstrap, mirror_index_changelog(settings), PARTITIONS))
        out["index"] = {"table_dirs": [str(p) for p in index_dirs], "table_bytes": index_bytes,
                        "table_bytes_per_event": index_bytes / n, "table_sst_bytes": sst_bytes,
                        "table_sst_bytes_per_event": sst_bytes / n, "changelog_records": span["records"],
                        "changelog_value_bytes": span["bytes"], "changelog_bytes_per_event": span["bytes"] / n}
        log(f"[{per_hour}/h] index: RocksDB {index_bytes / 1e6:.1f} MB = {index_bytes / n:.1f} B/event (.sst files "
            f"{sst_bytes / n:.1f} B/event); changelog "
            f"{span['bytes'] / 1e6:.1f} MB in {span['records']:,} records = {span['bytes'] / n:.1f} B/event")
    finally:
        broker.stop()
        moto.stop()
    look = lookup_bench(loaded.keys, 5000, a.seed, sdir)
    out["lookup"] = look
    out["held_mutations"] = held = held_mutation_bytes(loaded, chosen[seed_of[(0, withins[0])]])
    log(f"[{per_hour}/h] a rebuild holds {held['heap_bytes'] / 1e6:.1f} MB of heap for the {held['mutations']:,} "
        f"mutations of one repeat ({held['heap_bytes_per_mutation']:,.0f} B each)")
    log(f"[{per_hour}/h] lookup: route {look['route_us_median']:.1f} µs/mutation (multi-get alone "
        f"{look['multiget_us_median']:.1f} µs/key) over {look['keys']:,} keys; flushed DB {look['db_bytes_per_event']:.1f}"
        f" B/event")
    back = [r for r in runs if r["kind"] == "backfill"]
    mirr = [r for r in runs if r["kind"] == "mirror"]
    out["backfill_events_per_s"] = statistics.median(r["events_per_s"] for r in back)
    out["mirror_events_per_s"] = statistics.median(r["events_per_s"] for r in mirr)
    out["ratio_of_medians"] = out["mirror_events_per_s"] / out["backfill_events_per_s"]
    out["ratio_per_repeat"] = [m["events_per_s"] / b["events_per_s"] for b in back for m in mirr
                               if m["repeat"] == b["repeat"]]
    out["backfill_peak_rss_mb"] = max(r["peak_rss_mb"] for r in back)
    out["mirror_worker_peak_rss_mb"] = max(r["peak_rss_mb"] for r in mirr)
    out["per_pair"] = [{"repeat": b["repeat"], "order": "backfill first" if b["repeat"] % 2 == 0 else "mirror first",
                        "backfill_s": b["seconds"], "mirror_s": m["seconds"],
                        "ratio": m["events_per_s"] / b["events_per_s"], "variant": m["within_s"],
                        "cpu_ratio": b["cpu_s"] / m["cpu_s"] if m["cpu_s"] else None,
                        "mirror_rebuild_starts_s": min((j["started_s"] for j in m["jobs"]), default=None),
                        "backfill_peak_rss_mb": b["peak_rss_mb"], "worker_peak_rss_mb": m["peak_rss_mb"],
                        "worker_rss_before_mb": m["rss_before_mb"],
                        "loadavg_1m": [b["loadavg_before"][0], m["loadavg_before"][0], m["loadavg_after"][0]]}
                       for b in back for m in mirr if m["repeat"] == b["repeat"]]
    if a.within or a.trees:
        out["by_within_s" if a.within else "by_tree"] = {str(w): {
            "ratio_per_repeat": [m["events_per_s"] / b["events_per_s"] for b in back for m in mirr
                                 if m["repeat"] == b["repeat"] and m["within_s"] == w],
            "hours_rebuilt": [m["hours_rebuilt"] for m in mirr if m["within_s"] == w],
            "rebuild_jobs": [m["rebuild_jobs"] for m in mirr if m["within_s"] == w],
            "seconds": [m["seconds"] for m in mirr if m["within_s"] == w],
            "worker_peak_rss_mb": [m["peak_rss_mb"] for m in mirr if m["within_s"] == w],
            "cpu_s": [m["cpu_s"] for m in mirr if m["within_s"] == w],
            "rss_peak_before_rebuild_mb": [m["rss_peak_before_rebuild_mb"] for m in mirr if m["within_s"] == w],
            "rss_peak_in_rebuild_mb": [m["rss_peak_in_rebuild_mb"] for m in mirr if m["within_s"] == w],
            "rss_before_mb": [m["rss_before_mb"] for m in mirr if m["within_s"] == w],
            "phases": [m["phases"] for m in mirr if m["within_s"] == w]} for w in (a.within or a.trees)}
    out["runs"] = runs
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hours", type=int, default=24, help="whole past hours pre-loaded (default 24)")
    ap.add_argument("--events-per-hour", type=int, nargs="+", default=[20000],
                    help="events of each hour; several values: a session each (default 20000)")
    ap.add_argument("--mutation-share", type=float, default=0.01, help="share of the events updated (default 0.01)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--shuffle", action="store_true",
                    help="send the mutations in a random order, not in their events' hours' order")
    ap.add_argument("--within", type=float, nargs="+", metavar="S",
                    help="mirror.rebuild_within_s of the worker: several values, a mirror run each per repeat, the "
                         "worker restarted with it (default: the setting's default, one mirror run per repeat)")
    ap.add_argument("--trees", nargs="+", metavar="DIR",
                    help="source trees (a checkout each, DIR[,NAME=VALUE...]: environment variables of its worker, "
                         "STREAM_MIRROR__TAKE_MAX_BYTES=... for instance): a mirror run per tree and repeat, the worker "
                         "restarted from it (PYTHONPATH and working directory), each applying the same mutations; the "
                         "backfill runs this process's tree")
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--py-spy", metavar="DIR", help="record the worker with py-spy during each mirror run and each "
                    "backfill process, collapsed stacks to DIR/{mirror,backfill}-<events per hour>-<repeat>.txt")
    ap.add_argument("--lookup-keys", type=int, default=480_000,
                    help="events whose index keys the lookup microbenchmark holds (default 480,000)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds one step may take")
    ap.add_argument("--results", default=str(BENCH / "results-mirror.json"))
    ap.add_argument("--spill-only", type=int, nargs="+", metavar="N",
                    help="only the spill file's RSS growth for N kept mutations, a process per N (no broker)")
    ap.add_argument("--spill-one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--rewrite-only", type=int, metavar="ROWS",
                    help="only the rewrite microbenchmark, on an hour of ROWS rows (no broker, no worker)")
    a = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="stream-bench-mirror-"))
    if a.spill_one:
        print(json.dumps(spill_rss(a.spill_one, workdir)))
        shutil.rmtree(workdir, ignore_errors=True)
        return 0
    log(f"work dir {workdir}")
    if a.spill_only:
        runs = [json.loads(subprocess.run([sys.executable, __file__, "--spill-one", str(n)], capture_output=True,
                                          check=True).stdout) for n in a.spill_only]
        log(json.dumps(runs, indent=1))
        Path(a.results).write_text(json.dumps({"command": " ".join(sys.argv), "spill": runs}, indent=2) + "\n")
        return 0
    if a.rewrite_only:
        out = rewrite_bench(a.rewrite_only, a.mutation_share, a.seed, workdir)
        log(json.dumps(out, indent=1))
        Path(a.results).write_text(json.dumps({"command": " ".join(sys.argv), "rewrite": out}, indent=2) + "\n")
        return 0
    os.environ.update(local_aws_env())
    sessions: list[dict] = []
    for per_hour in a.events_per_hour:
        sessions.append(session(a, per_hour, workdir))
        summary = [{k: s[k] for k in ("events_per_hour", "hours", "events", "backfill_events_per_s",
                                      "mirror_events_per_s", "ratio_of_medians", "ratio_per_repeat",
                                      "backfill_peak_rss_mb", "mirror_worker_peak_rss_mb", "per_pair")} |
                   {k: s[k] for k in ("by_within_s", "by_tree") if k in s} |
                   {"index_table_bytes_per_event": s["index"]["table_bytes_per_event"],
                    "index_table_sst_bytes_per_event": s["index"]["table_sst_bytes_per_event"],
                    "index_changelog_bytes_per_event": s["index"]["changelog_bytes_per_event"],
                    "route_us_per_mutation": s["lookup"]["route_us_median"]} for s in sessions]
        Path(a.results).write_text(json.dumps({"command": " ".join(sys.argv), "summary": summary,
                                               "sessions": sessions}, indent=2) + "\n")
    log(json.dumps(summary, indent=1))
    log(f"results in {a.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
