"""S3 import end to end: files on a source bucket -> imports.files -> events.valid -> dedupe -> the export, exactly."""

import asyncio
import csv
import gzip
import io
import json
import re
import time
import urllib.error
import urllib.request

import boto3
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from aiokafka import AIOKafkaProducer

from stream.events import deadletter
from stream.imports import ops
from stream.imports.files import ImportFile
from stream.kafka import ensure_topics, read_all
from stream.settings import load_settings
from tests.integration.conftest import ADMIN_TOKEN, admin_get, wait_until

pytestmark = pytest.mark.integration

FUNC = {"event_type": "event", "user_id": "user", "device_id": "device", "time": "ts",
        "event_properties": {"price": "price", "plan": "plan"}}
T0 = 1_709_967_600_000   # 2024-03-09 07:00 UTC: the rows' own times
DISCOVERED = (int(time.time() * 1000) // 3_600_000 - 2) * 3_600_000 + 1000   # two hours ago: a closed hour


def rows(prefix, n, start=0):
    return [{"event": "Play", "user": f"user-{i % 3:04d}", "device": f"device-{i % 5:04d}", "ts": T0 + i * 1000,
             "price": i, "plan": "pro" if i % 2 else "free", "extra": "ignored"} for i in range(start, start + n)]


def jsonl(items, bad_after=None):
    lines = [orjson.dumps(r) for r in items]
    if bad_after is not None:
        lines.insert(bad_after, b"{not json")
    return b"\n".join(lines) + b"\n"


def csv_bytes(items, broken_row=None):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    cols = ["event", "user", "device", "ts", "price", "plan"]
    w.writerow(cols)
    for i, r in enumerate(items):
        w.writerow([r[c] for c in cols])
        if i == broken_row:
            w.writerow(["Play", "user-0009"])   # two fields for a header of six
    return ("\ufeff" + buf.getvalue()).encode()


def parquet_bytes(items):
    table = pa.Table.from_pylist([{k: v for k, v in r.items() if k != "extra"} for r in items])
    out = io.BytesIO()
    pq.write_table(table, out, row_group_size=2)
    return out.getvalue()


def source_deployment(path, src_bucket, **source):
    cfg = yaml.safe_load(path.read_text())
    cfg["sources"] = [{"name": "clicks", "project": 424242, "bucket": src_bucket, "prefix": "in/",
                       "converter": {"converterConfig": {"convertToAmplitudeFunc": FUNC}},
                       "scan": {"enabled": False}, **source}]
    cfg["ingest"]["max_clock_skew_s"] = 86_400
    path.write_text(yaml.safe_dump(cfg))
    return load_settings(path)


async def discover(settings, files):
    """Discovery records as the notifications and the scan write them, stamped in a past hour: the rows' server
    time is their discovery's, so that hour closes at once and the export can be read whole (and a retry now is
    within the dedupe window of that time)."""
    p = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    await p.start()
    try:
        for f in files:
            await p.send_and_wait(settings.topics.name("import_files"), f.encode(), key=f.kafka_key,
                                  timestamp_ms=DISCOVERED)
    finally:
        await p.stop()


def exported_rows(settings):
    s3 = boto3.client("s3", endpoint_url=settings.s3.endpoint_url)
    bucket = settings.destinations[0].bucket
    out = []
    for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        if o["Key"].endswith(".json.gz"):
            body = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
            out += [orjson.loads(line) for line in gzip.decompress(body).splitlines()]
    return out


def dead_letters(settings):
    return [deadletter.decode(m.value) for m in asyncio.run(read_all(settings, settings.topics.name("dead_letter")))]


def put(settings, bucket, files):
    s3 = boto3.client("s3", endpoint_url=settings.s3.endpoint_url)
    for key, body in files.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)


def record(bucket, key, found_by="sqs"):
    return ImportFile("clicks", bucket, key, T0, found_by)


