"""A source of profiles end to end against the broker and S3: a file of INSERT/UPDATE/DELETE rows -> imports.files ->
profiles.mutations -> the profiles stage's table -> GET /admin/profiles, with the bad rows dead-lettered; the same
file discovered again, and the same mutations handed over again, change nothing; the day's snapshot of the changed
profiles is written once to the destination that exports profiles."""

import asyncio
import gzip
import time

import boto3
import orjson
import pytest
import yaml
from aiokafka import AIOKafkaProducer

from stream.clock import FakeClock
from stream.events import deadletter
from stream.export import profiles_snapshot
from stream.export.profiles_snapshot import GRACE_MS
from stream.imports import ops, profiles
from stream.imports.files import ImportFile
from stream.imports.profiles import DAY_MS
from stream.kafka import ensure_topics, read_all
from stream.settings import load_settings
from tests.integration.conftest import wait_until
from tests.integration.test_admin import call
from tests.integration.test_import import T0, discover, worker_counters

pytestmark = pytest.mark.integration

FUNC = {"user_id": "user", "user_properties": {"plan": "plan", "age": "age"}, "$mutation_type": "op"}
PROJECT = 424242


def profiles_file():
    rows = [{"user": "user-1", "plan": "free", "age": 30, "op": "INSERT"},
            {"user": "user-1", "plan": "pro", "op": "update"},        # the whole profile: age is gone
            {"user": "user-2", "plan": "free", "age": 40, "op": "Insert"},
            {"user": "user-2", "op": "DELETE"},
            {"user": "user-3", "plan": "team", "age": 50},              # no type: an UPDATE
            {"user": "user-4", "plan": "free", "op": "UPSERT"},         # invalid_mutation_type
            {"plan": "free", "op": "INSERT"}]                           # missing_user_id
    return b"\n".join(orjson.dumps(r) for r in rows) + b"\n"


def profiles_source(deployment):
    settings, path = deployment
    src_bucket = settings.destinations[0].bucket + "-src"
    s3 = boto3.client("s3", endpoint_url=settings.s3.endpoint_url)
    s3.create_bucket(Bucket=src_bucket)
    cfg = yaml.safe_load(path.read_text())
    cfg["sources"] = [{"name": "people", "project": PROJECT, "bucket": src_bucket, "prefix": "in/",
                       "data_type": "profiles", "strategy": "mirror", "scan": {"enabled": False},
                       "converter": {"converterConfig": {"convertToAmplitudeFunc": FUNC}}}]
    cfg["destinations"].append({"name": "crm", "project": PROJECT, "bucket": settings.destinations[0].bucket,
                                "prefix": "crm/", "exports": "profiles"})
    cfg["worker"]["stages"] = ["import", "profiles"]
    path.write_text(yaml.safe_dump(cfg))
    settings = load_settings(path)
    asyncio.run(ensure_topics(settings))
    return settings, s3, src_bucket


def lookup(settings, user):
    return call(settings, "GET", f"/admin/profiles/{PROJECT}/{user}")


def answered(settings, user):
    """The lookup's status, 0 while the worker's HTTP server is not up yet."""
    try:
        return lookup(settings, user)[0]
    except OSError:
        return 0


def ms_text(ms):
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ms / 1000))


def console_page(settings, user):
    """The console's profiles page for ``user``, signed in: (status, what its profile section holds, None when it has
    none)."""
    from tests.integration.conftest import ADMIN_TOKEN
    from tests.integration.test_console import http_request
    status, headers, _ = http_request(settings, "POST", "/console/login", {"token": ADMIN_TOKEN})
    assert status == 303
    cookie = headers["Set-Cookie"].split(";")[0]
    status, _, page = http_request(settings, "GET", f"/console/profiles?project={PROJECT}&user_id={user}",
                                   cookie=cookie)
    section = page.split('<section id="profile">\n', 1)[1].split("</section>", 1)[0] \
        if '<section id="profile">' in page else None
    return status, section


