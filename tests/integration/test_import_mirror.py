"""A mirror source end to end: a file of INSERT/UPDATE/DELETE rows on S3 -> imports.files -> events.mutations,
exactly, with its bad rows in the dead-letter topic, and a second discovery of the file producing nothing."""

import asyncio
from collections import Counter

import boto3
import orjson
import pytest
import yaml

from stream.events import deadletter
from stream.events.partitioning import partition_of
from stream.export import mirror_index
from stream.export.mirror import Op
from stream.imports import mutations, ops
from stream.imports.files import ImportFile
from stream.kafka import ensure_topics, read_all
from stream.settings import load_settings
from tests.integration.conftest import wait_until
from tests.integration.test_import import T0, discover, worker_counters

pytestmark = pytest.mark.integration

FUNC = {"event_type": "event", "user_id": "user", "device_id": "device", "insert_id": "id", "time": "ts",
        "event_properties": {"price": "price"}, "$mutation_type": "op"}
PROJECT = 424242


def mirror_deployment(path, src_bucket):
    cfg = yaml.safe_load(path.read_text())
    cfg["destinations"][0]["archive"] = True          # a mirror source's project needs its archive destination
    cfg["sources"] = [{"name": "fixes", "project": PROJECT, "bucket": src_bucket, "prefix": "in/",
                       "strategy": "mirror", "converter": {"converterConfig": {"convertToAmplitudeFunc": FUNC}},
                       "scan": {"enabled": False}}]
    cfg["ingest"]["max_clock_skew_s"] = 86_400
    cfg["worker"]["stages"] = ["import"]                # what the import produces, before anything applies it
    path.write_text(yaml.safe_dump(cfg))
    return load_settings(path)


def play(user, insert_id, price, **more):
    row = {"event": "Play", "user": user, "device": "device-1", "ts": T0 + price, "price": price, **more}
    if insert_id is not None:
        row["id"] = insert_id
    return orjson.dumps(row)


def mirror_file():
    return b"\n".join([
        play("user-1", "e-1", 1, op="UPDATE"),
        play("user-1", "e-2", 2, op="delete"),
        play("user-2", "e-3", 3, op="Insert"),
        play("user-2", "e-4", 4),                      # no type: an UPDATE
        play("user-1", "e-5", 5, op="UPSERT"),         # invalid_mutation_type
        play(None, "e-6", 6, op="UPDATE"),             # missing_user_id
        play("user-1", None, 7, op="DELETE"),          # missing_id
        b"{not json",                                  # malformed_json
    ]) + b"\n"


def mirror_source(deployment):
    settings, path = deployment
    src_bucket = settings.destinations[0].bucket + "-src"
    s3 = boto3.client("s3", endpoint_url=settings.s3.endpoint_url)
    s3.create_bucket(Bucket=src_bucket)
    settings = mirror_deployment(path, src_bucket)
    asyncio.run(ensure_topics(settings))
    return settings, s3, src_bucket


def mutation_records(settings):
    """(partition, key of the record, project, mutation) of each mutation on events.mutations."""
    return [(r.partition, r.key, *pm) for r in asyncio.run(read_all(settings, settings.topics.name("mutations")))
            for pm in mutations.decode_all(r.value)]


def wait_done(settings):
    def done():
        doc = asyncio.run(ops.status(settings))[0]
        return doc if doc["files"]["done"] == 1 else None
    return wait_until(done, 90, "the mirror file imported")


