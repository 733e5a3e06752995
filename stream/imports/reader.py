"""One import file's bytes -> numbered rows, in bounded memory: a bad row is a RowError, a bad file a FileError.

JSON lines and CSV are pushed through ``RowReader`` chunk by chunk (``iter_rows`` for a sync iterable of chunks,
``aiter_rows`` for an async one, e.g. ``aiter_rows(body.iter_chunks(1 << 20), "json", "gzip")`` on an S3 GetObject
body; chunks are ``bytes`` of any size). Nothing but the chunk in hand, one decompressed block (256 KiB) and the
row in progress is held, so a 5 GB file reads like a small one. To read a local file:
``iter_rows(iter(lambda: f.read(1 << 20), b""), ...)``.
Parquet keeps its footer at the end and needs random access: ``read_parquet`` takes a path or a seekable binary
file (spool the object to a temporary file, or wrap ranged GETs) and holds one row group at a time at most;
a missing local path raises FileNotFoundError, as it is the caller's, not the object's.

Rows come out in file order as ``Row(number, value)`` or ``RowError(number, reason, message)``. A ``FileError``
ends the file: the rows yielded before it stay yielded, and whether to keep them is the caller's decision (the
row numbers make a retry converge). Messages name the row or line; the caller adds ``s3://bucket/key``.

Choices:

* Row numbers are 1-based. JSON lines: the physical line number, so ``s3://bucket/key#<row>`` points at the line;
  blank (whitespace-only) lines are skipped but counted. CSV: the data record number: the header is not counted,
  blank lines are skipped and not counted, a record with quoted line breaks counts once; messages also give the
  line the record starts on. Parquet: the row's position in the file.
* Compression ``auto`` reads gzip when the data starts with the magic bytes 1f 8b, else the bytes as they are.
  Concatenated gzip members are read one after another (as ``gzip -d`` does); zero padding after the last is ignored.
* A UTF-8 byte order mark at the start of the (decompressed) file is dropped; lines end with LF or CRLF.
* A row longer than ``max_row_bytes`` (32 MiB by default; line ends not counted) is a ``too_large`` RowError;
  reading resumes at the next line. For CSV this bounds a whole record: a quote left open swallows the following
  lines until the limit, then they are reported as one ``too_large`` row.
* JSON values are read by msgspec: integers of any size stay exact; NaN, Infinity and numbers beyond a double
  (1e400) are ``malformed_json``; a key repeated in one object keeps its last value. A line that is not UTF-8
  (Latin-1 text, a UTF-16 file) is ``invalid_utf8``, wherever the bad byte is, even when it is not JSON either.
* CSV: Python's csv module with the file's delimiter, quote and escape characters, a doubled quote inside quotes
  is one quote, text after a closing quote is kept (not strict). Values are strings. Without a header the columns
  are named "0", "1", ...; every record must have as many fields as the header (or, without one, the first
  record), else ``bad_csv_row``. A header that is unreadable or names a column twice is a ``bad_csv_header`` error.
  Creating a CSV reader raises the process-wide ``csv.field_size_limit`` to ``max_row_bytes`` if it is lower.
* Parquet values: timestamps -> epoch ms int (floor; a timestamp without a time zone is read as UTC), top-level
  INT96 columns -> base64 of their 12 bytes, as ``int96_time_to_ms`` expects; dates -> "YYYY-MM-DD"; times ->
  "HH:MM:SS[.fff...]"; durations -> ms int; decimals -> float when their precision is at most 15 digits (a double
  holds them exactly), else their exact decimal text; NaN and infinities -> null; binary -> its text when it is
  UTF-8, else base64; maps -> objects (keys as text); lists and structs recursively.
"""

from __future__ import annotations

import itertools

import base64
import csv
import math
import os
import struct
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any, BinaryIO, NamedTuple

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
from isal import isal_zlib

from stream.errors import StreamError
from stream.imports.converter import CsvOptions

MAX_ROW_BYTES = 32 * 1024 * 1024
FILE_TYPES = ("json", "csv")  # streamed; parquet goes through read_parquet
COMPRESSIONS = ("gzip", "none", "auto")
GZIP_MAGIC = b"\x1f\x8b"
GZIP_WBITS = 31  # zlib's "gzip wrapper" window bits
BLOCK = 256 * 1024  # decompressed bytes per step: bounds memory whatever the compression ratio (gzip bombs)
RUN_ROWS = 2_000  # rows of a run (RowReader.feed_runs) at most: bounds its objects as BLOCK bounds its bytes
PARQUET_BATCH_ROWS = 1024
_PARQUET_BUFFER = 1024 * 1024  # read column chunks through a buffer of this size rather than whole
_BOM = b"\xef\xbb\xbf"
_DAY_NS = 86_400 * 10**9
_UNIX_EPOCH_JULIAN_DAY = 2_440_588


