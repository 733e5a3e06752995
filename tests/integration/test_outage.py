"""An S3 outage between the worker and S3: refused connections, stalled requests, uploads cut in the middle."""

import asyncio
import random
import time
import urllib.request

import orjson
import pytest
import yaml

from stream.devstack.services import free_port
from stream.export.ledger import LedgerRecord
from stream.kafka import ensure_topics, read_all
from stream.settings import load_settings
from tests.integration.conftest import admin_get, wait_until
from tests.integration.faultproxy import FaultProxy
from tests.integration.test_crash import EVENTS, H7, exported, hours_complete, produce

pytestmark = pytest.mark.integration


def ledger(settings):
    return [LedgerRecord.decode(m.value) for m in asyncio.run(read_all(settings, settings.topics.name(
        "export_ledger")))]


def failures(port):
    """stream_export_upload_failures_total by reason, from the worker's /metrics."""
    out = {}
    for line in urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode().splitlines():
        if line.startswith("stream_export_upload_failures_total{"):
            labels, value = line.rsplit(" ", 1)
            out[labels.split('reason="')[1].split('"')[0]] = float(value)
    return out


def test_an_outage_that_refuses_stalls_and_cuts_uploads_loses_and_duplicates_nothing(deployment, worker, stack):
    settings, path = deployment
    proxy = FaultProxy(int(stack["s3"].rsplit(":", 1)[1]), reset_after=3 * 1024 * 1024)
    try:
        cfg = yaml.safe_load(path.read_text())
        cfg["destinations"][0]["endpoint_url"] = proxy.url
        # retries at most 3 s apart, so that each 10 s phase of the outage sees new attempts
        cfg["s3"].update(upload_part_bytes=5 * 1024 * 1024, read_timeout_s=2, connect_timeout_s=2, retry_max_s=3)
        port = free_port()
        cfg["worker"]["http_port"] = port
        path.write_text(yaml.safe_dump(cfg))
        settings = load_settings(path)
        asyncio.run(ensure_topics(settings))
        rnd = random.Random(5)
        # small objects in three hours, and one of about 8 MB compressed in 07:00 (a two-part upload)
        big = [({"event_type": "Upload", "device_id": "device-big1", "insert_id": f"big-{i}",
                 "event_properties": {"blob": rnd.randbytes(200_000).hex()}}, H7 + 10_000 + i) for i in range(40)]
        events = EVENTS + big
        worker()
        # the destination's access is verified before its first export: the outage then hits the uploads
        wait_until(lambda: any(r.kind == "verified" and r.reason == "ok" for r in ledger(settings)), 60,
                   "the destination's access to be verified")
        proxy.set("refuse")
        asyncio.run(produce(settings, events))
        time.sleep(10)
        proxy.set("stall")     # every request hangs until s3.read_timeout_s
        time.sleep(10)
        # every request is cut after 3 MB: small ones pass, parts of the big one do not
        proxy.set("reset", cut=False)
        time.sleep(10)
        expected = sorted(ev["insert_id"] for ev, _ in events)
        assert exported(settings) != expected   # the outage held them back
        proxy.set("pass", cut=False)   # connections that stalled stay stalled: the client must drop them itself
        healed = time.monotonic()
        wait_until(lambda: hours_complete(settings), 120, "every hour to be written and marked complete")
        recovery = time.monotonic() - healed
        assert exported(settings) == expected   # no loss, no duplicate
        seen = failures(port)
        assert seen.get("connection", 0) >= 1 and seen.get("timeout", 0) >= 1, seen
        assert min(proxy.connections.values()) >= 1, proxy.connections
        # the worker's status follows the ledger a moment after the ledger has the records
        state = lambda: orjson.loads(admin_get(f"http://127.0.0.1:{port}/exports/status?hours=500"))[  # noqa: E731
            "destinations"][0]["state"]
        wait_until(lambda: state() == "ok", 30, "the destination's state to be ok again")
        print(f"recovered {recovery:.1f}s after the outage; failures {seen}; connections {proxy.connections}")
    finally:
        proxy.stop()
