"""Mirror mutations against the real broker and S3: exported hours rewritten exactly once by UPDATEs and DELETEs
(untouched hours byte-identical), unknown mutations dead-lettered, new INSERTs exported as events, and the same
mutations applied twice leaving the same bytes."""

import asyncio
import gzip
import subprocess
import sys
import time
import urllib.parse

import boto3
import orjson
import pytest
import yaml
from aiokafka import AIOKafkaProducer

from stream.events import deadletter
from stream.events.normalize import Rules
from stream.events.partitioning import partition_of
from stream.export import mirror_index
from stream.export.mirror import updated
from stream.imports import mutations as records
from stream.kafka import ensure_topics, read_all
from stream.settings import load_settings
from tests.integration.conftest import ADMIN_TOKEN, wait_until
from tests.integration.test_backfill import marked
from tests.integration.test_crash import produce

pytestmark = pytest.mark.integration

FILE = "s3://src-bucket/mirror/2024-03-10.json"


def mirror_deployment(path):
    cfg = yaml.safe_load(path.read_text())
    cfg["destinations"][0]["archive"] = True
    cfg["mirror"] = {"index_days": 3000}      # the sample events are of March 2024
    cfg["sources"] = [{"name": "corrections", "project": 424242, "bucket": "src-bucket", "prefix": "mirror/",
                       "strategy": "mirror", "scan": {"enabled": False},
                       "converter": {"converterConfig": {"convertToAmplitudeFunc": {
                           "event_type": "event_type", "user_id": "user_id", "device_id": "device_id",
                           "insert_id": "insert_id", "$mutation_type": "op"}}}}]
    path.write_text(yaml.safe_dump(cfg))
    return load_settings(path)


def objects(settings):
    """key -> body of the export's objects (one a rebuild deletes between the listing and its read left out)."""
    s3 = boto3.client("s3", endpoint_url=settings.s3.endpoint_url)
    bucket = settings.destinations[0].bucket
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="amp/"):
        for o in page.get("Contents", []):
            try:
                out[o["Key"]] = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
            except s3.exceptions.NoSuchKey:
                continue
    return out


def rows_by_hour(objs):
    out = {}
    for k, body in sorted(objs.items()):
        if k.endswith(".json.gz"):
            out.setdefault(k.split("#")[0].split("/")[-1].split("_", 1)[1], []).extend(
                orjson.loads(x) for x in gzip.decompress(body).splitlines())
    return {h: sorted(rs, key=lambda r: r["$insert_id"]) for h, rs in out.items()}


def mutation(row, op, n, server_ms=1_710_000_000_000):
    m = records.mutation_of({"$mutation_type": op, **row}, 424242, (1_710_000_000_000, FILE, n), f"derived-{n}",
                            server_ms, f"{FILE}#{n}", Rules(), 1_710_000_000_000)
    assert not hasattr(m, "reason"), m
    return m


async def send(settings, muts, kind="many"):
    """The mutations to events.mutations as the importer writes them (``many``: a record per partition,
    ``records.grouped``), as an earlier version wrote them (``one``: a record each), or ``mixed``: the first half in
    records of many, the rest in records of one after them (an importer of each version on one topic)."""
    one = [records.encode(424242, m) for m in muts]
    half = len(one) // 2 if kind == "mixed" else len(one) if kind == "many" else 0
    sent = [(key, value) for _, key, value in records.grouped(one[:half], settings.topics.partitions)] + one[half:]
    assert kind != "many" or all(records.is_many(v) for _, v in sent)
    p = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    await p.start()
    try:
        for key, value in sent:     # the default partitioner places each by its key, as the importer's producer
            await p.send(settings.topics.name("mutations"), value, key=key)
        await p.flush()
    finally:
        await p.stop()


def exported(settings, worker, **env):
    """Start a worker, produce the sample events, wait for their three hours: (objects, rows by hour)."""
    asyncio.run(ensure_topics(settings))
    worker(env=env)
    asyncio.run(produce(settings))
    wait_until(lambda: marked(settings), 120, "every hour exported and marked")
    before = objects(settings)
    old = rows_by_hour(before)
    assert sorted(old) == ["2024-03-09_7", "2024-03-09_8", "2024-03-09_9"]
    return before, old


def corrections():
    """hour 7: ins-5 updated; hour 8: ins-25 deleted; an UPDATE of nothing; a new event."""
    return [mutation({"event_type": "Purchase", "user_id": "user-0001", "device_id": "device-0005",
                      "insert_id": "ins-5"}, "update", 1),
            mutation({"user_id": "user-0001", "insert_id": "ins-25"}, "DELETE", 2),
            mutation({"user_id": "user-0001", "insert_id": "never-sent"}, "delete", 3),
            mutation({"event_type": "Signed Up", "user_id": "user-0009", "device_id": "device-0099",
                      "insert_id": "brand-new"}, "Insert", 4)]


