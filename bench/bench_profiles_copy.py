"""Profiles read by a cohort sync: the whole profiles changelog read into a dict at every sync, against the sync's local
copy of it caught up with the records written since the previous sync.

usage:
    python bench/bench_profiles_copy.py [--profiles N] [--members M] [--new K] [--scanned U] [--repeats R]
                                        [--seed S] [--out NAME]
    python bench/bench_profiles_copy.py --lookups [--profiles N] [--scanned U] [--repeats R] [--seed S] [--out NAME]

On a fresh local Tansu broker, N profiles (default 200,000) are written to the profiles table's changelog (4
partitions) as the profiles stage writes them (``stream.imports.profiles.encode``; one in 20 deleted). Each repeat
first writes K new records (default 1,000 profiles set again), then runs, each in a process of its own, alternating:

  whole   the profile step of a sync as it was: every stored profile read into a dict
          (``profiles_snapshot.read_stored``), then the profile properties of M members (default 1,000) looked up;
  copy    the step as it is: the local copy (``stream.cohorts.profiles_copy``, kept in the bench's data directory
          from the previous repeat) caught up to the changelog's end, reading only the K new records, then the same
          M members' properties read by key;
  first   the copy's first sync: a new copy read from the beginning of the changelog, then the same lookups (what a
          worker's first sync of a project with profiles costs once).

Each process reports the step's seconds, the records it read, the microseconds of a member's lookup, and its peak
RSS (``VmHWM``) and the RSS it had before the step (the interpreter and imports), in MiB; the members' properties
each read are compared (a digest that must be the same in every mode of a repeat). Apart from the step, each process
then times the profile lookups of a scan of U users of the state (default 20,000, a fifth without a profile): a
sync's scan asks for the profile of every user of a project with profiles, once per cohort synced
(``SyncView.users``), a dict lookup in ``whole``, a RocksDB get and the properties' JSON decoded in ``copy``; in
``copy`` and ``first`` the same scan's profiles are then read again ``RUN`` (256) users at a time, one RocksDB
multi-get each (rocksdict's ``get`` of a list of keys; the same properties). Ratios
are taken within a repeat. Results: a Markdown table on stdout and bench/results-profiles-copy.json (--out NAME:
another file), with the load average before and after and the copy's bytes on disk.

--lookups: the lookup phase alone, in this process, without a broker: N profiles written into a copy on disk
(``ProfilesCopy.apply``), closed and opened again (read from its files, as a later sync reads it), then the profiles
of a scan of U users (in the order of their amplitude_ids, which is not their user_ids': random) read R times each
way, alternating: ``single``, one get a user
(``profile_reader``, as ``SyncView.users`` reads them); ``batched``, one multi-get for each ``RUN`` (256) users;
``dict``, a lookup in a dict of the decoded properties (what the whole changelog read into memory cost a lookup,
and what a sync holding each user's profile once read would cost the next cohorts' scans). µs a user, the reads of
the copy each way, and the ratio single / batched within each repeat; the properties read must be the same each way.
Then the bytes a user that such a hold takes (two properties a user; ``tracemalloc``). Results:
bench/results-profiles-lookups.json (--out NAME: another file).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

P = 424242
PARTITIONS = 4
RUN = 256
"""--lookups, and the scans' second read: the users whose profiles one multi-get reads."""
TOPICS = "bench."


