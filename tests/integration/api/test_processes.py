"""`stream api --processes 2`: two processes listening on one port (SO_REUSEPORT) answer the requests of many
connections between them, /metrics counts the events of both, and SIGTERM to the supervisor stops them all."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson
from prometheus_client.mmap_dict import MmapedDict

from stream.settings import load_settings
from tests.integration.api.conftest import API_KEY, Api
from tests.integration.conftest import wait_until


def listening_inodes(port: int) -> set[str]:
    """The inodes of the sockets listening on 127.0.0.1:``port``."""
    out = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if f[1] == f"0100007F:{port:04X}" and f[3] == "0A":
            out.add(f[9])
    return out


def socket_inodes(pid: int) -> set[str]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            out.add(link[8:-1])
    return out


def accepted_by(path: Path) -> float:
    """stream_api_events_total{outcome="accepted"} in one process's multiprocess file."""
    total = 0.0
    for key, value, *_ in MmapedDict.read_all_values_from_file(str(path)):
        _, name, labels, _ = json.loads(key)
        if name == "stream_api_events_total" and labels == {"outcome": "accepted"}:
            total += value
    return total


def test_two_processes_serve_one_port_and_count_together(api_deployment, tmp_path):
    _, path = api_deployment
    settings = load_settings(path)
    port = settings.api.port
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    log = open(tmp_path / "api.log", "wb")
    sup = subprocess.Popen([sys.executable, "-m", "stream", "api", "-c", str(path), "--processes", "2"],
                           stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                           env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
    api = Api(f"http://127.0.0.1:{port}", sup, settings)
    try:
        def children() -> list[int]:
            return [int(p) for p in Path(f"/proc/{sup.pid}/task/{sup.pid}/children").read_text().split()]

        def both_listening() -> bool:
            assert sup.poll() is None, (tmp_path / "api.log").read_text()[-2000:]
            kids = children()
            listening = listening_inodes(port)
            return len(kids) == 2 and all(socket_inodes(k) & listening for k in kids)
        wait_until(both_listening, 30, "two processes listening on the port")
        kids = children()
        assert len(listening_inodes(port)) == 2      # a listening socket each, on the one port

        def ready() -> bool:   # each request a new connection: ready when 10 in a row, from either, are 200
            try:
                return all(api.get_json("/readyz")[0] == 200 for _ in range(10))
            except OSError:
                return False
        wait_until(ready, 30, "both processes ready")

        body = {"api_key": API_KEY, "events": [{"event_type": "e", "device_id": f"device-{i:05d}"} for i in range(3)]}
        answers = [api.post("/batch", body) for _ in range(40)]    # urllib: a new connection per request
        assert [a[0] for a in answers] == [200] * 40
        assert {orjson.loads(a[2])["events_ingested"] for a in answers} == {3}

        by_process = {k: accepted_by(metrics_dir / f"counter_{k}.db") for k in kids}
        assert sum(by_process.values()) == 120
        assert all(n > 0 for n in by_process.values()), by_process     # both answered some of the connections
        assert api.metrics()['stream_api_events_total{outcome="accepted"}'] == 120.0   # whichever answers

        sup.send_signal(signal.SIGTERM)
        assert sup.wait(30) == 0
        assert all(not os.path.exists(f"/proc/{k}") for k in kids)
        assert listening_inodes(port) == set()
    finally:
        if sup.poll() is None:
            os.killpg(sup.pid, signal.SIGKILL)
            sup.wait()
        log.close()
