"""One poll of events.ingest -> batches for events.valid and records for the dead-letter topic (pure)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from stream.events import deadletter
from stream.events.batch import EventBatch, group
from stream.events.normalize import Normalized, Reason, Rejected, Rules, normalize_message, uuid5_strs

log = logging.getLogger(__name__)

PROJECT_HEADER = "project"
"""Message header naming the project of a raw event (ASCII digits); else ingest.default_project."""


class RecordLike(Protocol):
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


@dataclass
class IngestResult:
    batches: list[tuple[int, EventBatch]] = field(default_factory=list)   # (target partition, batch)
    dead: list[tuple[bytes | None, bytes]] = field(default_factory=list)  # (key, dead-letter record)
    reasons: Counter[str] = field(default_factory=Counter)
    valid: int = 0
    clamped: int = 0                                                   # events whose server time was replaced
    new_clamps: dict[int, int] = field(default_factory=dict)           # offset -> ingest clock, to record first


def project_of(headers: Sequence[tuple[str, bytes]], projects: frozenset[int], default: int | None) -> int | Rejected:
    for name, value in headers:
        if name == PROJECT_HEADER:
            try:
                p = int(value)
            except ValueError:
                return Rejected(Reason.UNKNOWN_PROJECT, None, f"project header {value!r} is not a project id")
            if p not in projects:
                return Rejected(Reason.UNKNOWN_PROJECT, None, f"project {p} is not configured (projects[].id)")
            return p
    if default is None:
        return Rejected(Reason.UNKNOWN_PROJECT, None,
                        f"the message has no '{PROJECT_HEADER}' header and ingest.default_project is not set")
    return default


def ingest_records(records: Sequence[RecordLike], topic: str, partition: int, *, projects: frozenset[int],
                   default_project: int | None, rules: Rules, partitions: int, max_events: int,
                   max_bytes: int = 4 << 20, now_ms: int,
                   clamps: Mapping[int, int] | None = None) -> IngestResult:
    """Validate and normalize the records of one source partition, in offset order.

    Server times ahead of the ingest clock ``now_ms`` by more than ``rules.max_clock_skew_ms`` are replaced by it
    (``normalize.clamp_server_time``). ``clamps`` holds, per offset, the clock a previous pass replaced that
    record's times with (``stream.ingest_clamps``): a replay of the record uses that clock again, so it lands in
    the same hour. Records replaced now, with no previous pass, are returned in ``new_clamps``, which must be
    recorded before the batches are produced. A record the first pass did not replace is not replaced on a
    replay either: the clock has only moved on since.
    """
    res = IngestResult()
    good: list[tuple[int, Normalized]] = []
    prefix = f"{topic}/{partition}/"
    clamps = clamps or {}
    # the uuids of the records' origins, made for the whole poll at once (about half the cost of one call each);
    # an event with a uuid of its own keeps it
    uuid_texts, uuid_bytes = uuid5_strs(prefix, [r.offset for r in records])
    for i, r in enumerate(records):
        project = project_of(r.headers, projects, default_project) if r.headers or default_project is None \
            else default_project
        if type(project) is int:
            clock = clamps.get(r.offset, now_ms) if clamps else now_ms
            try:
                out: Any = normalize_message(r.value, r.key, project, r.timestamp, prefix + str(r.offset), rules,
                                             clock, uuid_texts[i], uuid_bytes[i])
            except Exception as exc:  # never crash-loop on one record: keep it, loudly
                log.exception("unexpected error on %s[%d]@%d", topic, partition, r.offset)
                out = Rejected(Reason.PROCESSING_ERROR, None, f"unexpected {type(exc).__name__}: {exc}")
        else:
            out = project
        if type(out) is Normalized:
            good.append((r.offset, out))
            if out.clamped:
                res.clamped += 1
                if r.offset not in clamps:
                    res.new_clamps[r.offset] = now_ms
            continue
        res.reasons[out.reason.value] += 1
        res.dead.append((r.key, deadletter.encode(out, topic, partition, r.offset, r.timestamp, r.key, r.value,
                                                  now_ms, rules.max_event_bytes)))
    res.valid = len(good)
    res.batches = list(group(good, topic, partition, partitions, max_events, max_bytes))
    return res
