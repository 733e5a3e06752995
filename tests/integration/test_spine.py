"""events.ingest -> dedupe -> hourly objects on S3, against the real broker and S3 endpoint."""

import asyncio
import gzip
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter

import boto3
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from stream.devstack.services import free_port
from stream.events import deadletter
from stream.events.batch import EventBatch
from stream.events.partitioning import partition_for
from stream.events.timefmt import parse_ms
from stream.export.layout import amplitude_key
from stream.export.ledger import LedgerRecord
from stream.kafka import ensure_topics, read_all
from tests.integration.conftest import admin_get, wait_until

pytestmark = pytest.mark.integration

H7 = 1709967600000   # 2024-03-09 07:00 UTC
HOUR = 3_600_000
DAY = 24 * HOUR


def ev(n, device="device-0001", **kw):
    return {"event_type": "Page Viewed", "device_id": device, "user_id": f"user-{n:04d}", "insert_id": f"ins-{n}",
            "event_properties": {"n": n}, **kw}


# (value, timestamp, expected outcome)
INPUTS = [
    (ev(1), H7 + 1_000, "exported"),
    (ev(2, device="device-0002"), H7 + 2_000, "exported"),
    (ev(1), H7 + 3_000, "duplicate"),                                   # same device + insert_id
    (ev(3, insert_id=None), H7 + 4_000, "exported"),
    (ev(3, insert_id=None), H7 + 5_000, "exported"),                    # no insert_id: never deduplicated
    (ev(4, device="device-0003"), H7 + HOUR + 1_000, "exported"),
    (ev(2, device="device-0002"), H7 + HOUR + 2_000, "duplicate"),      # duplicate in the next hour
    (ev(5), H7 + 2 * HOUR + 1, "exported"),
    (ev(1), H7 + 1_000 + 7 * DAY, "exported"),                          # 7 days later: accepted again
    (b"", H7 + 6_000, "empty_message"),
    (b'{"event_type": "x", "user_id"', H7 + 6_000, "malformed_json"),
    (b'["not", "an", "object"]', H7 + 6_000, "not_an_object"),
    ({"user_id": "user-0009"}, H7 + 6_000, "missing_event_type"),
    ({"event_type": "", "user_id": "user-0009"}, H7 + 6_000, "missing_event_type"),
    ({"event_type": "x"}, H7 + 6_000, "missing_id"),
    ({"event_type": "x", "user_id": "user-0009", "time": "yesterday"}, H7 + 6_000, "invalid_type"),
    ({"event_type": "x", "user_id": "user-0009", "event_properties": [1]}, H7 + 6_000, "invalid_type"),
    ({"event_type": "x", "user_id": "user-0009", "colour": "red"}, H7 + 6_000, "unknown_field"),
    ({"event_type": "x", "user_id": "user-0009", "p": "a" * 2_000_000}, H7 + 6_000, "too_large"),
    (b'{"event_type": "caf\xe9", "user_id": "user-0009"}', H7 + 6_000, "invalid_utf8"),
]


def encode(v):
    return v if isinstance(v, bytes) else orjson.dumps({k: x for k, x in v.items() if x is not None})


async def produce(settings):
    p = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, max_request_size=4 << 20)
    await p.start()
    try:
        topic = settings.topics.name("ingest")
        for value, ts, _ in INPUTS:
            await (await p.send(topic, encode(value), key=b"k", timestamp_ms=ts))
        await (await p.send(topic, b'{"event_type":"x","user_id":"user-0009"}', key=b"\xff\xfe",
                            timestamp_ms=H7 + 6_000))
        # not a batch, on an internal topic: dead-lettered by the dedupe stage, which carries on
        await (await p.send(settings.topics.name("valid"), b"not a batch", partition=1, timestamp_ms=H7))
    finally:
        await p.stop()


