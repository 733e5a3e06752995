"""Hours whose mirror mutations are logged and not yet rebuilt: the mirror stage's pending records (pure).

A take of events.mutations logs its mutations in their hours' logs (``stream.export.mirror_apply``) and, instead
of rebuilding those hours before the take is committed, records them as *pending*, per partition of
events.mutations, in the stage's pending table (RocksDB, its changelog compacted: ``stream.agents.mirror``), with
the mirror-files records (``stream.imports.mirror_files.FileTake``) that wait for them. The take is then
committed. A take of a backlog that spans many takes rewrites each hour once, not once per take.

The pending hours are rebuilt together (each hour once, whichever partitions' takes touched it) when
:func:`due_hours` says so: once every partition the stage reads is drained (it has handled every mutation up to
the partition's end: :func:`drained`), or once the oldest pending hour has waited ``within_ms`` (so that a steady
trickle of mutations is applied all the same); ``within_ms`` 0 rebuilds after every take. Once the hours are
rewritten, the waiting mirror-files records are written with that time and the pending records deleted.

Keys of a partition's records (a value of None deletes):

- ``H`` + project (4 bytes) + hour (8 bytes, epoch ms): :class:`PendingHour` as JSON;
- ``F`` + the FileTake's key: the FileTake, its ``at_ms`` 0 until its hours are rewritten.

Why a crash anywhere converges: a take replayed records the same keys again (the hours' first times kept); a
crash between the rebuild and the deletion of the records rebuilds the hours again from the same logs (the same
bytes) and writes the files' records again under the same keys.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

import orjson

from stream.imports.mirror_files import FileTake

HOUR, FILE = b"H", b"F"
_HOUR = struct.Struct(">Iq")


@dataclass(frozen=True)
class PendingHour:
    since_ms: int
    """When a take first recorded the hour as pending (the worker's clock): what ``within_ms`` is counted from."""
    oldest_ms: int
    """The Kafka timestamp of the oldest mutation that waits for the hour's rebuild (the waiting gauge's)."""


@dataclass
class Pending:
    """One partition's pending records."""

    hours: dict[tuple[int, int], PendingHour] = field(default_factory=dict)
    """(project, hour in epoch ms) -> since when it waits."""
    files: dict[bytes, FileTake] = field(default_factory=dict)
    """The mirror-files records waiting for the hours, by their key."""

    def since_ms(self) -> int | None:
        return min((h.since_ms for h in self.hours.values()), default=None)

    def oldest_ms(self) -> int | None:
        return min((h.oldest_ms for h in self.hours.values()), default=None)


def hour_key(project: int, hour_ms: int) -> bytes:
    return HOUR + _HOUR.pack(project, hour_ms)


def read(items: Iterable[tuple[bytes, bytes]]) -> Pending:
    """A partition's records (its table's keys and values) as :class:`Pending`."""
    out = Pending()
    for k, v in items:
        if k[:1] == HOUR and len(k) == 1 + _HOUR.size:
            d = orjson.loads(v)
            out.hours[_HOUR.unpack(k[1:])] = PendingHour(d["since_ms"], d["oldest_ms"])
        elif k[:1] == FILE:
            out.files[k[1:]] = FileTake.decode(v)
    return out


def writes(pending: Pending, hours: Mapping[int, Iterable[int]], files: Iterable[FileTake], now_ms: int,
           oldest_ms: int) -> dict[bytes, bytes | None]:
    """The records a take adds to its partition's ``pending``: the hours it logged mutations in (per project;
    an hour already pending keeps its first time, and the oldest of the two mutations' timestamps) and its
    mirror-files records that name hours (``at_ms`` 0 until they are rewritten)."""
    out: dict[bytes, bytes | None] = {}
    for project, hs in sorted(hours.items()):
        for h in sorted(set(hs)):
            was = pending.hours.get((project, h))
            new = PendingHour(now_ms, oldest_ms) if was is None else \
                PendingHour(was.since_ms, min(was.oldest_ms, oldest_ms))
            out[hour_key(project, h)] = orjson.dumps(dataclasses.asdict(new))
    for t in files:
        out[FILE + t.key] = dataclasses.replace(t, at_ms=0).encode()
    return out


def clears(pending: Pending) -> dict[bytes, bytes | None]:
    """Deletions of every record of ``pending`` (once its hours are rewritten)."""
    return {**{hour_key(p, h): None for p, h in sorted(pending.hours)}, **{FILE + k: None for k in pending.files}}


def rewritten(pending: Pending, at_ms: int) -> list[FileTake]:
    """The waiting mirror-files records, their hours rewritten at ``at_ms``, in key order."""
    return [dataclasses.replace(t, at_ms=at_ms) for _, t in sorted(pending.files.items())]


def drained(done: Mapping[int, int | None], ends: Mapping[int, int | None]) -> bool:
    """Has every partition (of ``ends``: each one's end offset, None while unknown) been handled up to its end
    (``done``: the next offset after the last one handled, None while unknown)?"""
    for p, end in ends.items():
        d = done.get(p)
        if end is None or d is None or d < end:
            return False
    return True


def due_hours(pendings: Iterable[Pending], now_ms: int, is_drained: bool, within_ms: int) -> dict[int, list[int]]:
    """The hours to rebuild now, per project, sorted: every pending hour of every partition, once the partitions
    are drained or the oldest pending hour has waited ``within_ms`` (0: at once); none otherwise, or when none
    is pending."""
    ps = list(pendings)
    since = min((s for p in ps if (s := p.since_ms()) is not None), default=None)
    if since is None or not (is_drained or now_ms - since >= within_ms):
        return {}
    out: dict[int, set[int]] = {}
    for p in ps:
        for project, h in p.hours:
            out.setdefault(project, set()).add(h)
    return {project: sorted(hs) for project, hs in sorted(out.items())}


def due_on_drain_only(pendings: Iterable[Pending], now_ms: int, is_drained: bool, within_ms: int) -> bool:
    """Are pending hours due (``due_hours``) only because the partitions look drained, not yet by ``within_ms``? The
    stage then asks the broker whether more mutations came since its consumer last looked before it rebuilds them."""
    ps = list(pendings)
    return is_drained and bool(due_hours(ps, now_ms, True, within_ms)) and not due_hours(ps, now_ms, False, within_ms)


class DrainCheck:
    """Whether the broker's end offsets confirm that a stage has taken every mutation (``drained`` of what it has
    taken and of ends read now), asked at most once for what it has taken: while they say more is there, the next
    take, which those mutations make, changes what has been taken and asks again."""

    def __init__(self) -> None:
        self.short: dict[int, int | None] | None = None
        """What had been taken when the ends last said more was there."""

    async def confirmed(self, taken: Mapping[int, int | None],
                        ends: Callable[[], Awaitable[Mapping[int, int]]]) -> bool:
        done = dict(taken)
        if self.short == done:
            return False
        read = await ends()
        if drained(done, {p: read.get(p) for p in done}):
            self.short = None
            return True
        self.short = done
        return False


def hours_pending(pendings: Iterable[Pending]) -> int:
    """The (project, hour)s pending over partitions, each once (the pending hours gauge)."""
    return len({h for p in pendings for h in p.hours})


def oldest_waiting_s(oldest_ms: Iterable[int | None], now_ms: int) -> float:
    """Age in seconds of the oldest mutation taken and not applied yet (its hours not rewritten), of the Kafka
    timestamps of the oldest of a take being logged and of the pending hours (``Pending.oldest_ms``; None: none);
    0 when none waits."""
    oldest = min((o for o in oldest_ms if o is not None), default=None)
    return 0.0 if oldest is None else max(0.0, (now_ms - oldest) / 1000)
