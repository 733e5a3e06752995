"""The broker restarts while events flow (Tansu keeps its topics and offsets on S3): nothing lost, nothing doubled."""

import asyncio
import threading
import time
import uuid

import boto3
import orjson
import pytest
import yaml
from aiokafka import AIOKafkaProducer

from stream.devstack.services import start_broker
from stream.events.partitioning import partition_for
from stream.kafka import ensure_topics
from stream.settings import load_settings
from tests.integration.conftest import wait_until
from tests.integration.test_crash import exported, hours_complete

pytestmark = pytest.mark.integration

HOUR = 3_600_000


def events(start):
    """600 events over two hours from ``start``, then one event per partition past the second hour and the grace,
    which closes both hours by the data (the clock never does: they are in the future)."""
    evs = [({"event_type": "Page Viewed", "device_id": f"device-{i % 11:04d}", "insert_id": f"br-{i}"},
            start + i * 12_000) for i in range(600)]
    closers = {}
    for i in range(100):
        closers.setdefault(partition_for(f"closer-{i}", 2), f"closer-{i}")
    return evs, [({"event_type": "Tick", "device_id": d, "insert_id": d}, start + 2 * HOUR + 2_000)
                 for d in closers.values()]


def test_a_broker_restart_while_events_flow_loses_and_duplicates_nothing(deployment, worker, stack, tmp_path):
    bucket = f"tansu-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=stack["s3"]).create_bucket(Bucket=bucket)
    broker = start_broker(tmp_path, storage=f"s3://{bucket}/", s3_endpoint=stack["s3"])
    try:
        _, path = deployment
        cfg = yaml.safe_load(path.read_text())
        cfg["kafka"]["bootstrap_servers"] = f"127.0.0.1:{broker.port}"
        cfg["ingest"]["max_clock_skew_s"] = 86_400   # the events are stamped hours ahead on purpose
        path.write_text(yaml.safe_dump(cfg))
        settings = load_settings(path)
        asyncio.run(ensure_topics(settings))
        sent, errors = threading.Event(), []
        start = int(time.time() * 1000) // HOUR * HOUR + 3 * HOUR
        evs, closers = events(start)

        async def stream_events():
            p = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, linger_ms=5, acks="all",
                                 request_timeout_ms=5_000, retry_backoff_ms=500)
            await p.start()
            try:
                for i, (ev, ts) in enumerate(evs + closers):
                    # wait for each acknowledgement: a send lost with the broker is sent again (the same event
                    # twice on events.ingest is a duplicate by insert_id, which dedupe drops)
                    while True:
                        try:
                            await asyncio.wait_for(p.send_and_wait(settings.topics.name("ingest"), orjson.dumps(ev),
                                                                   timestamp_ms=ts), 15)
                            break
                        except (Exception, asyncio.CancelledError) as exc:
                            errors.append(type(exc).__name__)
                            await asyncio.sleep(0.5)
                    if i % 30 == 29:
                        await asyncio.sleep(0.1)
            finally:
                await p.stop()
                sent.set()

        workers = [worker()]
        producer = threading.Thread(target=asyncio.run, args=(stream_events(),))
        producer.start()
        time.sleep(5)
        broker.proc.kill()                      # kill -9 mid-stream
        broker.proc.wait()
        time.sleep(3)
        broker = start_broker(tmp_path, port=broker.port, storage=f"s3://{bucket}/", s3_endpoint=stack["s3"])
        restarted = time.monotonic()

        def done():
            if workers[-1].poll() is not None:   # a supervisor (Kubernetes) restarts a worker that exits
                workers.append(worker())
            return sent.is_set() and hours_complete(settings, [time.strftime("%Y-%m-%d_%-H", time.gmtime(h / 1000))
                                                               for h in (start, start + HOUR)])
        wait_until(done, 240, "every hour to be written and marked complete after the restart")
        producer.join()
        assert exported(settings) == sorted(ev["insert_id"] for ev, _ in evs)   # the closers' hour stays open
        print(f"caught up {time.monotonic() - restarted:.1f}s after the broker came back; "
              f"{len(workers) - 1} worker restart(s); the test producer's failed sends: {errors}")
    finally:
        worker.stop()      # before the broker it reads
        broker.stop()
