"""Throughput of one worker with and without the identity stage, in one run, and the identity state per user.

usage:
    python bench/bench_identity.py [--events N] [--repeats R] [--seed S] [--timeout SECONDS]

The method is bench_worker.py's figure B (its module docstring): N sample events
pre-loaded on events.valid as EventBatch records, a fresh broker per run, one
``stream worker`` process running dedupe + export, throughput = N / (t_last -
t_first) from Kafka timestamps. Each repeat runs the same pre-loaded events
through a worker with ``identity.enabled: false`` and one with it on (dedupe +
identity + enrichment + export), alternating which goes first. After the run
with identity, the worker is stopped (RocksDB flushes on close) and the size of
its identity table's RocksDB directories is divided by the users and devices
of the workload: the state on disk per user. Results: stdout and
bench/results-identity.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import boto3
import orjson
import yaml

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import bench_worker as bw  # noqa: E402
import workload  # noqa: E402
from stream.devstack.services import local_aws_env, start_broker, start_moto  # noqa: E402
from stream.settings import load_settings  # noqa: E402


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--results", default=str(BENCH / "results-identity.json"))
    a = ap.parse_args()
    os.environ.update(local_aws_env())
    session = uuid.uuid4().hex[:6]
    workdir = Path(tempfile.mkdtemp(prefix=f"stream-bench-identity-{session}-"))
    w = workload.generate(a.events, bw.PARTITIONS, seed=a.seed)
    users = len({orjson.loads(r.value).get("user_id") for r in w.records} - {None})
    devices = len({r.key for r in w.records})
    batched = workload.batches(w, "events.ingest", bw.PROJECT, bw.PARTITIONS)
    bw.log(f"{w.n:,} events, {users} users, {devices} devices, {len(batched)} batches; work dir {workdir}")
    stack = bw.Stack(workdir, start_moto(workdir), "")
    stack.s3_url = f"http://127.0.0.1:{stack.moto.port}"
    boto3.client("s3", endpoint_url=stack.s3_url).create_bucket(Bucket=bw.BUCKET)
    runs: list[dict] = []
    try:
        for rep in range(a.repeats):
            for identity in ((False, True) if rep % 2 == 0 else (True, False)):
                stack.broker = start_broker(workdir)
                try:
                    r = bw.prepare(stack, "valid", rep * 2 + int(identity), session)
                    cfg = yaml.safe_load(r.cfg_path.read_text())
                    cfg["identity"] = {"enabled": identity}
                    r.cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
                    r.settings = load_settings(r.cfg_path)
                    asyncio.run(workload.preload_batches(stack.bootstrap, r.settings.topics.name("valid"), batched))
                    res = bw.run_worker(stack, r, w, a.timeout)
                    res.update(identity=identity, repeat=rep)
                    if identity:
                        dbs = [p for p in (r.data_dir / "faust").rglob("*") if p.is_dir() and "identity" in p.name
                               and p.suffix == ".db"]
                        res["identity_state_bytes"] = sum(dir_bytes(p) for p in dbs)
                    runs.append(res)
                    bw.log(f"repeat {rep}, identity {'on' if identity else 'off'}: {res.get('events_per_s', 0):,.0f} "
                           f"ev/s ({res['status']}), cpu {res.get('cpu_s', 0):.1f}s"
                           + (f", identity state {res['identity_state_bytes']:,} bytes" if identity else ""))
                finally:
                    bw.clean(r)
                    stack.broker.stop()
                    stack.broker = None
    finally:
        if stack.broker is not None:
            stack.broker.stop()
        stack.moto.stop()
    ok = [x for x in runs if x["status"] == "ok"]
    off = statistics.median([x["events_per_s"] for x in ok if not x["identity"]])
    on = statistics.median([x["events_per_s"] for x in ok if x["identity"]])
    state = statistics.median([x["identity_state_bytes"] for x in ok if x["identity"]])
    summary = {"events": w.n, "users": users, "devices": devices, "without_identity_eps": off,
               "with_identity_eps": on, "ratio": on / off, "identity_state_bytes": state,
               "state_bytes_per_user": state / users, "state_bytes_per_device": state / devices,
               "cpu_us_per_event_without": 1e6 * statistics.median([x["cpu_s"] for x in ok if not x["identity"]]) / w.n,
               "cpu_us_per_event_with": 1e6 * statistics.median([x["cpu_s"] for x in ok if x["identity"]]) / w.n}
    Path(a.results).write_text(json.dumps({"summary": summary, "runs": runs}, indent=1, default=str))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
