"""Retrying calls to S3: one place decides what is worth retrying, and the only place that sleeps."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRIABLE_CODES = frozenset({"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout",
                             "RequestTimeTooSkewed", "503", "500", "ThrottlingException"})


def s3_retriable(exc: BaseException) -> bool:
    """Throttling, 5xx and connection failures are retried; access and naming errors are not."""
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return code in RETRIABLE_CODES or status >= 500
    return isinstance(exc, (EndpointConnectionError, BotoCoreError, ConnectionError, asyncio.TimeoutError))


def s3_failure_kind(exc: BaseException) -> str | None:
    """``transient`` (throttling, 5xx, connection), ``permanent`` (access, bucket, key: S3 said no), or
    None for anything that is not an S3 failure (a bug: not retried)."""
    if s3_retriable(exc):
        return "transient"
    if isinstance(exc, ClientError):
        return "permanent"
    return None


async def retry_until_done(what: str, call: Callable[[], Awaitable[T]], *,
                           kind_of: Callable[[BaseException], str | None],
                           on_failure: Callable[[str, BaseException], None] = lambda kind, exc: None,
                           first_delay: float = 0.2, max_delay: float = 30.0, permanent_delay: float = 60.0) -> T:
    """``call()`` until it succeeds: nothing is given up, the caller simply stops pulling meanwhile.

    Transient failures back off exponentially up to ``max_delay``; permanent ones (a
    permission someone has to grant) are retried every ``permanent_delay``. Failures
    ``kind_of`` does not know are raised.
    """
    delay = first_delay
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call()
        except Exception as exc:
            kind = kind_of(exc)
            if kind is None:
                raise
            on_failure(kind, exc)
            wait = delay if kind == "transient" else permanent_delay
            log.warning("%s failed (%s, attempt %d, retrying in %.1fs): %s", what, kind, attempt, wait, exc)
            await asyncio.sleep(wait)
            delay = min(delay * 2, max_delay)
