"""What figure A asks of one process, timed without Kafka: a floor under the worker's CPU per event.

Figure A of ``bench_worker.py`` compares one worker process reading events.ingest (one JSON event per message)
with a raw aiokafka loop. This script runs, in this one process and with no broker, the pure steps each side
performs on the same workload (``bench/workload.py``: the same seed, events and duplicates), and times each step
per event (best of ``--repeats`` passes). Neither side is charged anything for Kafka here.

Raw loop (``raw_baseline.py``'s own code): decode device_id, insert_id and time (msgspec); one RocksDB
multi-get and one WriteBatch per poll of 500 records; isal gzip of the input bytes.

Worker, the dataflow of DESIGN.md in one process (the functions the stages call):

- ingest: validate and normalize every event into its export row and group the rows into EventBatches
  (``ingest_records``), encode them, and compress them with Kafka's zstd (at kafka.compression_level's default,
  as the producers do);
- dedupe: decompress, ``ReadBatch.read``, RocksDB multi-get, ``decide``, WriteBatch and its changelog
  record (encoded and compressed, as the changelog topic receives it), ``select_encoded`` (the kept rows' message,
  with the search for the rows' newlines: each pass reads its batches anew, untimed, so that no pass finds them
  already looked for), compress;
- export: decompress, ``decode_rows``, isal gzip of the rows (``GzipLinesSpool.write_rows``).

``--identity`` adds the identity stage's device side, as the dedupe stage runs it (the default): on each accepted
batch, ``DeviceStage.batch`` on RocksDB (``resolve_batch``, the WriteBatch of its writes and journal, its
changelog records built into a zstd record batch as the producer sends them), with holds let go as in figure B
(its pre-loaded batches are all within ``identity.hold_s`` of each other, and the answers come after them: a hold
lasts until a batch of a later hour); then the enriched batches' encode and zstd
(the dedupe step's own encode and zstd still count the batches before enrichment). Held rows are references to
their events.valid message, kept in memory until let go, as the worker holds them. ``--identity-compare`` also
times, alternating in each pass, that step with held rows copied into the state (the code before references) and
with ``identity.hold_s`` 0 (nothing held), and reports them apart (not in the totals). ``--identity-only`` runs
the other steps once, untimed (they build the identity step's input), and times the identity step alone: a shorter
run, and one in which the collector's passes over the other steps' results do not fall inside the step.

The ingest step's clock is 0 here, so it clamps every server upload time to it: every batch is of one hour, and
a hold lasts until the answers, after all the batches (99.7% of the rows held). ``--figure-b`` gives the identity
step the batches ``bench_worker.py`` pre-loads on events.valid for figure B instead (``workload.batches``: built at
the current time, of the three upload hours of the workload's Kafka timestamps, the hours interleaved as the source
partitions' chunks come): there a hold is let go, unanswered, by the partition's first batch of a later hour, and
about a third of the rows are held (32,696 of 100,000), none until the answers.

``--api`` also times the pure steps of one ``stream api`` request against those of the ceiling endpoint of
``bench_api.py``, on that benchmark's request bodies (100 events each): the ceiling parses the envelope and
compresses the body as one message; the service also validates and normalizes every event, throttles, groups
by partition, encodes the batches and compresses them.

A step drops each of its outputs before it makes the next, as the worker drops a batch once it is sent;
``--keep-outputs`` keeps them all until the pass ends, as this script did before (BENCHMARKS.md's tables before
that note say so): a megabyte a batch then goes to pages the process never touched, and their faults count in the
step (EventBatch.encode 1.1 against 0.4 µs an event).

Prints the CPU microseconds per event of each step and the totals. ``bench_worker.py`` and ``bench_api.py``
measure what each side costs with Kafka and HTTP; BENCHMARKS.md combines them into the bounds.

    python bench/bench_floor.py [--events N] [--repeats R] [--api] [--identity [--identity-compare]]
                                [--identity-only] [--figure-b] [--keep-outputs] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import rocksdict
from aiokafka.codec import zstd_decode
from aiokafka.producer.message_accumulator import BatchBuilder

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from raw_baseline import Parts, RocksDedupe, extract_events  # noqa: E402
from workload import batches as valid_batches, generate  # noqa: E402

from stream.clock import FakeClock  # noqa: E402
from stream.dedup.policy import decide, encode_changelog  # noqa: E402
from stream.events.batch import EventBatch, Origin, ReadBatch, decode_rows  # noqa: E402
from stream.events.ingest import ingest_records  # noqa: E402
from stream.events.normalize import Rules  # noqa: E402
from stream.export.format import GzipLinesSpool  # noqa: E402
from stream.identity.records import dec_links, encode_remaps  # noqa: E402
from stream.identity.stage import DeviceStage  # noqa: E402
from stream.identity.users import decide as decide_users  # noqa: E402
from stream.identity.table import IdentityTable  # noqa: E402
from stream.kafka import AIOKAFKA_LEVELS, apply_compression_level, level_encoder  # noqa: E402
from stream.settings import KafkaSettings  # noqa: E402

KAFKA = KafkaSettings()
"""The producers' codec and level as the defaults have them (kafka.compression_level): every zstd here, the
changelog batches built with aiokafka's BatchBuilder too, compresses at that level."""
apply_compression_level(KAFKA)
zstd_encode = level_encoder("zstd", KAFKA.compression_level)
ZSTD_NAME = f"zstd-{AIOKAFKA_LEVELS['zstd'] if KAFKA.compression_level is None else KAFKA.compression_level}"

