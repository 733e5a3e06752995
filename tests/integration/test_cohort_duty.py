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

    # exactly one of the two answers "sync now": the one assigned partition 0 (the other says why not)
    def answers():
        got = [sync_now(port) for port in ports]
        return got if sorted(status for status, _ in got) == [202, 409] else None
    got = wait_until(answers, 60, "one worker holding the sync duty")
    holder = next(i for i, (status, _) in enumerate(got) if status == 202)
    other = 1 - holder
    assert got[other][1]["error"] == (
        "this worker does not run the cohort syncs: it does not run the cohorts stage (worker.stages), has not started "
        f"it yet, or is not the worker assigned partition 0 of {topic}, the one that runs them (its log says so): ask "
        "that worker, or run stream cohorts sync pro-buyers")
    assert [duty(ports[holder]), duty(ports[other])] == [1.0, 0.0]
    (answer,) = got[holder][1]["syncs"]
    assert (answer["destination"], answer["state"]) == ("crm", "complete")    # the hour is synced already

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

    # the holder stops (SIGTERM): the rebalance gives partition 0 to the other, which answers "sync now" from then
    procs[holder].terminate()
    procs[holder].wait(60)
    status, body = wait_until(lambda: (r := sync_now(ports[other]))[0] == 202 and r, 60,
                              "the other worker to take the sync duty")
    assert [(s["destination"], s["state"]) for s in body["syncs"]] == [("crm", "complete")]
    assert duty(ports[other]) == 1.0
    log = (tmp_path / f"worker-{other}.log").read_text()
    assert f"assigned partition 0 of {topic}: it runs the 1 cohort sync(s)" in log
    # it read the completed sync and wrote nothing again
    assert sorted(cohort_objects(s3, bucket, REC + "done/")) == done
    logs = [(tmp_path / f"worker-{i}.log").read_text() for i in range(2)]
    assert sorted(line.split("wrote s3://", 1)[1].split(" ")[0] for log in logs for line in log.splitlines()
                  if "crm: wrote s3://" in line) == sorted(writes)
