"""``stream api --processes N``: the serving processes' command line, the group's exit status and the supervisor
(real child processes: small Python programs)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from stream.api.processes import MULTIPROC_ENV, child_command, group_exit_code, supervise

PY = sys.executable


def test_child_command_listens_with_reuse_port_on_the_groups_address():
    assert child_command("/etc/stream.yaml", "0.0.0.0", 8080, "/venv/python") == [
        "/venv/python", "-m", "stream", "api", "--host", "0.0.0.0", "--port", "8080", "--reuse-port",
        "-c", "/etc/stream.yaml"]
    assert child_command(None, "127.0.0.1", 9000, "py") == [
        "py", "-m", "stream", "api", "--host", "127.0.0.1", "--port", "9000", "--reuse-port"]


def test_group_exit_code():
    assert group_exit_code([0, 0, 0], None) == 0            # asked to stop, all stopped cleanly
    assert group_exit_code([0, 2, 0], None) == 2            # asked to stop, one failed to
    assert group_exit_code([0, -9], None) == 1              # asked to stop, one killed
    assert group_exit_code([0, -15], None) == 0             # asked to stop, one ended by the SIGTERM it was sent
    assert group_exit_code([3, -15, 0], 0) == 3             # the first exited unasked with 3
    assert group_exit_code([0, -15], 0) == 1                # exiting unasked with 0 still stops serving
    assert group_exit_code([0, -11, 0], 1) == 1             # killed by a signal, unasked


def test_a_process_exiting_unasked_stops_the_others_and_the_group_fails(tmp_path):
    started = tmp_path / "started"
    waiter = f"import pathlib, signal; pathlib.Path({str(started)!r}).touch(); signal.pause()"
    failer = (f"import pathlib, sys, time\nwhile not pathlib.Path({str(started)!r}).exists(): time.sleep(0.01)\n"
              "sys.exit(3)")
    t0 = time.monotonic()
    assert supervise([[PY, "-c", waiter], [PY, "-c", failer]]) == 3
    assert time.monotonic() - t0 < 20      # the waiter was stopped, not waited for


def test_the_processes_share_a_fresh_multiprocess_directory_removed_at_the_end(tmp_path):
    out = tmp_path / "dirs"
    write = (f"import os, signal; open({str(out)!r}, 'a').write(os.environ[{MULTIPROC_ENV!r}] + ' ' + "
             f"str(os.path.isdir(os.environ[{MULTIPROC_ENV!r}])) + '\\n'); signal.pause()")

    def stopper(lines: int) -> list[str]:   # exits once the writers wrote: the group stops
        return [PY, "-c", f"import pathlib, time\np = pathlib.Path({str(out)!r})\n"
                f"while not p.exists() or len(p.read_text().splitlines()) < {lines}: time.sleep(0.01)"]
    env = {k: v for k, v in os.environ.items() if k != MULTIPROC_ENV}
    assert supervise([[PY, "-c", write], [PY, "-c", write], stopper(2)], env) == 1   # exiting unasked, even with 0
    lines = out.read_text().splitlines()
    assert len(lines) == 2 and lines[0] == lines[1] and lines[0].endswith(" True")
    shared = lines[0].split()[0]
    assert Path(shared).name.startswith("stream-api-metrics-")
    assert not os.path.exists(shared)
    given = tmp_path / "given"
    given.mkdir()
    assert supervise([[PY, "-c", write], stopper(3)], {**env, MULTIPROC_ENV: str(given)}) == 1
    assert out.read_text().splitlines()[-1] == f"{given} True" and given.is_dir()     # the environment's: kept


def test_sigterm_to_the_supervisor_stops_every_process_and_the_group_exits_0(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    child = (f"import os, pathlib, signal, sys\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
             f"pathlib.Path({str(marks)!r}, str(os.getpid())).touch()\nsignal.pause()")
    prog = (f"import sys; from stream.api.processes import supervise; "
            f"sys.exit(supervise([[{PY!r}, '-c', {child!r}]] * 3))")
    sup = subprocess.Popen([PY, "-c", prog])
    try:
        deadline = time.monotonic() + 30
        while len(os.listdir(marks)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(os.listdir(marks)) == 3
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(30) == 0
        for pid in map(int, os.listdir(marks)):
            assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    finally:
        if sup.poll() is None:
            sup.kill()


def test_a_sigterm_while_the_processes_start_stops_those_started_and_starts_no_more(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    killer = ["/bin/sh", "-c", "kill -TERM $PPID; exec sleep 30"]
    waiter = (f"import os, pathlib, signal, sys\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
              f"pathlib.Path({str(marks)!r}, str(os.getpid())).touch()\nsignal.pause()")
    prog = (f"import sys; from stream.api.processes import supervise; "
            f"sys.exit(supervise([{killer!r}] + [[{PY!r}, '-c', {waiter!r}]] * 20))")
    sup = subprocess.Popen([PY, "-c", prog])
    try:
        assert sup.wait(30) == 0
    finally:
        if sup.poll() is None:
            sup.kill()
    assert len(os.listdir(marks)) < 20     # the signal came before the last ones were started
