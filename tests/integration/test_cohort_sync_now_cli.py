"""`stream cohorts sync-now` on the real broker and moto S3: the request is appended to the sync requests topic as
the admin API's is, its answer printed, with or without a worker holding the sync duty seen on the topic."""

import asyncio
import re
import time

import orjson
import pytest
import yaml
from click.testing import CliRunner

from stream.cli import main
from stream.cohorts.requests import KafkaRequestLog, holder_record
from stream.kafka import ensure_topics, read_all
from stream.settings import load_settings

pytestmark = pytest.mark.integration


def on_topic(settings):
    topic = settings.topics.name("cohort_sync_requests")
    return [orjson.loads(m.value) for m in asyncio.run(read_all(settings, topic))]


def test_sync_now_from_the_cli_appends_the_request_the_duty_holder_runs(deployment):
    _, path = deployment
    cfg = yaml.safe_load(path.read_text())
    bucket = cfg["destinations"][0]["bucket"]
    cfg["cohorts"] = [{"id": "pro-buyers", "project": 424242, "name": "Pro buyers", "rule": {
        "performed": "purchase", "within_days": 2}}]
    cfg["cohort_destinations"] = [{"name": "crm", "bucket": bucket, "syncs": [
        {"cohort": "pro-buyers", "cadence": "once"}]}]
    path.write_text(yaml.safe_dump(cfg))
    settings = load_settings(path)
    asyncio.run(ensure_topics(settings))
    topic = settings.topics.name("cohort_sync_requests")

    def run(*args):
        r = CliRunner().invoke(main, ["cohorts", *args, "-c", str(path)])
        return r.exit_code, r.output

    before = int(time.time() * 1000)
    code, out = run("sync-now", "pro-buyers")
    after = int(time.time() * 1000)
    assert code == 0, out
    first, sync_line, note = out.splitlines()
    request = re.fullmatch(r"request (sr-\d{8}T\d{6}-[0-9a-f]{6}): sync now of pro-buyers", first).group(1)
    stamp = re.fullmatch(r"  crm              once   queued: a sync stamped (\S+), counting every event accepted "
                         r"before then \(latest completed: none\)", sync_line).group(1)
    assert note == (f"queued on {topic}, waiting for a worker running the cohorts stage: none has held the sync duty "
                    "in the last 3 minutes. A worker with cohorts in worker.stages runs it once it starts, unless the "
                    "request is more than 24 hours old by then")
    (record,) = on_topic(settings)
    assert record == {"kind": "request", "id": request, "cohort": "pro-buyers", "destination": None,
                      "syncs": [{"destination": "crm", "routing_key": ""}], "at": record["at"], "by": "cli"}
    assert before <= record["at"] <= after
    # stamped at the request's minute rounded up: it counts every event accepted before the request
    assert stamp == time.strftime("%Y-%m-%dT%H:%M", time.gmtime(-(-record["at"] // 60_000) * 60))

    # a duty holder said so on the topic: the answer names it
    asyncio.run(KafkaRequestLog(settings).append(holder_record("worker-0 (pid 7)", int(time.time() * 1000))))
    code, out = run("sync-now", "pro-buyers", "--destination", "crm")
    assert code == 0, out
    assert out.splitlines()[2] == (f"queued on {topic}: the worker holding the sync duty (worker-0 (pid 7)) runs it "
                                   "in turn with its scheduled syncs")
    assert [(r["kind"], r.get("destination")) for r in on_topic(settings)] == [
        ("request", None), ("holder", None), ("request", "crm")]

    # an unknown cohort: nothing appended
    assert run("sync-now", "nope") == (1, "Error: no cohort 'nope' in the settings: nothing was asked (stream "
                                          "cohorts list shows them)\n")
    assert len(on_topic(settings)) == 3