async def produce_again(settings, records):
    p = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    await p.start()
    try:
        for r in records:
            await p.send_and_wait(r.topic, r.value, key=r.key, partition=r.partition)
    finally:
        await p.stop()


def test_a_profiles_file_sets_replaces_and_deletes_profiles_once_and_the_admin_api_shows_them(deployment, worker):
    settings, s3, src_bucket = profiles_source(deployment)
    key = "in/people.json"
    s3.put_object(Bucket=src_bucket, Key=key, Body=profiles_file())
    modified_ms = int(s3.head_object(Bucket=src_bucket, Key=key)["LastModified"].timestamp() * 1000)
    url = f"s3://{src_bucket}/{key}"
    asyncio.run(discover(settings, [ImportFile("people", src_bucket, key, T0, "sqs")]))
    worker()
    wait_until(lambda: asyncio.run(ops.status(settings))[0]["files"]["done"] == 1, 90, "the profiles file imported")
    assert asyncio.run(ops.status(settings))[0]["rows"] == {"read": 7, "imported": 5, "dead_lettered": 2}

    wait_until(lambda: answered(settings, "user-3") == 200, 90, "the profiles applied")
    status, doc = lookup(settings, "user-1")
    assert status == 200
    assert (doc["project"], doc["user_id"], doc["user_properties"], doc["set_by"]) == (
        PROJECT, "user-1", {"plan": "pro"}, {"file": url, "row": 2, "file_modified_ms": modified_ms})
    assert lookup(settings, "user-3")[1]["user_properties"] == {"plan": "team", "age": 50}
    assert console_page(settings, "user-3") == (200, (
        f'  <h2>User <code>user-3</code> of project {PROJECT}</h2>\n'
        f'  <p>Last changed {ms_text(lookup(settings, "user-3")[1]["updated_ms"])}, set by row 5 of <code>{url}</code>.'
        '</p>\n  <div class="scroll"><table id="properties">\n'
        '    <thead><tr><th scope="col">property</th><th scope="col">value</th></tr></thead>\n    <tbody>\n'
        '    <tr><th scope="row">age</th><td><pre>50</pre></td></tr>\n'
        '    <tr><th scope="row">plan</th><td><pre>&#34;team&#34;</pre></td></tr>\n'
        '    </tbody>\n  </table></div>\n'))
    assert console_page(settings, "user-2") == (404, None)
    assert lookup(settings, "user-2") == (404, {"error": f"the profile of user 'user-2' in project {PROJECT} was "
                                                         f"deleted, by row 4 of {url}"})
    assert lookup(settings, "user-9") == (404, {"error": f"no profile of user 'user-9' in project {PROJECT}: no row "
                                                         "of a source of profiles has set one yet (a file not "
                                                         "imported yet, or one whose profiles stage has not applied "
                                                         "it: see stream import status and the stage's consumer "
                                                         "lag)"})
    assert lookup(settings, "user-4")[0] == 404
    assert call(settings, "GET", "/admin/profiles/7/user-1") == (404, {
        "error": f"project 7 has no source of profiles (data_type: profiles), so no profiles are kept for it; "
                 f"projects with one: {PROJECT}"})

    deads = [deadletter.decode(m.value) for m in asyncio.run(read_all(settings, settings.topics.name("dead_letter")))]
    assert sorted((deadletter.source_of(d), d["reason"]) for d in deads) == [
        (f"{url}#6", "invalid_mutation_type"), (f"{url}#7", "missing_user_id")]
    records = asyncio.run(read_all(settings, settings.topics.name("profiles")))
    assert sorted((profiles.split_key(r.key)[1], r.partition) for r in records) == sorted(
        (u, profiles.partition(profiles.key(PROJECT, u), settings.topics.partitions))
        for u in ("user-1", "user-1", "user-2", "user-2", "user-3"))
    counted = {'stream_profile_mutations_total{op="insert",outcome="applied"}': 2,
               'stream_profile_mutations_total{op="update",outcome="applied"}': 2,
               'stream_profile_mutations_total{op="delete",outcome="applied"}': 1}
    assert worker_counters(settings, "stream_profile_mutations_total") == counted
    before = {u: lookup(settings, u) for u in ("user-1", "user-2", "user-3")}

    # the same file discovered again: skipped, nothing produced
    asyncio.run(discover(settings, [ImportFile("people", src_bucket, key, T0, "scan")]))
    wait_until(lambda: worker_counters(settings, "stream_import_files_total").get(
        'stream_import_files_total{outcome="skipped",reason="already_done",source="people"}') == 1, 60,
        "the second discovery skipped")
    assert len(asyncio.run(read_all(settings, settings.topics.name("profiles")))) == 5
    assert len(asyncio.run(read_all(settings, settings.topics.name("dead_letter")))) == 2

    # the same mutations handed over again (a crash before the commit): the latest of each user is written again,
    # the older ones change nothing
    asyncio.run(produce_again(settings, records))
    wait_until(lambda: sum(v for k, v in worker_counters(settings, "stream_profile_mutations_total").items()
                           if "replayed" in k or "stale" in k) == 5, 60, "the mutations handed over again")
    assert worker_counters(settings, "stream_profile_mutations_total") == {
        **counted, 'stream_profile_mutations_total{op="insert",outcome="stale"}': 2,
        'stream_profile_mutations_total{op="update",outcome="replayed"}': 2,
        'stream_profile_mutations_total{op="delete",outcome="replayed"}': 1}
    assert {u: lookup(settings, u) for u in ("user-1", "user-2", "user-3")} == before

    # the day's snapshot of the changed profiles, once the day is over: written once
    day = before["user-1"][1]["updated_ms"] // DAY_MS * DAY_MS
    tomorrow = FakeClock(day + DAY_MS + GRACE_MS)
    key = f"crm/{PROJECT}/profiles/{PROJECT}_profiles_{time.strftime('%Y-%m-%d', time.gmtime(day / 1000))}.json.gz"
    bucket = settings.destinations[0].bucket
    assert asyncio.run(profiles_snapshot.write_due(settings, FakeClock(day + DAY_MS))) == []     # not over yet
    assert asyncio.run(profiles_snapshot.write_due(settings, tomorrow)) == [f"s3://{bucket}/{key}"]
    body = gzip.decompress(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    lines = [orjson.loads(x) for x in body.splitlines()]
    assert [(x["app"], x["user_id"], x["user_properties"], x["deleted"]) for x in lines] == [
        (PROJECT, "user-1", {"plan": "pro"}, False), (PROJECT, "user-2", None, True),
        (PROJECT, "user-3", {"plan": "team", "age": 50}, False)]
    modified = s3.head_object(Bucket=bucket, Key=key)["LastModified"]
    assert asyncio.run(profiles_snapshot.write_due(settings, tomorrow)) == []
    assert s3.head_object(Bucket=bucket, Key=key)["LastModified"] == modified


@pytest.mark.parametrize("point", ["import.produced", "profiles.applied"])
def test_a_worker_killed_while_importing_or_applying_profiles_ends_with_the_same_profiles(deployment, worker, point):
    """Killed once the file's records are acknowledged (the file is read again: each record twice), or once the
    first profile is written (the table recovers from its changelog): the profiles end as without a crash."""
    settings, s3, src_bucket = profiles_source(deployment)
    key = "in/people.json"
    s3.put_object(Bucket=src_bucket, Key=key, Body=profiles_file())
    url = f"s3://{src_bucket}/{key}"
    asyncio.run(discover(settings, [ImportFile("people", src_bucket, key, T0, "sqs")]))
    first = worker(env={"STREAM_CRASH_AT": point})
    wait_until(lambda: first.poll() is not None, 60, f"the worker to die at {point}")
    assert first.returncode == -9
    worker()
    wait_until(lambda: asyncio.run(ops.status(settings))[0]["files"]["done"] == 1, 90, "the profiles file imported")
    wait_until(lambda: answered(settings, "user-3") == 200, 90, "the profiles applied")
    records = asyncio.run(read_all(settings, settings.topics.name("profiles")))
    assert len(records) == (10 if point == "import.produced" else 5)
    assert len({r.value for r in records}) == 5
    assert [lookup(settings, u)[1].get("user_properties") for u in ("user-1", "user-3")] == [
        {"plan": "pro"}, {"plan": "team", "age": 50}]
    assert lookup(settings, "user-2") == (404, {"error": f"the profile of user 'user-2' in project {PROJECT} was "
                                                         f"deleted, by row 4 of {url}"})


def test_the_worker_writes_the_days_snapshot_of_the_changed_profiles_on_its_own(deployment, worker):
    """The profiles stage's timer, its clock armed a day and the grace ahead (STREAM_PROFILES_SNAPSHOTS): the day's
    snapshot of a file's inserted, updated and deleted profiles, written by the worker to the destination that
    exports profiles, and nothing else there."""
    from stream.agents.profiles import SCHEDULE_ENV
    settings, s3, src_bucket = profiles_source(deployment)
    key = "in/people.json"
    s3.put_object(Bucket=src_bucket, Key=key, Body=profiles_file())
    asyncio.run(discover(settings, [ImportFile("people", src_bucket, key, T0, "sqs")]))
    worker()                    # its snapshot looks are 5 minutes apart, by its own clock: nothing is due today
    wait_until(lambda: answered(settings, "user-3") == 200 and answered(settings, "user-2") == 404, 90,
               "the profiles applied")
    worker.stop()
    bucket = settings.destinations[0].bucket

    def snapshots():
        return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="crm/").get("Contents", []))
    assert snapshots() == []
    stored = asyncio.run(profiles_snapshot.read_stored(settings))
    day = {p.changed_ms // DAY_MS * DAY_MS for p in stored.values()}
    assert len(day) == 1
    day = day.pop()

    worker(env={SCHEDULE_ENV: f"1:{DAY_MS + GRACE_MS}"})
    key = f"crm/{PROJECT}/profiles/{PROJECT}_profiles_{time.strftime('%Y-%m-%d', time.gmtime(day / 1000))}.json.gz"
    wait_until(lambda: snapshots() == [key], 90, "the day's snapshot written by the worker")
    lines = gzip.decompress(s3.get_object(Bucket=bucket, Key=key)["Body"].read()).splitlines()
    changed = {profiles.split_key(k)[1]: p.changed_ms for k, p in stored.items()}

    def ts(ms):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}000"
    assert [orjson.loads(x) for x in lines] == [
        {"app": PROJECT, "user_id": "user-1", "user_properties": {"plan": "pro"}, "deleted": False,
         "updated_time": ts(changed["user-1"])},
        {"app": PROJECT, "user_id": "user-2", "user_properties": None, "deleted": True,
         "updated_time": ts(changed["user-2"])},
        {"app": PROJECT, "user_id": "user-3", "user_properties": {"plan": "team", "age": 50}, "deleted": False,
         "updated_time": ts(changed["user-3"])}]
    assert worker_counters(settings, "stream_profile_snapshots_total") == {
        'stream_profile_snapshots_total{destination="crm"}': 1}


