"""CPU of the mirror rewrite's search for the rows a batch's mutations name (``named_rows``), against the version
before it (each field's closing quote searched for: ``reference_named_rows_by_dollar`` of the unit tests).

    python bench/bench_named_rows.py [--rows N] [--share S] [--repeats R] [--seed S] [--results FILE]
                                     [--alternatives]

The batches are those a rebuild of the mirror benchmark's hours rewrites: the rows of the EventBatch records its
workload loads (at most 500 events a record, as dedupe writes them; the normalized rows, about 1 KB and 2.4 ``$``
each: ``"$insert_id"`` and ``"$schema"``); the ids are the insert_ids of ``--share`` of the rows, drawn at random. Per repeat, in turns (the order alternates), each version
over every batch: CPU µs per row (``time.process_time``), the outputs checked equal; the best of the repeats is
reported, with each repeat's and the 1-minute load average before and after. ``escaped``: the same batches with
one row of each holding an escaped quote, which both versions search for each field's closing quote.

``--alternatives`` also times, best of the repeats, parts of other ways to find the rows, each over the same batches
alone: a compiled regular expression's ``findall`` of the compact fields' values (one call a batch; what a search
by it would cost before any check), ``bytes.count`` of ``"$insert_id"`` (the check of the fields' count it would
need), and a loop of ``bytes.find`` of ``$`` doing nothing else (the floor of a loop over the fields in Python).

Results go to stdout and ``--results`` (bench/results-named-rows.json).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from pathlib import Path

import orjson

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

import workload  # noqa: E402
from bench_worker import PARTITIONS, PROJECT  # noqa: E402

from stream.events.batch import decode_rows  # noqa: E402
from stream.events.timefmt import HOUR_MS  # noqa: E402
from stream.export.mirror import named_rows  # noqa: E402
from tests.unit.export.test_mirror import reference_named_rows_by_dollar  # noqa: E402


def export_batches(rows: int, seed: int) -> list[bytes]:
    """The rows of the EventBatch records the bench's workload loads (``workload.batches``: at most 500 events a
    batch, as dedupe writes them) as a rebuild rewrites them: each record's rows joined by newlines."""
    now = int(time.time() * 1000)
    w = workload.generate(rows, PARTITIONS, seed=seed, dup_rate=0.0, hours=1, now_ms=now - now % HOUR_MS)
    return [decode_rows(v).blob for _, v, _ in workload.batches(w, "events.ingest", PROJECT, PARTITIONS)]


def cpu_us_per_row(find, batches: list[bytes], ids: frozenset[bytes], rows: int) -> tuple[float, list]:
    t = time.process_time()
    out = [find(b, ids) for b in batches]
    return (time.process_time() - t) / rows * 1e6, out


def compare(batches: list[bytes], ids: frozenset[bytes], rows: int, repeats: int) -> dict:
    before, after = [], []
    for rep in range(repeats):
        order = [(reference_named_rows_by_dollar, before), (named_rows, after)]
        results = []
        for find, into in order if rep % 2 == 0 else order[::-1]:
            us, out = cpu_us_per_row(find, batches, ids, rows)
            into.append(us)
            results.append(out)
        assert results[0] == results[1], "named_rows must find the rows the version before finds"
    return {"before_us_per_row": before, "after_us_per_row": after,
            "best_before": min(before), "best_after": min(after), "ratio_best": min(after) / min(before)}


def alternatives(batches: list[bytes], rows: int, repeats: int) -> dict:
    field = re.compile(rb'"\$insert_id":"([^"\\]*)(?=")')

    def dollars(blob: bytes, _ids) -> None:
        find = blob.find
        dollar = find(b"$", 1)
        while dollar >= 0:
            dollar = find(b"$", dollar + 1)
    ways = {"regex_findall_values": lambda b, _ids: field.findall(b),
            "count_insert_id_key": lambda b, _ids: b.count(b'"$insert_id"'),
            "find_dollar_loop_only": dollars}
    return {name: min(cpu_us_per_row(f, batches, frozenset(), rows)[0] for _ in range(repeats))
            for name, f in ways.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--share", type=float, default=0.01)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--results", type=Path, default=BENCH / "results-named-rows.json")
    ap.add_argument("--alternatives", action="store_true", help="also time parts of other ways (see above)")
    a = ap.parse_args()
    batches = export_batches(a.rows, a.seed)
    lines = [ln for b in batches for ln in b.split(b"\n")]
    assert len(lines) == a.rows, (len(lines), a.rows)
    r = random.Random(a.seed)
    chosen = r.sample(range(a.rows), max(1, round(a.share * a.rows)))
    ids = frozenset(orjson.loads(lines[i])["$insert_id"].encode() for i in chosen)
    escaped = [b.replace(b'"event_properties":{', b'"event_properties":{"q":"a\\"b",', 1) for b in batches]
    assert all(b"\\" in b for b in escaped)
    named = sum(len(named_rows(b, ids)) for b in batches)
    load_before = os.getloadavg()[0]
    plain = compare(batches, ids, a.rows, a.repeats)
    with_escape = compare(escaped, ids, a.rows, a.repeats)
    out = {"command": " ".join(["bench/bench_named_rows.py", *sys.argv[1:]]), "rows": a.rows, "batches": len(batches),
           "row_bytes": sum(map(len, lines)) / a.rows, "dollars_per_row": sum(b.count(b"$") for b in batches) / a.rows, "ids": len(ids), "rows_named": named,
           "python": sys.version.split()[0], "loadavg_1m": [load_before, os.getloadavg()[0]],
           "plain": plain, "escaped": with_escape}
    if a.alternatives:
        out["alternatives_best_us_per_row"] = alternatives(batches, a.rows, a.repeats)
        out["loadavg_1m"].append(os.getloadavg()[0])
    text = json.dumps(out, indent=2)
    print(text)
    a.results.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
