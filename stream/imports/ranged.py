"""A read-only, seekable file over ranged reads of an object: a parquet preview reads the footer and the first pages.

``RangedFile(size, fetch, limit, url)`` serves ``read``/``seek``/``tell`` from ``fetch(start, end)`` (the bytes
``start`` to ``end``, end excluded: one ranged GetObject), so ``read_parquet`` can read a parquet object where it
lies instead of from a copy of the whole object. Parquet keeps its metadata at the end and reads a column chunk's
pages one buffer at a time (``reader._PARQUET_BUFFER``), so the first rows of a file cost its footer and the first
buffer of each column of the first row group, whatever the size of the object. ``limit`` bounds the bytes fetched
in all: past it, ``read`` raises ``ReadLimit`` rather than fetch more.
"""

from __future__ import annotations

import io
from collections.abc import Callable

Fetch = Callable[[int, int], bytes]


class ReadLimit(Exception):
    """Reading on would fetch more than the limit of bytes."""


class RangedFile(io.RawIOBase):
    def __init__(self, size: int, fetch: Fetch, limit: int, url: str = "the object") -> None:
        super().__init__()
        self.size, self.fetch, self.limit, self.url = size, fetch, limit, url
        self.position = 0
        self.fetched = 0
        """Bytes fetched so far."""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError(f"seek to {base + offset}, before the start of {self.url}")
        self.position = base + offset
        return self.position

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        n = min(len(buffer), self.size - self.position)
        if n <= 0:
            return 0
        if self.fetched + n > self.limit:
            raise ReadLimit(f"reading on in {self.url} would fetch more than {self.limit} bytes of it "
                            f"({self.fetched} fetched, {n} more asked for at byte {self.position})")
        data = self.fetch(self.position, self.position + n)
        if len(data) != n:
            raise OSError(f"{self.url}: asked for bytes {self.position}-{self.position + n - 1}, got {len(data)} "
                          "bytes (the object changed while it was read?); read it again")
        buffer[:n] = data
        self.position += n
        self.fetched += n
        return n
