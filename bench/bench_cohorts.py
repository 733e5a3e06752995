"""Cohorts stage: what keeping cohort membership in-stream costs the worker, and what a sync costs.

usage:
    python bench/bench_cohorts.py [--part worker|sync|retention|stage|all] [--events N] [--repeats R]
                                  [--members M] [--users U] [--seed S] [--before CHECKOUT] [--take K]

Parts:

  worker     One worker process (ingest skipped: events pre-loaded on events.valid as EventBatch records, as
             bench_worker.py's variant "valid"; dedupe, identity, export to moto S3), with 10 cohorts defined
             and synced (the cohorts stage's agents in the same process) and without any, alternating in the
             same run, each on a fresh Tansu broker. The 10 cohorts' syncs go to a bucket that does not exist, so
             that none runs in the measured window (a sync's cost is the part "sync"). Throughput = N / (t_last - t_first) as in bench_worker.py,
             where t_last is also at least the Kafka timestamp of the cohort state's last changelog record of a
             user (the stage must have taken every event too: the worker is stopped only once its group has
             committed events.accepted and the cohorts topic to their ends). Target: with / without >= 0.8.
             --before CHECKOUT: the
             worker with cohorts of another checkout too, in every repeat, on the same input.
  sync       A sync of a cohort of M members (default 1,000,000) from the state (4 RocksDB partitions as a
             sync's local copy of the changelog: members streamed in amplitude_id order, each member's state
             looked up for its row), diffed against a previous sync of which 10% differ, the three CSV files
             written; against the same done in memory: the same users' states in a dict (what a sync reading
             the events held once it had read them), each evaluated, the members sorted, then the same diff. Each in a process of its own: time, peak RSS, and the
             state's bytes per user (keys and values; the RocksDB files after a compaction). Target: baseline
             time / state time >= 0.5.
  retention  The same U users (default 100,000) with one purchase a day for 1 and for 7 days (two retentions of
             events; --days), folded through both steps of the stage (a cohort of purchases within 1 day); the
             stores compacted as a sync's local copy is after its first read; then a sync from the state, and
             the old way's read of the same rows (``sync.Membership.add_row``, the fold per row of a sync reading
             events.accepted). The sync's cost should not depend on the days kept.
  stage      Both steps in one process (``LocalStage``, in-memory stores) on figure B's generated events: CPU
             time per event, best of R; --take K applies the cohorts records of K events.accepted batches at once.

Results: a Markdown table on stdout and bench/results-cohorts.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

P = 424242
DAY = 86_400_000
COHORT = {"id": "pro-buyers", "project": P, "name": "Pro buyers", "rule": {"and": [
    {"performed": "purchase", "within_days": 7}, {"user_property": "plan", "op": "=", "value": "pro"}]}}


def log(msg: str) -> None:
    print(f"[bench_cohorts {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cohort_set(within_days: int = 7):
    from stream.cohorts.rules import parse_cohorts
    rule = {"and": [{"performed": "purchase", "within_days": within_days},
                    {"user_property": "plan", "op": "=", "value": "pro"}]}
    return parse_cohorts([{**COHORT, "rule": rule}], keep_properties=["plan"])


# ---------------------------------------------------------------- sync -----------------------------------------

def child_sync(kind: str, members: int, seed: int) -> dict:
    """One sync of ``members`` members, from the state (``kind`` "state") or sorted in memory ("baseline")."""
    from rocksdict import Options, Rdict

    from stream.cohorts.membership import UserState
    from stream.cohorts.stage import RdictStore, StoredUser, SyncView, encode_user, user_key
    from stream.cohorts.sync import write_files

    cohorts = cohort_set()
    key = cohorts.cohorts[0].conditions[0].key
    r = random.Random(seed)
    ids = r.sample(range(1, members * 20), members)           # unsorted, as users arrive
    t = 1_710_028_800_000                                    # 2024-03-10 00:00 UTC
    day = t // DAY - 1
    out: dict = {"kind": kind, "members": members}
    changed = set(r.sample(ids, members // 10))
    previous = sorted([i for i in ids if i not in changed] + [members * 20 + i for i in range(len(changed))])
    work = Path(tempfile.mkdtemp(prefix="bench-cohorts-"))
    try:
        if kind == "state":
            dbs = [Rdict(str(work / f"p{q}"), Options(raw_mode=True)) for q in range(4)]
            stores = {q: RdictStore(db) for q, db in enumerate(dbs)}
            t0 = time.monotonic()
            size = 0
            batches: list[list] = [[] for _ in range(4)]
            # the state's layout (a version before the keys table: the key in ``counts``)
            counted = ({"keys": [key], "counts": {0: {day: 1}}} if "keys" in StoredUser.__struct_fields__ else
                       {"counts": {key: {day: 1}}})
            for aid in ids:
                u = StoredUser(project=P, first_ms=t - DAY, last_day=day, **counted,
                               props=[(t - DAY, {"plan": "pro"})], uids=[(t - DAY, f"user-{aid}")],
                               marks={"0/events.ingest[0]": aid}, index_day=day + 7)
                k, v = user_key(aid), encode_user(u)
                size += len(k) + len(v)
                batches[aid % 4].append((k, v))
                if len(batches[aid % 4]) >= 10_000:
                    stores[aid % 4].write(batches[aid % 4])
                    batches[aid % 4] = []
            for q, b in enumerate(batches):
                stores[q].write(b)
            for db in dbs:
                db.compact_range(None, None)
                db.flush()
            out["state_build_s"] = time.monotonic() - t0
            out["state_bytes_per_user"] = size / members
            out["rocksdb_bytes_per_user"] = sum(f.stat().st_size for f in work.rglob("*.sst")) / members
            for q in range(4):
                stores[q].write([(b"p" + p.to_bytes(4, "big"), (t + 60_000).to_bytes(8, "big") +
                                  (day + 1).to_bytes(4, "big")) for p in range(4)])
            del batches
            t0, c0 = time.monotonic(), time.process_time()
            view = SyncView(cohorts, stores, 4, t)
            view.check()
            counts = write_files(work, iter(previous), view.members(cohorts.cohorts[0]), view.states, ["plan"], None)
            out["sync_s"], out["sync_cpu_s"] = time.monotonic() - t0, time.process_time() - c0
        else:
            states = {aid: UserState(project=P, user_id=f"user-{aid}", counts={key: {day: 1}},
                                     properties={"plan": "pro"}) for aid in ids}
            from stream.cohorts.membership import is_member
            from stream.cohorts.schedule import counted_day
            cohort, today = cohorts.cohorts[0], counted_day(t)
            t0, c0 = time.monotonic(), time.process_time()
            members_sorted = sorted(aid for aid, st in states.items() if is_member(st, cohort, today))
            counts = write_files(work, iter(previous), members_sorted, states, ["plan"], None)
            out["sync_s"], out["sync_cpu_s"] = time.monotonic() - t0, time.process_time() - c0
        out["files"] = counts
        out["file_bytes"] = {n: (work / f"{n}.csv").stat().st_size for n in counts}
        out["peak_rss_mb"] = peak_rss_mb()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def run_child(*args: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, timeout=3600,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"child {args} failed: {proc.stderr.decode()[-2000:]}")
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


def part_sync(members: int, seed: int, repeats: int) -> dict:
    runs = []
    for rep in range(repeats):
        order = ("state", "baseline") if rep % 2 == 0 else ("baseline", "state")
        one = {k: run_child("sync", k, str(members), str(seed + rep)) for k in order}
        assert one["state"]["files"] == one["baseline"]["files"], one
        one["ratio"] = one["baseline"]["sync_s"] / one["state"]["sync_s"]
        one["cpu_ratio"] = one["baseline"]["sync_cpu_s"] / one["state"]["sync_cpu_s"]
        log(f"sync of {members:,} members, run {rep}: state {one['state']['sync_s']:.2f}s "
            f"(rss {one['state']['peak_rss_mb']:.0f} MB), sort-and-diff {one['baseline']['sync_s']:.2f}s "
            f"(rss {one['baseline']['peak_rss_mb']:.0f} MB): {one['ratio']:.2f} (CPU time: {one['cpu_ratio']:.2f})")
        runs.append(one)
    return {"members": members, "runs": runs}


# ---------------------------------------------------------------- retention -------------------------------------

def child_retention(users: int, days: int, seed: int) -> dict:
    from rocksdict import Options, Rdict

    from stream.cohorts.stage import CohortState, RdictStore, Rekeyer, SyncView
    from stream.cohorts.sync import Membership, write_files
    from stream.events.batch import EventBatch, Origin, Source
    import orjson

    cohorts = cohort_set(within_days=1)      # what the state keeps does not grow with the days of events
    r = random.Random(seed)
    t = 1_710_028_800_000
    work = Path(tempfile.mkdtemp(prefix="bench-cohorts-"))
    try:
        dbs = {q: RdictStore(Rdict(str(work / f"p{q}"), Options(raw_mode=True))) for q in range(4)}
        state = CohortState(cohorts, 4, 400, dbs.__getitem__)
        rekey = Rekeyer(cohorts, 4, 60_000)
        rows: list[tuple[bytes, int]] = []
        offset = 0
        fold_s = 0.0
        for d in range(days, 0, -1):
            day_start = t - d * DAY
            batch_rows = []
            for u in range(users):
                at = day_start + r.randrange(DAY)
                row = {"amplitude_id": u + 1, "app": P, "event_type": "purchase",
                       "event_time": time.strftime("%Y-%m-%d %H:%M:%S.000000", time.gmtime(at / 1000)),
                       "user_id": f"user-{u + 1}", "user_properties": {"plan": "pro" if u % 3 else "free"}}
                batch_rows.append((orjson.dumps(row), at))
            batch_rows.sort(key=lambda x: x[1])
            rows += batch_rows
            t0 = time.monotonic()
            for i in range(0, len(batch_rows), 500):
                chunk = batch_rows[i:i + 500]
                offset += 1
                b = EventBatch(P, chunk[0][1] - chunk[0][1] % 3_600_000, Origin("events.valid", 0, offset),
                               list(range(offset * 1000, offset * 1000 + len(chunk))), [b"d"] * len(chunk),
                               [a for _, a in chunk], [b"u" * 16] * len(chunk), [line for line, _ in chunk],
                               Source("events.ingest", 0))
                for q, k, v in rekey.batch(offset % 4, b):
                    applied = state.apply(q, [(k, v)])
                    dbs[q].write(applied.writes)
            for p in range(4):
                for q, k, v in rekey.advance(p, day_start + DAY + 120_000, True):
                    dbs[q].write(state.apply(q, [(k, v)]).writes)
            fold_s += time.monotonic() - t0
        sizes = [len(v) for db in dbs.values() for _, v in db.scan(b"u", b"u\xff")]
        # the stores as a sync's local copy holds them after its first read (``changelog.ChangelogSource``: then
        # compacted, one value a user instead of one per write since the broker compacted the changelog)
        t0 = time.monotonic()
        for db in dbs.values():
            db.db.compact_range(None, None)
        compact_s = time.monotonic() - t0
        t0, c0 = time.monotonic(), time.process_time()
        view = SyncView(cohorts, dbs, 4, t)
        view.check()
        counts = write_files(work, iter(()), view.members(cohorts.cohorts[0]), view.states, ["plan"], None)
        sync_s, sync_cpu_s = time.monotonic() - t0, time.process_time() - c0
        t0 = time.monotonic()
        m = Membership(cohorts, {P}, t)
        for line, at in rows:
            m.add_row(orjson.loads(line), at)
        members_old = m.members(cohorts.cohorts[0])
        old_s = time.monotonic() - t0
        assert len(members_old) == counts["existing"], (len(members_old), counts)
        return {"users": users, "days": days, "events": len(rows), "members": counts["existing"],
                "stage_fold_s": fold_s, "stage_events_per_s": len(rows) / fold_s, "sync_from_state_s": sync_s,
                "sync_from_state_cpu_s": sync_cpu_s,
                "old_read_events_s": old_s, "peak_rss_mb": peak_rss_mb(),
                "state_bytes_per_user": sum(sizes) / len(sizes), "compact_s": compact_s}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def part_retention(users: int, seed: int, days_kept: list[int]) -> dict:
    out = {}
    for days in days_kept:
        res = run_child("retention", str(users), str(days), str(seed))
        log(f"{users:,} users, {days} day(s) of events ({res['events']:,}): stage {res['stage_events_per_s']:,.0f} "
            f"ev/s; sync from the state {res['sync_from_state_s']:.2f}s ({res['sync_from_state_cpu_s']:.2f}s CPU); "
            f"the old read of the events "
            f"{res['old_read_events_s']:.2f}s; {res['state_bytes_per_user']:.0f} bytes a state")
        out[str(days)] = res
    return out


# ---------------------------------------------------------------- worker ----------------------------------------

def ten_cohorts() -> list[dict]:
    from stream.devstack.sample import EVENT_TYPES
    out = []
    for i in range(10):
        et = EVENT_TYPES[i % len(EVENT_TYPES)]
        rule: dict = {"performed": et, "within_days": 7 + i}
        if i % 3 == 1:
            rule = {"and": [rule, {"user_property": "plan", "op": "=", "value": "pro"}]}
        elif i % 3 == 2:
            rule = {"or": [rule, {"not": {"performed": EVENT_TYPES[(i + 1) % len(EVENT_TYPES)],
                                          "count": {"op": "at_least", "n": 3}, "within_days": 30}}]}
        out.append({"id": f"c{i}", "project": 424242, "name": f"Cohort {i}", "rule": rule})
    return out


def folds_rekey(tree: str | Path) -> bool:
    """Whether the worker of ``tree``, in its default settings and a new deployment, rekeys in the identity stage's
    device side (``DeviceStage.on_accepted``) rather than reading events.accepted back: a version with
    ``stream.cohorts.rekey_mode`` does (``auto``), one with ``cohort_state.rekey_in_identity`` alone does not (off by
    default), one with neither does if it has the device side's hand-over."""
    tree = Path(tree)
    if (tree / "stream" / "cohorts" / "rekey_mode.py").exists():
        return True
    if "rekey_in_identity" in (tree / "stream" / "settings.py").read_text():
        return False
    return "on_accepted" in (tree / "stream" / "identity" / "stage.py").read_text()


