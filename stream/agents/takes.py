"""Takes that hold a burst of records whole: faust's ``take_events``, closed by quiet rather than by a fixed tick.

``Stream.take_events(max_, within)`` hands over what its buffer holds every ``within`` seconds, a tick that runs
whether records arrive or not: a burst that starts just before a tick is cut in two takes, and an agent that does work
per take (the mirror logs each take's mutations, an object per hour and partition) does it twice. :func:`take_bursts`
closes a take when it holds ``max_`` records (given ``weight``, records of that weight: the mirror counts the
mutations a record carries; given ``max_bytes``, records of that many bytes or more: what a take holds is then bounded
whatever its records' size), when no record arrived for ``quiet_s`` seconds, or ``within_s`` seconds after its first
record, whichever comes first (:func:`left`). As with ``take_events``, the records of a take are
acknowledged only once the agent is done with it (when it asks for the next take), so that faust commits no offset of
a take the agent has not finished. Unlike ``take_events``, a take the agent did not finish (it raised, or it was
cancelled as the worker stopped or its partitions were revoked, and the generator was closed) is not acknowledged at
all: faust commits no offset at or past its first record, and whichever worker next holds the partition reads it again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any

from mode.utils.aiter import aiter
from mode.utils.futures import notify


def left(size: int, max_: int, first_s: float, last_s: float, now_s: float, quiet_s: float,
         within_s: float) -> float:
    """Seconds a take of ``size`` records (the first received at ``first_s``, the last at ``last_s``) waits for
    more before it closes; 0: it closes now. An empty take waits ``quiet_s`` and looks again."""
    if size == 0:
        return quiet_s
    if size >= max_:
        return 0.0
    return max(0.0, min(last_s + quiet_s, first_s + within_s) - now_s)


def take_bursts(stream: Any, max_: int, quiet_s: float, within_s: float, now_s: Callable[[], float],
                max_bytes: int | None = None,
                weight: Callable[[Any], int] | None = None) -> AsyncGenerator[Sequence[Any], None]:
    """The events of ``stream`` a take at a time (see the module); ``now_s`` is the clock, in seconds; ``max_bytes``:
    a take closes once its events' keys and values hold that many bytes (None: by their count only); ``weight``: what
    an event counts against ``max_`` (None: 1). The generator is registered with the stream, which closes it when it
    stops (as faust does its own takes)."""
    agen = _takes(stream, max_, quiet_s, within_s, now_s, max_bytes, weight)
    active = getattr(stream, "_active_agens", None)
    if active is not None:
        active.add(agen)
    return agen


def event_bytes(event: Any) -> int:
    """The bytes of an event's key and value (as its message carries them)."""
    return len(event.key or b"") + len(event.value or b"")


async def _ack(stream: Any, events: list[Any]) -> None:
    for event in events:
        await stream.ack(event)


async def _takes(stream: Any, max_: int, quiet_s: float, within_s: float, now_s: Callable[[], float],
                 max_bytes: int | None = None,
                 weight: Callable[[Any], int] | None = None) -> AsyncGenerator[Sequence[Any], None]:
    events: list[Any] = []
    held = [0]                         # the bytes of the take's events (with max_bytes)
    counted = [0]                      # their weight (with weight; else len(events))
    times = [0.0, 0.0]                 # when the take's first and last events arrived
    buffer_full = asyncio.Event()
    buffer_consumed = asyncio.Event()
    consuming: list[Any] = [None]      # set while the agent works on a take: the buffer takes nothing meanwhile
    enable_acks = stream.enable_acks

    async def add_to_buffer(value: Any) -> Any:
        if consuming[0] is not None:
            try:
                await consuming[0]
            finally:
                consuming[0] = None
        event = stream.current_event
        if event is None:
            raise RuntimeError("a take found no current event for a value: faust's stream lost its event")
        t = now_s()
        if not events:
            times[0] = t
        times[1] = t
        events.append(event)
        if max_bytes is not None:
            held[0] += event_bytes(event)
        if weight is not None:
            counted[0] += weight(event)
        if size() >= max_ or (max_bytes is not None and held[0] >= max_bytes):
            buffer_full.set()
            buffer_consumed.clear()
            await stream.wait(buffer_consumed)     # no take holds more than max_
        return value

    def size() -> int:
        return counted[0] if weight is not None else len(events)

    stream.enable_acks = False          # acknowledged here, once the agent is done with the take
    stream.add_processor(add_to_buffer)
    stream._enable_passive(aiter(stream.channel))
    try:
        while not stream.should_stop:
            full = max_bytes is not None and held[0] >= max_bytes
            wait = 0.0 if full else left(size(), max_, times[0], times[1], now_s(), quiet_s, within_s)
            if wait > 0:
                await stream.wait_for_stopped(buffer_full, timeout=wait)
                continue
            consuming[0] = stream.loop.create_future()
            done = False
            try:
                yield list(events)
                done = True
            finally:
                taken = list(events)
                events.clear()
                held[0] = counted[0] = 0
                if done:
                    await _ack(stream, taken)
                taken = []          # not held while the next take is waited for
                notify(consuming[0])
                buffer_full.clear()
                buffer_consumed.set()
    finally:
        stream.enable_acks = enable_acks
        stream._processors.remove(add_to_buffer)

