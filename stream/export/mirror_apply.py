"""Applying a batch of mirror mutations: route each by the index, keep it in its hour's log, rebuild the hours.

The engine under the mutation agent (faust-free: it takes a clock, the index store, the logs' storage per project, and
a rebuild; the agent sends the new events it hands back). A batch is the mutations of one partition of
``events.mutations`` (keyed by project and insert_id, so that one partition holds every mutation of an event, in the
order they were read, and the index entries of its insert_ids). Order, and why a crash anywhere converges:

1. each mutation is routed by the index (``stream.export.mirror_index``): an UPDATE or DELETE to the hours that
   hold its event, or, naming no held event, counted ``unknown`` and handed back to be dead-lettered with its
   file and row; an INSERT of an insert_id no hour holds (for its device) is a new event, folded with the
   batch's later mutations of the same insert_id (a later UPDATE replaces its row, a later DELETE drops it) and
   handed to ``send_new`` (exported as an import's events are); an INSERT of a held one is routed as an UPDATE
   when ``insert_is_update``, else counted ``insert_conflict``;
2. per touched hour, the routed mutations are written to the hour's log (``stream.export.mirror_log``) under a
   key made of the batch's partition and first offset (the mirror stage's crash point ``mirror.logged`` after
   the last);
3. the touched hours are rebuilt: each from its source events and the hour's whole log. ``apply`` calls
   ``rebuild`` with them before it returns (``rebuild_touched``); the mirror stage instead records them as
   pending and rebuilds them later, each once for many takes (``stream.export.mirror_pending``);
4. the caller commits the batch's offsets.

A crash before 4 replays the batch: the same mutations are written again (under the same keys, or, cut
otherwise, under others whose copies the log's merge keeps once) and the hours are rebuilt again from the same
inputs, so they end with the same bytes. New events sent again are dropped by dedupe: an INSERT's row carries
its own insert_id.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from stream.clock import Clock
from stream.events.batch import SOURCE_SLOTS
from stream.export import mirror_index, mirror_log
from stream.export.mirror import Mutation, Op, updated
from stream.export.mirror_kept import HourMutations, KeptMutations
from stream.s3.storage import Storage


class IndexReader(Protocol):
    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        """The index values of the keys (None: not indexed), in their order."""


@dataclass(frozen=True, slots=True)
class Targeted:
    """A mutation of events.mutations with the project it belongs to."""

    project: int
    mutation: Mutation
    offset: int = -1
    """The offset on events.mutations of its record (a record carries many mutations)."""
    index: int = 0
    """Its place in its record (0 for a record of one)."""

    @property
    def source_offset(self) -> int:
        """The source offset of the event a new INSERT becomes: its record's offset times ``SOURCE_SLOTS``, plus its
        index, so that the mutations of a record each have one of their own, increasing with the topic's order
        (records of one mutation too: those an earlier version wrote may follow records of many on a partition)."""
        return self.offset * SOURCE_SLOTS + self.index


def targets_of(records: Iterable[tuple[int, bytes]]) -> list[Targeted]:
    """The mutations of records of events.mutations ((offset, value), of either kind: one mutation or many,
    ``stream.imports.mutations.decode_record``), in order, each with its record's offset and its index in it."""
    from stream.imports.mutations import decode_record
    return [Targeted(project, mutation, offset, i) for offset, value in records
            for i, (project, mutation) in enumerate(decode_record(value))]


@dataclass
class Applied:
    routed: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(op, outcome) of the routing: routed, new, unknown, insert_conflict, folded."""
    hours: dict[int, list[int]] = field(default_factory=dict)
    """Per project, the hours (epoch ms) rebuilt."""
    unknown: list[Targeted] = field(default_factory=list)
    """UPDATEs and DELETEs that name no event the index holds."""
    new: list[Targeted] = field(default_factory=list)
    """New events (INSERTs of insert_ids no hour holds), each with the batch's later mutations folded in."""
    files: dict[str, FileTally] = field(default_factory=dict)
    """Per import file (its URL), what the batch did with its mutations (``stream.imports.mirror_files``)."""

    def tally(self, t: Targeted, outcome: str, hours: Iterable[tuple[int, int]] = ()) -> None:
        """Note one mutation of the batch under its file: its offset, row, op, outcome, the hours it was routed to."""
        modified_ms, url, row = t.mutation.seq
        f = self.files.get(url)
        if f is None:
            f = self.files[url] = FileTally(t.project, modified_ms)
        f.mutations.append(FileMutation(t.offset, row, t.mutation.op.value, FILE_OUTCOME[outcome], tuple(hours)))


