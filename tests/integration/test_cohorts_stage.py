"""The cohorts stage on a real broker and moto S3: a sync started while events keep arriving ends, with exactly the
users uploaded before its time; a worker killed -9 inside the stage ends with the same files."""

import asyncio
import threading
import time

import boto3
import pytest
import yaml
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


def sync(path, now="2024-03-09T08:30Z"):
    result = CliRunner().invoke(main, ["cohorts", "sync", "pro-buyers", "-c", str(path), "--now", now])
    assert result.exit_code == 0, result.output
    return result.output


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

    def traffic():   # purchases on the pro plan uploaded after 08:00, one every 20 ms until the sync is over
        async def run():
            n = 0
            while not stop.is_set():
                await produce(settings, [event(f"after{n % 50:02d}", "purchase", "pro", T + 60_000 + n * 1000, n)])
                n += 1
                sent[0] = n
        asyncio.run(run())
    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    try:
        wait_until(lambda: sent[0] > 20, 60, "the traffic to flow")
        started = time.monotonic()
        out = sync(path)
        took = time.monotonic() - started
    finally:
        stop.set()
        thread.join(30)
    assert "complete: 10 members, 10 entering, 0 exiting" in out, out
    assert took < 120
    s3 = boto3.client("s3", endpoint_url=settings.s3.endpoint_url)
    assert cohort_objects(s3, bucket) == expected_files(settings)


@pytest.mark.parametrize("point", ["cohorts.rekeyed:4", "cohorts.state_written:5"])
def test_a_worker_killed_inside_the_cohorts_stage_ends_with_the_same_files(deployment, worker, point):
    settings, path = deployment
    bucket = settings.destinations[0].bucket
    cfg = configure(path, bucket)
    path.write_text(yaml.safe_dump(cfg))
    # the events on events.accepted first (their upload times are of 2024: had the stage seen its partitions at
    # their end before they came, it would have passed them by the clock)
    first = worker("--stages", "ingest,dedupe,export")
    asyncio.run(produce(settings, BEFORE + LATE))
    wait_until(lambda: len(accepted_rows(settings)) == len(BEFORE + LATE), 60, "the events on events.accepted")
    first.terminate()
    first.wait(30)
    crashed = start_state_worker(worker, path, cfg, bucket, "cohorts", env={"STREAM_CRASH_AT": point})
    assert crashed.wait(90) == -9
    start_state_worker(worker, path, cfg, bucket, "cohorts")
    sync(path)
    s3 = boto3.client("s3", endpoint_url=settings.s3.endpoint_url)
    assert cohort_objects(s3, bucket) == expected_files(settings)
