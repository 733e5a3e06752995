"""Every record of an agent's input, in order: what faust passed over is read from Kafka and handed over first.

faust can pass over a record around a rebalance and acknowledge it anyway, so
that the next commit moves past it (``stream.consumer``): an events.valid batch
lost that way is a batch of events never exported. An agent therefore checks,
partition by partition, that each record follows on from the previous one, or,
for the first record after a seek, from where the seek left the partition
(``stream.consumer.App.starts``). The records of a gap are read with a plain
Kafka consumer and handed to the agent before the record that revealed it. A record that comes
again (a seek back to the committed offset) is handed over again: every stage
drops what it had already handled.

A record passed over at the end of a partition reveals itself by no later record:
a worker that restarts while the last identity.links message of a partition is
unanswered would hold that message's rows for good. So while an agent runs, every
``TAIL_CHECK_S`` it also checks whether it has handled anything since the
previous check. Once it has been idle for ``TAIL_QUIET_CHECKS`` checks in a row
(no seek either), it compares, for each partition the worker is assigned, the
next offset it expects with where faust's consumer has read the partition to
(the last offset it handed to its conductor, or skipped; within the high
watermark), and reads back and hands over the tail of a partition behind it
(``stalled``). An agent busy with one partition's records is not idle, so the
records of another partition waiting their turn are not taken for passed over;
records faust has fetched and not yet handed on (its conductor waiting on a full
queue of another agent) are not counted as read. A handler that fails on a tail
stops the agent, as a failure on any record does, and the tail is read back again
when it starts again; a revocation of the partition waits for a tail being handed
over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping, Sequence
from typing import Any, NamedTuple

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition

from stream import metrics
from stream.kafka import stop_all
from stream.retry import wait

log = logging.getLogger(__name__)


class Record(NamedTuple):
    """A record read back, shaped as the agents read faust's events: ``.value`` and ``.message``."""

    value: bytes
    message: Any


class _Message(NamedTuple):
    topic: str
    partition: int
    offset: int
    timestamp: float        # seconds, as faust's
    key: bytes | None
    value: bytes


def gap(expected: int | None, offset: int) -> tuple[int, int] | None:
    """The offsets ``[first, end)`` missing before ``offset`` when ``expected`` was next (None: nothing known)."""
    if expected is None or offset <= expected:
        return None
    return expected, offset


def stalled(expected: Mapping[int, int], ends: Mapping[int, int | None]) -> dict[int, tuple[int, int]]:
    """The partitions of an idle agent whose next ``expected`` offset is behind their end (``ends``: the high
    watermark the consumer last fetched, None when unknown): the offsets ``[first, end)`` the consumer fetched and
    never handed over."""
    out: dict[int, tuple[int, int]] = {}
    for p, n in expected.items():
        end = ends.get(p)
        if end is not None and end > n:
            out[p] = (n, end)
    return out


READ_TIMEOUT_S = 120.0
TAIL_CHECK_S = 5.0
TAIL_QUIET_CHECKS = 2     # checks in a row that find the agent idle before its partitions' tails are compared
TAIL_READ_MAX = 1000      # records read back per partition and check: a long tail is read over several checks


async def read_range(client_args: Mapping[str, Any], topic: str, partition: int, first: int,
                     end: int, timeout_s: float = READ_TIMEOUT_S) -> list[Record]:
    """The records of ``topic[partition]`` from ``first`` up to ``end`` (excluded); offsets the retention deleted
    are skipped (the read starts at the partition's first offset). The record at ``end`` exists (it revealed the
    gap), so the read ends; a broker that does not serve it within ``timeout_s`` raises TimeoutError, and the
    agent stops rather than go on past records it has not had."""
    c = AIOKafkaConsumer(**{**client_args, "enable_auto_commit": False, "group_id": None,
                            "auto_offset_reset": "earliest"})
    await c.start()
    try:
        tp = TopicPartition(topic, partition)
        c.assign([tp])
        c.seek(tp, first)
        out: list[Record] = []
        last = first - 1
        deadline = asyncio.get_running_loop().time() + timeout_s
        while last < end - 1:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"offsets {first}-{end - 1} of {topic}[{partition}] could not be read back within "
                                   f"{timeout_s:.0f}s (read up to {last}): is the broker reachable?")
            for r in (await c.getmany(tp, timeout_ms=500)).get(tp, []):
                last = r.offset
                if r.offset >= end:
                    break
                out.append(Record(r.value, _Message(r.topic, r.partition, r.offset, r.timestamp / 1000, r.key,
                                                    r.value)))
        return out
    finally:
        await stop_all(c)


