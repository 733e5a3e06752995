"""`stream cohorts upload | memberships | download`: the admin service's cohort actions from the command line."""

import orjson
import pytest
import yaml
from click.testing import CliRunner

from stream.admin import service
from stream.cli import main
from stream.clock import FakeClock
from stream.cohorts import requests
from stream.cohorts import sync as sync_module
from stream.cohorts.requests import MemoryRequestLog, answer_lines, holder_record
from stream.s3.storage import MemoryStorage
from tests.unit.admin.test_cohorts_admin import BUCKET, T3, settings, sync

CONFIG = {"projects": [{"id": 424242}], "cohorts": [
    {"id": "pro-buyers", "project": 424242, "name": "Pro buyers",
     "rule": {"and": [{"performed": "purchase", "within_days": 1},
                      {"user_property": "plan", "op": "=", "value": "pro"}]}},
    {"id": "vips", "project": 424242, "name": "VIPs", "static": True},
    {"id": "idle", "project": 424242, "name": "Idle", "static": True}],
    "cohort_destinations": [{"name": "crm", "bucket": BUCKET, "encryption": {"type": "none"}, "syncs": [
        {"cohort": "pro-buyers", "cadence": "daily", "properties": ["plan"]}, {"cohort": "vips", "cadence": "daily"}]}]}


@pytest.fixture
def cli(tmp_path, monkeypatch):
    storage = MemoryStorage()
    monkeypatch.setattr(sync_module, "_s3_storage", lambda s, d: storage)
    f = tmp_path / "stream.yaml"
    f.write_text(yaml.safe_dump(CONFIG))

    def run(*args, stdin=None):
        r = CliRunner().invoke(main, ["cohorts", *args, "-c", str(f)], input=stdin)
        return r.exit_code, r.output
    return run, storage


def test_upload_a_static_cohorts_list_from_stdin(cli):
    run, storage = cli
    assert run("upload", "vips", "-", stdin="userID\nu-40\nu-20\n") == (0, (
        f"vips: 2 user ids stored\n  s3://{BUCKET}/_stream/cohorts/crm/static/424242_vips.json\n"))
    assert orjson.loads(storage.objects[(BUCKET, "_stream/cohorts/crm/static/424242_vips.json")])["user_ids"] == [
        "u-20", "u-40"]
    code, out = run("upload", "pro-buyers", "-", stdin="u-1\n")
    assert code == 1 and "Error: cohort pro-buyers is defined by a rule, not a list" in out
    code, out = run("upload", "vips", "-", stdin="a\n" + "x" * 1025 + "\n")
    assert code == 1 and "Error: user id 2 is 1025 characters long: at most 1024" in out


def test_memberships_and_download(cli, tmp_path):
    run, storage = cli
    sync(settings(), storage, "pro-buyers", T3 + 60_000)
    key = "cohorts/424242_pro-buyers_2024-03-12T00:00_existing.csv"
    assert run("memberships", "--user-id", "u-40") == (0, (
        f"pro-buyers               crm             2024-03-12T00:00  amplitudeID 40  userID u-40  s3://{BUCKET}/{key}\n"
        "no completed sync yet: vips -> crm\n"))
    assert run("memberships", "--user-id", "u-10")[1] == ("in no cohort's latest completed sync\n"
                                                          "no completed sync yet: vips -> crm\n")
    code, out = run("memberships", "--json", "--amplitude-id", "30")
    assert code == 0 and [m["user_id"] for m in orjson.loads(out)["memberships"]] == ['u,30 "jr"']
    code, out = run("memberships")
    assert code == 1 and "Error: give user_id or amplitude_id (one of them): the user to look up" in out
    out_file = tmp_path / "existing.csv"
    assert run("download", "pro-buyers", key, "-o", str(out_file)) == (0, "")
    assert out_file.read_bytes() == b'amplitudeID,userID,plan\r\n30,"u,30 ""jr""",pro\r\n40,u-40,pro\r\n'

    code, out = run("download", "pro-buyers", "_stream/cohorts/crm/424242_pro-buyers/latest.json")
    assert code == 1 and "is not a file of a completed sync of cohort pro-buyers" in out


