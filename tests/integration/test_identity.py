"""Identity end to end on the real broker and S3: exact amplitude_ids, merged-IDs lines and dead letters."""

import asyncio
import gzip

import boto3
import orjson
import pytest
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from stream.events import deadletter
from stream.events.partitioning import partition_for
from stream.export.ledger import LedgerRecord
from stream.export.status_cli import read_status
from stream.kafka import ensure_topics, read_all
from stream.settings import load_settings
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration

H7 = 1709967600000   # 2024-03-09 07:00 UTC
HOUR = 3_600_000
# three devices: A and C share a partition, B is on the other one (of 2)
A, B, C = "device-aaaa", "device-b001", "device-cccc"


def ev(device, user=None, t=0, **kw):
    e = {"event_type": kw.pop("event_type", "Page Viewed"), "device_id": device, "insert_id": f"{device}-{t}", **kw}
    if user:
        e["user_id"] = user
    return e, t


PHASE1 = [ev(A, t=H7 + 1000, app_version="1.0"),
          ev(A, "user-1111", t=H7 + 2000, event_type="$identify",
             user_properties={"$set": {"plan": "pro"}, "$add": {"visits": 1}}),
          ev(C, "user-2222", t=H7 + 3000),
          # bad input: each is dead-lettered with its reason, nothing else changes
          ev(A, "user-1111", t=H7 + 4000, event_type="$identify", user_properties={"$set": "plan"}),
          ev(A, "user-1111", t=H7 + 5000, event_type="$identify", user_properties={"$add": {"visits": "1"}}),
          ev(A, "user-1111", t=H7 + 6000, event_type="$identify", user_properties={"$set": {"bio": "x" * 100_000}}),
          ev(A, "user-1111", t=H7 + 7000, event_type="$identify",
             user_properties={"$set": {f"p{i}": i for i in range(2000)}}),
          ev(A, "user-1111", t=H7 + 8000, user_properties={"blob": "y" * (10 << 20)})]
PHASE2 = [ev(B, t=H7 + HOUR + 1000),                                 # a new device: its own id
          ev(B, "user-1111", t=H7 + HOUR + 2000),                    # user-1111's second device: merged
          ev(C, "user-1111", t=H7 + HOUR + 3000)]                    # C's user_id changes: a pair id, merged
PHASE3 = [ev(B, "user-1111", t=H7 + 2 * HOUR + 1000), ev(C, t=H7 + 2 * HOUR + 2000),
          ev(A, "user-1111", t=H7 + 2 * HOUR + 3000, price=3.0)]


async def produce(settings, events):
    p = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, max_request_size=16 << 20)
    await p.start()
    try:
        for e, ts in events:
            await (await p.send(settings.topics.name("ingest"), orjson.dumps(e), timestamp_ms=ts))
    finally:
        await p.stop()


async def links_applied(settings):
    """Every identity.links record is read and committed by the user side (faust's group)."""
    records = await read_all(settings, settings.topics.name("identity_links"))
    ends = {}
    for m in records:
        ends[m.partition] = max(ends.get(m.partition, 0), m.offset + 1)
    c = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers, group_id=settings.worker.app_id,
                         enable_auto_commit=False)
    await c.start()
    try:   # the group's committed offsets, read without joining it
        done = {p: await c.committed(TopicPartition(settings.topics.name("identity_links"), p)) for p in ends}
    finally:
        await c.stop()
    return bool(ends) and all((done[p] or -1) >= end for p, end in ends.items())


def ledger(settings):
    return [LedgerRecord.decode(m.value) for m in asyncio.run(read_all(settings, settings.topics.name(
        "export_ledger")))]


def rows_of(settings, keys):
    s3 = boto3.client("s3", endpoint_url=settings.s3.endpoint_url)
    out = []
    for k in sorted(keys):
        body = s3.get_object(Bucket=settings.destinations[0].bucket, Key=k)["Body"].read()
        out += [orjson.loads(x) for x in gzip.decompress(body).splitlines()]
    return out