class _TailFailed(Exception):
    """The agent's handler failed on a tail the check read back (``__cause__``)."""


class Contiguous:
    """The gaps of one agent's input topic (see the module docstring)."""

    def __init__(self, app: faust.App, topic: str, client_args: Mapping[str, Any], stage: str,
                 read: Callable[..., Awaitable[list[Record]]] = read_range, tail_check_s: float = TAIL_CHECK_S):
        self.app, self.topic, self.client_args, self.stage, self.read = app, topic, client_args, stage, read
        self.tail_check_s = tail_check_s
        self._next: dict[int, int] = {}
        self._seeks = -1
        self._lock = asyncio.Lock()       # the agent's handling and the tail check's, one at a time
        self._handled = 0                 # handlings begun: the tail check looks for an idle agent
        self._checked: tuple[int, int] | None = None     # (seeks, handlings) at the previous tail check
        self._quiet = 0                   # tail checks in a row that found the agent idle
        self._failure: BaseException | None = None      # a handler's failure on a tail: the agent stops with it
        self._no_tail = asyncio.Event()   # set while no tail is being read back or handed over
        self._no_tail.set()
        revoked = getattr(app, "on_partitions_revoked", None)
        if revoked is not None:
            revoked.connect(self._wait_for_the_tail)

    async def _wait_for_the_tail(self, sender: Any, revoked: Any, **kwargs: Any) -> None:
        """A revocation of the topic's partitions waits for a tail being handed over: records read back hold no
        faust message whose acknowledgement the revocation would wait for."""
        if any(tp.topic == self.topic for tp in revoked):
            await self._no_tail.wait()

    def _watch(self, handle: Callable[[list[Any]], Awaitable[None]]) -> asyncio.Future:
        self._failure = None
        return asyncio.ensure_future(self.watch_tails(handle, self.tail_check_s, asyncio.current_task()))

    def _raise_failure(self) -> None:
        """In the agent's loop, cancelled by the tail check: the handler's failure on the tail, if that is why."""
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    async def each(self, stream: faust.StreamT, handle: Callable[[Any], Awaitable[None]]) -> None:
        """Hand every record of the agent's ``stream`` to ``handle``, in order: the records passed over before
        one (``missed``) first, then the one itself. The loop is over faust's own iterator, which acknowledges an
        event once ``handle`` has returned for it and for the records read back before it. A partition's tail
        passed over is handed over by the tail check (``watch_tails``)."""
        async def each_of(records: list[Any]) -> None:
            for r in records:
                await handle(r)
        watcher = self._watch(each_of)
        try:
            async for event in stream.events():
                async with self._lock:
                    self._handled += 1
                    for missed in await self.missed(event.message.partition, event.message.offset):
                        await handle(missed)
                    await handle(event)
        except asyncio.CancelledError:
            self._raise_failure()
            raise
        finally:
            watcher.cancel()

    async def takes(self, takes: AsyncIterable[Sequence[Any]], handle: Callable[[list[Any]], Awaitable[None]]) -> None:
        """Hand the records of the agent's stream to ``handle`` a take at a time (``takes``: its events a take at a
        time, e.g. ``stream.agents.takes.take_bursts``), in order within each partition: the records passed over
        before one (``missed``) first, then the one itself. A take's events are acknowledged once ``handle`` has
        returned for it (when the next take is asked for). A partition's tail passed over is handed over by the
        tail check (``watch_tails``)."""
        watcher = self._watch(handle)
        try:
            async for events in takes:
                async with self._lock:
                    self._handled += 1
                    records: list[Any] = []
                    for event in events:
                        records += await self.missed(event.message.partition, event.message.offset)
                        records.append(event)
                    await handle(records)
        except asyncio.CancelledError:
            self._raise_failure()
            raise
        finally:
            watcher.cancel()

    def _follow_seeks(self) -> None:
        seeks = getattr(self.app, "seeks", 0)     # stream.consumer.App counts them
        if seeks != self._seeks:                  # a seek: each partition follows on from where it left it
            self._seeks = seeks
            self._next = {tp.partition: o for tp, o in getattr(self.app, "starts", {}).items()
                          if tp.topic == self.topic}

    def _ends(self) -> dict[int, int | None]:
        """For each partition of the topic assigned to this worker, the offset after the last one faust's consumer
        handed to its conductor or skipped (``Consumer._read_offset``, private to faust: without it, nothing is
        compared), within the high watermark it last fetched (after a seek faust sets the read offset to the
        committed one, which may not exist yet); nothing while a rebalance or a recovery holds the flow."""
        consumer = getattr(self.app, "consumer", None)
        flow = getattr(self.app, "flow_control", None)
        if consumer is None or flow is None or not flow.is_active() or getattr(self.app, "rebalancing", False):
            return {}
        read = getattr(consumer, "_read_offset", None)
        if read is None:
            return {}
        out: dict[int, int | None] = {}
        for tp in consumer.assignment():
            if tp.topic == self.topic:
                last = read.get(tp)
                try:
                    highwater = consumer.highwater(tp)
                except (AssertionError, KeyError):      # revoked since: aiokafka asserts it is assigned
                    highwater = None
                out[tp.partition] = None if last is None or highwater is None else min(last + 1, highwater)
        return out

    async def check_tails(self, handle: Callable[[list[Any]], Awaitable[None]]) -> dict[int, tuple[int, int]]:
        """One tail check (see the module docstring): once the agent has been idle for ``TAIL_QUIET_CHECKS``
        checks in a row, hand over what ``stalled`` finds. Returns the ranges handed over. The handler's failure
        is raised as ``_TailFailed``; the range's offsets are expected again then."""
        async with self._lock:
            self._follow_seeks()
            now = (self._seeks, self._handled)
            self._quiet = self._quiet + 1 if now == self._checked else 0
            self._checked = now
            if self._quiet < TAIL_QUIET_CHECKS:
                return {}
            found = stalled(self._next, self._ends())
            done: dict[int, tuple[int, int]] = {}
            self._no_tail.clear()
            try:
                for p, (first, end) in found.items():
                    end = min(end, first + TAIL_READ_MAX)
                    records = await self.read(self.client_args, self.topic, p, first, end)
                    if self._ends().get(p) is None:     # revoked, or a rebalance begun, during the read
                        continue
                    metrics.RECORDS_READ_BACK.labels(self.stage).inc(len(records))
                    log.warning("%s: offsets %d-%d of %s[%d] were read by the consumer and not handed over (the "
                                "partition's last records, around a rebalance); read back from Kafka: %d records",
                                self.stage, first, end - 1, self.topic, p, len(records))
                    if records:
                        try:
                            await handle(records)
                        except Exception as exc:
                            raise _TailFailed() from exc
                    self._next[p] = end
                    done[p] = (first, end)
            finally:
                self._no_tail.set()
            if done:
                self._handled += 1        # a handling: the next tails are compared after quiet checks again
            return done

    async def watch_tails(self, handle: Callable[[list[Any]], Awaitable[None]], every_s: float = TAIL_CHECK_S,
                          agent: asyncio.Task | None = None) -> None:
        """``check_tails`` every ``every_s`` while the agent runs. A failed check (a read) is said and tried again;
        the handler's failure on a tail stops the ``agent`` with it (its loop raises it)."""
        while True:
            await wait(every_s)
            try:
                await self.check_tails(handle)
            except asyncio.CancelledError:
                raise
            except _TailFailed as exc:
                cause = exc.__cause__ or exc
                log.error("%s: handling the tail read back of %s failed (%s: %s); the agent stops", self.stage,
                          self.topic, type(cause).__name__, cause)
                if agent is None:
                    raise cause from None
                self._failure = cause
                agent.cancel()
                return
            except Exception as exc:
                log.warning("%s: the check for passed-over records at the end of %s failed (%s: %s); checked again "
                            "in %gs", self.stage, self.topic, type(exc).__name__, exc, every_s)

    async def missed(self, partition: int, offset: int) -> list[Record]:
        """The records of ``partition`` before ``offset`` that the agent should have had and did not, in order."""
        self._follow_seeks()
        missing = gap(self._next.get(partition), offset)
        self._next[partition] = offset + 1
        if missing is None:
            return []
        first, end = missing
        records = await self.read(self.client_args, self.topic, partition, first, end)
        metrics.RECORDS_READ_BACK.labels(self.stage).inc(len(records))
        log.warning("%s: offsets %d-%d of %s[%d] were not handed over by the consumer after its last seek (around a "
                    "rebalance); read back from Kafka: %d records (any handled already are dropped downstream as "
                    "replays)", self.stage, first, end - 1, self.topic, partition, len(records))
        return records

