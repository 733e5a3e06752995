"""A discovered file's rows, read from S3 as a stream: the S3 client of each source, parquet through a spool file.

``read_rows`` is the one row reader of the import: the preview (``stream.imports.ops``) reads files through it, the
importer (``stream.imports.importer``) through ``read_runs``, the same rows a run (a list) at a time. JSON lines and
CSV are read as a stream and parsed as they come (a consumer that stops early stops the read); parquet is copied to
a spool file first, as its footer needs random access, and the spool file is removed afterwards.

Failures are sorted once here: a file that cannot be read (not found, access denied, truncated gzip, not
parquet) raises ``FileError`` with its reason; S3 failures that pass (timeouts, throttling) raise
``TransientRead``, after which the caller reads the file again from its start; anything else is a bug reading
this file, and becomes a ``FileError`` (processing_error) rather than a crash loop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from stream.imports.files import ImportFile
from stream.imports.reader import (PARQUET_BATCH_ROWS, FileError, Row, RowError, aiter_lines, aiter_rows, aiter_runs,
                                   read_parquet)
from stream.s3.arn import s3_arn
from stream.s3.client import target_client, target_of
from stream.s3.errors import classify, explain
from stream.settings import Settings, SourceSettings

log = logging.getLogger(__name__)

READ_BYTES = 1 << 20


class TransientRead(Exception):
    """S3 failed in a way that passes: read the file again later."""


class S3Reason(NamedTuple):
    """The reason of a file S3 would not give (not found, access denied, ...): a FileError reason beside the
    reader's own, with the error table's reason code as its value."""
    value: str


@dataclass
class Fetched:
    """What GetObject said of the object being read (known once its first row is read)."""

    modified_ms: int | None = None
    """Its LastModified, in epoch milliseconds, as the GetObject response reports it."""


def file_type_of(src: SourceSettings, key: str) -> str:
    """The source's file type, else the converter's, else the key's: ``.csv``/``.csv.gz`` is CSV, ``.parquet`` is
    parquet, anything else JSON lines."""
    given = src.file_type or src.compiled.file_type
    if given:
        return given
    name = key.lower().removesuffix(".gz").removesuffix(".gzip")
    return "csv" if name.endswith(".csv") else "parquet" if name.endswith((".parquet", ".pq")) else "json"


class Clients:
    """One S3 client per source, opened on first use and kept for the process's life."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.open: dict[str, tuple[contextlib.AsyncExitStack, Any]] = {}

    async def get(self, src: SourceSettings) -> Any:
        if src.name not in self.open:
            stack = contextlib.AsyncExitStack()
            client = await stack.enter_async_context(target_client(target_of(src, self.settings.s3),
                                                                   self.settings.s3))
            self.open[src.name] = (stack, client)
        return self.open[src.name][1]

    async def drop(self, src: SourceSettings) -> None:
        entry = self.open.pop(src.name, None)
        if entry is not None:
            try:
                await entry[0].aclose()
            except Exception as exc:   # closing a broken client: nothing left to do with it
                log.debug("import %s: closing its S3 client: %s", src.name, exc)


async def read_rows(settings: Settings, src: SourceSettings, f: ImportFile, spool: Path,
                    clients: Clients | None = None, fetched: Fetched | None = None) -> AsyncIterator[Row | RowError]:
    """The file's rows, read from S3 as a stream; parquet through a spool file, removed afterwards. ``clients``
    keeps one S3 client per source (a new one costs about 0.1 s); without it, one is opened for this file.
    ``fetched`` receives what GetObject said of the object."""
    async for item in _read(settings, src, f, spool, clients, fetched, lines=False):
        yield item


async def read_runs(settings: Settings, src: SourceSettings, f: ImportFile, spool: Path,
                    clients: Clients | None = None, fetched: Fetched | None = None,
                    ) -> AsyncIterator[list[Row | RowError]]:
    """``read_rows``' rows in runs (a list of the rows of each decompressed block of JSON lines or CSV, of up to
    ``PARQUET_BATCH_ROWS`` parquet rows): the same rows and failures, one step of the iterator a run."""
    async for run in _read(settings, src, f, spool, clients, fetched, lines=False, runs=True):
        yield run


async def read_lines(settings: Settings, src: SourceSettings, f: ImportFile, clients: Clients | None = None,
                     fetched: Fetched | None = None) -> AsyncIterator[tuple[int, list[bytes | None]]]:
    """A JSON-lines file's raw lines, read from S3 as a stream, in runs (``reader.LineReader``): the lines
    ``read_rows`` would decode, for a caller that decodes them elsewhere; the same failures as ``read_rows``."""
    if not lines_of(src, f):
        raise ValueError(f"{f.url} is not read as JSON lines (its file type is {file_type_of(src, f.key)})")
    async for run in _read(settings, src, f, Path("."), clients, fetched, lines=True):
        yield run