def test_devices_and_users_across_partitions_get_exact_ids_merges_and_fields(deployment, worker):
    settings, path = deployment
    cfg = yaml.safe_load(path.read_text())
    cfg["destinations"][0].update(exports="both", org_id=55)
    path.write_text(yaml.safe_dump(cfg))
    settings = load_settings(path)
    assert [partition_for(d, 2) for d in (A, B, C)] == [0, 1, 0]
    asyncio.run(ensure_topics(settings))
    worker()
    asyncio.run(produce(settings, PHASE1))
    wait_until(lambda: asyncio.run(links_applied(settings)), 60, "phase 1's links applied by the user side")
    asyncio.run(produce(settings, PHASE2))
    wait_until(lambda: sum(r.events for r in ledger(settings) if r.destination == "main.merged-ids") >= 2, 90,
               "both merges on S3")
    asyncio.run(produce(settings, PHASE3))
    expected_events = 3 + len(PHASE2) + len(PHASE3)
    records = wait_until(lambda: (lambda rs: rs if sum(r.events for r in rs if r.destination == "main" and
                                                       r.kind == "object") >= expected_events else None)(
        ledger(settings)), 90, "every event on S3")

    # ids: partition 0 allocates 1024 (A), 2048 (C), 3072 (C's pair with user-1111); partition 1: 1025 (B)
    rows = rows_of(settings, {r.key for r in records if r.destination == "main" and r.kind == "object"})
    got = sorted((r["server_upload_time"], r["device_id"], r["user_id"], r["amplitude_id"]) for r in rows)
    assert got == [
        ("2024-03-09 07:00:01.000000", A, None, 1024),
        ("2024-03-09 07:00:02.000000", A, "user-1111", 1024),      # the user adopts its device's id
        ("2024-03-09 07:00:03.000000", C, "user-2222", 2048),
        ("2024-03-09 08:00:01.000000", B, None, 1025),
        ("2024-03-09 08:00:02.000000", B, "user-1111", 1024),      # held until the merge came back: the user's id
        ("2024-03-09 08:00:03.000000", C, "user-1111", 1024),      # a user_id change: its pair (3072) merged too
        ("2024-03-09 09:00:01.000000", B, "user-1111", 1024),      # after the remaps: the user's id
        ("2024-03-09 09:00:02.000000", C, None, 1024),
        ("2024-03-09 09:00:03.000000", A, "user-1111", 1024)]
    by_time = {r["server_upload_time"]: r for r in rows}
    ident = by_time["2024-03-09 07:00:02.000000"]
    assert (ident["event_type"], ident["amplitude_event_type"], ident["user_properties"], ident["start_version"],
            ident["user_creation_time"], ident["paying"]) == (
        "$identify", "$identify", {"plan": "pro", "visits": 1}, "1.0", "2024-03-09 07:00:01.000000", False)
    first_b = by_time["2024-03-09 08:00:02.000000"]     # B's first event with the user: the user's fields already
    assert (first_b["user_properties"], first_b["user_creation_time"], first_b["start_version"]) == (
        {"plan": "pro", "visits": 1}, "2024-03-09 07:00:01.000000", "1.0")
    last_a, last_b = by_time["2024-03-09 09:00:03.000000"], by_time["2024-03-09 09:00:01.000000"]
    assert (last_a["user_properties"], last_a["paying"]) == ({"plan": "pro", "visits": 1}, True)
    # B learnt the user's fields with the remap: the user side's properties and its creation time
    assert (last_b["user_properties"], last_b["user_creation_time"], last_b["start_version"]) == (
        {"plan": "pro", "visits": 1}, "2024-03-09 07:00:01.000000", "1.0")
    assert all(r["processed_time"] is not None for r in rows)

    # the merged-IDs file of hour 8, named by the org, one line per merge, exactly once
    merged = sorted(r.key for r in records if r.destination == "main.merged-ids" and r.kind == "object")
    assert merged[0] == "amp/424242/-55_2024-03-09_8.json.gz"
    lines = sorted(orjson.dumps(x) for x in rows_of(settings, merged))
    assert lines == sorted([
        b'{"amplitude_id":1024,"merged_amplitude_id":1025,"merge_time":1709971202000,'
        b'"merge_server_time":1709971202000,"scope":424242}',
        b'{"amplitude_id":1024,"merged_amplitude_id":3072,"merge_time":1709971203000,'
        b'"merge_server_time":1709971203000,"scope":424242}'])

    # the operator's status view lists the merged-IDs exporter beside the events, with the hour it wrote
    doc = asyncio.run(read_status(settings, 48))
    assert [(d["destination"], d["exports"]) for d in doc["destinations"]] == [
        ("main", "events"), ("main.merged-ids", "merged_ids")]
    hour8 = next(h for h in doc["destinations"][1]["hours"] if h["hour"] == "2024-03-09T08:00:00Z")
    assert (hour8["objects"], hour8["events"]) == (len(merged), 2)

    # bad input: dead-lettered with its reason, by the stage that found it
    dead = [deadletter.decode(m.value) for m in asyncio.run(read_all(settings, settings.topics.name("dead_letter")))]
    assert sorted((d["reason"], d["field"]) for d in dead) == [
        ("invalid_identify", "user_properties.$add.visits"), ("invalid_identify", "user_properties.$set"),
        ("invalid_value", "user_properties.$set.bio"), ("too_large", None),
        ("too_many_properties", "user_properties.$set")]


