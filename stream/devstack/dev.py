"""``stream dev``: the whole pipeline on this machine, with sample events, printing objects as they land."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import boto3
import orjson
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from stream.devstack.sample import SampleEvents
from stream.devstack.services import Service, free_port, local_aws_env, start_broker, start_moto
from stream.events import deadletter
from stream.events.batch import EventBatch
from stream.events.timefmt import HOUR_MS, hour_label
from stream.export.ledger import LedgerRecord
from stream.identity.records import decode_remaps

PROJECT = 424242
ORG = 55
BUCKET = "stream-dev"
IMPORT_BUCKET = "stream-dev-import"
IMPORT_QUEUE = "stream-dev-import"
IMPORT_SOURCE = "clicks"
# the converter of the demo's import source, as Amplitude's docs write one: columns of a clickstream export
IMPORT_CONVERTER = {"converterConfig": {"convertToAmplitudeFunc": {
    "event_type": "action", "user_id": "uid", "device_id": "device", "time": ["iso_time_to_ms", "at"],
    "insert_id": "id", "event_properties": {"page": "page", "plan": "plan"}, "platform": "platform"}}}


MIRROR_SOURCE = "corrections"
# the mirror source's converter: the same columns, plus the mutation type in "op"
MIRROR_CONVERTER = {"converterConfig": {"convertToAmplitudeFunc": {
    **IMPORT_CONVERTER["converterConfig"]["convertToAmplitudeFunc"], "$mutation_type": "op"}}}


COHORT_DESTINATION = "local-cohorts"
STATIC_COHORT = "vips"
# two cohorts over the sample users: a behavioral one, and a static one whose user ids the demo uploads. Their syncs
# are "once", stamped when the worker's cohorts stage first schedules them, before the sample events exist: those
# complete empty. Once the sample hours are accepted, the demo asks the worker for another sync of each through the
# admin API's "sync now" (the console's button), and prints what it wrote.
DEV_COHORTS = [{"id": "buyers", "project": PROJECT, "name": "Bought in the last 2 days",
                "rule": {"performed": "Order Completed", "within_days": 2}},
               {"id": STATIC_COHORT, "project": PROJECT, "name": "VIPs (an uploaded list)", "static": True}]

API_KEY = "dev-api-key"
WRITE_KEY = "dev-write-key"
SOURCE_ID = "dev-source"


def dev_config(bootstrap: str, s3_url: str, data_dir: Path, http_port: int | None = None,
               api_port: int = 8080, import_queue: str | None = None,
               stages: tuple[str, ...] = ("ingest", "dedupe", "export", "import", "mirror", "profiles",
                                          "cohorts")) -> dict:
    """The configuration ``stream dev`` runs the worker and the API with (also a small example); ``stages``: the
    worker's."""
    fast = {"encryption": {"type": "sse-s3"}, "close_grace_s": 5, "idle_close_s": 2}
    # every kind of output: events in Amplitude's layout with _complete markers and the merged-IDs files beside
    # them, and events in Segment's layout
    return {
        "kafka": {"bootstrap_servers": bootstrap, "session_timeout_s": 2, "heartbeat_interval_s": 0.5},
        "topics": {"partitions": 2, "ingest_partitions": 2},
        "ingest": {"default_project": PROJECT},
        "s3": {"endpoint_url": s3_url},
        "worker": {"app_id": "stream-dev", "data_dir": str(data_dir), "log_level": "info", "http_port": http_port,
                   "stages": list(stages)},
        "api": {"host": "127.0.0.1", "port": api_port},
        "projects": [{"id": PROJECT, "name": "demo", "api_keys": [API_KEY],
                      "segment_sources": [{"write_key": WRITE_KEY, "source_id": SOURCE_ID}]}],
        # the Amplitude-layout destination is the project's archive: the system of record a mirror source's
        # mutations are kept beside, and older hours are rebuilt from
        "destinations": [{"name": "local", "project": PROJECT, "bucket": BUCKET, "prefix": "amp/",
                          "exports": "both", "org_id": ORG, "archive": True, **fast},
                         {"name": "local-segment", "project": PROJECT, "bucket": BUCKET, "prefix": "segment/",
                          "layout": "segment", **fast}],
        # files dropped on another bucket, announced by S3 notifications through SQS (and found by the scan)
        "sources": [{"name": IMPORT_SOURCE, "project": PROJECT, "bucket": IMPORT_BUCKET, "prefix": "clicks/",
                     "converter": IMPORT_CONVERTER, "queue_url": import_queue, "scan": {"interval_s": 30}},
                    # corrections of exported events (INSERT, UPDATE, DELETE rows) that rewrite the hours they are in
                    {"name": MIRROR_SOURCE, "project": PROJECT, "bucket": IMPORT_BUCKET, "prefix": "corrections/",
                     "strategy": "mirror", "converter": MIRROR_CONVERTER, "queue_url": import_queue,
                     "scan": {"interval_s": 30}}],
        "cohorts": DEV_COHORTS,
        # the demo's events reach events.accepted in upload order: a sync waits 2 s, not a minute, for late ones
        "cohort_state": {"grace_s": 2},
        "cohort_destinations": [{"name": COHORT_DESTINATION, "bucket": BUCKET, "path_prefix": "cohorts/",
                                 "encryption": {"type": "sse-s3"}, "syncs": [
                                     {"cohort": c["id"], "cadence": "once", "properties": ["plan"]}
                                     for c in DEV_COHORTS]}],
    }