async def stage_caught_up(bootstrap: str, group: str, accepted: str, cohorts: str, partitions: int,
                          timeout: float) -> float | None:
    """Wait until the worker's group has committed ``accepted`` to its end (events.accepted, the rekey step's input; or
    events.valid, when the device side rekeys), then the cohorts topic to the end it had then (every event's records
    applied, faust having committed their offsets once the state's writes were flushed): the time it took (None: not
    within ``timeout``)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await c.start()
    t0 = time.monotonic()
    try:
        for topic in (accepted, cohorts):
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            ends = await c.end_offsets(tps)
            while True:
                done = [((await c.committed(tp)) or 0) >= ends[tp] for tp in tps]
                if all(done):
                    break
                if time.monotonic() - t0 > timeout:
                    return None
                await asyncio.sleep(0.2)
        return time.monotonic() - t0
    finally:
        await c.stop()


async def last_state_write(bootstrap: str, topic: str, partitions: int) -> int | None:
    """The Kafka timestamp of the changelog's last record of a user's state or day index (``u``/``x`` keys; the
    progress records the stage goes on writing every few seconds left out): when the stage applied its last event."""
    import bench_worker as bw
    best = None
    async for rec in bw.whole_topic(bootstrap, topic, partitions):
        if rec.key and rec.key[:1] in (b"u", b"x"):
            best = rec.timestamp if best is None else max(best, rec.timestamp)
    return best


def part_worker(events: int, repeats: int, seed: int, timeout: float, profile: str | None = None,
                before: str | None = None, read_back: bool = False) -> dict:
    """The worker without cohorts, with 10 (``cohorts``: the settings' default; in this new deployment the rekey step
    takes the identity stage's batches), with 10 and ``cohort_state.rekey_in_identity: false`` (``read_back``, the
    rekey step reading events.accepted, when asked) and with 10 in the ``before`` checkout, in turns (the order
    reversed every other repeat)."""
    import boto3
    import yaml

    import bench_worker as bw
    import workload
    from stream.devstack.services import start_broker, start_moto
    from stream.kafka import ensure_topics
    from stream.settings import load_settings
    from stream.topics import cohorts_changelog

    os.environ.update(bw.local_aws_env())
    session = os.urandom(3).hex()
    workdir = Path(tempfile.mkdtemp(prefix=f"stream-bench-cohorts-{session}-"))
    w = workload.generate(events, bw.PARTITIONS, seed=seed)
    batched = workload.batches(w, "events.ingest", bw.PROJECT, bw.PARTITIONS)
    stack = bw.Stack(workdir, start_moto(workdir), "")
    stack.s3_url = f"http://127.0.0.1:{stack.moto.port}"
    s3 = boto3.client("s3", endpoint_url=stack.s3_url)
    s3.create_bucket(Bucket=bw.BUCKET)
    runs = []
    kinds = ("none", "cohorts") + (("read_back",) if read_back else ()) + (("before",) if before else ())
    try:
        for rep in range(repeats):
            one = {}
            for kind in (kinds if rep % 2 == 0 else tuple(reversed(kinds))):
                stack.broker = start_broker(workdir)
                try:
                    r = bw.prepare(stack, "valid", rep, f"{session}{kind[0]}", True)
                    cfg = yaml.safe_load(r.cfg_path.read_text())
                    if kind in ("cohorts", "read_back", "before"):
                        cfg["cohorts"] = ten_cohorts()
                        if kind == "read_back":
                            cfg["cohort_state"] = {"rekey_in_identity": False}
                        # a bucket that does not exist: each sync fails before it reads the state (then waits a
                        # minute), so that the window measured is the stage's steady work (syncs: part "sync")
                        cfg["cohort_destinations"] = [{"name": "crm", "bucket": "bench-no-such-bucket",
                                                       "path_prefix": "c/",
                                                       "encryption": {"type": "none"}, "syncs": [
                            {"cohort": f"c{i}", "cadence": "daily"} for i in range(10)]}]
                        r.cfg_path.write_text(yaml.safe_dump(cfg))
                        r.settings = load_settings(r.cfg_path)
                        asyncio.run(ensure_topics(r.settings))
                    asyncio.run(workload.preload_batches(stack.bootstrap, r.settings.topics.name("valid"), batched))
                    raw = workdir / "profile-cohorts.raw" if profile and kind == "cohorts" else None
                    here = os.getcwd()
                    if kind == "before":      # ``python -m stream`` imports the package of its working directory
                        os.chdir(Path(before).resolve())
                    watch, waited = bw.watch_ledger, []
                    if kind != "none":        # the worker stopped only once the stage has also taken every event
                        settings = r.settings
                        tree = before if kind == "before" else Path(__file__).resolve().parent.parent
                        fed_by = settings.topics.name("valid" if kind != "read_back" and folds_rekey(tree)
                                                      else "accepted")

                        async def watch_both(*args, **kwargs):
                            got = await watch(*args, **kwargs)
                            if got["status"] == "ok":
                                got["stage_wait_s"] = await stage_caught_up(
                                    stack.bootstrap, settings.worker.app_id, fed_by,
                                    settings.topics.name("cohorts"), bw.PARTITIONS, timeout)
                                waited.append(got["stage_wait_s"])
                            return got
                        bw.watch_ledger = watch_both
                    try:
                        res = bw.run_worker(stack, r, w, timeout, raw)
                    finally:
                        os.chdir(here)
                        bw.watch_ledger = watch
                    if waited:
                        res["stage_wait_s"] = waited[-1]
                    res["load_average"] = os.getloadavg()
                    if raw is not None and raw.exists():
                        import profile_summary
                        Path(profile).write_text(profile_summary.summarise(
                            raw, f"the worker with 10 cohorts, {w.n:,} events (figure B's input), under py-spy"))
                    if kind in ("cohorts", "read_back", "before") and res["status"] == "ok":
                        last = asyncio.run(last_state_write(stack.bootstrap, cohorts_changelog(r.settings),
                                                            bw.PARTITIONS))
                        firsts = asyncio.run(bw.first_timestamps(stack.bootstrap, r.settings.topics.name("accepted"),
                                                                 bw.PARTITIONS))
                        t_first = min(firsts.values()) / 1000
                        wall = max(res["wall_s"], (last or 0) / 1000 - t_first)
                        res["cohort_state_last_s"] = (last or 0) / 1000 - t_first
                        res["events_per_s"] = w.n / wall
                    one[kind] = res
                    log(f"run {rep} {kind}: {res.get('events_per_s', 0):,.0f} ev/s ({res['status']}), "
                        f"rss {res.get('peak_rss_mb', 0):.0f} MB, cpu {res.get('worker_cpu_total_s', 0):.1f} s, "
                        f"the stage's catching up after the export's end {res.get('stage_wait_s') or 0:.1f} s, "
                        f"load {res['load_average'][0]:.1f}")
                finally:
                    stack.broker.stop()
                    shutil.rmtree(workdir / f"valid{rep}", ignore_errors=True)   # its data dir: the next run's
            if one["none"].get("events_per_s") and one["cohorts"].get("events_per_s"):
                one["ratio"] = one["cohorts"]["events_per_s"] / one["none"]["events_per_s"]
            if read_back and one["none"].get("events_per_s") and one["read_back"].get("events_per_s"):
                one["read_back_ratio"] = one["read_back"]["events_per_s"] / one["none"]["events_per_s"]
            if before and one["none"].get("events_per_s") and one["before"].get("events_per_s"):
                one["before_ratio"] = one["before"]["events_per_s"] / one["none"]["events_per_s"]
            log(f"run {rep}: with / without {one.get('ratio', 0):.2f}"
                + (f", reading events.accepted {one.get('read_back_ratio', 0):.2f}" if read_back else "")
                + (f", {before}'s {one.get('before_ratio', 0):.2f}" if before else ""))
            runs.append(one)
    finally:
        stack.moto.stop()
    return {"events": w.n, "before": before, "read_back": read_back, "runs": runs}


# ---------------------------------------------------------------- stage in process ------------------------------

def part_stage(events: int, repeats: int, seed: int, take: int = 1) -> dict:
    """Both steps of the stage in one process (``LocalStage``, in-memory stores) on figure B's generated events,
    an amplitude_id per user (or device): CPU time per event, best of ``repeats``. ``take``: the cohorts topic's
    messages of that many events.accepted batches applied together, as the state step's take holds them."""
    import workload
    import orjson
    from stream.cohorts.stage import LocalStage
    from stream.events.batch import EventBatch
    from stream.settings import load_settings
    w = workload.generate(events, 4, seed=seed, now_ms=1_733_000_000_000)
    s = load_settings(None, projects=[{"id": 424242}], cohorts=ten_cohorts())
    ids: dict[str, int] = {}
    batches = []
    for part, data, _ in workload.batches(w, "events.ingest", 424242, 4):
        b = EventBatch.decode(data)
        rows = [orjson.loads(line) for line in b.lines]
        for r in rows:
            r["amplitude_id"] = ids.setdefault(r.get("user_id") or r["device_id"], len(ids) + 1)
        b.lines = [orjson.dumps(r) for r in rows]
        batches.append((part, b))
    batches.sort(key=lambda pb: min(pb[1].times))
    best = None
    for _ in range(repeats):
        st = LocalStage(s.cohort_set, 4, s.cohort_state.state_days)
        t = time.process_time()
        sends: list = []
        for i, (part, b) in enumerate(batches):
            sends += st.rekeyer.batch(part, b)
            if (i + 1) % take == 0:
                st.deliver(sends)
                sends = []
        st.deliver(sends)
        took = time.process_time() - t
        best = took if best is None else min(best, took)
    # what the states weigh, and what their writes send to the changelog (the user states' values)
    st = LocalStage(s.cohort_set, 4, s.cohort_state.state_days)
    apply, written = st.state.apply, [0, 0]

    def counted(q, records):
        applied = apply(q, records)
        for k, v in applied.writes:
            if k[:1] == b"u" and v is not None:
                written[0] += 1
                written[1] += len(v)
        return applied
    st.state.apply = counted
    sends = []
    for i, (part, b) in enumerate(batches):
        sends += st.rekeyer.batch(part, b)
        if (i + 1) % take == 0:
            st.deliver(sends)
            sends = []
    st.deliver(sends)
    sizes = [len(v) for store in st.stores.values() for k, v in store.data.items() if k[:1] == b"u"]
    out = {"events": w.n, "users": len(ids), "take": take, "cpu_s": best, "us_per_event": best / w.n * 1e6,
           "state_bytes_per_user": sum(sizes) / len(sizes), "state_bytes_max": max(sizes),
           "state_writes": written[0], "state_bytes_per_write": written[1] / written[0],
           "changelog_state_bytes_per_event": written[1] / w.n}
    log(f"stage in process: {w.n:,} events, takes of {take} batch(es), {best / w.n * 1e6:.1f} µs of CPU per event "
        f"(best of {repeats}), {written[0]:,} state writes; "
        f"{out['state_bytes_per_user']:.0f} bytes a state, {out['state_bytes_per_write']:.0f} a state write")
    return out


