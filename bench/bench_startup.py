"""The worker's start-up: CPU seconds and wall time from its start until /readyz answers 200.

A worker with three export destinations (one of them reached through a role, assumed on moto's STS) and the cohort
stage (ten cohorts synced to a fourth bucket), on a fresh broker topic prefix each run; moto and the broker are
shared by the runs. With ``--before CHECKOUT`` (a copy of an earlier commit, e.g. ``git archive HEAD | tar -x -C
/tmp/before``) each repeat also starts that checkout's worker, the two alternating in order.

    .venv/bin/python bench/bench_startup.py --repeats 3 --before /tmp/before
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import yaml

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))

from bench_cohorts import ten_cohorts  # noqa: E402
from bench_worker import cpu_seconds  # noqa: E402

from stream.devstack.services import free_port, local_aws_env, start_broker, start_moto  # noqa: E402

PROJECT = 424242
BUCKETS = ("start-a", "start-b", "start-c", "start-crm")


def config(bootstrap: str, s3_url: str, prefix: str, data_dir: Path, port: int) -> dict:
    dests = [{"name": f"d{i}", "project": PROJECT, "bucket": b, "prefix": prefix, "encryption": {"type": "none"}}
             for i, b in enumerate(BUCKETS[:3])]
    dests[2]["role_arn"] = "arn:aws:iam::123456789012:role/stream-export"
    return {
        "kafka": {"bootstrap_servers": bootstrap, "session_timeout_s": 2, "heartbeat_interval_s": 0.5},
        "topics": {"prefix": prefix, "partitions": 4, "ingest_partitions": 4},
        "ingest": {"default_project": PROJECT},
        "s3": {"endpoint_url": s3_url},
        "worker": {"app_id": f"{prefix}app", "data_dir": str(data_dir), "log_level": "info",
                   "http_host": "127.0.0.1", "http_port": port},
        "projects": [{"id": PROJECT, "name": "bench"}],
        "destinations": dests,
        "cohorts": ten_cohorts(),
        "cohort_destinations": [{"name": "crm", "bucket": BUCKETS[3], "path_prefix": "c/",
                                 "encryption": {"type": "none"},
                                 "syncs": [{"cohort": f"c{i}", "cadence": "daily"} for i in range(10)]}],
    }


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def one(tree: Path, bootstrap: str, s3_url: str, workdir: Path, tag: str, timeout: float) -> dict:
    prefix, port = f"st{tag}{os.urandom(2).hex()}.", free_port()
    cfg = workdir / f"{tag}.yaml"
    cfg.write_text(yaml.safe_dump(config(bootstrap, s3_url, prefix, workdir / tag, port)))
    log = open(workdir / f"{tag}.log", "wb")
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "stream", "worker", "-c", str(cfg)], cwd=tree, stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(tree)})
    try:
        while not ready(port):
            if proc.poll() is not None or time.monotonic() - t0 > timeout:
                raise RuntimeError(f"the worker of {tree} was not ready within {timeout:.0f}s; see "
                                   f"{workdir / (tag + '.log')}")
            time.sleep(0.05)
        return {"cpu_s": round(cpu_seconds(proc.pid), 3), "wall_s": round(time.monotonic() - t0, 2)}
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--before", metavar="CHECKOUT", help="also start this checkout's worker in every repeat")
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--results", default=str(BENCH / "results-startup.json"))
    a = ap.parse_args()
    os.environ.update(local_aws_env())
    workdir = Path(tempfile.mkdtemp(prefix="stream-bench-startup-"))
    moto = start_moto(workdir)
    broker = start_broker(workdir)
    s3_url = f"http://127.0.0.1:{moto.port}"
    s3 = boto3.client("s3", endpoint_url=s3_url)
    for b in BUCKETS:
        s3.create_bucket(Bucket=b)
    trees = {"this": ROOT, **({"before": Path(a.before).resolve()} if a.before else {})}
    runs: dict[str, list[dict]] = {k: [] for k in trees}
    try:
        for rep in range(a.repeats):
            for kind in (list(trees) if rep % 2 == 0 else list(reversed(trees))):
                got = one(trees[kind], f"127.0.0.1:{broker.port}", s3_url, workdir, f"{kind[0]}{rep}", a.timeout)
                got["loadavg"] = os.getloadavg()[0]
                runs[kind].append(got)
                print(f"repeat {rep} {kind}: {got}", flush=True)
    finally:
        broker.stop()
        moto.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    out = {"runs": runs, "median_cpu_s": {k: statistics.median(r["cpu_s"] for r in v) for k, v in runs.items()}}
    if a.before:
        out["cpu_ratio_this_to_before"] = [round(t["cpu_s"] / b["cpu_s"], 3)
                                           for t, b in zip(runs["this"], runs["before"])]
    Path(a.results).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
