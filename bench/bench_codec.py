"""The internal hops' codec: zstd (the default) against lz4 and none, in CPU per event and bytes per event.

    python bench/bench_codec.py [--events N] [--repeats R] [--levels L,L,...]

The batches are those of bench_floor's workload (``workload.generate``): the sample events of the benchmarks
validated, normalized and grouped by ``ingest_records`` as the ingest stage writes them to events.valid
(EventBatch records, 500 events at most). Each codec compresses and decompresses every batch, as the producer
and the consumer of one hop do (aiokafka's codec functions; zstd at kafka.compression_level's default, as the
producers compress, lz4 at aiokafka's level); process CPU time, best of ``--repeats`` rounds, the codecs in turn
in each. ``--levels`` also measures zstd at each of those levels. Figure A has two such hops (events.valid,
events.accepted), figure B one plus the accepted hop. Results go to stdout and bench/results-codec.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from aiokafka.codec import has_lz4, lz4_decode, zstd_decode

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))
from workload import generate  # noqa: E402

from stream.events.ingest import ingest_records  # noqa: E402
from stream.events.normalize import Rules  # noqa: E402
from stream.kafka import AIOKAFKA_LEVELS, level_encoder  # noqa: E402
from stream.settings import KafkaSettings  # noqa: E402

POLL = 500


def best(step, repeats: int) -> float:
    out = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        step()
        out = min(out, time.process_time() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--levels", default="", help="zstd levels to measure too, comma separated (e.g. -1,1,2,3)")
    ap.add_argument("--results", default=str(BENCH / "results-codec.json"))
    args = ap.parse_args()
    level = KafkaSettings().compression_level
    wl = generate(args.events, 4)
    batches = []
    for p in range(wl.partitions):
        recs = [r for r in wl.records if r.partition == p]
        for i in range(0, len(recs), POLL):
            res = ingest_records(recs[i:i + POLL], "events.ingest", p, projects=frozenset({424242}),
                                 default_project=424242, rules=Rules(), partitions=wl.partitions, max_events=500,
                                 now_ms=0)
            batches += [b.encode() for _, b in res.batches]
    events = sum(1 for r in wl.records)
    raw = sum(len(b) for b in batches)
    codecs = {f"zstd-{level}": (level_encoder("zstd", level), zstd_decode)}
    if has_lz4():
        codecs[f"lz4-{AIOKAFKA_LEVELS['lz4']}"] = (level_encoder("lz4", None), lz4_decode)
    for lv in [int(x) for x in args.levels.split(",") if x.strip()]:
        codecs.setdefault(f"zstd-{lv}", (level_encoder("zstd", lv), zstd_decode))
    results = {"events": events, "batches": len(batches), "bytes_per_event_uncompressed": raw / events,
               "repeats": args.repeats, "zstd_level_default": level, "codecs": {}}
    print(f"{events:,} events in {len(batches):,} batches, {raw / events:.0f} bytes an event uncompressed")
    packed = {name: [enc(b) for b in batches] for name, (enc, _) in codecs.items()}
    t_enc = dict.fromkeys(codecs, float("inf"))
    t_dec = dict.fromkeys(codecs, float("inf"))
    for _ in range(args.repeats):     # the codecs in turn, each round: a drift of the machine reaches them all
        for name, (enc, dec) in codecs.items():
            t_enc[name] = min(t_enc[name], best(lambda: [enc(b) for b in batches], 1))
            t_dec[name] = min(t_dec[name], best(lambda: [dec(b) for b in packed[name]], 1))
    for name in codecs:
        size = sum(len(b) for b in packed[name])
        r = {"compress_us_per_event": t_enc[name] / events * 1e6,
             "decompress_us_per_event": t_dec[name] / events * 1e6, "bytes_per_event": size / events,
             "ratio": raw / size}
        results["codecs"][name] = r
        print(f"{name:8s} compress {r['compress_us_per_event']:.2f} µs/event, decompress "
              f"{r['decompress_us_per_event']:.2f} µs/event, {r['bytes_per_event']:.0f} bytes/event "
              f"({r['ratio']:.1f}x)")
    Path(args.results).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
