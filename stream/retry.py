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


async def retry(what: str, call: Callable[[], Awaitable[T]], *, retriable: Callable[[BaseException], bool],
                attempts: int = 8, first_delay: float = 0.2, max_delay: float = 30.0) -> T:
    """``call()`` until it succeeds, backing off exponentially on retriable errors."""
    delay = first_delay
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except Exception as exc:
            if attempt == attempts or not retriable(exc):
                raise
            log.warning("%s failed (attempt %d of %d, retrying in %.1fs): %s", what, attempt, attempts, delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
    raise AssertionError("unreachable")