class RowErrorReason(str, Enum):
    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    BAD_CSV_ROW = "bad_csv_row"
    INVALID_UTF8 = "invalid_utf8"
    TOO_LARGE = "too_large"


class FileErrorReason(str, Enum):
    NOT_GZIP = "not_gzip"
    TRUNCATED_GZIP = "truncated_gzip"
    CORRUPT_GZIP = "corrupt_gzip"
    BAD_CSV_HEADER = "bad_csv_header"
    NOT_PARQUET = "not_parquet"
    UNREADABLE = "unreadable"


class Row(msgspec.Struct, gc=False):
    """A row read: its number in the file (from 1) and its value. A Struct the garbage collector does not track (its
    value, read from the file, can hold no reference back to it, so it is never part of a cycle): built in a third
    of a slotted dataclass's time (44 against 120 ns), and a file's rows no longer count towards the collector's
    runs nor are walked by them. Not frozen: a row holding a dict has no hash anyway."""

    number: int
    value: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RowError:
    """A row that cannot be read; the rows around it are read as usual."""

    number: int
    reason: RowErrorReason
    message: str


class FileError(StreamError):
    """The file cannot be read on (invalid input: retrying the same bytes gives the same error)."""

    def __init__(self, reason: FileErrorReason, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.detail = message

    def __reduce__(self) -> tuple[type[FileError], tuple[FileErrorReason, str]]:
        return type(self), (self.reason, self.detail)


Item = Row | RowError


class RowReader:
    """Push decoder for JSON lines and CSV: ``feed`` each chunk, then ``finish``; both yield rows as they complete.

    Exhaust the iterator ``feed`` returns before the next call: it decodes lazily, a block at a time.
    """

    def __init__(self, file_type: str, compression: str = "auto", csv_options: CsvOptions | None = None, *,
                 max_row_bytes: int = MAX_ROW_BYTES) -> None:
        if file_type == "parquet":
            raise ValueError("parquet needs random access to its footer: use read_parquet(path or seekable file)")
        if file_type not in FILE_TYPES:
            raise ValueError(f"file type {file_type!r} is not one of {', '.join(FILE_TYPES)}")
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression {compression!r} is not one of {', '.join(COMPRESSIONS)}")
        if max_row_bytes < 1:
            raise ValueError("max_row_bytes must be positive")
        self._bytes: _Stage = {"gzip": _Gunzip, "none": _Plain, "auto": _Sniff}[compression]()
        self._lines = _Lines(max_row_bytes)
        self._rows: _Rows = (_JsonRows(max_row_bytes) if file_type == "json"
                             else _CsvRows(csv_options or CsvOptions(), max_row_bytes))

    def feed(self, chunk: bytes) -> Iterator[Item]:
        for block in self._bytes.feed(chunk):
            yield from self._rows.feed(self._lines.feed(block))

    def finish(self) -> Iterator[Item]:
        """The rows left at the end; raises FileError if the data stops early (a truncated gzip)."""
        for block in self._bytes.finish():
            yield from self._rows.feed(self._lines.feed(block))
        yield from self._rows.feed(self._lines.finish())
        yield from self._rows.finish()

    def feed_runs(self, chunk: bytes) -> Iterator[list[Item]]:
        """``feed``'s rows as runs: lists of the rows of each decompressed block, cut at ``RUN_ROWS`` rows (none
        for a block that completes no row), in the same order; a FileError raised after the runs of the blocks read
        before it. The cut keeps what a run holds bounded whatever the rows' size: a block of 256 KiB holds up to
        about 87,000 lines of ``{}``, each a row object."""
        for block in self._bytes.feed(chunk):
            yield from self._runs(block)

    def finish_runs(self) -> Iterator[list[Item]]:
        """``finish``'s rows as runs."""
        for block in self._bytes.finish():
            yield from self._runs(block)
        rows = itertools.chain(self._rows.feed(self._lines.finish()), self._rows.finish())
        while run := list(itertools.islice(rows, RUN_ROWS)):
            yield run

    def _runs(self, block: bytes) -> Iterator[list[Item]]:
        if type(self._rows) is _JsonRows:
            first, lines = self._lines.run(block)
            for i in range(0, len(lines), RUN_ROWS):
                run = self._rows.run(first + i, lines[i:i + RUN_ROWS])
                if run:
                    yield run
            return
        rows = self._rows.feed(self._lines.feed(block))
        while run := list(itertools.islice(rows, RUN_ROWS)):
            yield run


def iter_rows(chunks: Iterable[bytes], file_type: str, compression: str = "auto",
              csv_options: CsvOptions | None = None, *, max_row_bytes: int = MAX_ROW_BYTES) -> Iterator[Item]:
    """The rows of a JSON lines or CSV file given as an iterable of byte chunks of any size."""
    reader = RowReader(file_type, compression, csv_options, max_row_bytes=max_row_bytes)
    for chunk in chunks:
        yield from reader.feed(chunk)
    yield from reader.finish()


async def aiter_rows(chunks: AsyncIterable[bytes], file_type: str, compression: str = "auto",
                     csv_options: CsvOptions | None = None, *, max_row_bytes: int = MAX_ROW_BYTES,
                     ) -> AsyncIterator[Item]:
    """``iter_rows`` for an async source such as an S3 GetObject body's ``iter_chunks()``."""
    reader = RowReader(file_type, compression, csv_options, max_row_bytes=max_row_bytes)
    async for chunk in chunks:
        for item in reader.feed(chunk):
            yield item
    for item in reader.finish():
        yield item


async def aiter_runs(chunks: AsyncIterable[bytes], file_type: str, compression: str = "auto",
                     csv_options: CsvOptions | None = None, *, max_row_bytes: int = MAX_ROW_BYTES,
                     ) -> AsyncIterator[list[Item]]:
    """``aiter_rows``' rows in runs (``RowReader.feed_runs``): one step of the iterator a run of rows, not a row."""
    reader = RowReader(file_type, compression, csv_options, max_row_bytes=max_row_bytes)
    async for chunk in chunks:
        for run in reader.feed_runs(chunk):
            yield run
    for run in reader.finish_runs():
        yield run


class LineReader:
    """JSON lines as runs of raw lines, not yet decoded: ``feed`` each chunk, then ``finish``; both yield
    ``(number of the first line, lines)`` with the lines numbered on from it, a line over the limit as None. The
    same lines, in the same order and with the same numbers, as ``RowReader`` decodes (``json_items`` decodes a
    run as it would): for a reader that decodes the rows elsewhere, e.g. in another process."""

    def __init__(self, compression: str = "auto", *, max_row_bytes: int = MAX_ROW_BYTES) -> None:
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression {compression!r} is not one of {', '.join(COMPRESSIONS)}")
        if max_row_bytes < 1:
            raise ValueError("max_row_bytes must be positive")
        self._bytes: _Stage = {"gzip": _Gunzip, "none": _Plain, "auto": _Sniff}[compression]()
        self._lines = _Lines(max_row_bytes)

    def feed(self, chunk: bytes) -> Iterator[tuple[int, list[bytes | None]]]:
        for block in self._bytes.feed(chunk):
            run = self._lines.run(block)
            if run[1]:
                yield run

    def finish(self) -> Iterator[tuple[int, list[bytes | None]]]:
        """The lines left at the end; raises FileError if the data stops early (a truncated gzip)."""
        for block in self._bytes.finish():
            run = self._lines.run(block)
            if run[1]:
                yield run
        run = self._lines.finish_run()
        if run[1]:
            yield run


async def aiter_lines(chunks: AsyncIterable[bytes], compression: str = "auto", *,
                      max_row_bytes: int = MAX_ROW_BYTES) -> AsyncIterator[tuple[int, list[bytes | None]]]:
    """``LineReader``'s runs of an async source such as an S3 GetObject body's ``iter_chunks()``."""
    reader = LineReader(compression, max_row_bytes=max_row_bytes)
    async for chunk in chunks:
        for run in reader.feed(chunk):
            yield run
    for run in reader.finish():
        yield run


_JSON_ROWS: dict[int, _JsonRows] = {}


def json_items(first: int, lines: list[bytes | None], max_row_bytes: int = MAX_ROW_BYTES) -> Iterator[Item]:
    """The rows of a run of JSON lines numbered from ``first`` (``LineReader``), as ``RowReader`` reads them."""
    rows = _JSON_ROWS.get(max_row_bytes)
    if rows is None:
        rows = _JSON_ROWS[max_row_bytes] = _JsonRows(max_row_bytes)
    return iter(rows.run(first, lines))


def is_item(line: bytes | None) -> bool:
    """Whether a raw line (``LineReader``) reads as a row or a RowError: all but blank (whitespace-only) lines."""
    return line is None or bool(line.strip())


def count_items(lines: list[bytes | None]) -> int:
    """How many of the lines read as a row or a RowError (``is_item``)."""
    try:
        if b"" not in map(bytes.strip, lines):   # no blank line (the usual case), checked without a Python loop
            return len(lines)
    except TypeError:   # a None (a line over the limit): the slow way
        pass
    return sum(map(is_item, lines))


# -- bytes: decompression ---------------------------------------------------------------------------------------


class _Stage:
    def feed(self, data: bytes) -> Iterator[bytes]:
        raise NotImplementedError

    def finish(self) -> Iterator[bytes]:
        return iter(())


class _Plain(_Stage):
    def feed(self, data: bytes) -> Iterator[bytes]:
        # cut large chunks so the stages below never hold more than a block of lines at once
        for start in range(0, len(data), BLOCK):
            yield data[start:start + BLOCK]


class _Gunzip(_Stage):
    """gzip members one after another -> decompressed blocks of at most BLOCK bytes."""

    def __init__(self) -> None:
        self._z: Any = None
        self._head = b""  # bytes seen at a member boundary, too few to check the magic
        self._members = 0

    def feed(self, data: bytes) -> Iterator[bytes]:
        while data:
            if self._z is None:
                data = self._start_member(data)
                if not data:
                    return
            try:
                out = self._z.decompress(data, BLOCK)
                if out:
                    yield out
                # keep going while output came back full: more may be pending even with no input left
                while not self._z.eof and (self._z.unconsumed_tail or len(out) == BLOCK):
                    out = self._z.decompress(self._z.unconsumed_tail, BLOCK)
                    if out:
                        yield out
            except isal_zlib.error as exc:
                raise FileError(FileErrorReason.CORRUPT_GZIP, f"the gzip data is corrupt in member "
                                f"{self._members} ({exc}); compress the file again") from None
            if not self._z.eof:
                return
            data = self._z.unused_data
            self._z = None

    def _start_member(self, data: bytes) -> bytes:
        data = self._head + data
        self._head = b""
        if self._members:
            data = data.lstrip(b"\0")  # zero padding after a member, as gzip -d allows
        if len(data) < len(GZIP_MAGIC):
            self._head = data
            return b""
        if data[:2] != GZIP_MAGIC:
            if self._members == 0:
                raise FileError(FileErrorReason.NOT_GZIP, f"the data starts with {_show_bytes(data)}, not the "
                                'gzip magic bytes 1f 8b; set "compressionType": "none" if the file is not compressed')
            raise FileError(FileErrorReason.CORRUPT_GZIP, f"after gzip member {self._members} comes "
                            f"{_show_bytes(data)}, not another member; compress the file again")
        self._z = isal_zlib.decompressobj(wbits=GZIP_WBITS)
        self._members += 1
        return data

    def finish(self) -> Iterator[bytes]:
        if self._members == 0:
            what = f"only {_show_bytes(self._head)}" if self._head else "empty"
            raise FileError(FileErrorReason.NOT_GZIP, f"the file is {what}, not gzip; "
                            'set "compressionType": "none" if the file is not compressed')
        if self._z is not None:
            raise FileError(FileErrorReason.TRUNCATED_GZIP, f"the gzip data ends in the middle of member "
                            f"{self._members} (the file was cut short, e.g. an interrupted upload); upload it again")
        if self._head.strip(b"\0"):
            raise FileError(FileErrorReason.CORRUPT_GZIP, f"after gzip member {self._members} comes "
                            f"{_show_bytes(self._head)}, not another member; compress the file again")
        return iter(())


class _Sniff(_Stage):
    """Gzip when the data starts with 1f 8b, else the bytes as they are."""

    def __init__(self) -> None:
        self._head = b""
        self._inner: _Stage | None = None

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self._inner is None:
            self._head += data
            if len(self._head) < len(GZIP_MAGIC):
                return
            self._inner = _Gunzip() if self._head.startswith(GZIP_MAGIC) else _Plain()
            data, self._head = self._head, b""
        yield from self._inner.feed(data)

    def finish(self) -> Iterator[bytes]:
        if self._inner is None:  # fewer than two bytes in all
            self._inner = _Plain()
            yield from self._inner.feed(self._head)
        yield from self._inner.finish()


def _show_bytes(data: bytes) -> str:
    head = data[:8]
    return f"{head.hex(' ')} ({head!r})"


# -- lines ------------------------------------------------------------------------------------------------------


class _Lines:
    """Blocks -> (line number, line without its LF) from 1; a line over the limit comes as None, never held whole."""

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._parts: list[bytes] = []
        self._size = 0
        self._skipping = False  # dropping the rest of a line already over the limit
        self.number = 0

    def feed(self, block: bytes) -> Iterator[tuple[int, bytes | None]]:
        pieces = block.split(b"\n")
        tail = pieces.pop()
        for piece in pieces:
            self.number += 1
            line: bytes | None = piece
            if self._parts or self._skipping:
                line = self._take(piece)
            elif len(piece) > self._max:
                line = None
            if self.number == 1 and line is not None and line.startswith(_BOM):
                line = line[len(_BOM):]
            yield self.number, line
        self._keep_tail(tail)

    def _keep_tail(self, tail: bytes) -> None:
        """The block's unfinished last line, kept for the next block; a line past the limit is skipped to its end."""
        if tail and not self._skipping:
            self._size += len(tail)
            if self._size > self._max:
                self._parts.clear()
                self._size = 0
                self._skipping = True
            else:
                self._parts.append(tail)

    def finish(self) -> Iterator[tuple[int, bytes | None]]:
        if self._parts or self._skipping:
            self.number += 1
            line = self._take(b"")
            if self.number == 1 and line is not None and line.startswith(_BOM):
                line = line[len(_BOM):]
            yield self.number, line

    def run(self, block: bytes) -> tuple[int, list[bytes | None]]:
        """``feed``'s lines of a block as one run: (the first's number, the lines, numbered on from it)."""
        first = self.number + 1
        pieces: list[Any] = block.split(b"\n")
        tail = pieces.pop()
        if pieces:
            if max(map(len, pieces)) > self._max:
                pieces = [None if len(p) > self._max else p for p in pieces]
            if self._parts or self._skipping:
                pieces[0] = self._take(block[:block.index(b"\n")])
            if first == 1 and pieces[0] is not None and pieces[0].startswith(_BOM):
                pieces[0] = pieces[0][len(_BOM):]
            self.number += len(pieces)
        self._keep_tail(tail)
        return first, pieces

    def finish_run(self) -> tuple[int, list[bytes | None]]:
        """``finish``'s line as a run (no line: an empty one)."""
        first = self.number + 1
        return first, [line for _, line in self.finish()]

    def _take(self, piece: bytes) -> bytes | None:
        over = self._skipping or self._size + len(piece) > self._max
        line = None if over else b"".join((*self._parts, piece))
        self._parts.clear()
        self._size = 0
        self._skipping = False
        return line


# -- rows -------------------------------------------------------------------------------------------------------


class _Rows:
    def feed(self, lines: Iterable[tuple[int, bytes | None]]) -> Iterator[Item]:
        raise NotImplementedError

    def finish(self) -> Iterator[Item]:
        return iter(())


class _JsonRows(_Rows):
    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._decode = msgspec.json.Decoder().decode

    def feed(self, lines: Iterable[tuple[int, bytes | None]]) -> Iterator[Item]:
        decode = self._decode
        for number, line in lines:
            if line is None:
                yield RowError(number, RowErrorReason.TOO_LARGE, f"line {number} is longer than {_size(self._max)}; "
                               "split the row or raise the row size limit")
                continue
            try:
                value = decode(line)
            except UnicodeDecodeError:
                yield RowError(number, RowErrorReason.INVALID_UTF8, f"line {number} {_where_not_utf8(line)}")
                continue
            except msgspec.DecodeError as exc:
                if not line.strip():
                    continue  # a blank line (or "\r" alone): nothing to read, and not an error
                if not _is_utf8(line):  # bytes that are not UTF-8 outside a string (Latin-1 text, UTF-16)
                    yield RowError(number, RowErrorReason.INVALID_UTF8, f"line {number} {_where_not_utf8(line)}")
                    continue
                yield RowError(number, RowErrorReason.MALFORMED_JSON, f"line {number} is not valid JSON ({exc}); "
                               "write one JSON object per line")
                continue
            if type(value) is not dict:
                yield RowError(number, RowErrorReason.NOT_AN_OBJECT, f"line {number} is {_json_kind(value)}, "
                               "not a JSON object; write one JSON object per line")
                continue
            yield Row(number, value)

    def run(self, first: int, lines: list[bytes | None]) -> list[Item]:
        """``feed``'s rows of a run of lines numbered from ``first``, as a list: the lines that decode to an object
        in a plain loop, any other through ``feed``."""
        decode, out, feed = self._decode, [], self.feed
        number = first
        for line in lines:
            try:
                value = decode(line)    # None (a line over the limit): TypeError
            except Exception:
                out.extend(feed(((number, line),)))
            else:
                if type(value) is dict:
                    out.append(Row(number, value))
                else:
                    out.extend(feed(((number, line),)))
            number += 1
        return out


class _CsvLine(NamedTuple):
    number: int
    text: str | None  # None: over the row size limit
    size: int
    bad_utf8: tuple[int, int] | None  # the first invalid byte and its 1-based position in the line


class _NeedMore(Exception):
    """The record in progress goes on past the lines received so far."""


class _TooLarge(Exception):
    pass


class _CsvRows(_Rows):
    """Lines -> CSV records, by the csv module pulling lines from this object.

    The csv module cannot pause in the middle of a record, so when the lines run out inside one (a quoted field
    spanning blocks) the record's lines are put back and parsed again once more have come. The next attempt waits
    until the lines held have doubled, so a long record is parsed a few times, not once per block.
    """

    def __init__(self, options: CsvOptions, max_bytes: int) -> None:
        if csv.field_size_limit() < max_bytes:  # its default (128 KiB) would refuse rows our limit accepts
            csv.field_size_limit(max_bytes)
        self._options = options
        self._max = max_bytes
        self._reader = csv.reader(self, delimiter=options.delimiter, quotechar=options.quote_char,
                                  escapechar=options.escape_char, doublequote=True, strict=False)
        self._pending: deque[_CsvLine] = deque()
        self._pending_bytes = 0
        self._taken: list[_CsvLine] = []  # the lines of the record in progress
        self._taken_bytes = 0
        self._retry_at = 0
        self._ended = False
        self._names: list[str] | None = None
        self._width: int | None = None
        self._number = 0

    def __iter__(self) -> _CsvRows:
        return self

    def __next__(self) -> str:
        if not self._pending:
            if self._ended:
                raise StopIteration
            raise _NeedMore
        line = self._pending.popleft()
        self._pending_bytes -= line.size
        self._taken.append(line)
        self._taken_bytes += line.size
        if line.text is None or self._taken_bytes > self._max:
            raise _TooLarge
        return line.text

    def feed(self, lines: Iterable[tuple[int, bytes | None]]) -> Iterator[Item]:
        for number, raw in lines:
            self._pending.append(_decode_line(number, raw, self._max))
            self._pending_bytes += self._pending[-1].size
        # parse when a waiting record may have become whole, or has grown past the limit
        if self._pending_bytes >= self._retry_at:
            yield from self._parse()

    def finish(self) -> Iterator[Item]:
        self._ended = True
        yield from self._parse()

    def _parse(self) -> Iterator[Item]:
        while True:
            try:
                fields = next(self._reader)
            except _NeedMore:
                self._pending.extendleft(reversed(self._taken))
                self._pending_bytes += self._taken_bytes
                self._release()
                self._retry_at = min(2 * self._pending_bytes, self._max + 1)
                return
            except StopIteration:
                return
            except _TooLarge:
                first = self._release()
                yield self._error(first, RowErrorReason.TOO_LARGE, f"is longer than {_size(self._max)} (a quote "
                                  "left open?); split the row or raise the row size limit")
                continue
            except csv.Error as exc:
                first = self._release()
                yield self._error(first, RowErrorReason.BAD_CSV_ROW, f"is not valid CSV ({exc})")
                continue
            lines = self._taken
            first = self._release()
            self._retry_at = 0
            if not fields:
                continue  # a blank line
            bad = next((line for line in lines if line.bad_utf8), None)
            if bad is not None and bad.bad_utf8 is not None:
                where = "" if bad.number == first else f" of line {bad.number}"
                yield self._error(first, RowErrorReason.INVALID_UTF8, _utf8_problem(*bad.bad_utf8, where))
                continue
            item = self._record(first, fields)
            if item is not None:
                yield item

    def _release(self) -> int:
        first = self._taken[0].number if self._taken else 0
        self._taken = []
        self._taken_bytes = 0
        return first

    def _error(self, line: int, reason: RowErrorReason, detail: str) -> RowError:
        if self._options.header and self._names is None:
            raise FileError(FileErrorReason.BAD_CSV_HEADER, f"the header (line {line}) {detail}")
        self._number += 1
        return RowError(self._number, reason, f"row {self._number} (line {line}) {detail}")

    def _record(self, line: int, fields: list[str]) -> Item | None:
        if self._names is None:
            if self._options.header:
                self._names = _header(line, fields)
                self._width = len(fields)
                return None
            self._width = len(fields)
            self._names = [str(i) for i in range(len(fields))]
        if len(fields) != self._width:
            against = "the header has" if self._options.header else "the first row has"
            return self._error(line, RowErrorReason.BAD_CSV_ROW, f"has {len(fields)} fields where {against} "
                               f"{self._width}; check the delimiter {self._options.delimiter!r} and the quoting")
        self._number += 1
        return Row(self._number, dict(zip(self._names, fields)))


def _decode_line(number: int, raw: bytes | None, max_bytes: int) -> _CsvLine:
    if raw is None:
        return _CsvLine(number, None, max_bytes + 1, None)
    try:
        text = raw.decode("utf-8")
        bad = None
    except UnicodeDecodeError as exc:
        text = raw.decode("utf-8", "surrogateescape")  # parse on, so the record's extent is still found
        bad = (exc.object[exc.start], exc.start + 1)
    # the line end goes back in: the csv module keeps it inside quoted fields
    return _CsvLine(number, text + "\n", len(raw), bad)


def _header(line: int, names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        if name in seen:
            raise FileError(FileErrorReason.BAD_CSV_HEADER, f"the header (line {line}) names column {name!r} twice "
                            f"(columns {seen[name] + 1} and {index + 1}); rename one")
        seen[name] = index
    return names


def _is_utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _where_not_utf8(line: bytes) -> str:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as exc:  # the decoder's own error counts from the start of a string value
        return _utf8_problem(line[exc.start], exc.start + 1)
    return "is not valid UTF-8; save the file as UTF-8"


def _utf8_problem(byte: int, position: int, where: str = "") -> str:
    return f"is not valid UTF-8 (byte {byte:#04x} at byte {position}{where}); save the file as UTF-8"


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    return "null" if value is None else "a number"


def _size(n: int) -> str:
    return f"{n // (1024 * 1024)} MiB" if n % (1024 * 1024) == 0 else f"{n} bytes"


# -- parquet ----------------------------------------------------------------------------------------------------

Convert = Callable[[Any], Any]


def read_parquet(source: str | os.PathLike[str] | BinaryIO, *, batch_rows: int = PARQUET_BATCH_ROWS,
                 pre_buffer: bool = True) -> Iterator[Row]:
    """The rows of a parquet file at a local path or in a seekable binary file, row group by row group.

    Memory: at most one row group's column chunks plus one batch of ``batch_rows`` rows as Python values; never
    the whole file. ``pre_buffer`` (pyarrow's default) reads a row group's column chunks whole, in few large
    reads; without it pages are read through 1 MiB buffers as the rows are wanted, which is what a reader of the
    first rows over ranged GETs needs (``stream.imports.ranged``).
    """
    try:
        # INT96 as ns so its 12 bytes can be rebuilt exactly; pages read through a buffer, not whole column chunks
        file = pq.ParquetFile(source, coerce_int96_timestamp_unit="ns", buffer_size=_PARQUET_BUFFER,
                               pre_buffer=pre_buffer)
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise  # the caller's local file is missing: not a property of the object
    except (pa.ArrowInvalid, OSError) as exc:  # no magic bytes, or a footer that does not deserialize
        message = str(exc).strip()
        raise FileError(FileErrorReason.NOT_PARQUET, f"not a parquet file, or its footer is damaged ({message}); "
                        "check fileType and upload the file again") from None
    except pa.ArrowException as exc:
        raise FileError(FileErrorReason.UNREADABLE, f"the parquet footer cannot be read ({exc})") from None
    with file:  # closes what it opened itself (a path), not a file object the caller owns
        int96 = {column.path for column in (file.schema.column(i) for i in range(len(file.schema)))
                 if column.physical_type == "INT96"}
        plans = [_int96_plan() if field.name in int96 else _plan(field.type) for field in file.schema_arrow]
        names = file.schema_arrow.names
        number = 0
        for group in range(file.num_row_groups):
            try:
                for batch in file.iter_batches(batch_size=batch_rows, row_groups=[group], use_threads=False):
                    columns = [_column(batch.column(i), plan) for i, plan in enumerate(plans)]
                    for values in zip(*columns):
                        number += 1
                        yield Row(number, dict(zip(names, values)))
            except (pa.ArrowException, OSError) as exc:
                raise FileError(FileErrorReason.UNREADABLE, f"row group {group} (after row {number}) cannot be "
                                f"read ({exc}); write the file again") from None


def _column(array: pa.Array, plan: tuple[pa.DataType, Convert | None]) -> list[Any]:
    target, convert = plan
    if array.type != target:
        array = array.cast(target, safe=False)
    values = array.to_pylist()
    return values if convert is None else [convert(v) for v in values]


def _plan(t: pa.DataType) -> tuple[pa.DataType, Convert | None]:
    """The Arrow type to cast a column to, and the Python conversion after ``to_pylist`` (None: as it is)."""
    if pa.types.is_dictionary(t):
        return _plan(t.value_type)
    if pa.types.is_timestamp(t) or pa.types.is_duration(t):
        return pa.int64(), _to_ms(t.unit)  # the raw count in its unit: exact, whatever the resolution
    if pa.types.is_date(t) or pa.types.is_time(t):
        return pa.string(), None
    if pa.types.is_decimal(t):
        return (pa.float64() if t.precision <= 15 else pa.string()), None
    if pa.types.is_floating(t):
        return pa.float64(), _finite
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t) \
            or pa.types.is_binary_view(t):
        return t, _text_or_base64
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        value_type, convert = _plan(t.value_type)
        field = t.value_field.with_type(value_type)
        if pa.types.is_large_list(t):
            target = pa.large_list(field)
        else:
            target = pa.list_(field, t.list_size) if pa.types.is_fixed_size_list(t) else pa.list_(field)
        return target, None if convert is None else _each(convert)
    if pa.types.is_struct(t):
        fields = [t.field(i) for i in range(t.num_fields)]
        plans = [_plan(f.type) for f in fields]
        target = pa.struct([f.with_type(p[0]) for f, p in zip(fields, plans)])
        converts = {f.name: p[1] for f, p in zip(fields, plans) if p[1] is not None}
        return target, _fields(converts) if converts else None
    if pa.types.is_map(t):
        (key_type, key_convert), (item_type, item_convert) = _plan(t.key_type), _plan(t.item_type)
        return pa.map_(key_type, item_type), _pairs(key_convert, item_convert)
    return t, None


def _int96_plan() -> tuple[pa.DataType, Convert | None]:
    return pa.int64(), _int96_base64


def _to_ms(unit: str) -> Convert:
    if unit == "s":
        return lambda v: None if v is None else v * 1000
    divisor = {"ms": 1, "us": 1000, "ns": 1_000_000}[unit]
    return lambda v: None if v is None else v // divisor  # floor: 1 ns before 1970 is -1 ms


def _int96_base64(ns: int | None) -> str | None:
    if ns is None:
        return None
    days, nanos = divmod(ns, _DAY_NS)
    # parquet's INT96: nanoseconds of the day (8 bytes) then the Julian day (4 bytes), little-endian
    return base64.b64encode(struct.pack("<qi", nanos, days + _UNIX_EPOCH_JULIAN_DAY)).decode("ascii")


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def _text_or_base64(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(value).decode("ascii")


def _each(convert: Convert) -> Convert:
    return lambda values: None if values is None else [convert(v) for v in values]


def _fields(converts: dict[str, Convert]) -> Convert:
    def convert(value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        return {k: (converts[k](v) if k in converts else v) for k, v in value.items()}

    return convert


def _pairs(key_convert: Convert | None, item_convert: Convert | None) -> Convert:
    def convert(pairs: list[tuple[Any, Any]] | None) -> dict[str, Any] | None:
        if pairs is None:
            return None
        out = {}
        for key, item in pairs:
            key = key_convert(key) if key_convert else key
            out[_key_text(key)] = item_convert(item) if item_convert else item
        return out

    return convert


def _key_text(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bool) or key is None:
        return "true" if key is True else "false" if key is False else "null"
    return str(key)