def rewritten(settings):
    now = rows_by_hour(objects(settings))
    h7 = {r["$insert_id"]: r for r in now.get("2024-03-09_7", [])}
    return "ins-25" not in {r["$insert_id"] for r in now.get("2024-03-09_8", [])} and \
        h7.get("ins-5", {}).get("event_type") == "Purchase" and \
        any(r["$insert_id"] == "brand-new" for rs in now.values() for r in rs) and now


def check(settings, before, old, muts):
    """The hours as the model says once the corrections are applied; returns the objects."""
    upd = muts[0]
    after_rows = wait_until(lambda: rewritten(settings), 180, "hours 7 and 8 rewritten and the new event exported")
    after = objects(settings)
    # hour 7: every row as it was, but ins-5 replaced, keeping its identity and hour
    original = {r["$insert_id"]: r for r in old["2024-03-09_7"]}
    expected7 = sorted([updated(original["ins-5"], upd.row) if i == "ins-5" else r for i, r in original.items()],
                       key=lambda r: r["$insert_id"])
    assert after_rows["2024-03-09_7"] == expected7
    got = {r["$insert_id"]: r for r in after_rows["2024-03-09_7"]}["ins-5"]
    assert (got["uuid"], got["amplitude_id"], got["server_upload_time"], got["event_type"], got["user_id"]) == (
        original["ins-5"]["uuid"], original["ins-5"]["amplitude_id"], original["ins-5"]["server_upload_time"],
        "Purchase", "user-0001")
    assert after_rows["2024-03-09_8"] == [r for r in old["2024-03-09_8"] if r["$insert_id"] != "ins-25"]
    # hour 9 untouched, byte for byte; markers rewritten for the rebuilt hours
    assert {k: v for k, v in after.items() if "_2024-03-09_9" in k} == \
        {k: v for k, v in before.items() if "_2024-03-09_9" in k}
    assert {k for k in after if k.endswith("_complete")} >= {f"amp/424242/424242_2024-03-09_{h}_complete"
                                                             for h in (7, 8, 9)}
    # the new event: exported once, in the hour of its import, its user properties not synced
    fresh = [r for rs in after_rows.values() for r in rs if r["$insert_id"] == "brand-new"]
    assert len(fresh) == 1 and fresh[0]["event_type"] == "Signed Up"
    assert fresh[0]["data"]["$skip_user_properties_sync"] is True
    # its hour (the server time the mutation was built with, 2024-03-09T16:00Z) is sealed like any other
    wait_until(lambda: "amp/424242/424242_2024-03-09_16_complete" in objects(settings), 60, "the new event's hour")
    after = objects(settings)
    # every event once
    ids = [r["$insert_id"] for rs in after_rows.values() for r in rs]
    assert len(ids) == len(set(ids)) == 60 - 1 + 1
    # the applied mutations are kept in the archive bucket, out of the export's folder
    s3 = boto3.client("s3", endpoint_url=settings.s3.endpoint_url)
    kept = [o["Key"] for o in s3.list_objects_v2(Bucket=settings.destinations[0].bucket,
                                                  Prefix="_stream/mirror/").get("Contents", [])]
    assert sorted({k.rsplit("/", 2)[1] for k in kept}) == ["2024-03-09_7", "2024-03-09_8"]
    return after


def dead_letters(settings):
    return [deadletter.decode(m.value) for m in asyncio.run(read_all(settings, settings.topics.name("dead_letter")))]


@pytest.mark.parametrize("kind,again", [("many", "many"), ("one", "many"), ("mixed", "one")])
def test_mutations_rewrite_the_hours_holding_their_events_and_nothing_else(deployment, worker, kind, again):
    """Records of many mutations, of one (an earlier version's, still on the topic after an upgrade), or both on one
    topic: the same hours (``check``: exactly the model's); the same mutations sent again, in records of either
    kind: the same bytes."""
    settings = mirror_deployment(deployment[1])
    before, old = exported(settings, worker)
    muts = corrections()
    asyncio.run(send(settings, muts, kind))
    after = check(settings, before, old, muts)
    # the unknown one: a dead letter naming its file and row, once the batch is applied
    wait_until(lambda: dead_letters(settings), 30, "the unknown mutation's dead letter")
    assert [(d["reason"], d["field"], deadletter.source_of(d)) for d in dead_letters(settings)] == [
        ("unknown_insert_id", "insert_id", f"{FILE}#3")]

    # the same mutations again: the same bytes once their hours are rewritten again (the file's records of the
    # second pass, at other offsets, written then)
    first = rewrites(settings)
    assert first >= 1
    asyncio.run(send(settings, muts, again))
    wait_until(lambda: len(dead_letters(settings)) == 2 and rewrites(settings) == 2 * first, 120,
               "the second pass applied (its unknown mutation dead-lettered again, its hours rewritten)")
    assert objects(settings) == after


def rewrites(settings):
    """The mirror-files records whose hours were rewritten (one per file, partition and take)."""
    from stream.imports.mirror_files import FileTake
    from stream.topics import mirror_files_topic
    return sum(1 for r in asyncio.run(read_all(settings, mirror_files_topic(settings))) if FileTake.decode(r.value).hours)


