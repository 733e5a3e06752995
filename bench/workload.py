"""The benchmark's input: N sample events of ~1 KB with ~2% re-sent duplicates, and how they are pre-loaded.

Events come from ``stream.devstack.sample.SampleEvents.event`` with a few more
event/user properties so that one JSON event is about 1 KB, as in the reference
measurements. A duplicate re-sends the exact bytes (same key, same insert_id) of
one of the last 2,000 events, as a client retry does; it gets its own Kafka
timestamp. Kafka timestamps are spread evenly over the ``hours`` whole hours
before the current one, so every hour is over before the run starts.

Two shapes of the same events:

- per event (figure A): one JSON event per message on ``events.ingest``, keyed by
  device_id, in the partition Kafka's default partitioner gives that key;
- batched (figure B): ``EventBatch`` records for ``events.valid`` built with
  ``stream.events.ingest.ingest_records`` (what the ingest stage, or the HTTP
  API, writes), produced with an explicit partition.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaProducer

from stream.devstack.sample import SampleEvents
from stream.events.ingest import ingest_records
from stream.events.normalize import Rules
from stream.events.partitioning import partition_for
from stream.events.timefmt import HOUR_MS

TITLES = ["Home - Acme Store", "Pricing - Acme Store", "Product - Acme Store", "Cart - Acme Store",
          "Checkout - Acme Store", "Search results - Acme Store", "Account settings - Acme Store"]
SEARCH = ["", "shoes", "red dress", "usb c cable", "laptop stand", "gift card", "running socks"]
CAMPAIGNS = ["spring_sale", "retarget_q2", "brand", "newsletter_w14", "none"]
SOURCES = ["google", "facebook", "email", "direct", "twitter"]
COHORTS = ["power", "churn_risk", "new", "mobile_first", "b2b", "trial"]


@dataclass(frozen=True, slots=True)
class Record:
    """One message of events.ingest as a producer writes it (also the RecordLike ingest_records reads)."""

    partition: int
    offset: int           # its offset in ``partition`` once pre-loaded (topics are fresh)
    timestamp: int
    key: bytes
    value: bytes
    duplicate: bool
    headers: tuple = ()


@dataclass
class Workload:
    records: list[Record]
    partitions: int
    hours: list[int]

    @property
    def n(self) -> int:
        return len(self.records)

    @property
    def originals(self) -> int:
        """Events that survive dedupe: what the export must write."""
        return sum(not r.duplicate for r in self.records)

    @property
    def mean_bytes(self) -> float:
        return sum(len(r.value) for r in self.records) / max(len(self.records), 1)


def _pad(ev: dict, r: random.Random) -> None:
    """Properties a real web/app event carries, to bring an event to about 1 KB."""
    ev["event_properties"].update({
        "page_title": r.choice(TITLES), "product_id": f"sku-{r.randint(1, 99999):05d}",
        "search_term": r.choice(SEARCH), "position": r.randint(0, 50), "duration_ms": r.randint(0, 120_000),
        "experiment_variant": r.choice(["control", "treatment_a", "treatment_b"]),
        "viewport": r.choice(["1920x1080", "1440x900", "390x844", "412x915"])})
    ev["user_properties"].update({
        "signup_date": f"20{r.randint(18, 24)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}",
        "utm_campaign": r.choice(CAMPAIGNS), "utm_source": r.choice(SOURCES),
        "lifetime_value": round(r.uniform(0, 5000), 2), "org_id": f"org_{r.randint(1, 3000)}",
        "cohorts": r.sample(COHORTS, k=r.randint(0, 3))})


def generate(n: int, partitions: int, seed: int = 7, dup_rate: float = 0.02, hours: int = 3,
             now_ms: int | None = None) -> Workload:
    samples = SampleEvents(seed=seed, duplicate_rate=0.0, invalid_rate=0.0)
    r = random.Random(seed + 1)
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    end = now_ms - now_ms % HOUR_MS          # the start of the current hour
    start = end - hours * HOUR_MS
    step = (end - 1 - start) / max(n, 1)
    recent: list[tuple[bytes, bytes, int]] = []
    next_offset = [0] * partitions
    out: list[Record] = []
    for i in range(n):
        t = int(start + i * step)
        if recent and r.random() < dup_rate:
            key, value, p = recent[r.randrange(len(recent))]
            dup = True
        else:
            ev = samples.event(t)
            _pad(ev, r)
            key, value = ev["device_id"].encode(), orjson.dumps(ev)
            p = partition_for(ev["device_id"], partitions)
            dup = False
            if len(recent) < 2000:
                recent.append((key, value, p))
            else:
                recent[i % 2000] = (key, value, p)
        out.append(Record(p, next_offset[p], t, key, value, dup))
        next_offset[p] += 1
    return Workload(out, partitions, [start + h * HOUR_MS for h in range(hours)])


def batches(w: Workload, topic: str, project: int, partitions: int, max_events: int = 500,
            chunk: int = 2000) -> list[tuple[int, bytes, int]]:
    """(partition, EventBatch bytes, events) for events.valid, from the records of each source partition
    in chunks of ``chunk`` records (one call of ingest_records per chunk, as one poll or request)."""
    rules = Rules()
    by_part: list[list[Record]] = [[] for _ in range(w.partitions)]
    for rec in w.records:
        by_part[rec.partition].append(rec)
    out = []
    now = int(time.time() * 1000)
    for sp, recs in enumerate(by_part):
        for i in range(0, len(recs), chunk):
            res = ingest_records(recs[i:i + chunk], topic, sp, projects=frozenset({project}),
                                 default_project=project, rules=rules, partitions=partitions,
                                 max_events=max_events, now_ms=now)
            if res.dead:
                raise RuntimeError(f"sample events were rejected: {dict(res.reasons)}")
            out += [(target, b.encode(), len(b)) for target, b in res.batches]
    return out


def _producer(bootstrap: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20,
                            max_request_size=8 << 20, acks=1)


async def preload_events(bootstrap: str, topic: str, w: Workload) -> None:
    """Per-event messages, keyed by device_id, with their timestamps; explicit partition = default partitioner."""
    p = _producer(bootstrap)
    await p.start()
    try:
        futs = []
        open_ = [p.create_batch() for _ in range(w.partitions)]
        for rec in w.records:
            b = open_[rec.partition]
            if b.append(key=rec.key, value=rec.value, timestamp=rec.timestamp) is None:
                b.close()
                futs.append(await p.send_batch(b, topic, partition=rec.partition))
                b = open_[rec.partition] = p.create_batch()
                b.append(key=rec.key, value=rec.value, timestamp=rec.timestamp)
        for part, b in enumerate(open_):
            b.close()
            futs.append(await p.send_batch(b, topic, partition=part))
        await asyncio.gather(*futs)
    finally:
        await p.stop()


async def preload_batches(bootstrap: str, topic: str, items: list[tuple[int, bytes, int]]) -> None:
    p = _producer(bootstrap)
    await p.start()
    try:
        futs = [await p.send(topic, value, partition=part) for part, value, _ in items]
        await asyncio.gather(*futs)
    finally:
        await p.stop()