def test_files_of_every_type_are_imported_once_and_every_row_is_accounted_for(deployment, worker,
                                                                                 monkeypatch):
    settings, path = deployment
    src_bucket = settings.destinations[0].bucket + "-src"
    boto3.client("s3", endpoint_url=settings.s3.endpoint_url).create_bucket(Bucket=src_bucket)
    settings = source_deployment(path, src_bucket)
    asyncio.run(ensure_topics(settings))
    a, b, c, d = rows("a", 6), rows("b", 4, 100), rows("c", 5, 200), rows("d", 50, 300)
    truncated = gzip.compress(jsonl(d))
    put(settings, src_bucket, {
        "in/a.json.gz": gzip.compress(jsonl(a, bad_after=2)),     # 6 rows and a bad line
        "in/b.csv": csv_bytes(b, broken_row=1),                   # BOM, CRLF, a row of the wrong width
        "in/c.parquet": parquet_bytes(c),                         # three row groups
        "in/d.json.gz": truncated[: len(truncated) - 20],        # a truncated gzip: marked failed
    })
    # no fileType: each file's type follows its name (.csv, .parquet, else JSON lines)
    files = [record(src_bucket, k) for k in ("in/a.json.gz", "in/b.csv", "in/c.parquet", "in/d.json.gz",
                                             "in/gone.json")]          # deleted before it was read
    asyncio.run(discover(settings, files + [files[0], record(src_bucket, "in/a.json.gz", "scan")]))
    worker()
    wanted = sorted(str(r["price"]) for r in a + b + c)      # CSV gives every value as text

    def price(r):
        return str(r["event_properties"]["price"])

    def imported():
        doc = asyncio.run(ops.status(settings))[0]
        return doc if doc["files"]["done"] + doc["files"]["failed"] == 5 else None
    doc = wait_until(imported, 90, "every file imported or failed")
    assert doc["files"] == {"discovered": 5, "waiting": 0, "done": 3, "failed": 2}
    assert doc["failed_by_reason"] == {"truncated_gzip": 1, "not_found": 1}
    gone = next(x for x in doc["failed"] if x["key"] == "in/gone.json")
    assert gone["message"] == (f"s3://{src_bucket}/in/gone.json no longer exists (deleted after it was discovered); "
                               "nothing to import")
    got = wait_until(lambda: (x := exported_rows(settings)) and {price(r) for r in x} >= set(wanted) and x, 60,
                     "the rows in the export")
    # each good row once, whatever the duplicate discoveries
    assert sorted(price(r) for r in got if int(price(r)) < 300) == wanted
    deads = dead_letters(settings)
    sources = sorted(deadletter.source_of(x) for x in deads)
    assert sources[:4] == [f"s3://{src_bucket}/in/a.json.gz#3", f"s3://{src_bucket}/in/b.csv#3",
                           f"s3://{src_bucket}/in/d.json.gz", f"s3://{src_bucket}/in/gone.json"]
    assert {x["reason"] for x in deads} >= {"malformed_json", "bad_csv_row", "unreadable_file"}
    # rows read = imported + dead-lettered, per file; the truncated file's rows before the cut were imported
    assert doc["rows"]["read"] == doc["rows"]["imported"] + doc["rows"]["dead_lettered"]
    d_rows = [r for r in got if int(price(r)) >= 300]
    assert len(d_rows) == len({r["$insert_id"] for r in d_rows})

    # the admin API: the same status, a preview of the CSV file, and a retry that imports nothing twice
    api = f"http://127.0.0.1:{settings.worker.http_port}/admin/imports"
    assert json.loads(admin_get(api))["sources"][0]["files"] == doc["files"]
    preview = json.loads(admin_get(f"{api}/clicks/preview?key=in/b.csv&rows=3"))
    assert [(r["row"], r["source"]) for r in preview["rows"]] == [
        (1, {"event": "Play", "user": "user-0001", "device": "device-0000", "ts": str(T0 + 100_000), "price": "100",
             "plan": "free"}),
        (2, {"event": "Play", "user": "user-0002", "device": "device-0001", "ts": str(T0 + 101_000), "price": "101",
             "plan": "pro"}),
        (3, None)]
    first = preview["rows"][0]["event"]
    assert (first["event_type"], first["user_id"], first["device_id"], first["event_properties"]) == (
        "Play", "user-0001", "device-0000", {"price": "100", "plan": "free"})
    assert preview["rows"][0]["errors"] == []
    assert preview["rows"][2]["event"] is None
    assert [e["reason"] for e in preview["rows"][2]["errors"]] == ["bad_csv_row"]
    # parquet: read by ranged GETs of its footer and first pages
    preview = json.loads(admin_get(f"{api}/clicks/preview?key=in/c.parquet&rows=3"))
    assert [(r["row"], r["source"], r["event"]["event_properties"]) for r in preview["rows"]] == [
        (n - 199, {k: v for k, v in row.items() if k != "extra"}, {"price": n, "plan": row["plan"]})
        for n, row in zip(range(200, 203), c)]
    monkeypatch.setattr(ops, "PREVIEW_MAX_BYTES", 100)
    with pytest.raises(ops.Refused) as err:
        asyncio.run(ops.preview(settings, "clicks", "in/c.parquet"))
    assert str(err.value) == (f"a preview of s3://{src_bucket}/in/c.parquet would fetch more than 100 bytes of it (the "
                              "first pages of its columns are that large); preview a smaller file of the source")
    # keys outside the source: refused, nothing read or queued
    for method, url, body in (("GET", f"{api}/clicks/preview?key=private/x.parquet", None),
                              ("POST", f"{api}/clicks/retry", b'{"keys": ["in/a.json.gz", "private/x.parquet"]}')):
        req = urllib.request.Request(url, data=body, method=method, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=10)
        assert (refused.value.code, json.loads(refused.value.read())) == (400, {"error": (
            f"s3://{src_bucket}/private/x.parquet is not a file of source clicks: its files are the keys under 'in/', "
            "and this key is not one of them; name a key of the source")})
    req = urllib.request.Request(f"{api}/clicks/retry", data=b'{"keys": ["in/a.json.gz"]}', method="POST",
                                 headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert (r.status, json.loads(r.read())) == (202, {"source": "clicks",
                                                          "queued": [f"s3://{src_bucket}/in/a.json.gz"]})
    before = doc["last_done_ms"]
    wait_until(lambda: asyncio.run(ops.status(settings))[0]["last_done_ms"] > before, 60, "the retried file done")
    time.sleep(3)   # its rows through dedupe: dropped there as duplicates (same insert_ids), none accepted twice
    assert sorted(price(r) for r in accepted_rows(settings) if int(price(r)) < 300) == wanted


def big_and_small(src_bucket):
    big = rows("big", 5000, 1000)          # three chunks of rows: a kill after the first is a kill mid-file
    small = rows("small", 100, 9000)
    return {"in/big.json.gz": gzip.compress(jsonl(big)), "in/small.json": jsonl(small)}, big + small


@pytest.mark.parametrize("point", ["import.reading", "import.produced", "import.state_written"])
def test_killing_the_importer_at_each_point_neither_loses_nor_duplicates_a_row(deployment, worker, point):
    settings, path = deployment
    settings, expected = big_and_small_discovered(settings, path)
    first = worker(env={"STREAM_CRASH_AT": point})
    wait_until(lambda: first.poll() is not None, 60, f"the worker to die at {point}")
    assert first.returncode == -9
    worker()
    both_imported_once(settings, expected)


def big_and_small_discovered(settings, path):
    """A source bucket holding ``big_and_small``'s files, both discovered: the source's settings and the rows."""
    src_bucket = settings.destinations[0].bucket + "-src"
    boto3.client("s3", endpoint_url=settings.s3.endpoint_url).create_bucket(Bucket=src_bucket)
    settings = source_deployment(path, src_bucket)
    asyncio.run(ensure_topics(settings))
    files, expected = big_and_small(src_bucket)
    put(settings, src_bucket, files)
    asyncio.run(discover(settings, [record(src_bucket, k) for k in files]))
    return settings, expected


def both_imported_once(settings, expected):
    """The big and the small file (``big_and_small``) imported, every row exported once."""
    def imported():
        doc = asyncio.run(ops.status(settings))[0]
        return doc if doc["files"]["done"] == 2 else None
    doc = wait_until(imported, 90, "both files imported")
    assert doc["files"] == {"discovered": 2, "waiting": 0, "done": 2, "failed": 0}
    assert doc["rows"] == {"read": 5100, "imported": 5100, "dead_lettered": 0}
    want = sorted(str(r["price"]) for r in expected)
    got = wait_until(lambda: (x := exported_rows(settings)) and len(x) >= len(want) and x, 90, "every row exported")
    assert sorted(str(r["event_properties"]["price"]) for r in got) == want     # each row once
    assert len({r["$insert_id"] for r in got}) == len(want)


def conversion_processes(marker):
    """The pids of processes started by multiprocessing's spawn whose environment holds ``marker``."""
    import os
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if b"multiprocessing" in cmd and marker.encode() in env:
            found.append(int(pid))
    return found


@pytest.mark.parametrize("point", ["import.reading", "import.produced"])
def test_with_conversion_processes_a_killed_importer_neither_loses_nor_duplicates_a_row(deployment, worker, point):
    """worker.import_processes 2: the worker killed -9 mid-file takes its conversion processes along, and the
    next worker (converting in its processes too) imports every row once."""
    settings, path = deployment
    settings, expected = big_and_small_discovered(settings, path)
    marker = f"STREAM_TEST_RUN={path.parent.name}-{point}"
    first = worker(env={"STREAM_CRASH_AT": point, "STREAM_WORKER__IMPORT_PROCESSES": "2",
                        marker.split("=")[0]: marker.split("=")[1]})
    wait_until(lambda: first.poll() is not None, 60, f"the worker to die at {point}")
    assert first.returncode == -9
    log = (path.parent / "worker-0.log").read_text()
    started = {int(pid) for pid in re.findall(rf"conversion process (\d+) of worker {first.pid} started", log)}
    assert 1 <= len(started) <= 2, log[-3000:]          # the file was converted in the processes
    wait_until(lambda: not started & set(conversion_processes(marker)), 10,
               "the conversion processes to end with the worker")
    worker(env={"STREAM_WORKER__IMPORT_PROCESSES": "2"})
    both_imported_once(settings, expected)


def accepted_rows(settings):
    from stream.events.batch import EventBatch
    out = []
    for m in asyncio.run(read_all(settings, settings.topics.name("accepted"))):
        out += [orjson.loads(line) for line in EventBatch.decode(m.value).lines]
    return out


def test_a_notified_file_killed_before_its_message_is_deleted_is_imported_once(deployment, worker):
    """The worker polls the source's queue; killed after the discovery record is acknowledged and before the SQS
    message is deleted, it imports the file from the record when it restarts, and the message, delivered again,
    finds the file done."""
    settings, path = deployment
    src_bucket = settings.destinations[0].bucket + "-src"
    endpoint = settings.s3.endpoint_url
    s3, sqs = boto3.client("s3", endpoint_url=endpoint), boto3.client("sqs", endpoint_url=endpoint)
    s3.create_bucket(Bucket=src_bucket)
    queue = sqs.create_queue(QueueName=src_bucket)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(Bucket=src_bucket, NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]})
    settings = source_deployment(path, src_bucket, queue_url=queue)
    asyncio.run(ensure_topics(settings))
    first = worker(env={"STREAM_CRASH_AT": "import.discovered"})
    items = rows("n", 300, 20_000)
    put(settings, src_bucket, {"in/a b#1.json.gz": gzip.compress(jsonl(items))})   # form-encoded in the message
    wait_until(lambda: first.poll() is not None, 60, "the worker to die after the discovery record")
    assert first.returncode == -9
    worker()

    def imported():
        doc = asyncio.run(ops.status(settings))[0]
        return doc if doc["files"]["done"] == 1 else None
    doc = wait_until(imported, 60, "the file imported")
    assert doc["files"] == {"discovered": 1, "waiting": 0, "done": 1, "failed": 0}
    assert doc["rows"] == {"read": 300, "imported": 300, "dead_lettered": 0}
    got = wait_until(lambda: (x := accepted_rows(settings)) and len(x) >= 300 and x, 60, "the rows accepted")
    assert sorted(r["event_properties"]["price"] for r in got) == [r["price"] for r in items]
    (f,) = {ImportFile.decode(m.value).key for m in asyncio.run(read_all(settings, settings.topics.name(
        "import_files")))}
    assert f == "in/a b#1.json.gz"