def corrections_recorded_once(settings):
    """After ``corrections()`` were applied: the unknown mutation dead-lettered, and the file's record counting each
    mutation once, whatever pass of the batch wrote it."""
    wait_until(lambda: dead_letters(settings), 60, "the unknown mutation's dead letter")
    f = wait_until(lambda: applied_file(settings, 4), 60, "the file's record")
    at = [h["rewritten_ms"] for h in f["hours"]]
    assert f == {"key": "mirror/2024-03-10.json", "modified_ms": 1_710_000_000_000,
                 "mutations": {"INSERT": 1, "UPDATE": 1, "DELETE": 2},
                 "outcomes": {"applied": 2, "new": 1, "unknown_insert_id": 1, "insert_conflict": 0, "dead_lettered": 1},
                 "hours": [{"project": 424242, "hour": "2024-03-09T07", "rewritten_ms": at[0]},
                           {"project": 424242, "hour": "2024-03-09T08", "rewritten_ms": at[1]}],
                 "last_applied_ms": f["last_applied_ms"]}


@pytest.mark.parametrize("point", ["mirror.logged", "mirror.pending", "mirror.rebuilt"])
def test_killing_the_worker_while_it_applies_mutations_converges_to_the_same_hours(deployment, worker, point):
    """kill -9 after the hours' logs are written (not recorded pending), after they are recorded pending (the
    offsets not committed), or after they are rebuilt (still pending): the next worker applies the take again, or
    rebuilds what is pending, to the same result."""
    settings = mirror_deployment(deployment[1])
    before, old = exported(settings, worker)
    worker.stop()
    crashing = worker(env={"STREAM_CRASH_AT": point})
    muts = corrections()
    asyncio.run(send(settings, muts))
    crashing.wait(180)
    assert crashing.returncode == -9
    worker()
    check(settings, before, old, muts)
    corrections_recorded_once(settings)


def test_a_mirror_file_the_import_read_twice_counts_each_row_once_in_its_status(deployment, worker):
    """The importer killed once the file's rows are acknowledged and before its state is written: the next worker
    reads the file again, so events.mutations holds each of its mutations twice; the file's status counts the
    latest read only, and the hours are rewritten as by one."""
    from stream.imports import ops
    from stream.imports.files import ImportFile
    from tests.integration.test_import import T0, discover
    settings, src_bucket = mirror_import(deployment)
    before, old = exported(settings, worker)
    worker.stop()
    key = "mirror/fixes.json"
    s3 = boto3.client("s3", endpoint_url=settings.s3.endpoint_url)
    s3.put_object(Bucket=src_bucket, Key=key, Body=fixes(
        {"event_type": "Purchase", "user_id": "user-0001", "device_id": "device-0005", "insert_id": "ins-5",
         "op": "update"},
        {"user_id": "user-0001", "insert_id": "ins-25", "op": "DELETE"},
        {"user_id": "user-0001", "insert_id": "never-sent", "op": "delete"}))
    modified_ms = int(s3.head_object(Bucket=src_bucket, Key=key)["LastModified"].timestamp() * 1000)
    asyncio.run(discover(settings, [ImportFile("corrections", src_bucket, key, T0, "sqs")]))
    crashing = worker(env={"STREAM_CRASH_AT": "import.produced"})
    crashing.wait(120)
    assert crashing.returncode == -9
    worker()

    def applied():
        (doc,) = asyncio.run(ops.status(settings))
        return doc if doc["files"]["done"] == 1 and len(dead_letters(settings)) == 2 and doc["mirror_files"] else None
    doc = wait_until(applied, 180, "the file imported again and its mutations applied")
    assert mutations_on_topic(settings) == 6
    # a record per partition of the file's mutations, each read of it
    ids = ["ins-5", "ins-25", "never-sent"]
    assert len(asyncio.run(read_all(settings, settings.topics.name("mutations")))) == 2 * len(
        {partition_of(mirror_index.key(424242, i), settings.topics.partitions) for i in ids})
    (f,) = doc["mirror_files"]
    at = [h["rewritten_ms"] for h in f["hours"]]
    assert f == {"key": key, "modified_ms": modified_ms, "mutations": {"INSERT": 0, "UPDATE": 1, "DELETE": 2},
                 "outcomes": {"applied": 2, "new": 0, "unknown_insert_id": 1, "insert_conflict": 0,
                              "dead_lettered": 1},
                 "hours": [{"project": 424242, "hour": "2024-03-09T07", "rewritten_ms": at[0]},
                           {"project": 424242, "hour": "2024-03-09T08", "rewritten_ms": at[1]}],
                 "last_applied_ms": f["last_applied_ms"]}
    now = rows_by_hour(objects(settings))
    assert [r["$insert_id"] for r in now["2024-03-09_8"]] == [r["$insert_id"] for r in old["2024-03-09_8"]
                                                               if r["$insert_id"] != "ins-25"]


def mutations_on_topic(settings):
    """The mutations the records of events.mutations carry."""
    return sum(len(records.decode_all(r.value))
               for r in asyncio.run(read_all(settings, settings.topics.name("mutations"))))


