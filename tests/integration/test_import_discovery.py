"""Discovery of import files against the real broker and moto's S3 and SQS: the bucket's notifications and the list
scan become ImportFile records on imports.files, and SQS messages are deleted only once their records are
acknowledged."""

import asyncio
import hashlib
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from prometheus_client import REGISTRY

from stream import kafka
from stream.imports.discovery import ScanState, poll_queue, run_scanner, scan_source
from stream.imports.files import ImportFile
from stream.settings import Settings

pytestmark = pytest.mark.integration

CONVERTER = {"converterConfig": {"convertToAmplitudeFunc": {"event_type": "event", "user_id": "user"}},
             "keyValidatorConfig": {"filterPattern": r"in/.*\.json\.gz"}}
SPACED = "in/a b/x#1.json.gz"      # S3 notifies it as in/a+b%2Fx%231.json.gz
OBJECTS = {SPACED: b"first file", "in/plain.json.gz": b"second", "out/c.json.gz": b"outside the prefix",
           "in/notes.txt": b"not matching the filter pattern"}


class Place:
    """A fresh source on the shared stack: its topic prefix, bucket and (optionally) a queue the bucket notifies."""

    def __init__(self, stack, notify: bool):
        run = uuid.uuid4().hex[:8]
        self.name, self.bucket = f"s{run}", f"imp-{run}"
        self.s3 = boto3.client("s3", endpoint_url=stack["s3"])
        self.sqs = boto3.client("sqs", endpoint_url=stack["s3"])
        self.s3.create_bucket(Bucket=self.bucket)
        self.queue_url = None
        if notify:
            self.queue_url = self.sqs.create_queue(QueueName=f"imp-{run}")["QueueUrl"]
            arn = self.sqs.get_queue_attributes(QueueUrl=self.queue_url,
                                                AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            self.s3.put_bucket_notification_configuration(Bucket=self.bucket, NotificationConfiguration={
                "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]})
        self.settings = Settings(
            kafka={"bootstrap_servers": stack["bootstrap"]},
            topics={"prefix": f"{run}.", "partitions": 2},
            s3={"endpoint_url": stack["s3"], "retry_max_s": 1, "permanent_retry_s": 0.5},
            projects=[{"id": 7}],
            sources=[{"name": self.name, "project": 7, "bucket": self.bucket, "prefix": "in/",
                      "queue_url": self.queue_url, "converter": CONVERTER, "scan": {"full_pass_s": 600}}])
        self.source = self.settings.sources[0]
        self.topic = self.settings.topics.name("import_files")

    def put(self, key: str, body: bytes) -> str:
        """Write an object; its ETag, unquoted."""
        return self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)["ETag"].strip('"')

    def queue_counts(self) -> tuple[int, int]:
        a = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"])

    def metric(self, name: str, **labels) -> float:
        return REGISTRY.get_sample_value(name, {"source": self.name, **labels}) or 0.0


async def start(place: Place):
    created = await kafka.ensure_topics(place.settings)
    assert place.topic in created
    producer = kafka.producer(place.settings.kafka)
    await producer.start()

    async def send(record: ImportFile):
        return await producer.send(place.topic, record.encode(), key=record.kafka_key)

    return producer, send


async def read_back(place: Place) -> list[tuple[bytes, int, ImportFile]]:
    """(key, partition, record) of every record on the place's imports.files, each key's records in order."""
    got = await kafka.read_all(place.settings, place.topic)
    return sorted(((r.key, r.partition, ImportFile.decode(r.value)) for r in got),
                  key=lambda x: (x[0], x[2].event_time_ms, x[2].etag or ""))


async def poll_until(place: Place, send, done, timeout: float = 15, **kwargs) -> dict[str, int]:
    """Run ``poll_queue`` until ``done(events)`` holds (events: outcome -> count); the counts."""
    events: dict[str, int] = {}
    deadline = time.monotonic() + timeout

    def on_event(outcome, message_id):
        events[outcome] = events.get(outcome, 0) + 1

    await poll_queue(place.settings, place.source, send, on_event=on_event, wait_s=1,
                     stop=lambda: done(events) or time.monotonic() > deadline, **kwargs)
    assert done(events), f"poll_queue stopped before the expected outcomes: {events}"
    return events


def sqs_record(place, key, etag, size, t0, t1, record):
    """The record a notification of ``key`` should have produced; its event time is moto's clock at the put."""
    assert t0 - 1000 <= record.event_time_ms <= t1 + 1000, (key, record.event_time_ms, t0, t1)
    return ImportFile(source=place.name, bucket=place.bucket, key=key, event_time_ms=record.event_time_ms,
                      found_by="sqs", size=size, etag=etag)


def test_notifications_become_records_and_their_messages_are_deleted_once_acknowledged(stack):
    place = Place(stack, notify=True)

    async def go():
        producer, send = await start(place)
        try:
            t0 = time.time_ns() // 1_000_000
            etags = {key: place.put(key, body) for key, body in OBJECTS.items()}
            again = place.put("in/plain.json.gz", b"second, written again")
            t1 = time.time_ns() // 1_000_000
            # the test event, four creations, one more of a key already created
            events = await poll_until(place, send, lambda e: e.get("deleted", 0) >= 6)
            return etags, again, t0, t1, events, await read_back(place)
        finally:
            await producer.stop()

    etags, again, t0, t1, events, got = asyncio.run(go())
    assert events == {"received": 6, "test_event": 1, "ignored": 2, "deleted": 6}
    assert [k for k, _, _ in got] == [f"{place.name}:{SPACED}".encode()] + [
        f"{place.name}:in/plain.json.gz".encode()] * 2
    assert [r for _, _, r in got] == [
        sqs_record(place, SPACED, etags[SPACED], 10, t0, t1, got[0][2]),
        sqs_record(place, "in/plain.json.gz", etags["in/plain.json.gz"], 6, t0, t1, got[1][2]),
        sqs_record(place, "in/plain.json.gz", again, 21, t0, t1, got[2][2]),
    ]
    assert etags[SPACED] == hashlib.md5(b"first file").hexdigest()
    assert got[1][1] == got[2][1], "every discovery of one key goes to one partition"
    assert place.queue_counts() == (0, 0)
    assert [place.metric("stream_import_sqs_messages_total", outcome=o) for o in
            ("received", "test_event", "ignored", "unreadable", "deleted")] == [6, 1, 2, 0, 6]
    assert place.metric("stream_import_files_discovered_total", found_by="sqs") == 3


def test_slow_acknowledgements_extend_the_visibility_and_unreadable_messages_stay_for_the_redrive(stack):
    place = Place(stack, notify=True)

    seen = []

    def look():
        """The bodies of the messages visible now (left visible), and how many messages the queue holds."""
        visible = place.sqs.receive_message(QueueUrl=place.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0)
        return [m["Body"] for m in visible.get("Messages", [])], sum(place.queue_counts())

    async def go():
        producer, real_send = await start(place)

        async def slow_send(record):
            ack = await real_send(record)

            async def later():
                await asyncio.sleep(2.5)      # longer than the whole visibility timeout below
                seen.append(await asyncio.to_thread(look))
                return await ack
            return later()

        try:
            place.sqs.send_message(QueueUrl=place.queue_url, MessageBody="not an S3 event")
            etag = place.put("in/slow.json.gz", b"slow")
            await poll_until(place, slow_send, lambda e: e.get("deleted", 0) >= 2 and e.get("unreadable", 0) >= 1,
                             visibility_s=2)
            return etag, await read_back(place)
        finally:
            await producer.stop()

    etag, got = asyncio.run(go())
    # before the acknowledgement: the object's message is still on the queue (with the unreadable one), and hidden
    # although its first visibility timeout ran out
    [(visible, held)] = seen
    assert held == 2 and not [b for b in visible if "Records" in b], (visible, held)
    assert [(k, r.key, r.etag, r.found_by) for k, _, r in got] == [
        (f"{place.name}:in/slow.json.gz".encode(), "in/slow.json.gz", etag, "sqs")]
    assert place.metric("stream_import_sqs_visibility_extensions_total") >= 2
    assert place.metric("stream_import_sqs_messages_total", outcome="deleted") == 2
    # what is left is the unreadable message alone, back once its visibility timeout ran out
    left = place.sqs.receive_message(QueueUrl=place.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=3)
    assert [m["Body"] for m in left["Messages"]] == ["not an S3 event"]
    assert place.queue_counts() == (0, 1)
    assert place.metric("stream_import_sqs_messages_total", outcome="unreadable") >= 1


def test_the_scan_finds_new_files_incrementally_and_a_full_pass_sends_only_what_it_missed(stack):
    place = Place(stack, notify=False)
    full_pass_ms = int(place.source.scan.full_pass_s * 1000)

    async def go():
        producer, send = await start(place)
        try:
            for key, body in OBJECTS.items():
                place.put(key, body)
            state, t = ScanState(), 1_000_000
            counts = [await scan_source(place.settings, place.source, send, state, now_ms=t)]
            place.put("in/z-new.json.gz", b"new")
            place.put("in/0-early.json.gz", b"sorts before")
            counts.append(await scan_source(place.settings, place.source, send, state, now_ms=t + 1000))
            assert state.next_listing(t + full_pass_ms, place.source.scan.full_pass_s)[0] == "full"
            counts.append(await scan_source(place.settings, place.source, send, state, now_ms=t + full_pass_ms))
            counts.append(await scan_source(place.settings, place.source, send, state, now_ms=t + full_pass_ms + 1))
            # the loop: one more file, found by the next incremental scan
            place.put("in/zz-last.json.gz", b"last")
            deadline = time.monotonic() + 10
            await run_scanner(place.settings, place.source, send, interval_s=0.2, state=state, stop=lambda: (
                place.metric("stream_import_files_discovered_total", found_by="scan") >= 5
                or time.monotonic() > deadline))
            return counts, state, await read_back(place)
        finally:
            await producer.stop()

    counts, state, got = asyncio.run(go())
    assert counts == [2, 1, 1, 0]
    listing = {o["Key"]: o for o in place.s3.list_objects_v2(Bucket=place.bucket, Prefix="in/")["Contents"]}

    def scanned(key):
        o = listing[key]
        ms = (o["LastModified"] - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
        return ImportFile(source=place.name, bucket=place.bucket, key=key, event_time_ms=ms, found_by="scan",
                          size=o["Size"], etag=o["ETag"].strip('"'))

    keys = ["in/0-early.json.gz", SPACED, "in/plain.json.gz", "in/z-new.json.gz", "in/zz-last.json.gz"]
    assert [r for _, _, r in got] == [scanned(k) for k in keys]
    assert [k for k, _, _ in got] == [f"{place.name}:{k}".encode() for k in keys]
    assert state.start_after == "in/zz-last.json.gz"
    # listed: 3 (full), 2 after in/plain (incremental), 5 (full), 0 after in/z-new, then at least 1 by the loop
    assert place.metric("stream_import_scan_listed_objects_total") >= 11
    assert place.metric("stream_import_files_discovered_total", found_by="scan") == 5


def test_a_missing_queue_and_bucket_are_logged_with_the_cure_and_retried_until_stopped(stack, caplog):
    place = Place(stack, notify=False)
    run = place.bucket.removeprefix("imp-")
    settings = Settings(**{**place.settings.model_dump(exclude={"sources"}), "sources": [
        {**place.source.model_dump(exclude={"queue_url", "bucket"}), "bucket": f"gone-{run}",
         "queue_url": f"{stack['s3']}/123456789012/gone-{run}"}]})
    source = settings.sources[0]

    async def go():
        async def send(record):
            raise AssertionError(f"nothing should be discovered, got {record}")

        deadline = time.monotonic() + 3

        def stop():
            return time.monotonic() > deadline

        await asyncio.gather(poll_queue(settings, source, send, stop=stop, wait_s=1),
                             run_scanner(settings, source, send, stop=stop, interval_s=0.5))

    caplog.set_level(logging.WARNING, logger="stream")
    began = time.monotonic()
    asyncio.run(go())
    assert time.monotonic() - began < 8
    messages = [r.getMessage() for r in caplog.records if r.name == "stream.imports.discovery"]
    assert any(f"gone-{run} does not exist in region us-east-1: check sources[].queue_url" in m for m in messages)
    assert any("the list scan failed" in m and f"bucket gone-{run} does not exist" in m for m in messages)
    assert REGISTRY.get_sample_value("stream_import_sqs_errors_total",
                                     {"source": source.name, "reason": "no_such_queue"}) >= 2