def test_sync_now_answer_lines():
    doc = {"request": "sr-20240312T103000-a1b2c3", "cohort": "pro-buyers", "destination": None, "syncs": [
        {"destination": "crm", "routing_key": "", "cadence": "daily", "state": "complete",
         "scheduled_ms": None, "latest_completed_ms": T3},
        {"destination": "ads", "routing_key": "eu", "cadence": "once", "state": "queued",
         "scheduled_ms": T3 + 37_800_000, "latest_completed_ms": None}],
        "runs_on": None, "waiting_for_worker": True, "note": "queued on t, waiting for a worker"}
    assert answer_lines(doc) == [
        "request sr-20240312T103000-a1b2c3: sync now of pro-buyers",
        "  crm              daily  complete: its current time is synced already, nothing to run (latest completed: "
        "2024-03-12T00:00)",
        "  ads (eu)         once   queued: a sync stamped 2024-03-12T10:30, counting every event accepted before "
        "then (latest completed: none)",
        "queued on t, waiting for a worker"]
    assert answer_lines({**doc, "destination": "crm", "syncs": []})[0] == (
        "request sr-20240312T103000-a1b2c3: sync now of pro-buyers to crm")


def test_sync_now_records_the_request_on_the_topic_for_the_duty_holder(cli, monkeypatch):
    """`stream cohorts sync-now`: the request of POST /admin/cohorts/ID/syncs recorded on the requests log, its id
    and what each sync will do printed, and whether a worker holding the sync duty was seen."""
    run, storage = cli
    sync(settings(), storage, "pro-buyers", T3 + 60_000)
    log = MemoryRequestLog()
    monkeypatch.setattr(requests, "KafkaRequestLog", lambda s: log)
    clock = FakeClock(T3 + 3_600_000 + 90_000)                      # 2024-03-12 01:01:30, the day synced
    monkeypatch.setattr(service, "SystemClock", lambda: clock)
    monkeypatch.setattr(requests.secrets, "token_hex", lambda n: "a1b2c3")
    code, out = run("sync-now", "pro-buyers")
    assert (code, out) == (0, (
        "request sr-20240312T010130-a1b2c3: sync now of pro-buyers\n"
        "  crm              daily  complete: its current time is synced already, nothing to run (latest completed: "
        "2024-03-12T00:00)\n"
        "queued on cohorts.sync-requests, waiting for a worker running the cohorts stage: none has held the sync duty "
        "in the last 3 minutes. A worker with cohorts in worker.stages runs it once it starts, unless the request is "
        "more than 24 hours old by then\n"))
    assert [orjson.loads(v) for _, v in log.records] == [{
        "kind": "request", "id": "sr-20240312T010130-a1b2c3", "cohort": "pro-buyers", "destination": None,
        "syncs": [{"destination": "crm", "routing_key": ""}], "at": T3 + 3_690_000, "by": "cli"}]

    # a holder seen on the topic; vips never synced: queued, stamped with today
    log.records.append(holder_record("host-a (pid 7)", clock.now_ms() - 60_000))
    code, out = run("sync-now", "vips", "--destination", "crm")
    assert (code, out) == (0, (
        "request sr-20240312T010130-a1b2c3: sync now of vips to crm\n"
        "  crm              daily  queued: the sync of its current time, stamped 2024-03-12T00:00 (events accepted "
        "since count in the next) (latest completed: none)\n"
        "queued on cohorts.sync-requests: the worker holding the sync duty (host-a (pid 7)) runs it in turn with its "
        "scheduled syncs\n"))
    assert orjson.loads(log.records[-1][1])["destination"] == "crm"

    assert run("sync-now", "nope") == (1, "Error: no cohort 'nope' in the settings: nothing was asked (stream "
                                          "cohorts list shows them)\n")
    code, out = run("sync-now", "vips", "-d", "nowhere")
    assert (code, out) == (1, "Error: no cohort destination 'nowhere' (cohort_destinations)\n")
    assert run("sync-now", "idle") == (1, "Error: cohort 'idle' is synced to no cohort destination "
                                          "(cohort_destinations[].syncs)\n")
    assert len(log.records) == 3
