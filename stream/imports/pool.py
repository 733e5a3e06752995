"""Converting a JSON-lines file's rows in other processes: the CPU of an import spread over the worker's cores.

With ``worker.import_processes`` set to N > 0, the importer (``stream.imports.importer``) reads an append source's
JSON-lines file as raw lines (``stream.imports.reader.LineReader``: gunzip and the line split, in the worker's own
process), cuts them into the same chunks of ``CHUNK_ROWS`` rows it converts itself otherwise (``Chunker``), and
hands each chunk to one of N processes, which decodes its lines, converts, validates and groups them
(``convert_lines``: ``stream.imports.rows.convert`` and ``stream.events.batch.group``, the code of the in-process
path) and gives back the encoded batches and dead letters. The worker produces them in the file's order, and writes
the file's state once every record is acknowledged, as it does for rows it converts itself: each file is still
imported by the one worker that owns its discovery record, once; only the CPU work moves. The records are the same
bytes either way, and a file read again gives the same rows, ids and batches.

The processes are started with ``spawn`` (never forked from a process running an event loop and Kafka clients'
threads) when the first file needs them, each with the settings of the sources and the ingest rules; on Linux they
end with the worker (PR_SET_PDEATHSIG). A process that dies breaks the pool: the importer starts a new one and
reads the file again from its start (``BrokenPool``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import multiprocessing
import os
import signal
import sys
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, NamedTuple

from stream import metrics
from stream.events.batch import group
from stream.events.normalize import Rules
from stream.imports.files import ImportFile
from stream.imports.reader import count_items, is_item, json_items
from stream.imports.rows import FileContext, convert, remember_targets
from stream.settings import Settings, SourceSettings

BrokenPool = BrokenProcessPool


class Converted(NamedTuple):
    """One chunk converted in another process: what the worker produces, and what it counts."""

    batches: list[tuple[int, bytes]]     # (target partition of events.valid, encoded EventBatch), in order
    dead: list[tuple[bytes, bytes]]      # (key, dead-letter record)
    reasons: dict[str, int]              # the dead letters by reason
    fields_left_out: int
    rows: int
    imported: int


@dataclass(frozen=True)
class Grouping:
    """How a chunk's events are grouped into batches: the worker's topic settings."""

    partitions: int
    max_events: int
    max_bytes: int


def convert_lines(ctx: FileContext, first: int, lines: list[bytes | None], now_ms: int, topic: str,
                  partition: int, grouping: Grouping) -> Converted:
    """A chunk of raw JSON lines numbered from ``first`` -> its batches and dead letters: what the importer
    produces for the same rows read and converted in its own process (pure)."""
    out = convert(ctx, json_items(first, lines), now_ms)
    remember_targets(out, grouping.partitions)
    batches = [(target, batch.encode()) for target, batch in group(
        out.events, topic, partition, grouping.partitions, grouping.max_events, grouping.max_bytes)]
    return Converted(batches, out.dead, dict(out.reasons), out.fields_left_out, out.rows, len(out.events))


class Chunker:
    """Runs of raw lines (``LineReader``) -> chunks of exactly ``size`` rows (blank lines, which are no rows, ride
    along), so that each chunk holds the rows the in-process importer would convert together."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.first = 0
        self.lines: list[bytes | None] = []
        self.items = 0

    def add(self, first: int, lines: list[bytes | None]) -> Iterator[tuple[int, list[bytes | None], int]]:
        """The chunks the run completes: (number of the first line, the lines, rows in them)."""
        while lines:
            if not self.lines:
                self.first = first
            need = self.size - self.items
            if len(lines) < need:   # cannot complete the chunk
                self.lines += lines
                self.items += count_items(lines)
                return
            end = need
            if count_items(lines[:need]) < need:   # blank lines among them: find the line of the last row needed
                seen, end = self.items, 0
                for end, line in enumerate(lines, 1):
                    if is_item(line):
                        seen += 1
                        if seen == self.size:
                            break
                else:
                    self.lines += lines
                    self.items = seen
                    return
            self.lines += lines[:end]
            yield self.first, self.lines, self.size
            first += end
            lines = lines[end:]
            self.lines, self.items = [], 0

    def rest(self) -> tuple[int, list[bytes | None], int] | None:
        """The last chunk, if it holds a row."""
        if not self.items:
            return None
        chunk = (self.first, self.lines, self.items)
        self.lines, self.items = [], 0
        return chunk