ZSTD = 0x04
"""The zstd codec id of a Kafka record batch (aiokafka's producer with compression_type zstd)."""

POLL = 500
"""Records per poll, as both sides read them (the raw loop's getmany and the ingest stage's)."""
WINDOW_MS = 7 * 86_400_000
PRELOADED_MS = 1_800_000_000_000
"""The Kafka timestamp of the first events.valid message (figure B pre-loads them all within a second: its holds
are let go by a batch of a later hour, not by their bound)."""


def _db(path: Path) -> rocksdict.Rdict:
    """A RocksDB store with the dedupe table's options (bloom filter 10 bits, no WAL)."""
    o = rocksdict.Options(raw_mode=True)
    o.create_if_missing(True)
    t = rocksdict.BlockBasedOptions()
    t.set_bloom_filter(10, False)
    o.set_block_based_table_factory(t)
    db = rocksdict.Rdict(str(path), options=o)
    w = rocksdict.WriteOptions()
    w.disable_wal = True
    db.set_write_options(w)
    return db


KEEP = {"outputs": False}
"""--keep-outputs: each step keeps all it made until its pass ends, as this script did before; then every output
(most of them a megabyte) is written to pages the process has not touched yet, and the page faults count in the
step. By default a step drops each output before it makes the next, as the worker drops a batch once sent."""


def _each(f: Callable, items: list) -> Callable[[], None]:
    """A step that applies ``f`` to each of ``items`` (``KEEP``)."""
    if KEEP["outputs"]:
        return lambda: [f(x) for x in items]
    return lambda: deque(map(f, items), maxlen=0)


def _timed(step: Callable[[], None], repeats: int, setup: Callable[[], None] | None = None) -> float:
    best = float("inf")
    for _ in range(repeats):
        if setup is not None:
            setup()
        t0 = time.process_time()
        step()
        best = min(best, time.process_time() - t0)
    return best


