"""Kill -9 the worker at named points of its cycle, restart it, and compare what is on S3, exactly."""

import asyncio
import gzip
import os
import random
import threading
import time

import boto3
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from stream.devstack.services import free_port
from stream.kafka import ensure_topics
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration

H7 = 1709967600000   # 2024-03-09 07:00 UTC
HOUR = 3_600_000
EVENTS = [({"event_type": "Page Viewed", "device_id": f"device-{i % 7:04d}", "insert_id": f"ins-{i}"},
           H7 + (i // 20) * HOUR + i * 1000) for i in range(60)]   # three hours, seven devices


async def produce(settings):
    p = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    await p.start()
    try:
        for ev, ts in EVENTS:
            await p.send(settings.topics.name("ingest"), orjson.dumps(ev), timestamp_ms=ts)
        await p.flush()
    finally:
        await p.stop()


def object_keys(settings):
    s3 = boto3.client("s3", endpoint_url=settings.s3.endpoint_url)
    return {o["Key"] for o in s3.list_objects_v2(Bucket=settings.destinations[0].bucket).get("Contents", [])
            if not o["Key"].endswith("_complete")}


def exported(settings):
    """insert_id of every row in the bucket, with repeats."""
    s3 = boto3.client("s3", endpoint_url=settings.s3.endpoint_url)
    bucket = settings.destinations[0].bucket
    ids = []
    for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        body = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
        ids += [orjson.loads(line)["$insert_id"] for line in gzip.decompress(body).splitlines()]
    return sorted(ids)


@pytest.mark.parametrize("point", ["export.uploaded", "export.ledgered", "export.committed"])
def test_killing_the_exporter_at_each_point_neither_loses_nor_duplicates(deployment, worker, point):
    """The export stage alone is killed and restarted; ingest and dedupe run on in another worker."""
    settings, _ = deployment
    asyncio.run(ensure_topics(settings))
    worker("--stages", "ingest,dedupe", http_port=free_port())
    exporter = worker("--stages", "export", http_port=free_port(), env={"STREAM_CRASH_AT": point})
    asyncio.run(produce(settings))
    wait_until(lambda: exporter.poll() is not None, 60, f"the exporter to die at {point}")
    assert exporter.returncode == -9
    keys_before = object_keys(settings)
    worker("--stages", "export", http_port=free_port())
    expected = sorted(ev["insert_id"] for ev, _ in EVENTS)
    wait_until(lambda: len(exported(settings)) >= len(expected), 90, "every event to be exported")
    time.sleep(3)  # anything written twice would land by now
    assert exported(settings) == expected
    assert keys_before <= object_keys(settings)   # objects written before the kill keep their keys


@pytest.mark.parametrize("point", ["ingest.produced", "dedupe.sent:3", "export.uploaded", "export.ledgered",
                                   "export.committed"])
def test_killing_the_whole_worker_neither_loses_nor_duplicates(deployment, worker, point):
    """Every stage replays what it had not committed; the exporter drops the replays by their source offsets."""
    settings, _ = deployment
    asyncio.run(ensure_topics(settings))
    first = worker(env={"STREAM_CRASH_AT": point})
    asyncio.run(produce(settings))
    wait_until(lambda: first.poll() is not None, 60, f"the worker to die at {point}")
    assert first.returncode == -9
    worker()
    expected = sorted(ev["insert_id"] for ev, _ in EVENTS)
    wait_until(lambda: len(exported(settings)) >= len(expected), 90, "every event to be exported")
    time.sleep(3)
    assert exported(settings) == expected


SOAK_EVENTS = [({"event_type": "Page Viewed", "device_id": f"device-{i % 13:04d}", "insert_id": f"soak-{i}"},
                H7 + i * 20_000) for i in range(1500)]   # about eight hours of data, 180 events an hour


def test_a_soak_of_random_kills_while_events_flow_neither_loses_nor_duplicates(deployment, worker):
    """SIGKILL the worker at random moments (seeded) while a producer streams events, then let one finish."""
    cycles = int(os.environ.get("STREAM_SOAK_CYCLES", "10"))
    rnd = random.Random(int(os.environ.get("STREAM_SOAK_SEED", "7")))
    settings, _ = deployment
    asyncio.run(ensure_topics(settings))

    async def stream_events():
        p = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, linger_ms=5)
        await p.start()
        try:
            for i, (ev, ts) in enumerate(SOAK_EVENTS):
                await p.send(settings.topics.name("ingest"), orjson.dumps(ev), timestamp_ms=ts)
                if i % 50 == 49:
                    await asyncio.sleep(0.25)   # about 200 events a second
            await p.flush()
        finally:
            await p.stop()

    producer = threading.Thread(target=asyncio.run, args=(stream_events(),))
    producer.start()
    for _ in range(cycles):
        w = worker()
        time.sleep(rnd.uniform(2.5, 7.0))   # during start-up, joins, processing, uploads
        w.kill()
        w.wait()
    producer.join()
    worker()
    expected = sorted(ev["insert_id"] for ev, _ in SOAK_EVENTS)
    wait_until(lambda: len(exported(settings)) >= len(expected), 180, "every event to be exported")
    time.sleep(3)
    assert exported(settings) == expected