def applied_file(settings, n):
    """The import status of the mirror file of ``corrections()`` once ``n`` of its mutations are applied."""
    from stream.imports import ops
    (doc,) = asyncio.run(ops.status(settings))
    files = doc["mirror_files"]
    return files[0] if files and sum(files[0]["mutations"].values()) >= n else None


def mirror_import(deployment):
    """The deployment with its mirror source on a bucket of its own (the import reads the files uploaded there)."""
    settings, path = deployment
    src_bucket = settings.destinations[0].bucket + "-src"
    boto3.client("s3", endpoint_url=settings.s3.endpoint_url).create_bucket(Bucket=src_bucket)
    mirror_deployment(path)
    cfg = yaml.safe_load(path.read_text())
    cfg["sources"][0]["bucket"] = src_bucket
    path.write_text(yaml.safe_dump(cfg))
    return load_settings(path), src_bucket


def fixes(*rows):
    return b"\n".join(orjson.dumps(r) for r in rows) + b"\n"


def cli_status(path):
    out = subprocess.run([sys.executable, "-m", "stream", "import", "status", "-c", str(path)], capture_output=True,
                         timeout=120, check=True)
    return out.stdout.decode().splitlines()


def test_the_import_status_shows_each_mirror_files_mutations_and_hours_and_an_overwritten_file_is_not_read_again(
        deployment, worker):
    from stream.admin.console import COOKIE, Console
    from stream.imports import mirror_files, ops
    from stream.imports.files import ImportFile
    from tests.integration.test_admin import call
    from tests.integration.test_console import http_request, table_rows
    from tests.integration.test_import import T0, discover, worker_counters
    settings, src_bucket = mirror_import(deployment)
    before, old = exported(settings, worker)
    key = "mirror/fixes.json"
    s3 = boto3.client("s3", endpoint_url=settings.s3.endpoint_url)
    s3.put_object(Bucket=src_bucket, Key=key, Body=fixes(
        {"event_type": "Purchase", "user_id": "user-0001", "device_id": "device-0005", "insert_id": "ins-5",
         "op": "update"},
        {"user_id": "user-0001", "insert_id": "ins-25", "op": "DELETE"},
        {"user_id": "user-0001", "insert_id": "never-sent", "op": "delete"},
        {"insert_id": "ins-6", "op": "DELETE"}))                              # missing_user_id: refused by the import
    modified_ms = int(s3.head_object(Bucket=src_bucket, Key=key)["LastModified"].timestamp() * 1000)
    asyncio.run(discover(settings, [ImportFile("corrections", src_bucket, key, T0, "sqs")]))

    def applied():
        (doc,) = asyncio.run(ops.status(settings))
        files = doc.get("mirror_files", [])
        return doc if files and sum(files[0]["mutations"].values()) == 3 else None
    doc = wait_until(applied, 180, "the file's mutations applied")
    after = objects(settings)
    now = rows_by_hour(after)
    assert [r["$insert_id"] for r in now["2024-03-09_8"]] == [r["$insert_id"] for r in old["2024-03-09_8"]
                                                               if r["$insert_id"] != "ins-25"]
    assert {r["$insert_id"]: r["event_type"] for r in now["2024-03-09_7"]}["ins-5"] == "Purchase"
    (f,) = doc["mirror_files"]
    at = [h["rewritten_ms"] for h in f["hours"]]
    assert f == {"key": key, "modified_ms": modified_ms, "mutations": {"INSERT": 0, "UPDATE": 1, "DELETE": 2},
                 "outcomes": {"applied": 2, "new": 0, "unknown_insert_id": 1, "insert_conflict": 0,
                              "dead_lettered": 2},
                 "hours": [{"project": 424242, "hour": "2024-03-09T07", "rewritten_ms": at[0]},
                           {"project": 424242, "hour": "2024-03-09T08", "rewritten_ms": at[1]}],
                 "last_applied_ms": max(at)}
    assert all(modified_ms <= t <= time.time() * 1000 for t in at)
    assert (doc["files"], doc["rows"]) == ({"discovered": 1, "waiting": 0, "done": 1, "failed": 0},
                                           {"read": 4, "imported": 3, "dead_lettered": 1})
    # the admin API, the CLI and the console show the same
    assert call(settings, "GET", "/admin/imports") == (200, {"sources": [doc]})
    assert call(settings, "GET", "/admin/imports/corrections/history?limit=1") == (
        200, {"source": "corrections", "total": 1, "files": [f], "next": None})
    assert cli_status(deployment[1]) == [
        f"corrections: s3://{src_bucket}/mirror/: 1 discovered, 0 waiting, 1 done, 0 failed; rows: 4 read, "
        "3 imported, 1 dead-lettered",
        f"  mirror file {key}: 0 INSERT, 1 UPDATE, 2 DELETE; 2 applied, 0 new, 1 unknown insert_id, "
        "0 insert conflicts, 2 dead-lettered",
        f"    hour 424242 2024-03-09T07 rewritten at {mirror_files.iso(at[0])}",
        f"    hour 424242 2024-03-09T08 rewritten at {mirror_files.iso(at[1])}"]
    cookie = f"{COOKIE}={Console(None, ADMIN_TOKEN).new_session()}"
    status, _, page = http_request(settings, "GET", "/console/imports", cookie=cookie)
    assert status == 200
    shown = [time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(t / 1000)) for t in at]
    assert table_rows(page, "mirror-corrections") == [[
        key, "0 INSERT, 1 UPDATE, 2 DELETE",
        "2 applied, 0 new, 1 unknown insert_id, 0 insert conflicts, 2 dead-lettered",
        f"424242 2024-03-09T07 at {shown[0]} 424242 2024-03-09T08 at {shown[1]}"]]

    # the same key uploaded again with other rows: an imported object is not read again (FORMATS.md 4.1), so the
    # hours keep their bytes and the file's status stays what its first content did
    s3.put_object(Bucket=src_bucket, Key=key, Body=fixes(
        {"user_id": "user-0001", "insert_id": "ins-7", "op": "DELETE"},
        {"event_type": "Refund", "user_id": "user-0001", "insert_id": "ins-5", "op": "update"}))
    asyncio.run(discover(settings, [ImportFile("corrections", src_bucket, key, T0, "sqs")]))
    wait_until(lambda: worker_counters(settings, "stream_import_files_total").get(
        'stream_import_files_total{outcome="skipped",reason="already_done",source="corrections"}') == 1, 60,
        "the second discovery skipped")
    assert mutations_on_topic(settings) == 3
    assert objects(settings) == after
    assert asyncio.run(ops.status(settings)) == [doc]
    # the rewrite lag: one observation per record of the file whose take rewrote hours
    from stream.imports.mirror_files import FileTake
    from stream.topics import mirror_files_topic
    takes = [FileTake.decode(r.value) for r in asyncio.run(read_all(settings, mirror_files_topic(settings)))]
    assert worker_counters(settings, "stream_mirror_rewrite_lag_seconds_count") == {
        "stream_mirror_rewrite_lag_seconds_count": float(sum(1 for t in takes if t.hours))}
    assert sum(1 for t in takes if t.hours) >= 1
    # every hour rewritten: none pending
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{settings.worker.http_port}/metrics", timeout=10).read().decode()
    assert [ln for ln in text.splitlines() if ln.startswith("stream_mirror_pending_hours")] == [
        "stream_mirror_pending_hours 0.0"]
    # kept in Kafka, not in the worker: the same with every worker stopped
    worker.stop()
    assert asyncio.run(ops.status(settings)) == [doc]