def test_fifty_files_of_mixed_types_and_compressions_are_each_imported_once(deployment, worker):
    """50 files (JSON lines, CSV and parquet, gzip or not, a gzip without its .gz suffix), discovered twice each
    (the scan and a notification), one object overwritten after its import and discovered again: every row is
    exported once, and the overwritten object is not read again."""
    settings, path = deployment
    src_bucket = settings.destinations[0].bucket + "-src"
    boto3.client("s3", endpoint_url=settings.s3.endpoint_url).create_bucket(Bucket=src_bucket)
    settings = source_deployment(path, src_bucket)
    asyncio.run(ensure_topics(settings))
    files, expected = {}, []
    for i in range(50):
        items = rows(f"f{i}", 20, 1000 + i * 20)
        expected += items
        kind = i % 5
        if kind == 0:
            files[f"in/{i:02d}.json"] = jsonl(items)
        elif kind == 1:
            files[f"in/{i:02d}.json.gz"] = gzip.compress(jsonl(items))
        elif kind == 2:
            files[f"in/{i:02d}.csv"] = csv_bytes(items)
        elif kind == 3:
            files[f"in/{i:02d}.csv.gz"] = gzip.compress(csv_bytes(items))
        else:
            files[f"in/{i:02d}.parquet"] = parquet_bytes(items)
    files["in/50.jsonl"] = gzip.compress(jsonl(rows("auto", 20, 5000)))     # gzip found by its magic bytes
    expected += rows("auto", 20, 5000)
    put(settings, src_bucket, files)
    keys = sorted(files)
    asyncio.run(discover(settings, [record(src_bucket, k, "scan") for k in keys] + [record(src_bucket, k)
                                                                                    for k in keys]))
    worker()
    want = sorted(str(r["price"]) for r in expected)

    def price(r):
        return str(r["event_properties"]["price"])
    doc = wait_until(lambda: (d := asyncio.run(ops.status(settings))[0])["files"]["done"] == 51 and d, 120,
                     "every file imported")
    assert doc["files"] == {"discovered": 51, "waiting": 0, "done": 51, "failed": 0}
    assert doc["rows"] == {"read": 1020, "imported": 1020, "dead_lettered": 0}
    got = wait_until(lambda: (x := exported_rows(settings)) and len(x) >= len(want) and x, 90, "every row exported")
    assert sorted(price(r) for r in got) == want
    # overwritten after its import, and notified again: not read again (FORMATS.md 4.1)
    put(settings, src_bucket, {"in/00.json": jsonl(rows("new", 5, 9000))})
    asyncio.run(discover(settings, [record(src_bucket, "in/00.json")]))
    from stream.imports.files import FileState
    from stream.topics import import_changelog

    def states_of_00():   # the agent writes the state again when it skips a key it has done
        return [FileState.decode(m.value) for m in asyncio.run(read_all(settings, import_changelog(settings)))
                if m.key == b"clicks:in/00.json"]
    # three discoveries (the scan, the notification, the one after the overwrite): one import, two skips
    states = wait_until(lambda: len(s := states_of_00()) == 3 and s, 30, "the new discovery skipped")
    assert states[0] == states[1] == states[2] and states[0].rows == 20
    time.sleep(2)
    assert sorted(price(r) for r in accepted_rows(settings)) == want
    # what the worker read: each of the 51 files once, the duplicate and later discoveries skipped (the export
    # alone cannot tell: dedupe drops the rows of a second read)
    assert worker_counters(settings, "stream_import_files_total", "stream_import_rows_total") == {
        'stream_import_files_total{outcome="done",reason="",source="clicks"}': 51,
        'stream_import_files_total{outcome="skipped",reason="already_done",source="clicks"}': 52,
        'stream_import_rows_total{outcome="imported",source="clicks"}': 1020}