# -- the processes --------------------------------------------------------------------------------------------


class _Setup(NamedTuple):
    sources: dict[str, dict[str, Any]]   # name -> the source's settings, as model_dump gives them
    ingest: dict[str, Any]
    grouping: Grouping
    parent: int        # the worker's pid: a process that finds itself orphaned as it starts ends


_CHILD: dict[str, Any] = {}


def setup_of(settings: Settings) -> _Setup:
    """What each process needs of the settings: its sources, its ingest rules, its batches' limits."""
    s = settings
    return _Setup({src.name: src.model_dump(mode="json") for src in s.sources}, s.ingest.model_dump(mode="json"),
                  Grouping(s.topics.partitions, s.ingest.batch_max_events, s.kafka.max_request_bytes // 2),
                  os.getpid())


def _end_with_parent(parent: int) -> None:
    """Ask for SIGTERM when the worker (``parent``) dies; and if it died already, while this process was starting
    (before the request, which then never comes), end now."""
    with contextlib.suppress(Exception):   # Linux only; elsewhere the pool's pipes closing ends the processes
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(0)


def _init(setup: _Setup) -> None:
    """In each process: the sources' converters compiled and the rules, once."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the worker handles ^C and stops the pool
    _end_with_parent(setup.parent)
    # into the worker's own stderr (its log), which the process shares
    sys.stderr.write(f"import: conversion process {os.getpid()} of worker {setup.parent} started\n")
    sys.stderr.flush()
    _load(setup)


def _load(setup: _Setup) -> None:
    from stream.settings import IngestSettings
    _CHILD["sources"] = {name: SourceSettings.model_validate(dump) for name, dump in setup.sources.items()}
    ingest = IngestSettings.model_validate(setup.ingest)
    _CHILD["rules"] = Rules.of(ingest)
    _CHILD["max_event_bytes"] = ingest.max_event_bytes
    _CHILD["grouping"] = setup.grouping


class Job(NamedTuple):
    source: str
    file: ImportFile
    record_offset: int
    server_ms: int
    record: str
    topic: str
    partition: int
    now_ms: int
    first: int
    lines: list[bytes | None]


def _run(job: Job) -> Converted:
    """In a process of the pool: one chunk."""
    ctx = FileContext(_CHILD["sources"][job.source], job.file, job.record_offset, job.server_ms, _CHILD["rules"],
                      _CHILD["max_event_bytes"], job.record)
    return convert_lines(ctx, job.first, job.lines, job.now_ms, job.topic, job.partition, _CHILD["grouping"])


class ConvertPool:
    """N processes converting chunks (``convert_lines``), started on first use."""

    def __init__(self, settings: Settings, processes: int) -> None:
        if processes < 1:
            raise ValueError("a pool converts in at least one process")
        self.processes = processes
        self._setup = setup_of(settings)
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    @property
    def depth(self) -> int:
        """Chunks handed to the pool at once: two a process, so none waits for the next."""
        return 2 * self.processes

    def _executor(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                self.processes, mp_context=multiprocessing.get_context("spawn"), initializer=_init,
                initargs=(self._setup,))
            metrics.IMPORT_CONVERT_PROCESSES.set(self.processes)
        return self._pool

    def submit(self, job: Job) -> asyncio.Future[Converted]:
        """Hand a chunk to the pool; its result, in the running event loop."""
        return asyncio.wrap_future(self._executor().submit(_run, job))

    def reset(self) -> None:
        """Drop a broken pool (a process died): the next job starts new processes."""
        pool, self._pool = self._pool, None
        metrics.IMPORT_CONVERT_PROCESSES.set(0)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        pool, self._pool = self._pool, None
        metrics.IMPORT_CONVERT_PROCESSES.set(0)
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