@pytest.mark.parametrize("stages", [None, ("ingest", "dedupe,export")], ids=["one-worker", "split-stages"])
def test_events_flow_from_ingest_to_hourly_objects_exactly(deployment, worker, stages):
    settings, _ = deployment
    dest = settings.destinations[0]
    asyncio.run(ensure_topics(settings))  # before producing: the producer would auto-create events.ingest
    if stages is None:
        ports = [settings.worker.http_port]
        procs = [worker()]
    else:
        ports = [free_port() for _ in stages]
        procs = [worker("--stages", s, http_port=port) for s, port in zip(stages, ports)]
    asyncio.run(produce(settings))
    expected = Counter(o for _, _, o in INPUTS)
    expected["invalid_key"] += 1
    expected["invalid_batch"] += 1
    exported = expected["exported"]

    data_hours = ["amp/424242/424242_2024-03-09_7", "amp/424242/424242_2024-03-09_8",
                  "amp/424242/424242_2024-03-09_9", "amp/424242/424242_2024-03-16_7"]

    def ledger():
        recs = [LedgerRecord.decode(m.value) for m in asyncio.run(read_all(settings, settings.topics.name(
            "export_ledger")))]
        marked = {r.key for r in recs if r.kind == "marker"}
        # the empty hours of the last two days are marked as the clock seals them, after or before the data hours
        done = sum(r.events for r in recs) >= exported and {h + "_complete" for h in data_hours} <= marked and \
            len(marked) >= len(data_hours) + 46
        return recs if done else None

    assert [p.poll() for p in procs] == [None] * len(procs)
    everything = wait_until(ledger, 120, f"{exported} exported events and the markers of their hours in the ledger")
    records = [r for r in everything if r.kind == "object"]
    markers = sorted(r.key for r in everything if r.kind == "marker")
    # the hours with events are marked complete, and so are the empty hours of the last two days (the clock
    # seals them: the partitions are idle), but not the empty week between the two dates of the data
    assert markers[:4] == [h + "_complete" for h in data_hours]
    now = time.time()
    recent = [time.mktime(time.strptime(k.split("_", 1)[1], "%Y-%m-%d_%H_complete")) - time.timezone
              for k in markers[4:]]
    assert all(now - 49 * 3600 < t < now for t in recent) and len(recent) >= 46
    assert {r.partition for r in everything if r.kind == "seal"} == {0, 1}
    exporting = ports[-1]

    def status_with_the_marker():
        # the worker's status follows the ledger as its exporter reads it back, a moment after the ledger has it
        doc = orjson.loads(admin_get(f"http://127.0.0.1:{exporting}/exports/status?hours=100"))
        hours = {h["hour"]: h for d in doc["destinations"] for h in d.get("hours", ())}
        return doc if hours.get("2024-03-09T07:00:00Z", {}).get("complete_marker") else None

    status = wait_until(status_with_the_marker, 30, "the worker's status to show the marker of 07:00")
    # the status names buckets, roles and errors: without the admin token it is refused; the probes stay open
    for token in (None, "not-the-token"):
        req = urllib.request.Request(f"http://127.0.0.1:{exporting}/exports/status",
                                     headers={"Authorization": f"Bearer {token}"} if token else {})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req)
        assert (refused.value.code, refused.value.headers["WWW-Authenticate"]) == (401, 'Bearer realm="stream"')
        assert orjson.loads(refused.value.read())["detail"] == (
            "the bearer token is not the admin token" if token else
            "send the admin token as Authorization: Bearer <token>")
    (main,) = status["destinations"]
    hour7 = next(h for h in main["hours"] if h["hour"] == "2024-03-09T07:00:00Z")
    assert (main["destination"], main["state"], hour7["state"], hour7["complete_marker"], hour7["events"]) == (
        "main", "ok", "sealed", "amp/424242/424242_2024-03-09_7_complete", 4)
    # the same view from the ledger topic, for the operator's shell
    table = subprocess.run([sys.executable, "-m", "stream", "exports", "status", "-c", str(deployment[1]),
                            "--hours", "100"], capture_output=True, text=True, timeout=60, check=True).stdout
    line7 = next(x for x in table.splitlines() if "2024-03-09T07:00:00Z" in x).split()
    assert line7[:5] == ["2024-03-09T07:00:00Z", "sealed", "yes", str(hour7["objects"]), "4"]
    assert table.splitlines()[0] == f"main: project 424242, amplitude layout, s3://{dest.bucket}/amp/  [ok]"
    ready = [orjson.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz").read()) for port in ports]
    assert [r["ready"] for r in ready] == ([["dedupe", "export", "ingest"]] if stages is None
                                           else [["ingest"], ["dedupe", "export"]])
    assert [orjson.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz").read()) for port in ports] == \
        [{"status": "ok", "failed": {}}] * len(ports)
    assert sum(r.events for r in records) == exported

    # every object's key comes from its partition, hour and the first accepted offset it holds
    accepted = asyncio.run(read_all(settings, settings.topics.name("accepted")))
    first = {}
    for m in accepted:
        b = EventBatch.decode(m.value)
        first.setdefault((m.partition, b.hour), m.offset)
    assert sorted(r.key for r in records) == sorted(
        amplitude_key("amp/", 424242, hour, p, off) for (p, hour), off in first.items())
    assert {r.key.split("#")[0] for r in records} == {
        "amp/424242/424242_2024-03-09_7", "amp/424242/424242_2024-03-09_8", "amp/424242/424242_2024-03-09_9",
        "amp/424242/424242_2024-03-16_7"}

    # the bucket holds exactly those objects, and their rows are the exported events
    s3 = boto3.client("s3", endpoint_url=settings.s3.endpoint_url)
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=dest.bucket)["Contents"]
                  if not o["Key"].endswith("_complete"))
    assert keys == sorted(r.key for r in records)
    rows = []
    for k in keys:
        obj = s3.get_object(Bucket=dest.bucket, Key=k)
        assert obj["ServerSideEncryption"] == "AES256"
        rows += [orjson.loads(line) for line in gzip.decompress(obj["Body"].read()).splitlines()]
    got = sorted((r["event_properties"]["n"], r["server_upload_time"], r["$insert_id"]) for r in rows)
    assert got == [(1, "2024-03-09 07:00:01.000000", "ins-1"), (1, "2024-03-16 07:00:01.000000", "ins-1"),
                   (2, "2024-03-09 07:00:02.000000", "ins-2"), (3, "2024-03-09 07:00:04.000000", None),
                   (3, "2024-03-09 07:00:05.000000", None), (4, "2024-03-09 08:00:01.000000", "ins-4"),
                   (5, "2024-03-09 09:00:00.001000", "ins-5")]
    assert len({r["uuid"] for r in rows}) == len(rows)
    one = next(r for r in rows if r["event_properties"]["n"] == 4)
    assert (one["app"], one["device_id"], one["user_id"], one["event_type"], one["client_event_time"],
            one["session_id"], one["amplitude_id"]) == (424242, "device-0003", "user-0004", "Page Viewed",
                                                        "2024-03-09 08:00:01.000000", -1, 4097)
    # the fourth id of partition 1 (ids are counter * 1024 + partition; stream.identity.ids)
    assert partition_for("device-0003", 2) == 1

    # every rejected input is in the dead-letter topic with its reason and source coordinates
    dead = [deadletter.decode(m.value) for m in asyncio.run(read_all(settings, settings.topics.name("dead_letter")))]
    assert Counter(d["reason"] for d in dead) == Counter(
        {k: v for k, v in expected.items() if k not in ("exported", "duplicate")})
    by_reason = {d["reason"]: d for d in dead}
    assert (by_reason["invalid_batch"]["topic"], by_reason["invalid_batch"]["partition"],
            by_reason["invalid_batch"]["value"]) == (settings.topics.name("valid"), 1, b"not a batch")
    assert all(d["topic"] == settings.topics.name("ingest") and d["partition"] == 0
               for d in dead if d["reason"] != "invalid_batch")
    assert by_reason["unknown_field"]["field"] == "colour"
    assert by_reason["malformed_json"]["value"] == b'{"event_type": "x", "user_id"'
    assert by_reason["malformed_json"]["offset"] == 10

    if stages is None:   # the operator's view of the same dead letters, from the command line
        cli = [sys.executable, "-m", "stream", "deadletters"]
        summary = orjson.loads(subprocess.run([*cli, "summary", "-c", str(deployment[1]), "--json"], check=True,
                                              capture_output=True, text=True, timeout=60).stdout)
        assert {r["reason"]: r["count"] for r in summary} == Counter(d["reason"] for d in dead)
        unknown = by_reason["unknown_field"]
        assert next(r for r in summary if r["reason"] == "unknown_field")["latest"] == {
            "source": f"{settings.topics.name('ingest')}[0]@{unknown['offset']}", "field": "colour",
            "detail": unknown["detail"]}
        tail = subprocess.run([*cli, "tail", "-c", str(deployment[1]), "-n", "2"], check=True, capture_output=True,
                              text=True, timeout=60).stdout.splitlines()
        assert tail == [deadletter.describe(d) for d in dead[-2:]]

    # nothing lost: exported + duplicates + dead-lettered = produced
    assert len(rows) + expected["duplicate"] + len(dead) == len(INPUTS) + 2

    # and the worker counted each
    samples = Counter()
    for port in ports:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                samples[name] += float(value)
    assert float(samples["stream_ingest_events_total"]) == len(INPUTS) + 1
    assert float(samples["stream_dedupe_duplicates_total"]) == expected["duplicate"]
    assert float(samples['stream_export_events_total{destination="main"}']) == len(rows)
    assert float(samples["stream_dedupe_accepted_events_total"]) == len(rows)
    assert float(samples['stream_dead_letter_events_total{reason="missing_event_type",stage="ingest"}']) == 2
    assert float(samples['stream_dead_letter_events_total{reason="invalid_batch",stage="dedupe"}']) == 1