@pytest.mark.parametrize("point", ["profiles.snapshot_planned", "profiles.snapshot_written"])
def test_a_worker_killed_around_the_snapshots_put_ends_with_the_days_snapshot_written_once(deployment, worker, point):
    """Killed with the day's snapshot made and not put (the restarted worker puts it), or put (the restarted worker
    lists it and puts nothing): one object for the day, holding the day's changed profiles."""
    from stream.agents.profiles import SCHEDULE_ENV
    settings, s3, src_bucket = profiles_source(deployment)
    s3.put_object(Bucket=src_bucket, Key="in/people.json", Body=profiles_file())
    asyncio.run(discover(settings, [ImportFile("people", src_bucket, "in/people.json", T0, "sqs")]))
    worker()
    wait_until(lambda: answered(settings, "user-3") == 200 and answered(settings, "user-2") == 404, 90,
               "the profiles applied")
    worker.stop()
    bucket = settings.destinations[0].bucket
    stored = asyncio.run(profiles_snapshot.read_stored(settings))
    (day,) = {p.changed_ms // DAY_MS * DAY_MS for p in stored.values()}
    key = f"crm/{PROJECT}/profiles/{PROJECT}_profiles_{time.strftime('%Y-%m-%d', time.gmtime(day / 1000))}.json.gz"

    def snapshots():
        return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="crm/").get("Contents", []))
    schedule = {SCHEDULE_ENV: f"1:{DAY_MS + GRACE_MS}"}
    first = worker(env={**schedule, "STREAM_CRASH_AT": point})
    wait_until(lambda: first.poll() is not None, 90, f"the worker to die at {point}")
    assert first.returncode == -9
    assert snapshots() == ([] if point == "profiles.snapshot_planned" else [key])
    worker(env=schedule)
    wait_until(lambda: snapshots() == [key] and answered(settings, "user-3") == 200, 90,
               "the day's snapshot written and the restarted worker up")
    time.sleep(5)               # about five looks of the restarted worker (one a second): none puts the day again
    assert snapshots() == [key]
    assert worker_counters(settings, "stream_profile_snapshots_total") == (
        {'stream_profile_snapshots_total{destination="crm"}': 1} if point == "profiles.snapshot_planned" else {})
    body = gzip.decompress(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert body.splitlines() == profiles.snapshot_body(stored, PROJECT, day).splitlines()
    assert [orjson.loads(x)["user_id"] for x in body.splitlines()] == ["user-1", "user-2", "user-3"]


SLOW = {"fetch_min_bytes": 50 << 20, "fetch_max_wait_ms": 1000}
"""Consumer settings that make the broker hold each fetch 1 s (it waits for 50 MB that never come): longer than the
two polls of 300 ms after which a read that took two empty polls for the end stopped."""


async def write_changelog(settings, users):
    """The profiles of ``users`` written to the profiles table's changelog as the stage writes it (the latest record
    of a key is the profile; a deleted profile is its tombstone): a first batch of them all, then each user's profile
    set again by a record of its own; the profiles written."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from stream.topics import profiles_changelog
    topic, n = profiles_changelog(settings), settings.topics.partitions
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, n, 1, topic_configs={"cleanup.policy": "compact"})])
    finally:
        await admin.close()
    p = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, linger_ms=50)
    await p.start()
    written = {}
    try:
        for again in (0, 1):
            sent = []
            for i, user in enumerate(users):
                k = profiles.key(PROJECT, user)
                written[k] = profiles.Profile(None if (again and i % 10 == 3) else {"plan": f"plan-{again}-{i}"},
                                              (T0, "s3://people/in/p.json", 2 * i + again + 1), T0 + i)
                sent.append(await p.send(topic, profiles.encode(written[k]), key=k,
                                         partition=profiles.partition(k, n)))
                if again:
                    await sent[-1]
            await asyncio.gather(*sent)
    finally:
        await p.stop()
    return written


def test_reads_of_the_profiles_changelog_get_every_profile_when_the_broker_answers_slower_than_the_polls(deployment):
    """The snapshot writer's and the cohort syncs' read of every profile, and the admin lookup of one, when each
    fetch takes 1 s: every profile, as the changelog has it last (the changelog's partitions hold many batches,
    whose end offsets the local broker reports short)."""
    from stream.admin.profiles import read_profile
    settings, _ = deployment
    users = [f"user-{i}" for i in range(40)]
    written = asyncio.run(write_changelog(settings, users))
    assert len(written) == 40 and sum(p.deleted for p in written.values()) == 4

    stored = asyncio.run(profiles_snapshot.read_stored(settings, **SLOW))
    assert stored == written
    for user in ("user-0", "user-3", "user-39"):
        k = profiles.key(PROJECT, user)
        assert asyncio.run(read_profile(settings, PROJECT, user, **SLOW)) == written[k]
    assert asyncio.run(read_profile(settings, PROJECT, "user-40", **SLOW)) is None


def test_a_cohort_whose_rule_reads_a_profile_property_lists_the_users_the_imported_profiles_give_it(
        deployment, worker):
    """Buyers whose events carry no ``tier``; a profiles file sets it (gold for one, silver for another, and gold for
    a user who bought nothing): the cohort of gold buyers synced after the file is applied lists the one gold buyer,
    with the profile's tier."""
    from tests.integration.test_cohorts import H7, MIN, cohort_objects, start_state_worker
    from tests.integration.test_crash import produce
    from tests.integration.test_import import accepted_rows
    settings, s3, src_bucket = profiles_source(deployment)
    _, path = deployment
    bucket = settings.destinations[0].bucket
    cfg = yaml.safe_load(path.read_text())
    cfg["cohorts"] = [{"id": "gold-buyers", "project": PROJECT, "name": "Gold buyers", "rule": {"and": [
        {"performed": "purchase", "within_days": 2}, {"user_property": "tier", "op": "=", "value": "gold"}]}}]
    cfg["cohort_destinations"] = [{"name": "crm-cohorts", "bucket": bucket, "syncs": [
        {"cohort": "gold-buyers", "cadence": "hourly", "properties": ["tier"]}]}]
    func = {"user_id": "user", "user_properties": {"tier": "tier"}, "$mutation_type": "op"}
    cfg["sources"][0]["converter"] = {"converterConfig": {"convertToAmplitudeFunc": func}}
    start_state_worker(worker, path, cfg, bucket, stages="ingest,dedupe,export,cohorts,import,profiles")
    settings = load_settings(path)

    buys = [({"event_type": "purchase", "device_id": f"device-{u}", "user_id": f"user-{u}", "insert_id": f"ins-{u}",
              "time": H7 + i * MIN, "user_properties": {"plan": "any"}}, H7 + i * MIN)
            for i, u in enumerate(("gold", "silver", "none"))]
    asyncio.run(produce(settings, buys))
    wait_until(lambda: len(accepted_rows(settings)) == 3, 60, "the purchases on events.accepted")
    rows = [{"user": "user-gold", "tier": "gold", "op": "INSERT"}, {"user": "user-silver", "tier": "silver"},
            {"user": "user-idle", "tier": "gold"}]
    s3.put_object(Bucket=src_bucket, Key="in/tiers.json", Body=b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
    asyncio.run(discover(settings, [ImportFile("people", src_bucket, "in/tiers.json", T0, "sqs")]))
    wait_until(lambda: answered(settings, "user-idle") == 200, 90, "the profiles applied")

    from click.testing import CliRunner

    from stream.cli import main
    result = CliRunner().invoke(main, ["cohorts", "sync", "gold-buyers", "-c", str(path), "--now",
                                       "2024-03-09T08:30Z"])
    assert result.exit_code == 0, result.output
    assert "complete: 1 members, 1 entering, 0 exiting" in result.output, result.output
    (aid,) = {r["amplitude_id"] for r in accepted_rows(settings) if r["user_id"] == "user-gold"}
    head, member = b"amplitudeID,userID,tier\r\n", b"%d,user-gold,gold\r\n" % aid
    f = f"cohorts/{PROJECT}_gold-buyers_2024-03-09T08:00_"
    assert cohort_objects(s3, bucket) == {f + "entering.csv": head + member, f + "exiting.csv": head,
                                          f + "existing.csv": head + member}
