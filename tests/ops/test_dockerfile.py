"""The Dockerfile: hadolint passes, it builds from the lock without the dev/test extras, runs as non-root.

No Docker daemon here, so the image is not built; these are the checks that need none.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from stream.events import avro
from tests.ops.conftest import ROOT, run, tool

DOCKERFILE = ROOT / "Dockerfile"
SITE_PACKAGES = "/usr/local/lib/python3.11/site-packages"     # python:3.11-slim's


def instructions() -> list[tuple[int, str, str]]:
    """(stage index, INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out, stage = [], -1
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op, _, args = line.partition(" ")
        if op.upper() == "FROM":
            stage += 1
        out.append((stage, op.upper(), " ".join(args.split())))
    return out


def of(op: str, stage: int | None = None) -> list[str]:
    return [a for s, o, a in instructions() if o == op and (stage is None or s == stage)]


def test_hadolint_passes():
    proc = run(tool("hadolint"), "--failure-threshold", "style", str(DOCKERFILE), check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_two_stages_on_python_311_slim():
    assert of("FROM") == ["python:3.11-slim-bookworm AS build", "python:3.11-slim-bookworm"]


def test_build_stage_makes_wheels_of_the_project_pinned_by_the_lock():
    (wheel,) = [r for r in of("RUN", 0) if "pip" in r]
    assert wheel == "pip wheel --constraint requirements.lock --wheel-dir /wheels ."
    assert of("COPY", 0) == ["requirements.lock pyproject.toml README.md ./", "stream ./stream"]


def test_every_runtime_dependency_is_pinned_in_the_lock():
    lock = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            lock[canonicalize_name(name)] = version
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in map(Requirement, deps):
        version = lock.get(canonicalize_name(dep.name))
        assert version is not None, f"{dep.name} is not pinned in requirements.lock"
        assert dep.specifier.contains(version), f"{dep.name}=={version} does not satisfy {dep}"


def test_final_stage_installs_only_the_wheels_without_extras_or_build_tools():
    runs = of("RUN", 1)
    (install,) = [r for r in runs if "pip install" in r]
    assert install == ("--mount=type=bind,from=build,source=/wheels,target=/wheels pip install --no-index "
                       "--find-links=/wheels /wheels/stream-*.whl")
    text = DOCKERFILE.read_text()
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(extras) == {"dev", "test"}
    for extra in extras:
        assert f"[{extra}]" not in text and f"[{extra}," not in text
    assert not any(re.search(r"apt-get|gcc|build-essential|make\b", r) for r in runs)


def test_every_copy_source_exists_and_is_in_the_build_context():
    allowed = [p[1:].rstrip("/") for p in (ROOT / ".dockerignore").read_text().split() if p.startswith("!")]
    assert (ROOT / ".dockerignore").read_text().splitlines()[2] == "*"
    for args in of("COPY"):
        if args.startswith("--from="):
            continue
        *sources, _dest = args.split()
        for src in sources:
            assert (ROOT / src).exists(), src
            assert any(src == a or src.startswith(a + "/") for a in allowed), f"{src} is excluded by .dockerignore"


def test_the_wheel_the_image_installs_carries_the_record_contracts(tmp_path):
    """stream.events.avro reads stream/schemas: in the repository a link to schemas/, in the wheel a copy."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("stream-*.whl")
    with zipfile.ZipFile(wheel) as z:
        carried = sorted(n for n in z.namelist() if n.endswith(".avsc"))
    assert carried == [f"stream/schemas/{p.name}" for p in sorted((ROOT / "schemas").glob("*.avsc"))]
    assert avro.SCHEMA_DIR == Path(avro.__file__).resolve().parents[1] / "schemas"


def test_runtime_contract_of_the_image():
    assert of("USER", 1) == ["10001:10001"]
    assert of("ENTRYPOINT") == ['["stream"]']
    assert of("CMD") == ['["worker", "-c", "/etc/stream/stream.yaml"]']
    assert of("VOLUME") == ["/var/lib/stream"]
    assert of("EXPOSE") == ["9108 8080"]
    (health,) = of("HEALTHCHECK")
    assert "curl" not in health and "wget" not in health
    assert "urllib.request.urlopen" in health and "http://127.0.0.1:9108/healthz" in health
    assert "examples/stream.yaml /etc/stream/stream.yaml" in of("COPY", 1)


def test_healthcheck_command_follows_the_workers_healthz():
    """The HEALTHCHECK's python one-liner, run against the worker's real /healthz on loopback."""
    import asyncio
    import json
    import sys

    from stream.health import Health
    from stream.web import serve, worker_app

    (health_args,) = of("HEALTHCHECK")
    argv = json.loads(health_args.split("CMD ", 1)[1])
    assert argv[:2] == ["python", "-c"]

    async def check(health: Health) -> int:
        runner = await serve(worker_app(health), "127.0.0.1", 0)
        try:
            host, port = runner.addresses[0][:2]
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", argv[2], env={"STREAM_HEALTHCHECK_URL": f"http://{host}:{port}/healthz"},
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
            return await asyncio.wait_for(proc.wait(), 20)
        finally:
            await runner.cleanup()

    alive = Health()
    alive.expect("ingest")                          # not ready yet, but alive
    assert asyncio.run(check(alive)) == 0
    failed = Health()
    failed.mark_failed("export-amplitude-raw", "crashed")
    assert asyncio.run(check(failed)) == 1