def curl_lines(api_url: str) -> list[str]:
    """A ready request per vendor against the local API."""
    amp = ('{"api_key":"%s","events":[{"event_type":"Signed Up","user_id":"user-00001","insert_id":"curl-1"}]}'
           % API_KEY)
    seg = '{"userId":"user-00001","event":"Plan Upgraded","properties":{"plan":"pro"}}'
    return [f"curl -s {api_url}/2/httpapi -H 'Content-Type: application/json' -d '{amp}'",
            f"curl -s -u {WRITE_KEY}: {api_url}/v1/track -H 'Content-Type: application/json' -d '{seg}'"]


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return True
        except OSError:
            time.sleep(0.2)
    return False


def run_dev(workdir: Path, exit_after: float | None, rate: float, backfill: int, say: Callable[[str], None]) -> int:
    workdir = workdir.resolve()
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    # SIGTERM (a supervisor, `timeout`) stops everything we started, as Ctrl-C does
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    os.environ.update(local_aws_env())
    started: list[Service] = []
    children: list[tuple[str, subprocess.Popen]] = []
    t0 = time.monotonic()
    try:
        say("starting the local stack on 127.0.0.1 ...")
        broker = start_broker(workdir / "logs")
        started.append(broker)
        moto = start_moto(workdir / "logs")
        started.append(moto)
        bootstrap, s3_url = f"127.0.0.1:{broker.port}", f"http://127.0.0.1:{moto.port}"
        say(f"  kafka broker (Tansu)   {bootstrap}   pid {broker.pid}")
        say(f"  S3 endpoint (moto)     {s3_url}   pid {moto.pid}")
        boto3.client("s3", endpoint_url=s3_url).create_bucket(Bucket=BUCKET)
        boto3.client("s3", endpoint_url=s3_url).create_bucket(Bucket=IMPORT_BUCKET)
        queue = boto3.client("sqs", endpoint_url=s3_url).create_queue(QueueName=IMPORT_QUEUE)["QueueUrl"]
        cfg = workdir / "stream.yaml"
        data_dir = workdir / "data"
        # the local broker starts empty: state kept from an earlier run (RocksDB tables, spool files) would
        # describe topics that no longer exist, and the worker would refuse to start on it
        if data_dir.exists():
            shutil.rmtree(data_dir)
            say(f"  removed the previous run's worker state in {data_dir} (the local broker starts empty)")
        http_port, api_port = free_port(), free_port()
        cfg.write_text(yaml.safe_dump(dev_config(bootstrap, s3_url, data_dir, http_port, api_port, queue),
                                      sort_keys=False))
        from stream.imports.setup import setup_source
        from stream.settings import load_settings
        for name, merge in ((IMPORT_SOURCE, False), (MIRROR_SOURCE, True)):   # one queue, two prefixes
            for line in asyncio.run(setup_source(load_settings(cfg), name, merge=merge, dry_run=False)):
                say(f"  import setup: {line}")
        log = open(workdir / "logs" / "worker.log", "wb")
        token = secrets.token_urlsafe(32)   # the admin token of this run: the worker's status and admin API
        worker = subprocess.Popen([sys.executable, "-m", "stream", "worker", "-c", str(cfg)], stdout=log,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                  env={**os.environ, "STREAM_ADMIN__TOKEN": token})
        children.append(("worker", worker))
        say(f"  worker                 pid {worker.pid}, config {cfg}, log {workdir / 'logs' / 'worker.log'}")
        say(f"                         http://127.0.0.1:{http_port}/metrics  /readyz  (open)")
        say(f"  admin token            {token}")
        say(f"  web console            http://127.0.0.1:{http_port}/console/   (sign in with the admin token; its "
            "Cohorts page: Sync now)")
        say(f"                         curl -H 'Authorization: Bearer {token}' "
            f"http://127.0.0.1:{http_port}/exports/status")
        api_log = open(workdir / "logs" / "api.log", "wb")
        api = subprocess.Popen([sys.executable, "-m", "stream", "api", "-c", str(cfg)], stdout=api_log,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        children.append(("api", api))
        api_url = f"http://127.0.0.1:{api_port}"
        if not _wait_ready(api_url + "/readyz", api):
            say(f"the HTTP API did not become ready; see {workdir / 'logs' / 'api.log'}")
            return 1
        say(f"  HTTP API               {api_url}   pid {api.pid} (Amplitude /2/httpapi /batch, Segment /v1/*)")
        say("send your own events (or point an SDK at the URL above):")
        for line in curl_lines(api_url):
            say(f"  {line}")
        say(f"bucket s3://{BUCKET}/ -- to look inside while this runs:")
        say(f"  stream s3 ls s3://{BUCKET}/ --endpoint-url {s3_url}")
        say(f"  stream s3 cat 's3://{BUCKET}/amp/{PROJECT}/<file>.json.gz' --endpoint-url {s3_url}")
        say(f"  stream exports status -c {cfg}")
        say(f"  stream deadletters tail -c {cfg}      (rejected inputs, with reason and source)")
        say(f"  stream deadletters summary -c {cfg}")
        say(f"  stream import status -c {cfg}        (files dropped on s3://{IMPORT_BUCKET}/clicks/ and imported)")
        say(f"  stream import preview {IMPORT_SOURCE} -c {cfg}")
        say(f"  stream cohorts history buyers -c {cfg}   (the demo's cohorts: buyers, {STATIC_COHORT})")
        return asyncio.run(_run(bootstrap, worker, exit_after, rate, backfill, say, t0, s3_url, cfg,
                                f"http://127.0.0.1:{http_port}", token))
    except KeyboardInterrupt:
        say("\ninterrupted")
        return 130
    finally:
        for name, proc in reversed(children):
            if proc.poll() is None:
                say(f"stopping {name} (pid {proc.pid}) ...")
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(45)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for svc in reversed(started):
            say(f"stopping {svc.name} (pid {svc.pid})")
            svc.stop()


class _ValidCounter:
    """Counts the events the worker has validated (events.valid), to pace the demo's backfill."""

    def __init__(self, bootstrap: str):
        self.consumer = AIOKafkaConsumer("events.valid", bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                         enable_auto_commit=False)
        self.count = 0

    async def wait_for(self, expected: int, say: Callable[[str], None], timeout: float = 90) -> None:
        deadline, shown = time.monotonic() + timeout, False
        while self.count < expected and time.monotonic() < deadline:
            for recs in (await self.consumer.getmany(timeout_ms=500)).values():
                # events.valid also carries the identity stage's remap messages, which hold no event
                self.count += sum(len(EventBatch.decode(r.value)) for r in recs if decode_remaps(r.value) is None)
            if self.count < expected and not shown:
                say("  waiting for the worker to read them ...")
                shown = True


def file_lines(body: bytes, first: int = 4) -> list[str]:
    """The first lines of a cohort sync file (its header included), as text."""
    return body.decode("utf-8", "replace").split("\r\n")[:first]


def sync_now_lines(cohort: str, answer: dict) -> list[str]:
    """What "sync now" (``POST /admin/cohorts/{id}/syncs``) answered, one line per sync of the cohort."""
    return [f"sync now: {cohort} -> {s['destination']} ({s['cadence']}): {s['state']}" for s in answer["syncs"]]


def completed_syncs(doc: dict) -> list[dict]:
    """The completed syncs of a cohort's ``GET /admin/cohorts/{id}`` document (its history), oldest first."""
    return [r for r in doc["history"] if r["state"] == "complete"]


def _admin(url: str, token: str, method: str = "GET", body: bytes | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method=method, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read() or b"{}")


def asked_syncs(answer: dict) -> list[tuple[str, str, int | None]]:
    """(destination, routing key, time) of each sync a "sync now" answer names: the time it queued (None: complete
    already, the latest completed is shown)."""
    return [(s["destination"], s["routing_key"], s["scheduled_ms"] if s["state"] == "queued" else None)
            for s in answer["syncs"]]


def wanted_syncs(doc: dict, asked: list[tuple[str, str, int | None]]) -> list[dict] | None:
    """The completed syncs of a cohort's document that "sync now" asked for (``asked_syncs``): per sync, the first
    completed at or after the time asked (a minute begun between the answer and the sync stamps it later), or the
    latest completed one; None while one of them is not complete."""
    out = []
    for dest, key, t in asked:
        done = [r for r in completed_syncs(doc) if (r["destination"], r["routing_key"]) == (dest, key)]
        found = [r for r in done if r["scheduled_ms"] >= t][:1] if t is not None else done[-1:]
        if not found:
            return None
        out.append(found[0])
    return out


async def cohort_demo(cfg: Path, user_ids: list[str], say: Callable[[str], None], t0: float, s3_url: str,
                      admin: str, token: str, timeout: float = 60) -> None:
    """Upload the static cohort's user ids (some of the sample users, and one without events), ask the worker
    (its admin API at ``admin``) for another sync of both demo cohorts ("sync now": their once syncs were stamped
    as the worker started, before the sample events existed; the sync now answers is stamped after the request, so
    it counts them, and is diffed against the first), wait for them to complete, and print each file's key and
    first lines."""
    from stream.cohorts import static
    from stream.cohorts.sync import _s3_storage, stamp
    from stream.settings import load_settings
    settings = load_settings(cfg)
    dest = settings.cohort_destination(COHORT_DESTINATION)
    now = int(time.time() * 1000)
    doc = await static.upload([dest], lambda d: _s3_storage(settings, d), settings.cohort_set.cohort(STATIC_COHORT),
                              user_ids, now, "stream dev")
    say(f"[{time.monotonic() - t0:5.1f}s] uploaded {doc['members']} user ids to the static cohort {STATIC_COHORT}: "
        f"{', '.join(doc['stored'])}")
    deadline, shown = time.monotonic() + timeout, False
    pending = [c["id"] for c in DEV_COHORTS]
    asked: dict[str, list[tuple[str, str, int | None]]] = {}
    while pending and time.monotonic() < deadline:     # 409 until the stage has started its scheduler
        cohort = pending[0]
        try:
            status, answer = await asyncio.to_thread(_admin, f"{admin}/admin/cohorts/{cohort}/syncs", token, "POST",
                                                     b"{}")
        except OSError:
            status, answer = 0, {}
        if status == 202:
            pending.pop(0)
            asked[cohort] = asked_syncs(answer)
            for line in sync_now_lines(cohort, answer):
                say(f"[{time.monotonic() - t0:5.1f}s] {line} (POST {admin}/admin/cohorts/{cohort}/syncs)")
            continue
        if not shown:
            say(f"[{time.monotonic() - t0:5.1f}s] waiting for the cohorts stage to start ...")
            shown = True
        await asyncio.sleep(0.5)
    if pending:
        say(f"the cohorts stage did not answer sync now within {timeout:g} s; see "
            f"{cfg.parent / 'logs' / 'worker.log'}")
        return
    s3 = boto3.client("s3", endpoint_url=s3_url)
    waiting = [c["id"] for c in DEV_COHORTS]
    latest = max((t for syncs in asked.values() for _, _, t in syncs if t is not None), default=None)
    if latest is not None:      # a sync is stamped to the minute: one asked within the minute of the last waits
        deadline = max(deadline, time.monotonic() + max(0.0, latest / 1000 - time.time()) + timeout)
        say(f"[{time.monotonic() - t0:5.1f}s] waiting for the syncs of {stamp(latest)} UTC: each reads the cohort "
            "state once it has passed the sync's time")
    while waiting and time.monotonic() < deadline:
        cohort = waiting[0]
        status, doc = await asyncio.to_thread(_admin, f"{admin}/admin/cohorts/{cohort}", token)
        done = wanted_syncs(doc, asked[cohort]) if status == 200 else None
        if not done:
            await asyncio.sleep(0.5)
            continue
        waiting.pop(0)
        for r in done:
            since = f"since the sync of {r['previous']}" if r.get("previous") else "the first sync"
            say(f"[{time.monotonic() - t0:5.1f}s] cohort sync {cohort} -> {r['destination']}: {r['members']} members, "
                f"{r['entering']} entering, {r['exiting']} exiting ({r['stamp']} UTC, {since})")
            for key in r["keys"].values():
                body = (await asyncio.to_thread(s3.get_object, Bucket=r["bucket"], Key=key))["Body"].read()
                say(f"    s3://{r['bucket']}/{key}")
                for line in file_lines(body):
                    if line:
                        say(f"      {line}")
    if waiting:
        say(f"the syncs of {', '.join(waiting)} did not complete in time; see {cfg.parent / 'logs' / 'worker.log'}")
        return
    say(f"  the sync records: s3://{BUCKET}/{dest.records_prefix}{dest.name}/; the console's Cohorts page shows "
        "them, with each file")


class _AcceptedCounter:
    """Counts the events on events.accepted, to sync the demo's cohorts once the sample hours are there."""

    def __init__(self, bootstrap: str):
        self.bootstrap = bootstrap

    async def wait_for(self, expected: int, timeout: float) -> int:
        c = AIOKafkaConsumer("events.accepted", bootstrap_servers=self.bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False)
        await c.start()
        count, deadline = 0, time.monotonic() + timeout
        try:
            while count < expected and time.monotonic() < deadline:
                for recs in (await c.getmany(timeout_ms=500)).values():
                    count += sum(len(EventBatch.decode(r.value)) for r in recs
                                 if r.value and decode_remaps(r.value) is None)
        finally:
            await c.stop()
        return count


def import_files(samples: SampleEvents, now_ms: int, rows: int = 40) -> dict[str, bytes]:
    """Two files of the demo's import source: gzip JSON lines with one line that is not JSON, and a CSV (with a
    BOM and CRLF line ends, as spreadsheets write them) with one row of the wrong width."""
    import csv
    import gzip
    import io

    import orjson
    from stream.events.timefmt import format_ms
    recs = []
    for i, s in enumerate(samples.stream(now_ms - 60_000, now_ms, rows * 3)):
        if s.kind != "event":
            continue
        ev = orjson.loads(s.value)
        if not ev.get("user_id"):     # an empty cell is not an id: the export's files name their users
            continue
        recs.append({"id": f"import-{i}", "uid": ev.get("user_id") or "", "device": ev.get("device_id") or "",
                     "action": ev["event_type"], "at": format_ms(ev["time"]).replace(" ", "T")[:19] + "Z",
                     "page": (ev.get("event_properties") or {}).get("page", "/"), "plan": "pro",
                     "platform": ev.get("platform") or "Web"})
        if len(recs) == rows:
            break
    day = time.strftime("%Y-%m-%d", time.gmtime(now_ms / 1000))
    lines = [orjson.dumps(r) for r in recs[: rows // 2]]
    lines.insert(3, b'{"id": "import-broken", "uid": ')          # cut short: a dead letter, malformed_json
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(recs[0]), lineterminator="\r\n")
    w.writeheader()
    for i, r in enumerate(recs[rows // 2:]):
        w.writerow(r)
        if i == 2:
            buf.write("Page Viewed,user-without-columns\r\n")   # two fields for a header of eight: bad_csv_row
    return {f"clicks/{day}/export-0001.json.gz": gzip.compress(b"\n".join(lines) + b"\n"),
            f"clicks/{day}/export-0002.csv": ("\ufeff" + buf.getvalue()).encode()}


def mirror_file(rows: list[dict], day: str) -> tuple[str, bytes, dict[str, str]]:
    """A file of the demo's mirror source: an UPDATE of the first exported row given (a new event type) and a
    DELETE of the second; and what to expect of each insert_id (the new event type, or "deleted")."""
    import orjson
    first, second = rows[0], rows[1]
    lines = [{"op": "update", "id": first["$insert_id"], "uid": first["user_id"], "device": first["device_id"],
              "action": f"{first['event_type']} (corrected)", "at": first["event_time"].replace(" ", "T")[:19] + "Z",
              "page": "/corrected", "plan": "pro", "platform": first.get("platform") or "Web"},
             {"op": "delete", "id": second["$insert_id"], "uid": second["user_id"], "device": second["device_id"]}]
    return (f"corrections/{day}/fix-0001.json", b"".join(orjson.dumps(x) + b"\n" for x in lines),
            {first["$insert_id"]: f"{first['event_type']} (corrected)", second["$insert_id"]: "deleted"})


def hour_rows(s3, hour_ms: int) -> list[dict]:
    """The rows of an exported hour of the demo's Amplitude-layout destination, in key order."""
    import gzip

    import orjson
    day, hour = hour_label(hour_ms)
    prefix = f"amp/{PROJECT}/{PROJECT}_{day}_{hour}#"
    out = []
    for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", []):
        body = s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()
        out += [orjson.loads(x) for x in gzip.decompress(body).splitlines()]
    return out


async def _run(bootstrap: str, worker: subprocess.Popen, exit_after: float | None, rate: float, backfill: int,
               say: Callable[[str], None], t0: float, s3_url: str, cfg: Path | None = None,
               admin_url: str | None = None, token: str = "") -> int:
    produced: Counter[str] = Counter()
    exported = Counter()
    stop = asyncio.Event()

    async def produce() -> None:
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
        counter = _ValidCounter(bootstrap)
        await p.start()
        await counter.consumer.start()
        try:
            samples = SampleEvents(second_device_rate=0.15)   # users with two devices: merged ids
            now = int(time.time() * 1000)
            this_hour = now - now % HOUR_MS
            seen_users: dict[str, None] = {}
            for h in (this_hour - 2 * HOUR_MS, this_hour - HOUR_MS):
                day, hour = hour_label(h)
                for s in samples.stream(h, h + HOUR_MS - 1, backfill):
                    await p.send("events.ingest", s.value, key=s.key, timestamp_ms=s.timestamp_ms)
                    produced[s.kind] += 1
                    user_id = orjson.loads(s.value).get("user_id") if s.kind == "event" else None
                    if user_id and len(seen_users) < 5:
                        seen_users.setdefault(user_id, None)
                await p.flush()
                say(f"produced {backfill} sample events stamped {day} {hour}:00-{hour}:59 UTC")
                # Hours close when the data moves past them: let the worker read this hour before the next,
                # so the demo's compressed hours do not interleave (live traffic never needs this).
                await counter.wait_for(produced["event"] + produced["duplicate"], say)
            s3 = boto3.client("s3", endpoint_url=s3_url)
            for key, body in import_files(samples, int(time.time() * 1000)).items():
                await asyncio.to_thread(s3.put_object, Bucket=IMPORT_BUCKET, Key=key, Body=body)
                say(f"dropped s3://{IMPORT_BUCKET}/{key} ({len(body)} bytes) for the import source "
                    f"'{IMPORT_SOURCE}' (S3 notifies the queue)")
            if cfg is not None and admin_url is not None:
                # the cohorts count the events accepted before their sync: wait for the sample hours' events
                await _AcceptedCounter(bootstrap).wait_for(produced["event"], 30)
                try:
                    await cohort_demo(cfg, [*seen_users, "user-without-events"], say, t0, s3_url,
                                      admin_url, token)
                except Exception as exc:
                    say(f"the cohorts demo failed: {type(exc).__name__}: {exc}")
            say(f"producing {rate:g} live events/s (about 3% re-sent duplicates, 1% invalid) ...")
            while not stop.is_set():
                t = int(time.time() * 1000)
                for s in samples.stream(t, t + 1000, max(1, int(rate))):
                    await p.send("events.ingest", s.value, key=s.key, timestamp_ms=s.timestamp_ms)
                    produced[s.kind] += 1
                try:
                    await asyncio.wait_for(stop.wait(), 1.0)
                except TimeoutError:
                    pass
        finally:
            await counter.consumer.stop()
            await p.stop()

    async def tail_ledger() -> None:
        c = AIOKafkaConsumer("exports.ledger", bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False)
        await c.start()
        try:
            while not stop.is_set():
                for recs in (await c.getmany(timeout_ms=500)).values():
                    for m in recs:
                        r = LedgerRecord.decode(m.value)
                        at = f"[{time.monotonic() - t0:5.1f}s]"
                        if r.kind == "object":
                            exported["objects"] += 1
                            exported["events"] += r.events
                            say(f"{at} landed s3://{r.bucket}/{r.key}  {r.events} events, {r.bytes} bytes "
                                f"({r.destination}, {r.reason})")
                        elif r.kind == "marker":
                            say(f"{at} hour complete: s3://{r.bucket}/{r.key}")
                        elif r.kind == "error":
                            say(f"{at} upload failed ({r.destination}, {r.reason}): {r.detail}; retrying")
        finally:
            await c.stop()

    async def watch() -> int:
        deadline = None if exit_after is None else time.monotonic() + exit_after
        while deadline is None or time.monotonic() < deadline:
            if worker.poll() is not None:
                say(f"the worker exited with status {worker.returncode}; see its log")
                return 1
            await asyncio.sleep(0.5)
        return 0

    dead: Counter[str] = Counter()

    async def tail_dead_letters() -> None:
        c = AIOKafkaConsumer("events.dead-letter", bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False)
        await c.start()
        try:
            while not stop.is_set():
                for recs in (await c.getmany(timeout_ms=500)).values():
                    for m in recs:
                        d = deadletter.decode(m.value)
                        dead[d["reason"]] += 1
                        if dead[d["reason"]] == 1:   # the first of each reason, whole; the rest are counted
                            say(f"[{time.monotonic() - t0:5.1f}s] dead letter: {deadletter.describe(d, 100)}")
        finally:
            await c.stop()

    async def tail_imports() -> None:
        from stream.imports.files import FileState, split_file_key
        from stream.kafka import assign_from_beginning
        c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await c.start()
        shown: set[bytes] = set()
        try:
            # the worker creates the table's changelog as it starts: wait for it (asking a broker for a topic by
            # name may create it, with the broker's default partitions, which the worker would then refuse)
            while not await assign_from_beginning(c, "stream-dev-import-files-changelog"):
                if stop.is_set():
                    return
                await asyncio.sleep(1)
            while not stop.is_set():
                for recs in (await c.getmany(timeout_ms=500)).values():
                    for m in recs:
                        if m.key in shown or m.value is None:
                            continue
                        shown.add(m.key)
                        st, (source, key) = FileState.decode(m.value), split_file_key(m.key)
                        to, then = (("events.mutations", "its mutations rewrite the hours of their events")
                                    if source == MIRROR_SOURCE else
                                    ("events.valid", "its rows land in the export when this hour closes"))
                        what = (f"{st.rows} rows, {st.imported} to {to}, {st.dead} dead-lettered"
                                if st.state.value == "done" else f"failed ({st.reason}): {st.message}")
                        say(f"[{time.monotonic() - t0:5.1f}s] imported s3://{IMPORT_BUCKET}/{key}: {what} ({then})")
        finally:
            await c.stop()

    async def mirror_demo() -> None:
        """Once the oldest sample hour is exported: a mirror file that updates one of its events and deletes
        another, and the hour's rows before and after it is rewritten."""
        s3 = boto3.client("s3", endpoint_url=s3_url)
        now = int(time.time() * 1000)
        hour = now - now % HOUR_MS - 2 * HOUR_MS
        day, h = hour_label(hour)
        marker = f"amp/{PROJECT}/{PROJECT}_{day}_{h}_complete"
        while not stop.is_set():
            if (await asyncio.to_thread(s3.list_objects_v2, Bucket=BUCKET, Prefix=marker)).get("KeyCount"):
                break
            await asyncio.sleep(1)
        else:
            return
        rows = [r for r in await asyncio.to_thread(hour_rows, s3, hour) if r.get("user_id") and r.get("device_id")]
        if len(rows) < 2:
            return
        key, body, expect = mirror_file(rows, day)
        say(f"[{time.monotonic() - t0:5.1f}s] mirror: hour {day} {h}:00 is exported; before the corrections:")
        for r in rows[:2]:
            say(f"    {r['$insert_id']}  {r['event_type']}  user {r['user_id']}  (uuid {r['uuid']})")
        await asyncio.to_thread(s3.put_object, Bucket=IMPORT_BUCKET, Key=key, Body=body)
        say(f"[{time.monotonic() - t0:5.1f}s] dropped s3://{IMPORT_BUCKET}/{key}: an UPDATE of {rows[0]['$insert_id']}"
            f" and a DELETE of {rows[1]['$insert_id']} (mirror source '{MIRROR_SOURCE}')")
        while not stop.is_set():
            now_rows = {r["$insert_id"]: r for r in await asyncio.to_thread(hour_rows, s3, hour)}
            got = {i: (now_rows[i]["event_type"] if i in now_rows else "deleted") for i in expect}
            if got == expect:
                say(f"[{time.monotonic() - t0:5.1f}s] mirror: hour {day} {h}:00 rewritten; after:")
                first = now_rows[rows[0]["$insert_id"]]
                say(f"    {first['$insert_id']}  {first['event_type']}  user {first['user_id']}  "
                    f"(uuid {first['uuid']}, kept)")
                say(f"    {rows[1]['$insert_id']}  deleted")
                return
            await asyncio.sleep(1)

    tasks = [asyncio.create_task(produce()), asyncio.create_task(tail_ledger()),
             asyncio.create_task(tail_dead_letters()), asyncio.create_task(tail_imports()),
             asyncio.create_task(mirror_demo())]
    try:
        code = await watch()
    finally:
        stop.set()
        for task, result in zip(tasks, await asyncio.gather(*tasks, return_exceptions=True)):
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                say(f"the demo's {task.get_coro().__name__} step failed: {result!r}")
    valid = produced["event"]
    say(f"produced {sum(produced.values())} inputs: {valid} events, {produced['duplicate']} re-sent duplicates, "
        f"{sum(v for k, v in produced.items() if k not in ('event', 'duplicate'))} invalid; "
        f"{exported['objects']} objects with {exported['events']} rows landed, in both layouts (the open hour lands "
        "when it closes)")
    if dead:
        say(f"dead letters by reason: {', '.join(f'{r} {n}' for r, n in dead.most_common())}")
    return code
