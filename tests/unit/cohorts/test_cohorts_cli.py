"""`stream cohorts upload | memberships | download`: the admin service's cohort actions from the command line."""

import orjson
import pytest
import yaml
from click.testing import CliRunner

from stream.cli import main
from stream.cohorts import sync as sync_module
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
