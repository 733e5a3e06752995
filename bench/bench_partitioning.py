"""murmur2 and partition_for on keys not seen before: aiokafka's pure-Python murmur2 against partitioning's own.

    python bench/bench_partitioning.py [--keys N] [--repeats R]

Keys: ``--keys`` device ids, half UUID strings (36 bytes) and half short ids like bench_import's
(``device-0123456``, 14 bytes), all different (the import's case: most rows bring a device not seen before).
Each round times, alternating, one pass of each version over each half: ``murmur2`` alone on the encoded keys,
and ``partition_for`` with an empty memo (every key a miss: encode, hash, memo store), the previous version being
the same function over ``aiokafka.partitioner.murmur2``. Process CPU time per key, best of 3 passes a round;
the ratios are within a round. Every hash is checked equal to aiokafka's first. The load average (1 min) is
taken before and after. Results go to stdout and bench/results-partitioning.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

from aiokafka.partitioner import murmur2 as aiokafka_murmur2

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
from stream.events import partitioning  # noqa: E402
from stream.events.partitioning import murmur2, partition_for  # noqa: E402

PARTITIONS = 12


def previous_partition_for(memos: dict[int, dict[str, int]]):
    """partition_for as it was (with its partition_memo and MEMO_KEYS check), over aiokafka's murmur2."""
    def partition_memo(partitions: int) -> dict[str, int]:
        memo = memos.get(partitions)
        if memo is None:
            memo = memos[partitions] = {}
        return memo

    def partition_for_(key: str, partitions: int) -> int:
        memo = partition_memo(partitions)
        p = memo.get(key)
        if p is None:
            if len(memo) >= partitioning.MEMO_KEYS:
                memo.clear()
            p = memo[key] = (aiokafka_murmur2(key.encode()) & 0x7FFFFFFF) % partitions
        return p
    return partition_for_


def per_key(step, n: int, passes: int = 3) -> float:
    best = float("inf")
    for _ in range(passes):
        t0 = time.process_time()
        step()
        best = min(best, time.process_time() - t0)
    return best / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--results", default=str(BENCH / "results-partitioning.json"))
    args = ap.parse_args()
    rnd = random.Random(20261206)
    half = args.keys // 2
    sets = {"uuid": [str(uuid.UUID(int=rnd.getrandbits(128), version=4)) for _ in range(half)],
            "short": [f"device-{i:07d}" for i in rnd.sample(range(10_000_000), args.keys - half)]}
    encoded = {name: [k.encode() for k in keys] for name, keys in sets.items()}
    for name, keys in encoded.items():
        assert [murmur2(k) for k in keys] == [aiokafka_murmur2(k) for k in keys], name

    def hash_pass(f, keys):
        return lambda: [f(k) for k in keys]

    def partition_pass(new: bool, keys):
        def step():
            if new:
                partitioning.partition_memo(PARTITIONS).clear()
                f = partition_for
            else:
                f = previous_partition_for({})
            for k in keys:
                f(k, PARTITIONS)
        return step

    load_before = os.getloadavg()
    rounds = []
    for r in range(args.repeats):
        row: dict = {"round": r}
        for name in sets:
            for what, before, after in (
                    ("murmur2", hash_pass(aiokafka_murmur2, encoded[name]), hash_pass(murmur2, encoded[name])),
                    ("partition_for", partition_pass(False, sets[name]), partition_pass(True, sets[name]))):
                b = per_key(before, len(sets[name]))
                a = per_key(after, len(sets[name]))
                row[f"{what}.{name}"] = {"before_us": round(b, 3), "after_us": round(a, 3), "ratio": round(a / b, 3)}
        rounds.append(row)
        print(json.dumps(row))
    partitioning.partition_memo(PARTITIONS).clear()
    load_after = os.getloadavg()
    summary = {}
    for key in rounds[0]:
        if key == "round":
            continue
        summary[key] = {f: round(statistics.median(r[key][f] for r in rounds), 3)
                        for f in ("before_us", "after_us", "ratio")}
    for what in ("murmur2", "partition_for"):   # the mixed set: half of each kind
        summary[f"{what}.mixed"] = {f: round(statistics.median(
            (r[f"{what}.uuid"][f] + r[f"{what}.short"][f]) / 2 for r in rounds), 3) for f in ("before_us", "after_us")}
        summary[f"{what}.mixed"]["ratio"] = round(summary[f"{what}.mixed"]["after_us"]
                                                  / summary[f"{what}.mixed"]["before_us"], 3)
    out = {"keys": args.keys, "repeats": args.repeats, "partitions": PARTITIONS,
           "load_average_1m": [round(load_before[0], 2), round(load_after[0], 2)],
           "rounds": rounds, "medians": summary}
    print(json.dumps(out["medians"], indent=1), "load", out["load_average_1m"])
    Path(args.results).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
