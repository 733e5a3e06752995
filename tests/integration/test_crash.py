"""Kill -9 the worker at named points of its cycle, restart it, and compare what is on S3, exactly."""

import asyncio
import gzip
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
    return {o["Key"] for o in s3.list_objects_v2(Bucket=settings.destinations[0].bucket).get("Contents", [])}


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
    worker("--stages", "ingest,dedupe", metrics_port=free_port())
    exporter = worker("--stages", "export", metrics_port=free_port(), env={"STREAM_CRASH_AT": point})
    asyncio.run(produce(settings))
    wait_until(lambda: exporter.poll() is not None, 60, f"the exporter to die at {point}")
    assert exporter.returncode == -9
    keys_before = object_keys(settings)
    worker("--stages", "export", metrics_port=free_port())
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
