"""Mirror mutations against the real broker and S3: exported hours rewritten exactly once by UPDATEs and DELETEs
(untouched hours byte-identical), unknown mutations dead-lettered, new INSERTs exported as events, and the same
mutations applied twice leaving the same bytes."""

import asyncio
import gzip

import boto3
import orjson
import pytest
import yaml
from aiokafka import AIOKafkaProducer

from stream.events import deadletter
from stream.events.normalize import Rules
from stream.export.mirror import updated
from stream.imports import mutations as records
from stream.kafka import ensure_topics, read_all
from stream.settings import load_settings
from tests.integration.conftest import wait_until
from tests.integration.test_backfill import marked
from tests.integration.test_crash import produce

pytestmark = pytest.mark.integration

FILE = "s3://src-bucket/mirror/2024-03-10.json"


def mirror_deployment(path):
    cfg = yaml.safe_load(path.read_text())
    cfg["destinations"][0]["archive"] = True
    cfg["mirror"] = {"index_days": 3000}      # the sample events are of March 2024
    cfg["sources"] = [{"name": "corrections", "project": 424242, "bucket": "src-bucket", "prefix": "mirror/",
                       "strategy": "mirror", "scan": {"enabled": False},
                       "converter": {"converterConfig": {"convertToAmplitudeFunc": {
                           "event_type": "event_type", "user_id": "user_id", "device_id": "device_id",
                           "insert_id": "insert_id", "$mutation_type": "op"}}}}]
    path.write_text(yaml.safe_dump(cfg))
    return load_settings(path)


def objects(settings):
    s3 = boto3.client("s3", endpoint_url=settings.s3.endpoint_url)
    bucket = settings.destinations[0].bucket
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="amp/"):
        for o in page.get("Contents", []):
            out[o["Key"]] = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
    return out


def rows_by_hour(objs):
    out = {}
    for k, body in sorted(objs.items()):
        if k.endswith(".json.gz"):
            out.setdefault(k.split("#")[0].split("/")[-1].split("_", 1)[1], []).extend(
                orjson.loads(x) for x in gzip.decompress(body).splitlines())
    return {h: sorted(rs, key=lambda r: r["$insert_id"]) for h, rs in out.items()}


def mutation(row, op, n):
    m = records.mutation_of({"$mutation_type": op, **row}, 424242, (1_710_000_000_000, FILE, n), f"derived-{n}",
                            1_710_000_000_000, f"{FILE}#{n}", Rules(), 1_710_000_000_000)
    assert not hasattr(m, "reason"), m
    return m


async def send(settings, muts):
    p = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    await p.start()
    try:
        for m in muts:
            key, value = records.encode(424242, m)
            await p.send(settings.topics.name("mutations"), value, key=key)
        await p.flush()
    finally:
        await p.stop()


def exported(settings, worker, **env):
    """Start a worker, produce the sample events, wait for their three hours: (objects, rows by hour)."""
    asyncio.run(ensure_topics(settings))
    worker(env=env)
    asyncio.run(produce(settings))
    wait_until(lambda: marked(settings), 120, "every hour exported and marked")
    before = objects(settings)
    old = rows_by_hour(before)
    assert sorted(old) == ["2024-03-09_7", "2024-03-09_8", "2024-03-09_9"]
    return before, old


def corrections():
    """hour 7: ins-5 updated; hour 8: ins-25 deleted; an UPDATE of nothing; a new event."""
    return [mutation({"event_type": "Purchase", "user_id": "user-0001", "device_id": "device-0005",
                      "insert_id": "ins-5"}, "update", 1),
            mutation({"user_id": "user-0001", "insert_id": "ins-25"}, "DELETE", 2),
            mutation({"user_id": "user-0001", "insert_id": "never-sent"}, "delete", 3),
            mutation({"event_type": "Signed Up", "user_id": "user-0009", "device_id": "device-0099",
                      "insert_id": "brand-new"}, "Insert", 4)]


def rewritten(settings):
    now = rows_by_hour(objects(settings))
    h7 = {r["$insert_id"]: r for r in now.get("2024-03-09_7", [])}
    return "ins-25" not in {r["$insert_id"] for r in now.get("2024-03-09_8", [])} and \
        h7.get("ins-5", {}).get("event_type") == "Purchase" and \
        any(r["$insert_id"] == "brand-new" for rs in now.values() for r in rs) and now


