"""What became of each mirror file's mutations: their types, outcomes and the hours they rewrote, and when (pure).

The mirror stage (``stream.agents.mirror``) applies a file's mutations wherever their insert_ids put them: on many
partitions of events.mutations, in one take or several. Once a take's hours are rewritten, it writes one
``FileTake`` per file and partition the take held mutations of, to a compacted topic
(``stream.topics.mirror_files_topic``) keyed by the file, the partition and the offset of the file's first
mutation in the take (the offset of its record: a record of events.mutations carries many mutations, and a take
holds whole records): a take applied again after a crash writes its records again under the same keys.

``summaries`` adds a file's takes up, each mutation once:

- a take applied again may be cut otherwise than the first time (the worker takes what is there), so its record
  may cover offsets that records of the first pass cover too: per file and partition, a record replaces the
  earlier-written ones whose offsets it overlaps;
- a file the import read again (a crash after its rows were produced and before its state was written, or
  ``stream import retry``) has its mutations on events.mutations again, at later offsets, its rows starting over.
  The import produces a file's rows in order, so on one partition they come in increasing row order within one
  read: a take's mutations of a file are recorded in runs of increasing rows (a new record where the row goes
  back), and, per file and partition, a record whose first row is not past the rows of the records before it
  (in offset order) starts a new read. Only the latest read counts: the one the import's state stands for.

``status_of`` is a mirror source's part of ``stream import status``: per file, the mutations by type (INSERT,
UPDATE, DELETE), their outcomes (applied: routed to the hours holding their events, or folded into a new event of
the same take; new: an INSERT of an insert_id no hour holds, exported as a new event; unknown_insert_id: an UPDATE
or DELETE naming no event of the index, dead-lettered; insert_conflict: an INSERT of a held insert_id while
``mirror.insert_is_update`` is off, ignored), dead_lettered (every row of the file in the dead-letter topic: rows
the import refused plus the unknown_insert_id ones), and each hour rewritten with when its rewrite completed: the
20 files applied last. ``history_of`` pages through all of them (``stream import history``,
``GET /admin/imports/{name}/history``), latest applied first, a page's ``next`` cursor leading to the next.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import orjson

from stream.export.mirror_apply import Applied, FileMutation

OPS = ("INSERT", "UPDATE", "DELETE")
OUTCOMES = ("applied", "new", "unknown_insert_id", "insert_conflict")


@dataclass(frozen=True)
class FileTake:
    """What one take did with the mutations of one file on one partition of events.mutations."""

    url: str
    project: int
    modified_ms: int
    """The file's S3 LastModified: when it arrived."""
    partition: int
    first: int
    last: int
    """The offsets of the file's first and last mutation in the record (of the records of events.mutations that
    carry them)."""
    row_lo: int
    row_hi: int
    """Their rows in the file (increasing with the offset: a run of one read of the file)."""
    ops: dict[str, int]
    outcomes: dict[str, int]
    hours: tuple[tuple[int, int], ...]
    """(project, hour in epoch ms) rewritten for the file's mutations."""
    at_ms: int
    """When the take's hours were rewritten."""

    @property
    def key(self) -> bytes:
        return orjson.dumps([self.url, self.partition, self.first])

    def encode(self) -> bytes:
        return orjson.dumps({"url": self.url, "project": self.project, "modified_ms": self.modified_ms,
                             "partition": self.partition, "first": self.first, "last": self.last,
                             "row_lo": self.row_lo, "row_hi": self.row_hi, "ops": self.ops,
                             "outcomes": self.outcomes, "hours": [list(h) for h in self.hours], "at_ms": self.at_ms})

    @classmethod
    def decode(cls, data: bytes) -> FileTake:
        d = orjson.loads(data)
        return cls(d["url"], d["project"], d["modified_ms"], d["partition"], d["first"], d["last"], d["row_lo"],
                   d["row_hi"], d["ops"], d["outcomes"], tuple((p, h) for p, h in d["hours"]), d["at_ms"])


