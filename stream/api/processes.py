"""``stream api --processes N``: N serving processes on one port, and the supervisor that runs them.

Each process is an ordinary ``stream api`` (its own event loop, producer, throttles and budget of request bytes)
that listens with SO_REUSEPORT, so the kernel spreads the incoming connections over the N listening sockets of
the one port. The supervisor only starts them and waits: SIGTERM or SIGINT is passed on to every process, each
finishes its requests in flight and stops; a process that exits on its own (a crash, a port it could not bind)
stops the others, and the supervisor exits non-zero so that whatever runs it (Kubernetes, systemd) starts the
whole group again.

Metrics: the processes share a directory of prometheus_client's multiprocess files (PROMETHEUS_MULTIPROC_DIR, a
fresh temporary directory unless the environment names one), so /metrics, whichever process answers it, counts
the requests and events of all of them.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence

log = logging.getLogger("stream.api")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def child_command(config: str | None, host: str, port: int, executable: str = sys.executable) -> list[str]:
    """The command line of one serving process of the group."""
    cmd = [executable, "-m", "stream", "api", "--host", host, "--port", str(port), "--reuse-port"]
    return cmd + (["-c", config] if config else [])


def group_exit_code(codes: Sequence[int], unasked: int | None) -> int:
    """The supervisor's exit status once every process has exited: that of the first process that exited unasked
    (1 if it exited with 0: serving stopped all the same), else 0 when every process stopped cleanly (with 0, or
    ended by the SIGTERM it was sent before it could handle it), else the first other status (a negative one,
    killed by another signal, as 1)."""
    if unasked is not None:
        return codes[unasked] if codes[unasked] > 0 else 1
    return next((c if c > 0 else 1 for c in codes if c not in (0, -signal.SIGTERM)), 0)


def supervise(commands: Sequence[Sequence[str]], env: dict[str, str] | None = None) -> int:
    """Start one process per command and wait for all of them (see the module's docstring); returns the exit
    status of the group (``group_exit_code``)."""
    env = dict(os.environ if env is None else env)
    own_dir = None
    if not env.get(MULTIPROC_ENV):
        own_dir = env[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="stream-api-metrics-")
    procs: dict[int, subprocess.Popen] = {}
    stopping = False
    unasked: int | None = None
    codes: list[int] = []

    def stop_all(_signum: int | None = None, _frame=None) -> None:
        nonlocal stopping
        stopping = True
        for pid in procs:   # os.kill, not Popen.send_signal: that would reap an exited process before os.wait does
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    previous = {s: signal.signal(s, stop_all) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for cmd in commands:
            if stopping:   # asked to stop while starting them: start no more
                break
            p = subprocess.Popen(list(cmd), env=env)
            procs[p.pid] = p
        if stopping:       # the signal may have come before the last one started was in procs
            stop_all()
        log.info("stream api: %d processes serving (pids %s)", len(procs), ", ".join(map(str, procs)))
        while procs:
            pid, status = os.wait()
            p = procs.pop(pid, None)
            if p is None:
                continue
            p.returncode = code = os.waitstatus_to_exitcode(status)
            codes.append(code)
            if not stopping:
                unasked = len(codes) - 1
                log.error("stream api process %d exited with status %d; stopping the other %d (its log above says "
                          "why; whatever runs stream api starts the group again)", pid, code, len(procs))
                stop_all()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)
    return group_exit_code(codes, unasked)