class _IdentityStore:
    """The identity table's writes (``IdentityTable``'s own methods) on plain RocksDB stores, its changelog
    records built into a zstd record batch (what aiokafka's producer sends) instead of sent."""

    apply, rollback, write, applied = IdentityTable.apply, IdentityTable.rollback, IdentityTable.write, \
        IdentityTable.applied

    def __init__(self, dbs: list[rocksdict.Rdict]):
        self.dbs = dbs

    def db(self, partition: int) -> rocksdict.Rdict:
        return self.dbs[partition]

    def get_many(self, partition: int, keys: list[bytes]) -> list[bytes | None]:
        return self.dbs[partition].get(keys)

    async def send_records(self, partition: int, records) -> None:
        b = BatchBuilder(1 << 20, ZSTD)
        for k, v in records:
            if b.append(key=k, value=v, timestamp=None) is None:
                b._build()
                b = BatchBuilder(1 << 20, ZSTD)
                b.append(key=k, value=v, timestamp=None)
        b._build()


IDENTITY_VARIANTS = {"by reference": (30.0, True), "copies": (30.0, False), "hold_s 0": (0.0, True)}
"""--identity-compare: (identity.hold_s, held rows by reference) of each variant of the identity step."""


def measure_identity(accepted: list[tuple[int, int, EventBatch, list[int]]], n: int, repeats: int, work: Path,
                     messages: list[bytes], variants: tuple[str, ...] = ("by reference",)) -> dict:
    """The identity stage on the accepted batches (partition, Kafka timestamp, batch, each row's index in its
    events.valid message ``messages[i]``), in order, then the user side's answers to their links, applied as the
    remap messages that come after them on events.valid. Several ``variants`` are timed alternating."""
    state = {"round": 0}
    reads = {"rows": 0}

    async def read_valid(partition: int, first: int, end: int) -> list[tuple[int, bytes]]:
        reads["rows"] += 1
        return [(o, messages[o]) for o in range(first, end)]
    enriched: list[EventBatch] = []
    released: list[bytes] = []
    links: list[tuple[bytes, int]] = []

    async def accept(value: bytes, partition: int | None = None) -> None:
        released.append(value)

    async def link(value: bytes, partition: int | None = None) -> None:
        links.append((value, partition or 0))

    async def run(variant: str) -> None:
        enriched.clear()
        released.clear()
        links.clear()
        state["round"] += 1
        hold_s, by_ref = IDENTITY_VARIANTS[variant]
        dbs = [_db(work / f"identity-{state['round']}-{p}") for p in range(4)]
        stage = DeviceStage(_IdentityStore(dbs), FakeClock(0), accept, link, accept, "events.valid", lambda p: None,
                            partitions=4, hold_s=hold_s, max_properties_bytes=256 << 10, max_request_bytes=8 << 20,
                            read_valid=read_valid if by_ref else None)
        offset = 0
        for offset, (p, ts, b, index) in enumerate(accepted):   # a copy: the stage sets the batch's rows
            enriched.append(await stage.batch(dataclasses.replace(b, lines=list(b.lines)), p, offset, ts, index))
        users: list[dict[bytes, bytes]] = [{} for _ in range(4)]
        answers: list[tuple[int, bytes]] = []
        for value, q in links:
            d = decide_users(dec_links(value), lambda keys, u=users[q]: [u.get(k) for k in keys], answer=True)
            users[q].update((k, v) for k, v in d.writes.items() if v is not None)
            answers += [(vp, encode_remaps(r)) for vp, r in d.remaps.items()]
        for vp, value in answers:
            offset += 1
            await stage.remaps(value, vp, offset)
        for db in dbs:
            db.close()

    best = dict.fromkeys(variants, float("inf"))
    for _ in range(repeats):
        for v in reversed(variants):      # the first variant last: its rows are the ones encoded below
            best[v] = min(best[v], _timed(lambda v=v: asyncio.run(run(v)), 1))
    label = "dedupe: identity (batches held, answered, let go; RocksDB, changelog zstd)"
    out = {label: best[variants[0]]}
    compare = {f"{label}, {v}": round(t / n * 1e6, 2) for v, t in best.items()}
    encoded = [b.encode() for b in enriched] + released
    out[f"dedupe: {ZSTD_NAME} of the enriched and released rows (producer)"] = _timed(
        lambda: [zstd_encode(v) for v in encoded], repeats)
    return {"events": n, "enriched": sum(len(b) for b in enriched), "released_messages": len(released),
            "enriched_bytes": sum(map(len, encoded)), "repeats": repeats, "read_backs": reads["rows"],
            "us_per_event": {k: round(v / n * 1e6, 2) for k, v in out.items()}, "compare": compare}


