"""`stream worker` run up to the point faust would take over: its start-up alone, for the tests of what it sets."""

from __future__ import annotations

import gc
from collections.abc import Callable

from click.testing import CliRunner, Result

import stream.app
import stream.kafka
import stream.redact
from stream.cli import main


def start_worker(tmp_path, monkeypatch, yaml: str, at_start: Callable[[], None] = lambda: None) -> Result:
    """Invoke `stream worker --stages ingest` with the configuration ``yaml``, no broker, no faust: topics are not
    created, the app is not built, and the worker's ``execute_from_commandline`` calls ``at_start`` instead."""

    async def no_topics(settings):
        return []

    class Worker:
        def __init__(self, app, settings, **kwargs):
            pass

        def execute_from_commandline(self):
            at_start()

    monkeypatch.setattr(stream.kafka, "ensure_topics", no_topics)
    monkeypatch.setattr(stream.app, "build_app", lambda settings: object())
    monkeypatch.setattr(stream.app, "StreamWorker", Worker)
    monkeypatch.setattr(gc, "freeze", lambda: None)
    monkeypatch.setattr(stream.redact, "install_log_filter", lambda settings: None)
    f = tmp_path / "c.yaml"
    f.write_text(yaml)
    return CliRunner().invoke(main, ["worker", "-c", str(f), "--stages", "ingest"])
