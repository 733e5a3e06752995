"""The records of the import: discovered files on ``imports.files`` and the processed-files state (pure).

A discovery (a notification, a scan, a retry) is an ``ImportFile`` keyed by ``<source>:<key>``: every discovery of
one object lands on the partition that owns its ``FileState`` in the processed-files table, so one owner decides
whether the file was already imported (DESIGN.md invariant 4). Source names cannot hold ``:``
(``sources[].name``), so the first ``:`` splits the key unambiguously.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from typing import Literal

import orjson

from stream.events import avro

FoundBy = Literal["sqs", "scan", "retry"]

ROW_SLOTS = 1 << 32
"""Rows one discovery record may stand for: a row's source offset is the record's offset times this plus the row
number, so a file read again from the same record gives its rows the same source offsets (and the exporter drops
them), and a file of up to 4 billion rows fits."""


@dataclass(frozen=True, slots=True)
class ImportFile:
    source: str
    bucket: str
    key: str
    event_time_ms: int
    found_by: FoundBy
    size: int | None = None
    etag: str | None = None
    sequencer: str | None = None

    @property
    def kafka_key(self) -> bytes:
        return file_key(self.source, self.key)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def encode(self) -> bytes:
        return avro.encode("import_file", asdict(self))

    @classmethod
    def decode(cls, data: bytes) -> ImportFile:
        return cls(**avro.decode("import_file", data))


def file_key(source: str, key: str) -> bytes:
    return f"{source}:{key}".encode()


def split_file_key(raw: bytes) -> tuple[str, str]:
    source, _, key = raw.decode().partition(":")
    return source, key


def row_offset(record_offset: int, row: int) -> int:
    """The source offset of row ``row`` (1-based) of the file the record at ``record_offset`` discovered."""
    if not 0 < row < ROW_SLOTS:
        raise ValueError(f"row {row} is beyond the {ROW_SLOTS - 1} rows one file may hold")
    return record_offset * ROW_SLOTS + row


class State(str, Enum):
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class FileState:
    """What became of one (source, key): written once the file's rows are all acknowledged by Kafka (done), or
    once the file proved unreadable (failed). A later discovery of the same key is skipped, whatever its etag
    (FORMATS.md 4.1: an object edited after its import is not read again), until ``stream import retry``."""

    state: State
    rows: int              # rows read (good and bad)
    imported: int          # rows produced to events.valid
    dead: int              # rows dead-lettered
    at_ms: int             # when the state was written
    event_time_ms: int     # when the object was written, as discovered
    etag: str | None = None
    size: int | None = None
    reason: str | None = None    # failed: the file error's reason code
    message: str | None = None   # failed: what went wrong and what to do

    def encode(self) -> bytes:
        d = asdict(self)
        d["state"] = self.state.value
        return orjson.dumps({k: v for k, v in d.items() if v is not None})

    @classmethod
    def decode(cls, data: bytes) -> FileState:
        d = orjson.loads(data)
        d["state"] = State(d["state"])
        return cls(**d)