def test_a_mirror_files_rows_land_on_events_mutations_once_and_its_bad_rows_are_dead_lettered(deployment, worker):
    settings, s3, src_bucket = mirror_source(deployment)
    key = "in/fixes.json"
    s3.put_object(Bucket=src_bucket, Key=key, Body=mirror_file())
    modified_ms = int(s3.head_object(Bucket=src_bucket, Key=key)["LastModified"].timestamp() * 1000)
    url = f"s3://{src_bucket}/{key}"
    asyncio.run(discover(settings, [ImportFile("fixes", src_bucket, key, T0, "sqs")]))
    worker()
    doc = wait_done(settings)
    assert doc["rows"] == {"read": 8, "imported": 4, "dead_lettered": 4}
    got = mutation_records(settings)
    # in row order within a partition; the partitions are read one after the other
    ops_seen = [(m.op, m.insert_id, m.seq, m.device_id) for _, _, _, m in got]
    assert sorted(ops_seen, key=lambda x: x[2]) == [
        (Op.UPDATE, "e-1", (modified_ms, url, 1), "device-1"),
        (Op.DELETE, "e-2", (modified_ms, url, 2), "device-1"),
        (Op.INSERT, "e-3", (modified_ms, url, 3), "device-1"),
        (Op.UPDATE, "e-4", (modified_ms, url, 4), "device-1")]
    firsts = {}
    for partition, k, project, m in got:
        # a record per partition, keyed by its first mutation's key; every mutation where the index keeps its id
        assert (project, firsts.setdefault(k, mirror_index.key(PROJECT, m.insert_id))) == (PROJECT, k)
        assert partition == partition_of(mirror_index.key(PROJECT, m.insert_id), settings.topics.partitions)
        assert partition == partition_of(k, settings.topics.partitions)
        if m.op is Op.DELETE:
            assert m.row is None
        else:
            assert (m.row["event_type"], m.row["$insert_id"], m.row["device_id"], m.row["event_properties"]) == (
                "Play", m.insert_id, "device-1", {"price": int(m.insert_id[2:])})
            assert "$skip_user_properties_sync" not in m.row       # no enrichment flag on mirror rows
    # nothing for enrichment: events.valid gets no row of a mirror source
    assert asyncio.run(read_all(settings, settings.topics.name("valid"))) == []

    deads = [deadletter.decode(m.value) for m in asyncio.run(read_all(settings, settings.topics.name("dead_letter")))]
    assert sorted((deadletter.source_of(d), d["reason"]) for d in deads) == [
        (f"{url}#5", "invalid_mutation_type"), (f"{url}#6", "missing_user_id"), (f"{url}#7", "missing_id"),
        (f"{url}#8", "malformed_json")]

    # the same file discovered again (the scan, a second notification): skipped, nothing produced
    asyncio.run(discover(settings, [ImportFile("fixes", src_bucket, key, T0, "scan")]))
    wait_until(lambda: worker_counters(settings, "stream_import_files_total").get(
        'stream_import_files_total{outcome="skipped",reason="already_done",source="fixes"}') == 1, 60,
        "the second discovery skipped")
    assert mutation_records(settings) == got
    assert len(asyncio.run(read_all(settings, settings.topics.name("dead_letter")))) == 4
    assert worker_counters(settings, "stream_import_mutations_total") == {
        'stream_import_mutations_total{op="update",source="fixes"}': 2,
        'stream_import_mutations_total{op="delete",source="fixes"}': 1,
        'stream_import_mutations_total{op="insert",source="fixes"}': 1}


@pytest.mark.parametrize("point", ["import.reading", "import.produced", "import.state_written"])
def test_killing_the_importer_of_a_mirror_file_at_each_point_produces_the_same_records_again(deployment, worker,
                                                                                              point):
    """A crash re-reads the file from the same discovery record: whatever was produced before is produced again
    byte for byte (the applying side takes a mutation twice without harm), and nothing else."""
    settings, s3, src_bucket = mirror_source(deployment)
    key = "in/fixes.json"
    s3.put_object(Bucket=src_bucket, Key=key, Body=mirror_file())
    asyncio.run(discover(settings, [ImportFile("fixes", src_bucket, key, T0, "sqs")]))
    first = worker(env={"STREAM_CRASH_AT": point})
    wait_until(lambda: first.poll() is not None, 60, f"the worker to die at {point}")
    assert first.returncode == -9
    worker()
    doc = wait_done(settings)
    assert doc["rows"] == {"read": 8, "imported": 4, "dead_lettered": 4}
    records = [(r.key, r.value) for r in asyncio.run(read_all(settings, settings.topics.name("mutations")))]
    assert sorted(m.insert_id for v in set(v for _, v in records) for _, m in mutations.decode_all(v)) == [
        "e-1", "e-2", "e-3", "e-4"]
    partitions = {partition_of(mirror_index.key(PROJECT, f"e-{i}"), settings.topics.partitions) for i in range(1, 5)}
    copies = 1 if point == "import.state_written" else 2     # read again unless its state was written
    assert sorted(Counter(records).values()) == [copies] * len(partitions)     # a record per partition, each again
    deads = [deadletter.decode(m.value) for m in asyncio.run(read_all(settings, settings.topics.name("dead_letter")))]
    assert Counter((deadletter.source_of(d), d["reason"]) for d in deads) == Counter({
        (f"s3://{src_bucket}/{key}#5", "invalid_mutation_type"): copies,
        (f"s3://{src_bucket}/{key}#6", "missing_user_id"): copies,
        (f"s3://{src_bucket}/{key}#7", "missing_id"): copies,
        (f"s3://{src_bucket}/{key}#8", "malformed_json"): copies})
