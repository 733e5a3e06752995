"""Several destinations per project, several projects per bucket, and a destination disabled then enabled."""

import asyncio
import gzip

import boto3
import orjson
import pytest
import yaml
from aiokafka import AIOKafkaProducer

from stream.kafka import ensure_topics
from stream.settings import load_settings
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration
H7 = 1709967600000  # 2024-03-09 07:00 UTC


def rows(s3, bucket, prefix=""):
    out = {}
    for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
        if o["Key"].endswith("_complete"):
            continue
        try:
            body = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
        except s3.exceptions.NoSuchKey:    # removed since the listing (a part replaced): the next look reads it
            continue
        lines = gzip.decompress(body).splitlines()
        out[o["Key"]] = sorted(orjson.loads(x)["$insert_id"] for x in lines)
    return out


def test_each_destination_gets_its_projects_events_and_a_re_enabled_one_catches_up(deployment, worker, stack):
    _, path = deployment
    cfg = yaml.safe_load(path.read_text())
    s3 = boto3.client("s3", endpoint_url=stack["s3"])
    shared, copy = cfg["destinations"][0]["bucket"], cfg["destinations"][0]["bucket"] + "-copy"
    s3.create_bucket(Bucket=copy)
    fast = {"close_grace_s": 1, "idle_close_s": 1}
    cfg["destinations"] = [
        {"name": "main", "project": 424242, "bucket": shared, "prefix": "amp/", **fast},
        {"name": "other-project", "project": 7, "bucket": shared, "prefix": "amp/", **fast},
        {"name": "copy", "project": 424242, "bucket": copy, "prefix": "", **fast, "enabled": False},
    ]
    path.write_text(yaml.safe_dump(cfg))
    settings = load_settings(path)
    asyncio.run(ensure_topics(settings))

    async def produce():
        p = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
        await p.start()
        try:
            for i in range(10):
                project = b"7" if i % 3 == 0 else b"424242"
                ev = {"event_type": "e", "device_id": f"device-{i:04d}", "insert_id": f"p{project.decode()}-{i}"}
                await p.send(settings.topics.name("ingest"), orjson.dumps(ev), headers=[("project", project)],
                             timestamp_ms=H7 + i)
            await p.flush()
        finally:
            await p.stop()

    first = worker()
    asyncio.run(produce())
    ours = sorted(f"p424242-{i}" for i in range(10) if i % 3)
    theirs = sorted(f"p7-{i}" for i in range(10) if i % 3 == 0)

    def exported(prefix, bucket=shared):
        return sorted(x for ids in rows(s3, bucket, prefix).values() for x in ids)
    wait_until(lambda: exported("amp/424242/") == ours and exported("amp/7/") == theirs, 90,
               "both projects' events in the shared bucket")
    assert rows(s3, copy) == {}                      # disabled: nothing written
    assert all(k.startswith(("amp/424242/424242_2024-03-09_7#", "amp/7/7_2024-03-09_7#"))
               for k in rows(s3, shared))

    first.terminate()
    first.wait(30)
    cfg["destinations"][2]["enabled"] = True
    path.write_text(yaml.safe_dump(cfg))
    worker()
    wait_until(lambda: exported("", copy) == ours, 90, "the re-enabled destination to catch up")
    assert all(k.startswith("424242/424242_2024-03-09_7#") for k in rows(s3, copy))
    assert exported("amp/424242/") == ours and exported("amp/7/") == theirs   # nothing written twice
