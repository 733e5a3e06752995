"""What an object holds: gzip'd JSON lines, streamed to a local spool file.

isal's gzip writes the same format as zlib, several times faster
(../shared/reference/LOCAL-STACK.md); an object never sits in memory whole.
"""

from __future__ import annotations

import os
from pathlib import Path

from isal import isal_zlib

GZIP_WBITS = 31  # zlib's "gzip wrapper" window bits


class GzipLinesSpool:
    """JSON lines appended to a gzip file on disk; ``close`` returns its size."""

    def __init__(self, path: Path, level: int = 1):
        self.path = path
        self._file = open(path, "wb")
        self._z = isal_zlib.compressobj(level, isal_zlib.DEFLATED, GZIP_WBITS)
        self.events = 0
        self.raw_bytes = 0

    def write_rows(self, blob: bytes, count: int) -> None:
        """Append ``count`` rows given as one newline-joined blob (no trailing newline)."""
        self.raw_bytes += len(blob) + 1
        self.events += count
        out = self._z.compress(blob)
        out += self._z.compress(b"\n")
        if out:
            self._file.write(out)

    def close(self) -> int:
        self._file.write(self._z.flush())
        self._file.close()
        return self.path.stat().st_size

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