FILE_OUTCOME = {"routed": "applied", "folded": "applied", "new": "new", "unknown": "unknown_insert_id",
                "insert_conflict": "insert_conflict"}
"""The outcome a file's record gives each routing outcome: a mutation folded into a new event is applied too."""


@dataclass(frozen=True)
class FileMutation:
    offset: int
    """The offset on events.mutations of the record carrying it (a record carries many)."""
    row: int
    """Its row in the file."""
    op: str
    outcome: str
    hours: tuple[tuple[int, int], ...]
    """(project, hour in epoch ms) it was routed to: hours the batch rewrites."""


@dataclass
class FileTally:
    """What one batch did with the mutations of one import file."""

    project: int
    modified_ms: int
    mutations: list[FileMutation] = field(default_factory=list)


def fold_new(first: Mutation, later: Sequence[Mutation]) -> Mutation | None:
    """An INSERT of a new event with the batch's later mutations of its insert_id applied: None once deleted."""
    current: Mutation | None = first
    for m in later:
        if current is None:
            if m.op is Op.INSERT:
                current = m
            continue
        if m.device_id is not None and m.device_id != _device_of(current):
            continue
        if m.op is Op.DELETE:
            current = None
        else:
            assert current.row is not None and m.row is not None
            current = Mutation(current.insert_id, Op.INSERT, current.seq, current.device_id,
                               updated(current.row, m.row))
    return current


def _device_of(m: Mutation) -> str | None:
    if m.device_id is not None:
        return m.device_id
    if m.row is not None and isinstance(m.row.get("device_id"), str):
        return m.row["device_id"]
    return None


LOG_READS = 16
"""The log objects a rebuild pass reads at once (of all its hours)."""

LOG_PUTS = 16
"""The hours' log objects of a batch written at once (one S3 request each; a take of a file's mutations touches
every hour they name)."""


class MirrorApplier:
    def __init__(self, clock: Clock, index: IndexReader,
                 logs: Callable[[int], AbstractAsyncContextManager[tuple[Storage, str]]],
                 log_prefix: str, keep_days: int, insert_is_update: bool,
                 rebuild: Callable[[int, list[int]], Awaitable[None]]):
        self.clock = clock
        self.index = index
        self.logs = logs
        self.log_prefix = log_prefix
        self.keep_days = keep_days
        self.insert_is_update = insert_is_update
        self.rebuild = rebuild

    def route(self, batch: Sequence[Targeted]) -> tuple[Applied, dict[tuple[int, int], list[Mutation]]]:
        """Step 1 (pure but for the index reads): the outcome of each mutation and the mutations per
        (project, hour)."""
        applied = Applied()
        keys = sorted({mirror_index.key(t.project, t.mutation.insert_id) for t in batch})
        held = dict(zip(keys, self.index.get_many(keys)))
        oldest = mirror_index.oldest_hour(self.clock.now_ms(), self.keep_days)
        per_hour: dict[tuple[int, int], list[Mutation]] = {}
        ordered = sorted(range(len(batch)), key=lambda i: batch[i].mutation.seq)
        folded: set[int] = set()
        for pos, i in enumerate(ordered):
            if i in folded:
                continue
            t = batch[i]
            m = t.mutation
            entries = mirror_index.decode(held[mirror_index.key(t.project, m.insert_id)])
            if m.op is Op.INSERT:
                hours = mirror_index.hours_of(entries, _device_of(m), oldest)
                if not hours:
                    later = [j for j in ordered[pos + 1:] if batch[j].project == t.project
                             and batch[j].mutation.insert_id == m.insert_id]
                    folded.update(later)
                    applied.routed[(m.op.value, "new")] += 1
                    applied.tally(t, "new")
                    for j in later:
                        applied.routed[(batch[j].mutation.op.value, "folded")] += 1
                        applied.tally(batch[j], "folded")
                    result = fold_new(m, [batch[j].mutation for j in later])
                    if result is not None:
                        applied.new.append(Targeted(t.project, result, t.offset, t.index))
                    continue
                if not self.insert_is_update:
                    applied.routed[(m.op.value, "insert_conflict")] += 1
                    applied.tally(t, "insert_conflict")
                    continue
            else:
                hours = mirror_index.hours_of(entries, m.device_id, oldest)
                if not hours:
                    applied.routed[(m.op.value, "unknown")] += 1
                    applied.tally(t, "unknown")
                    applied.unknown.append(t)
                    continue
            applied.routed[(m.op.value, "routed")] += 1
            applied.tally(t, "routed", ((t.project, h) for h in hours))
            for h in hours:
                per_hour.setdefault((t.project, h), []).append(m)
        return applied, per_hour

    async def apply(self, partition: int, first_offset: int, batch: Sequence[Targeted]) -> Applied:
        """Steps 1 to 3 for the batch of ``events.mutations[partition]`` starting at ``first_offset``; the
        caller commits after it returns (and sends ``Applied.new``, dead-letters ``Applied.unknown``)."""
        applied = await self.log(partition, first_offset, batch)
        await rebuild_touched([applied], self.rebuild)
        return applied

    async def log(self, partition: int, first_offset: int, batch: Sequence[Targeted]) -> Applied:
        """Steps 1 and 2: route the batch and keep its mutations in their hours' logs; ``Applied.hours`` says
        which hours to rebuild (``rebuild_touched``, once for the batches of every partition taken together)."""
        applied, per_hour = self.route(batch)
        for project in sorted({p for p, _ in per_hour}):
            hours = sorted(h for p, h in per_hour if p == project)
            async with self.logs(project) as (storage, bucket):
                limit = asyncio.Semaphore(LOG_PUTS)

                async def put(hour: int) -> None:
                    async with limit:
                        await storage.put_bytes(bucket, mirror_log.log_key(self.log_prefix, project, hour, partition,
                                                                           first_offset),
                                                mirror_log.encode(per_hour[(project, hour)]), "application/x-ndjson")
                puts = [asyncio.ensure_future(put(h)) for h in hours]
                try:
                    await asyncio.gather(*puts)
                except BaseException:
                    for t in puts:        # one failed: the batch is logged again as a whole
                        t.cancel()
                    raise
            applied.hours.setdefault(project, []).extend(hours)
        return applied


