"""The cohorts' admin actions on moto S3 (no mock storage): a static cohort's list stored and read back, synced as
three files, the cohort's history and counts read from its records, a user's memberships and a file's download,
and the cohort destination's policy."""

import asyncio

import boto3
import orjson
import pytest

from stream.admin.service import Admin, AdminError
from stream.clock import FakeClock
from stream.cohorts.sync import jobs_of, run_syncs
from stream.settings import load_settings
from tests.unit.cohorts.test_sync import HISTORY, MERGES, T3, Source

pytestmark = pytest.mark.integration
NOW = 1_710_300_000_000


def test_a_static_cohort_on_s3_from_upload_to_files_history_memberships_and_download(deployment):
    settings, path = deployment
    bucket = settings.destinations[0].bucket
    s = load_settings(path, cohorts=[
        {"id": "vips", "project": 424242, "name": "VIPs", "static": True},
        {"id": "pro-buyers", "project": 424242, "name": "Pro buyers", "rule": {"performed": "purchase",
                                                                                "within_days": 1}}],
        cohort_destinations=[{"name": "crm", "bucket": bucket, "syncs": [
            {"cohort": "vips", "cadence": "daily"}, {"cohort": "pro-buyers", "cadence": "daily"}]}])
    admin = Admin(s, FakeClock(NOW))

    async def go():
        before = await admin.cohort("vips")
        up = await admin.upload_members("vips", ["u-40", "u-20", "nobody"], by="test")
        results = await run_syncs(s, jobs_of(s, "vips"), T3 + 60_000, source=Source(HISTORY, MERGES),
                                  clock_ms=lambda: NOW)
        doc = await admin.cohort("vips")
        found = await admin.memberships(user_id="u-40")
        first, rest = await admin.cohort_file("vips", doc["history"][0]["keys"]["existing"])
        body = first + b"".join([c async for c in rest])
        try:
            await admin.cohort_file("vips", "_stream/cohorts/crm/static/424242_vips.json")
        except AdminError as exc:
            refused = (exc.status, str(exc))
        return before, up, results, doc, found, body, refused

    before, up, (r,), doc, found, body, refused = asyncio.run(go())
    key = "_stream/cohorts/crm/static/424242_vips.json"
    assert before["uploaded"] is None and before["history"] == []
    assert up == {"cohort": "vips", "project": 424242, "members": 3, "uploaded_at_ms": NOW,
                  "stored": [f"s3://{bucket}/{key}"]}
    s3 = boto3.client("s3", endpoint_url=s.s3.endpoint_url)
    stored = s3.get_object(Bucket=bucket, Key=key)
    assert orjson.loads(stored["Body"].read())["user_ids"] == ["nobody", "u-20", "u-40"]
    assert stored["ServerSideEncryption"] == "AES256"            # the destination's encryption (sse-s3)
    assert (r.error, r.members, r.entering, r.exiting) == (None, 2, 2, 0)
    assert doc["uploaded"] == {"members": 3, "uploaded_at_ms": NOW, "by": "test"}
    assert doc["counts"] == [{"destination": "crm", "routing_key": "", "points": [
        {"stamp": "2024-03-12T00:00", "scheduled_ms": T3, "members": 2, "entering": 2, "exiting": 0}]}]
    assert body == b"amplitudeID,userID\r\n20,u-20\r\n40,u-40\r\n"
    assert found["memberships"] == [{
        "cohort": "vips", "destination": "crm", "routing_key": "", "name": "VIPs", "project": 424242,
        "stamp": "2024-03-12T00:00", "amplitude_id": 40, "user_id": "u-40", "bucket": bucket,
        "key": "cohorts/424242_vips_2024-03-12T00:00_existing.csv"}]
    assert found["checked"] == [
        {"cohort": "vips", "destination": "crm", "routing_key": "", "stamp": "2024-03-12T00:00"},
        {"cohort": "pro-buyers", "destination": "crm", "routing_key": "", "stamp": None}]
    assert refused == (404, f"{key!r} is not a file of a completed sync of cohort vips: the cohort's history "
                            "lists its files")
    policy = admin.policy("crm")
    assert policy["prefixes"] == ["cohorts/", "_stream/cohorts/crm/"]
    assert [st["Action"] for st in policy["role_policy"]["Statement"]] == [
        ["s3:PutObject", "s3:AbortMultipartUpload"], "s3:GetObject", "s3:ListBucket"]