def test_a_user_with_large_properties_has_every_event_exported_in_batches_within_the_producers_limit(
        deployment, worker):
    """A user whose properties are about 200 KB: each of its rows carries them, so a batch of its events grows
    far past the producer's largest message once enriched; it is split, and every event lands exactly once. An
    update that would take the properties past identity.max_properties_bytes is not applied."""
    _, path = deployment
    cfg = yaml.safe_load(path.read_text())
    cfg["kafka"]["max_request_bytes"] = 2 << 20          # enriched batches are split at 1 MiB
    cfg["ingest"]["max_event_bytes"] = 512 << 10
    path.write_text(yaml.safe_dump(cfg))
    settings = load_settings(path)
    asyncio.run(ensure_topics(settings))
    worker()
    big = {f"p{i:03d}": "v" * 1000 for i in range(200)}
    events = [ev(A, "user-big1", t=H7 + 1000, event_type="$identify", user_properties={"$set": big})]
    events += [ev(A, "user-big1", t=H7 + 2000 + i) for i in range(30)]
    events += [ev(A, "user-big1", t=H7 + 3000, event_type="$identify",
                  user_properties={"$set": {f"q{i:03d}": "w" * 1000 for i in range(100)}})]   # past 256 KiB
    events += [ev(A, "user-big1", t=H7 + 4000 + i) for i in range(5)]
    asyncio.run(produce(settings, events))

    def exported():
        recs = [LedgerRecord.decode(m.value) for m in asyncio.run(read_all(settings, settings.topics.name(
            "export_ledger")))]
        return sum(r.events for r in recs if r.kind == "object" and r.destination == "main")
    wait_until(lambda: exported() >= len(events), 120, "every event exported")
    accepted = asyncio.run(read_all(settings, settings.topics.name("accepted")))
    assert len(accepted) > 6 and max(len(m.value) for m in accepted) <= 1 << 20
    rows = rows_of(settings, [r.key for r in (LedgerRecord.decode(m.value) for m in asyncio.run(
        read_all(settings, settings.topics.name("export_ledger")))) if r.kind == "object"])
    assert sorted(r["$insert_id"] for r in rows) == sorted(e["insert_id"] for e, _ in events)
    assert all(r["user_properties"] == big for r in rows)     # the update past the bound was not applied
    port = settings.worker.http_port
    import urllib.request
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode().splitlines()
    assert "stream_identity_updates_dropped_total 1.0" in metrics


