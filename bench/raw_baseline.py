"""The raw baseline: one plain aiokafka ``getmany`` loop, no faust, one process.

Per poll: decode the fields dedupe needs (msgspec), one RocksDB multi-get and
one WriteBatch for the whole poll (rocksdict, bloom filter 10 bits, no WAL),
isal gzip (level 1, gzip wrapper) of the surviving events into one part per
(partition, hour), kept in memory. After the last event: close every part, put
them on S3 (concurrently, SSE-S3 like the worker's destination), commit the
offsets.

``--shape events``: one JSON event per message (events.ingest). The dedupe key
is (device_id, insert_id); device_id, insert_id and time are decoded; the hour
is that of the record timestamp (the worker's server_upload_time); the message
bytes are written as they are.

``--shape batches``: EventBatch records (events.valid). The batch is decoded
(fastavro), its ``events`` split into lines, and device_id and $insert_id
decoded from each line; the hour is the batch's hour; the lines are written.

Timing: from the first poll that returns records to the commit after the last
upload (start-up and the group-less partition assignment are excluded). Prints
one JSON line with the result. Started by bench_worker.py; usable alone:

    python bench/raw_baseline.py --bootstrap 127.0.0.1:PORT --s3 http://127.0.0.1:PORT \
        --topic events.ingest --shape events --events 200000 [--partitions 4] [--broker-pid PID]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import sys
import tempfile
import time
import uuid

import aioboto3
import fastavro
import msgspec
import rocksdict
from aiokafka import AIOKafkaConsumer, TopicPartition
from isal import isal_zlib

HOUR_MS = 3_600_000
SCHEMA = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "schemas", "event_batch.avsc")


class EventKey(msgspec.Struct):
    device_id: str
    insert_id: str
    time: int


class RowKey(msgspec.Struct):
    device_id: str
    insert_id: str = msgspec.field(name="$insert_id")


def cpu_seconds(pid: int | str) -> float:
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


class RocksDedupe:
    """First occurrence wins; one multi-get and one WriteBatch per call."""

    def __init__(self, path: str):
        self.path = path
        o = rocksdict.Options(raw_mode=True)
        o.create_if_missing(True)
        o.set_write_buffer_size(64 << 20)
        o.set_max_write_buffer_number(3)
        o.set_target_file_size_base(64 << 20)
        t = rocksdict.BlockBasedOptions()
        t.set_bloom_filter(10, True)
        t.set_block_cache(rocksdict.Cache(256 << 20))
        o.set_block_based_table_factory(t)
        self.db = rocksdict.Rdict(path, options=o)
        wo = rocksdict.WriteOptions()
        wo.disable_wal = True
        self.db.set_write_options(wo)

    def keep(self, keys: list[bytes]) -> list[bool]:
        found = self.db.get(keys)
        wb = rocksdict.WriteBatch(raw_mode=True)
        out, seen = [], set()
        for k, v in zip(keys, found):
            new = v is None and k not in seen
            if new:
                seen.add(k)
                wb.put(k, b"1")
            out.append(new)
        self.db.write(wb)
        return out

    def close(self) -> None:
        self.db.close()
        shutil.rmtree(self.path, ignore_errors=True)


class Parts:
    """One gzip stream per (partition, hour), compressed as lines arrive, kept in memory."""

    def __init__(self) -> None:
        self.open: dict[tuple[int, int], list] = {}

    def add(self, part: int, hour: int, lines: list[bytes]) -> None:
        st = self.open.get((part, hour))
        if st is None:
            st = self.open[(part, hour)] = [isal_zlib.compressobj(1, isal_zlib.DEFLATED, 31), [], 0]
        out = st[0].compress(b"\n".join(lines) + b"\n")
        st[2] += len(lines)
        if out:
            st[1].append(out)

    def close_all(self) -> list[tuple[int, int, int, bytes]]:
        out = []
        for (part, hour), (z, chunks, n) in self.open.items():
            chunks.append(z.flush())
            out.append((part, hour, n, b"".join(chunks)))
        self.open.clear()
        return out


def extract_events(recs, dec=msgspec.json.Decoder(EventKey).decode):
    """Per-event messages -> (dedupe keys, hours, lines)."""
    keys, hours, lines = [], [], []
    for r in recs:
        e = dec(r.value)
        keys.append(b"%s\x00%s" % (e.device_id.encode(), e.insert_id.encode()))
        hours.append(r.timestamp - r.timestamp % HOUR_MS)
        lines.append(r.value)
    return keys, hours, lines


REMAP_MAGIC = b"\x00stream-remap\x00"
"""How a remap message of the identity stage starts (``stream.identity.records``): not a batch."""


def make_extract_batches():
    with open(SCHEMA) as f:
        schema = fastavro.parse_schema(json.load(f))
    read = fastavro.schemaless_reader
    dec = msgspec.json.Decoder(RowKey).decode

    def extract_batches(recs):
        keys, hours, lines = [], [], []
        for r in recs:
            if r.value.startswith(REMAP_MAGIC):    # the identity stage's remaps, when a worker ran on the topic first
                continue
            b = read(io.BytesIO(r.value), schema, None)
            rows = b["events"].split(b"\n")
            h = b["hour"]
            for row in rows:
                e = dec(row)
                keys.append(b"%s\x00%s" % (e.device_id.encode(), e.insert_id.encode()))
            hours += [h] * len(rows)
            lines += rows
        return keys, hours, lines

    return extract_batches


async def run(a: argparse.Namespace) -> dict:
    extract = extract_events if a.shape == "events" else make_extract_batches()
    store = RocksDedupe(os.path.join(a.data_dir or tempfile.gettempdir(), f"raw-dedupe-{uuid.uuid4().hex[:8]}"))
    parts = Parts()
    c = AIOKafkaConsumer(bootstrap_servers=a.bootstrap, group_id=f"raw-{uuid.uuid4().hex[:8]}",
                         enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_bytes=50 << 20,
                         max_partition_fetch_bytes=8 << 20)
    await c.start()
    tps = [TopicPartition(a.topic, p) for p in range(a.partitions)]
    c.assign(tps)
    await c.seek_to_beginning(*tps)
    st = dict.fromkeys(["poll", "decode", "dedupe", "compress", "upload_commit"], 0.0)
    seen = kept = objects = 0
    pc = time.perf_counter
    session = aioboto3.Session()
    async with session.client("s3", endpoint_url=a.s3) as s3:
        t_first = None
        t0 = pc()
        while seen < a.events:
            polled = await c.getmany(timeout_ms=1000, max_records=a.max_records)
            if not polled:
                t0 = pc()
                continue
            t1 = pc()
            if t_first is None:
                t_first, wall_first = t1, time.time()
                cpu0 = cpu_seconds("self"), cpu_seconds(a.broker_pid) if a.broker_pid else 0.0
            else:
                st["poll"] += t1 - t0
            # one poll: decode all, one multi-get + one write batch, then compress per (partition, hour)
            all_keys, meta = [], []
            for tp, recs in polled.items():
                keys, hours, lines = extract(recs)
                all_keys += keys
                meta.append((tp.partition, hours, lines))
            t2 = pc()
            st["decode"] += t2 - t1
            mask = store.keep(all_keys)
            t3 = pc()
            st["dedupe"] += t3 - t2
            i = 0
            for part, hours, lines in meta:
                groups: dict[int, list[bytes]] = {}
                for h, line, keep in zip(hours, lines, mask[i:i + len(lines)]):
                    if keep:
                        groups.setdefault(h, []).append(line)
                i += len(lines)
                for h, g in groups.items():
                    parts.add(part, h, g)
                    kept += len(g)
                seen += len(lines)
            t0 = pc()
            st["compress"] += t0 - t3
        finals = parts.close_all()
        t4 = pc()
        st["compress"] += t4 - t0

        async def put(part: int, hour: int, n: int, blob: bytes) -> None:
            await s3.put_object(Bucket=a.bucket, Key=f"{a.key_prefix}p{part}-h{hour}.json.gz", Body=blob,
                                ContentType="application/gzip", ServerSideEncryption="AES256",
                                Metadata={"events": str(n)})

        await asyncio.gather(*(put(*f) for f in finals))
        objects = len(finals)
        await c.commit()
        t_end = pc()
        st["upload_commit"] += t_end - t4
    cpu1 = cpu_seconds("self"), cpu_seconds(a.broker_pid) if a.broker_pid else 0.0
    await c.stop()
    store.close()
    wall = t_end - t_first
    return {"events": seen, "kept": kept, "objects": objects, "wall_s": wall, "events_per_s": seen / wall,
            "t_first": wall_first, "cpu_s": cpu1[0] - cpu0[0], "broker_cpu_s": cpu1[1] - cpu0[1],
            "peak_rss_mb": peak_rss_mb(), "stages_s": st}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--s3", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--shape", choices=["events", "batches"], required=True)
    ap.add_argument("--events", type=int, required=True, help="events to read (batches hold many)")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--bucket", default="raw-baseline")
    ap.add_argument("--key-prefix", default="raw/")
    ap.add_argument("--broker-pid", default="")
    ap.add_argument("--data-dir", default="")
    ap.add_argument("--max-records", type=int, default=0, help="records per poll (default: ~10k events)")
    a = ap.parse_args()
    if not a.max_records:
        a.max_records = 10_000 if a.shape == "events" else 20
    print(json.dumps(asyncio.run(run(a))), flush=True)


if __name__ == "__main__":
    sys.exit(main())
