"""A burst of large concurrent requests: the API holds at most api.max_inflight_bytes of them (the rest get 503
with Retry-After and are sent again), its memory stays within the documented bound, nothing crashes, and every
event accepted is exported once."""

import concurrent.futures
import time

import orjson
import pytest
import yaml

from stream.settings import load_settings
from tests.integration.api.conftest import API_KEY, bucket_rows, start_api, stop_api, wait_for_worker

pytestmark = pytest.mark.integration

MB = 1024 * 1024
REQUESTS, EVENTS = 24, 1000


def body(n):
    return orjson.dumps({"api_key": API_KEY, "events": [
        {"event_type": "Burst", "device_id": f"device-{n:03d}-{i % 7}", "insert_id": f"burst-{n}-{i}",
         "event_properties": {"pad": "x" * 1400}} for i in range(EVENTS)]})


def rss(pid, field):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(field)


def test_a_burst_of_large_requests_stays_within_the_memory_bound_and_every_event_lands_once(
        api_deployment, worker, tmp_path):
    settings, path = api_deployment
    cfg = yaml.safe_load(path.read_text())
    cfg["api"].update(max_inflight_bytes=8 * MB, httpapi_device_eps=10_000, batch_device_eps=10_000)
    path.write_text(yaml.safe_dump(cfg))
    settings = load_settings(path)
    api = start_api(path, tmp_path)
    try:
        worker()
        bodies = [body(n) for n in range(REQUESTS)]          # about 1.5 MB each: 36 MB asked for at once
        idle = rss(api.proc.pid, "VmRSS")
        busy = []

        def send(b):   # as an SDK does: sent again after a 503 (here at once, not after Retry-After seconds)
            while True:
                status, headers, answer = api.post("/batch", b)
                if status != 503:
                    return status, orjson.loads(answer)
                busy.append(int(headers["Retry-After"]))
                time.sleep(0.2)
        with concurrent.futures.ThreadPoolExecutor(REQUESTS) as pool:
            answers = list(pool.map(send, bodies))
        peak = rss(api.proc.pid, "VmHWM")
        assert [s for s, _ in answers] == [200] * REQUESTS
        assert sum(a["events_ingested"] for _, a in answers) == REQUESTS * EVENTS
        assert busy and set(busy) == {5}                     # some were refused for a while, with Retry-After
        bound = idle + settings.api.max_inflight_bytes + 32 * MB     # docs/api.md, "Memory"
        print(f"api memory: idle {idle / MB:.0f} MB, peak {peak / MB:.0f} MB, bound {bound / MB:.0f} MB; "
              f"{len(busy)} answers 503")
        assert peak <= bound
        assert api.metrics()["stream_api_busy_total"] == len(busy)
        wait_for_worker(settings, read=REQUESTS * EVENTS, exported=REQUESTS * EVENTS, timeout=120)
        _, rows = bucket_rows(settings)
        ids = [r["$insert_id"] for r in rows]
        assert len(ids) == len(set(ids)) == REQUESTS * EVENTS
        assert api.proc.poll() is None
    finally:
        stop_api(api)