def check(settings, before, old, muts):
    """The hours as the model says once the corrections are applied; returns the objects."""
    upd = muts[0]
    after_rows = wait_until(lambda: rewritten(settings), 180, "hours 7 and 8 rewritten and the new event exported")
    after = objects(settings)
    # hour 7: every row as it was, but ins-5 replaced, keeping its identity and hour
    original = {r["$insert_id"]: r for r in old["2024-03-09_7"]}
    expected7 = sorted([updated(original["ins-5"], upd.row) if i == "ins-5" else r for i, r in original.items()],
                       key=lambda r: r["$insert_id"])
    assert after_rows["2024-03-09_7"] == expected7
    got = {r["$insert_id"]: r for r in after_rows["2024-03-09_7"]}["ins-5"]
    assert (got["uuid"], got["amplitude_id"], got["server_upload_time"], got["event_type"], got["user_id"]) == (
        original["ins-5"]["uuid"], original["ins-5"]["amplitude_id"], original["ins-5"]["server_upload_time"],
        "Purchase", "user-0001")
    assert after_rows["2024-03-09_8"] == [r for r in old["2024-03-09_8"] if r["$insert_id"] != "ins-25"]
    # hour 9 untouched, byte for byte; markers rewritten for the rebuilt hours
    assert {k: v for k, v in after.items() if "_2024-03-09_9" in k} == \
        {k: v for k, v in before.items() if "_2024-03-09_9" in k}
    assert {k for k in after if k.endswith("_complete")} >= {f"amp/424242/424242_2024-03-09_{h}_complete"
                                                             for h in (7, 8, 9)}
    # the new event: exported once, in the hour of its import, its user properties not synced
    fresh = [r for rs in after_rows.values() for r in rs if r["$insert_id"] == "brand-new"]
    assert len(fresh) == 1 and fresh[0]["event_type"] == "Signed Up"
    assert fresh[0]["data"]["$skip_user_properties_sync"] is True
    # its hour (the server time the mutation was built with, 2024-03-09T16:00Z) is sealed like any other
    wait_until(lambda: "amp/424242/424242_2024-03-09_16_complete" in objects(settings), 60, "the new event's hour")
    after = objects(settings)
    # every event once
    ids = [r["$insert_id"] for rs in after_rows.values() for r in rs]
    assert len(ids) == len(set(ids)) == 60 - 1 + 1
    # the applied mutations are kept in the archive bucket, out of the export's folder
    s3 = boto3.client("s3", endpoint_url=settings.s3.endpoint_url)
    kept = [o["Key"] for o in s3.list_objects_v2(Bucket=settings.destinations[0].bucket,
                                                  Prefix="_stream/mirror/").get("Contents", [])]
    assert sorted({k.rsplit("/", 2)[1] for k in kept}) == ["2024-03-09_7", "2024-03-09_8"]
    return after


def dead_letters(settings):
    return [deadletter.decode(m.value) for m in asyncio.run(read_all(settings, settings.topics.name("dead_letter")))]


def test_mutations_rewrite_the_hours_holding_their_events_and_nothing_else(deployment, worker):
    settings = mirror_deployment(deployment[1])
    before, old = exported(settings, worker)
    muts = corrections()
    asyncio.run(send(settings, muts))
    after = check(settings, before, old, muts)
    # the unknown one: a dead letter naming its file and row, once the batch is applied
    wait_until(lambda: dead_letters(settings), 30, "the unknown mutation's dead letter")
    assert [(d["reason"], d["field"], deadletter.source_of(d)) for d in dead_letters(settings)] == [
        ("unknown_insert_id", "insert_id", f"{FILE}#3")]

    # the same mutations again: the same bytes (the dead letter of the unknown one comes once the hours are rebuilt)
    asyncio.run(send(settings, muts))
    wait_until(lambda: len(dead_letters(settings)) == 2, 120,
               "the second pass applied (its unknown mutation dead-lettered again)")
    assert objects(settings) == after


@pytest.mark.parametrize("point", ["mirror.logged", "mirror.rebuilt"])
def test_killing_the_worker_while_it_applies_mutations_converges_to_the_same_hours(deployment, worker, point):
    """kill -9 after the hours' logs are written (none rebuilt), or after they are rebuilt (offsets not committed):
    the next worker applies the batch again, to the same result."""
    settings = mirror_deployment(deployment[1])
    before, old = exported(settings, worker)
    worker.stop()
    crashing = worker(env={"STREAM_CRASH_AT": point})
    muts = corrections()
    asyncio.run(send(settings, muts))
    crashing.wait(180)
    assert crashing.returncode == -9
    worker()
    check(settings, before, old, muts)
    wait_until(lambda: dead_letters(settings), 60, "the unknown mutation's dead letter")