def rss_mib(field: str = "VmRSS") -> float:
    """This process's RSS now (``VmRSS``) or its peak (``VmHWM``; unlike ``ru_maxrss``, not the parent's peak
    carried over the exec), MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def settings_of(bootstrap: str, data_dir: Path):
    from stream.settings import Settings
    return Settings.model_validate({
        "kafka": {"bootstrap_servers": bootstrap},
        "topics": {"prefix": TOPICS, "partitions": PARTITIONS},
        "worker": {"app_id": "bench-profiles", "data_dir": str(data_dir)},
        "projects": [{"id": P}]})


def lookups(n_profiles: int, m: int, scanned: int, seed: int) -> dict[str, list[str]]:
    """The members looked up, and the users of a scan of the state: a fifth of these without a profile."""
    rnd = random.Random(seed)
    return {"members": [f"user-{i}" for i in sorted(rnd.sample(range(n_profiles), m))],
            "scanned": [f"user-{i}" for i in rnd.sample(range(n_profiles * 5 // 4), scanned)]}


async def write(settings, records: list[tuple[bytes, bytes]]) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from stream.imports import profiles
    from stream.topics import profiles_changelog
    topic = profiles_changelog(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            await admin.create_topics([NewTopic(topic, PARTITIONS, 1, topic_configs={"cleanup.policy": "compact"})])
    finally:
        await admin.close()
    p = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, linger_ms=20,
                         max_batch_size=1 << 20)
    await p.start()
    try:
        for i in range(0, len(records), 5000):
            await asyncio.gather(*[await p.send(topic, v, key=k, partition=profiles.partition(k, PARTITIONS))
                                   for k, v in records[i:i + 5000]])
    finally:
        await p.stop()


def profile_records(users: range, rnd: random.Random, round_: int) -> list[tuple[bytes, bytes]]:
    from stream.imports.profiles import Profile, encode, key
    out = []
    for i in users:
        props = None if i % 20 == 7 else {"plan": rnd.choice(["free", "pro", "team"]), "age": rnd.randrange(18, 90),
                                          "country": rnd.choice(["DE", "FR", "US", "BR"]), "round": round_,
                                          "email": f"user-{i}@example.com", "score": rnd.random()}
        out.append((key(P, f"user-{i}"), encode(Profile(props, (1_700_000_000_000, "s3://b/p.json", round_ * 10_000_000
                                                                  + i), 1_700_000_000_000 + i))))
    return out


def child(mode: str, bootstrap: str, data_dir: Path, asked: dict[str, list[str]]) -> dict:
    """One sync's profile step in this process (module docstring)."""
    from stream.cohorts.profiles_copy import ProfilesCopy, catch_up, profile_reader
    from stream.export.profiles_snapshot import read_stored
    from stream.imports.profiles import key
    from stream.topics import profiles_changelog
    settings = settings_of(bootstrap, data_dir)
    users = asked["members"]
    before = rss_mib()
    t0 = time.perf_counter()
    if mode == "whole":
        stored = asyncio.run(read_stored(settings))
        records = len(stored)

        def profile_of(project, user_id):
            p = stored.get(key(project, user_id))
            return None if p is None else p.properties
        t1 = time.perf_counter()
        got = [profile_of(P, u) for u in users]
    else:
        copy = ProfilesCopy.open(data_dir, profiles_changelog(settings))
        records = asyncio.run(catch_up(copy, settings))
        profile_of = profile_reader(copy, frozenset({P}))
        t1 = time.perf_counter()
        got = [profile_of(P, u) for u in users]
    t2 = time.perf_counter()
    seconds = t2 - t0
    peak = rss_mib("VmHWM")     # the step's (the scan's lookups below keep what they read, for the digest)
    t3 = time.perf_counter()
    scan = [profile_of(P, u) for u in asked["scanned"]]
    scan_s = time.perf_counter() - t3
    batched_us = None
    if mode != "whole":     # the same scan's profiles read ``RUN`` users at a time, one multi-get each
        t4 = time.perf_counter()
        assert multi_get(copy, [(P, u) for u in asked["scanned"]]) == scan
        batched_us = round((time.perf_counter() - t4) / max(len(scan), 1) * 1e6, 2)
        copy.close()            # as the sync's source closes it when its process ends
    digest = hashlib.sha256(json.dumps([got, scan], sort_keys=True).encode()).hexdigest()[:16]
    return {"mode": mode, "seconds": round(seconds, 3), "records_read": records, "rss_before_mib": round(before, 1),
            "peak_rss_mib": round(peak, 1),
            "lookup_us": round((t2 - t1) / max(len(users), 1) * 1e6, 2), "scan_s": round(scan_s, 3),
            "scan_us": round(scan_s / max(len(scan), 1) * 1e6, 2), "scan_batched_us": batched_us,
            "found": sum(g is not None for g in got),
            "digest": digest}