def _once(step: Callable[[], None], repeats: int, setup: Callable[[], None] | None = None) -> float:
    """A step run once for what it builds, untimed (``--identity-only``)."""
    if setup is not None:
        setup()
    step()
    return float("nan")


def measure(n: int, repeats: int, work: Path, identity: bool = False, compare: bool = False,
            identity_only: bool = False, figure_b: bool = False) -> dict:
    timed = _once if identity_only else _timed
    wl = generate(n, 4)
    polls: list[tuple[int, list]] = []
    for p in range(wl.partitions):
        recs = [r for r in wl.records if r.partition == p]
        polls += [(p, recs[i:i + POLL]) for i in range(0, len(recs), POLL)]
    rules = Rules()
    out: dict[str, float] = {}
    state = {"round": 0}

    def fresh() -> None:  # a new RocksDB per pass, so every pass sees the same first occurrences
        state["round"] += 1

    # --- the raw loop's compute ------------------------------------------------------------------------------
    def raw_decode() -> None:
        for _, recs in polls:
            extract_events(recs)

    extracted = [(p, extract_events(recs)) for p, recs in polls]

    def raw_dedupe() -> None:
        d = RocksDedupe(str(work / f"raw-{state['round']}"))
        for _, (keys, _hours, _lines) in extracted:
            d.keep(keys)
        d.close()

    probe = RocksDedupe(str(work / "raw-masks"))
    masks = [probe.keep(keys) for _, (keys, _h, _l) in extracted]
    probe.close()

    def raw_gzip() -> None:  # the surviving lines, per (partition, hour), as the raw loop compresses them
        parts = Parts()
        for (p, (_keys, hours, lines)), mask in zip(extracted, masks):
            groups: dict[int, list[bytes]] = {}
            for h, line, keep in zip(hours, lines, mask):
                if keep:
                    groups.setdefault(h, []).append(line)
            for h, g in groups.items():
                parts.add(p, h, g)
        parts.close_all()

    out["raw: decode 3 fields"] = timed(raw_decode, repeats)
    out["raw: RocksDB dedupe"] = timed(raw_dedupe, repeats, fresh)
    out["raw: isal gzip of the input"] = timed(raw_gzip, repeats)

    # --- the worker's compute --------------------------------------------------------------------------------
    def ingest() -> list:
        res = []
        for p, recs in polls:
            r = ingest_records(recs, "events.ingest", p, projects=frozenset({424242}), default_project=424242,
                               rules=rules, partitions=wl.partitions, max_events=500, now_ms=0)
            res += r.batches
        return res

    batches = ingest()
    if figure_b:    # the events.valid batches bench_worker.py pre-loads for figure B, with their upload hours
        batches = [(t, EventBatch.decode(v)) for t, v, _ in valid_batches(wl, "events.ingest", 424242, wl.partitions)]
    out["ingest: validate, normalize, group"] = timed(ingest, repeats)
    encoded = [(t, b.encode()) for t, b in batches]
    out["ingest: EventBatch.encode"] = timed(_each(lambda tb: tb[1].encode(), batches), repeats)
    compressed = [(t, zstd_encode(v)) for t, v in encoded]
    out[f"ingest: {ZSTD_NAME} (producer)"] = timed(_each(lambda tv: zstd_encode(tv[1]), encoded), repeats)
    out["dedupe: zstd decompress"] = timed(_each(lambda tv: zstd_decode(tv[1]), compressed), repeats)
    out["dedupe: ReadBatch.read"] = timed(_each(lambda tv: ReadBatch.read(tv[1]), encoded), repeats)
    decoded: list[tuple[int, ReadBatch]] = []
    accepted: list[bytes] = []
    keeps: list[list[bool]] = []

    def fresh_read() -> None:   # a new RocksDB, and the batches read anew: none has its rows looked for yet
        fresh()
        decoded[:] = [(t, ReadBatch.read(v)) for t, v in encoded]

    def dedupe(collect: bool = KEEP["outputs"]) -> None:
        accepted.clear()
        keeps.clear()
        dbs = [_db(work / f"worker-{state['round']}-{p}") for p in range(wl.partitions)]
        for i, (t, b) in enumerate(decoded):
            db = dbs[t]
            d = decide(b.keys, b.times, b.uuids, db.get(b.keys), WINDOW_MS)
            if d.writes:
                wb = rocksdict.WriteBatch(raw_mode=True)
                for k, v in d.writes:
                    wb.put(k, v)
                db.write(wb)
                zstd_encode(encode_changelog(d.writes))
            # parts of at most kafka.max_request_bytes // 2 (the default's: 4 MiB), as the stage cuts them
            sent = b.select_encoded(d.keep, Origin("events.valid", t, i), 4 << 20)[0]
            if collect:
                accepted.extend(sent)
                keeps.append(d.keep)
        for db in dbs:
            db.close()

    out["dedupe: RocksDB, decide, changelog, select_encoded"] = timed(dedupe, repeats, fresh_read)
    if not accepted:   # the passes dropped what they sent: one more, untimed, for the next steps' input
        fresh_read()
        dedupe(collect=True)
    # the identity step's input, untimed: the kept rows as the stage hands them to the device side
    selected = [(t, PRELOADED_MS + i, b.batch().select(keep, Origin("events.valid", t, i)),
                 [j for j, k in enumerate(keep) if k]) for i, ((t, b), keep) in enumerate(zip(decoded, keeps))]
    acc_compressed = [zstd_encode(v) for v in accepted]
    out[f"dedupe: {ZSTD_NAME} (producer)"] = timed(_each(zstd_encode, accepted), repeats)
    out["export: zstd decompress"] = timed(_each(zstd_decode, acc_compressed), repeats)
    out["export: decode_rows"] = timed(_each(decode_rows, accepted), repeats)
    rows = [decode_rows(v) for v in accepted]

    def gzip_rows() -> None:
        spool = GzipLinesSpool(work / "spool.gz")
        for r in rows:
            spool.write_rows(r.blob, r.count)
        spool.close()

    out["export: isal gzip of the rows"] = timed(gzip_rows, repeats)

    per_event = {k: round(v / n * 1e6, 2) for k, v in out.items() if v == v}    # not the untimed (nan) steps
    compared = {}
    if identity:
        ident = measure_identity(selected, n, repeats, work, [v for _, v in encoded],
                                 tuple(IDENTITY_VARIANTS) if compare else ("by reference",))
        per_event.update(ident["us_per_event"])
        compared = ident["compare"] if compare else {}
    raw = sum(v for k, v in per_event.items() if k.startswith("raw:"))
    worker = sum(v for k, v in per_event.items() if not k.startswith("raw:"))
    return {"events": n, "exported": sum(r.count for r in rows), "repeats": repeats,
            "keep_outputs": KEEP["outputs"], "us_per_event": per_event,
            "raw_total": round(raw, 2), "worker_total": round(worker, 2), "identity_compared": compared}