# ---------------------------------------------------------------- main ------------------------------------------

def part_rekey(events: int, repeats: int, seed: int) -> dict:
    """The rekey step in the identity stage's device side, in one process, on figure B's generated events: the device
    side resolves each batch (``resolve_batch``, a dict for its state), then the rekey step makes the batch's records
    reading each row again (``read``, as before) or from what the device side read of it (``seen``); the two in
    turn, ``repeats`` rounds, CPU time per event. The records of the two are compared in every round."""
    import workload
    from stream.cohorts.stage import Rekeyer
    from stream.events.batch import EventBatch
    from stream.identity.device import resolve_batch
    from stream.settings import load_settings
    w = workload.generate(events, 4, seed=seed, now_ms=1_733_000_000_000)
    s = load_settings(None, projects=[{"id": 424242}], cohorts=ten_cohorts())
    db: dict[bytes, bytes | None] = {}
    resolved, device_s, rows = [], 0.0, 0
    for part, data, _ in workload.batches(w, "events.ingest", 424242, 4):
        b = EventBatch.decode(data)
        t = time.process_time()
        res = resolve_batch(b.lines, b.times, b.project, part, "2024-11-30 21:00:00.000000",
                            lambda keys: [db.get(k) for k in keys])
        device_s += time.process_time() - t
        db.update(res.writes)
        b = b.select(res.keep, b.origin) if not all(res.keep) else b
        b.lines = res.lines
        rows += len(b.lines)
        resolved.append((part, b, res.seen))
    rounds = []
    for i in range(repeats):
        took = {}
        for mode in (("read", "seen") if i % 2 == 0 else ("seen", "read")):
            r = Rekeyer(s.cohort_set, 4)
            t = time.process_time()
            sends = [r.take([(p, b)], [seen] if mode == "seen" else None) for p, b, seen in resolved]
            took[mode] = (time.process_time() - t, sends)
        assert took["read"][1] == took["seen"][1], "the records of the two differ"
        rounds.append({m: round(took[m][0] / rows * 1e6, 3) for m in took})
        log(f"rekey round {i}: {rounds[-1]} us an event")
    return {"events": events, "rows": rows, "device_side_us_per_event": round(device_s / rows * 1e6, 3),
            "rounds_us_per_event": rounds, "load_average": os.getloadavg()}


