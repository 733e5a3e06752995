"""Backfills against the real broker and S3: hours already exported, partly exported and never exported are
rebuilt to hold every event once, while the live export of the same destination runs."""

import asyncio
import gzip
import os
import subprocess
import sys

import boto3
import orjson
import pytest
import yaml

from stream.export.layout import number_of, parse_number
from stream.export.ledger import LedgerRecord
from stream.kafka import ensure_topics, read_all
from stream.settings import load_settings
from tests.integration.conftest import wait_until
from tests.integration.test_crash import EVENTS, produce

pytestmark = pytest.mark.integration

HOURS = ["2024-03-09_7", "2024-03-09_8", "2024-03-09_9"]


def objects(settings, bucket, prefix):
    """key -> body of every object under ``prefix`` (markers included)."""
    s3 = boto3.client("s3", endpoint_url=settings.s3.endpoint_url)
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            out[o["Key"]] = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
    return out


def rows(objs):
    return [orjson.loads(x) for k, body in objs.items() if k.endswith(".gz") for x in gzip.decompress(body)
            .splitlines()]


def by_hour_and_partition(objs):
    """(hour prefix, partition) -> the decoded lines of its objects in offset order."""
    out = {}
    for k in sorted((k for k in objs if k.endswith(".json.gz")), key=lambda k: parse_number(number_of(k))[1]):
        out.setdefault((k.split("#")[0], parse_number(number_of(k))[0]), []).extend(
            orjson.loads(x) for x in gzip.decompress(objs[k]).splitlines())
    return out


def ledger(settings):
    return [LedgerRecord.decode(m.value) for m in asyncio.run(read_all(settings, settings.topics.name(
        "export_ledger")))]


def marked(settings, name="main"):
    keys = {r.key for r in ledger(settings) if r.kind == "marker" and r.destination == name}
    return all(f"amp/424242/424242_{h}_complete" in keys for h in HOURS)


def stream(*args, path, env=None, check=True):
    out = subprocess.run([sys.executable, "-m", "stream", *args, "-c", str(path)], capture_output=True, text=True,
                         timeout=240, env={**os.environ, **(env or {})})
    assert not check or out.returncode == 0, f"stream {' '.join(args)}: {out.returncode}\n{out.stdout}\n{out.stderr}"
    return out