def measure_api(repeats: int, work: Path) -> dict:
    from bench_api import API_KEY, bodies

    from stream.api import amplitude
    from stream.api.batching import group
    from stream.api.throttle import Throttle

    bodies(work / "bodies.ndjson")
    reqs = (work / "bodies.ndjson").read_bytes().splitlines()
    n = sum(len(amplitude.parse(b, 2000).events) for b in reqs)
    parsed = [amplitude.parse(b, 2000) for b in reqs]
    assert all(r.api_key == API_KEY for r in parsed)
    rules, now = Rules(), int(time.time() * 1000)
    out: dict[str, float] = {}
    out["ceiling: parse the envelope"] = _timed(lambda: [amplitude.parse(b, 2000) for b in reqs], repeats)
    out[f"ceiling: {ZSTD_NAME} of the body (producer)"] = _timed(lambda: [zstd_encode(b) for b in reqs], repeats)
    out["api: parse the envelope"] = out["ceiling: parse the envelope"]
    checked = [amplitude.validate(r.events, 424242, now, "n", rules).accepted for r in parsed]
    assert sum(map(len, checked)) == n
    out["api: validate, normalize"] = _timed(
        lambda: [amplitude.validate(r.events, 424242, now, "n", rules) for r in parsed], repeats)
    throttle = Throttle(1e9, 30)
    out["api: throttle"] = _timed(lambda: [throttle.admit([e.device_id for e in a], [e.user_id for e in a], now)
                                           for a in checked], repeats)
    grouped = [group(a, "events.valid", 4, 500, 1 << 20) for a in checked]
    out["api: group by partition"] = _timed(lambda: [group(a, "events.valid", 4, 500, 1 << 20) for a in checked],
                                            repeats)
    encoded = [[b.encode() for _, b in g] for g in grouped]
    out["api: EventBatch.encode"] = _timed(lambda: [[b.encode() for _, b in g] for g in grouped], repeats)
    out[f"api: {ZSTD_NAME} of the batches (producer)"] = _timed(
        lambda: [[zstd_encode(v) for v in e] for e in encoded], repeats)
    per_event = {k: round(v / n * 1e6, 2) for k, v in out.items()}
    return {"requests": len(reqs), "events": n, "us_per_event": per_event,
            "ceiling_total": round(sum(v for k, v in per_event.items() if k.startswith("ceiling:")), 2),
            "api_total": round(sum(v for k, v in per_event.items() if k.startswith("api:")), 2)}