def test_the_mirror_history_of_a_source_pages_through_every_file_past_the_twenty_of_its_status(deployment, worker):
    """22 files' records on the mirror-files topic, as the mirror stage writes them: the status shows the 20 applied
    last; the history (admin API, CLI, console) every one, a page at a time, latest applied first."""
    from stream.admin.console import COOKIE, Console
    from stream.imports import mirror_files, ops
    from stream.imports.mirror_files import FileTake
    from stream.topics import mirror_files_topic
    from tests.integration.test_admin import call
    from tests.integration.test_console import http_request, table_rows
    settings, src_bucket = mirror_import(deployment)
    asyncio.run(ensure_topics(settings))
    at0, h7 = 1_765_000_000_000, 1_709_967_600_000        # h7: 2024-03-09T07
    takes = [FileTake(f"s3://{src_bucket}/mirror/f{i:02d}.json", 424242, 1_764_000_000_000 + i, 0, 10 * i,
                      10 * i + 1, 1, 2, {"UPDATE": 1, "DELETE": 1},
                      {"applied": 1, "unknown_insert_id": 1} if i == 0 else {"applied": 2},
                      ((424242, h7),), at0 + 60_000 * i) for i in range(22)]

    async def write():
        p = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
        await p.start()
        try:
            for t in takes:
                await p.send_and_wait(mirror_files_topic(settings), t.encode(), key=t.key)
        finally:
            await p.stop()
    asyncio.run(write())

    def entry(i):
        at = at0 + 60_000 * i
        return {"key": f"mirror/f{i:02d}.json", "modified_ms": 1_764_000_000_000 + i,
                "mutations": {"INSERT": 0, "UPDATE": 1, "DELETE": 1},
                "outcomes": {"applied": 1 if i == 0 else 2, "new": 0, "unknown_insert_id": 1 if i == 0 else 0,
                             "insert_conflict": 0, "dead_lettered": 1 if i == 0 else 0},
                "hours": [{"project": 424242, "hour": "2024-03-09T07", "rewritten_ms": at}], "last_applied_ms": at}
    (status,) = asyncio.run(ops.status(settings))
    assert status["mirror_files"] == [entry(i) for i in range(21, 1, -1)]
    worker("--stages", "ingest")

    def answers():
        try:
            return call(settings, "GET", "/admin/imports/corrections/history?limit=1")[0] == 200
        except OSError:     # not listening yet
            return False
    wait_until(answers, 60, "the worker's admin API")
    first = call(settings, "GET", "/admin/imports/corrections/history")
    assert first == (200, {"source": "corrections", "total": 22, "files": [entry(i) for i in range(21, -1, -1)],
                           "next": None})
    page = call(settings, "GET", "/admin/imports/corrections/history?limit=20")
    cursor = f"{at0 + 60_000 * 2}:mirror/f02.json"
    assert page == (200, {"source": "corrections", "total": 22, "files": [entry(i) for i in range(21, 1, -1)],
                          "next": cursor})
    q = urllib.parse.quote(cursor, safe="")
    assert call(settings, "GET", f"/admin/imports/corrections/history?limit=20&before={q}") == (
        200, {"source": "corrections", "total": 22, "files": [entry(1), entry(0)], "next": None})
    assert call(settings, "GET", "/admin/imports/corrections/history?before=2") == (400, {"error": (
        "before must be the next cursor of a previous page (<last_applied_ms>:<key>, such as "
        "1733450761412:mirror/fixes.json), not '2': leave it out for the latest files")})
    assert call(settings, "GET", "/admin/imports/corrections/history?limit=0") == (
        400, {"error": "limit must be between 1 and 1000"})
    assert call(settings, "GET", "/admin/imports/nope/history")[0] == 404
    # the CLI: a page of one after the cursor, and the command for the next
    out = subprocess.run([sys.executable, "-m", "stream", "import", "history", "corrections", "-c",
                          str(deployment[1]), "--limit", "1", "--before", cursor], capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().splitlines() == [
        "corrections: 1 of 22 mirror files shown, latest applied first",
        "  mirror file mirror/f01.json: 0 INSERT, 1 UPDATE, 1 DELETE; 2 applied, 0 new, 0 unknown insert_id, "
        "0 insert conflicts, 0 dead-lettered",
        f"    last applied at {mirror_files.iso(at0 + 60_000)}",
        f"    hour 424242 2024-03-09T07 rewritten at {mirror_files.iso(at0 + 60_000)}",
        f"more: stream import history corrections --before {at0 + 60_000}:mirror/f01.json"]
    # the console: the Imports page links to the history, whose pages of 50 hold all 22
    cookie = f"{COOKIE}={Console(None, ADMIN_TOKEN).new_session()}"
    code, _, imports_page = http_request(settings, "GET", "/console/imports", cookie=cookie)
    assert code == 200 and 'href="/console/imports/corrections/history"' in imports_page
    code, _, page = http_request(settings, "GET", "/console/imports/corrections/history", cookie=cookie)
    assert code == 200
    assert table_rows(page, "mirror-history")[:2] == [
        ["mirror/f21.json", "0 INSERT, 1 UPDATE, 1 DELETE",
         "2 applied, 0 new, 0 unknown insert_id, 0 insert conflicts, 0 dead-lettered", "424242 2024-03-09T07 at "
         + time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime((at0 + 60_000 * 21) / 1000)), "T"],
        ["mirror/f20.json", "0 INSERT, 1 UPDATE, 1 DELETE",
         "2 applied, 0 new, 0 unknown insert_id, 0 insert conflicts, 0 dead-lettered", "424242 2024-03-09T07 at "
         + time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime((at0 + 60_000 * 20) / 1000)), "T"]]
    assert [r[0] for r in table_rows(page, "mirror-history")] == [f"mirror/f{i:02d}.json" for i in range(21, -1, -1)]
    assert 'id="older"' not in page
    code, _, older = http_request(settings, "GET", f"/console/imports/corrections/history?before={q}", cookie=cookie)
    assert code == 200 and [r[0] for r in table_rows(older, "mirror-history")] == ["mirror/f01.json",
                                                                                  "mirror/f00.json"]