def test_a_backfill_rebuilds_complete_partial_and_new_destinations_exactly_while_live_export_runs(
        deployment, worker):
    settings, path = deployment
    cfg = yaml.safe_load(path.read_text())
    late_bucket = settings.destinations[0].bucket + "-late"
    boto3.client("s3", endpoint_url=settings.s3.endpoint_url).create_bucket(Bucket=late_bucket)
    # a destination created later, in a new bucket: off until it is backfilled (the migration case)
    cfg["destinations"].append({**cfg["destinations"][0], "name": "late", "bucket": late_bucket, "enabled": False})
    path.write_text(yaml.safe_dump(cfg))
    settings = load_settings(path)
    bucket = settings.destinations[0].bucket
    asyncio.run(ensure_topics(settings))
    worker()
    asyncio.run(produce(settings))
    wait_until(lambda: marked(settings), 120, "every hour exported and marked")
    # the events' hours (the live export goes on marking the hours since, as the clock seals them)
    live = {k: v for k, v in objects(settings, bucket, "amp/").items() if "_2024-03-09_" in k}
    expected = sorted(ev["insert_id"] for ev, _ in EVENTS)
    assert sorted(r["$insert_id"] for r in rows(live)) == expected

    # partly exported: an object of hour 8 lost; and a stray copy of an hour-9 object under another number
    s3 = boto3.client("s3", endpoint_url=settings.s3.endpoint_url)
    lost = sorted(k for k in live if "_2024-03-09_8#" in k)[0]
    s3.delete_object(Bucket=bucket, Key=lost)
    stray = sorted(k for k in live if "_2024-03-09_9#" in k)[0].split("#")[0] + "#1000.json.gz"  # offset 1, p0
    s3.put_object(Bucket=bucket, Key=stray, Body=live[sorted(k for k in live if "_2024-03-09_9#" in k)[0]])

    out = stream("exports", "backfill", "main", "--from", "2024-03-09T07", "--to", "2024-03-09T10", "--json",
                 path=path)
    doc = orjson.loads(out.stdout)
    assert (doc["state"], doc["hours_done"], doc["hours_total"]) == ("done", 3, 3)
    after = {k: v for k, v in objects(settings, bucket, "amp/").items() if "_2024-03-09_" in k}
    assert after == live                       # byte for byte where live was complete; the lost one is back
    assert sorted(r["$insert_id"] for r in rows(after)) == expected
    assert len({r["uuid"] for r in rows(after)}) == len(expected)
    assert stray not in after

    # the new destination, off and never exported: the same rows, in its own bucket
    out = stream("exports", "backfill", "late", "--from", "2024-03-09T07", "--to", "2024-03-09T10", "--json",
                 path=path)
    assert orjson.loads(out.stdout)["state"] == "done"
    moved = objects(settings, late_bucket, "amp/")
    # the same rows of each (hour, partition), in offset order; the objects are cut where this backfill cut them
    # (the live export of main may have cut an hour's run of offsets in two, on its age limit)
    assert by_hour_and_partition(moved) == by_hour_and_partition({k: v for k, v in after.items()
                                                                   if "_2024-03-09_" in k})
    assert sorted(k for k in moved if k.endswith("_complete")) == [f"amp/424242/424242_{h}_complete" for h in HOURS]
    history = orjson.loads(stream("exports", "history", "main", "--hours", "1000", "--json", path=path).stdout)
    jobs = {(h["hour"], j["job"][:3], j["status"]) for e in history["exporters"] if e["exports"] == "events"
            for h in e["hours"] if h["hour"].startswith("2024-03-09T0") for j in h["jobs"]}
    assert {("2024-03-09T08:00:00Z", "bf-", "done"), ("2024-03-09T08:00:00Z", "liv", "complete")} <= jobs
    acks = [r for r in ledger(settings) if r.kind == "claim_ack" and r.destination == "main"]
    assert acks and all(orjson.loads(r.detail)["job"] == doc["job"] for r in acks)   # the live exporter agreed


def test_stragglers_that_arrive_while_a_backfill_rebuilds_their_hours_land_exactly_once(deployment, worker):
    """Live export and a backfill of the same hours at once: events of the rebuilt hours keep arriving (and
    others after them); whether the backfill or a live straggler object writes each one, it is there once. Which
    interleaving happens here depends on timing: those that need each of the claim's holds on the live export are
    played step by step in tests/unit/export/test_backfill_race.py."""
    import threading
    settings, path = deployment
    asyncio.run(ensure_topics(settings))
    worker()
    asyncio.run(produce(settings))
    wait_until(lambda: marked(settings), 120, "every hour exported and marked")
    late = [({"event_type": "Late", "device_id": f"device-{i % 7:04d}", "insert_id": f"late-{i}"},
             EVENTS[0][1] + (i % 3) * 3_600_000 + 50_000 + i) for i in range(120)]

    def trickle():
        for i in range(0, len(late), 10):
            asyncio.run(produce(settings, late[i:i + 10]))
    t = threading.Thread(target=trickle)
    t.start()
    out = stream("exports", "backfill", "main", "--from", "2024-03-09T07", "--to", "2024-03-09T10", "--json",
                 path=path)
    t.join()
    assert orjson.loads(out.stdout)["state"] == "done"
    expected = sorted([ev["insert_id"] for ev, _ in EVENTS] + [ev["insert_id"] for ev, _ in late])
    bucket = settings.destinations[0].bucket

    def landed():
        return sorted(r["$insert_id"] for r in rows(objects(settings, bucket, "amp/424242/424242_2024")))
    wait_until(lambda: len(landed()) >= len(expected), 120, "every late event on S3")
    assert landed() == expected


