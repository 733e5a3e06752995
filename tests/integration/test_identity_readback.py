"""Held rows are references to their events.valid message: a worker killed -9 while rows are held, with the
batch that held them committed, lets them go once started again by reading them back from events.valid."""

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from stream.kafka import end_offsets
from tests.integration.conftest import wait_until
from tests.integration.test_crash import H7, exported, object_keys, pipeline, produce, rows

pytestmark = pytest.mark.integration

EVENTS = [({"event_type": "Page Viewed", "device_id": "device-0001", "user_id": "user-0001",
            "insert_id": f"ins-{i}", "user_properties": {"n": i}}, H7 + i * 1000) for i in range(12)]


async def valid_committed(settings):
    """The dedupe group has committed events.valid to its end (so the batches that held rows are not read again)."""
    topic = settings.topics.name("valid")
    ends = await end_offsets(settings, topic)
    c = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers, group_id=settings.worker.app_id,
                         enable_auto_commit=False)
    await c.start()
    try:
        done = {p: await c.committed(TopicPartition(topic, p)) for p in ends}
    finally:
        await c.stop()
    return any(ends.values()) and all((done[p] or 0) >= end for p, end in ends.items())


def test_rows_held_when_the_worker_is_killed_are_read_back_from_events_valid_and_exported_once(
        deployment, worker, tmp_path):
    settings = deployment[0]
    go = tmp_path / "go"
    # the user side holds its first links message: the device side holds the pair's rows meanwhile
    first = worker(env={"STREAM_PAUSE_AT": "identity.links_read", "STREAM_PAUSE_UNTIL": str(go)})
    asyncio.run(produce(settings, EVENTS))
    wait_until(lambda: asyncio.run(valid_committed(settings)), 60, "the batches that held rows to be committed")
    assert object_keys(settings) == set()                  # every row held: nothing exported
    first.kill()
    first.wait(30)
    worker()
    try:
        wait_until(lambda: len(exported(settings)) >= len(EVENTS), 120, "every held row exported")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{pipeline(settings)}") from None
    assert exported(settings) == sorted(ev["insert_id"] for ev, _ in EVENTS)
    out = sorted(rows(settings, object_keys(settings)), key=lambda r: r["$insert_id"])
    # the rows as held: the pair's id (its device's, adopted by the user side), each its own properties
    assert {r["amplitude_id"] for r in out} == {out[0]["amplitude_id"]}
    assert sorted(r["user_properties"]["n"] for r in out) == list(range(12))
    log = (tmp_path / "worker-1.log").read_text()
    assert "held rows of" in log and "read back from" in log