def test_a_straggler_after_the_hour_is_sealed_lands_in_an_extra_object_of_that_hour(deployment, worker):
    settings, _ = deployment
    asyncio.run(ensure_topics(settings))
    worker()

    async def send(events):
        p = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
        await p.start()
        try:
            for value, ts in events:
                await p.send(settings.topics.name("ingest"), orjson.dumps(value), key=b"device-0001",
                             timestamp_ms=ts)
            await p.flush()
        finally:
            await p.stop()

    def ledger():
        return [LedgerRecord.decode(m.value) for m in asyncio.run(read_all(settings, settings.topics.name(
            "export_ledger")))]
    asyncio.run(send([(ev(1), H7 + 1_000), (ev(2), H7 + 2_000)]))
    marker = "amp/424242/424242_2024-03-09_7_complete"
    wait_until(lambda: any(r.key == marker for r in ledger()), 60, "07:00 to be sealed and marked")
    asyncio.run(send([(ev(3), H7 + 3_000)]))          # a straggler of 07:00, long sealed
    records = wait_until(lambda: (recs := ledger()) and sum(r.events for r in recs) == 3 and recs, 60,
                         "the straggler's object")
    objects = [(r.key, r.events) for r in records if r.kind == "object"]
    (first, n1), (extra, n2) = objects
    assert first.startswith("amp/424242/424242_2024-03-09_7#") and extra.startswith("amp/424242/424242_2024-03-09_7#")
    assert (n1, n2) == (2, 1) and int(extra.split("#")[1][:-8]) > int(first.split("#")[1][:-8])
    assert [r.key for r in records if r.kind == "marker" and "2024" in r.key] == [marker]   # not marked again
    s3 = boto3.client("s3", endpoint_url=settings.s3.endpoint_url)
    body = s3.get_object(Bucket=settings.destinations[0].bucket, Key=extra)["Body"].read()
    assert [orjson.loads(x)["$insert_id"] for x in gzip.decompress(body).splitlines()] == ["ins-3"]