def test_a_backfill_of_hours_nobody_holds_is_refused_before_anything_is_written(deployment):
    settings, path = deployment
    asyncio.run(ensure_topics(settings))
    out = stream("exports", "backfill", "main", "--from", "2024-03-09T07", "--to", "2024-03-09T09", "--source",
                 "archive", path=path, check=False)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == (
        "Error: the archive destination does not hold hour 2024-03-09T07 (2 hour(s) of the range are not held); no "
        "hour is available from it; nothing was written")
    assert [r for r in ledger(settings) if r.kind != "job"] == []
    out = stream("exports", "backfill", "main", "--from", "2024-03-09T09", "--to", "2024-03-09T07", path=path,
                 check=False)
    assert out.stderr.strip().splitlines()[-1] == "Error: --to (2024-03-09T07) must come after --from (2024-03-09T09)"


def test_hours_the_topic_no_longer_holds_are_rebuilt_from_the_archive_destination(deployment, worker):
    """The archive destination (the system of record, Amplitude layout) holds the hours; a Segment-layout
    destination that never exported them is filled from it. (The local broker cannot delete records, so the
    archive is asked for explicitly here; which source an hour needs is decided by stream.export.backfill.plan,
    tested on its own.)"""
    settings, path = deployment
    cfg = yaml.safe_load(path.read_text())
    main = cfg["destinations"][0]
    cfg["destinations"] = [{**main, "archive": True},
                           {**main, "name": "seg", "layout": "segment", "prefix": "seg/", "enabled": False}]
    path.write_text(yaml.safe_dump(cfg))
    settings = load_settings(path)
    asyncio.run(ensure_topics(settings))
    worker()
    asyncio.run(produce(settings))
    wait_until(lambda: marked(settings), 120, "every hour in the archive")
    out = stream("exports", "backfill", "seg", "--from", "2024-03-09T07", "--to", "2024-03-09T10", "--source",
                 "archive", "--json", path=path)
    doc = orjson.loads(out.stdout)
    assert (doc["state"], doc["source"], doc["hours_done"]) == ("done", "archive", 3)
    bucket = settings.destinations[0].bucket
    archived = objects(settings, bucket, "amp/424242/424242_2024")
    seg = objects(settings, bucket, "seg/segment-logs/")
    messages = rows(seg)
    assert sorted(m["messageId"] for m in messages) == sorted(ev["insert_id"] for ev, _ in EVENTS)
    assert {m["type"] for m in messages} == {"track"}
    # one Segment object per archived object, numbered as it is
    numbers = sorted(k.rsplit("#", 1)[1][:-8] for k in archived if "#" in k)
    assert sorted(k.rsplit("-", 1)[1][:-3] for k in seg) == numbers


@pytest.mark.parametrize("point", ["backfill.claimed", "backfill.uploaded:2", "backfill.deleted"])
def test_a_backfill_killed_mid_way_and_run_again_converges(deployment, worker, point):
    settings, path = deployment
    asyncio.run(ensure_topics(settings))
    worker()
    asyncio.run(produce(settings))
    wait_until(lambda: marked(settings), 120, "every hour exported and marked")
    bucket = settings.destinations[0].bucket
    live = objects(settings, bucket, "amp/424242/424242_2024")
    s3 = boto3.client("s3", endpoint_url=settings.s3.endpoint_url)
    # something for the backfill to delete: a stray copy of an object under another number
    first = sorted(k for k in live if "#" in k)[0]
    s3.put_object(Bucket=bucket, Key=first.split("#")[0] + "#1000.json.gz", Body=live[first])
    args = ["exports", "backfill", "main", "--from", "2024-03-09T07", "--to", "2024-03-09T10"]
    killed = stream(*args, path=path, env={"STREAM_CRASH_AT": point}, check=False)
    assert killed.returncode == -9, killed.stderr
    again = stream(*args, "--json", path=path)
    assert orjson.loads(again.stdout)["state"] == "done"
    assert objects(settings, bucket, "amp/424242/424242_2024") == live