async def rebuild_touched(applied: Iterable[Applied], rebuild: Callable[[int, list[int]], Awaitable[None]]) -> None:
    """Step 3 for batches whose logs are written: each touched hour rebuilt once, however many partitions' batches
    touched it (every rebuild reads the hour's whole log)."""
    hours: dict[int, set[int]] = {}
    for a in applied:
        for project, hs in a.hours.items():
            hours.setdefault(project, set()).update(hs)
    for project, hs in sorted(hours.items()):
        await rebuild(project, sorted(hs))


async def hour_mutations(storage: Storage, bucket: str, log_prefix: str, project: int, hour_ms: int) -> list[Mutation]:
    """Every mutation kept for the hour, each once, in the order they apply (what a rebuild of the hour applies)."""
    logs = []
    async for o in storage.list(bucket, mirror_log.hour_prefix(log_prefix, project, hour_ms)):
        data = b"".join([chunk async for chunk in storage.read(bucket, o.key)])
        logs.append(mirror_log.decode(data))
    return mirror_log.merge(logs)


class MirrorLog:
    """A project's kept mutations, as every rebuild of its hours reads them (the mirror's and a backfill's)."""

    def __init__(self, storage: Storage, bucket: str, log_prefix: str, insert_is_update: bool):
        self.storage, self.bucket, self.log_prefix = storage, bucket, log_prefix
        self.insert_is_update = insert_is_update
        self._reads = asyncio.Semaphore(LOG_READS)     # shared by the hours of a pass read together

    async def keep(self, project: int, hour_ms: int, kept: KeptMutations) -> HourMutations:
        """The hour's mutations by insert_id (each group in the order it applies), spilled to ``kept`` as their log
        lines, unparsed. The log objects (one per partition and take) are read ``LOG_READS`` at once, over every hour
        a pass reads together, each spilled as it arrives (the order does not matter: a group is put in order when
        it is read), so that a pass holds at most that many objects, whatever the hours' size."""
        keys = [o.key async for o in self.storage.list(self.bucket, mirror_log.hour_prefix(self.log_prefix, project,
                                                                                           hour_ms))]

        async def spill(key: str) -> None:
            async with self._reads:
                data = b"".join([chunk async for chunk in self.storage.read(self.bucket, key)])
                kept.add_lines(hour_ms, mirror_log.lines(data))
        reads = [asyncio.ensure_future(spill(k)) for k in keys]
        try:
            await asyncio.gather(*reads)
        except BaseException:
            for t in reads:
                t.cancel()
            raise
        return kept.hour(hour_ms)


def mirror_log_of(settings: Any, dest: Any, archive_storage: Storage) -> MirrorLog | None:
    """The mirror log a rebuild of ``dest`` applies: its project's, when the project has a mirror source and
    ``dest`` is in the Amplitude layout (the log is in the bucket of the project's archive destination, read
    through ``archive_storage``); None otherwise."""
    archive = settings.archive_of(dest.project)
    if dest.project not in settings.mirror_projects() or dest.layout != "amplitude" or archive is None:
        return None
    return MirrorLog(archive_storage, archive.bucket, settings.mirror.log_prefix, settings.mirror.insert_is_update)
