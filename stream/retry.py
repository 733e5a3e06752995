"""Retrying calls until they succeed, supervising stage loops, and pausing until a time: the only places that sleep.

What a failure is, and whether waiting fixes it, is decided per external system (``stream.s3.errors.classify``
for S3) and handed in as ``classify``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class Failure(Protocol):
    """What ``classify`` says of a failure (``stream.s3.errors.Failure``): transient or permanent, and why."""

    kind: str     # "transient" or "permanent"
    reason: str   # a metric label


async def retry_until_done(what: str, call: Callable[[], Awaitable[T]], *,
                           classify: Callable[[BaseException], Failure | None],
                           on_failure: Callable[[Failure, BaseException], object] = lambda failure, exc: None,
                           first_delay: float = 0.2, max_delay: float = 30.0, permanent_delay: float = 60.0) -> T:
    """``call()`` until it succeeds: nothing is given up, the caller simply stops pulling meanwhile.

    Transient failures back off exponentially up to ``max_delay``; permanent ones (a
    permission someone has to grant) are retried every ``permanent_delay``. Failures
    ``classify`` does not know are raised. ``on_failure`` may be a coroutine function.
    """
    delay = first_delay
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call()
        except Exception as exc:
            failure = classify(exc)
            if failure is None:
                raise
            reported = on_failure(failure, exc)
            if inspect.isawaitable(reported):
                await reported
            wait = delay if failure.kind == "transient" else permanent_delay
            log.warning("%s failed (%s: %s, attempt %d, retrying in %.1fs): %s", what, failure.kind, failure.reason,
                        attempt, wait, exc)
            await asyncio.sleep(wait)
            delay = min(delay * 2, max_delay)


async def supervise(name: str, run: Callable[[], Awaitable[None]], *, stop: Callable[[], bool],
                    on_error: Callable[[BaseException, int], object] = lambda exc, failures: None,
                    first_delay: float = 1.0, max_delay: float = 30.0) -> None:
    """Run a stage loop until it returns or ``stop()``; when it fails, log why and start it again after a pause.

    A stage loop fails when something it cannot ride out happens (the broker went
    away under a call that does not retry); starting it again from its committed
    offsets is what a restart of the process would do, without losing the others.
    """
    delay, failures = first_delay, 0
    while not stop():
        try:
            await run()
            return
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if stop() or task is None or task.cancelling():
                raise   # we are being stopped
            # a CancelledError from inside a client library (aiokafka lets one out when the broker goes away
            # under it): a failure like any other
            failures += 1
            on_error(exc, failures)
            log.exception("%s was cancelled from inside (%d in a row); starting it again in %.0fs", name, failures,
                          delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
        except Exception as exc:
            failures += 1
            on_error(exc, failures)
            log.exception("%s stopped on an error (%d in a row); starting it again in %.0fs", name, failures, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)


def backoff_s(failures: int, first_delay: float, max_delay: float) -> float:
    """The pause after the ``failures``-th failure in a row: ``first_delay``, doubling, at most ``max_delay``."""
    return min(first_delay * 2 ** max(failures - 1, 0), max_delay)


async def pause(seconds: float, stop: Callable[[], bool], check_s: float = 1.0) -> None:
    """Wait ``seconds``, or less once ``stop()`` is true (asked every ``check_s``): loops that wait for a time
    (a schedule's next due time) wait here."""
    left = seconds
    while left > 0 and not stop():
        step = min(left, check_s)
        await asyncio.sleep(step)
        left -= step


async def wait(seconds: float) -> None:
    """Wait ``seconds`` (nothing when it is not positive): a rate limit's pause, or a pause whose length the caller
    worked out (``backoff_s``) before reading again."""
    if seconds > 0:
        await asyncio.sleep(seconds)