def multi_get(copy, asked: list[tuple[int, str]]) -> list:
    """The profile properties of ``asked`` read ``RUN`` users at a time, one RocksDB multi-get each (rocksdict's
    ``get`` of a list of keys), as ``profile_reader`` decodes them."""
    import orjson

    from stream.imports.profiles import key
    out = []
    for i in range(0, len(asked), RUN):
        out += [None if raw is None else orjson.loads(raw)["properties"]
                for raw in copy.db.get([key(p, u) for p, u in asked[i:i + RUN]])]
    return out


def lookup_phase(n_profiles: int, scanned: int, repeats: int, seed: int) -> dict:
    """``--lookups`` (module docstring)."""
    import tracemalloc

    from stream.cohorts.profiles_copy import ProfilesCopy, profile_reader
    from stream.imports.profiles import decode, key
    rnd = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="stream-bench-lookups-"))
    try:
        records = profile_records(range(n_profiles), rnd, 0)
        copy = ProfilesCopy.open(work, "lookups")
        for i in range(0, len(records), 10_000):
            copy.apply(0, records[i:i + 10_000], i + 10_000)
        copy.close()
        stored = {k: decode(v).properties for k, v in records}
        # the scan's users, a fifth without a profile
        asked = [(P, u) for u in lookups(n_profiles, 1, scanned, seed)["scanned"]]
        copy = ProfilesCopy.open(work, "lookups")
        reader = profile_reader(copy, frozenset({P}))
        runs = []
        for rep in range(repeats):
            one: dict = {}
            order = ("single", "batched", "dict") if rep % 2 == 0 else ("dict", "batched", "single")
            got: dict = {}
            for way in order:
                t0 = time.perf_counter()
                if way == "single":
                    got[way] = [reader(p, u) for p, u in asked]
                elif way == "batched":
                    got[way] = multi_get(copy, asked)
                else:
                    got[way] = [stored.get(key(p, u)) for p, u in asked]
                one[way] = {"us": round((time.perf_counter() - t0) / len(asked) * 1e6, 2),
                            "reads": {"single": len(asked), "batched": -(-len(asked) // RUN), "dict": 0}[way]}
            assert got["single"] == got["batched"] == got["dict"]
            one["single_over_batched"] = round(one["single"]["us"] / one["batched"]["us"], 2)
            one["load"] = load()
            print(f"repeat {rep}: {one}", file=sys.stderr)
            runs.append(one)
        # what a sync would hold to read each user's profile once whatever the cohorts synced: the properties a
        # cohort reads (two names) of each user scanned, by amplitude_id
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        held = {1_000_000 + i: None if props is None else {n: props[n] for n in ("country", "plan")}
                for i, props in enumerate(got["single"])}
        cache_bytes = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        del held
        copy.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"profiles": n_profiles, "scanned": scanned, "run": RUN, "found": sum(g is not None for g in got["single"]),
            "cache_bytes_per_user": round(cache_bytes / len(asked)), "runs": runs}


def run_child(mode: str, bootstrap: str, data_dir: Path, users_file: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, "--bootstrap", bootstrap, "--data-dir",
                          str(data_dir), "--users", str(users_file)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profiles", type=int, default=200_000)
    ap.add_argument("--members", type=int, default=1_000)
    ap.add_argument("--new", type=int, default=1_000)
    ap.add_argument("--scanned", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", help="the results file's name under bench/ (default results-profiles-copy.json)")
    ap.add_argument("--lookups", action="store_true", help="the lookup phase alone (module docstring)")
    ap.add_argument("--child")
    ap.add_argument("--bootstrap")
    ap.add_argument("--data-dir")
    ap.add_argument("--users")
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.bootstrap, Path(a.data_dir), json.loads(Path(a.users).read_text()))))
        return
    if a.lookups:
        load_before = load()
        result = lookup_phase(a.profiles, a.scanned, a.repeats, a.seed)
        result.update(load_before=load_before, load_after=load())
        print(f"\n{a.profiles} profiles in the copy, a scan of {a.scanned} users ({result['found']} with a profile), "
              f"runs of {result['run']}; load {load_before} -> {result['load_after']}; "
              "holding two properties of each user "
              f"scanned: {result['cache_bytes_per_user']} bytes a user\n")
        print("| repeat | single: µs a user | single: reads | batched: µs a user | batched: reads | dict: µs a user "
              "| single / batched |")
        print("|---|---|---|---|---|---|---|")
        for rep, r in enumerate(result["runs"]):
            print(f"| {rep} | {r['single']['us']} | {r['single']['reads']} | {r['batched']['us']} | "
                  f"{r['batched']['reads']} | {r['dict']['us']} | {r['single_over_batched']} |")
        (BENCH / (a.out or "results-profiles-lookups.json")).write_text(json.dumps(result, indent=1) + "\n")
        return

    from stream.devstack.services import start_broker
    work = Path(tempfile.mkdtemp(prefix="stream-bench-profiles-"))
    broker = start_broker(work)
    try:
        bootstrap = f"127.0.0.1:{broker.port}"
        settings = settings_of(bootstrap, work / "data")
        rnd = random.Random(a.seed)
        t0 = time.perf_counter()
        asyncio.run(write(settings, profile_records(range(a.profiles), rnd, 0)))
        print(f"{a.profiles} profiles written in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        users_file = work / "users.json"
        users_file.write_text(json.dumps(lookups(a.profiles, a.members, a.scanned, a.seed)))
        # the copy as the previous sync left it
        prior = run_child("copy", bootstrap, work / "data", users_file)
        print(f"copy made: {prior}", file=sys.stderr)
        load_before, runs = load(), []
        for rep in range(a.repeats):
            again = sorted(rnd.sample(range(a.profiles), a.new))
            asyncio.run(write(settings, [r for i in again for r in profile_records(range(i, i + 1), rnd, rep + 1)]))
            one = {}
            order = ("whole", "copy", "first") if rep % 2 == 0 else ("first", "copy", "whole")
            for mode in order:
                if mode == "first":
                    fresh = work / f"fresh-{rep}"
                    one[mode] = run_child("copy", bootstrap, fresh, users_file)
                    shutil.rmtree(fresh, ignore_errors=True)
                else:
                    one[mode] = run_child(mode, bootstrap, work / "data", users_file)
                print(f"repeat {rep} {mode}: {one[mode]}", file=sys.stderr)
            assert len({r["digest"] for r in one.values()}) == 1, one
            one["load"] = load()
            runs.append(one)
        load_after = load()
        copy_bytes = sum(f.stat().st_size for f in (work / "data").rglob("*") if f.is_file())
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)

    rows = []
    print(f"\n{a.profiles} profiles stored, {a.members} members looked up ({a.scanned} in a scan), {a.new} new "
          "records a repeat; "
          f"load {load_before} -> {load_after}; the copy on disk: {copy_bytes / (1 << 20):.1f} MiB\n")
    print("| repeat | whole: s | whole: peak RSS MiB | copy: s | copy: records read | copy: peak RSS MiB | "
          "first: s | first: peak RSS MiB | whole s / copy s | whole / copy: peak RSS | "
          "whole / copy: RSS the step added | "
          "scan lookup µs: whole / copy / copy batched |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for rep, r in enumerate(runs):
        w, c, f = r["whole"], r["copy"], r["first"]
        row = {"repeat": rep, "whole": w, "copy": c, "first": f, "load": r["load"],
               "time_ratio": round(w["seconds"] / c["seconds"], 1),
               "rss_ratio": round(w["peak_rss_mib"] / c["peak_rss_mib"], 2),
               "growth_ratio": round((w["peak_rss_mib"] - w["rss_before_mib"])
                                     / max(c["peak_rss_mib"] - c["rss_before_mib"], 0.1), 1)}
        rows.append(row)
        print(f"| {rep} | {w['seconds']} | {w['peak_rss_mib']} | {c['seconds']} | {c['records_read']} | "
              f"{c['peak_rss_mib']} | {f['seconds']} | {f['peak_rss_mib']} | {row['time_ratio']} | "
              f"{row['rss_ratio']} | {row['growth_ratio']} | {w['scan_us']} / {c['scan_us']} / "
              f"{c['scan_batched_us']} |")
    result = {"profiles": a.profiles, "members": a.members, "scanned": a.scanned, "new_records_per_repeat": a.new,
              "partitions": PARTITIONS,
              "load_before": load_before, "load_after": load_after, "copy_bytes": copy_bytes, "runs": rows}
    (BENCH / (a.out or "results-profiles-copy.json")).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