def test_users_known_by_user_id_alone_have_their_id_and_properties_on_the_first_event_of_every_new_device(
        deployment, worker):
    """Twenty users' properties imported by user_id alone (``$identify`` rows without a device_id), then 500 events
    of theirs from 100 new devices, imported in one file: every event carries its user's amplitude_id and
    properties from the first one (the device side holds a new pair's rows until the user side answered)."""
    from tests.integration.test_import import DISCOVERED, discover, exported_rows, put
    from stream.imports.files import ImportFile
    settings, path = deployment
    src = settings.destinations[0].bucket + "-src"
    boto3.client("s3", endpoint_url=settings.s3.endpoint_url).create_bucket(Bucket=src)
    cfg = yaml.safe_load(path.read_text())
    func = {"event_type": "event", "user_id": "user", "device_id": "device", "time": "ts"}
    cfg["sources"] = [
        {"name": "profiles", "project": 424242, "bucket": src, "prefix": "props/", "data_type": "user_properties",
         "scan": {"enabled": False}, "converter": {"converterConfig": {"convertToAmplitudeFunc": {
             "user_id": "user", "user_properties": {"plan": "plan", "seat": "seat"}}}}},
        {"name": "clicks", "project": 424242, "bucket": src, "prefix": "in/", "scan": {"enabled": False},
         "converter": {"converterConfig": {"convertToAmplitudeFunc": func}}}]
    cfg["ingest"]["max_clock_skew_s"] = 86_400
    path.write_text(yaml.safe_dump(cfg))
    settings = load_settings(path)
    asyncio.run(ensure_topics(settings))
    worker()
    users = {f"user-{u:04d}": {"plan": "pro" if u % 2 else "free", "seat": u} for u in range(20)}
    put(settings, src, {"props/users.jsonl": b"\n".join(orjson.dumps({"user": u, **p}) for u, p in users.items())})
    asyncio.run(discover(settings, [ImportFile("profiles", src, "props/users.jsonl", DISCOVERED, "sqs")]))
    wait_until(lambda: len(exported_rows(settings)) >= 20, 120, "the users' properties exported")
    events = [{"event": "Play", "user": f"user-{i % 20:04d}", "device": f"new-{i % 100:04d}", "ts": H7 + i * 1000}
              for i in range(500)]
    put(settings, src, {"in/events.jsonl": b"\n".join(orjson.dumps(e) for e in events)})
    asyncio.run(discover(settings, [ImportFile("clicks", src, "in/events.jsonl", DISCOVERED, "sqs")]))
    rows = wait_until(lambda: (lambda rs: rs if len(rs) >= 520 else None)(exported_rows(settings)), 120,
                      "every event exported")
    idents = {r["user_id"]: r for r in rows if r["event_type"] == "$identify"}
    assert ({u: r["device_id"] for u, r in idents.items()}, len(rows)) == ({u: None for u in users}, 520)
    assert {u: r["user_properties"] for u, r in idents.items()} == users
    plays = [r for r in rows if r["event_type"] == "Play"]
    right = [r for r in plays if r["amplitude_id"] == idents[r["user_id"]]["amplitude_id"]
             and r["user_properties"] == users[r["user_id"]]]
    assert len(right) == 500, f"{500 - len(right)} of 500 events without their user's id or properties"
    import urllib.request
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{settings.worker.http_port}/metrics").read().decode()
    counts = {ln.split()[0]: float(ln.split()[1]) for ln in metrics.splitlines()
              if ln.startswith(("stream_identity_held_events_total ", "stream_identity_unanswered_events_total ",
                                "stream_identity_hold_seconds_count "))}
    assert counts["stream_identity_held_events_total"] == 520
    assert counts["stream_identity_unanswered_events_total"] == 0
    assert counts["stream_identity_hold_seconds_count"] == 120     # 20 users' own devices, 100 new ones
