"""Runtime control of the exports: destinations (or one data set of one) turned off and on, and backfills cancelled.

Operators change it with ``stream exports disable|enable`` or the admin API, which append a record to the
``exports.control`` topic (JSON, keyed by what it is about, compacted: the latest record of a key is the state).
Every worker follows the topic (``ControlTail``): an exporter turned off finishes the cycle it is in -- its
uploads, ledger records and commits -- and leaves its consumer group; turned on again, it resumes from its own
committed offsets, with no restart and no effect on the other destinations. ``enabled: false`` in the settings
still turns a destination off for good; a runtime record cannot turn it on.

Records:

- ``{"kind": "exports", "exporter": "<destination>" or "<destination>.merged-ids", "enabled": bool, "at": ms,
  "by": "<who>"}``, key ``exports/<exporter>``;
- ``{"kind": "cancel", "job": "<job id>", "at": ms, "by": ...}``, key ``cancel/<job id>``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from stream import kafka
from stream.settings import Settings

log = logging.getLogger(__name__)


def exports_record(exporter: str, enabled: bool, at_ms: int, by: str) -> tuple[bytes, bytes]:
    """(key, value) turning ``exporter`` on or off."""
    return (f"exports/{exporter}".encode(),
            orjson.dumps({"kind": "exports", "exporter": exporter, "enabled": enabled, "at": at_ms, "by": by}))


def cancel_record(job: str, at_ms: int, by: str) -> tuple[bytes, bytes]:
    return f"cancel/{job}".encode(), orjson.dumps({"kind": "cancel", "job": job, "at": at_ms, "by": by})


@dataclass
class Control:
    """The runtime state, folded from the control records in order."""

    paused: dict[str, int] = field(default_factory=dict)      # exporter -> since when (ms)
    cancelled: set[str] = field(default_factory=set)
    changed: asyncio.Event | None = None

    def add(self, value: bytes) -> None:
        r = orjson.loads(value)
        if r.get("kind") == "exports":
            if r["enabled"]:
                self.paused.pop(r["exporter"], None)
            else:
                self.paused.setdefault(r["exporter"], r["at"])
        elif r.get("kind") == "cancel":
            self.cancelled.add(r["job"])
        if self.changed is not None:
            self.changed.set()

    def add_all(self, values: Iterable[bytes]) -> None:
        for v in values:
            self.add(v)

    def is_paused(self, exporter: str) -> bool:
        """Whether ``exporter`` (``d`` or ``d.merged-ids``) is turned off, by itself or with its destination."""
        return exporter in self.paused or exporter.split(".", 1)[0] in self.paused

    async def wait_change(self, timeout: float) -> None:
        if self.changed is None:
            self.changed = asyncio.Event()
        self.changed.clear()
        try:
            await asyncio.wait_for(self.changed.wait(), timeout)
        except TimeoutError:
            pass


async def append(settings: Settings, record: tuple[bytes, bytes]) -> None:
    """Append a control record (acknowledged by the broker)."""
    p = kafka.producer(settings.kafka)
    await p.start()
    try:
        await (await p.send(settings.topics.name("export_control"), record[1], key=record[0], partition=0))
    finally:
        await kafka.stop_all(p)


async def read_control(settings: Settings) -> Control:
    c = Control()
    c.add_all(m.value for m in await kafka.read_all(settings, settings.topics.name("export_control")))
    return c


class ControlTail:
    """Follows the control topic into a ``Control``, from its beginning."""

    def __init__(self, settings: Settings, control: Control, poll_s: float = 1.0, **consumer: Any):
        """``consumer``: more aiokafka consumer settings."""
        self.topic = settings.topics.name("export_control")
        self.control, self.poll_ms = control, int(poll_s * 1000)
        self.consumer = AIOKafkaConsumer(**{**kafka.client_args(settings.kafka), "enable_auto_commit": False,
                                            **consumer})

    async def start(self) -> None:
        """Read the state as it stands, before any exporter starts: the topic up to its end offset as it is now,
        however slowly the broker answers (``stream.kafka.to_end``)."""
        await self.consumer.start()
        await kafka.assign_from_beginning(self.consumer, self.topic, default=frozenset({0}))
        async for m in kafka.records_to_end(self.consumer, self.poll_ms):
            self.control.add(m.value)

    async def run(self, stop=lambda: False) -> None:
        """Follow the topic until ``stop()`` (checked every poll)."""
        try:
            while not stop():
                for recs in (await self.consumer.getmany(timeout_ms=self.poll_ms)).values():
                    for m in recs:
                        self.control.add(m.value)
        finally:
            await kafka.stop_all(self.consumer)