def lines_of(src: SourceSettings, f: ImportFile) -> bool:
    """Whether the file is JSON lines, which ``read_lines`` reads."""
    return file_type_of(src, f.key) == "json"


async def _read(settings: Settings, src: SourceSettings, f: ImportFile, spool: Path, clients: Clients | None,
                fetched: Fetched | None, *, lines: bool, runs: bool = False) -> AsyncIterator[Any]:
    compiled = src.compiled
    file_type = file_type_of(src, f.key)
    compression = src.compression or compiled.compression or "auto"
    target = target_of(src, settings.s3)
    try:
        async with contextlib.AsyncExitStack() as stack:
            s3 = await clients.get(src) if clients is not None else await stack.enter_async_context(
                target_client(target, settings.s3))
            resp = await s3.get_object(Bucket=f.bucket, Key=f.key)
            if fetched is not None and resp.get("LastModified") is not None:
                fetched.modified_ms = int(resp["LastModified"].timestamp() * 1000)
            body = resp["Body"]
            if file_type == "parquet":
                fd, name = tempfile.mkstemp(prefix="import-", suffix=".parquet", dir=spool)
                try:
                    with os.fdopen(fd, "wb") as out:
                        async for chunk in body.iter_chunks(READ_BYTES):
                            out.write(chunk)
                    if runs:
                        run: list[Row | RowError] = []
                        for row in read_parquet(name):
                            run.append(row)
                            if len(run) >= PARQUET_BATCH_ROWS:
                                yield run
                                run = []
                        if run:
                            yield run
                    else:
                        for row in read_parquet(name):
                            yield row
                finally:
                    os.unlink(name)
                return
            if lines:
                async for run in aiter_lines(body.iter_chunks(READ_BYTES), compression):
                    yield run
                return
            from stream.imports.converter import CsvOptions
            c = src.csv
            csv = compiled.csv or CsvOptions(c.delimiter, c.quote, c.escape, c.header)
            if runs:
                async for got in aiter_runs(body.iter_chunks(READ_BYTES), file_type, compression, csv):
                    yield got
                return
            async for item in aiter_rows(body.iter_chunks(READ_BYTES), file_type, compression, csv):
                yield item
    except FileError:
        raise
    except Exception as exc:
        failure = classify(exc)
        if failure is None:   # not S3's: a bug reading this file. Mark it failed rather than crash-loop on it
            log.exception("import %s: unexpected error reading %s", src.name, f.url)
            raise FileError(S3Reason("processing_error"), f"unexpected {type(exc).__name__} while reading the "
                            f"file: {exc} (please report it with the worker's log)") from None
        if clients is not None:
            await clients.drop(src)     # credentials or connections gone bad: the next file opens a new client
        if failure.kind == "transient":
            raise TransientRead(f"{failure.reason}: {exc}") from exc
        code = getattr(exc, "response", {}).get("Error", {}).get("Code")
        if code in ("NoSuchKey", "404"):
            raise FileError(S3Reason("not_found"), f"{f.url} no longer exists (deleted after it was discovered); "
                            "nothing to import") from None
        problem = explain(exc, target, "GetObject", s3_arn(f.bucket, f.key, region=target.region))
        raise FileError(S3Reason(failure.reason), problem.message) from None


class S3Files:
    """The files of every source, read from S3 (``read_rows``) with one client per source, parquet spooled under
    the worker's data directory."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.clients = Clients(settings)
        self.spool = Path(settings.worker.data_dir) / "import-spool"
        self.spool.mkdir(parents=True, exist_ok=True)

    def rows(self, src: SourceSettings, f: ImportFile, fetched: Fetched) -> AsyncIterator[Row | RowError]:
        return read_rows(self.settings, src, f, self.spool, self.clients, fetched)

    def runs(self, src: SourceSettings, f: ImportFile, fetched: Fetched) -> AsyncIterator[list[Row | RowError]]:
        return read_runs(self.settings, src, f, self.spool, self.clients, fetched)

    def lines(self, src: SourceSettings, f: ImportFile, fetched: Fetched,
              ) -> AsyncIterator[tuple[int, list[bytes | None]]]:
        return read_lines(self.settings, src, f, self.clients, fetched)
