"""Where a project's applied mirror mutations are kept, per hour, for every later rebuild of that hour (pure).

An hour rebuild under mirror reads the hour's events as they were accepted (``events.accepted``, or the archive
destination past its retention) and applies *every* mutation ever applied to that hour, in their order
(``stream.export.mirror``). So the mutations of an hour must outlive the mutation topic and be readable by any
rebuild -- the worker's, and a backfill run from the CLI, which would otherwise undo them. They are kept on S3,
in the archive destination's bucket (the project's system of record), one object per applied batch and hour:

    <log_prefix><project>/<YYYY-MM-DD>_<H>/<partition>-<first offset, 20 digits>.jsonl.gz

``log_prefix`` (``mirror.log_prefix``, default ``_stream/mirror/``) is a prefix of the bucket, not of the
destination, so a reader of the export's folder never lists these objects. Each object is gzip JSON lines, one
mutation a line, with a fixed gzip header (no time, no name): the same batch encodes to the same bytes. A batch
replayed after a crash may be cut differently and written under another key, so the same mutation can be kept
twice: :func:`merge` keeps one of each (by its sequence and target), and the rebuild's result does not depend on
it.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from stream.export.mirror import Mutation, Op

LOG_PREFIX = "_stream/mirror/"


def hour_prefix(log_prefix: str, project: int, hour_ms: int) -> str:
    """The folder of an hour's mutation objects."""
    t = time.gmtime(hour_ms // 1000)
    return f"{log_prefix}{project}/{time.strftime('%Y-%m-%d', t)}_{t.tm_hour}/"


def log_key(log_prefix: str, project: int, hour_ms: int, partition: int, first_offset: int) -> str:
    """The key of the mutations applied to the hour from the batch of ``events.mutations[partition]`` starting
    at ``first_offset``."""
    return f"{hour_prefix(log_prefix, project, hour_ms)}{partition}-{first_offset:020d}.jsonl.gz"


def _record(m: Mutation) -> dict[str, Any]:
    out: dict[str, Any] = {"seq": list(m.seq), "op": m.op.value, "insert_id": m.insert_id}
    if m.device_id is not None:
        out["device_id"] = m.device_id
    if m.row is not None:
        out["row"] = m.row
    return out


def line(m: Mutation) -> bytes:
    """One mutation as a line of a log object."""
    return orjson.dumps(_record(m)) + b"\n"


def encode(mutations: Sequence[Mutation]) -> bytes:
    """The object's bytes: gzip (header without time or name) of one JSON line per mutation, in the given order."""
    return gzip.compress(b"".join(line(m) for m in mutations), compresslevel=6, mtime=0)


def decode(data: bytes) -> list[Mutation]:
    """The mutations of an object written by :func:`encode`."""
    return decode_lines(gzip.decompress(data))


def decode_lines(body: bytes) -> list[Mutation]:
    """The mutations of lines made by :func:`line`."""
    out = []
    for ln in body.split(b"\n"):
        if not ln:
            continue
        r = orjson.loads(ln)
        seq = r["seq"]
        out.append(Mutation(r["insert_id"], Op(r["op"]), (int(seq[0]), str(seq[1]), int(seq[2])), r.get("device_id"),
                            r.get("row")))
    return out


def merge(logs: Iterable[Sequence[Mutation]]) -> list[Mutation]:
    """The mutations of several objects of an hour, each kept once, in the order they apply."""
    seen: dict[tuple[tuple[int, str, int], str, str | None], Mutation] = {}
    for log in logs:
        for m in log:
            seen.setdefault((m.seq, m.insert_id, m.device_id), m)
    return sorted(seen.values(), key=lambda m: (m.seq, m.insert_id, m.device_id or ""))
