"""Throughput of one worker with and without the identity stage, in one run, and the identity state per user.

usage:
    python bench/bench_identity.py [--events N] [--repeats R] [--seed S] [--timeout SECONDS] [--profile]

The method is bench_worker.py's figure B (its module docstring): N sample events
pre-loaded on events.valid as EventBatch records, a fresh broker per run, one
``stream worker`` process running dedupe + export, throughput = N / (t_last -
t_first) from Kafka timestamps. Each repeat runs the same pre-loaded events
through a worker with ``identity.enabled: false`` and one with it on (dedupe +
identity + enrichment + export), alternating which goes first. After the run
with identity, the worker is stopped (RocksDB flushes on close) and the size of
its identity table's RocksDB directories is divided by the users and devices
of the workload: the state on disk per user; the live entries are read back
(key + value bytes by kind of key: devices, pairs, profiles, users, journal...).
The journal (pre-images of the last batches, for replays) is pruned every 64
batches per partition, so it is bounded by batches, not by users.
``--profile`` adds one untimed run with identity sampled by py-spy
(bench/profile-identity.txt). Results: stdout and bench/results-identity.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
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


KINDS = {b"D": "devices", b"P": "pairs", b"A": "profiles", b"U": "users", b"G": "groups", b"W": "link watermarks",
         b"j": "journal", b"c": "counter", b"a": "applied offset", b"H": "holds", b"Q": "held rows",
         b"R": "held rows (numbered by a previous version)", b"x": "held rows let go, until committed",
         b"h": "the holds' index", b"r": "released rows' next offset"}


def live_bytes(dbs: list[Path]) -> dict[str, int]:
    """Key + value bytes of the live entries of the identity RocksDB directories, by kind of key."""
    from rocksdict import AccessType, Options, Rdict
    out: dict[str, int] = {}
    for path in dbs:
        db = Rdict(str(path), Options(raw_mode=True), access_type=AccessType.read_only())
        try:
            for k, v in db.items():
                kind = KINDS.get(k[:1], "other")
                out[kind] = out.get(kind, 0) + len(k) + len(v)
        finally:
            db.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--results", default=str(BENCH / "results-identity.json"))
    ap.add_argument("--profile", action="store_true",
                    help="one more, untimed run with identity, sampled by py-spy: bench/profile-identity.txt")
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
        plan = [(rep, identity) for rep in range(a.repeats)
                for identity in ((False, True) if rep % 2 == 0 else (True, False))]
        for rep, identity in plan + ([(a.repeats, True)] if a.profile else []):
            profile_to = workdir / "identity.raw" if rep == a.repeats else None
            stack.broker = start_broker(workdir)
            try:
                r = bw.prepare(stack, "valid", rep * 2 + int(identity), session)
                cfg = yaml.safe_load(r.cfg_path.read_text())
                cfg["identity"] = {"enabled": identity}
                r.cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
                r.settings = load_settings(r.cfg_path)
                asyncio.run(workload.preload_batches(stack.bootstrap, r.settings.topics.name("valid"), batched))
                res = bw.run_worker(stack, r, w, a.timeout, profile_to)
                if profile_to is not None:
                    import profile_summary
                    if profile_to.exists():
                        (BENCH / "profile-identity.txt").write_text(profile_summary.summarise(
                            profile_to, f"dedupe + identity + export from events.valid, {w.n:,} events, worker "
                            f"at {res.get('events_per_s', 0):,.0f} ev/s under py-spy"))
                        bw.log("profile: bench/profile-identity.txt")
                    continue
                res.update(identity=identity, repeat=rep)
                if identity:
                    dbs = [p for p in (r.data_dir / "faust").rglob("*") if p.is_dir() and "identity" in p.name
                           and p.suffix == ".db"]
                    res["identity_state_bytes"] = sum(dir_bytes(p) for p in dbs)
                    res["identity_live_bytes"] = live_bytes(dbs)
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
    live = [sum(x["identity_live_bytes"].values()) for x in ok if x["identity"]]
    with_id = [x["identity_live_bytes"] for x in ok if x["identity"]]
    kinds = {k: statistics.median([d.get(k, 0) for d in with_id]) for k in set().union(*with_id)}
    summary = {"events": w.n, "users": users, "devices": devices, "without_identity_eps": off,
               "with_identity_eps": on, "ratio": on / off, "identity_state_bytes": state,
               "state_bytes_per_user": state / users, "state_bytes_per_device": state / devices,
               "live_bytes_per_user": statistics.median(live) / users,
               "live_bytes_per_user_by_kind": {k: v / users for k, v in sorted(kinds.items())},
               "live_bytes_per_user_without_journal": sum(v for k, v in kinds.items() if k != "journal") / users,
               "cpu_us_per_event_without": 1e6 * statistics.median([x["cpu_s"] for x in ok if not x["identity"]]) / w.n,
               "cpu_us_per_event_with": 1e6 * statistics.median([x["cpu_s"] for x in ok if x["identity"]]) / w.n}
    Path(a.results).write_text(json.dumps({"summary": summary, "runs": runs}, indent=1, default=str))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
