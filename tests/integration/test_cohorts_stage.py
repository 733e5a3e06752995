"""The cohorts stage on a real broker and moto S3: a sync started while events keep arriving ends, with exactly the
users uploaded before its time; a worker killed -9 at any cohorts crash point, in the stage or in its scheduler's
sync, ends once started again with the files of an uninterrupted run and one completion record."""

import asyncio
import subprocess
import sys
import threading
import time

import boto3
import orjson
import pytest
import yaml
from aiokafka import AIOKafkaProducer
from click.testing import CliRunner

from stream.cli import main
from stream.settings import load_settings
from tests.integration.conftest import wait_until
from tests.integration.test_cohorts import H7, MIN, cohort_objects, event, start_state_worker
from tests.integration.test_crash import produce
from tests.integration.test_import import accepted_rows

pytestmark = pytest.mark.integration

T = H7 + 60 * MIN          # 2024-03-09 08:00 UTC
HEAD = b"amplitudeID,userID,plan\r\n"
F = "cohorts/424242_pro-buyers_2024-03-09T08:00_"


def configure(path, bucket):
    cfg = yaml.safe_load(path.read_text())
    cfg["cohorts"] = [{"id": "pro-buyers", "project": 424242, "name": "Pro buyers", "rule": {"and": [
        {"performed": "purchase", "within_days": 2}, {"user_property": "plan", "op": "=", "value": "pro"}]}}]
    cfg["cohort_destinations"] = [{"name": "crm", "bucket": bucket, "syncs": [
        {"cohort": "pro-buyers", "cadence": "hourly", "properties": ["plan"]}]}]
    return cfg


# before 08:00: ten buyers on the pro plan, two on the free plan; one buyer's purchase is uploaded after 08:00
BEFORE = [event(f"b{i:02d}", "purchase", "pro" if i < 10 else "free", H7 + i * MIN, 1) for i in range(12)]
LATE = [event("late", "purchase", "pro", T + 30_000, 1)]


def expected_files(settings):
    user_of = {r["amplitude_id"]: r["user_id"] for r in accepted_rows(settings)}
    members = sorted(aid for aid, user in user_of.items() if user in {f"user-b{i:02d}" for i in range(10)})
    body = HEAD + b"".join(b"%d,%s,pro\r\n" % (aid, user_of[aid].encode()) for aid in members)
    return {F + "entering.csv": body, F + "exiting.csv": HEAD, F + "existing.csv": body}


def test_a_sync_started_while_events_flow_ends_with_exactly_the_users_uploaded_before_its_time(deployment, worker):
    settings, path = deployment
    bucket = settings.destinations[0].bucket
    start_state_worker(worker, path, configure(path, bucket), bucket)
    asyncio.run(produce(settings, BEFORE + LATE))
    # upload times are stamped at ingestion: the events of before 08:00 are on events.accepted before the traffic
    # of after it (a caught-up partition has passed the clock, far after 2024)
    wait_until(lambda: len(accepted_rows(settings)) == len(BEFORE + LATE), 60, "the events on events.accepted")
    stop = threading.Event()
    sent = [0]

    def traffic():
        """Purchases on the pro plan uploaded after 08:00, as accepted batches one after the other (each once the
        previous is acknowledged) until the sync is over: a reader of the topic never sees it quiet."""
        async def run():
            from stream.events.batch import EventBatch, Origin, Source
            p = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
            await p.start()
            try:
                n = 0
                while not stop.is_set():
                    at = T + 60_000 + n * 1000
                    row = {"amplitude_id": 900_000 + n % 50, "app": 424242, "event_type": "purchase",
                           "event_time": time.strftime("%Y-%m-%d %H:%M:%S.000000", time.gmtime(at / 1000)),
                           "user_id": f"after-{n % 50}", "user_properties": {"plan": "pro"}}
                    batch = EventBatch(424242, at - at % 3_600_000, Origin("traffic", 0, n), [n], [b"d"], [at],
                                       [b"u" * 16], [orjson.dumps(row)], Source("traffic", 0))
                    await (await p.send(settings.topics.name("accepted"), batch.encode(), partition=n % 2))
                    n += 1
                    sent[0] = n
            finally:
                await p.stop()
        asyncio.run(run())
    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    try:
        wait_until(lambda: sent[0] > 500, 60, "the traffic to flow")     # (a read of the topic would not end)
        started = time.monotonic()
        # in a process of its own, so that a read that never ends fails the test instead of hanging it
        done = subprocess.run([sys.executable, "-m", "stream", "cohorts", "sync", "pro-buyers", "-c", str(path),
                               "--now", "2024-03-09T08:30Z"], capture_output=True, timeout=120, check=False)
        took = time.monotonic() - started
        out = done.stdout.decode()
        assert done.returncode == 0, out + done.stderr.decode()
    finally:
        stop.set()
        thread.join(30)
    assert "complete: 10 members, 10 entering, 0 exiting" in out, out
    assert took < 120
    s3 = boto3.client("s3", endpoint_url=settings.s3.endpoint_url)
    assert cohort_objects(s3, bucket) == expected_files(settings)


