import sys

import pytest
from click.testing import CliRunner

from stream.cli import main, set_switch_interval
from tests.unit.worker_start import start_worker


@pytest.fixture
def interval():
    before = sys.getswitchinterval()
    yield
    sys.setswitchinterval(before)


def test_set_switch_interval_sets_it_in_ms_and_returns_the_one_it_replaced(interval):
    sys.setswitchinterval(0.005)
    assert set_switch_interval(1) == 5
    assert sys.getswitchinterval() == 0.001
    assert set_switch_interval(0.5) == 1
    assert sys.getswitchinterval() == 0.0005


def _start_worker(tmp_path, monkeypatch, yaml: str) -> list[float]:
    """Run `stream worker` up to the point faust would take over; the switch interval faust's worker starts with."""
    seen: list[float] = []
    r = start_worker(tmp_path, monkeypatch, yaml, lambda: seen.append(sys.getswitchinterval()))
    assert r.exit_code == 0, r.output
    return seen


def test_the_worker_starts_with_the_default_switch_interval_of_1_ms(tmp_path, monkeypatch, interval):
    sys.setswitchinterval(0.005)
    assert _start_worker(tmp_path, monkeypatch, "projects: [{id: 1}]\nworker: {http_port: null}\n") == [0.001]
    assert sys.getswitchinterval() == 0.001       # kept for the process's life, not put back


def test_the_worker_starts_with_the_configured_switch_interval(tmp_path, monkeypatch, interval):
    sys.setswitchinterval(0.005)
    yaml = "projects: [{id: 1}]\nworker: {http_port: null, gil_switch_interval_ms: 0.5}\n"
    assert _start_worker(tmp_path, monkeypatch, yaml) == [0.0005]


def test_a_switch_interval_out_of_range_is_refused_with_the_key(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("projects: [{id: 1}]\nworker: {gil_switch_interval_ms: 0}\n")
    r = CliRunner().invoke(main, ["worker", "-c", str(f)])
    assert r.exit_code == 1
    assert r.output.startswith(f"Error: invalid configuration in {f}: worker.gil_switch_interval_ms: Input should be "
                               "greater than 0")
