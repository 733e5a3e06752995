"""Two workers running the cohorts stage on the real broker: the one assigned partition 0 of the cohorts topic runs
the syncs, so each scheduled sync's files and records are written once; stopping it moves the duty to the other."""

import urllib.error
import urllib.request

import boto3
import orjson
import pytest
import yaml
from click.testing import CliRunner

from stream.cli import main
from stream.settings import load_settings
from tests.integration.conftest import ADMIN_TOKEN, free_port, wait_until
from tests.integration.test_cohorts import _get, cohort_objects

pytestmark = pytest.mark.integration

REC = "_stream/cohorts/crm/424242_pro-buyers/"


def sync_now(port):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/admin/cohorts/pro-buyers/syncs", data=b"{}",
                                 method="POST", headers={"Authorization": f"Bearer {ADMIN_TOKEN}",
                                                         "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def duty(port):
    """The worker's stream_cohort_sync_duty."""
    from prometheus_client.parser import text_string_to_metric_families
    text = _get(f"http://127.0.0.1:{port}/metrics")[1].decode()
    (value,) = [m.value for f in text_string_to_metric_families(text) for m in f.samples
                if m.name == "stream_cohort_sync_duty"]
    return value


def one_holder(ports):
    """Each worker's stream_cohort_sync_duty, once exactly one of them holds the duty (else None)."""
    got = [duty(port) for port in ports]
    return got if sorted(got) == [0.0, 1.0] else None


def test_two_workers_write_each_scheduled_sync_once_and_the_duty_moves_when_its_holder_stops(
        deployment, worker, tmp_path):
    settings, path = deployment
    cfg = yaml.safe_load(path.read_text())
    bucket = cfg["destinations"][0]["bucket"]
    cfg["destinations"] = []          # a deployment that only syncs cohorts
    cfg["cohorts"] = [{"id": "pro-buyers", "project": 424242, "name": "Pro buyers", "rule": {
        "performed": "purchase", "within_days": 2}}]
    cfg["cohort_destinations"] = [{"name": "crm", "bucket": bucket, "syncs": [
        {"cohort": "pro-buyers", "cadence": "hourly"}]}]
    path.write_text(yaml.safe_dump(cfg))
    settings = load_settings(path)
    topic = settings.topics.name("cohorts")
    # two replicas started together, each with its own port and data directory (the cohorts topic has 2 partitions)
    ports = [free_port(), free_port()]
    procs = [worker(http_port=port, env={"STREAM_WORKER__DATA_DIR": str(tmp_path / f"data-{i}")})
             for i, port in enumerate(ports)]
    for port in ports:
        wait_until(lambda port=port: _get(f"http://127.0.0.1:{port}/readyz")[0] == 200, 90, f"worker :{port} ready")
    s3 = boto3.client("s3", endpoint_url=settings.s3.endpoint_url)
    done = wait_until(lambda: [k for k in cohort_objects(s3, bucket, REC + "done/")], 90, "the hour's sync")

    # exactly one of the two holds the sync duty: the one assigned partition 0
    got = wait_until(lambda: one_holder(ports), 60,
                     "one worker holding the sync duty")
    holder = got.index(1.0)
    other = 1 - holder
    # "sync now" on either worker is taken: the hour is synced already
    for port in ports:
        status, body = sync_now(port)
        assert status == 202 and body["waiting_for_worker"] is False, body
        assert [(s["destination"], s["state"]) for s in body["syncs"]] == [("crm", "complete")]

    # the hour's sync (or the next one's, when the test runs across the hour) was written once, by one worker
    done = sorted(cohort_objects(s3, bucket, REC + "done/"))
    logs = [(tmp_path / f"worker-{i}.log").read_text() for i in range(2)]
    files = sorted(k for k in cohort_objects(s3, bucket, "") if not k.startswith("_stream/"))
    assert len(done) in (1, 2) and len(files) == 3 * len(done)
    writes = [line.split("wrote s3://", 1)[1].split(" ")[0] for log in logs for line in log.splitlines()
              if "crm: wrote s3://" in line]
    assert sorted(writes) == sorted(f"{bucket}/{k}" for k in files)      # each file once, across both workers
    assert cohort_objects(s3, bucket, REC + "failed/") == {}
    history = CliRunner().invoke(main, ["cohorts", "history", "pro-buyers", "-c", str(path)])
    assert history.exit_code == 0, history.output
    assert len(history.output.splitlines()) == len(done)
    assert f"assigned partition 0 of {topic}: it runs the 1 cohort sync(s)" in logs[holder]
    assert f"partition 0 of {topic} is assigned to another worker, which runs the cohort syncs" in logs[other] or \
        f"partition 0 of {topic} is no longer assigned to this worker" in logs[other]

    # the holder stops (SIGTERM): the rebalance gives partition 0 to the other, which runs the syncs from then
    procs[holder].terminate()
    procs[holder].wait(60)
    wait_until(lambda: duty(ports[other]) == 1.0, 60, "the other worker to take the sync duty")
    log = (tmp_path / f"worker-{other}.log").read_text()
    assert f"assigned partition 0 of {topic}: it runs the 1 cohort sync(s)" in log
    # it read the completed sync and wrote nothing again
    assert sorted(cohort_objects(s3, bucket, REC + "done/")) == done
    logs = [(tmp_path / f"worker-{i}.log").read_text() for i in range(2)]
    assert sorted(line.split("wrote s3://", 1)[1].split(" ")[0] for log in logs for line in log.splitlines()
                  if "crm: wrote s3://" in line) == sorted(writes)


def requests_on_topic(settings):
    """The records of the sync requests topic, decoded."""
    import asyncio

    from stream import kafka
    return [orjson.loads(m.value) for m in asyncio.run(kafka.read_all(
        settings, settings.topics.name("cohort_sync_requests")))]


def test_sync_now_asked_of_the_worker_without_the_duty_runs_once_on_the_one_holding_it(deployment, worker, tmp_path):
    """Two workers; "sync now" of a once sync asked of the one not holding the sync duty: the holder runs another
    sync, whose files are written once; the next holder (the first one stopped) does not run the request again."""
    import socket
    settings, path = deployment
    cfg = yaml.safe_load(path.read_text())
    bucket = cfg["destinations"][0]["bucket"]
    cfg["destinations"] = []
    cfg["cohorts"] = [{"id": "pro-buyers", "project": 424242, "name": "Pro buyers", "rule": {
        "performed": "purchase", "within_days": 2}}]
    cfg["cohort_destinations"] = [{"name": "crm", "bucket": bucket, "syncs": [
        {"cohort": "pro-buyers", "cadence": "once"}]}]
    # a sync at T waits for the stage to pass T, which an idle stage does at the clock minus the grace: each
    # requested sync then runs within about a minute (its stamp, the minute rounded up), not two
    cfg["cohort_state"] = {"grace_s": 1}
    path.write_text(yaml.safe_dump(cfg))
    settings = load_settings(path)
    ports = [free_port(), free_port()]
    procs = [worker(http_port=port, env={"STREAM_WORKER__DATA_DIR": str(tmp_path / f"data-{i}")})
             for i, port in enumerate(ports)]
    for port in ports:
        wait_until(lambda port=port: _get(f"http://127.0.0.1:{port}/readyz")[0] == 200, 90, f"worker :{port} ready")
    s3 = boto3.client("s3", endpoint_url=settings.s3.endpoint_url)
    (first,) = wait_until(lambda: sorted(cohort_objects(s3, bucket, REC + "done/")), 90, "the once sync")
    got = wait_until(lambda: one_holder(ports), 60,
                     "one worker holding the sync duty")
    holder, other = got.index(1.0), got.index(0.0)
    name = f"{socket.gethostname()} (pid {procs[holder].pid})"
    wait_until(lambda: any(r == {**r, "kind": "holder", "worker": name} for r in requests_on_topic(settings)), 60,
               "the holder to say so on the requests topic")

    status, body = sync_now(ports[other])
    assert status == 202, body
    request = body["request"]
    assert (body["runs_on"], body["waiting_for_worker"]) == (name, False)
    ((answer),) = body["syncs"]
    first_ms = orjson.loads(s3.get_object(Bucket=bucket, Key=REC + "latest.json")["Body"].read())["scheduled_ms"]
    assert (answer["state"], answer["latest_completed_ms"]) == ("queued", first_ms)
    assert answer["scheduled_ms"] >= first_ms + 60_000

    done = wait_until(lambda: done_keys(s3, bucket, 2), 150, "the requested sync")
    assert done[0] == first
    record = orjson.loads(s3.get_object(Bucket=bucket, Key=done[1])["Body"].read())
    assert (record["requests"], record["scheduled_ms"] >= answer["scheduled_ms"]) == ([request], True)
    # its three files, each written once, by the holder
    files = sorted(k for k in cohort_objects(s3, bucket, "") if not k.startswith("_stream/"))
    assert len(files) == 6 and sorted(record["keys"].values()) == [k for k in files if record["stamp"] in k]
    logs = [(tmp_path / f"worker-{i}.log").read_text() for i in range(2)]
    writes = [[line.split("wrote s3://", 1)[1].split(" ")[0] for line in log.splitlines()
               if "crm: wrote s3://" in line] for log in logs]
    assert sorted(writes[0] + writes[1]) == sorted(f"{bucket}/{k}" for k in files)
    assert all(f"{bucket}/{k}" in writes[holder] for k in record["keys"].values())
    ran = wait_until(lambda: [r for r in requests_on_topic(settings) if r["kind"] == "done"], 30, "the done record")
    assert [(r["id"], r["outcome"], r["syncs"], r["worker"]) for r in ran] == [
        (request, "run", [{"destination": "crm", "routing_key": "", "state": "complete"}], name)]
    status, doc = _get_json(ports[other], "/admin/cohorts/pro-buyers")
    assert (status, doc["requested"]) == (200, [])

    # the holder stops: the other takes the duty, reads the topic, and does not run the request again; a request
    # it is then asked runs alone (were the first run again, the same sync would list both)
    procs[holder].terminate()
    procs[holder].wait(60)
    wait_until(lambda: duty(ports[other]) == 1.0, 60, "the other worker to take the sync duty")
    again = f"{socket.gethostname()} (pid {procs[other].pid})"
    wait_until(lambda: any(r == {**r, "kind": "holder", "worker": again} for r in requests_on_topic(settings)), 60,
               "the new holder to say so on the requests topic")
    status, body = sync_now(ports[other])
    assert (status, body["runs_on"]) == (202, again)
    done = wait_until(lambda: done_keys(s3, bucket, 3), 150, "the second requested sync")
    third = orjson.loads(s3.get_object(Bucket=bucket, Key=done[2])["Body"].read())
    assert third["requests"] == [body["request"]]
    assert len([k for k in cohort_objects(s3, bucket, "") if not k.startswith("_stream/")]) == 9
    assert cohort_objects(s3, bucket, REC + "failed/") == {}


def done_keys(s3, bucket, n):
    """The completion records' keys, once there are ``n`` (else None)."""
    keys = sorted(cohort_objects(s3, bucket, REC + "done/"))
    return keys if len(keys) == n else None


def _get_json(port, path):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())
