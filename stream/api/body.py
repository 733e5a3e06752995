"""Reading a request body within its limit: raw bytes and, for ``Content-Encoding: gzip``, the decoded stream.

Pure and incremental: the server hands each chunk to ``BodyReader.feed`` as it arrives, and the reader
raises ``BodyError`` the moment either the bytes received or the bytes they decompress to pass the limit,
so nothing beyond ``limit`` (plus one chunk) is ever held, and a gzip bomb is cut off after ``limit``
decoded bytes however small it is on the wire.
"""

from __future__ import annotations

import zlib
from enum import Enum

ACCEPTED_TYPES = ("application/json", "text/plain")
"""JSON bodies; ``text/plain`` is what browsers send for a CORS-simple request or ``navigator.sendBeacon``."""


class BodyProblem(str, Enum):
    TOO_LARGE = "too_large"
    BAD_ENCODING = "bad_encoding"           # a Content-Encoding other than gzip/identity
    BAD_GZIP = "bad_gzip"                   # the gzip stream is corrupt or truncated
    BAD_CONTENT_TYPE = "bad_content_type"


class BodyError(Exception):
    def __init__(self, problem: BodyProblem, detail: str):
        super().__init__(detail)
        self.problem, self.detail = problem, detail


def check_headers(content_type: str | None, content_encoding: str | None, content_length: str | None,
                  limit: int) -> bool:
    """Check a request's headers before its body is read; returns whether the body is gzip.

    Raises BodyError for a content type other than JSON, an encoding other than gzip, or a declared
    length over the limit (so a client that announces a large body is answered before it sends it).
    """
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media not in ACCEPTED_TYPES:
        raise BodyError(BodyProblem.BAD_CONTENT_TYPE,
                        f"Content-Type {content_type or '(none)'!r} is not supported; send the body as JSON with "
                        "Content-Type: application/json")
    encoding = (content_encoding or "identity").strip().lower()
    if encoding not in ("gzip", "identity", "x-gzip"):
        raise BodyError(BodyProblem.BAD_ENCODING,
                        f"Content-Encoding {content_encoding!r} is not supported; send the body as is or gzip it")
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            declared = 0
        if declared > limit:  # the raw bytes count against the limit too, compressed or not
            raise BodyError(BodyProblem.TOO_LARGE, too_large_detail(limit, declared))
    return encoding != "identity"


def too_large_detail(limit: int, seen: int | None = None, decoded: bool = False) -> str:
    if seen is not None:
        what = f"is {seen} bytes"
    elif decoded:
        what = "decompresses to more than"
    else:
        what = "is larger than"
    sep = "; the limit is" if seen is not None else " the limit of"
    return f"the request body {what}{sep} {limit} bytes; split the events into smaller requests"


class BodyReader:
    """Collects a body chunk by chunk, never past ``limit`` bytes, raw or decoded."""

    def __init__(self, limit: int, gzip: bool):
        self.limit = limit
        self.received = 0
        self._parts: list[bytes] = []
        self._size = 0
        self._z = zlib.decompressobj(wbits=31) if gzip else None

    def feed(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.received > self.limit:
            raise BodyError(BodyProblem.TOO_LARGE, too_large_detail(self.limit))
        if self._z is None:
            self._keep(chunk)
            return
        try:
            data = chunk
            while data:
                z = self._z
                # never inflate more than what still fits plus one byte: a bomb stops here
                out = z.decompress(data, self.limit - self._size + 1)
                self._keep(out)
                if not z.eof:
                    data = z.unconsumed_tail
                elif z.unused_data:
                    # the next gzip member (concatenated streams are valid gzip), decoded in this same loop: a
                    # body of thousands of tiny members costs no stack
                    data = z.unused_data
                    self._z = zlib.decompressobj(wbits=31)
                else:
                    data = b""
        except zlib.error as exc:
            raise BodyError(BodyProblem.BAD_GZIP, f"the gzip body is corrupt ({exc}); Content-Encoding: gzip "
                            "needs a gzip stream") from None

    def _keep(self, data: bytes) -> None:
        if data:
            self._size += len(data)
            if self._size > self.limit:
                raise BodyError(BodyProblem.TOO_LARGE, too_large_detail(self.limit, decoded=True))
            self._parts.append(data)

    @property
    def held(self) -> int:
        """The bytes of the body kept so far (decoded, for gzip)."""
        return self._size

    def finish(self) -> bytes:
        """The whole (decoded) body; raises BodyError if a gzip stream ended early."""
        if self._z is not None and not self._z.eof:
            if self.received == 0:
                return b""
            raise BodyError(BodyProblem.BAD_GZIP, "the gzip body ends before its gzip stream does "
                            "(truncated upload?)")
        return b"".join(self._parts)