def takes_of(applied: Applied, partition: int, at_ms: int) -> list[FileTake]:
    """The records of one partition's batch of a take whose hours were rewritten at ``at_ms``: per file (by URL),
    one per run of its mutations whose rows increase with their offsets (the mutations of one record of
    events.mutations, which share its offset, in the order of their rows)."""
    out = []
    for url, f in sorted(applied.files.items()):
        runs: list[list[FileMutation]] = []
        for m in sorted(f.mutations, key=lambda m: (m.offset, m.row)):    # a new INSERT's folded mutations follow it
            if not runs or m.row <= runs[-1][-1].row:
                runs.append([])
            runs[-1].append(m)
        for run in runs:
            out.append(FileTake(url, f.project, f.modified_ms, partition, run[0].offset, run[-1].offset,
                                run[0].row, run[-1].row, dict(sorted(Counter(m.op for m in run).items())),
                                dict(sorted(Counter(m.outcome for m in run).items())),
                                tuple(sorted({h for m in run for h in m.hours})), at_ms))
    return out


@dataclass
class FileSummary:
    url: str
    project: int
    modified_ms: int
    ops: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    hours: dict[tuple[int, int], int] = field(default_factory=dict)
    """(project, hour) -> when its latest rewrite for the file completed (epoch ms)."""
    last_ms: int = 0
    """When the latest take of the file's mutations was applied."""


def summaries(takes: Iterable[FileTake]) -> dict[str, FileSummary]:
    """Each file's takes added up, a take applied again counted once (see the module)."""
    kept: dict[tuple[str, int], list[FileTake]] = {}
    for t in sorted(takes, key=lambda t: (t.at_ms, t.first)):
        mine = kept.setdefault((t.url, t.partition), [])
        mine[:] = [k for k in mine if k.last < t.first or k.first > t.last] + [t]
    out: dict[str, FileSummary] = {}
    for (url, _), ts in sorted(kept.items()):
        for t in latest_read(ts):
            s = out.setdefault(url, FileSummary(url, t.project, t.modified_ms))
            s.ops.update(t.ops)
            s.outcomes.update(t.outcomes)
            for h in t.hours:
                s.hours[h] = max(s.hours.get(h, 0), t.at_ms)
            s.last_ms = max(s.last_ms, t.at_ms)
    return out