def child_folded(tree: str, mode: str, events: int, seed: int, repeats: int) -> dict:
    """The device side (``resolve_batch``) then the rekey step of ``tree``'s code on figure B's generated events, in
    this process: CPU time per event of each, best of ``repeats``; ``mode`` "seen": the rekey step reads the rows'
    fields from what the device side read of them, "read": it reads the rows again."""
    sys.path[:0] = [str(Path(tree) / "bench"), str(tree)]
    for name in [m for m in sys.modules if m == "stream" or m.startswith("stream.")]:
        del sys.modules[name]
    import workload
    from stream.cohorts.stage import Rekeyer
    from stream.events.batch import EventBatch
    from stream.identity.device import resolve_batch
    from stream.settings import load_settings
    s = load_settings(None, projects=[{"id": 424242}], cohorts=ten_cohorts())
    w = workload.generate(events, 4, seed=seed, now_ms=1_733_000_000_000)
    batches = [(p, EventBatch.decode(d)) for p, d, _ in workload.batches(w, "events.ingest", 424242, 4)]
    best: dict[str, float] = {}
    for _ in range(repeats):
        db: dict[bytes, bytes | None] = {}
        rekeyer = Rekeyer(s.cohort_set, 4)
        device_s = rekey_s = 0.0
        n = 0
        for p, b in batches:
            t0 = time.process_time()
            res = resolve_batch(b.lines, b.times, b.project, p, "2024-11-30 21:00:00.000000",
                                lambda keys: [db.get(k) for k in keys])
            t1 = time.process_time()
            db.update(res.writes)
            n += len(res.lines)
            out = EventBatch(b.project, b.hour, b.origin, b.offsets, b.keys, b.times, b.uuids, res.lines,
                             source=b.source)
            t2 = time.process_time()
            rekeyer.take([(p, out)], [res.seen]) if mode == "seen" else rekeyer.take([(p, out)])
            rekey_s += time.process_time() - t2
            device_s += t1 - t0
        for k, v in (("device_us", device_s), ("rekey_us", rekey_s), ("both_us", device_s + rekey_s)):
            best[k] = min(best.get(k, float("inf")), round(v / n * 1e6, 3))
    return {"tree": tree, "mode": mode, **best}