H7, HOUR = 1_709_967_600_000, 3_600_000     # 2024-03-09T07
MANY = [({"event_type": "Page Viewed", "device_id": f"device-{i % 7:04d}", "user_id": f"user-{i % 5:04d}",
          "insert_id": f"ev-{i:04d}"}, H7 + (i // 250) * HOUR + (i % 250) * 10_000) for i in range(1000)]
"""1,000 events, 250 in each of the hours 7 to 10 of 2024-03-09."""
TOUCHED = ["2024-03-09_7", "2024-03-09_8", "2024-03-09_9"]


def many_corrections():
    """100 UPDATEs, 50 DELETEs and 20 INSERTs of new events across hours 7, 8 and 9 (hour 10 untouched): the
    mutations, and the insert_ids updated and deleted."""
    events = {ev["insert_id"]: ev for ev, _ in MANY}
    muts, n = [], 0
    ups, dels = [], []
    for k, (u, d, i) in enumerate([(34, 17, 7), (33, 17, 7), (33, 16, 6)]):
        ups += [f"ev-{k * 250 + j:04d}" for j in range(u)]
        dels += [f"ev-{k * 250 + 100 + j:04d}" for j in range(d)]
        for j in range(i):
            n += 1
            muts.append(mutation({"event_type": "Imported", "user_id": "user-0009", "device_id": "device-0099",
                                  "insert_id": f"new-{k}-{j}"}, "insert", n, H7 + k * HOUR + 3_000_000 + j * 1000))
    for x in ups:
        n += 1
        ev = events[x]
        muts.append(mutation({"event_type": "Purchase", "user_id": ev["user_id"], "device_id": ev["device_id"],
                              "insert_id": x, "event_properties": {"price": n}}, "update", n))
    for x in dels:
        n += 1
        muts.append(mutation({"user_id": events[x]["user_id"], "insert_id": x}, "delete", n))
    assert (len(ups), len(dels), n) == (100, 50, 170)
    return muts, set(ups), set(dels)


def ledger_of(settings):
    from stream.export.ledger import LedgerRecord
    return [LedgerRecord.decode(m.value) for m in asyncio.run(read_all(settings, settings.topics.name(
        "export_ledger")))]


def hour_objects(objs, hour):
    """The objects of one hour (its data objects and its marker)."""
    return {k: v for k, v in objs.items() if f"_{hour}#" in k or k.endswith(f"_{hour}_complete")}


def test_a_mirror_file_of_170_mutations_rewrites_three_of_four_hours_and_a_live_event_during_it_lands_once(
        deployment, worker, tmp_path):
    """1,000 events exported in four hours; a mirror file of 100 UPDATEs, 50 DELETEs and 20 INSERTs across three
    of them. The worker's rebuild pauses once it has claimed the hours (``STREAM_PAUSE_AT``): an event of a
    rewritten hour arrives then, and is exported while the rebuild holds the hours. Once it goes on, the rewritten
    hours hold exactly the model's rows (the live event once), their markers are written again, and the fourth hour
    keeps its bytes."""
    from stream.export.ledger import Claim, facts
    settings = mirror_deployment(deployment[1])
    go = tmp_path / "go"
    asyncio.run(ensure_topics(settings))
    worker(env={"STREAM_PAUSE_AT": "backfill.claimed", "STREAM_PAUSE_UNTIL": str(go)})
    asyncio.run(produce(settings, MANY))
    hours = [*TOUCHED, "2024-03-09_10"]
    wait_until(lambda: {f"amp/424242/424242_{h}_complete" for h in hours} <= {
        r.key for r in ledger_of(settings) if r.kind == "marker"}, 180, "the four hours exported and marked")
    before = objects(settings)
    old = rows_by_hour(before)
    assert {h: len(rs) for h, rs in old.items()} == {h: 250 for h in hours}

    muts, ups, dels = many_corrections()
    asyncio.run(send(settings, muts))
    # the rebuild has claimed the hours and waits there: an event of hour 8 arrives meanwhile
    (claim,) = wait_until(lambda: [r for r in ledger_of(settings) if r.kind == "claim"], 120, "the rebuild's claim")
    job = Claim.of(claim).job
    assert sorted(Claim.of(claim).hours) == [H7, H7 + HOUR, H7 + 2 * HOUR]
    live = {"event_type": "Live", "device_id": "device-0003", "user_id": "user-0003", "insert_id": "live-1"}
    asyncio.run(produce(settings, [(live, H7 + HOUR + 2_600_000)]))
    # the live export writes it while the rebuild holds the hours (it lies past the claim's end offsets)
    wait_until(lambda: any(r["$insert_id"] == "live-1" for r in rows_by_hour(objects(settings)).get(
        "2024-03-09_8", [])), 60, "the live event exported during the rebuild")
    # nothing of the rebuild written yet
    assert [r.kind for r in ledger_of(settings) if facts(r).get("job") == job and r.kind in (
        "object", "deleted", "marker")] == []
    go.touch()

    # the model: the old rows updated or deleted, the new events and the live one added
    by_id = {m.insert_id: m for m in muts}
    expected = {h: sorted([updated(r, by_id[r["$insert_id"]].row) if r["$insert_id"] in ups else r
                           for r in old[h] if r["$insert_id"] not in dels], key=lambda r: r["$insert_id"])
                for h in TOUCHED}
    new = {h: sorted([f"new-{k}-{j}" for j in range(7 if k < 2 else 6)] + (["live-1"] if k == 1 else []))
           for k, h in enumerate(TOUCHED)}

    def done():
        recs = ledger_of(settings)
        marked = {r.hour for r in recs if r.kind == "marker" and facts(r).get("job") == job}
        now = rows_by_hour(objects(settings))
        ids = {h: sorted(r["$insert_id"] for r in now.get(h, [])) for h in TOUCHED}
        want = {h: sorted([r["$insert_id"] for r in expected[h]] + new[h]) for h in TOUCHED}
        return marked == {H7, H7 + HOUR, H7 + 2 * HOUR} and ids == want and now
    now = wait_until(done, 240, "the three hours rewritten to the model")
    after = objects(settings)
    for h in TOUCHED:
        assert [r for r in now[h] if r["$insert_id"] in {r["$insert_id"] for r in old[h]}] == expected[h]
        fresh = [r for r in now[h] if r["$insert_id"] not in {r["$insert_id"] for r in old[h]}]
        assert [(r["$insert_id"], r["event_type"], r["user_id"], r["device_id"],
                 r.get("data", {}).get("$skip_user_properties_sync")) for r in fresh] == [
            (i, "Live", "user-0003", "device-0003", None) if i == "live-1" else
            (i, "Imported", "user-0009", "device-0099", True) for i in new[h]]
    got = {r["$insert_id"]: r for r in now["2024-03-09_7"]}["ev-0000"]
    assert (got["event_type"], got["event_properties"], got["uuid"], got["amplitude_id"]) == (
        "Purchase", {"price": 21}, {r["$insert_id"]: r for r in old["2024-03-09_7"]}["ev-0000"]["uuid"],
        {r["$insert_id"]: r for r in old["2024-03-09_7"]}["ev-0000"]["amplitude_id"])
    # the untouched hour keeps its bytes; the rewritten hours' markers are there again
    assert hour_objects(after, "2024-03-09_10") == hour_objects(before, "2024-03-09_10")
    assert hour_objects(before, "2024-03-09_10")
    assert all(f"amp/424242/424242_{h}_complete" in after for h in TOUCHED)
    assert not [r for r in ledger_of(settings) if facts(r).get("job") == job and r.hour == H7 + 3 * HOUR]
    # every event once, the live one included
    ids = [r["$insert_id"] for h in hours for r in now[h]]
    assert len(ids) == len(set(ids)) == 1000 - 50 + 20 + 1


@pytest.mark.parametrize("point", ["backfill.claimed", "backfill.uploaded", "backfill.written", "backfill.deleted",
                                   "backfill.marked"])
def test_killing_the_worker_inside_its_rebuild_of_the_mutated_hours_converges_to_the_same_hours(
        deployment, worker, point):
    """kill -9 inside the backfill that rebuilds the mutated hours for the mirror stage (no other backfill runs in
    the worker): once it claimed the hours, once its first rebuilt object is on S3 (not recorded), once every
    rebuilt object is (none replaced yet), once it deleted an object it replaces (not recorded), or once it marked
    the first hour (the second not): the hours stay pending, and the next worker rebuilds them again to the hours of
    an uninterrupted run. A stray copy of an hour-7 object under an hour-9 number gives the rebuild an object to
    delete."""
    from stream.export.layout import number_of
    from stream.export.ledger import Claim, facts
    settings = mirror_deployment(deployment[1])
    before, old = exported(settings, worker)
    worker.stop()
    bucket = settings.destinations[0].bucket
    s3 = boto3.client("s3", endpoint_url=settings.s3.endpoint_url)
    data = sorted(k for k in before if k.endswith(".json.gz"))
    h7 = [k for k in data if "_2024-03-09_7#" in k]
    stray = f"amp/424242/424242_2024-03-09_7#{number_of([k for k in data if '_2024-03-09_9#' in k][0])}.json.gz"
    assert stray not in before
    s3.put_object(Bucket=bucket, Key=stray, Body=before[h7[0]])
    crashing = worker(env={"STREAM_CRASH_AT": point})
    muts = corrections()
    asyncio.run(send(settings, muts))
    crashing.wait(180)
    assert crashing.returncode == -9
    # killed inside the mirror's rebuild of hours 7 and 8, where the point says
    (claim,) = [r for r in ledger_of(settings) if r.kind == "claim"]
    assert sorted(Claim.of(claim).hours) == [H7, H7 + HOUR]
    job = Claim.of(claim).job
    recs = [r for r in ledger_of(settings) if facts(r).get("job") == job and r.kind in (
        "claim", "object", "deleted", "marker")]
    rebuilt = sorted(r.key for r in recs if r.kind == "object")
    replaced = sorted(k for k in data if "_2024-03-09_7#" in k or "_2024-03-09_8#" in k)
    left = objects(settings)
    assert (rebuilt, stray in left) == ({"backfill.claimed": [], "backfill.uploaded": []}.get(point, replaced),
                                        point not in ("backfill.deleted", "backfill.marked"))
    marked7 = [("deleted", stray), ("marker", "amp/424242/424242_2024-03-09_7_complete")]
    assert sorted((r.kind, r.key) for r in recs if r.kind != "object") == [("claim", "")] + (
        marked7 if point == "backfill.marked" else [])
    # the objects on S3 the rebuild wrote (their metadata names its job): none, the first one, or every one
    by_job = [k for k in replaced if s3.head_object(Bucket=bucket, Key=k)["Metadata"].get("stream-job") == job]
    assert len(by_job) == {"backfill.claimed": 0, "backfill.uploaded": 1}.get(point, len(replaced))
    worker()
    wait_until(lambda: stray not in objects(settings), 180, "the stray object deleted by the rebuild run again")
    check(settings, before, old, muts)
    corrections_recorded_once(settings)
    # the rebuild run again finished: one more claim, its two hours marked
    claims = [Claim.of(r) for r in ledger_of(settings) if r.kind == "claim"]
    assert [sorted(c.hours) for c in claims] == [[H7, H7 + HOUR]] * 2
    assert sorted(r.hour for r in ledger_of(settings) if r.kind == "marker" and facts(r).get("job") == claims[1].job
                  ) == [H7, H7 + HOUR]