# the syncs of the worker's own scheduler are of the current hour: the zone whose hour began last (hours begin at
# :00, :30 and :15 UTC in these) leaves the test at least 30 minutes before the next
ZONES = ("UTC", "Asia/Kolkata", "Asia/Kathmandu")


def accepted_batches(settings, t):
    """Twelve buyers uploaded in the half hour before ``t`` (ten on the pro plan, two on the free plan) and one on
    the pro plan uploaded at ``t``, each in a batch of its own on events.accepted; the expected sync files of ``t``
    (the worker's ``side/`` destination)."""
    from stream.events.batch import EventBatch, Origin, Source

    def row(i, user, plan, at):
        return orjson.dumps({"amplitude_id": 1000 + i, "app": 424242, "event_type": "purchase",
                             "event_time": time.strftime("%Y-%m-%d %H:%M:%S.000000", time.gmtime(at / 1000)),
                             "user_id": user, "user_properties": {"plan": plan}})

    rows = [(row(i, f"user-b{i:02d}", "pro" if i < 10 else "free", t - 30 * MIN + i * MIN), t - 30 * MIN + i * MIN)
            for i in range(12)] + [(row(12, "user-late", "pro", t), t)]

    async def run():
        p = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
        await p.start()
        try:
            for n, (line, at) in enumerate(rows):
                batch = EventBatch(424242, at - at % 3_600_000, Origin("test", 0, n), [n], [b"d"], [at],
                                   [b"u" * 16], [line], Source("test", 0))
                await (await p.send(settings.topics.name("accepted"), batch.encode(), partition=n % 2))
        finally:
            await p.stop()
    asyncio.run(run())
    body = HEAD + b"".join(b"%d,user-b%02d,pro\r\n" % (1000 + i, i) for i in range(10))
    prefix = f"side/424242_pro-buyers_{time.strftime('%Y-%m-%dT%H:%M', time.gmtime(t / 1000))}_"
    return {prefix + "entering.csv": body, prefix + "exiting.csv": HEAD, prefix + "existing.csv": body}


@pytest.mark.parametrize("point", [None, "cohorts.rekeyed:1", "cohorts.state_written:5", "cohorts.diffed",
                                   "cohorts.file_written:1", "cohorts.file_written:2", "cohorts.file_written:3",
                                   "cohorts.completed"])
def test_a_worker_killed_at_a_cohorts_crash_point_ends_with_the_files_of_an_uninterrupted_run(deployment, worker,
                                                                                              point):
    """The worker's scheduler syncs the current hour; killed -9 at ``point`` (None: never), the worker started
    again ends with the same three files, byte for byte, and one completion record of the sync."""
    from stream.cohorts.schedule import slot_start
    from stream.kafka import ensure_topics
    settings, path = deployment
    bucket = settings.destinations[0].bucket
    now = int(time.time() * 1000)
    zone = max(ZONES, key=lambda z: slot_start("hourly", z, now))
    t = slot_start("hourly", zone, now)
    cfg = configure(path, bucket)
    cfg["cohort_destinations"][0]["syncs"][0]["time_zone"] = zone
    cfg["cohort_state"] = {"grace_s": 1}
    path.write_text(yaml.safe_dump(cfg))
    settings = load_settings(path)
    asyncio.run(ensure_topics(settings))
    # the events on events.accepted before any worker runs the stage: one that found the partitions empty would
    # have them pass the clock, and sync the hour without them
    expected = accepted_batches(settings, t)
    if point is not None:
        crashed = start_state_worker(worker, path, cfg, bucket, "cohorts", env={"STREAM_CRASH_AT": point})
        assert crashed.wait(90) == -9
    start_state_worker(worker, path, cfg, bucket, "cohorts")
    s3 = boto3.client("s3", endpoint_url=settings.s3.endpoint_url)
    rec = "_side/side/424242_pro-buyers/"
    done = rec + f"done/{time.strftime('%Y-%m-%dT%H-%M', time.gmtime(t / 1000))}.done"
    records = wait_until(lambda: (r := cohort_objects(s3, bucket, "_side/")) and done in r and
                         rec + "latest.json" in r and r, 90,
                         "the worker's sync of the hour")
    assert cohort_objects(s3, bucket, "side/") == expected
    # killed between the completion record and the pointer: the sync is complete and not run again; the scheduler,
    # started again, finds it complete without a pointer and writes the pointer (a copy of the record)
    assert sorted(records) == [done, rec + "latest.json"]
    assert records[rec + "latest.json"] == records[done]
    record = orjson.loads(records[done])
    assert (record["scheduled_ms"], record["members"], record["entering"], record["exiting"], record["previous"],
            record["keys"]) == (t, 10, 10, 0, None, {k.rsplit("_", 1)[1][:-4]: k for k in expected})
    history = CliRunner().invoke(main, ["cohorts", "history", "pro-buyers", "-c", str(path.parent / "worker.yaml")])
    assert history.exit_code == 0, history.output
    assert [ln.split()[0] for ln in history.output.splitlines()] == [record["stamp"]]
