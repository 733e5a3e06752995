"""Cohort sync files (FORMATS.md §6): their S3 keys, their CSV bytes, and the entering/exiting diff as one stream.

Each sync writes three files: ``entering`` (in the cohort now, not at the previous sync), ``exiting`` (the reverse)
and ``existing`` (everyone in it now). The key carries the sync's scheduled time, never the time it ran, so a
sync retried after a crash writes the same keys again.

CSV: RFC 4180, UTF-8 without a byte order mark, CRLF after every line, header included. A field holding a comma,
a double quote, CR or LF is quoted and its quotes doubled. Values: strings as they are, integers in decimal, floats
as JSON writes them (``2.5``, ``1e16``), booleans ``true``/``false``, lists and mappings as compact JSON, null
(and a NaN or infinity) as an empty field -- an empty string is an empty field too.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Any, Literal, TypeVar

import msgspec

DIFF_TYPES = ("entering", "exiting", "existing")
DiffType = Literal["entering", "exiting", "existing"]
_json = msgspec.json.Encoder(enc_hook=str).encode
T = TypeVar("T")
_SPECIAL = (",", '"', "\r", "\n")


def sync_key(path_prefix: str, project_id: int, cohort_id: str, scheduled_ms: int, diff_type: str,
             routing_key: str = "", hyphen: bool = False) -> str:
    """``<path_prefix><projectID>_<cohortID>_<YYYY-MM-DDTHH:MM>_<diff_type>[_<routing_key>].csv``.

    The time is the sync's scheduled minute in UTC, written ``HH:MM`` as Amplitude's template does, or ``HH-MM``
    with ``hyphen`` for tools that cannot take a colon in a key (FORMATS.md §6.1). An empty routing key drops its
    part with the underscore before it. ``path_prefix`` is prepended as written (``cohorts/`` makes a folder), as
    the export's prefix is.
    """
    if diff_type not in DIFF_TYPES:
        raise ValueError(f"diff type {diff_type!r}: expected one of {', '.join(DIFF_TYPES)}")
    stamp = time.strftime("%Y-%m-%dT%H-%M" if hyphen else "%Y-%m-%dT%H:%M", time.gmtime(scheduled_ms // 1000))
    routing = f"_{routing_key}" if routing_key else ""
    return f"{path_prefix}{project_id}_{cohort_id}_{stamp}_{diff_type}{routing}.csv"


def field(value: Any) -> str:
    """One value as the text of a CSV field, before quoting."""
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _json(value).decode() if math.isfinite(value) else ""
    if isinstance(value, (dict, list, tuple)):
        return _json(value).decode()
    return str(value)


def _quoted(text: str) -> str:
    if any(c in text for c in _SPECIAL):
        return '"' + text.replace('"', '""') + '"'
    return text


def line(values: Iterable[Any]) -> bytes:
    """One CSV line, CRLF included."""
    return (",".join(_quoted(field(v)) for v in values) + "\r\n").encode()


def header(props: Iterable[str]) -> bytes:
    """``amplitudeID,userID,<prop>...``: the header line of every sync file (FORMATS.md §6.2)."""
    return line(("amplitudeID", "userID", *props))


def row(amplitude_id: int, user_id: str | None, values: Iterable[Any]) -> bytes:
    """One user's line: its ids, then its value of each property of the header, in the header's order."""
    return line((amplitude_id, user_id, *values))


def _ascending(ids: Iterable[int], name: str) -> Iterator[int]:
    # a merge of unsorted input would be silently wrong: say so instead
    last = None
    for i in ids:
        if last is not None and i <= last:
            raise ValueError(f"{name} ids must be strictly ascending: {i} after {last}")
        last = i
        yield i


def read_ids(f: IO[bytes]) -> Iterator[tuple[int, str]]:
    """(amplitudeID, userID) of each line of a sync file read from ``f``, header skipped, in the file's order: the
    userID as the file wrote it (an empty field: ``""``), its quoting undone."""
    rows = csv.reader(io.TextIOWrapper(f, encoding="utf-8", newline=""))
    next(rows, None)
    for r in rows:
        if r and r[0].strip():
            yield int(r[0]), r[1] if len(r) > 1 else ""


def diff_with(previous: Iterable[tuple[int, T]], current: Iterable[int],
              existing: bool = False) -> Iterator[tuple[int, DiffType, T | None]]:
    """``diff`` of ``previous`` given as (id, what the previous sync listed of it) pairs (``read_ids``): each change
    with what the previous sync listed of an ``exiting`` id (None with the others), so that a user who exits is
    written as the previous sync listed it."""
    prev, cur = _ascending_pairs(previous), _ascending(current, "current")
    (p, had), c = next(prev, (None, None)), next(cur, None)
    while p is not None or c is not None:
        if c is None or (p is not None and p < c):
            yield p, "exiting", had
            p, had = next(prev, (None, None))
        elif p is None or c < p:
            yield c, "entering", None
            if existing:
                yield c, "existing", None
            c = next(cur, None)
        else:
            if existing:
                yield c, "existing", None
            (p, had), c = next(prev, (None, None)), next(cur, None)


def _ascending_pairs(pairs: Iterable[tuple[int, T]]) -> Iterator[tuple[int, T]]:
    last = None
    for i, v in pairs:
        if last is not None and i <= last:
            raise ValueError(f"previous ids must be strictly ascending: {i} after {last}")
        last = i
        yield i, v


def diff(previous: Iterable[int], current: Iterable[int], existing: bool = False) -> Iterator[tuple[int, DiffType]]:
    """The changes between two syncs' members, each given as strictly ascending amplitude_ids, in one merge pass.

    Yields ``(id, "entering")`` for an id in ``current`` only and ``(id, "exiting")`` for one in ``previous`` only,
    in ascending id order; with ``existing``, also ``(id, "existing")`` for every id of ``current`` (after its
    ``entering``), so one pass feeds the three files. Memory is constant: neither side is held, which is also why
    this is one stream of tagged ids rather than two iterators (reading one to its end would hold the other).
    """
    return ((i, t) for i, t, _ in diff_with(((p, None) for p in previous), current, existing))


def key_collision(destinations: Sequence[Any]) -> str | None:
    """Why two syncs of these cohort destinations (``CohortDestinationSettings``) could write the same key, or None.

    Two destinations on one bucket (and endpoint) write the same names when their path prefixes are equal and they
    sync one cohort with one routing key and time form. When one prefix extends the other by something that starts
    with a digit and holds no ``/``, the longer one's keys can spell the shorter one's (``cohorts/4`` + ``24242_...``
    is ``cohorts/`` + ``424242_...``): refused whatever they sync, as no reader could tell them apart. Any other
    extension cannot: the shorter prefix's names start with their project's digits and hold no ``/``.
    """
    for i, a in enumerate(destinations):
        for b in destinations[i + 1:]:
            if (a.bucket, a.endpoint_url) != (b.bucket, b.endpoint_url):
                continue
            short, long_ = sorted((a, b), key=lambda d: len(d.path_prefix))
            if not long_.path_prefix.startswith(short.path_prefix):
                continue
            extra = long_.path_prefix[len(short.path_prefix):]
            if extra and extra[0].isdigit() and "/" not in extra:
                return (f"the path_prefix {long_.path_prefix!r} of {long_.name} extends {short.path_prefix!r}, "
                        f"the path_prefix of {short.name}, on the same bucket {a.bucket}: their file names could "
                        "coincide; give one of them a folder of its own (a path_prefix ending in '/')")
            if extra:
                continue
            mine = {(s.cohort, s.routing_key) for s in a.syncs}
            for s in b.syncs:
                if (s.cohort, s.routing_key) in mine and a.hyphen_time == b.hyphen_time:
                    routing = f" with routing key {s.routing_key!r}" if s.routing_key else " without a routing key"
                    return (f"{a.name} and {b.name} both sync cohort {s.cohort!r}{routing} to s3://{a.bucket}/"
                            f"{a.path_prefix}: they would write the same files; give one a routing_key of its own "
                            "or another path_prefix")
    return None