def test_an_event_stamped_days_ahead_holds_no_hour_open(deployment, worker):
    """A producer whose clock is three days ahead: its events are stamped with the ingest clock (and counted), and
    the ordinary events of the previous hour that follow them on the same devices are all exported within
    close_grace_s + 30 s, exactly once; no hour ahead of the clock gets a marker."""
    settings, _ = deployment
    asyncio.run(ensure_topics(settings))
    worker()
    ready = f"http://127.0.0.1:{settings.worker.http_port}/readyz"
    wait_until(lambda: _answers(ready), 60, "the worker to be ready")
    now = int(time.time() * 1000)
    previous_hour = now - now % HOUR - HOUR
    devices = [f"device-{i:04d}" for i in range(8)]   # both partitions
    future = [(ev(1000 + i, device=d), now + 3 * DAY) for i, d in enumerate(devices)]
    ordinary = [(ev(i, device=devices[i % 8]), previous_hour + i * 1000) for i in range(400)]

    async def send():
        p = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, linger_ms=5)
        await p.start()
        try:
            for value, ts in future + ordinary:
                await p.send(settings.topics.name("ingest"), orjson.dumps(value), timestamp_ms=ts)
            await p.flush()
        finally:
            await p.stop()
    asyncio.run(send())
    sent = time.monotonic()

    def ledger():
        return [LedgerRecord.decode(m.value) for m in asyncio.run(read_all(settings, settings.topics.name(
            "export_ledger")))]
    grace = settings.destinations[0].close_grace_s
    wait_until(lambda: sum(r.events for r in ledger() if r.kind == "object") >= 400, grace + 30,
               "the previous hour's events on S3")
    assert time.monotonic() - sent <= grace + 30
    s3 = boto3.client("s3", endpoint_url=settings.s3.endpoint_url)
    bucket = settings.destinations[0].bucket
    rows = []
    for r in ledger():
        if r.kind == "object":
            rows += [orjson.loads(x) for x in gzip.decompress(s3.get_object(Bucket=bucket, Key=r.key)["Body"]
                                                             .read()).splitlines()]
    assert sorted(r["$insert_id"] for r in rows) == sorted(v["insert_id"] for v, _ in ordinary)
    # the events from the future are in the current hour, stamped with the ingest clock; they close with it
    accepted = [EventBatch.decode(m.value) for m in asyncio.run(read_all(settings, settings.topics.name("accepted")))]
    stamped = {orjson.loads(line)["$insert_id"]: t for b in accepted for line, t in zip(b.lines, b.times)
               if orjson.loads(line)["event_properties"]["n"] >= 1000}
    assert sorted(stamped) == sorted(v["insert_id"] for v, _ in future)
    assert all(abs(t - now) < 60_000 for t in stamped.values())
    assert all(parse_ms(k.split("_", 1)[1][:10] + " 00:00:00.000") <= now
               for k in (r.key for r in ledger() if r.kind == "marker"))
    text = urllib.request.urlopen(f"http://127.0.0.1:{settings.worker.http_port}/metrics").read().decode()
    assert "stream_ingest_clamped_events_total 8.0" in text.splitlines()


def _answers(url):
    try:
        return urllib.request.urlopen(url, timeout=2).status == 200
    except OSError:
        return False