def worker_counters(settings, *names):
    """The worker's samples of the counters ``names`` that are not 0, keyed as Prometheus text writes them."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{settings.worker.http_port}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            sample, value = line.rsplit(" ", 1)
            if sample.split("{")[0] in names and float(value) != 0:
                out[sample] = float(value)
    return out


def test_an_unexpected_error_reading_a_file_marks_it_failed_instead_of_crash_looping(deployment, monkeypatch,
                                                                                     tmp_path):
    """A bug in reading one file (injected here into the reader) must not stop the partition: the file fails with
    processing_error and the next one is imported."""
    from stream.imports import fetch
    from stream.imports.reader import FileError
    settings, path = deployment
    src_bucket = settings.destinations[0].bucket + "-src"
    boto3.client("s3", endpoint_url=settings.s3.endpoint_url).create_bucket(Bucket=src_bucket)
    settings = source_deployment(path, src_bucket)
    put(settings, src_bucket, {"in/x.json": jsonl(rows("x", 3))})

    def broken(*args, **kwargs):
        raise RuntimeError("reader bug")
    monkeypatch.setattr(fetch, "aiter_rows", broken)

    async def read():
        return [item async for item in fetch.read_rows(settings, settings.sources[0],
                                                       record(src_bucket, "in/x.json"), tmp_path)]
    with pytest.raises(FileError) as err:
        asyncio.run(read())
    assert (err.value.reason.value, err.value.detail) == (
        "processing_error", "unexpected RuntimeError while reading the file: reader bug (please report it with the "
        "worker's log)")
