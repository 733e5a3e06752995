"""SIGTERM in the middle of an hour: the worker finishes its cycle, commits and exits in time; the next one
picks up where it left off, exactly once -- and also when an upload cannot finish before the timeout."""

import asyncio
import time

import pytest
import yaml

from stream.events.partitioning import partition_for
from stream.kafka import ensure_topics
from stream.settings import load_settings
from tests.integration.conftest import wait_until
from tests.integration.faultproxy import FaultProxy
from tests.integration.test_crash import exported, hours_complete, produce

pytestmark = pytest.mark.integration
HOUR = 3_600_000


def workload(start):
    """Events of one hour ahead of the clock (only the data closes it), then one event per partition after it."""
    evs = [({"event_type": "Page Viewed", "device_id": f"device-{i % 7:04d}", "insert_id": f"sd-{i}"},
            start + i * 20_000) for i in range(120)]
    closers = {}
    for i in range(100):
        closers.setdefault(partition_for(f"closer-{i}", 2), f"closer-{i}")
    return evs, [({"event_type": "Tick", "device_id": d, "insert_id": d}, start + HOUR + 2_000)
                 for d in closers.values()]


def label(hour_ms):
    return time.strftime("%Y-%m-%d_%-H", time.gmtime(hour_ms / 1000))


@pytest.mark.parametrize("stall", [False, True], ids=["graceful", "upload-stuck"])
def test_sigterm_mid_hour_stops_in_time_and_the_next_worker_loses_and_duplicates_nothing(
        deployment, worker, stack, tmp_path, stall):
    settings, path = deployment
    proxy = FaultProxy(int(stack["s3"].rsplit(":", 1)[1]))
    try:
        cfg = yaml.safe_load(path.read_text())
        cfg["worker"]["shutdown_timeout_s"] = 3
        cfg["s3"]["read_timeout_s"] = 30          # a stalled upload outlives the shutdown timeout
        cfg["destinations"][0]["endpoint_url"] = proxy.url
        cfg["destinations"][0]["max_object_events"] = 25   # objects close (and upload) while the hour is open
        cfg["ingest"]["max_clock_skew_s"] = 86_400   # the events are stamped hours ahead on purpose
        path.write_text(yaml.safe_dump(cfg))
        settings = load_settings(path)
        asyncio.run(ensure_topics(settings))
        start = int(time.time() * 1000) // HOUR * HOUR + 2 * HOUR
        evs, closers = workload(start)
        first = worker()
        asyncio.run(produce(settings, evs[:60]))
        wait_until(lambda: len(exported(settings)) >= 25, 60, "a first object of the hour")
        if stall:
            proxy.set("stall")
            asyncio.run(produce(settings, evs[60:90]))
            time.sleep(4)                          # their object is now being uploaded, and never will be
        asleep = time.monotonic()
        first.terminate()
        code = first.wait(30)
        took = time.monotonic() - asleep
        log = (tmp_path / "worker-0.log").read_text()
        assert code == 0, log[-3000:]
        if stall:
            assert "still running after 3s (worker.shutdown_timeout_s); abandoned" in log
            assert took < 3 + 10
            proxy.set("pass")
        else:
            assert "stopping: every loop finished and committed" in log
            assert took < 10
        worker()
        asyncio.run(produce(settings, evs[90 if stall else 60:] + closers))
        wait_until(lambda: hours_complete(settings, [label(start)]), 120, "the hour to be written and marked")
        assert exported(settings) == sorted(ev["insert_id"] for ev, _ in evs)
    finally:
        proxy.stop()