def part_folded(before: str, events: int, repeats: int, seed: int) -> dict:
    """``child_folded`` of this tree ("seen") and of ``before`` ("read"), each in a process of its own, in turn,
    ``repeats`` rounds."""
    rounds = []
    for i in range(repeats):
        pair = [(str(BENCH.parent), "seen"), (before, "read")]
        for tree, mode in (pair if i % 2 == 0 else pair[::-1]):
            r = run_child("folded", tree, mode, str(events), str(seed))
            r["load_average"] = os.getloadavg()
            rounds.append(r)
            log(f"folded round {i} {mode}: {r}")
    return {"events": events, "rounds": rounds}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        what = sys.argv[2]
        if what == "folded":
            print(json.dumps(child_folded(sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), 3)))
            return 0
        if what == "sync":
            print(json.dumps(child_sync(sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))))
        else:
            print(json.dumps(child_retention(int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["worker", "sync", "retention", "stage", "rekey", "all"], default="all")
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--members", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--days", default="1,7", help="part retention: the days of events kept, comma-separated")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--profile", nargs="?", const=str(BENCH / "profile-cohorts.txt"), metavar="PATH",
                    help="sample the worker with 10 cohorts with py-spy (to PATH, by default "
                    "bench/profile-cohorts.txt); its throughput is then not comparable")
    ap.add_argument("--before", metavar="CHECKOUT", help="part worker: also run the worker with cohorts of this "
                    "checkout (a copy of an earlier commit, e.g. git archive HEAD | tar -x -C /tmp/before) in every "
                    "repeat, beside this one's; part rekey: also the device side and the rekey step of this checkout "
                    "(reading the rows again) against this one's (reading what the device side read), in turn")
    ap.add_argument("--read-back", action="store_true", help="part worker: also run the worker with 10 cohorts and "
                    "cohort_state.rekey_in_identity: false (the rekey step reading events.accepted) in every repeat")
    ap.add_argument("--take", type=int, default=1, help="part stage: events.accepted batches whose cohorts records "
                    "are applied together (the state step's take)")
    ap.add_argument("--results", default=str(BENCH / "results-cohorts.json"))
    a = ap.parse_args()
    parts = ["sync", "retention", "worker"] if a.part == "all" else [a.part]
    path = Path(a.results)
    results = json.loads(path.read_text()) if path.exists() else {}
    for part in parts:
        if part == "sync":
            results["sync"] = part_sync(a.members, a.seed, a.repeats)
        elif part == "retention":
            results["retention"] = part_retention(a.users, a.seed, [int(d) for d in a.days.split(",")])
        elif part == "stage":
            results["stage"] = part_stage(a.events, a.repeats, a.seed, a.take)
        elif part == "rekey":
            results["rekey"] = part_rekey(a.events, a.repeats, a.seed)
            if a.before:
                results["folded"] = part_folded(a.before, a.events, a.repeats, a.seed)
        else:
            results["worker-profiled" if a.profile else "worker"] = part_worker(a.events, a.repeats, a.seed,
                                                                                 a.timeout, a.profile, a.before,
                                                                                 a.read_back)
        path.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