def latest_read(takes: Iterable[FileTake]) -> list[FileTake]:
    """The records of one file and partition that belong to the latest read of the file (see the module)."""
    reads: list[list[FileTake]] = []
    for t in sorted(takes, key=lambda t: t.first):
        if not reads or t.row_lo <= max(k.row_hi for k in reads[-1]):
            reads.append([])
        reads[-1].append(t)
    return reads[-1] if reads else []


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def hour_text(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H", time.gmtime(ms // 1000))


def _mine(bucket: str, wanted: Callable[[str], bool], project: int,
          files: Mapping[str, FileSummary]) -> list[FileSummary]:
    """The mirror files of a source, latest applied first (ties by URL)."""
    under = f"s3://{bucket}/"
    return sorted((s for url, s in files.items()
                   if url.startswith(under) and wanted(url[len(under):]) and s.project == project),
                  key=lambda s: (-s.last_ms, s.url))


def _entry(s: FileSummary, bucket: str, import_dead: Mapping[str, int]) -> dict:
    key = s.url[len(f"s3://{bucket}/"):]
    outcomes = {o: s.outcomes.get(o, 0) for o in OUTCOMES}
    return {
        "key": key, "modified_ms": s.modified_ms,
        "mutations": {op: s.ops.get(op, 0) for op in OPS},
        "outcomes": {**outcomes, "dead_lettered": import_dead.get(key, 0) + outcomes["unknown_insert_id"]},
        "hours": [{"project": p, "hour": hour_text(h), "rewritten_ms": at} for (p, h), at in sorted(s.hours.items())],
        "last_applied_ms": s.last_ms,
    }


def status_of(bucket: str, wanted: Callable[[str], bool], project: int, files: Mapping[str, FileSummary],
              import_dead: Mapping[str, int], shown: int = 20) -> list[dict]:
    """The mirror files of a source (in ``bucket``, keys it ``wanted``, of ``project``), latest applied first, at
    most ``shown``; ``import_dead``: per key, the rows its import dead-lettered (the file's import state)."""
    return [_entry(s, bucket, import_dead) for s in _mine(bucket, wanted, project, files)[:shown]]


class BadCursor(ValueError):
    """A ``before`` that is not a cursor of ``history_of`` (its ``next``)."""


def cursor(entry: Mapping) -> str:
    """The place of a file in a source's history (``history_of``'s ``next``): its last_applied_ms and key."""
    return f"{entry['last_applied_ms']}:{entry['key']}"


def parse_cursor(text: str) -> tuple[int, str]:
    ms, sep, key = text.partition(":")
    if not sep or not ms.isascii() or not ms.isdigit() or len(ms) > 15 or not key:
        raise BadCursor(f"before must be the next cursor of a previous page (<last_applied_ms>:<key>, such as "
                        f"1733450761412:mirror/fixes.json), not {text!r}: leave it out for the latest files")
    return int(ms), key


def history_of(bucket: str, wanted: Callable[[str], bool], project: int, files: Mapping[str, FileSummary],
               import_dead: Mapping[str, int], limit: int, before: str | None = None) -> dict:
    """A page of a source's mirror files, latest applied first: at most ``limit`` of them, those after the cursor
    ``before`` (a previous page's ``next``; None: from the latest). ``total``: the source's files; ``next``: the
    cursor of the page's last file when more follow it, else None. A file applied again since a page was read
    moves to the top of the history: a reader paging on sees each file at most once, the moved one on a new
    first page."""
    mine = _mine(bucket, wanted, project, files)
    under = f"s3://{bucket}/"
    if before is not None:
        ms, key = parse_cursor(before)
        mine_after = [s for s in mine if (-s.last_ms, s.url) > (-ms, under + key)]
    else:
        mine_after = mine
    page = [_entry(s, bucket, import_dead) for s in mine_after[:limit]]
    more = len(mine_after) > limit
    return {"total": len(mine), "files": page, "next": cursor(page[-1]) if more and page else None}


def show(files: list[dict]) -> list[str]:
    """A source's mirror files as lines for a person (under the source's line of ``stream import status``)."""
    lines = []
    for f in files:
        m, o = f["mutations"], f["outcomes"]
        lines.append(f"  mirror file {f['key']}: {m['INSERT']} INSERT, {m['UPDATE']} UPDATE, {m['DELETE']} DELETE; "
                     f"{o['applied']} applied, {o['new']} new, {o['unknown_insert_id']} unknown insert_id, "
                     f"{o['insert_conflict']} insert conflicts, {o['dead_lettered']} dead-lettered")
        for h in f["hours"]:
            lines.append(f"    hour {h['project']} {h['hour']} rewritten at {iso(h['rewritten_ms'])}")
        if not f["hours"]:
            lines.append("    no hour rewritten")
    return lines


def show_history(source: str, doc: Mapping) -> list[str]:
    """A page of ``history_of`` as lines for a person (``stream import history``)."""
    import shlex
    files = doc["files"]
    lines = [f"{source}: {len(files)} of {doc['total']} mirror files shown, latest applied first"]
    for f in files:
        first, *rest = show([f])
        lines += [first, f"    last applied at {iso(f['last_applied_ms'])}", *rest]
    if doc["next"] is not None:
        lines.append(f"more: stream import history {shlex.quote(source)} --before {shlex.quote(doc['next'])}")
    return lines