def _print(r: dict, totals: list[tuple[str, str]]) -> None:
    width = max(map(len, r["us_per_event"]))
    for k, v in r["us_per_event"].items():
        print(f"{k:<{width}}  {v:6.2f} µs/event")
    for label, key in totals:
        print(f"{label:<{width}}  {r[key]:6.2f} µs/event")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--api", action="store_true", help="also time the pure steps of an API request")
    ap.add_argument("--identity", action="store_true", help="also time the identity stage's device side")
    ap.add_argument("--identity-compare", action="store_true",
                    help="with --identity: also time the identity step with held rows copied and with hold_s 0")
    ap.add_argument("--identity-only", action="store_true",
                    help="time the identity step alone (the other steps run once, untimed, to build its input)")
    ap.add_argument("--figure-b", action="store_true",
                    help="the identity step's input: figure B's events.valid batches as bench_worker.py pre-loads "
                         "them (their upload hours: holds let go by a batch of a later hour) instead of the ingest "
                         "step's (upload times clamped to its clock: one hour, every hold lasting until the answers)")
    ap.add_argument("--keep-outputs", action="store_true",
                    help="keep each step's outputs until its pass ends (as before): their page faults count too")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results-floor.json"))
    args = ap.parse_args()
    KEEP["outputs"] = args.keep_outputs
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
        print(f"figure A: generating {args.events:,} events, then {args.repeats} passes of each step ...",
              flush=True)
        r = results["figure_a"] = measure(args.events, args.repeats, Path(tmp), args.identity or args.identity_only,
                                          args.identity_compare, args.identity_only, args.figure_b)
        _print(r, [] if args.identity_only else [("raw loop, compute", "raw_total"),
                                                 ("worker (figure A), compute", "worker_total")])
        for k, v in r["identity_compared"].items():
            print(f"{k}  {v:6.2f} µs/event")
        print(f"({r['exported']:,} of {r['events']:,} events exported)")
        if args.api:
            print(f"stream api: {args.repeats} passes of each step over bench_api.py's request bodies ...", flush=True)
            r = results["api"] = measure_api(args.repeats, Path(tmp))
            _print(r, [("ceiling, compute", "ceiling_total"), ("stream api, compute", "api_total")])
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
