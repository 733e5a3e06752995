"""A mirror INSERT against the real broker and S3, with an Amplitude-layout and a Segment-layout destination of the
project: the new event is exported by the Amplitude-layout one and not by the Segment-layout one, which exports
every other event (those of the device the new event names too, held with it by the identity stage)."""

import asyncio
import gzip

import boto3
import orjson
import pytest
import yaml
from aiokafka import AIOKafkaProducer

from stream.events.normalize import Rules
from stream.imports import mutations as records
from stream.kafka import ensure_topics
from tests.integration.conftest import wait_until
from tests.integration.test_backfill import marked
from tests.integration.test_crash import EVENTS, produce
from tests.integration.test_mirror import mirror_deployment

pytestmark = pytest.mark.integration

FILE = "s3://src-bucket/mirror/2024-03-10.json"
MIRROR_MS = 1_710_000_000_000           # 2024-03-09T16:00Z: the new event's server time


def deployment_with_segment(path):
    cfg = yaml.safe_load(path.read_text())
    cfg["destinations"].append({"name": "seg", "project": 424242, "bucket": cfg["destinations"][0]["bucket"],
                                "prefix": "seg/", "layout": "segment", "close_grace_s": 1, "idle_close_s": 1})
    path.write_text(yaml.safe_dump(cfg))
    return mirror_deployment(path)


def lines(settings, prefix):
    """Every line of the objects under ``prefix`` (markers and probes left out), parsed."""
    s3 = boto3.client("s3", endpoint_url=settings.s3.endpoint_url)
    bucket = settings.destinations[0].bucket
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            if o["Key"].endswith((".json.gz", ".gz")) and not o["Key"].endswith("_complete"):
                body = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
                out.extend(orjson.loads(x) for x in gzip.decompress(body).splitlines())
    return out


async def send_insert(settings):
    m = records.mutation_of({"$mutation_type": "INSERT", "event_type": "Signed Up", "user_id": "user-0009",
                             "device_id": "device-0099", "insert_id": "brand-new"}, 424242, (MIRROR_MS, FILE, 1),
                            "derived-1", MIRROR_MS, f"{FILE}#1", Rules(), MIRROR_MS)
    assert not hasattr(m, "reason"), m
    p = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    await p.start()
    try:
        key, value = records.encode(424242, m)
        await p.send(settings.topics.name("mutations"), value, key=key)
        await p.flush()
    finally:
        await p.stop()


def test_a_mirror_insert_reaches_the_amplitude_layout_destination_and_not_the_segment_layout_one(deployment, worker):
    settings = deployment_with_segment(deployment[1])
    asyncio.run(ensure_topics(settings))
    worker()
    asyncio.run(produce(settings))
    wait_until(lambda: marked(settings), 120, "every sample hour exported and marked")
    asyncio.run(send_insert(settings))
    wait_until(lambda: any(r["$insert_id"] == "brand-new" for r in lines(settings, "amp/")), 120,
               "the new event exported by the Amplitude-layout destination")
    # then an event of the same device (so of the same partition, after the new event): once the Segment-layout
    # destination has exported it, it has read past the new event
    asyncio.run(produce(settings, [({"event_type": "Page Viewed", "device_id": "device-0099",
                                     "insert_id": "after-mirror"}, MIRROR_MS + 60_000)]))
    wait_until(lambda: any(m["messageId"] == "after-mirror" for m in lines(settings, "seg/")), 120,
               "the later event of the device exported by the Segment-layout destination")
    seg = sorted(m["messageId"] for m in lines(settings, "seg/"))
    assert seg == sorted([ev["insert_id"] for ev, _ in EVENTS] + ["after-mirror"])
    assert {m["type"] for m in lines(settings, "seg/")} == {"track"}
    amp = [r for r in lines(settings, "amp/424242/") if r["$insert_id"] == "brand-new"]
    assert [(r["event_type"], r["user_id"], r["device_id"]) for r in amp] == [("Signed Up", "user-0009",
                                                                              "device-0099")]
