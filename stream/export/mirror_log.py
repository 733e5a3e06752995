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

import time
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from isal import igzip

from stream.export.mirror import Mutation, Op, RawRow

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
        # a row kept as its JSON bytes goes in as they are: the same line as its parsed row's for bytes orjson wrote
        out["row"] = orjson.Fragment(bytes(m.row.raw)) if isinstance(m.row, RawRow) else m.row
    return out


def line(m: Mutation) -> bytes:
    """One mutation as a line of a log object."""
    return orjson.dumps(_record(m)) + b"\n"


COMPRESS_LEVEL = 2
"""isal's gzip level of the log objects: about 1 µs a 1 KB mutation, against 30 for zlib's level 6 (objects about
a fifth bigger), which made a take's logs cost more than its routing."""


def encode(mutations: Sequence[Mutation]) -> bytes:
    """The object's bytes: gzip (header without time or name; isal's deflate) of one JSON line per mutation, in the
    given order."""
    return igzip.compress(b"".join(line(m) for m in mutations), compresslevel=COMPRESS_LEVEL, mtime=0)


def decode(data: bytes) -> list[Mutation]:
    """The mutations of an object written by :func:`encode` (or any gzip of such lines)."""
    return decode_lines(igzip.decompress(data))


def lines(data: bytes) -> list[bytes]:
    """The lines of an object written by :func:`encode`, each with its newline, unparsed."""
    return [ln + b"\n" for ln in igzip.decompress(data).split(b"\n") if ln]


_ID = b'"insert_id":"'


def insert_id_of(ln: bytes) -> bytes:
    """The insert_id of a line made by :func:`line`, as the UTF-8 bytes of the string, found without parsing the
    line when it can be: :func:`line` writes ``seq``, ``op`` and ``insert_id`` before the row, and a quote inside
    a JSON string is escaped, so the first ``"insert_id":"`` of the line is its own key; a value with an escape
    (or a line not written so) is parsed."""
    i = ln.find(_ID)
    if i >= 0:
        start = i + len(_ID)
        end = ln.find(b'"', start)
        if end > 0 and ln.find(b"\\", start, end) < 0:
            return ln[start:end]
    return str(orjson.loads(ln)["insert_id"]).encode()


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
