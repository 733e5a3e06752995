"""Kill -9 the worker at every named point of its cycle, restart it, and compare what is on S3, exactly."""

import asyncio
import gzip
import os
import random
import signal
import threading
import time

import boto3
import orjson
import pytest
import yaml
from aiokafka import AIOKafkaProducer

from stream.crashpoints import NAMES
from stream.devstack.services import free_port
from stream.events.batch import EventBatch
from stream.events.partitioning import partition_for
from stream.export.ledger import LedgerRecord
from stream.export.status_cli import read_status
from stream.identity.records import dec_links, decode_remaps
from stream.kafka import ensure_topics, read_all
from stream.s3.probe import PROBE_NAME
from stream.settings import load_settings
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration

H7 = 1709967600000   # 2024-03-09 07:00 UTC
HOUR = 3_600_000
EVENTS = [({"event_type": "Page Viewed", "device_id": f"device-{i % 7:04d}", "insert_id": f"ins-{i}",
            **({"user_id": f"user-{i % 2:04d}"} if i % 3 == 0 else {})},
           H7 + (i // 20) * HOUR + i * 1000) for i in range(60)]   # three hours, seven devices, two users
# every (device, user) pair links a distinct id; all but each user's first are merged into it
PAIRS = {(ev["device_id"], ev["user_id"]) for ev, _ in EVENTS if "user_id" in ev}
MERGES = len(PAIRS) - 2
# ids: one per device; a pair adopts its device's id when it is the device's first user, else takes a new one
ALLOCATED = len({ev["device_id"] for ev, _ in EVENTS}) + len(PAIRS) - len({d for d, _ in PAIRS})
DATA_HOURS = ["2024-03-09_7", "2024-03-09_8", "2024-03-09_9"]
MULTIPART = ("export.multipart_created", "export.part_uploaded")


async def produce(settings, events=EVENTS):
    p = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, max_request_size=4 << 20)
    await p.start()
    try:
        for ev, ts in events:
            await p.send(settings.topics.name("ingest"), orjson.dumps(ev), timestamp_ms=ts)
        await p.flush()
    finally:
        await p.stop()


def listing(settings):
    s3 = boto3.client("s3", endpoint_url=settings.s3.endpoint_url)
    return [o["Key"] for o in s3.list_objects_v2(Bucket=settings.destinations[0].bucket).get("Contents", [])]


def object_keys(settings):
    """Data objects: no markers, no merged-IDs files, and no access-verification probe (written and deleted as the
    destination is verified, so a listing may catch it)."""
    return {k for k in listing(settings) if not k.endswith(("_complete", PROBE_NAME))
            and not k.startswith("amp/424242/-")}


def rows(settings, keys):
    """Every JSON line of the objects ``keys``, with repeats."""
    s3 = boto3.client("s3", endpoint_url=settings.s3.endpoint_url)
    bucket = settings.destinations[0].bucket
    out = []
    for key in keys:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        out += [orjson.loads(line) for line in gzip.decompress(body).splitlines()]
    return out


def exported(settings):
    """insert_id of every row in the bucket, with repeats."""
    return sorted(r["$insert_id"] for r in rows(settings, object_keys(settings)))


def status_counts(settings):
    """(objects, events) of the destination's events exporter as the status view counts them from the ledger."""
    doc = asyncio.run(read_status(settings, 1000))
    (main,) = [d for d in doc["destinations"] if d["destination"] == settings.destinations[0].name]
    return sum(h["objects"] for h in main["hours"]), sum(h["events"] for h in main["hours"])


def hours_complete(settings, hours=DATA_HOURS):
    """Every data hour's _complete marker is recorded: each partition sealed it after writing its objects, so
    anything that could be written twice would be on S3 by now."""
    topic = settings.topics.name("export_ledger")
    marked = {LedgerRecord.decode(m.value).key for m in asyncio.run(read_all(settings, topic))}
    return all(f"amp/424242/424242_{h}_complete" in marked for h in hours)


def merge_lines(settings):
    """Every merge line in the bucket, with repeats."""
    return rows(settings, [k for k in listing(settings) if k.startswith("amp/424242/-")])


def merges_written(settings):
    recs = [LedgerRecord.decode(m.value) for m in asyncio.run(read_all(settings, settings.topics.name(
        "export_ledger")))]
    return sum(r.events for r in recs if r.destination.endswith(".merged-ids")) >= MERGES


def exporting_merged_ids(path):
    cfg = yaml.safe_load(path.read_text())
    cfg["destinations"][0].update(exports="both", org_id=55)
    path.write_text(yaml.safe_dump(cfg))
    return load_settings(path)


def _answers(url):
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:       # it answers, if not yet healthy
        return True
    except OSError:
        return False


def pipeline(settings):
    """What each stage handed on, message by message (events.valid and events.accepted batches and remaps, the
    identity links and merges): printed when a wait fails, so that a run that lost or held back something says
    where."""
    out = []

    def ids(b):
        rows = [(orjson.loads(ln), ln) for ln in b.lines]
        return sorted(r.get("insert_id") or r.get("$insert_id") or ln.decode() for r, ln in rows)

    for name in ("valid", "accepted", "identity_links", "identity_merges"):
        for m in asyncio.run(read_all(settings, settings.topics.name(name))):
            at = f"{name}[{m.partition}]@{m.offset}"
            if name == "identity_links":
                links = dec_links(m.value)
                out.append(f"{at}: from valid[{links.origin_partition}]@{links.origin_offset} " + ", ".join(
                    f"{x.user}/{x.device}->{x.aid}" for x in links.links))
            elif (remaps := decode_remaps(m.value)) is not None:
                out.append(f"{at}: remaps " + ", ".join(f"{r.user}/{r.device} {r.from_aid}->{r.to_aid}"
                                                         for r in remaps))
            else:
                b = EventBatch.decode(m.value)
                out.append(f"{at}: hour {b.hour} origin {b.origin} {len(b)} rows {ids(b)}")
    return "\n".join(out)


def crash_then_recover(settings, worker, point, events=EVENTS, hours=DATA_HOURS, signal_after=None):
    first = worker(env={"STREAM_CRASH_AT": point})
    asyncio.run(produce(settings, events))
    if signal_after is not None:
        # a SIGTERM before the worker installs its handler (still importing, on a busy machine) just kills it
        wait_until(lambda: _answers(f"http://127.0.0.1:{settings.worker.http_port}/healthz"), 60,
                   "the worker to serve its probes")
        time.sleep(signal_after)
        first.send_signal(signal.SIGTERM)
    wait_until(lambda: first.poll() is not None, 60, f"the worker to die at {point}")
    assert first.returncode == -9, f"the worker exited with {first.returncode} instead of dying at {point}"
    keys_before = object_keys(settings)
    worker()
    wait_until(lambda: hours_complete(settings, hours), 120, "every hour to be written and marked complete")
    expected = sorted(ev["insert_id"] for ev, _ in events)
    # an hour the exporter sealed by the clock while the restarted dedupe stage was still recovering gets the
    # replayed events as stragglers, in an extra object of that hour: wait for them too
    try:
        wait_until(lambda: len(exported(settings)) >= len(expected), 60, "every event exported")
    except AssertionError as exc:
        missing = sorted(set(expected) - set(exported(settings)))
        raise AssertionError(f"{exc}; missing {missing}\n{pipeline(settings)}") from None
    assert exported(settings) == expected                 # no loss, no duplicate
    # the status view counts each object once, whatever the kill made the worker write again
    assert status_counts(settings) == (len(object_keys(settings)), len(expected))
    assert keys_before <= object_keys(settings)          # objects written before the kill keep their keys
    if events is EVENTS:                                 # and every merge exactly once
        try:
            wait_until(lambda: merges_written(settings), 120, "every merge on S3")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{pipeline(settings)}") from None
        merges = merge_lines(settings)
        merged = [m["merged_amplitude_id"] for m in merges]
        assert len(merged) == MERGES and len(set(merged)) == MERGES
        # same ids across the kill: no id allocated twice for a device or pair, none lost, partition by partition
        ids = {r["amplitude_id"] for r in rows(settings, object_keys(settings))} | set(merged) | {
            m["amplitude_id"] for m in merges}
        assert len(ids) == ALLOCATED
        for p in {i % 1024 for i in ids}:
            mine = sorted(i for i in ids if i % 1024 == p)
            assert mine == [k * 1024 + p for k in range(1, len(mine) + 1)]


@pytest.mark.parametrize("point", [p for p in NAMES if p not in MULTIPART and p != "worker.stopping"
                                   and not p.startswith(("import.", "cohorts.", "mirror.", "profiles.", "backfill."))])
def test_killing_the_worker_at_each_point_neither_loses_nor_duplicates(deployment, worker, point):
    """Every stage replays what it had not committed; the exporter drops the replays by their source offsets."""
    settings = exporting_merged_ids(deployment[1])
    asyncio.run(ensure_topics(settings))
    crash_then_recover(settings, worker, point)


@pytest.mark.parametrize("point", MULTIPART)
def test_killing_the_worker_in_a_multipart_upload_neither_loses_nor_duplicates(deployment, worker, point):
    """Objects over s3.upload_part_bytes go up in parts: a kill between parts leaves an incomplete upload, which
    the restarted worker uploads again whole, under the same key."""
    settings, path = deployment
    cfg = yaml.safe_load(path.read_text())
    cfg["s3"]["upload_part_bytes"] = 5 * 1024 * 1024
    cfg["ingest"]["max_clock_skew_s"] = 86_400    # the events below are stamped hours ahead on purpose
    path.write_text(yaml.safe_dump(cfg))
    settings = load_settings(path)
    asyncio.run(ensure_topics(settings))
    rnd = random.Random(3)
    # an hour two hours ahead, so the clock never closes it while the events trickle in: the data does, with the
    # last event. About 16 MB of rows of one device that compress to about 8: one object, two parts.
    hour = int(time.time() * 1000) // HOUR * HOUR + 2 * HOUR
    big = [({"event_type": "Upload", "device_id": "device-big1", "insert_id": f"big-{i}",
             "event_properties": {"blob": rnd.randbytes(200_000).hex()}}, hour + i) for i in range(40)]
    closing = ({"event_type": "Tick", "device_id": "device-big1", "insert_id": "next-hour"}, hour + HOUR + 2_000)
    first = worker(env={"STREAM_CRASH_AT": point})
    asyncio.run(produce(settings, big + [closing]))
    wait_until(lambda: first.poll() is not None, 60, f"the worker to die at {point}")
    assert first.returncode == -9
    worker()
    partition = partition_for("device-big1", settings.topics.partitions)

    def sealed():
        recs = [LedgerRecord.decode(m.value) for m in asyncio.run(read_all(settings, settings.topics.name(
            "export_ledger")))]
        return [r for r in recs if r.kind == "object"] if any(
            r.kind == "seal" and r.partition == partition and r.hour >= hour for r in recs) else None
    objects = wait_until(sealed, 120, "the hour's object and the partition's seal")
    assert [r.events for r in objects] == [40]
    assert exported(settings) == sorted(ev["insert_id"] for ev, _ in big)
    head = boto3.client("s3", endpoint_url=settings.s3.endpoint_url).head_object(
        Bucket=settings.destinations[0].bucket, Key=objects[0].key)
    assert head["ContentLength"] > 5 * 1024 * 1024 and head["ETag"].endswith('-2"')   # a two-part upload


def test_killing_the_worker_as_it_starts_to_stop_neither_loses_nor_duplicates(deployment, worker):
    settings = exporting_merged_ids(deployment[1])
    asyncio.run(ensure_topics(settings))
    crash_then_recover(settings, worker, "worker.stopping", signal_after=3)


@pytest.mark.parametrize("point", ["export.uploaded", "export.ledgered", "export.committed"])
def test_killing_the_exporter_alone_neither_loses_nor_duplicates(deployment, worker, point):
    """The export stage alone is killed and restarted; ingest and dedupe run on in another worker."""
    settings, _ = deployment
    asyncio.run(ensure_topics(settings))
    worker("--stages", "ingest,dedupe", http_port=free_port())
    exporter = worker("--stages", "export", http_port=free_port(), env={"STREAM_CRASH_AT": point})
    asyncio.run(produce(settings))
    wait_until(lambda: exporter.poll() is not None, 60, f"the exporter to die at {point}")
    assert exporter.returncode == -9
    keys_before = object_keys(settings)
    worker("--stages", "export", http_port=free_port())
    wait_until(lambda: hours_complete(settings), 120, "every hour to be written and marked complete")
    assert exported(settings) == sorted(ev["insert_id"] for ev, _ in EVENTS)
    assert keys_before <= object_keys(settings)


SOAK_EVENTS = [({"event_type": "Page Viewed", "device_id": f"device-{i % 13:04d}", "insert_id": f"soak-{i}"},
                H7 + i * 20_000) for i in range(1500)]   # about eight hours of data, 180 events an hour


def test_a_soak_of_random_kills_while_events_flow_neither_loses_nor_duplicates(deployment, worker):
    """SIGKILL the worker at random moments (seeded) while a producer streams events, then let one finish."""
    cycles = int(os.environ.get("STREAM_SOAK_CYCLES", "10"))
    rnd = random.Random(int(os.environ.get("STREAM_SOAK_SEED", "7")))
    settings, _ = deployment
    asyncio.run(ensure_topics(settings))

    async def stream_events():
        p = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, linger_ms=5)
        await p.start()
        try:
            for i, (ev, ts) in enumerate(SOAK_EVENTS):
                await p.send(settings.topics.name("ingest"), orjson.dumps(ev), timestamp_ms=ts)
                if i % 50 == 49:   # 30 pauses: the stream lasts about as long as the kills (4.75 s each)
                    await asyncio.sleep(cycles * 4.75 / 30)
            await p.flush()
        finally:
            await p.stop()

    producer = threading.Thread(target=asyncio.run, args=(stream_events(),))
    producer.start()
    for _ in range(cycles):
        w = worker()
        time.sleep(rnd.uniform(2.5, 7.0))   # during start-up, joins, processing, uploads
        w.kill()
        w.wait()
    producer.join()
    worker()
    recovering = time.monotonic()
    hours = sorted({time.strftime("%Y-%m-%d_%-H", time.gmtime(ts // 1000)) for _, ts in SOAK_EVENTS})
    wait_until(lambda: hours_complete(settings, hours), 180, "every hour to be written and marked complete")
    got = exported(settings)
    print(f"soak: {cycles} kills, {len(SOAK_EVENTS)} events, {len(got)} exported, {len(object_keys(settings))} "
          f"objects; the last worker finished {time.monotonic() - recovering:.1f}s after it started")
    assert got == sorted(ev["insert_id"] for ev, _ in SOAK_EVENTS)
    assert status_counts(settings) == (len(object_keys(settings)), len(got))
